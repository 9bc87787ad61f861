"""One control period's decision, with no Kubernetes in it: observations -> demand -> plan -> stabilise.

The operator's control loop (kilowatt.controller.loop) gathers the inputs from the API server and Prometheus and
applies the result; the twin (kilowatt.twin) gathers them from its simulated data plane. Both call exactly this,
so a result in the twin is a result of the shipped decision code.

Missing metrics are a state: a service without data that has replicas keeps its placement (never scaled down,
never to zero); a service without data and without replicas starts at its floor.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from kilowatt.api.v1alpha1 import AcceleratorPool, InferenceService, ScalingMode
from kilowatt.budget import ErrorBudget, Headroom
from kilowatt.demand import DemandEstimator
from kilowatt.forecast import Expectation, SeasonalForecast
from kilowatt.metrics import ServiceObservation
from kilowatt.performance import CapacityModel, TokenMix
from kilowatt.performance.correction import LatencyCorrection
from kilowatt.performance.lengths import quantiles_from_histogram
from kilowatt.planner import PLANNER_BUDGET_SECONDS, CapacityTable, Snapshot, Stabiliser, plan
from kilowatt.planner.reasons import Binding, DecisionHold, MetricsMissing, ModeOff, StepHold
from kilowatt.planner.snapshot import CurrentPlacement, PoolState, ServiceState
from kilowatt.planner.stabiliser import PoolUnits, ScalingPolicy
from kilowatt.planner.types import Plan
from kilowatt.state import pool_state, service_state


BACKLOG_SECONDS = 60.0
# Latency is learned (the online correction) only over a window whose load held: the rates read over the last window
# within this many standard deviations of chance, plus this share, of each other (Decider._steady).
STEADY_SIGMAS = 3.0
STEADY_SHARE = 0.25
# Whether the operator plans on the engine-measured SLO capacity (the twin's truth, corrected online) or on the
# analytic model corrected online. The engine: the planner's capacity is the twin's (benchmarks/RESULTS.md,
# issue 12). Until a mix's curves are measured (CURVE_BUDGET_SECONDS a period) its figures are the analytic
# model's, provisional: a degree chosen on them is not held (Decider._degrees_held).
OPERATOR_ENGINE_CAPACITY = True
# Seconds a period may spend measuring the engine's latency curves for mixes it has not seen (the rest plan on
# the analytic model until a later period has measured them: CapacityTable).
CURVE_BUDGET_SECONDS = 1.0
# The share of the control period the operator spends, after a period's writes, measuring the curves that period
# went without (Decider.catch_up): a figure is then provisional for one period, not for many.
CURVE_CATCHUP_SHARE = 0.25
# A fresh Decider's (a restarted operator's) first period, when services already run, may measure curves this
# long: a plan on provisional figures would move them (and reweight their routes) only for the next period, on
# measured curves, to move them back. Where nothing runs yet (a fresh install) the period keeps to the budget.
CURVE_FIRST_PERIOD_SECONDS = 10.0
# The seasonal forecast looks this far past the longest replica start-up: capacity asked for now serves then.
FORECAST_BEYOND_STARTUP_SECONDS = 300.0
# A tensor-parallel degree that just changed on a pool is held this long: no change back within the hour.
DEGREE_HOLD_SECONDS = 3600.0
# A replica is kept through a dip while keeping it has cost under KEEP_WARM_USD (at full load), up to
# KEEP_WARM_MAX_SECONDS: an owned RTX 4090's energy above idle (382 W, PUE 1.4, $0.10/kWh: ~5 cents an hour)
# keeps it the half hour; a rented H100 ($2.49/h) is kept for the service's own window, as before
# (keep_warm_seconds). The 5 cents are a judgement, not a measurement: a warm replica is worth what the load's
# coming back within a start-up would cost.
KEEP_WARM_USD = 0.05
KEEP_WARM_MAX_SECONDS = 1800.0


@dataclass(frozen=True)
class ServiceInput:
    """One service as one period sees it, built once and carried through deciding, accounting and reporting."""

    service: InferenceService
    current: Mapping[str, CurrentPlacement]  # pool -> what runs there now
    data: ServiceObservation | None  # None: no metrics for it this period (a state, never a zero)
    state: ServiceState  # model, SLO, bounds and the observed token mix; no demand, no corrections
    unschedulable: frozenset[str] = frozenset()  # pools where a replica of it waits for room (Pending, Unschedulable)

    @classmethod
    def of(cls, service: InferenceService, current: Mapping[str, CurrentPlacement],
           data: ServiceObservation | None, unschedulable: frozenset[str] = frozenset()) -> ServiceInput:
        return cls(service, dict(current), data, service_state(service, 0.0, observed_mix(data, service.spec.model.max_context_tokens),
                                                   current),
                   unschedulable)

    @property
    def key(self) -> str:
        return self.service.key

    @property
    def running_replicas(self) -> int:
        return sum(c.replicas for c in self.current.values())

    def held_without_metrics(self, metrics_error: str | None) -> bool:
        """No series for a service that runs: keep its placement (never scale on missing data) — unless nothing of
        it is ready and it waits for room its pool lacks: then no series can ever come, and it is planned at its
        floor (at least one replica), where there is room."""
        if self.data is not None or self.running_replicas == 0:
            return False
        stuck = bool(self.unschedulable) and metrics_error is None and not any(c.ready for c in self.current.values())
        return not stuck

    @property
    def stuck_pools(self) -> frozenset[str]:
        """Pools where its replicas wait for room and none of them serves: not worth planning on this period."""
        return frozenset(p for p in self.unschedulable if p not in self.current or self.current[p].ready == 0)


@dataclass(frozen=True)
class Decision:
    """What one service should run after this period, and why."""

    desired: dict[str, int]  # pool -> replicas
    tensor_parallel: dict[str, int]  # pool -> degree
    explanation: str  # the planner's sentence: what serves what, at what cost, against what alternative
    binding: Binding | None  # the constraint that left demand unmet, if any
    changed: bool  # desired differs from what runs now
    holds: tuple[StepHold | DecisionHold, ...] = ()  # what held the plan back (a whole decision, or steps of it)
    demand_rps: float = 0.0
    forecast: Expectation | None = None  # what the seasonal forecast expects (None: not enough history yet)
    headroom: Headroom | None = None  # the burst headroom planned with, spending the error budget (None: the spec's)
    recurring_rps: float | None = None  # the rate held for because it keeps coming back faster than a start-up,
    # where that, not the estimate, set the demand (DemandEstimator.recurring)

    @property
    def held(self) -> bool:
        """No decision was made (mode Off, or no metrics): the placement stays as it is."""
        return any(isinstance(h, (ModeOff, MetricsMissing)) for h in self.holds)

    @property
    def reason(self) -> str:
        """The text status and events carry."""
        if self.held:
            return "; ".join(str(h) for h in self.holds)
        text = self.explanation
        if self.recurring_rps is not None:
            text = (f"{text} Held for {self.recurring_rps:.2f} req/s: in the last hour the rate rose this far within"
                    f" a replica's start-up, faster than replicas can follow.")
        if self.headroom is not None and self.headroom.fraction < self.headroom.ceiling:
            text = f"{text} Headroom {self.headroom.describe()}."
        if self.holds:
            return f"{text} Held: {'; '.join(str(h) for h in self.holds)}."
        return text


@dataclass
class PeriodDecisions:
    decisions: dict[str, Decision] = field(default_factory=dict)  # service key -> decision
    plan: Plan | None = None


class LengthHistory:
    """Each service's length mix over the last half hour or so: vLLM's length histograms and mean lengths folded
    in every period with exponential decay (half-life ``half_life_seconds``), so one minute's few long prompts
    neither vanish nor rebuild the planner's capacity figures every period."""

    def __init__(self, half_life_seconds: float = 1800.0) -> None:
        self.half_life_seconds = half_life_seconds
        # key -> (clock, weight, input mean x weight, output mean x weight, prompt buckets, output buckets)
        self._by_service: dict[str, tuple[float, float, float, float, dict[float, float], dict[float, float]]] = {}

    def forget(self, key: str) -> None:
        self._by_service.pop(key, None)

    def update(self, key: str, clock_seconds: float, data: ServiceObservation, max_tokens: float) -> TokenMix | None:
        if not data.input_tokens_mean or not data.output_tokens_mean or not data.requests_per_second:
            return None
        t0, w, wi, wo, pb, ob = self._by_service.get(key, (clock_seconds, 0.0, 0.0, 0.0, {}, {}))
        keep = 0.5 ** (max(0.0, clock_seconds - t0) / self.half_life_seconds)
        rate = data.requests_per_second
        w, wi, wo = w * keep + rate, wi * keep + rate * data.input_tokens_mean, wo * keep + rate * data.output_tokens_mean
        for stored, new in ((pb, data.prompt_length_buckets), (ob, data.output_length_buckets)):
            for le in stored:
                stored[le] *= keep
            for le, count in new:
                stored[le] = stored.get(le, 0.0) + count
        self._by_service[key] = (clock_seconds, w, wi, wo, pb, ob)
        return TokenMix(max(1.0, wi / w), max(1.0, wo / w), quantiles_from_histogram(sorted(pb.items()), max_tokens),
                        quantiles_from_histogram(sorted(ob.items()), max_tokens))


@dataclass
class Decider:
    """The stateful part of deciding (demand history, latency corrections, stabiliser windows, the capacity
    table), in memory."""

    default_mode: ScalingMode = ScalingMode.ACTIVE
    planner_budget_seconds: float = PLANNER_BUDGET_SECONDS
    demand: DemandEstimator = field(default_factory=DemandEstimator)
    correction: LatencyCorrection = field(default_factory=LatencyCorrection)
    stabiliser: Stabiliser = field(default_factory=Stabiliser)
    capacity: CapacityTable = field(default_factory=lambda: CapacityTable(
        engine=OPERATOR_ENGINE_CAPACITY, measure_budget_seconds=CURVE_BUDGET_SECONDS))
    lengths: LengthHistory = field(default_factory=LengthHistory)
    forecast: SeasonalForecast = field(default_factory=SeasonalForecast)
    budget: ErrorBudget = field(default_factory=ErrorBudget)
    # (service, pool) -> (the degree running there, since when on the decision clock)
    degrees: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    # (service, pool) -> a degree chosen there on provisional capacity figures (curves not measured yet): when it
    # comes to run, it is not held (a later period, on measured curves, may change it at once).
    _provisional_degrees: dict[tuple[str, str], int] = field(default_factory=dict)
    _learned_at: dict[str, float] = field(default_factory=dict)  # service -> when its latency was last read
    # service -> the windowed rates it was read at (time, req/s), two windows' worth: was the window's load steady?
    _rates_read: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    first_period_curve_seconds: float = CURVE_FIRST_PERIOD_SECONDS
    _periods: int = 0  # periods decided since this Decider was made

    def mode(self, svc: InferenceService) -> ScalingMode:
        return svc.spec.scaling.mode if "mode" in svc.spec.scaling.model_fields_set else self.default_mode

    def forget(self, key: str) -> None:
        self.stabiliser.forget(key)
        self.demand.forget(key)
        self.correction.forget(key)
        self.lengths.forget(key)
        self.forecast.forget(key)
        self.budget.forget(key)
        self._learned_at.pop(key, None)
        self._rates_read.pop(key, None)
        for table in (self.degrees, self._provisional_degrees):
            for k in [k for k in table if k[0] == key]:
                del table[k]

    def decide(
        self,
        now: datetime,
        clock_seconds: float,
        services: list[ServiceInput],
        pools: dict[str, AcceleratorPool],
        pool_states: dict[str, PoolState],
        metrics_error: str | None = None,
    ) -> PeriodDecisions:
        """``pool_states``: every pool with the GPUs kilowatt may use now and its price; ``metrics_error``: why
        the metric source could not be read at all this period, if it could not."""
        # A restarted operator's first period: what runs is measured beyond the budget (a fresh cluster's is not).
        restarted = self._periods == 0 and any(item.running_replicas > 0 for item in services)
        self.capacity.new_period(self.first_period_curve_seconds if restarted else None)
        self._periods += 1
        planned: list[tuple[ServiceInput, ServiceState]] = []
        out = PeriodDecisions()
        held: list[ServiceInput] = []
        lead = max((p.spec.replica_startup_seconds for p in pools.values()), default=0.0)
        expected: dict[str, Expectation] = {}
        headrooms: dict[str, Headroom] = {}
        recurring_rps: dict[str, float] = {}
        pool_names = sorted(pools)
        factors = self.correction.factors
        for item in services:
            if self.mode(item.service) is ScalingMode.OFF or item.held_without_metrics(metrics_error):
                held.append(item)
                continue
            if item.data is None:
                demand = 0.0  # nothing runs and nothing is known: start at the floor (>= 1 replica)
            else:
                rps = item.data.requests_per_second
                demand = self.demand.update(item.key, clock_seconds, rps, lead,
                                            requests=rps * item.data.window_seconds,
                                            window_seconds=item.data.window_seconds)
                # Never beyond what the last hour says can come within a start-up, until the rate itself shows
                # more (DemandEstimator.reach): a burst read as a step is over before replicas for it serve.
                reach = self.demand.reach(item.key, lead, item.state.percentile)
                if reach is not None:
                    demand = min(demand, max(reach, rps))
                # Completions understate demand when replicas fall behind: requests waiting are demand too, to be
                # served within BACKLOG_SECONDS on top of the arrivals. Added after the estimate, not read by it:
                # the backlog is a count now, not a windowed rate, and its change is no change in the arrivals.
                backlog_rps = (item.data.waiting or 0.0) / BACKLOG_SECONDS
                demand += backlog_rps
                self.forecast.observe(item.key, now, item.data.requests_per_second)
                ahead, expectation = self.forecast.projected(item.key, now, lead + FORECAST_BEYOND_STARTUP_SECONDS,
                                                             rps)
                if expectation is not None:
                    expected[item.key] = expectation
                    demand = max(demand, ahead + backlog_rps)
                mix = self.lengths.update(item.key, clock_seconds, item.data,
                                          item.service.spec.model.max_context_tokens)
                if mix is not None:
                    item = replace(item, state=replace(item.state, mix=mix))
                self._learn(item, pools, clock_seconds)
                share = 1.0
                if item.service.spec.scaling.spend_error_budget:
                    headroom = headrooms[item.key] = self.budget.headroom(
                        item.key, clock_seconds, item.state.burst_headroom, item.state.percentile,
                        item.data.slo_attainment, rps, item.data.window_seconds)
                    share = headroom.fraction / headroom.ceiling if headroom.ceiling > 0 else 1.0
                recurring = self.demand.recurring(item.key, lead, item.state.percentile, share)
                if recurring is not None:
                    recurring_rps[item.key] = recurring
            corrections = tuple((p, *factors(item.key, p)) for p in pool_names)
            state = replace(item.state, demand_rps=max(0.0, demand), corrections=corrections,
                            degree_held=self._degrees_held(item, clock_seconds))
            if item.key in headrooms:
                state = replace(state, burst_headroom=headrooms[item.key].fraction)
            held_for = recurring_rps.get(item.key, 0.0) / (1.0 + state.burst_headroom)
            if held_for > state.demand_rps:  # a burst that recurs is planned for at its own rate, no headroom on it
                state = replace(state, demand_rps=held_for)
            else:
                recurring_rps.pop(item.key, None)
            if item.stuck_pools:  # spill: where its Pods cannot be scheduled, plan it elsewhere if it may go
                allowed = tuple(p for p in (item.state.allowed_pools or sorted(pools)) if p not in item.stuck_pools)
                state = replace(state, allowed_pools=allowed) if allowed else state
            planned.append((item, state))

        # Held services keep their GPUs: the plan for the others works around them.
        free = _minus_held(pool_states, [item.current for item in held])
        snapshot = Snapshot(now, tuple(free.values()), tuple(state for _, state in planned))
        out.plan = plan(snapshot, self.capacity, time_limit_seconds=self.planner_budget_seconds)
        room = {u.name: u.gpus_max - u.gpus_used for u in out.plan.pools}  # GPUs the plan leaves free
        for item, state in planned:
            out.decisions[item.key] = decision = replace(
                self._stabilise(item, out.plan.service(item.key), state.demand_rps, clock_seconds, pools,
                                pool_states, now, room),
                forecast=expected.get(item.key), headroom=headrooms.get(item.key),
                recurring_rps=recurring_rps.get(item.key))
            provisional = item.key in self.capacity.provisional_services
            for pool, k in decision.tensor_parallel.items():
                if provisional:
                    self._provisional_degrees[(item.key, pool)] = k
                else:
                    self._provisional_degrees.pop((item.key, pool), None)
        self.forecast.refit()  # within its per-period budget; the next periods use what it fitted
        for item in held:
            hold = ModeOff() if self.mode(item.service) is ScalingMode.OFF else MetricsMissing(item.key, metrics_error)
            out.decisions[item.key] = Decision({p: c.replicas for p, c in item.current.items()},
                                               {p: c.tensor_parallel for p, c in item.current.items()},
                                               str(hold), None, changed=False, holds=(hold,))
        return out

    def catch_up(self, budget_seconds: float) -> None:
        """Between periods: measure the capacity curves this period planned without (CapacityTable.catch_up)."""
        self.capacity.catch_up(budget_seconds)

    def _degrees_held(self, item: ServiceInput, clock_seconds: float) -> tuple[str, ...]:
        """Pools where the service's running degree changed less than DEGREE_HOLD_SECONDS ago (its first degree
        on a pool is not a change)."""
        held = []
        for pool, c in item.current.items():
            if c.replicas <= 0:
                continue
            seen = self.degrees.get((item.key, pool))
            if seen is None:
                self.degrees[(item.key, pool)] = (c.tensor_parallel, -DEGREE_HOLD_SECONDS)
            elif seen[0] != c.tensor_parallel:
                if self._provisional_degrees.get((item.key, pool)) == c.tensor_parallel:
                    self.degrees[(item.key, pool)] = (c.tensor_parallel, -DEGREE_HOLD_SECONDS)
                else:
                    self.degrees[(item.key, pool)] = (c.tensor_parallel, clock_seconds)
                    held.append(pool)
            elif clock_seconds - seen[1] < DEGREE_HOLD_SECONDS:
                held.append(pool)
        return tuple(sorted(held))

    def _learn(self, item: ServiceInput, pools: dict[str, AcceleratorPool], clock_seconds: float) -> None:
        """Feed observed latency per pool into the online correction (against the uncorrected model).

        Not while requests queue: latency then measures the backlog (too few replicas), not how fast the GPUs
        are, and learning it would make every replica look slow long after the backlog is gone."""
        data, current = item.data, item.current
        ready = sum(c.ready for c in current.values())
        # Requests not seen before: windows overlap when periods are shorter than the metrics window.
        last = self._learned_at.get(item.key)
        self._learned_at[item.key] = clock_seconds
        if data is None or not self._steady(item.key, clock_seconds, data.requests_per_second, data.window_seconds):
            return
        if data.waiting is not None and data.waiting > max(1.0, float(ready)):
            return
        fresh_s = data.window_seconds if last is None else min(data.window_seconds, max(0.0, clock_seconds - last))
        for pool_name, latency in data.by_pool.items():
            running = current.get(pool_name)
            pool = pools.get(pool_name)
            if running is None or pool is None or running.ready <= 0:
                continue
            per_replica = latency.requests_per_second / running.ready
            ttft, tpot = self.capacity.latency(item.state, pool_state(pool), running.tensor_parallel, per_replica)
            self.correction.observe(item.key, pool_name, per_replica, ttft, latency.ttft_p_seconds,
                                    tpot, latency.tpot_p_seconds, requests=latency.requests_per_second * fresh_s,
                                    percentile=item.state.percentile,
                                    window_requests=latency.requests_per_second * data.window_seconds)

    def _steady(self, key: str, clock_seconds: float, rps: float, window_seconds: float) -> bool:
        """Whether the window's load held throughout, so that its latency percentiles were read at its mean rate:
        every rate read since a window before (that one included) agrees with the others within chance
        (STEADY_SIGMAS of two windows' Poisson counts) and STEADY_SHARE. A burst inside the window (the code
        trace's 72 req/s minute after two idle ones) gives its requests the latency of the burst's load and the
        window the mean's; read as slower GPUs, it made the H100s look twice as slow as they are for minutes after
        it (a TPOT factor of 2.05, and 31 H100s planned for a load 12 serve at 99.9 %), so it teaches nothing."""
        history = self._rates_read.setdefault(key, deque())
        history.append((clock_seconds, rps))
        while len(history) > 2 and history[1][0] <= clock_seconds - window_seconds:
            history.popleft()
        if clock_seconds - history[0][0] < window_seconds * 0.75:
            return True  # no rate read a window back yet (a new service, a restart): nothing says it moved
        low, high = min(r for _, r in history), max(r for _, r in history)
        sigma = math.sqrt((low + high) * window_seconds) / window_seconds if window_seconds > 0 else 0.0
        return high - low <= STEADY_SIGMAS * sigma + STEADY_SHARE * high

    def _stabilise(self, item: ServiceInput, sp, demand_rps: float, clock_seconds: float,
                   pools: dict[str, AcceleratorPool], pool_states: dict[str, PoolState], now: datetime,
                   room: dict[str, int]) -> Decision:
        current = item.current
        recommended = {p.pool: p.replicas for p in sp.placement}
        tp = {p.pool: p.tensor_parallel for p in sp.placement}
        scaling = item.service.spec.scaling
        policy = ScalingPolicy(scaling.scale_up_stabilization_seconds, scaling.scale_down_stabilization_seconds,
                               scaling.max_scale_up_step, scaling.max_scale_down_step)
        # The stabiliser counts GPUs, not replicas: a change of tensor-parallel degree (3 replicas of 4 GPUs for
        # 6 of 2) is then a change of capacity it can bound and hold, and a held count never asks a pool for
        # more GPUs than the replicas it replaces used.
        degree = {p: tp.get(p) or (current[p].tensor_parallel if p in current else 1)
                  for p in set(recommended) | set(current)}
        now_gpus = {}
        for p, c in current.items():
            k = c.tensor_parallel
            per_replica = self.capacity.replica(item.state, pool_states[p], k)[0] if p in pool_states else 0.0
            now_gpus[p] = PoolUnits(c.replicas * k, c.ready * k, per_replica / k, k)
        served_rps = item.data.requests_per_second if item.data else 0.0
        recommended_gpus = {p: n * degree[p] for p, n in recommended.items()}
        step = self.stabiliser.step(item.key, recommended_gpus, now_gpus,
                                    served_rps, clock_seconds, policy, units=degree, equal_share=item.state.equal_share,
                                    down_window_seconds=keep_warm_seconds(
                                        current, recommended_gpus, pool_states,
                                        policy, now, room, item.state.equal_share, item.state.allowed_pools,
                                        item.state.max_replicas))
        desired = {}
        for p, gpus in step.units.items():
            if p not in pools:
                continue
            if p in current and degree[p] != current[p].tensor_parallel and \
                    gpus > recommended.get(p, 0) * degree[p]:
                # A scale-down is being held here: keep the replicas as they are rather than rebuild them at a
                # new degree for a plan that has not yet held for the window.
                desired[p], degree[p] = current[p].replicas, current[p].tensor_parallel
                tp[p] = degree[p]
                continue
            n = -(-gpus // degree[p])  # whole replicas of the new degree covering the GPUs held
            if p in pool_states:
                n = min(n, max(pool_states[p].gpus_max // degree[p], recommended.get(p, 0)))
            desired[p] = n
        for p in desired:
            tp.setdefault(p, degree[p])
        changed = any(desired.get(p, 0) != (current[p].replicas if p in current else 0) for p in desired) or any(
            tp.get(p) != c.tensor_parallel and desired.get(p, 0) > 0 for p, c in current.items())
        return Decision(desired, tp, sp.reason, sp.binding, changed, step.holds, demand_rps=demand_rps)


def keep_warm_seconds(current: Mapping[str, CurrentPlacement], recommended_gpus: Mapping[str, int],
                      pool_states: Mapping[str, PoolState], policy: ScalingPolicy, at: datetime,
                      room: dict[str, int] | None = None, equal_share: bool = False,
                      allowed_pools: tuple[str, ...] = (), max_replicas: int | None = None) -> dict[str, float]:
    """Per pool where the service's replicas serve, how long a dip must last before they go: the service's
    scale-down window, or longer where keeping a replica through the dip costs little — until it has cost
    KEEP_WARM_USD (at full load), at most KEEP_WARM_MAX_SECONDS. An owned GPU's replica costs only its energy above
    idle (a few cents an hour), and one released at the top of a dip is missed for a whole start-up when the load
    comes back. Only behind capacity-weighted routes (``equal_share`` False: behind a plain Service a slow replica
    kept takes an equal share of every request), and only where the plan leaves the pool ``room`` (free GPUs per
    pool, taken from as replicas are kept: another service's plan is never kept out), and never on a pool the
    service may no longer use (``allowed_pools``: the spec's ``pools``; empty: any), nor above its
    ``max_replicas``: a spec that asks for less is obeyed after the service's own window."""
    out: dict[str, float] = {}
    if equal_share or (max_replicas is not None and sum(c.replicas for c in current.values()) > max_replicas):
        return out
    for p, c in current.items():
        state = pool_states.get(p)
        if state is None or c.ready <= 0:  # nothing of it serves (starting, or Pending): nothing warm to keep
            continue
        if allowed_pools and p not in allowed_pools:
            continue
        usd_per_hour = state.economics.marginal_cost(c.tensor_parallel, 1.0, at).objective_usd_per_hour
        hold = KEEP_WARM_MAX_SECONDS if usd_per_hour <= 0 else KEEP_WARM_USD / usd_per_hour * 3600.0
        if hold <= policy.scale_down_window_seconds:
            continue
        kept = c.replicas * c.tensor_parallel - recommended_gpus.get(p, 0)
        if room is not None and kept > 0:
            if room.get(p, 0) < kept:
                continue
            room[p] -= kept
        out[p] = min(KEEP_WARM_MAX_SECONDS, hold)
    return out


def observed_mix(data: ServiceObservation | None, max_tokens: float | None = None) -> TokenMix | None:
    """The served requests' mean lengths and, from vLLM's length histograms when it exports them, their
    distribution (the planner's capacity depends on the tail, not only the mean)."""
    if data is None or not data.input_tokens_mean or not data.output_tokens_mean:
        return None
    return TokenMix(max(1.0, data.input_tokens_mean), max(1.0, data.output_tokens_mean),
                    quantiles_from_histogram(data.prompt_length_buckets, max_tokens),
                    quantiles_from_histogram(data.output_length_buckets, max_tokens))


def _minus_held(pool_states: dict[str, PoolState], held: list[Mapping[str, CurrentPlacement]]) -> dict[str, PoolState]:
    taken: dict[str, int] = {}
    for current in held:
        for p, c in current.items():
            taken[p] = taken.get(p, 0) + c.replicas * c.tensor_parallel
    return {name: replace(s, gpus_max=max(0, s.gpus_max - taken.get(name, 0))) for name, s in pool_states.items()}
