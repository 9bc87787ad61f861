"""Cost of a replica-hour: GPUs x (hardware USD/GPU-h + power(load) x PUE x price).

    energy_usd_per_hour = watts / 1000 [kW] x 1 h x PUE x usd_per_kwh
    co2_grams_per_hour  = watts / 1000 [kW] x 1 h x PUE x grams_co2_per_kwh
    carbon_usd_per_hour = co2_grams_per_hour / 1e6 [t] x usd_per_tonne_co2   (a shadow price: planned, not paid)

The /1000 is the one place watts become kilowatts; tests pin it so a kWh/Wh slip fails loudly.

Two views of one replica's cost. ``replica_cost``: what it is charged in reports (an owned GPU's amortised
price included). ``marginal_cost``: what running it adds, which the planner minimises: on an Owned pool the
hardware is paid whether the replica runs or not, and the GPU draws idle power either way, so only the energy
above idle (and its carbon) is marginal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kilowatt.economics.carbon import GRAMS_PER_TONNE, CarbonSource
from kilowatt.economics.power import PowerCurve
from kilowatt.economics.prices import PriceSource

WATTS_PER_KILOWATT = 1000.0


@dataclass(frozen=True)
class CostBreakdown:
    hardware_usd_per_hour: float
    energy_usd_per_hour: float
    power_watts: float  # at the wall, PUE included
    co2_grams_per_hour: float = 0.0
    carbon_usd_per_hour: float = 0.0  # the carbon price's shadow cost: in the objective, not in what is paid

    @property
    def total_usd_per_hour(self) -> float:
        """What is paid: hardware plus energy."""
        return self.hardware_usd_per_hour + self.energy_usd_per_hour

    @property
    def objective_usd_per_hour(self) -> float:
        """What the planner minimises: what is paid plus the carbon price."""
        return self.total_usd_per_hour + self.carbon_usd_per_hour

    def __add__(self, other: CostBreakdown) -> CostBreakdown:
        return CostBreakdown(
            self.hardware_usd_per_hour + other.hardware_usd_per_hour,
            self.energy_usd_per_hour + other.energy_usd_per_hour,
            self.power_watts + other.power_watts,
            self.co2_grams_per_hour + other.co2_grams_per_hour,
            self.carbon_usd_per_hour + other.carbon_usd_per_hour,
        )

    def scaled(self, factor: float) -> CostBreakdown:
        return CostBreakdown(
            self.hardware_usd_per_hour * factor, self.energy_usd_per_hour * factor, self.power_watts * factor,
            self.co2_grams_per_hour * factor, self.carbon_usd_per_hour * factor,
        )

    def energy_scaled(self, factor: float) -> CostBreakdown:
        """The same hardware, with power (and so energy and carbon) times ``factor``: a measured-power correction."""
        return CostBreakdown(
            self.hardware_usd_per_hour, self.energy_usd_per_hour * factor, self.power_watts * factor,
            self.co2_grams_per_hour * factor, self.carbon_usd_per_hour * factor,
        )


ZERO = CostBreakdown(0.0, 0.0, 0.0)


def energy_usd_per_hour(it_watts: float, pue: float, usd_per_kwh: float) -> float:
    """USD per hour of drawing ``it_watts`` of IT power at a site of ``pue`` and a price per kWh."""
    return it_watts / WATTS_PER_KILOWATT * pue * usd_per_kwh


def co2_grams_per_hour(it_watts: float, pue: float, grams_co2_per_kwh: float) -> float:
    """Grams of CO2 per hour of drawing ``it_watts`` of IT power at a site of ``pue`` and an intensity."""
    return it_watts / WATTS_PER_KILOWATT * pue * grams_co2_per_kwh


# A replica on an owned pool at zero energy price still costs this much per GPU-hour in the objective, so the
# planner never starts replicas that serve nothing because they look free.
MIN_MARGINAL_USD_PER_GPU_HOUR = 1e-4


@dataclass(frozen=True)
class PoolEconomics:
    """The cost side of one AcceleratorPool."""

    usd_per_gpu_hour: float
    pue: float
    power: PowerCurve
    price: PriceSource
    owned: bool = False  # hardware paid whether used or not: only energy above idle is marginal
    carbon: CarbonSource | None = None
    usd_per_tonne_co2: float = 0.0

    def replica_cost(self, gpus: int, utilisation: float, at: datetime) -> CostBreakdown:
        """What one replica of ``gpus`` GPUs is charged per hour at a utilisation: hardware and all its energy."""
        return self.cost_of(gpus * self.usd_per_gpu_hour, gpus * self.power.watts(utilisation), at)

    def marginal_cost(self, gpus: int, utilisation: float, at: datetime) -> CostBreakdown:
        """What running one replica adds per hour, the planner's price: as ``replica_cost`` on a rented pool; on
        an owned pool only the energy above idle (a tiny floor keeps an idle replica from looking free)."""
        if not self.owned:
            return self.replica_cost(gpus, utilisation, at)
        above_idle = gpus * (self.power.watts(utilisation) - self.power.idle_watts)
        return self.cost_of(gpus * MIN_MARGINAL_USD_PER_GPU_HOUR, above_idle, at)

    def idle_cost(self, gpus: int, at: datetime) -> CostBreakdown:
        """Per hour of ``gpus`` GPUs no replica holds: an owned pool's are paid for and draw idle power; a
        rented pool's cost nothing (they are not rented)."""
        if not self.owned or gpus <= 0:
            return ZERO
        return self.cost_of(gpus * self.usd_per_gpu_hour, gpus * self.power.idle_watts, at)

    def cost_of(self, hardware_usd_per_hour: float, it_watts: float, at: datetime) -> CostBreakdown:
        """Per hour: that hardware, and ``it_watts`` of IT power at this pool's PUE, price and carbon at ``at``."""
        grams = co2_grams_per_hour(it_watts, self.pue, self.carbon.grams_co2_per_kwh(at)) if self.carbon else 0.0
        return CostBreakdown(
            hardware_usd_per_hour=hardware_usd_per_hour,
            energy_usd_per_hour=energy_usd_per_hour(it_watts, self.pue, self.price.usd_per_kwh(at)),
            power_watts=it_watts * self.pue,
            co2_grams_per_hour=grams,
            carbon_usd_per_hour=grams / GRAMS_PER_TONNE * self.usd_per_tonne_co2,
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
                  equal_share: bool = False, marginal: bool = False) -> list[CostBreakdown]:
    """Cost per hour of each of ``groups`` while together they serve ``demand_rps``, the demand shared across
    replicas in proportion to their capacity within the SLO (weighted routing) or equally (``equal_share``: a
    plain Service); each replica's power follows its utilisation (share / saturation).

    The one rule for what a placement costs at a load: the planner's plans, the operator's status and its
    measured-power correction all call it. ``marginal``: what running them adds (``PoolEconomics.marginal_cost``)
    rather than what they are charged."""
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
        replica = (g.economics.marginal_cost if marginal else g.economics.replica_cost)(
            g.tensor_parallel, utilisation, at)
        if g.power_factor != 1.0:
            replica = replica.energy_scaled(g.power_factor)
        out.append(replica.scaled(g.replicas))
    return out


def serving_cost(demand_rps: float, groups: list[ReplicaGroup], at: datetime,
                 equal_share: bool = False, marginal: bool = False) -> CostBreakdown:
    """The sum of :func:`serving_costs`."""
    total = ZERO
    for cost in serving_costs(demand_rps, groups, at, equal_share, marginal):
        total = total + cost
    return total
