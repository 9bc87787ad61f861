"""The SLO's error budget, spent: a service's burst headroom tuned to the attainment it measures.

A service's SLO lets ``1 - percentile/100`` of its requests miss (1 % at p99): its error budget. The spec's
``burstHeadroom`` is capacity planned over the demand estimate for what the estimate does not foresee, and how much
a service needs depends on its traffic: a conversation trace's minute-scale bunches are served at 99.96 % with 20 %
headroom and at 99.7 % with none, while a day of ServeGen's curve with its evening ramps needs more of it
(benchmarks/RESULTS.md, "The error budget, spent"). A fixed headroom over-serves the one or under-serves the other;
an operator whose job is the cheapest capacity that meets the SLO spends the budget.

Unless ``spec.scaling.spendErrorBudget`` is false, the headroom starts at the spec's value, its ceiling, and is
lowered by ``STEP`` at most every ``STEP_SECONDS`` while the requests measured over the last hour or so miss at
under ``LOWER_BELOW_BURN`` of the budget's rate; it goes back to the ceiling at once when the last hour's or the
last minutes' requests miss faster than the budget allows. The burn rates are the SRE workbook's (miss share /
allowed share), over a long and a short exponentially decayed horizon of request counts, so one bad minute
neither stops the saving nor is averaged away. A budget only says what has been missed: a ramp after hours of
budget to spare meets the lowered headroom (without warm owned replicas, the day above fell from 99.16 % to 98.79 %
with it; decide.keep_warm_seconds). A period without a measured attainment (no traffic, no metrics) changes
nothing, and a trickle never lowers it (``EVIDENCE_BUDGETS``). State is in memory: a restarted operator starts
again at the ceiling, which only ever adds capacity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STEP = 0.05  # headroom given up per step (a fraction of demand: 0.05 = 5 %)
STEP_SECONDS = 600.0  # at most one step down this often: two scale-down windows, so a step's effect is measured
LONG_HALF_LIFE_SECONDS = 3600.0  # the horizon a step down is judged on
SHORT_HALF_LIFE_SECONDS = 300.0  # the horizon a fast burn is caught on
LOWER_BELOW_BURN = 0.5  # lower while the long horizon spends under half the budget's rate
RAISE_ABOVE_BURN = 1.0  # back to the ceiling when either horizon spends faster than the budget allows
EVIDENCE_BUDGETS = 10.0  # a step down needs requests enough for this many allowed misses (1,000 at p99)


@dataclass
class _Counts:
    clock: float
    requests: float = 0.0
    misses: float = 0.0

    def add(self, clock: float, requests: float, misses: float, half_life: float) -> None:
        keep = 0.5 ** (max(0.0, clock - self.clock) / half_life)
        self.clock, self.requests, self.misses = clock, self.requests * keep + requests, self.misses * keep + misses

    def burn(self, allowed: float) -> float | None:
        return None if self.requests <= 0 else self.misses / self.requests / allowed


@dataclass(frozen=True)
class Headroom:
    """The headroom a service is planned with this period, and why."""

    fraction: float  # of demand, what the planner adds
    ceiling: float  # the spec's burstHeadroom
    attainment: float | None  # share of the long horizon's requests within the SLO (None: not measured yet)
    allowed_miss: float  # the SLO's budget: 1 - percentile/100

    def describe(self) -> str:
        if self.attainment is None:
            return f"{self.fraction:.0%} (the spec's; no attainment measured yet)"
        budget = f"{self.attainment:.2%} of the last hour's requests within the SLO, {self.allowed_miss:.1%} may miss"
        if self.fraction < self.ceiling:
            return f"{self.fraction:.0%} of the spec's {self.ceiling:.0%}: {budget}"
        return f"{self.fraction:.0%} (the spec's): {budget}"


@dataclass
class ErrorBudget:
    _long: dict[str, _Counts] = field(default_factory=dict)
    _short: dict[str, _Counts] = field(default_factory=dict)
    _fraction: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (headroom, when last changed)
    _seen_at: dict[str, float] = field(default_factory=dict)

    def forget(self, key: str) -> None:
        for table in (self._long, self._short, self._fraction, self._seen_at):
            table.pop(key, None)

    def headroom(self, key: str, clock_seconds: float, ceiling: float, percentile: float,
                 attainment: float | None, rps: float, window_seconds: float) -> Headroom:
        """``attainment``: the share of the window's requests within the SLO (None: not measured this period);
        ``rps`` over ``window_seconds``: the window's requests. Windows overlap when periods are shorter than the
        window; only the requests since the last period count."""
        allowed = max(1e-6, 1.0 - percentile / 100.0)
        fraction, changed_at = self._fraction.get(key, (ceiling, clock_seconds))
        fraction = min(fraction, ceiling)  # a spec lowered since: at most its value
        last = self._seen_at.get(key)
        self._seen_at[key] = clock_seconds
        long_counts = self._long.setdefault(key, _Counts(clock_seconds))
        short_counts = self._short.setdefault(key, _Counts(clock_seconds))
        if attainment is not None and rps > 0:
            fresh_s = window_seconds if last is None else min(window_seconds, max(0.0, clock_seconds - last))
            requests = rps * fresh_s
            misses = requests * min(1.0, max(0.0, 1.0 - attainment))
            long_counts.add(clock_seconds, requests, misses, LONG_HALF_LIFE_SECONDS)
            short_counts.add(clock_seconds, requests, misses, SHORT_HALF_LIFE_SECONDS)
            long_burn, short_burn = long_counts.burn(allowed), short_counts.burn(allowed)
            if (long_burn or 0.0) > RAISE_ABOVE_BURN or (short_burn or 0.0) > RAISE_ABOVE_BURN:
                if fraction < ceiling:
                    fraction, changed_at = ceiling, clock_seconds
            elif (long_counts.requests * allowed >= EVIDENCE_BUDGETS and long_burn is not None
                  and long_burn < LOWER_BELOW_BURN and clock_seconds - changed_at >= STEP_SECONDS
                  and fraction > 0.0):
                fraction, changed_at = max(0.0, round(fraction - STEP, 9)), clock_seconds
        self._fraction[key] = (fraction, changed_at)
        measured = long_counts.requests > 0
        return Headroom(fraction, ceiling, 1.0 - long_counts.misses / long_counts.requests if measured else None,
                        allowed)
