"""One sentence per service on why its placement was chosen, and what the next-best alternative costs."""

from __future__ import annotations

import math
from datetime import datetime

from kilowatt.economics.cost import CostBreakdown
from kilowatt.planner.cost import served_cost
from kilowatt.planner.options import Option
from kilowatt.planner.reasons import Binding
from kilowatt.planner.snapshot import ServiceState
from kilowatt.planner.types import Alternative, Placement, placement_capacity, replica_label


def alternatives(service: ServiceState, options: list[Option], at: datetime) -> list[tuple[str, float]]:
    """Every single-pool way to serve the target alone: (description, USD/h the planner weighs: marginal cost
    plus the carbon price), cheapest first."""
    out = []
    for o in options:
        n = max(service.floor_replicas, math.ceil(service.target_rps / o.capacity_rps - 1e-9))
        if n > service.max_replicas or n * o.tensor_parallel > o.pool.gpus_max:
            continue
        cost = served_cost(service, [(o, n)], at, marginal=True).objective_usd_per_hour if n else 0.0
        out.append((f"{replica_label(n, o.pool.gpu.model, o.tensor_parallel)} on {o.pool.name}", cost))
    return sorted(out, key=lambda a: a[1])


def _equal_share_note(service: ServiceState, placement: tuple[Placement, ...], options: list[Option]) -> str:
    """Why routing mode Service shaped the placement: a mix counts at its slowest replica, or a cheaper but
    slower pool was left out because every replica would have counted at its capacity."""
    if not service.equal_share or not placement:
        return ""
    if len(placement) > 1:
        slowest = min(p.capacity_rps for p in placement)
        n = sum(p.replicas for p in placement)
        return (f"; routing mode Service gives every replica an equal share, so the mix counts as {n} × "
                f"{slowest:.2f} req/s (its slowest replica)")
    chosen = placement[0]
    cheaper = [o for o in options if o.pool.name != chosen.pool and o.capacity_rps < chosen.capacity_rps
               and o.usd_per_rps_hour < min((x.usd_per_rps_hour for x in options if x.pool.name == chosen.pool),
                                            default=math.inf)]
    if not cheaper:
        return ""
    o = min(cheaper, key=lambda x: x.usd_per_rps_hour)
    return (f"; one pool, because routing mode Service gives every replica an equal share: adding {o.pool.name} "
            f"replicas ({o.capacity_rps:.2f} req/s each) would count every replica at that (routing mode Weighted "
            "splits by capacity)")


def reason_for(
    service: ServiceState,
    placement: tuple[Placement, ...],
    cost: CostBreakdown,
    alts: list[tuple[str, float]],
    binding: Binding | None,
    options: list[Option] = (),
    weighed: CostBreakdown | None = None,
) -> tuple[str, Alternative | None]:
    """``cost``: what the placement is charged; ``weighed``: what the planner weighed (marginal cost and the
    carbon price; None: the same as ``cost``), which the next-best alternative is compared with."""
    # "3×RTX-4090(tp4)": three replicas of four GPUs each, as the alternatives are written.
    summary = " ".join(replica_label(p.replicas, p.gpu_model, p.tensor_parallel) for p in placement) or "no replicas"
    slo = f"TTFT {service.ttft_seconds * 1000:g} ms / TPOT {service.tpot_seconds * 1000:g} ms at p{service.percentile:g}"
    chosen = {f"{replica_label(p.replicas, p.gpu_model, p.tensor_parallel)} on {p.pool}" for p in placement}
    others = [a for a in alts if a[0] not in chosen or len(placement) != 1]
    next_best = Alternative(*others[0]) if others else None
    if binding is not None:
        return f"{summary} is the most that can run: {binding}; {service.target_rps:.2f} req/s needed.", next_best
    if not placement:
        return f"no traffic and scale-to-zero on: nothing runs ({slo}).", next_best
    capacity = placement_capacity([(p.replicas, p.capacity_rps) for p in placement], service.equal_share)
    text = (
        f"{summary} serve {service.demand_rps:.2f} req/s (+{service.burst_headroom:.0%} headroom, capacity "
        f"{capacity:.2f}) within {slo} for ${cost.total_usd_per_hour:.2f}/h "
        f"(hardware ${cost.hardware_usd_per_hour:.2f}, energy ${cost.energy_usd_per_hour:.2f})"
    ) + _equal_share_note(service, placement, options)
    weighed_usd = weighed.objective_usd_per_hour if weighed is not None else cost.total_usd_per_hour
    priced = ""
    owned = weighed is not None and weighed.hardware_usd_per_hour < cost.hardware_usd_per_hour - 1e-9
    carbon = weighed is not None and weighed.carbon_usd_per_hour > 0
    if owned or carbon:
        notes = []
        if owned:
            notes.append("owned hardware is paid either way: its energy above idle is what running adds")
        if carbon:
            notes.append(f"carbon {weighed.co2_grams_per_hour / 1000:.2f} kg/h priced "
                         f"${weighed.carbon_usd_per_hour:.3f}/h")
        text += f"; weighed at ${weighed_usd:.2f}/h ({'; '.join(notes)})"
        priced = "weighed "
    if next_best is not None and weighed_usd > 0:
        extra = next_best.cost_usd_per_hour / weighed_usd - 1.0
        text += f"; next best {next_best.description} {priced}at ${next_best.cost_usd_per_hour:.2f}/h ({extra:+.0%})"
    return text + ".", next_best
