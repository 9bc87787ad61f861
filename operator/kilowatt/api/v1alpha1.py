"""kilowatt.dev/v1alpha1: AcceleratorPool (cluster-scoped) and InferenceService (namespaced).

Field names carry their units (``usdPerGPUHour``, ``boardPowerWatts``, ``ttftMilliseconds``) because a
factor-of-1000 slip between kWh and Wh, or ms and s, is the worst bug this project can have.

Every rule that needs no other object is in the CRD, so the API server refuses a bad object with a 422 naming
the field: one-field rules as field constraints, rules over several fields of one object as CEL
(``x-kubernetes-validations``, beside the ``model_validator`` that applies the same rule in Python for the CLI,
the twin and API servers that skip CEL). Each ``cel(...)`` here and the validator beside it are one rule, and a
test (tests/unit/test_crds.py) evaluates both on the same specs. Rules that need another object (a pool that
does not exist) are reported in status and events by the operator.
"""

from __future__ import annotations

import enum
import re
import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "kilowatt.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"
DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_TIME_ZONE = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"


# A marker for the CRD generator: this optional sub-object gets no ``default: {}`` (its absence means something).
NO_EMPTY_DEFAULT = "x-kilowatt-no-empty-default"


def cel(rule: str, message: str, field_path: str | None = None, reason: str = "FieldValueInvalid") -> dict[str, str]:
    """One CEL validation rule for the CRD: ``message`` names the field and says the fix; ``field_path`` (relative
    to the object the rule sits on) is where the API server reports it."""
    out = {"rule": rule, "message": message, "reason": reason}
    if field_path:
        out["fieldPath"] = field_path
    return out


def cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    """``model_config`` ``json_schema_extra`` carrying CEL rules into the generated CRD."""
    return {"x-kubernetes-validations": list(rules)}


# HH:MM as minutes after midnight, in CEL (24:00 is 1440).
def _cel_minutes(field: str) -> str:
    return f"(int({field}.substring(0, 2)) * 60 + int({field}.substring(3, 5)))"


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False
    )


# ----------------------------------------------------------------------------------------------------------
# AcceleratorPool
# ----------------------------------------------------------------------------------------------------------


class Interconnect(str, enum.Enum):
    PCIE = "PCIe"
    NVLINK = "NVLink"


class GPUSpec(_Model):
    """The GPU type every node of the pool carries. Vendor figures; see docs/concepts.md for sources."""

    model_config = ConfigDict(json_schema_extra=cel_rules(cel(
        "!has(self.idlePowerWatts) || self.idlePowerWatts <= self.boardPowerWatts",
        "gpu.idlePowerWatts must be at most gpu.boardPowerWatts: a GPU idles below its board power limit",
        ".idlePowerWatts")))

    model: str = Field(
        min_length=1, max_length=63, description="GPU model name, e.g. RTX-4090 or H100-SXM. Shown in kubectl get."
    )
    memory_gib: float = Field(alias="memoryGiB", gt=0, le=4096, description="Memory per GPU in GiB.")
    memory_bandwidth_gb_per_second: float = Field(
        alias="memoryBandwidthGBps", gt=0, le=100000, description="Memory bandwidth per GPU in GB/s (10^9 bytes)."
    )
    fp16_tflops: float = Field(
        alias="fp16TFLOPS", gt=0, le=100000, description="Dense FP16 tensor throughput per GPU in TFLOP/s."
    )
    board_power_watts: float = Field(gt=0, le=10000, description="Board power limit per GPU in watts.")
    idle_power_watts: float | None = Field(
        default=None,
        ge=0,
        le=10000,
        description="Power per GPU in watts while holding a model with no load. Default: 15% of board power.",
    )
    interconnect: Interconnect = Field(
        default=Interconnect.PCIE,
        description="How GPUs of one node talk for tensor parallelism: PCIe (consumer cards) or NVLink.",
    )

    @model_validator(mode="after")
    def _idle_below_board(self) -> GPUSpec:
        if self.idle_power_watts is not None and self.idle_power_watts > self.board_power_watts:
            raise ValueError(f"gpu.idlePowerWatts ({self.idle_power_watts:g}) must be at most gpu.boardPowerWatts "
                             f"({self.board_power_watts:g}): a GPU idles below its board power limit")
        return self

    @property
    def idle_watts(self) -> float:
        return self.idle_power_watts if self.idle_power_watts is not None else 0.15 * self.board_power_watts


class Toleration(_Model):
    """A Kubernetes toleration, copied onto the pods the operator places in this pool."""

    key: str | None = Field(default=None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class TimeOfUsePeriod(_Model):
    """Electricity price between two wall-clock times; ``end`` is exclusive and ``24:00`` means midnight."""

    model_config = ConfigDict(json_schema_extra=cel_rules(cel(
        "self.start != self.end",
        "a period that ends when it starts is empty: give end a different time (24:00 for midnight)", ".end")))
    start: str = Field(
        pattern=_HHMM, max_length=5, description="Start time, HH:MM (24-hour clock, local to the time zone).")
    end: str = Field(pattern=_HHMM, max_length=5, description="End time, HH:MM, exclusive; 24:00 for midnight.")
    usd_per_kwh: float = Field(
        alias="usdPerKWh", ge=0, le=100, description="Price in US dollars per kilowatt-hour (not per MWh)."
    )


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


_START, _END = _cel_minutes("p.start"), _cel_minutes("p.end")
_LENGTH = f"({_END} > {_START} ? {_END} - {_START} : {_END} + 1440 - {_START})"
_TILES_THE_DAY = (
    cel(f"self.periods.map(p, {_LENGTH}).sum() == 1440",
        "periods must cover the whole day exactly once: their lengths must add up to 24 hours, with no overlap "
        "(a period from 22:00 to 06:00 wraps past midnight)", ".periods"),
    cel(f"self.periods.all(q, self.periods.exists(p, {_END} % 1440 == "
        f"{_cel_minutes('q.start')} % 1440))",
        "periods must cover the whole day with no gap: every period must start when another one ends", ".periods"),
)


class TimeOfUseSchedule(_Model):
    """Prices by time of day. The periods must cover the whole day once, with no gap and no overlap."""

    model_config = ConfigDict(json_schema_extra=cel_rules(*_TILES_THE_DAY))

    time_zone: str = Field(pattern=_TIME_ZONE, description="IANA time zone, e.g. Europe/Berlin or America/Chicago.")
    periods: list[TimeOfUsePeriod] = Field(min_length=1, max_length=48)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
        return value

    @model_validator(mode="after")
    def _covers_the_day(self) -> TimeOfUseSchedule:
        # Split wrap-around periods (22:00-06:00) into two, then require the pieces to tile [0, 1440).
        # CEL (_TILES_THE_DAY) states the same: the lengths add up to a day, and each period starts where one ends.
        pieces: list[tuple[int, int, str]] = []
        for period in self.periods:
            start, end = _minutes(period.start), _minutes(period.end)
            label = f"{period.start}-{period.end}"
            if period.start == period.end:
                raise ValueError(f"period {label} is empty; start and end must differ")
            if start < end:
                pieces.append((start, end, label))
            else:
                pieces.append((start, 1440, label))
                if end > 0:
                    pieces.append((0, end, label))
        pieces.sort()
        cursor, previous = 0, "start of day"
        for start, end, label in pieces:
            if start > cursor:
                raise ValueError(f"gap from {cursor // 60:02d}:{cursor % 60:02d} to {start // 60:02d}:{start % 60:02d}")
            if start < cursor:
                raise ValueError(f"periods {previous} and {label} overlap")
            cursor, previous = end, label
        if cursor != 1440:
            raise ValueError(f"gap from {cursor // 60:02d}:{cursor % 60:02d} to 24:00")
        return self


class PrometheusPrice(_Model):
    """An electricity price read from Prometheus, e.g. a price exporter's gauge."""

    query: str = Field(min_length=1, max_length=4096, description="PromQL returning one sample in USD per kWh.")
    fallback_usd_per_kwh: float = Field(
        alias="fallbackUsdPerKWh", ge=0, le=100, description="Price used while the query returns nothing."
    )


class Electricity(_Model):
    """Exactly one of flat, timeOfUse or prometheus."""

    model_config = ConfigDict(json_schema_extra=cel_rules(cel(
        "[has(self.flatUsdPerKWh), has(self.timeOfUse), has(self.prometheus)].filter(x, x).size() == 1",
        "set exactly one of flatUsdPerKWh, timeOfUse and prometheus")))

    flat_usd_per_kwh: float | None = Field(
        default=None, alias="flatUsdPerKWh", ge=0, le=100, description="One price in USD per kWh, all day."
    )
    time_of_use: TimeOfUseSchedule | None = None
    prometheus: PrometheusPrice | None = None
    grams_co2_per_kwh: float | None = Field(
        default=None, alias="gramsCO2PerKWh", ge=0, le=5000, description="Carbon intensity, reported only."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Electricity:
        given = [n for n in ("flatUsdPerKWh", "timeOfUse", "prometheus") if getattr(self, _snake(n)) is not None]
        if len(given) != 1:
            raise ValueError(
                f"set exactly one of flatUsdPerKWh, timeOfUse, prometheus (got {', '.join(given) or 'none'})"
            )
        return self


def _snake(camel: str) -> str:
    return {"flatUsdPerKWh": "flat_usd_per_kwh", "timeOfUse": "time_of_use", "prometheus": "prometheus"}[camel]


class Ownership(str, enum.Enum):
    RENTED = "Rented"
    OWNED = "Owned"


class HourlyCarbon(_Model):
    """Carbon intensity by hour of the day, local time: 24 values, the first for 00:00-01:00."""

    time_zone: str = Field(pattern=_TIME_ZONE, description="IANA time zone, e.g. Europe/Berlin or America/Chicago.")
    grams_co2_per_kwh: list[Annotated[float, Field(ge=0, le=5000)]] = Field(
        alias="gramsCO2PerKWh", min_length=24, max_length=24,
        description="Grams of CO2 per kWh for each hour of the day, 00:00-01:00 first (24 values).")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return TimeOfUseSchedule._known_zone(value)


class PrometheusCarbon(_Model):
    """A carbon intensity read from Prometheus, e.g. an Electricity Maps or WattTime exporter's gauge."""

    query: str = Field(min_length=1, max_length=4096, description="PromQL returning one sample in gCO2 per kWh.")
    fallback_grams_co2_per_kwh: float = Field(
        alias="fallbackGramsCO2PerKWh", ge=0, le=5000, description="Intensity used while the query returns nothing."
    )


class Carbon(_Model):
    """The grid's carbon intensity at the pool (exactly one of flat, hourly or prometheus), and the price the
    organisation puts on a tonne of CO2 in kilowatt's objective."""

    model_config = ConfigDict(json_schema_extra=cel_rules(cel(
        "[has(self.gramsCO2PerKWh), has(self.hourly), has(self.prometheus)].filter(x, x).size() == 1",
        "set exactly one of gramsCO2PerKWh, hourly and prometheus")))

    grams_co2_per_kwh: float | None = Field(
        default=None, alias="gramsCO2PerKWh", ge=0, le=5000, description="One intensity in gCO2 per kWh, all day.")
    hourly: HourlyCarbon | None = None
    prometheus: PrometheusCarbon | None = None
    usd_per_tonne_co2: float = Field(
        default=0.0, alias="usdPerTonneCO2", ge=0, le=10000,
        description="Carbon price in USD per tonne of CO2 (1,000 kg) added to the cost kilowatt minimises; 0 "
        "(default): carbon is reported, not priced. It is a shadow price: reported costs stay what is paid.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Carbon:
        given = [n for n, v in (("gramsCO2PerKWh", self.grams_co2_per_kwh), ("hourly", self.hourly),
                                ("prometheus", self.prometheus)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of gramsCO2PerKWh, hourly, prometheus (got {', '.join(given) or 'none'})")
        return self


class PoolCost(_Model):
    usd_per_gpu_hour: float = Field(
        alias="usdPerGPUHour",
        ge=0,
        le=1000,
        description="Hardware cost per GPU-hour in USD: rental price, or purchase price amortised over its life.",
    )
    ownership: Ownership = Field(
        default=Ownership.RENTED,
        description="Rented: a GPU costs usdPerGPUHour while a replica holds it. Owned: the hardware is paid "
        "whether used or not (usdPerGPUHour is reported for every GPU of the pool, not optimised); a replica's "
        "marginal cost is its energy above idle, and GPUs no replica holds still draw idle power.",
    )
    pue: float = Field(
        default=1.0, ge=1, le=5, description="Power usage effectiveness of the site: facility watts per IT watt."
    )
    electricity: Electricity
    carbon: Carbon | None = Field(
        default=None, json_schema_extra={NO_EMPTY_DEFAULT: True}, description="Carbon intensity and price. Unset: electricity.gramsCO2PerKWh, if given, is "
        "reported; nothing is priced.")


class AcceleratorPoolSpec(_Model):
    gpu: GPUSpec
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels selecting the pool's nodes; also set on the pods placed here."
    )
    tolerations: list[Toleration] = Field(default_factory=list)
    gpus_per_node: int = Field(default=1, ge=1, le=64, description="GPUs per node; bounds tensor parallelism.")
    max_gpus: int | None = Field(
        default=None,
        alias="maxGPUs",
        ge=0,
        le=1000000,
        description="Most GPUs kilowatt may use. Default: the sum of matching nodes' allocatable nvidia.com/gpu.",
    )
    cost: PoolCost
    replica_startup_seconds: float = Field(
        default=120, ge=0, le=86400, description="Seconds from pod creation until a replica serves requests."
    )


class AcceleratorPoolStatus(_Model):
    model_config = ConfigDict(extra="allow")

    gpus_total: int | None = Field(default=None, alias="gpusTotal", description="GPUs the pool offers now.")
    gpus_in_use: int | None = Field(default=None, alias="gpusInUse", description="GPUs kilowatt's replicas hold.")
    electricity_usd_per_kwh: float | None = Field(
        default=None, alias="electricityUsdPerKWh", description="Electricity price now, USD per kWh."
    )
    effective_usd_per_gpu_hour: float | None = Field(
        default=None,
        alias="effectiveUsdPerGPUHour",
        description="Hardware plus energy per GPU-hour at the current load and price, USD (measured power "
        "where the DCGM exporter reports it).",
    )
    measured_power_watts: float | None = Field(
        default=None, alias="measuredPowerWatts", description="GPU power the DCGM exporter reports, PUE included."
    )
    grid_grams_co2_per_kwh: float | None = Field(
        default=None, alias="gridGramsCO2PerKWh", description="Carbon intensity of the pool's electricity now.")
    ownership: str | None = Field(default=None, description="Owned or Rented (spec.cost.ownership).")
    conditions: list[dict[str, Any]] = Field(default_factory=list)


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=DNS_LABEL, max_length=63)
    namespace: str | None = None
    generation: int | None = None


class ServiceMeta(ObjectMeta):
    """An InferenceService's name also names the Services kilowatt owns, so it must start with a letter."""

    name: str = Field(pattern=DNS_1035, max_length=63)


class AcceleratorPool(_Model):
    """One GPU type on a set of nodes, with what it costs to run."""

    model_config = ConfigDict(extra="ignore")
    api_version: Literal["kilowatt.dev/v1alpha1"] = API_VERSION
    kind: Literal["AcceleratorPool"] = "AcceleratorPool"
    metadata: ObjectMeta
    spec: AcceleratorPoolSpec
    status: AcceleratorPoolStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name


# ----------------------------------------------------------------------------------------------------------
# InferenceService
# ----------------------------------------------------------------------------------------------------------


class DType(str, enum.Enum):
    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"

    @property
    def bytes_per_parameter(self) -> float:
        return {"fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}[self.value]


class ModelSpec(_Model):
    name: str = Field(min_length=1, max_length=253, description="Model name as the serving engine knows it.")
    parameters_billion: float = Field(gt=0, le=10000, description="Parameter count in billions, e.g. 8 for 8B.")
    dtype: DType = Field(default=DType.FP16, description="Weight precision.")
    max_context_tokens: int = Field(default=8192, ge=128, le=10_000_000, description="Longest prompt + output.")
    layers: int | None = Field(default=None, ge=1, le=1000, description="Transformer layers (KV-cache size).")
    kv_heads: int | None = Field(default=None, ge=1, le=1000, description="Key/value heads (grouped-query).")
    head_dim: int | None = Field(default=None, ge=1, le=4096, description="Dimension of one attention head.")


class SLO(_Model):
    """Latency targets a request must meet, at a percentile of requests."""

    ttft_milliseconds: float = Field(gt=0, le=3_600_000, description="Time to first token target, milliseconds.")
    tpot_milliseconds: float = Field(gt=0, le=60_000, description="Time per output token target, milliseconds.")
    percentile: float = Field(default=95, ge=50, le=99.99, description="Percentile at which both targets hold.")


class ReplicaBounds(_Model):
    model_config = ConfigDict(json_schema_extra=cel_rules(cel(
        "!has(self.min) || !has(self.max) || self.min <= self.max", "replicas.min must be at most replicas.max: lower min or raise max", ".min")))
    min: int = Field(default=0, ge=0, le=10000, description="Fewest replicas across all pools.")
    max: int = Field(default=16, ge=1, le=10000, description="Most replicas across all pools.")

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaBounds:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be at most max ({self.max})")
        return self


class Profile(_Model):
    """A measured capacity on one pool that overrides kilowatt's prior for it."""

    pool: str = Field(pattern=DNS_LABEL, max_length=63)
    tensor_parallel: int = Field(default=1, ge=1, le=64)
    max_requests_per_second: float = Field(
        gt=0, le=1_000_000, description="Highest load one replica sustained within this service's SLO, req/s."
    )
    input_tokens: float | None = Field(default=None, gt=0, description="Mean prompt tokens of the measurement.")
    output_tokens: float | None = Field(default=None, gt=0, description="Mean output tokens of the measurement.")


class ScalingMode(str, enum.Enum):
    ACTIVE = "Active"
    ADVISORY = "Advisory"
    OFF = "Off"


class Scaling(_Model):
    mode: ScalingMode = Field(
        default=ScalingMode.ACTIVE,
        description="Active: place replicas. Advisory: compute and report only. Off: leave Deployments alone.",
    )
    scale_up_stabilization_seconds: float = Field(
        default=0, ge=0, le=86400, description="A scale-up goes to the lowest recommendation of this window.")
    scale_down_stabilization_seconds: float = Field(
        default=300, ge=0, le=86400,
        description="A scale-down goes to the highest recommendation of this window: a dip must last it whole.")
    max_scale_up_step: int = Field(default=8, ge=1, le=10000, description="Most replicas added per pool per step.")
    max_scale_down_step: int = Field(default=1, ge=1, le=10000, description="Most replicas removed per pool per step.")
    burst_headroom: float = Field(
        default=0.2, ge=0, le=10, description="Extra capacity over observed demand, as a fraction (0.2 = 20%): "
        "the most kilowatt plans with (less while the SLO's error budget is under-spent: spendErrorBudget)."
    )
    spend_error_budget: bool = Field(
        default=True, description="Lower burstHeadroom step by step (to none) while fewer requests miss the SLO "
        "than its percentile allows, and restore it at once when they miss faster (docs/concepts.md, the error "
        "budget). false: always plan with burstHeadroom.")
    scale_to_zero: bool = Field(default=False, description="Allow zero replicas when there is no traffic.")


class RoutingMode(str, enum.Enum):
    SERVICE = "Service"
    WEIGHTED = "Weighted"
    INFERENCE_POOL = "InferencePool"


class ParentRef(_Model):
    """A Gateway API parentRef: the Gateway (or listener) the HTTPRoute attaches to."""

    group: str = Field(default="gateway.networking.k8s.io", max_length=253)
    kind: str = Field(default="Gateway", min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63)
    section_name: str | None = Field(default=None, pattern=DNS_LABEL, max_length=253)
    port: int | None = Field(default=None, ge=1, le=65535)


class EndpointPicker(_Model):
    """The endpoint picker (the Inference Extension's EPP) each InferencePool names: a Service per pool, named
    ``<inferencepool>-epp`` (deploy one per (service, pool); see docs/operations.md)."""

    port: int = Field(default=9002, ge=1, le=65535, description="The picker's gRPC (ext-proc) port.")
    failure_mode: Literal["FailOpen", "FailClose"] = Field(
        default="FailClose", description="What the gateway does when the picker does not answer.")


class Routing(_Model):
    """How requests reach the replicas kilowatt places. Service: one ClusterIP Service over all of them (each
    ready replica gets an equal share). Weighted: a Service per pool and an HTTPRoute whose backendRefs are
    weighted by planned capacity. InferencePool: an InferencePool per pool (each homogeneous, as the endpoint
    picker expects) behind the same weighted HTTPRoute."""

    model_config = ConfigDict(json_schema_extra=cel_rules(cel(
        "!has(self.mode) || self.mode == 'Service' || (has(self.parentRefs) && size(self.parentRefs) > 0)",
        "routing.parentRefs must name the Gateway the HTTPRoute attaches to in Weighted and InferencePool modes: "
        "add a parentRef, or use mode Service", ".parentRefs")))
    mode: RoutingMode = Field(default=RoutingMode.SERVICE, description="Service, Weighted or InferencePool.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the serving container listens on.")
    parent_refs: list[ParentRef] = Field(default_factory=list, max_length=32,
                                         description="Gateways the HTTPRoute attaches to (Weighted, InferencePool).")
    hostnames: list[str] = Field(default_factory=list, max_length=16, description="The HTTPRoute's hostnames.",
                                 json_schema_extra={"items": {"type": "string", "maxLength": 253}})
    endpoint_picker: EndpointPicker = Field(default_factory=EndpointPicker)

    @model_validator(mode="after")
    def _parents(self) -> Routing:
        if self.mode is not RoutingMode.SERVICE and not self.parent_refs:
            raise ValueError(f"routing.parentRefs must name the Gateway the HTTPRoute attaches to in {self.mode.value} "
                             "mode: add a parentRef, or use mode Service")
        return self


class InferenceServiceSpec(_Model):
    model_config = ConfigDict(json_schema_extra=cel_rules(
        # Rules see the object after defaulting, but the CRD's own defaults ({} for replicas, scaling) are checked
        # against them too, before theirs apply: every field is guarded with has().
        cel("!(has(self.scaling) && has(self.scaling.scaleToZero) && self.scaling.scaleToZero) || "
            "!has(self.replicas) || !has(self.replicas.min) || self.replicas.min == 0",
            "scaling.scaleToZero needs replicas.min 0: set replicas.min to 0, or scaleToZero to false",
            ".scaling.scaleToZero"),
        cel("!has(self.profiles) || self.profiles.all(a, self.profiles.exists_one(b, b.pool == a.pool && "
            "(has(b.tensorParallel) ? b.tensorParallel : 1) == (has(a.tensorParallel) ? a.tensorParallel : 1)))",
            "profiles must be unique per (pool, tensorParallel): merge the duplicate into one profile",
            ".profiles"),
    ))
    model: ModelSpec
    template: dict[str, Any] = Field(
        default_factory=dict,
        description="Pod template of the serving container (e.g. vLLM). kilowatt adds GPU requests, node selection "
        "and tolerations per pool.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    slo: SLO
    replicas: ReplicaBounds = Field(default_factory=ReplicaBounds)
    pools: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Pools this service may use. Empty: every pool the model fits on.",
        json_schema_extra={"items": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63}},
    )
    profiles: list[Profile] = Field(default_factory=list, max_length=256)
    scaling: Scaling = Field(default_factory=Scaling)
    routing: Routing = Field(default_factory=Routing)

    @model_validator(mode="after")
    def _consistent(self) -> InferenceServiceSpec:
        if self.scaling.scale_to_zero and self.replicas.min != 0:
            raise ValueError(f"scaling.scaleToZero needs replicas.min 0 (got {self.replicas.min}): set replicas.min "
                             "to 0, or scaleToZero to false")
        seen: set[tuple[str, int]] = set()
        for profile in self.profiles:
            key = (profile.pool, profile.tensor_parallel)
            if key in seen:
                raise ValueError(f"profiles: two profiles for pool {profile.pool} at tensorParallel "
                                 f"{profile.tensor_parallel}; merge them into one")
            seen.add(key)
        return self


class PoolPlacement(_Model):
    pool: str
    desired_replicas: int = 0
    ready_replicas: int = 0
    tensor_parallel: int = 1


class ObservedLoad(_Model):
    requests_per_second: float | None = None
    input_tokens_mean: float | None = None
    output_tokens_mean: float | None = None
    percentile: float | None = Field(default=None, description="The SLO's percentile, at which latency is read.")
    ttft_at_percentile_milliseconds: float | None = Field(
        default=None, description="Time to first token at the SLO's percentile (`percentile`), milliseconds."
    )
    tpot_at_percentile_milliseconds: float | None = Field(
        default=None, description="Time per output token at the SLO's percentile (`percentile`), milliseconds."
    )
    ttft_p95_milliseconds: float | None = Field(
        default=None,
        description="Deprecated: despite its name, the TTFT at the SLO's percentile, which may not be 95; read "
        "ttftAtPercentileMilliseconds. Still written in v1alpha1, removed in the next API version.",
    )
    tpot_p95_milliseconds: float | None = Field(
        default=None,
        description="Deprecated: despite its name, the TPOT at the SLO's percentile, which may not be 95; read "
        "tpotAtPercentileMilliseconds. Still written in v1alpha1, removed in the next API version.",
    )


class Decision(_Model):
    time: str
    reason: str


class InferenceServiceStatus(_Model):
    model_config = ConfigDict(extra="allow")

    placement: list[PoolPlacement] = Field(default_factory=list)
    placement_summary: str | None = Field(default=None, description="e.g. 3×RTX-4090 1×H100")
    desired_replicas: int | None = Field(default=None, description="Replicas kilowatt wants, all pools.")
    ready_replicas: int | None = Field(default=None, description="Replicas serving, all pools.")
    observed: ObservedLoad | None = Field(default=None, description="Load and latency over the last window.")
    slo_attainment: float | None = Field(default=None, description="Fraction of recent requests within the SLO "
                                         "(at least: a request may miss both TTFT and TPOT).")
    slo_met: str | None = Field(default=None, description="True, False or Unknown.")
    cost_per_hour_usd: float | None = Field(default=None, description="Hardware plus energy now, USD per hour.")
    power_watts: float | None = Field(default=None, description="Power at the wall now (PUE included), watts.")
    co2_kg_per_day: float | None = Field(
        default=None, alias="co2KgPerDay",
        description="Kilograms of CO2 a day at the current power and carbon intensity (pools that set a carbon "
        "intensity).")
    forecast: str | None = Field(
        default=None, description="What the seasonal forecast expects within the next start-up time (from two "
        "days of the service's own history on; planned for when it is above what runs now).")
    burst_headroom: float | None = Field(
        default=None, description="The burst headroom planned with now, a fraction of demand: spec.scaling."
        "burstHeadroom, lowered step by step while the SLO's error budget is under-spent and restored at once when "
        "it burns (scaling.spendErrorBudget; the decision's reason says why).")
    last_decision: Decision | None = None
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    observed_generation: int | None = None


class InferenceService(_Model):
    """One model served under one latency SLO."""

    model_config = ConfigDict(extra="ignore")
    api_version: Literal["kilowatt.dev/v1alpha1"] = API_VERSION
    kind: Literal["InferenceService"] = "InferenceService"
    metadata: ServiceMeta
    spec: InferenceServiceSpec
    status: InferenceServiceStatus | None = None

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace or 'default'}/{self.metadata.name}"


def short_error(exc: Exception) -> str:
    """One line per pydantic error: ``spec.replicas: min (4) must be at most max (2)``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    lines = []
    for err in errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        message = re.sub(r"^(Value error|Assertion failed), ", "", err.get("msg", ""))
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)
