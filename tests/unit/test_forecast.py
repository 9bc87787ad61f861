"""The seasonal forecast: it leads a daily ramp it has seen, stays out of the way without history, and never
turns a quiet hour into capacity."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from kilowatt.forecast import DAY_BINS, SeasonalForecast

MIDNIGHT = datetime(2026, 3, 2, tzinfo=timezone.utc)


def daily(at: datetime) -> float:
    """2 req/s at night, a ramp from 07:00 to 09:00 up to 20 req/s, back down from 18:00 to 20:00."""
    h = at.hour + at.minute / 60
    if h < 7 or h >= 20:
        return 2.0
    if h < 9:
        return 2.0 + 18.0 * (h - 7) / 2
    if h < 18:
        return 20.0
    return 20.0 - 18.0 * (h - 18) / 2


def feed(forecast: SeasonalForecast, days: float, noise: float = 0.0, seed: int = 0) -> datetime:
    rng = np.random.default_rng(seed)
    at = MIDNIGHT
    while at < MIDNIGHT + timedelta(days=days):
        forecast.observe("ns/a", at, max(0.0, daily(at) + rng.normal(0.0, noise)))
        forecast.refit()
        at += timedelta(seconds=60)
    return at


def test_the_forecast_leads_a_daily_ramp_it_has_seen():
    forecast = SeasonalForecast()
    feed(forecast, 3 + 7 / 24 - 1 / 60, noise=0.5)  # three days, up to 06:59 on the fourth
    at = MIDNIGHT + timedelta(days=3, hours=6, minutes=59)
    observed = daily(at)
    ahead, expectation = forecast.projected("ns/a", at, 1800.0, observed)
    assert expectation is not None and expectation.seasonality == "daily"
    # The ramp starts at 07:00: within half an hour the pattern says ~4.5 req/s more than now.
    assert expectation.increase_rps > 2.0
    assert ahead > observed + 2.0
    assert expectation.peak_at > at
    assert "req/s expected by" in expectation.describe()


def test_a_flat_hour_gets_no_increase_and_a_quiet_one_never_a_big_one():
    forecast = SeasonalForecast()
    end = feed(forecast, 3, noise=0.5)
    at = end + timedelta(hours=3)  # 03:00, flat at night
    ahead, expectation = forecast.projected("ns/a", at, 1800.0, daily(at))
    assert expectation is not None
    assert ahead - daily(at) < 1.0
    # Whatever the pattern says, the increase is at most twice what is observed now.
    ahead, _ = forecast.projected("ns/a", at.replace(hour=6, minute=59), 7200.0, 0.1)
    assert ahead <= 0.1 * 3 + 1e-9


def test_no_forecast_before_two_days_of_history():
    forecast = SeasonalForecast()
    end = feed(forecast, 1.9)
    assert forecast.expect("ns/a", end, 1800.0) is None
    assert forecast.projected("ns/a", end, 1800.0, 5.0) == (5.0, None)


def test_the_refit_keeps_to_its_budget():
    forecast = SeasonalForecast(fit_budget_seconds=0.0)
    for key in ("ns/a", "ns/b", "ns/c"):
        at = MIDNIGHT
        for _ in range(2 * DAY_BINS + 2):
            forecast.observe(key, at, 5.0)
            at += timedelta(seconds=900)
    assert len(forecast.refit_due()) == 3
    assert forecast.refit() == 1  # a budget spent: one fit a period at least, the rest wait their turn
    assert len(forecast.refit_due()) == 2


def test_a_gap_in_the_metrics_is_filled_not_read_as_zero():
    forecast = SeasonalForecast()
    at = MIDNIGHT
    while at < MIDNIGHT + timedelta(days=3):
        if not (MIDNIGHT + timedelta(days=1, hours=10) <= at < MIDNIGHT + timedelta(days=1, hours=12)):
            forecast.observe("ns/a", at, daily(at))
        forecast.refit()
        at += timedelta(seconds=60)
    e = forecast.expect("ns/a", at + timedelta(hours=10), 900.0)
    assert e is not None and e.now_rps == pytest.approx(20.0, rel=0.25)
