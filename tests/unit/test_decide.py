"""One period's decision over a day of noisy demand: the stabiliser counts GPUs, so a change of tensor-parallel
degree never asks a pool for more GPUs than it has, and the degree is not rebuilt while a scale-down is held."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from kilowatt.decide import Decider, ServiceInput
from kilowatt.planner.reasons import DownWindow
from kilowatt.metrics.source import Observations, ServiceObservation
from kilowatt.planner.snapshot import CurrentPlacement
from kilowatt.state import load_objects, pool_state

from tests.paths import EXAMPLES


def _examples():
    """The example service, its pools by name, and each pool's state with every GPU free."""
    pools, services = load_objects([EXAMPLES])
    return services[0], {p.name: p for p in pools}, {p.name: pool_state(p, p.spec.max_gpus) for p in pools}


def test_a_day_of_decisions_stays_within_every_pool_and_holds_degrees_while_scaling_down():
    svc, by_name, states = _examples()
    decider = Decider()
    rng = np.random.default_rng(7)
    start = datetime(2024, 7, 16, 7, tzinfo=timezone.utc)
    current: dict[str, CurrentPlacement] = {}
    degree_changes = 0
    for minute in range(0, 24 * 60):
        base = 13 + 9 * np.sin(minute / 1440 * 2 * np.pi) ** 2
        rps = float(max(0.5, base * rng.lognormal(0, 0.15)))
        # The mean lengths of a minute's requests wander too (the Azure conversation trace: 1155 / 211 tokens).
        prompt, output = 1155.0 * rng.lognormal(0, 0.2), 211.0 * rng.lognormal(0, 0.1)
        obs = Observations(True, services={svc.key: ServiceObservation(rps, prompt, output, None, None, None)})
        item = ServiceInput.of(svc, current, obs.services[svc.key])
        d = decider.decide(start + timedelta(minutes=minute), minute * 60.0, [item], by_name, states).decisions[svc.key]
        for pool, n in d.desired.items():
            k = d.tensor_parallel[pool]
            assert n * k <= states[pool].gpus_max, (minute, pool, n, k, d.reason)
            if pool in current and n > 0 and k != current[pool].tensor_parallel:
                degree_changes += 1
                assert not any(isinstance(h, DownWindow) and h.pool == pool for h in d.holds), (minute, d.reason)
        current = {p: CurrentPlacement(n, d.tensor_parallel[p], n) for p, n in d.desired.items() if n > 0}
    # Churn stays bounded: a degree is not flipped back and forth every few minutes.
    assert degree_changes <= 24, degree_changes


def test_the_forecast_raises_demand_before_a_daily_ramp_and_status_says_so():
    from tests.unit.test_forecast import MIDNIGHT, daily

    svc, by_name, states = _examples()
    decider = Decider()
    # Three days of the pattern, as the Decider would have observed them, up to 07:10 on the fourth: the ramp
    # (07:00-09:00) has begun, and the next quarter hour is busier than this one.
    at, then = MIDNIGHT, MIDNIGHT + timedelta(days=3, hours=7, minutes=10)
    while at < then:
        decider.forecast.observe(svc.key, at, daily(at))
        decider.forecast.refit()
        at += timedelta(seconds=60)
    obs = ServiceObservation(daily(then), 1155.0, 211.0, None, None, None)
    d = decider.decide(then, 0.0, [ServiceInput.of(svc, {}, obs)], by_name, states).decisions[svc.key]
    assert d.forecast is not None and d.forecast.increase_rps > 1.0
    assert d.demand_rps >= daily(then) + d.forecast.increase_rps * 0.99  # planned for the ramp, not for now
    # Without the history the same observation plans for what is observed.
    fresh = Decider().decide(then, 0.0, [ServiceInput.of(svc, {}, obs)], by_name, states).decisions[svc.key]
    assert fresh.forecast is None and fresh.demand_rps == daily(then)


def test_a_pool_whose_degree_just_changed_is_held_for_an_hour():
    pools, services = load_objects([EXAMPLES])
    svc = services[0]
    decider = Decider()

    def held(degree, clock):
        item = ServiceInput.of(svc, {"rtx4090": CurrentPlacement(2, degree, 2)}, None)
        return decider._degrees_held(item, clock)

    assert held(2, 0.0) == ()  # the first degree seen is not a change
    assert held(1, 600.0) == ("rtx4090",)  # changed: held
    assert held(1, 600.0 + 3599.0) == ("rtx4090",)
    assert held(1, 600.0 + 3600.0) == ()  # an hour on, free again


def test_a_degree_chosen_on_provisional_figures_is_not_held():
    """A period without budget to measure a mix's curves plans on the analytic model's figures: a degree chosen on
    them may be wrong, so when it comes to run it is not held for the hour (a later period, on measured curves,
    may change it at once); the same change chosen on measured figures is held."""
    svc, by_name, states = _examples()
    at = datetime(2024, 7, 16, 7, tzinfo=timezone.utc)
    obs = ServiceObservation(12.0, 1155.0, 211.0, None, None, None)

    def run(budget_seconds: float) -> tuple[Decider, str, int]:
        decider = Decider(first_period_curve_seconds=0.0)  # not even a fresh operator's first-period budget
        decider.capacity.measure_budget_seconds = budget_seconds
        d = decider.decide(at, 0.0, [ServiceInput.of(svc, {}, obs)], by_name, states).decisions[svc.key]
        pool, k = next((p, d.tensor_parallel[p]) for p, n in d.desired.items() if n > 0)
        assert (svc.key in decider.capacity.provisional_services) == (budget_seconds == 0.0)
        return decider, pool, k

    for budget, provisional in ((0.0, True), (None, False)):
        decider, pool, k = run(budget)
        other = 2 if k == 1 else 1
        before = ServiceInput.of(svc, {pool: CurrentPlacement(2, other, 2)}, obs)
        after = ServiceInput.of(svc, {pool: CurrentPlacement(2, k, 2)}, obs)
        assert decider._degrees_held(before, 0.0) == ()  # the first degree seen
        assert decider._degrees_held(after, 600.0) == (() if provisional else (pool,))


def test_a_fresh_deciders_first_period_measures_what_a_later_one_would_plan_on():
    """A restarted operator's first period plans services that already run: it measures their curves beyond the
    per-period budget (``first_period_curve_seconds``, CURVE_FIRST_PERIOD_SECONDS by default; unbounded here so
    the test does not depend on this machine's speed), so it does not move them on provisional figures only for
    the next period to move them back; later periods keep to the budget."""
    svc, by_name, states = _examples()
    at = datetime(2024, 7, 16, 7, tzinfo=timezone.utc)
    obs = ServiceObservation(12.0, 1155.0, 211.0, None, None, None)
    current = {"h100": CurrentPlacement(1, 1, 1)}
    fresh = Decider(first_period_curve_seconds=math.inf)
    fresh.capacity.measure_budget_seconds = 0.0  # later periods: nothing new measured
    first = fresh.decide(at, 0.0, [ServiceInput.of(svc, current, obs)], by_name, states).decisions[svc.key]
    assert fresh.capacity.provisional == 0 and fresh.capacity.curves.measured > 0
    # A restarted operator (another fresh Decider) decides the same on the same inputs.
    again = Decider(first_period_curve_seconds=math.inf)
    again.capacity.measure_budget_seconds = 0.0
    assert again.decide(at, 0.0, [ServiceInput.of(svc, current, obs)], by_name, states).decisions[svc.key] == first
    other = ServiceObservation(12.0, 3000.0, 600.0, None, None, None)  # a mix not measured yet, after the first
    fresh.decide(at, 60.0, [ServiceInput.of(svc, current, other)], by_name, states)
    assert fresh.capacity.provisional > 0
    # A fresh install (nothing runs yet) has nothing to move: its first period keeps to the per-period budget.
    install = Decider(first_period_curve_seconds=math.inf)
    install.capacity.measure_budget_seconds = 0.0
    install.decide(at, 0.0, [ServiceInput.of(svc, {}, obs)], by_name, states)
    assert install.capacity.provisional > 0 and install.capacity.curves.measured == 0


def test_a_backlog_is_planned_for_once_not_read_as_a_step_in_the_arrivals():
    """Requests waiting are demand on top of the arrivals, to be served within BACKLOG_SECONDS: 20 req/s arriving
    and 600 requests waiting plan for 30 req/s. The backlog is a count now, not a windowed rate: read as a change
    of the windowed arrivals it would be multiplied by window / period (x4 here) and plan for 60."""
    from kilowatt.decide import BACKLOG_SECONDS

    svc, by_name, states = _examples()
    decider = Decider()
    start = datetime(2024, 7, 16, 12, tzinfo=timezone.utc)
    for i in range(12):  # three minutes of a steady 20 req/s, read over a 60-s window every 15 s
        waiting = 600.0 if i == 11 else 0.0
        obs = ServiceObservation(20.0, 1155.0, 211.0, None, None, None, waiting=waiting, window_seconds=60.0)
        d = decider.decide(start + timedelta(seconds=15 * i), 15.0 * i, [ServiceInput.of(svc, {}, obs)], by_name,
                           states).decisions[svc.key]
    assert d.demand_rps == pytest.approx(20.0 + 600.0 / BACKLOG_SECONDS)


@pytest.mark.parametrize("spend", [False, True])
def test_a_service_that_spends_its_error_budget_is_planned_with_less_headroom_only_when_it_asks(spend):
    """An hour at 99.99 % within a p95 SLO (5 % may miss): with spec.scaling.spendErrorBudget the headroom is
    given up step by step and the plan's capacity follows it down; a bad minute takes the spec's headroom back.
    Without it the spec's headroom stays, whatever is measured."""
    pools, services = load_objects([EXAMPLES])
    svc = services[0]
    scaling = svc.spec.scaling.model_copy(update={"spend_error_budget": spend})
    svc = svc.model_copy(update={"spec": svc.spec.model_copy(update={"scaling": scaling})})
    by_name = {p.name: p for p in pools}
    states = {p.name: pool_state(p, p.spec.max_gpus) for p in pools}
    decider = Decider()
    start = datetime(2024, 7, 16, 12, tzinfo=timezone.utc)

    def period(i: int, attainment: float):
        obs = ServiceObservation(20.0, 1155.0, 211.0, None, None, attainment, window_seconds=60.0)
        return decider.decide(start + timedelta(seconds=15 * i), 15.0 * i, [ServiceInput.of(svc, {}, obs)], by_name,
                              states)

    first = period(0, 0.9999)
    last = [period(i, 0.9999) for i in range(1, 4 * 60)][-1]  # an hour
    capacity = lambda out: out.plan.service(svc.key).capacity_rps  # noqa: E731
    d = last.decisions[svc.key]
    if not spend:
        assert d.headroom is None and " Headroom " not in d.reason
        assert capacity(last) == pytest.approx(capacity(first))
        return
    assert d.headroom.fraction < svc.spec.scaling.burst_headroom
    assert f"+{d.headroom.fraction:.0%} headroom" in d.reason and "Headroom " in d.reason
    assert capacity(last) < capacity(first)
    bad = [period(i, 0.5) for i in range(4 * 60, 4 * 61)][-1]  # a minute in which half the requests missed
    assert bad.decisions[svc.key].headroom.fraction == svc.spec.scaling.burst_headroom


def test_an_owned_replica_is_kept_through_a_dip_while_keeping_it_costs_cents_and_a_rented_one_is_not():
    """keep_warm_seconds: the owned RTX 4090s (energy above idle, a few cents an hour) wait out half an hour; the
    rented H100s ($2.49/h) the service's own window; the same 4090s at $0.50/kWh about ten minutes, at a $5/kWh
    price spike the service's window. Not behind a plain Service, not where the plan needs the GPUs, not for a
    replica that does not serve yet."""
    from kilowatt.decide import KEEP_WARM_MAX_SECONDS, KEEP_WARM_USD, keep_warm_seconds
    from kilowatt.planner.stabiliser import ScalingPolicy

    pools, _ = load_objects([EXAMPLES])
    by_name = {p.name: p for p in pools}
    at = datetime(2024, 7, 16, 12, tzinfo=timezone.utc)
    policy = ScalingPolicy(scale_down_window_seconds=300.0)
    states = {p.name: pool_state(p, p.spec.max_gpus) for p in pools}
    running = {"rtx4090": CurrentPlacement(4, 1, 4), "h100": CurrentPlacement(2, 1, 2)}
    assert keep_warm_seconds(running, {"rtx4090": 1}, states, policy, at) == {"rtx4090": KEEP_WARM_MAX_SECONDS}

    def at_price(usd_per_kwh: float):
        pool = by_name["rtx4090"]
        cost = pool.spec.cost.model_copy(update={"electricity": pool.spec.cost.electricity.model_copy(
            update={"time_of_use": None, "flat_usd_per_kwh": usd_per_kwh})})
        return {**states, "rtx4090": pool_state(pool.model_copy(update={"spec": pool.spec.model_copy(
            update={"cost": cost})}), 8)}

    dear = at_price(0.5)
    usd_per_hour = dear["rtx4090"].economics.marginal_cost(1, 1.0, at).objective_usd_per_hour
    held = keep_warm_seconds(running, {}, dear, policy, at)["rtx4090"]
    assert held == pytest.approx(KEEP_WARM_USD / usd_per_hour * 3600.0) and 300.0 < held < KEEP_WARM_MAX_SECONDS
    assert keep_warm_seconds(running, {}, at_price(5.0), policy, at) == {}
    assert keep_warm_seconds(running, {}, states, policy, at, equal_share=True) == {}
    room = {"rtx4090": 2, "h100": 0}  # the plan keeps 1 of the 4 running GPUs: 3 would be kept, 2 are free
    assert keep_warm_seconds(running, {"rtx4090": 1}, states, policy, at, room) == {} and room["rtx4090"] == 2
    room = {"rtx4090": 3}
    assert keep_warm_seconds(running, {"rtx4090": 1}, states, policy, at, room) == {"rtx4090": KEEP_WARM_MAX_SECONDS}
    assert room["rtx4090"] == 0  # taken: a second service is not kept there too
    assert keep_warm_seconds({"rtx4090": CurrentPlacement(4, 1, 0)}, {}, states, policy, at) == {}
    # A pool taken out of the spec's pools goes after the service's own window.
    assert keep_warm_seconds(running, {}, states, policy, at, allowed_pools=("h100",)) == {}
    # So does a service above a replicas.max lowered since (6 run, 4 allowed).
    assert keep_warm_seconds(running, {}, states, policy, at, max_replicas=4) == {}
    assert keep_warm_seconds(running, {}, states, policy, at, max_replicas=6) == {"rtx4090": KEEP_WARM_MAX_SECONDS}


def test_a_dip_releases_the_rented_h100s_after_the_window_and_the_owned_4090s_after_the_half_hour():
    """The stabiliser with keep_warm_seconds' windows: a plan that drops both pools moves the H100s after 300 s
    of it and the RTX 4090s (owned, cheap to keep) only after KEEP_WARM_MAX_SECONDS."""
    from kilowatt.decide import KEEP_WARM_MAX_SECONDS
    from kilowatt.planner.stabiliser import PoolUnits, ScalingPolicy, Stabiliser

    stabiliser, policy = Stabiliser(), ScalingPolicy(scale_down_window_seconds=300.0, max_scale_down_step=8)
    windows = {"rtx4090": KEEP_WARM_MAX_SECONDS, "h100": 300.0}
    current = {"rtx4090": PoolUnits(4, 4, 1.8), "h100": PoolUnits(2, 2, 19.0)}
    stabiliser.step("s", {"rtx4090": 4, "h100": 2}, current, 10.0, 0.0, policy, down_window_seconds=windows)
    moved_at = {}
    for t in range(15, 2000, 15):
        out = stabiliser.step("s", {"rtx4090": 0, "h100": 1}, current, 10.0, float(t), policy,
                              down_window_seconds=windows).units
        for pool in current:
            if out[pool] < current[pool].desired:
                moved_at.setdefault(pool, t)
    assert 300 <= moved_at["h100"] < 330 and KEEP_WARM_MAX_SECONDS <= moved_at["rtx4090"] < KEEP_WARM_MAX_SECONDS + 30


def _latency_learned(rates: list[float], slow_from: int) -> tuple[float, float]:
    """The correction a Decider learns for a service running 4 RTX 4090 replicas, read every 15 s over a 60-s
    window: latency as the model predicts until period ``slow_from``, three times it from then on."""
    from kilowatt.metrics.source import PoolLatency

    svc, by_name, states = _examples()
    decider = Decider()
    decider.capacity.latency = lambda *args: (0.5, 0.05)  # the model's prediction, whatever the load
    current = {"rtx4090": CurrentPlacement(4, 1, 4)}
    start = datetime(2024, 7, 16, 7, tzinfo=timezone.utc)
    for i, rps in enumerate(rates):
        slow = 3.0 if i >= slow_from else 1.0
        obs = ServiceObservation(rps, 1155.0, 211.0, 0.5 * slow, 0.05 * slow, None, running=4.0, waiting=0.0,
                                 by_pool={"rtx4090": PoolLatency(rps, 0.5 * slow, 0.05 * slow)}, window_seconds=60.0)
        decider.decide(start + timedelta(seconds=15 * i), 15.0 * i, [ServiceInput.of(svc, current, obs)], by_name,
                       states)
    return decider.correction.factors(svc.key, "rtx4090")


def test_a_burst_inside_the_metrics_window_is_not_learned_as_slower_gpus():
    # A burst from 2 to 30 req/s and back, as a 60-s window reads it: its requests' latency is the burst's (3x the
    # model at the window's mean rate), the window's rate a ramp. Steady before and after.
    burst = [2.0] * 12 + [9.0, 16.0, 23.0, 30.0, 23.0, 16.0, 9.0] + [2.0] * 2
    assert _latency_learned(burst, slow_from=12) == (1.0, 1.0)
    # The same slowness at a steady load is the GPUs' and is learned.
    ttft, tpot = _latency_learned([2.0] * 21, slow_from=12)
    assert ttft > 1.5 and tpot > 1.5


def test_bursts_that_come_back_faster_than_a_startup_are_held_for_in_the_lulls_and_the_reason_says_so():
    svc, by_name, states = _examples()
    decider = Decider()
    start = datetime(2024, 7, 16, 7, tzinfo=timezone.utc)
    current: dict[str, CurrentPlacement] = {}
    d = None
    for t in range(0, 3600, 15):  # 30 req/s for two periods every five minutes, 2 req/s between
        rps = 30.0 if t % 300 in (150, 165) else 2.0
        obs = ServiceObservation(rps, 1155.0, 211.0, None, None, None, window_seconds=60.0)
        d = decider.decide(start + timedelta(seconds=t), float(t), [ServiceInput.of(svc, current, obs)], by_name,
                           states).decisions[svc.key]
        current = {p: CurrentPlacement(n, d.tensor_parallel[p], n) for p, n in d.desired.items() if n > 0}
    headroom = svc.spec.scaling.burst_headroom
    assert d.recurring_rps == pytest.approx(30.0)  # a lull: what comes back is planned for, not 2 req/s
    assert d.demand_rps == pytest.approx(30.0 / (1.0 + headroom))  # at its own rate: the headroom is not added
    assert "Held for 30.00 req/s" in d.reason


def test_a_burst_read_as_a_step_is_planned_for_only_as_far_as_the_hours_bursts_rose():
    """A 60-s window read every 15 s: a burst shows as a window's gain, which the step reading multiplies by W/p.
    Seen for the first time, it is chased; after an hour of bursts that each ended within a start-up, what is
    planned goes no further than the hour's moments at that rate rose (DemandEstimator.reach)."""
    svc, by_name, states = _examples()

    def run(decider: Decider, rates: list[float]):
        start = datetime(2024, 7, 16, 7, tzinfo=timezone.utc)
        d = None
        for i, rps in enumerate(rates):
            obs = ServiceObservation(rps, 1155.0, 211.0, None, None, None, window_seconds=60.0)
            d = decider.decide(start + timedelta(seconds=15 * i), 15.0 * i, [ServiceInput.of(svc, {}, obs)],
                               by_name, states).decisions[svc.key]
        return d

    # A 30 req/s minute every five minutes, 2 req/s between, as a 60-s window reads it every 15 s.
    arrivals = [30.0 if t % 300 in (150, 165, 180, 195) else 2.0 for t in range(0, 3600, 15)]
    hour = [float(np.mean(arrivals[max(0, i - 3):i + 1])) for i in range(len(arrivals))]

    # The next burst's first two periods, read as steps: 2 -> 9 -> 20 req/s (burstier than the hour's were).
    first = run(Decider(), [2.0] * 30 + [9.0, 20.0])
    assert first.demand_rps == pytest.approx(40.0)  # seen for the first time: read whole, at most twice the rate
    assert max(hour) == pytest.approx(30.0)
    seen = run(Decider(), hour + [2.0] * 8 + [9.0, 20.0])  # two windows of lull before it, as before the first
    # After an hour of them: the hour's moments at 16 req/s or more rose at most 14 req/s within a start-up.
    assert seen.demand_rps == pytest.approx(20.0 + 14.0)
