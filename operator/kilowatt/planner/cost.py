"""What a placement costs at a load, for the planner's options and for a placement that runs now."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from kilowatt.economics.cost import CostBreakdown, ReplicaGroup, serving_cost, serving_costs
from kilowatt.planner.options import CapacityTable, Option, replica_capacity
from kilowatt.planner.snapshot import PoolState, ServiceState


def served_cost(service: ServiceState, chosen: list[tuple[Option, int]], at: datetime,
                marginal: bool = False) -> CostBreakdown:
    """Cost per hour of the chosen options serving the service's demand (``marginal``: what running them adds,
    the planner's price, rather than what they are charged)."""
    return serving_cost(service.demand_rps, [
        ReplicaGroup(o.pool.economics, o.tensor_parallel, n, o.capacity_rps, o.saturation_rps) for o, n in chosen
    ], at, service.equal_share, marginal)


def placement_cost(
    service: ServiceState,
    placement: Mapping[str, tuple[int, int]],
    pools: Mapping[str, PoolState],
    at: datetime,
    power_factors: Mapping[str, float] | None = None,
    capacity: CapacityTable | None = None,
) -> CostBreakdown:
    """Cost per hour of ``placement`` (pool -> (replicas, degree)) serving ``service.demand_rps``; pools not in
    ``pools`` are left out. ``power_factors``: measured over modelled power per pool."""
    return serving_cost(service.demand_rps, _groups(service, placement, pools, power_factors, capacity), at,
                        service.equal_share)


def _groups(service, placement, pools, power_factors, capacity) -> list[ReplicaGroup]:
    groups = []
    for p, (n, k) in placement.items():
        if p not in pools:
            continue
        within, saturation = replica_capacity(service, pools[p], k, capacity)
        groups.append(ReplicaGroup(pools[p].economics, k, n, within, saturation, (power_factors or {}).get(p, 1.0)))
    return groups


MEASURED_POWER_FACTOR_BOUNDS = (1 / 3, 3.0)  # a meter farther off than this from the model is a meter problem


def measured_power_factors(
    running: list[tuple[ServiceState, Mapping[str, tuple[int, int]]]],
    pools: Mapping[str, PoolState],
    measured_watts: Mapping[str, float],
    at: datetime,
    capacity: CapacityTable | None = None,
) -> dict[str, float]:
    """Measured (DCGM) over modelled GPU power per pool, for what runs now (each service's state carries the
    demand it serves and its placement pool -> (replicas, degree)): it scales the energy part of every cost on
    that pool, so reported cost follows the meters, not only the model."""
    modelled: dict[str, float] = {}
    for service, placement in running:
        live = {p: (n, k) for p, (n, k) in placement.items() if n > 0 and p in pools}
        groups = _groups(service, live, pools, None, capacity)
        for p, cost in zip(live, serving_costs(service.demand_rps, groups, at, service.equal_share)):
            modelled[p] = modelled.get(p, 0.0) + cost.power_watts / pools[p].economics.pue
    low, high = MEASURED_POWER_FACTOR_BOUNDS
    return {p: min(high, max(low, watts / modelled[p])) for p, watts in measured_watts.items()
            if watts and modelled.get(p, 0.0) > 0}
