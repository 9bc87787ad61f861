"""Carbon intensity of the grid in grams of CO2 per kWh, as a function of time: flat, an hourly daily profile
in local time, or a series (e.g. hourly intensities from a file).

    co2_grams = it_watts / 1000 [kW] x hours x PUE x grams_co2_per_kwh
    carbon_usd = co2_grams / 1e6 [tonnes] x usd_per_tonne_co2
"""

from __future__ import annotations

import bisect
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

GRAMS_PER_TONNE = 1_000_000.0
GRAMS_PER_KILOGRAM = 1000.0


class CarbonSource(Protocol):
    def grams_co2_per_kwh(self, at: datetime) -> float: ...


@dataclass(frozen=True)
class FlatCarbon:
    intensity_grams_co2_per_kwh: float

    def grams_co2_per_kwh(self, at: datetime) -> float:
        return self.intensity_grams_co2_per_kwh


@dataclass(frozen=True)
class HourlyCarbonProfile:
    """24 intensities, one per local hour of the day (00:00-01:00 first)."""

    time_zone: str
    hourly_grams_co2_per_kwh: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.hourly_grams_co2_per_kwh) != 24:
            raise ValueError(f"an hourly carbon profile needs 24 values, got {len(self.hourly_grams_co2_per_kwh)}")

    def grams_co2_per_kwh(self, at: datetime) -> float:
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        return self.hourly_grams_co2_per_kwh[at.astimezone(zoneinfo.ZoneInfo(self.time_zone)).hour]


@dataclass(frozen=True)
class CarbonSeries:
    """Step-wise intensities from timestamped samples; before the first, the first."""

    times: tuple[datetime, ...]
    values_grams_co2_per_kwh: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.times or len(self.times) != len(self.values_grams_co2_per_kwh):
            raise ValueError("a carbon series needs one intensity per time, and at least one")
        if any(b < a for a, b in zip(self.times, self.times[1:])):
            raise ValueError("carbon series times must be sorted")

    def grams_co2_per_kwh(self, at: datetime) -> float:
        i = bisect.bisect_right(self.times, at) - 1
        return self.values_grams_co2_per_kwh[max(i, 0)]


def carbon_source_from_spec(cost: object, fallback_grams_co2_per_kwh: float | None = None) -> CarbonSource | None:
    """A CarbonSource from a ``PoolCost`` API object: ``carbon`` (a Prometheus intensity is read by the
    operator's metric adapter; here its reading, or without one its fallback, stands in), else the older
    report-only ``electricity.gramsCO2PerKWh``; None when neither is set."""
    carbon = getattr(cost, "carbon", None)
    if carbon is None:
        flat = getattr(getattr(cost, "electricity", None), "grams_co2_per_kwh", None)
        return FlatCarbon(flat) if flat is not None else None
    if carbon.grams_co2_per_kwh is not None:
        return FlatCarbon(carbon.grams_co2_per_kwh)
    if carbon.hourly is not None:
        return HourlyCarbonProfile(carbon.hourly.time_zone, tuple(carbon.hourly.grams_co2_per_kwh))
    if fallback_grams_co2_per_kwh is not None:
        return FlatCarbon(fallback_grams_co2_per_kwh)
    return FlatCarbon(carbon.prometheus.fallback_grams_co2_per_kwh)
