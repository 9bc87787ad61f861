"""The metric-source interface the control loop reads through. Missing data is a state (None), never a zero."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kilowatt.api.v1alpha1 import InferenceService


@dataclass(frozen=True)
class ServiceRef:
    namespace: str
    name: str
    percentile: float  # the SLO's percentile: latency is read at it
    ttft_seconds: float  # SLO targets, for attainment
    tpot_seconds: float

    @classmethod
    def of(cls, service: InferenceService) -> ServiceRef:
        slo = service.spec.slo
        return cls(service.metadata.namespace or "default", service.metadata.name, slo.percentile,
                   slo.ttft_milliseconds / 1000, slo.tpot_milliseconds / 1000)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class PoolLatency:
    requests_per_second: float
    ttft_p_seconds: float | None
    tpot_p_seconds: float | None


@dataclass(frozen=True)
class ServiceObservation:
    requests_per_second: float
    input_tokens_mean: float | None
    output_tokens_mean: float | None
    ttft_p_seconds: float | None  # at the SLO's percentile
    tpot_p_seconds: float | None
    slo_attainment: float | None  # share of requests within both targets (the lower of the two shares)
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    by_pool: dict[str, PoolLatency] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolObservation:
    power_watts: float | None  # measured GPU board power, summed over the pool's GPUs
    gpu_utilisation: float | None  # 0..1, mean


@dataclass
class Observations:
    available: bool  # False: the source could not be read at all this period
    error: str | None = None
    services: dict[str, ServiceObservation | None] = field(default_factory=dict)  # key -> None: no series
    pools: dict[str, PoolObservation] = field(default_factory=dict)
    prices_usd_per_kwh: dict[str, float] = field(default_factory=dict)  # PromQL -> price


class MetricSource(Protocol):
    def observe(
        self, services: list[ServiceRef], node_pools: dict[str, str], price_queries: list[str]
    ) -> Observations:
        """Read one period's observations. ``node_pools`` maps node (host) names to pool names."""
        ...
