"""Cost of a replica-hour: GPUs x (hardware USD/GPU-h + power(load) x PUE x price).

    energy_usd_per_hour = watts / 1000 [kW] x 1 h x PUE x usd_per_kwh

The /1000 is the one place watts become kilowatts; tests pin it so a kWh/Wh slip fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kilowatt.economics.power import PowerCurve
from kilowatt.economics.prices import PriceSource

WATTS_PER_KILOWATT = 1000.0


@dataclass(frozen=True)
class CostBreakdown:
    hardware_usd_per_hour: float
    energy_usd_per_hour: float
    power_watts: float  # at the wall, PUE included

    @property
    def total_usd_per_hour(self) -> float:
        return self.hardware_usd_per_hour + self.energy_usd_per_hour

    def __add__(self, other: CostBreakdown) -> CostBreakdown:
        return CostBreakdown(
            self.hardware_usd_per_hour + other.hardware_usd_per_hour,
            self.energy_usd_per_hour + other.energy_usd_per_hour,
            self.power_watts + other.power_watts,
        )

    def scaled(self, factor: float) -> CostBreakdown:
        return CostBreakdown(
            self.hardware_usd_per_hour * factor, self.energy_usd_per_hour * factor, self.power_watts * factor
        )


ZERO = CostBreakdown(0.0, 0.0, 0.0)


def energy_usd_per_hour(it_watts: float, pue: float, usd_per_kwh: float) -> float:
    """USD per hour of drawing ``it_watts`` of IT power at a site of ``pue`` and a price per kWh."""
    return it_watts / WATTS_PER_KILOWATT * pue * usd_per_kwh


@dataclass(frozen=True)
class PoolEconomics:
    """The cost side of one AcceleratorPool."""

    usd_per_gpu_hour: float
    pue: float
    power: PowerCurve
    price: PriceSource

    def replica_cost(self, gpus: int, utilisation: float, at: datetime) -> CostBreakdown:
        it_watts = gpus * self.power.watts(utilisation)
        price = self.price.usd_per_kwh(at)
        return CostBreakdown(
            hardware_usd_per_hour=gpus * self.usd_per_gpu_hour,
            energy_usd_per_hour=energy_usd_per_hour(it_watts, self.pue, price),
            power_watts=it_watts * self.pue,
        )

    def effective_usd_per_gpu_hour(self, utilisation: float, at: datetime) -> float:
        return self.replica_cost(1, utilisation, at).total_usd_per_hour


@dataclass(frozen=True)
class ReplicaGroup:
    """``replicas`` replicas of one kind on one pool, as the cost of serving sees them."""

    economics: PoolEconomics
    tensor_parallel: int
    replicas: int
    capacity_rps: float  # per replica, within the SLO
    saturation_rps: float  # per replica, whatever the latency
    power_factor: float = 1.0  # measured over modelled power on the pool (1: the power model alone)


def serving_costs(demand_rps: float, groups: list[ReplicaGroup], at: datetime,
                  equal_share: bool = False) -> list[CostBreakdown]:
    """Cost per hour of each of ``groups`` while together they serve ``demand_rps``, the demand shared across
    replicas in proportion to their capacity within the SLO (weighted routing) or equally (``equal_share``: a
    plain Service); each replica's power follows its utilisation (share / saturation).

    The one rule for what a placement costs at a load: the planner's plans, the operator's status and its
    measured-power correction all call it."""
    capacity = sum(g.capacity_rps * g.replicas for g in groups if g.replicas > 0)
    replicas = sum(g.replicas for g in groups if g.replicas > 0)
    out = []
    for g in groups:
        if g.replicas <= 0:
            out.append(ZERO)
            continue
        if equal_share:
            share = demand_rps / replicas
        else:
            share = demand_rps * (g.capacity_rps / capacity) / g.replicas if capacity > 0 else 0.0
        utilisation = share / g.saturation_rps if g.saturation_rps > 0 else 0.0
        replica = g.economics.replica_cost(g.tensor_parallel, utilisation, at)
        if g.power_factor != 1.0:
            replica = CostBreakdown(replica.hardware_usd_per_hour, replica.energy_usd_per_hour * g.power_factor,
                                    replica.power_watts * g.power_factor)
        out.append(replica.scaled(g.replicas))
    return out


def serving_cost(demand_rps: float, groups: list[ReplicaGroup], at: datetime,
                 equal_share: bool = False) -> CostBreakdown:
    """The sum of :func:`serving_costs`."""
    total = ZERO
    for cost in serving_costs(demand_rps, groups, at, equal_share):
        total = total + cost
    return total
