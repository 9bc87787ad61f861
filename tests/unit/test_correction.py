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


def test_a_single_slow_request_does_not_move_the_correction():
    c = LatencyCorrection()
    # A trickle (three new requests a period): one long prompt makes the window's p95 three times the model's for
    # the four periods it is in the window; the rest of the half hour reads as the model says.
    for _ in range(4):
        c.observe("ns/a", "rtx4090", 0.2, 0.2, 0.6, 0.02, 0.02, requests=3, percentile=95)
    assert c.factors("ns/a", "rtx4090") == (1.0, 1.0)  # 12 requests: no p95 to learn from yet
    for _ in range(30):
        c.observe("ns/a", "rtx4090", 0.2, 0.2, 0.2, 0.02, 0.02, requests=3, percentile=95)
    assert c.factors("ns/a", "rtx4090") == (1.0, 1.0)  # 102 requests pooled: their median says the model is right
    # A trickle that is slow all along learns it, once enough requests are in.
    for _ in range(34):
        c.observe("ns/b", "rtx4090", 0.2, 0.2, 0.6, 0.02, 0.02, requests=3, percentile=95)
    assert c.factors("ns/b", "rtx4090")[0] == pytest.approx(1.0 + 0.3 * (3.0 - 1.0))
    # 200 requests in one period are evidence at once; at p99 they are not yet enough (500 are).
    c.observe("ns/c", "rtx4090", 3.3, 0.2, 0.6, 0.02, 0.02, requests=200, percentile=95)
    assert c.factors("ns/c", "rtx4090")[0] == pytest.approx(1.6)
    c.observe("ns/d", "rtx4090", 3.3, 0.2, 0.6, 0.02, 0.02, requests=200, percentile=99)
    assert c.factors("ns/d", "rtx4090") == (1.0, 1.0)


def test_a_trickle_s_chance_bunching_does_not_buy_replicas():
    from kilowatt.demand import DemandEstimator

    d = DemandEstimator()
    for t in range(0, 600, 15):
        steady = d.update("ns/a", float(t), 0.1, 120.0, requests=6)  # ~6 requests a minute
    # Three requests in one second of a minute read as 0.15 req/s: a 50 % jump on 9 requests.
    bunched = d.update("ns/a", 600.0, 0.15, 120.0, requests=9)
    assert bunched < 0.12 and steady == pytest.approx(0.1)
    # The same jump on a busy service (900 requests a minute) is real and is planned for at once.
    busy = DemandEstimator()
    for t in range(0, 600, 15):
        busy.update("ns/b", float(t), 10.0, 120.0, requests=600)
    assert busy.update("ns/b", 600.0, 15.0, 120.0, requests=900) >= 15.0


def test_a_trickle_whose_tail_is_slow_learns_it_from_pooled_windows():
    """Eight requests a window, 6 % of them three times slower than the model: a window's "p95" is its slowest
    request, slow in 1 - 0.94^8 = 39 % of windows. The pooled windows read at 0.95^8 = 66 % find the slow tail
    (a median would miss it)."""
    import random

    rng = random.Random(3)
    c = LatencyCorrection()
    for _ in range(200):
        slowest = 0.6 if any(rng.random() < 0.06 for _ in range(8)) else 0.2
        c.observe("ns/a", "rtx4090", 0.13, 0.2, slowest, 0.02, 0.02, requests=2, percentile=95, window_requests=8)
    assert c.factors("ns/a", "rtx4090")[0] > 1.5


def test_a_deleted_service_is_forgotten_and_a_new_one_of_its_name_starts_from_the_prior():
    c = LatencyCorrection(smoothing=1.0)
    c.observe("ns/a", "rtx4090", 5.0, 0.1, 0.2, 0.02, 0.03)
    c.observe("ns/a", "h100", 5.0, 0.1, 0.1, 0.02, 0.01, requests=3)  # a trickle, kept aside
    c.observe("ns/b", "rtx4090", 5.0, 0.1, 0.3, 0.02, 0.02)
    c.forget("ns/a")
    assert c.factors("ns/a", "rtx4090") == (1.0, 1.0) and "prior stands" in c.explain("ns/a", "rtx4090")
    c.observe("ns/a", "h100", 5.0, 0.1, 0.1, 0.02, 0.01, requests=98)  # not pooled with the forgotten trickle
    assert c.factors("ns/a", "h100") == (1.0, 1.0)
    assert c.factors("ns/b", "rtx4090") == pytest.approx((3.0, 1.0))  # another service's stays
