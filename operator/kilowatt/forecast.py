"""Seasonal demand forecast: each service's daily (and, with two weeks of history, weekly) pattern, learned from
its own request rate, so capacity is ready before a ramp the pattern predicts rather than a start-up time after it.

The short-horizon estimate (kilowatt.demand) reacts to what is happening; this says what usually happens next.
It is fitted with statsmodels' Holt-Winters exponential smoothing (additive seasonality: quiet hours near zero
make a multiplicative one unstable) on 15-minute mean rates, refitted about hourly within a per-period time
budget, and used only as the *increase* it expects over the horizon from the bin we are in: a forecast whose
level is off (a new customer, a holiday) then moves nothing, while the shape of the morning ramp still leads.

History lives in memory (14 days of 15-minute bins, 1,344 floats per service); a restarted operator relearns it.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

BIN_SECONDS = 900.0
DAY_BINS = 96
WEEK_BINS = 7 * DAY_BINS
MAX_BINS = 2 * WEEK_BINS  # fourteen days
MIN_DAYS = 2  # Holt-Winters needs two full seasons to initialise
MIN_COVERAGE = 0.8  # of the bins in the history, observed (the rest filled)
REFIT_BINS = 4  # about hourly
AHEAD_BINS = 2 * DAY_BINS  # how far one fit forecasts; a stale fit still serves this long
MAX_INCREASE_FACTOR = 2.0  # the increase applied is at most this times the rate observed now


@dataclass(frozen=True)
class Expectation:
    """What the forecast expects over the horizon, in req/s."""

    now_rps: float  # the forecast for the bin we are in
    peak_rps: float  # the highest forecast bin within the horizon
    peak_at: datetime
    days_of_history: float
    seasonality: str  # "daily" or "daily and weekly"

    @property
    def increase_rps(self) -> float:
        return max(0.0, self.peak_rps - self.now_rps)

    def describe(self) -> str:
        return (f"{self.peak_rps:.2f} req/s expected by {self.peak_at:%H:%M} UTC ({self.increase_rps:+.2f} over "
                f"this quarter hour's {self.now_rps:.2f}); Holt-Winters, {self.seasonality}, "
                f"{self.days_of_history:.1f} days of history")


@dataclass
class _Series:
    first_bin: int  # absolute bin index (epoch seconds // BIN_SECONDS) of rates[0]
    rates: list[float] = field(default_factory=list)  # mean req/s per complete bin, NaN where unobserved
    open_bin: int = -1
    open_sum: float = 0.0  # req/s x seconds in the open bin
    open_seconds: float = 0.0
    last_seen_s: float | None = None
    fitted_bin: int = -1  # the bin the forecast below starts at
    forecast: np.ndarray | None = None
    seasonality: str = ""
    fitted_at_bin: int = -10**9


class SeasonalForecast:
    def __init__(self, fit_budget_seconds: float = 0.25) -> None:
        self.fit_budget_seconds = fit_budget_seconds
        self._series: dict[str, _Series] = {}

    def forget(self, key: str) -> None:
        self._series.pop(key, None)

    def observe(self, key: str, at: datetime, rps: float) -> None:
        """Fold in the rate observed now (req/s, over the metrics window ending at ``at``)."""
        t = _epoch(at)
        b = int(t // BIN_SECONDS)
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series(first_bin=b, open_bin=b, last_seen_s=t)
        if b < s.open_bin:
            return  # the clock went back: ignore rather than corrupt the series
        if b > s.open_bin:
            s.rates.append(s.open_sum / s.open_seconds if s.open_seconds > 0 else math.nan)
            s.rates.extend([math.nan] * (b - s.open_bin - 1))  # bins with no observation at all
            s.open_bin, s.open_sum, s.open_seconds = b, 0.0, 0.0
            if len(s.rates) > MAX_BINS:
                drop = len(s.rates) - MAX_BINS
                del s.rates[:drop]
                s.first_bin += drop
        dt = min(max(t - (s.last_seen_s if s.last_seen_s is not None else t), 0.0), BIN_SECONDS) or 1.0
        s.open_sum += max(0.0, rps) * dt
        s.open_seconds += dt
        s.last_seen_s = t

    def refit_due(self) -> list[str]:
        """Services with enough history whose fit is older than REFIT_BINS, the stalest first."""
        due = [(s.fitted_at_bin, k) for k, s in self._series.items()
               if len(s.rates) >= MIN_DAYS * DAY_BINS and s.open_bin - s.fitted_at_bin >= REFIT_BINS]
        return [k for _, k in sorted(due)]

    def refit(self, keys: list[str] | None = None) -> int:
        """Refit the due services (or ``keys``) until the per-period budget is spent; how many were fitted."""
        started = time.perf_counter()
        fitted = 0
        for key in self.refit_due() if keys is None else keys:
            if fitted and time.perf_counter() - started > self.fit_budget_seconds:
                break
            self._fit(self._series[key])
            fitted += 1
        return fitted

    def expect(self, key: str, at: datetime, horizon_seconds: float) -> Expectation | None:
        """The forecast from the bin containing ``at`` to ``at + horizon``; None without a usable fit."""
        s = self._series.get(key)
        if s is None or s.forecast is None:
            return None
        t = _epoch(at)
        first = int(t // BIN_SECONDS) - s.fitted_bin
        last = int((t + horizon_seconds) // BIN_SECONDS) - s.fitted_bin
        if first < 0 or last >= len(s.forecast):
            return None
        window = s.forecast[first:last + 1]
        peak = int(np.argmax(window))
        peak_at = datetime.fromtimestamp((s.fitted_bin + first + peak) * BIN_SECONDS, tz=timezone.utc)
        return Expectation(float(max(0.0, window[0])), float(max(0.0, window[peak])), peak_at,
                           len(s.rates) / DAY_BINS, s.seasonality)

    def projected(self, key: str, at: datetime, horizon_seconds: float, observed_rps: float
                  ) -> tuple[float, Expectation | None]:
        """``observed_rps`` raised by the increase the forecast expects within the horizon (at most
        MAX_INCREASE_FACTOR x the observed rate), and the expectation."""
        e = self.expect(key, at, horizon_seconds)
        if e is None:
            return observed_rps, None
        return observed_rps + min(e.increase_rps, MAX_INCREASE_FACTOR * observed_rps), e

    def _fit(self, s: _Series) -> None:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing  # imported once a fit is due (~1 s)

        y = np.asarray(s.rates, dtype=float)
        observed = ~np.isnan(y)
        s.fitted_at_bin = s.open_bin
        if observed.mean() < MIN_COVERAGE:
            s.forecast = None
            return
        y = _filled(y, observed)
        weekly = len(y) >= 2 * WEEK_BINS
        period = WEEK_BINS if weekly else DAY_BINS
        y = y[-(len(y) // period) * period:]  # whole seasons, the latest
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter; a poor fit still gives a usable shape
            model = ExponentialSmoothing(y, trend=None, seasonal="add", seasonal_periods=period,
                                         initialization_method="heuristic").fit()
            ahead = np.asarray(model.forecast(AHEAD_BINS + 1), dtype=float)
        # forecast(1) is the bin after the last complete one, which is the open bin.
        s.fitted_bin = s.first_bin + len(s.rates)
        s.forecast = np.maximum(ahead, 0.0) if np.all(np.isfinite(ahead)) else None
        s.seasonality = "daily and weekly" if weekly else "daily"


def _filled(y: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Unobserved bins filled with the same bin a day earlier (or later), else the nearest observed value."""
    y = y.copy()
    for i in np.flatnonzero(~observed):
        for j in (i - DAY_BINS, i + DAY_BINS):
            if 0 <= j < len(y) and observed[j]:
                y[i] = y[j]
                break
        else:
            near = np.flatnonzero(observed)
            y[i] = y[near[np.argmin(np.abs(near - i))]]
    return y


def _epoch(at: datetime) -> float:
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.timestamp()
