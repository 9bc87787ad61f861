"""Where observations come from: one small interface, one module per source (Prometheus, static, the twin)."""

from kilowatt.metrics.source import (
    MetricSource,
    Observations,
    PoolObservation,
    ServiceObservation,
    ServiceRef,
    Topology,
)

__all__ = ["MetricSource", "Observations", "PoolObservation", "ServiceObservation", "ServiceRef", "Topology"]
