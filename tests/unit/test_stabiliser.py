"""The stabiliser: up fast, down slowly, bounded steps, no flapping, no gap while replacements start."""

import random

from kilowatt.planner.reasons import UpBounded, WaitingForReady
from kilowatt.planner.stabiliser import PoolUnits, ScalingPolicy, Stabiliser

POLICY = ScalingPolicy(scale_up_window_seconds=0, scale_down_window_seconds=300, max_scale_up_step=4,
                       max_scale_down_step=1)


def current(**pools):
    return {name: PoolUnits(desired=d, ready=r, capacity_rps_per_unit=c) for name, (d, r, c) in pools.items()}


def test_scale_up_happens_at_once():
    step = Stabiliser().step("s", {"a": 3}, current(a=(1, 1, 5.0)), 10.0, 0.0, POLICY)
    assert step.units == {"a": 3}


def test_scale_up_is_bounded_per_step():
    step = Stabiliser().step("s", {"a": 20}, current(a=(1, 1, 5.0)), 50.0, 0.0, POLICY)
    assert step.units == {"a": 5}
    assert step.holds == (UpBounded("a", 1, 5, 20),)


def test_scale_down_waits_for_the_whole_window():
    stab = Stabiliser()
    now = current(a=(4, 4, 5.0))
    for t in range(0, 300, 15):
        assert stab.step("s", {"a": 2}, now, 5.0, float(t), POLICY).units == {"a": 4}
    assert stab.step("s", {"a": 2}, now, 5.0, 300.0, POLICY).units == {"a": 3}  # one step at a time


def test_a_brief_dip_does_not_scale_down():
    stab = Stabiliser()
    now = current(a=(4, 4, 5.0))
    recs = [4] * 10 + [1] + [4] * 30
    for i, rec in enumerate(recs):
        assert stab.step("s", {"a": rec}, now, 15.0, i * 15.0, POLICY).units["a"] == 4


def test_noisy_load_does_not_flap():
    stab, rng = Stabiliser(), random.Random(7)
    desired, changes, direction = 4, 0, 0
    for i in range(400):
        rec = 4 + rng.choice([-1, 0, 1])
        got = stab.step("s", {"a": rec}, current(a=(desired, desired, 5.0)), 10.0, i * 15.0, POLICY).units["a"]
        new_direction = (got > desired) - (got < desired)
        if new_direction and new_direction != direction:
            changes += 1
            direction = new_direction
        desired = got
    # Up whenever 5 is recommended, down only after 300 s without a 5: with noise, down never comes.
    assert desired == 5 and changes == 1


def test_never_removes_ready_capacity_while_replacements_start():
    # Plan: move from 4 on "a" to 2 on "b". "b" replicas are starting (0 ready): "a" must hold.
    stab = Stabiliser()
    policy = ScalingPolicy(scale_down_window_seconds=0, max_scale_down_step=4)
    now = current(a=(4, 4, 5.0), b=(2, 0, 12.0))
    step = stab.step("s", {"a": 0, "b": 2}, now, 18.0, 0.0, policy)
    assert step.units == {"a": 4, "b": 2}
    assert step.holds == (WaitingForReady("a", held=4, instead_of=0),)
    ready = current(a=(4, 4, 5.0), b=(2, 2, 12.0))
    assert stab.step("s", {"a": 0, "b": 2}, ready, 18.0, 15.0, policy).units == {"a": 0, "b": 2}


def test_history_is_per_service():
    stab = Stabiliser()
    for t in range(0, 301, 15):
        stab.step("one", {"a": 1}, current(a=(2, 2, 5.0)), 1.0, float(t), POLICY)
    assert stab.step("two", {"a": 1}, current(a=(2, 2, 5.0)), 1.0, 301.0, POLICY).units == {"a": 2}


def test_periods_longer_than_the_down_window_still_scale_down():
    """Found by the soak (15-minute periods, 300 s window): the history must reach back past the window."""
    stab = Stabiliser()
    now = current(a=(4, 4, 5.0))
    assert stab.step("s", {"a": 4}, now, 20.0, 0.0, POLICY).units == {"a": 4}
    assert stab.step("s", {"a": 2}, now, 10.0, 900.0, POLICY).units == {"a": 3}
    assert stab.step("s", {"a": 2}, current(a=(3, 3, 5.0)), 10.0, 1800.0, POLICY).units == {"a": 2}


def test_behind_a_plain_service_ready_capacity_is_counted_at_the_slowest_replica():
    # From 4 fast replicas on "a" (12 req/s each) towards 4 on "a" + 2 slow on "b" (3 req/s each, ready), then the
    # plan drops to 2 on "a". Weighted: 2x12 + 2x3 = 30 >= 28 served, so "a" may go to 2. Behind a Service each of
    # 4 replicas gets 7 req/s, over the slow ones' 3: ready capacity is 4 x 3 = 12, so "a" holds at 4 (6 x 3 = 18
    # is still short, but it is all there is).
    policy = ScalingPolicy(scale_down_window_seconds=0, max_scale_down_step=4)
    now = current(a=(4, 4, 12.0), b=(2, 2, 3.0))
    weighted = Stabiliser().step("s", {"a": 2, "b": 2}, now, 28.0, 0.0, policy)
    assert weighted.units == {"a": 2, "b": 2}
    shared = Stabiliser().step("s", {"a": 2, "b": 2}, now, 28.0, 0.0, policy, equal_share=True)
    assert shared.units == {"a": 4, "b": 2}
    assert shared.holds == (WaitingForReady("a", held=4, instead_of=2),)


def test_behind_a_plain_service_a_pool_the_plan_left_goes_whole():
    # 1 fast replica on "a" (20 req/s) beside 12 slow ones on "b" (0.86 req/s each), 11 req/s served; the plan
    # has wanted "a" alone for the whole window. Each step of one "b" replica leaves 12 x 0.86 = 10.3 < 11 behind
    # a Service (every replica gets an equal share), so stepping held "b" for ever; without "b", "a" serves 20.
    policy = ScalingPolicy(scale_down_window_seconds=300, max_scale_down_step=1)
    now = current(a=(1, 1, 20.0), b=(12, 12, 0.86))
    stab = Stabiliser()
    for t in range(0, 300, 60):
        assert stab.step("s", {"a": 1}, now, 11.0, float(t), policy, equal_share=True).units == {"a": 1, "b": 12}
    assert stab.step("s", {"a": 1}, now, 11.0, 300.0, policy, equal_share=True).units == {"a": 1, "b": 0}
    # Weighted routing steps down as before, and the fast replica not ready holds the slow ones whole.
    weighted = Stabiliser()
    for t in range(0, 360, 60):
        step = weighted.step("s", {"a": 1}, now, 11.0, float(t), policy)
    assert step.units == {"a": 1, "b": 11}
    starting = Stabiliser()
    not_ready = current(a=(1, 0, 20.0), b=(12, 12, 0.86))
    for t in range(0, 360, 60):
        step = starting.step("s", {"a": 1}, not_ready, 11.0, float(t), policy, equal_share=True)
    assert step.units == {"a": 1, "b": 12}
