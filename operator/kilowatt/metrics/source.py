"""The metric-source interface the control loop reads through. Missing data is a state (None), never a zero."""

from __future__ import annotations

from collections.abc import Mapping
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
    model_names: tuple[str, ...] = ()  # vLLM's model_name label values that are this service's (empty: any)

    @classmethod
    def of(cls, service: InferenceService) -> ServiceRef:
        slo = service.spec.slo
        return cls(service.metadata.namespace or "default", service.metadata.name, slo.percentile,
                   slo.ttft_milliseconds / 1000, slo.tpot_milliseconds / 1000, served_model_names(service))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def served_model_names(service: InferenceService) -> tuple[str, ...]:
    """The names vLLM labels this service's series with (``model_name``): ``--served-model-name`` where the
    template sets it (it may list several), else the model kilowatt passes as ``--model``."""
    names: list[str] = []
    for container in (service.spec.template or {}).get("spec", {}).get("containers") or []:
        args = [str(a) for a in container.get("args") or []]
        for i, a in enumerate(args):
            if a.startswith("--served-model-name="):
                names.append(a.split("=", 1)[1])
            elif a == "--served-model-name":
                names += [x for x in args[i + 1:] if not x.startswith("-")][:8]
                break
        break  # the first container serves
    return tuple(names) or (service.spec.model.name,)


@dataclass(frozen=True)
class Topology:
    """Where series come from, from the objects the loop reads anyway: which pool each node is in, and which
    service and pool each serving pod belongs to (so a stock PodMonitor's ``namespace``/``pod`` labels suffice)."""

    node_pools: Mapping[str, str] = field(default_factory=dict)  # node name -> pool
    pods: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # (ns, pod) -> (service key, pool)


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
    slo_attainment: float | None  # share of requests within both targets (from histograms: at least this, within_all)
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    by_pool: dict[str, PoolLatency] = field(default_factory=dict)
    e2e_p_seconds: float | None = None
    # Request length distributions over the window, as cumulative (upper bound, count) buckets.
    prompt_length_buckets: tuple[tuple[float, float], ...] = ()
    output_length_buckets: tuple[tuple[float, float], ...] = ()
    window_seconds: float = 60.0  # the window the rates and percentiles are over: rate x window = requests seen


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
    metric_names: dict[str, str] = field(default_factory=dict)  # what was read -> the series name found for it


class MetricSource(Protocol):
    def observe(self, services: list[ServiceRef], topology: Topology, price_queries: list[str]) -> Observations:
        """Read one period's observations; ``topology`` says which pool a node, and which service a pod, is in."""
        ...
