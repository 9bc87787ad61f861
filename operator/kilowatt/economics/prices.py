"""Electricity prices in USD per kWh, as a function of time: flat, a time-of-use schedule, or a series."""

from __future__ import annotations

import bisect
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol


class PriceSource(Protocol):
    def usd_per_kwh(self, at: datetime) -> float: ...

    def describe(self, at: datetime) -> str: ...


@dataclass(frozen=True)
class FlatPrice:
    price_usd_per_kwh: float

    def usd_per_kwh(self, at: datetime) -> float:
        return self.price_usd_per_kwh

    def describe(self, at: datetime) -> str:
        return f"flat ${self.price_usd_per_kwh:.3f}/kWh"


@dataclass(frozen=True)
class TimeOfUsePrice:
    """Periods ``(start_minute, end_minute, usd_per_kwh)`` in local time; validated to tile the day."""

    time_zone: str
    periods: tuple[tuple[int, int, float], ...]

    def usd_per_kwh(self, at: datetime) -> float:
        return self._period(at)[2]

    def _period(self, at: datetime) -> tuple[int, int, float]:
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        local = at.astimezone(zoneinfo.ZoneInfo(self.time_zone))
        minute = local.hour * 60 + local.minute
        for start, end, price in self.periods:
            inside = start <= minute < end if start < end else (minute >= start or minute < end)
            if inside:
                return start, end, price
        raise LookupError(f"no time-of-use period covers {local:%H:%M} in {self.time_zone}")

    def describe(self, at: datetime) -> str:
        start, end, price = self._period(at)
        return f"${price:.3f}/kWh ({start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d} {self.time_zone})"


@dataclass(frozen=True)
class PriceSeries:
    """Step-wise prices from timestamped samples (e.g. hourly wholesale prices); before the first, the first."""

    times: tuple[datetime, ...]
    prices_usd_per_kwh: tuple[float, ...]
    label: str = "series"

    def __post_init__(self) -> None:
        if not self.times or len(self.times) != len(self.prices_usd_per_kwh):
            raise ValueError("a price series needs one price per time, and at least one")
        if any(b < a for a, b in zip(self.times, self.times[1:])):
            raise ValueError("price series times must be sorted")

    def usd_per_kwh(self, at: datetime) -> float:
        i = bisect.bisect_right(self.times, at) - 1
        return self.prices_usd_per_kwh[max(i, 0)]

    def describe(self, at: datetime) -> str:
        return f"${self.usd_per_kwh(at):.3f}/kWh ({self.label})"


def _minute(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def price_source_from_spec(electricity: object, fallback_usd_per_kwh: float | None = None) -> PriceSource:
    """A PriceSource from an ``Electricity`` API object. A Prometheus price is read by the operator's metric
    adapter; here, without metrics, its fallback stands in."""
    if getattr(electricity, "flat_usd_per_kwh", None) is not None:
        return FlatPrice(electricity.flat_usd_per_kwh)
    tou = getattr(electricity, "time_of_use", None)
    if tou is not None:
        # "24:00" is minute 1440; a period whose end is before its start wraps past midnight.
        periods = tuple((_minute(p.start), _minute(p.end), p.usd_per_kwh) for p in tou.periods)
        return TimeOfUsePrice(tou.time_zone, periods)
    prom = getattr(electricity, "prometheus", None)
    if prom is not None:
        return FlatPrice(fallback_usd_per_kwh if fallback_usd_per_kwh is not None else prom.fallback_usd_per_kwh)
    raise ValueError("electricity has no price: set flatUsdPerKWh, timeOfUse or prometheus")
