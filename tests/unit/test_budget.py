"""The error budget: headroom is given up step by step while the SLO is met with budget to spare, and taken back
at once when the budget burns; nothing measured, or too little, never lowers it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kilowatt import budget
from kilowatt.budget import ErrorBudget

PERIOD_S = 15.0
WINDOW_S = 60.0


def run(errors: ErrorBudget, start_s: float, seconds: float, attainment: float | None, rps: float = 40.0,
        ceiling: float = 0.2, key: str = "ns/chat") -> list[float]:
    out = []
    t = start_s
    while t < start_s + seconds:
        out.append(errors.headroom(key, t, ceiling, 99.0, attainment, rps, WINDOW_S).fraction)
        t += PERIOD_S
    return out


def test_a_service_far_inside_its_budget_gives_headroom_up_one_step_at_a_time_down_to_none():
    errors = ErrorBudget()
    fractions = run(errors, 0.0, 3 * 3600.0, attainment=0.9999)
    assert fractions[0] == 0.2
    steps = [(i * PERIOD_S, b - a) for i, (a, b) in enumerate(zip(fractions, fractions[1:]), 1) if b != a]
    assert all(abs(d + budget.STEP) < 1e-9 for _, d in steps), steps
    assert all(t2 - t1 >= budget.STEP_SECONDS for (t1, _), (t2, _) in zip(steps, steps[1:])), steps
    assert fractions[-1] == 0.0 and min(fractions) == 0.0


def test_a_burning_budget_takes_the_spec_s_headroom_back_at_once():
    errors = ErrorBudget()
    lowered = run(errors, 0.0, 3600.0, attainment=0.9999)[-1]
    assert lowered < 0.2
    # A minute in which 20 % of the requests missed: the short horizon spends far beyond the budget, though the
    # hour's attainment is still above 99 %.
    after = run(errors, 3600.0, 60.0, attainment=0.80)
    assert after[-1] == 0.2
    assert errors.headroom("ns/chat", 3660.0, 0.2, 99.0, 0.80, 40.0, WINDOW_S).attainment > 0.99


def test_attainment_near_the_slo_keeps_the_headroom():
    errors = ErrorBudget()  # 99.3 % at p99: 70 % of the budget spent, above the half that allows a step down
    assert set(run(errors, 0.0, 3 * 3600.0, attainment=0.993)) == {0.2}


def test_no_measurement_and_a_trickle_never_lower_the_headroom():
    errors = ErrorBudget()
    assert set(run(errors, 0.0, 3 * 3600.0, attainment=None)) == {0.2}
    # 0.05 req/s: ~180 requests an hour, under the 1,000 a step needs to tell 1 % from chance.
    assert set(run(errors, 0.0, 3 * 3600.0, attainment=1.0, rps=0.05, key="ns/trickle")) == {0.2}


def test_a_spec_lowered_below_the_headroom_in_use_is_obeyed_at_once():
    errors = ErrorBudget()
    run(errors, 0.0, 300.0, attainment=0.9999)
    assert errors.headroom("ns/chat", 300.0, 0.05, 99.0, 0.9999, 40.0, WINDOW_S).fraction == 0.05


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0.0, 1.0)), min_size=1, max_size=400),
       st.floats(0.0, 2.0), st.floats(0.0, 500.0))
def test_the_headroom_stays_between_none_and_the_spec_s(attainments, ceiling, rps):
    errors = ErrorBudget()
    for i, a in enumerate(attainments):
        h = errors.headroom("ns/x", i * PERIOD_S, ceiling, 99.0, a, rps, WINDOW_S)
        assert 0.0 <= h.fraction <= ceiling
        if a is not None and a < 0.9:  # a period this bad is always a burn
            assert h.fraction == ceiling
