"""Report: pure functions from a decision and its accounting to the status an object shows and the events that
say what changed. Nothing here talks to the API server; ``controller.apply`` writes what these return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from kilowatt.api.v1alpha1 import (
    AcceleratorPool,
    AcceleratorPoolStatus,
    InferenceServiceStatus,
    ObservedLoad,
    PoolPlacement,
)
from kilowatt.api.v1alpha1 import Decision as LastDecision
from kilowatt.controller.cluster import ClusterView
from kilowatt.controller.conditions import condition, iso, set_condition
from kilowatt.controller.observe import ObservedService
from kilowatt.decide import Decision
from kilowatt.economics.carbon import GRAMS_PER_KILOGRAM, carbon_source_from_spec
from kilowatt.economics.cost import CostBreakdown
from kilowatt.metrics import ServiceObservation
from kilowatt.planner.snapshot import PoolState
from kilowatt.planner.types import replica_label
from kilowatt.slo import within_slo

HOURS_PER_DAY = 24.0

TYPICAL_UTILISATION = 0.6  # a pool's effective $/GPU-h is quoted at a typical serving load


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Routed:
    """The Routed condition: whether the objects ``spec.routing.mode`` calls for are in place, and how."""

    ok: bool
    reason: str
    message: str


def service_status(
    item: ObservedService,
    decision: Decision,
    cost: CostBreakdown,
    previous: dict,
    pools: Mapping[str, AcceleratorPool],
    metrics_error: str | None,
    now: datetime,
    metric_names: Mapping[str, str] | None = None,
    routed: Routed | None = None,
) -> tuple[dict, list[Event]]:
    """The InferenceService's status after this period (wire form), and the events its conditions' transitions
    call for. ``previous``: the status as last written; ``routed``: how its routing objects stand (None: kilowatt
    wrote none this period — Advisory or Off — and the condition stays as it was)."""
    svc, data, current = item.input.service, item.input.data, item.input.current
    desired, tp = decision.desired, decision.tensor_parallel
    placement = [PoolPlacement(pool=p, desired_replicas=n, ready_replicas=current[p].ready if p in current else 0,
                               tensor_parallel=tp.get(p, 1)) for p, n in sorted(desired.items())]
    ready = sum(x.ready_replicas for x in placement)
    wanted = sum(x.desired_replicas for x in placement)
    summary = " ".join(replica_label(n, pools[p].spec.gpu.model, tp.get(p, 1))
                       for p, n in sorted(desired.items()) if n > 0 and p in pools) or "0"
    slo_met = slo_met_now(item, data)
    conditions = list(previous.get("conditions") or [])
    conditions = set_condition(conditions, "MetricsAvailable", data is not None,
                               "Observed" if data is not None else
                               ("PrometheusUnavailable" if metrics_error else "NoSeries"),
                               _observed_text(metric_names) if data is not None else
                               (metrics_error or f"no vLLM series for {item.key} yet") + "; placement held", now)
    events = _metrics_transition(previous.get("conditions"), conditions, data is not None)
    binding = None if decision.held else decision.binding
    conditions = set_condition(conditions, "Placed", binding is None, "Planned" if binding is None else
                               "CapacityShort", decision.reason if binding is None else str(binding), now)
    conditions = set_condition(conditions, "SLOMet", slo_met, {None: "Unknown", True: "WithinTargets",
                                                                False: "AboveTargets"}[slo_met],
                               _slo_text(item, data), now)
    if routed is not None:
        conditions = set_condition(conditions, "Routed", routed.ok, routed.reason, routed.message, now)
    conditions = set_condition(conditions, "Ready", ready > 0 and ready >= min(wanted, 1),
                               "ReplicasReady" if ready > 0 else "NoReadyReplicas", f"{ready}/{wanted} replicas ready",
                               now)
    last = previous.get("lastDecision")
    status = InferenceServiceStatus(
        placement=placement,
        placement_summary=summary,
        desired_replicas=wanted,
        ready_replicas=ready,
        observed=observed_load(data, svc.spec.slo.percentile),
        slo_attainment=round(data.slo_attainment, 4) if data and data.slo_attainment is not None else None,
        slo_met={None: "Unknown", True: "True", False: "False"}[slo_met],
        cost_per_hour_usd=round(cost.total_usd_per_hour, 4),
        power_watts=round(cost.power_watts, 1),
        co2_kg_per_day=round(cost.co2_grams_per_hour * HOURS_PER_DAY / GRAMS_PER_KILOGRAM, 3)
        if any(p in pools and carbon_source_from_spec(pools[p].spec.cost) is not None for p in desired) else None,
        forecast=decision.forecast.describe() if decision.forecast is not None else None,
        burst_headroom=decision.headroom.fraction if decision.headroom is not None else None,
        last_decision=(LastDecision(time=iso(now), reason=decision.reason) if decision.changed or not last
                       else LastDecision.model_validate(last)),
        conditions=conditions,
        observed_generation=item.body["metadata"].get("generation"),
    )
    return status.model_dump(by_alias=True, mode="json"), events


def _observed_text(metric_names: Mapping[str, str] | None) -> str:
    """Which of the names vLLM has used over its versions this cluster's series carry."""
    found = [f"{what} from {metric_names[key].removesuffix('_bucket')}" for key, what in
             (("tpot_buckets", "TPOT"), ("kv_cache", "KV-cache use")) if key in (metric_names or {})]
    return "latency and load observed" + (f" ({', '.join(found)})" if found else "")


def slo_met_now(item: ObservedService, data: ServiceObservation | None) -> bool | None:
    """Whether latency at the SLO's percentile is within both targets (None: not observed)."""
    if data is None or data.ttft_p_seconds is None or data.tpot_p_seconds is None:
        return None
    slo = item.input.service.spec.slo
    return bool(within_slo(data.ttft_p_seconds, data.tpot_p_seconds, slo.ttft_milliseconds / 1000,
                           slo.tpot_milliseconds / 1000))


def observed_load(data: ServiceObservation | None, percentile: float) -> ObservedLoad | None:
    if data is None:
        return None
    ms = lambda s: round(s * 1000, 1) if s is not None else None  # noqa: E731
    return ObservedLoad(
        requests_per_second=round(data.requests_per_second, 3),
        input_tokens_mean=round(data.input_tokens_mean, 1) if data.input_tokens_mean else None,
        output_tokens_mean=round(data.output_tokens_mean, 1) if data.output_tokens_mean else None,
        percentile=percentile,
        ttft_at_percentile_milliseconds=ms(data.ttft_p_seconds),
        tpot_at_percentile_milliseconds=ms(data.tpot_p_seconds),
        ttft_p95_milliseconds=ms(data.ttft_p_seconds),
        tpot_p95_milliseconds=ms(data.tpot_p_seconds),
    )


def _slo_text(item: ObservedService, data: ServiceObservation | None) -> str:
    slo = item.input.service.spec.slo
    if data is None or data.ttft_p_seconds is None or data.tpot_p_seconds is None:
        return "no latency observed"
    return (f"p{slo.percentile:g} TTFT {data.ttft_p_seconds * 1000:.0f} ms (target {slo.ttft_milliseconds:g}), "
            f"TPOT {data.tpot_p_seconds * 1000:.1f} ms (target {slo.tpot_milliseconds:g})")


def _metrics_transition(before_conditions: list | None, conditions: list, available: bool) -> list[Event]:
    """A Warning event when a service's metrics go missing (placement held), a Normal one when they return."""
    before, after = condition(before_conditions, "MetricsAvailable"), condition(conditions, "MetricsAvailable")
    if before is None or after is None or before.get("status") == after.get("status"):
        return []
    if available:
        return [Event("Normal", "MetricsRestored", "latency and load observed again; planning resumes")]
    return [Event("Warning", "MetricsUnavailable", after.get("message", ""))]


def scaled_event(item: ObservedService, decision: Decision, active: bool) -> Event:
    current = item.input.current
    summary = ", ".join(f"{p} {current[p].replicas if p in current else 0}→{decision.desired.get(p, 0)}"
                        for p in sorted(decision.desired))
    verb = "scaled" if active else "would scale (Advisory)"
    return Event("Normal", "Scaled" if active else "Recommendation",
                 f"{verb} {item.input.service.metadata.name}: {summary}: {decision.reason}")


def invalid_conditions(status: dict, problems_text: str, now: datetime, placed: bool = True) -> list[dict]:
    conditions = set_condition(status.get("conditions") or [], "Ready", False, "InvalidSpec", problems_text, now)
    return set_condition(conditions, "Placed", False, "InvalidSpec", problems_text, now) if placed else conditions


def pool_status(
    pool: AcceleratorPool,
    state: PoolState,
    view: ClusterView,
    measured_watts: float | None,
    price_fallback: str | None,
    previous: dict,
    now: datetime,
) -> tuple[dict, list[Event]]:
    """The AcceleratorPool's status (wire form) and the events its Ready / PriceAvailable transitions call for."""
    name = pool.name
    in_use = sum(r.ready * r.tensor_parallel for (_, p), r in view.deployments.items() if p == name)
    gpus = view.gpus_by_pool.get(name, 0)
    if pool.spec.max_gpus is not None:
        gpus = min(gpus, pool.spec.max_gpus)
    economics = state.economics
    effective = economics.effective_usd_per_gpu_hour(TYPICAL_UTILISATION, now)
    at_wall = None
    if measured_watts is not None:
        at_wall = round(measured_watts * economics.pue, 1)
        if in_use > 0:
            # Hardware plus the energy the meters say each GPU in use draws, at today's price.
            per_gpu_kw = measured_watts / in_use / 1000.0
            effective = economics.usd_per_gpu_hour + per_gpu_kw * economics.pue * economics.price.usd_per_kwh(now)
    nodes = view.nodes_by_pool.get(name, [])
    unusable = view.unusable_nodes_by_pool.get(name, [])
    if not nodes:
        ready, reason = False, "NoMatchingNodes"
        message = f"no node matches nodeSelector {pool.spec.node_selector}; label the GPU nodes or fix spec.nodeSelector"
    elif gpus <= 0:
        ready, reason = False, "NoUsableGPUs"
        message = (f"{len(nodes)} node(s), none usable (cordoned or not Ready: {', '.join(unusable)}); "
                   "uncordon or repair them" if unusable else
                   f"{len(nodes)} node(s) with no allocatable nvidia.com/gpu; is the NVIDIA device plugin "
                   "running on them?")
    else:
        ready, reason = True, "NodesFound"
        message = f"{len(nodes)} node(s), {gpus} GPU(s)" + (
            f"; not used: {', '.join(unusable)} (cordoned or not Ready)" if unusable else "")
    conditions = set_condition(previous.get("conditions") or [], "Ready", ready, reason, message, now)
    carbon = pool.spec.cost.carbon
    if pool.spec.cost.electricity.prometheus is not None or (carbon is not None and carbon.prometheus is not None):
        conditions = set_condition(conditions, "PriceAvailable", price_fallback is None,
                                   "Observed" if price_fallback is None else "Fallback",
                                   price_fallback or "price (and carbon intensity) read from Prometheus", now)
    events = []
    for type_, bad, good in (("Ready", "PoolUnavailable", "PoolAvailable"),
                             ("PriceAvailable", "PriceFallback", "PriceRestored")):
        was, cond = condition(previous.get("conditions"), type_), condition(conditions, type_)
        if cond is not None and (was or {}).get("status", "True") != cond["status"]:
            down = cond["status"] == "False"
            events.append(Event("Warning" if down else "Normal", bad if down else good, cond["message"]))
    status = AcceleratorPoolStatus(
        gpus_total=gpus, gpus_in_use=in_use, electricity_usd_per_kwh=round(economics.price.usd_per_kwh(now), 4),
        effective_usd_per_gpu_hour=round(effective, 4), measured_power_watts=at_wall,
        grid_grams_co2_per_kwh=round(economics.carbon.grams_co2_per_kwh(now), 1) if economics.carbon else None,
        ownership=pool.spec.cost.ownership.value, conditions=conditions)
    return status.model_dump(by_alias=True, mode="json", exclude_none=True), events
