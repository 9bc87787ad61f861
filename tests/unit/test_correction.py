"""Online latency correction: bounded, smoothed, per service and pool, and it moves capacity."""

import pytest

from kilowatt.performance.correction import MAX_FACTOR, MIN_FACTOR, LatencyCorrection


def test_no_observation_means_no_correction():
    c = LatencyCorrection()
    assert c.factors("ns/a", "rtx4090") == (1.0, 1.0)
    assert "prior stands" in c.explain("ns/a", "rtx4090")


def test_slower_than_predicted_raises_the_factor_gradually():
    c = LatencyCorrection(smoothing=0.3)
    c.observe("ns/a", "rtx4090", 5.0, 0.1, 0.1, 0.02, 0.03)
    ttft, tpot = c.factors("ns/a", "rtx4090")
    assert ttft == pytest.approx(1.0) and tpot == pytest.approx(1.15)
    for _ in range(30):
        c.observe("ns/a", "rtx4090", 5.0, 0.1, 0.1, 0.02, 0.03)
    assert c.factors("ns/a", "rtx4090")[1] == pytest.approx(1.5, rel=1e-3)
    assert "1.50× (TPOT)" in c.explain("ns/a", "rtx4090")


def test_factors_are_bounded():
    c = LatencyCorrection(smoothing=1.0)
    c.observe("ns/a", "p", 5.0, 0.1, 100.0, 0.02, 0.00001)
    assert c.factors("ns/a", "p") == (MAX_FACTOR, MIN_FACTOR)


def test_idle_periods_and_missing_data_change_nothing():
    c = LatencyCorrection()
    c.observe("ns/a", "p", 0.0, 0.1, 0.5, 0.02, 0.1)  # no traffic: percentiles mean nothing
    c.observe("ns/a", "p", 5.0, 0.1, None, 0.02, None)  # no data
    assert c.factors("ns/a", "p") == (1.0, 1.0)


def test_corrections_are_per_service_and_pool():
    c = LatencyCorrection(smoothing=1.0)
    c.observe("ns/a", "p", 5.0, 0.1, 0.2, 0.02, 0.02)
    assert c.factors("ns/a", "q") == (1.0, 1.0) and c.factors("ns/b", "p") == (1.0, 1.0)
