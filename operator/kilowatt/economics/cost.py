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
