"""From API objects (pydantic) to the planner's snapshot. Pure: the caller supplies demand and observations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

import yaml
from pydantic import ValidationError

from kilowatt.api.v1alpha1 import AcceleratorPool, InferenceService, Ownership, RoutingMode, short_error
from kilowatt.economics import PoolEconomics, PowerCurve, carbon_source_from_spec, price_source_from_spec
from kilowatt.performance import GPU, ModelShape, TokenMix
from kilowatt.performance.capacity import default_calibration
from kilowatt.planner.snapshot import CurrentPlacement, PoolState, ServiceState, Snapshot


def gpu_of(pool: AcceleratorPool) -> GPU:
    g = pool.spec.gpu
    return GPU(
        model=g.model,
        memory_gib=g.memory_gib,
        memory_bandwidth_gb_per_second=g.memory_bandwidth_gb_per_second,
        fp16_tflops=g.fp16_tflops,
        board_power_watts=g.board_power_watts,
        idle_power_watts=g.idle_watts,
        nvlink=g.interconnect.value == "NVLink",
    )


def pool_state(
    pool: AcceleratorPool, gpus_available: int | None = None, price_usd_per_kwh: float | None = None,
    grams_co2_per_kwh: float | None = None,
) -> PoolState:
    """``gpus_available``: GPUs discovered on matching nodes (None: use maxGPUs, or 0 if unset);
    ``price_usd_per_kwh`` / ``grams_co2_per_kwh``: this period's Prometheus readings, where the pool reads them."""
    gpu = gpu_of(pool)
    spec = pool.spec
    price = price_source_from_spec(spec.cost.electricity, price_usd_per_kwh)
    curve = PowerCurve(gpu.idle_power_watts, gpu.board_power_watts, default_calibration().power_exponent)
    carbon = spec.cost.carbon
    economics = PoolEconomics(spec.cost.usd_per_gpu_hour, spec.cost.pue, curve, price,
                              owned=spec.cost.ownership is Ownership.OWNED,
                              carbon=carbon_source_from_spec(spec.cost, grams_co2_per_kwh),
                              usd_per_tonne_co2=carbon.usd_per_tonne_co2 if carbon is not None else 0.0)
    if gpus_available is None:
        gpus = spec.max_gpus or 0
    else:
        gpus = min(gpus_available, spec.max_gpus) if spec.max_gpus is not None else gpus_available
    return PoolState(pool.name, gpu, economics, gpus, spec.gpus_per_node, spec.replica_startup_seconds)


def service_state(
    service: InferenceService,
    demand_rps: float,
    mix: TokenMix | None = None,
    current: Mapping[str, CurrentPlacement] | None = None,
    corrections: Mapping[str, tuple[float, float]] | None = None,
) -> ServiceState:
    spec = service.spec
    m = spec.model
    shape = ModelShape(m.parameters_billion, m.dtype.value, m.layers, m.kv_heads, m.head_dim, m.max_context_tokens)
    if mix is None:
        # Without observed traffic, plan for a chat-like mix (the ShareGPT measurements' means).
        mix = TokenMix()
    return ServiceState(
        key=service.key,
        shape=shape,
        ttft_seconds=spec.slo.ttft_milliseconds / 1000.0,
        tpot_seconds=spec.slo.tpot_milliseconds / 1000.0,
        percentile=spec.slo.percentile,
        demand_rps=max(0.0, demand_rps),
        mix=mix,
        min_replicas=spec.replicas.min,
        max_replicas=spec.replicas.max,
        burst_headroom=spec.scaling.burst_headroom,
        scale_to_zero=spec.scaling.scale_to_zero,
        allowed_pools=tuple(spec.pools),
        profiles=tuple((p.pool, p.tensor_parallel, p.max_requests_per_second) for p in spec.profiles),
        current=tuple(sorted((current or {}).items())),
        corrections=tuple((pool, t, p) for pool, (t, p) in sorted((corrections or {}).items())),
        equal_share=spec.routing.mode is RoutingMode.SERVICE,
    )


class ManifestError(ValueError):
    """A YAML document that is not a valid kilowatt object; the message names the file, object and field."""


def load_objects(paths: Iterable[str | Path]) -> tuple[list[AcceleratorPool], list[InferenceService]]:
    """Read every AcceleratorPool and InferenceService from YAML files or directories (other kinds skipped)."""
    pools, services, errors = [], [], []
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml"))
        elif p.exists():
            files.append(p)
        else:
            raise ManifestError(f"{p}: no such file or directory")
    for f in files:
        for doc in yaml.safe_load_all(f.read_text(encoding="utf-8")):
            if not isinstance(doc, dict):
                continue
            kind = doc.get("kind")
            name = (doc.get("metadata") or {}).get("name", "?")
            try:
                if kind == "AcceleratorPool":
                    pools.append(AcceleratorPool.model_validate(doc))
                elif kind == "InferenceService":
                    doc.setdefault("metadata", {}).setdefault("namespace", "default")
                    services.append(InferenceService.model_validate(doc))
            except ValidationError as exc:
                errors.append(f"{f}: {kind} {name}: {short_error(exc)}")
    if errors:
        raise ManifestError("\n".join(errors))
    return pools, services


def snapshot_from_objects(
    pools: list[AcceleratorPool],
    services: list[InferenceService],
    demand_rps: Mapping[str, float],
    at: datetime,
) -> Snapshot:
    return Snapshot(
        at=at,
        pools=tuple(pool_state(p) for p in pools),
        services=tuple(service_state(s, demand_rps.get(s.key, 0.0)) for s in services),
    )
