"""Where a service could run: for each allowed pool, the tensor-parallel degree that serves a req/s cheapest,
with the per-replica capacity within the SLO and the per-replica cost."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from kilowatt.economics.cost import CostBreakdown
from kilowatt.performance import CapacityModel, TokenMix
from kilowatt.performance.capacity import Calibration, default_calibration
from kilowatt.performance.engine import EngineTimes
from kilowatt.performance.slo_capacity import CurveBook
from kilowatt.planner.snapshot import PoolState, ServiceState

# Below this a replica is useless for the service (sub-milli-rps capacities only make the program stiff).
MIN_CAPACITY_RPS = 1e-3


@dataclass(frozen=True)
class Option:
    service: str
    pool: PoolState
    tensor_parallel: int
    capacity_rps: float  # per replica, within the SLO
    saturation_rps: float  # per replica, whatever the latency
    planned_cost: CostBreakdown  # marginal, per replica-hour at the planned utilisation (owned pools: energy above idle)
    from_profile: bool = False

    @property
    def usd_per_rps_hour(self) -> float:
        return self.planned_cost.objective_usd_per_hour / self.capacity_rps


# Length-mix buckets: means on a 10% grid, quantiles relative to their mean on a 25% grid. Services with
# near-identical traffic (and one service from period to period) share cached capacity figures.
MEAN_GRID = 1.1
SHAPE_GRID = 1.25


def _on_grid(x: float, step: float) -> float:
    return float(f"{step ** round(math.log(max(x, 1e-9)) / math.log(step)):.4g}")


def _rounded_mix(mix: TokenMix) -> TokenMix:
    def shape(quantiles: tuple[float, ...], mean: float, rounded_mean: float) -> tuple[float, ...]:
        return tuple(_on_grid(q / mean, SHAPE_GRID) * rounded_mean for q in quantiles)

    m_in, m_out = _on_grid(mix.input_tokens, MEAN_GRID), _on_grid(mix.output_tokens, MEAN_GRID)
    return TokenMix(m_in, m_out, shape(mix.input_quantiles, mix.input_tokens, m_in),
                    shape(mix.output_quantiles, mix.output_tokens, m_out))


class CapacityTable:
    """(req/s within SLO, saturation req/s) of one replica, remembered for one calibration.

    Owned by whoever plans (the operator's Decider, a twin policy, a benchmark), never a module global: two
    calibrations never share figures. Two levels so a plan over S services x P pools hashes each service's key
    once, not S x P x k times; bounded by clearing when it grows past ``limit`` service shapes (they rarely
    change between periods).
    """

    def __init__(self, calibration: Calibration | None = None, limit: int = 20000, engine: bool = True,
                 curves: CurveBook | None = None, measure_budget_seconds: float | None = None) -> None:
        self.calibration = calibration or default_calibration()
        self.limit = limit
        # True (the default): SLO capacity measured on the serving engine for the mix's length distribution (the
        # twin's truth, kilowatt.performance.slo_capacity); False: the analytic model at the mix's means (fast,
        # coarser, optimistic for long prompts).
        self.engine = engine
        self.curves = curves if curves is not None else CurveBook()
        # Seconds a planning period may spend measuring new curves (None: no limit, as in the twin, which must be
        # deterministic). Each new (model shape, GPU, degree, length mix) costs ~0.1-0.3 s; past the budget a
        # figure is the analytic model's, provisional (not remembered), until a later period has measured it. An
        # operator's first period at 1,000 services thus plans on the analytic model and converges over periods.
        self.measure_budget_seconds = measure_budget_seconds
        self._period_budget_seconds: float | None = None  # this period's, when new_period was given one
        self.measure_spent_seconds = 0.0
        self._curve_finished_this_period = False  # the first curve a period needs is finished past its budget
        self.provisional = 0  # figures given from the analytic model this period for want of budget
        self.provisional_services: set[str] = set()  # the services those figures were for (this period)
        # (engine constants, mix) whose curves a period wanted and had no budget for, oldest first: measured
        # between periods (catch_up), so the next period plans on them.
        self._pending: dict[tuple[EngineTimes, TokenMix], None] = {}
        self._by_service: dict[tuple, dict[tuple, tuple[float, float]]] = {}
        # The analytic model's figures by (id of a _by_service table, its key): provisional figures, asked for by
        # every service of a kind each period until the curve is measured. A table's id is only reused after it
        # is dropped, and both are cleared together.
        self._analytic_figures: dict[tuple, tuple[float, float]] = {}
        self._provisional_now: dict[tuple, tuple[float, float]] = {}  # those given as provisional this period
        # One period's candidate options per kind of service (options_for): many services share a model, an SLO
        # and a length mix, and differ only in name, demand and what runs where. Forgotten when a period starts.
        self._options: dict[tuple, tuple[tuple[PoolState, ...], list[tuple[PoolState, list[Option]]]]] = {}

    def clear(self) -> None:
        self._by_service.clear()
        self._analytic_figures.clear()
        self._provisional_now.clear()
        self._options.clear()

    def new_period(self, budget_seconds: float | None = None) -> None:
        """A planning period starts: its curve-measuring budget is whole again (at least ``budget_seconds`` for
        this period alone, if given), its options are found afresh."""
        self._period_budget_seconds = budget_seconds
        self.measure_spent_seconds = 0.0
        self._curve_finished_this_period = False
        self.provisional = 0
        self.provisional_services.clear()
        self._provisional_now.clear()
        self._options.clear()

    def candidates(self, service: ServiceState, pools: tuple[PoolState, ...], at: datetime
                   ) -> list[tuple[PoolState, list[Option]]]:
        """Per allowed pool, every degree a replica of ``service`` can serve at, with its capacity and cost
        (_candidates): shared by the services that differ only in name, demand and what runs where, for one
        period. Provisional figures (a curve not measured yet) are not shared beyond the call that gave them."""
        # What _candidates reads of the service (its name only to label the options, relabelled by options_for).
        kind = (service.shape, service.mix, service.ttft_seconds, service.tpot_seconds, service.percentile,
                service.burst_headroom, service.allowed_pools, service.profiles, service.corrections)
        # The pools by identity (kept alive with the entry, so an id is never reused while it is remembered).
        key = (kind, tuple(id(p) for p in pools), at)
        found = self._options.get(key)
        if found is not None:
            return found[1]
        provisional = self.provisional
        out = _candidates(service, pools, at, self)
        if self.provisional == provisional:
            if len(self._options) >= self.limit:
                self._options.clear()
            self._options[key] = (pools, out)
        return out

    def _may_measure(self, times: EngineTimes, mix: TokenMix) -> bool:
        """Whether the curve for ``mix`` is measured, measuring its missing grid corners one at a time while the
        period's budget lasts: checked before each corner, so past the budget no new corner starts (a period
        overran by up to a whole interpolated curve, four corners, when the check was per curve) — except that
        the first curve a period begins within its budget is finished (a cold start's likeliest option,
        ``measure_first``: its first placement is made on a measured figure, not the analytic model's). Not all
        measured: the curve waits for ``catch_up`` and False."""
        if self.measure_budget_seconds is None:
            return True
        budget = max(self.measure_budget_seconds, self._period_budget_seconds or 0.0)
        missing = self.curves.missing(times, mix)
        for i, corner in enumerate(missing):
            if self.measure_spent_seconds >= budget and (i == 0 or self._curve_finished_this_period):
                if len(self._pending) < self.limit:
                    self._pending[(times, mix)] = None
                return False
            self._measured(self.curves.curve, times, corner)
        if missing:
            self._curve_finished_this_period = True
        return True

    def catch_up(self, budget_seconds: float) -> int:
        """Measure the curves periods went without (oldest first) for up to about ``budget_seconds``: work for
        the time between periods, so a figure is provisional for one period, not for as many as the per-period
        budget takes to reach it. Returns how many are still waiting."""
        started = time.perf_counter()
        while self._pending and time.perf_counter() - started < budget_seconds:
            times, mix = next(iter(self._pending))
            del self._pending[(times, mix)]
            self.curves.interpolated(times, mix)
        return len(self._pending)

    def _measured(self, fn, *args):
        """``fn(*args)`` on the curves, its time charged to the period's budget when it measured a new one."""
        started, before = time.perf_counter(), self.curves.measured
        try:
            return fn(*args)
        finally:
            if self.curves.measured != before:
                self.measure_spent_seconds += time.perf_counter() - started

    def table_for(self, service: ServiceState) -> dict[tuple, tuple[float, float]]:
        return self._table(service)

    def _table(self, service: ServiceState) -> dict[tuple, tuple[float, float]]:
        key = (service.shape, _rounded_mix(service.mix), service.ttft_seconds, service.tpot_seconds,
               service.percentile)
        table = self._by_service.get(key)
        if table is None:
            if len(self._by_service) >= self.limit:
                self._by_service.clear()
                self._analytic_figures.clear()
                self._provisional_now.clear()
            table = self._by_service[key] = {}
        return table

    def replica(self, service: ServiceState, pool: PoolState, tensor_parallel: int,
                table: dict[tuple, tuple[float, float]] | None = None) -> tuple[float, float]:
        """(req/s within the SLO, saturation req/s) of one replica of ``service`` on ``pool`` at degree k.
        ``table``: this service's own table (``table_for``), when the caller asks for many pools and degrees."""
        if table is None:
            table = self._table(service)
        factors = service.correction_on(pool.name)
        key = (pool.gpu, tensor_parallel, factors)
        found = table.get(key)
        if found is not None:
            return found
        analytic_key = (id(table), key)
        found = self._provisional_now.get(analytic_key)
        if found is not None:  # provisional earlier this period: the budget it lacked is still spent
            return self._provisional(service, pool, tensor_parallel, found)
        model = CapacityModel(service.shape, pool.gpu, tensor_parallel, self.calibration).corrected(*factors)
        if not model.fits():
            found = (0.0, 0.0)
        elif self.engine and self._may_measure(EngineTimes.of(model), service.mix):
            found = self._measured(self.curves.capacity, EngineTimes.of(model), service.mix, service.ttft_seconds,
                                   service.tpot_seconds, service.percentile, model.ttft_factor, model.tpot_factor)
        else:
            # The analytic figure for this key, worked out once: provisional figures are not remembered in the
            # table (a later period measures them), but every service of this kind asks for them every period.
            found = self._analytic_figure(service, model, analytic_key)
            if self.engine:  # provisional: a later period measures it on the engine
                self._provisional_now[analytic_key] = found
                return self._provisional(service, pool, tensor_parallel, found)
        table[key] = found
        return found

    def _analytic_figure(self, service: ServiceState, model: CapacityModel, analytic_key: tuple
                         ) -> tuple[float, float]:
        found = self._analytic_figures.get(analytic_key)
        if found is None:
            if len(self._analytic_figures) >= self.limit:
                self._analytic_figures.clear()
            found = self._analytic_figures[analytic_key] = _analytic(model, service)
        return found

    def measure_first(self, service: ServiceState, pools: tuple[PoolState, ...], at: datetime,
                      table: dict[tuple, tuple[float, float]]) -> None:
        """Spend what is left of the period's curve budget on ``service``'s unmeasured options in the order the
        plan is likeliest to want them: where it runs first, then cheapest per req/s on the analytic model. A cold
        start measures the options it will pick, not whichever pool and degree come first, and the analytic
        model's optimism (worst on the RTX 4090) is checked before a replica starts on it."""
        if self.engine and self.measure_budget_seconds is None and self.curves.workers > 1:
            self._prefetch(service, pools, table)
            return
        if not self.engine or self.measure_budget_seconds is None or (
                self.measure_spent_seconds >= max(self.measure_budget_seconds, self._period_budget_seconds or 0.0)):
            return
        unmeasured = []
        for pool, k, key, model in self._not_in(table, service, pools):
            within, saturation = self._analytic_figure(service, model, (id(table), key))
            if within < MIN_CAPACITY_RPS:
                continue
            running = service.current_on(pool.name)
            here = running is not None and running.replicas > 0 and running.tensor_parallel == k
            cost = pool.economics.marginal_cost(k, within / max(saturation, within), at).objective_usd_per_hour
            unmeasured.append((not here, cost / within, EngineTimes.of(model)))
        for _, _, times in sorted(unmeasured, key=lambda u: u[:2]):
            if not self._may_measure(times, service.mix):
                return

    def _prefetch(self, service: ServiceState, pools: tuple[PoolState, ...],
                  table: dict[tuple, tuple[float, float]]) -> None:
        """Without a budget (the twin): every option's curves ``replica`` will read, measured at once on the
        curve book's workers instead of one after another."""
        wanted = [(EngineTimes.of(model), service.mix) for _, _, _, model in self._not_in(table, service, pools)]
        if wanted:
            self.curves.prefetch(wanted)

    def _not_in(self, table: dict[tuple, tuple[float, float]], service: ServiceState, pools: tuple[PoolState, ...]
                ) -> Iterator[tuple[PoolState, int, tuple, CapacityModel]]:
        """(pool, degree, table key, corrected model) of every option ``service`` may run at that fits and has no
        figure in its ``table`` yet."""
        for pool in pools:
            if not service.may_use(pool.name):
                continue
            factors = service.correction_on(pool.name)
            for k in pool.tensor_parallel_degrees:
                if (pool.gpu, k, factors) in table:
                    continue
                model = CapacityModel(service.shape, pool.gpu, k, self.calibration).corrected(*factors)
                if model.fits():
                    yield pool, k, (pool.gpu, k, factors), model

    def _provisional(self, service: ServiceState, pool: PoolState, tensor_parallel: int,
                     analytic: tuple[float, float]) -> tuple[float, float]:
        self.provisional += 1
        self.provisional_services.add(service.key)
        running = service.current_on(pool.name)
        if any(c.replicas > 0 for _, c in service.current) and (
                running is None or running.replicas <= 0 or running.tensor_parallel != tensor_parallel):
            # A service that runs is not moved on unmeasured figures: a pool or degree it does not run on is no
            # option until its curve is measured (at the latest after this period's writes).
            return 0.0, 0.0
        return analytic

    def latency(self, service: ServiceState, pool: PoolState, tensor_parallel: int, load_rps: float
                ) -> tuple[float, float]:
        """(TTFT, TPOT) at the service's percentile that one uncorrected replica shows at ``load_rps``: what the
        online correction compares observations with (the same model the capacities come from)."""
        model = CapacityModel(service.shape, pool.gpu, tensor_parallel, self.calibration)
        if self.engine:
            if not model.fits():
                return math.inf, math.inf
            times = EngineTimes.of(model)
            if self._may_measure(times, service.mix):
                return self._measured(self.curves.latency, times, service.mix, load_rps, service.percentile)
        point = model.at_load(load_rps, _rounded_mix(service.mix), service.percentile)
        return point.ttft_p_seconds, point.tpot_p_seconds


def _analytic(model: CapacityModel, service: ServiceState) -> tuple[float, float]:
    mix = _rounded_mix(service.mix)
    return (model.max_rps_within_slo(mix, service.ttft_seconds, service.tpot_seconds, service.percentile),
            model.saturation_rps(mix))


def replica_capacity(
    service: ServiceState, pool: PoolState, tensor_parallel: int, capacity: CapacityTable | None = None
) -> tuple[float, float]:
    """(req/s within the SLO, saturation req/s) of one replica of ``service`` on ``pool`` at degree k, from
    ``capacity`` (remembered there) or, without one, computed afresh with the shipped calibration."""
    if capacity is not None:
        return capacity.replica(service, pool, tensor_parallel)
    model = CapacityModel(service.shape, pool.gpu, tensor_parallel, default_calibration()).corrected(
        *service.correction_on(pool.name))
    return _analytic(model, service) if model.fits() else (0.0, 0.0)


def options_for(
    service: ServiceState, pools: tuple[PoolState, ...], at: datetime, capacity: CapacityTable | None = None
) -> list[Option]:
    """For each allowed pool, the degree that serves a req/s cheapest — or the one running there, unless a change
    pays for itself (rollout_pays) and was not made within the hour: its per-replica capacity and cost."""
    capacity = capacity or CapacityTable(engine=False)  # table-less: a quick estimate on the analytic model
    out = []
    for pool, candidates in capacity.candidates(service, pools, at):
        best = min(candidates, key=lambda o: (o.usd_per_rps_hour, o.tensor_parallel))
        current = service.current_on(pool.name)
        if current and current.replicas > 0:
            # Re-sharding is a rollout (every replica restarts): keep the running degree unless the change pays
            # for itself, and always within an hour of the last change.
            same = [o for o in candidates if o.tensor_parallel == current.tensor_parallel]
            if same and (pool.name in service.degree_held or not rollout_pays(service, same[0], best)):
                best = same[0]
        out.append(best if best.service == service.key else Option(
            service.key, best.pool, best.tensor_parallel, best.capacity_rps, best.saturation_rps, best.planned_cost,
            best.from_profile))
    return out


def _candidates(service: ServiceState, pools: tuple[PoolState, ...], at: datetime, capacity: CapacityTable
                ) -> list[tuple[PoolState, list[Option]]]:
    out = []
    table = capacity.table_for(service)
    capacity.measure_first(service, pools, at, table)
    for pool in pools:
        if not service.may_use(pool.name):
            continue
        candidates = []
        profiles = dict(service.profile_on(pool.name)) if service.profiles else {}
        for k in pool.tensor_parallel_degrees:
            within, saturation = capacity.replica(service, pool, k, table)
            from_profile = k in profiles
            if from_profile:
                # A measured profile overrides the prior; the correction still applies to it.
                within = profiles[k] / max(service.correction_on(pool.name))
                saturation = max(saturation, within)
            if within < MIN_CAPACITY_RPS:
                continue
            utilisation = within / (1.0 + service.burst_headroom) / max(saturation, within)
            cost = pool.economics.marginal_cost(k, utilisation, at)
            candidates.append(Option(service.key, pool, k, within, saturation, cost, from_profile))
        if candidates:
            out.append((pool, candidates))
    return out


# A change of tensor-parallel degree must save more over this horizon than it costs: the new replicas run beside
# the old ones for the start-up time (the surge), plus a risk margin of that many hours of the new placement (a
# rollout that goes wrong is rolled back).
ROLLOUT_HORIZON_HOURS = 2.0
ROLLOUT_RISK_HOURS = 0.25


def rollout_pays(service: ServiceState, current: Option, new: Option) -> bool:
    """Whether moving the service's replicas on one pool from ``current``'s degree to ``new``'s saves more over
    ROLLOUT_HORIZON_HOURS than the rollout costs, both sized in whole replicas for the service's target."""
    if new.tensor_parallel == current.tensor_parallel:
        return False
    target = max(service.target_rps, MIN_CAPACITY_RPS)
    floor = max(service.floor_replicas, 1)
    n_current = max(floor, math.ceil(target / current.capacity_rps - 1e-9))
    n_new = max(floor, math.ceil(target / new.capacity_rps - 1e-9))
    current_usd = n_current * current.planned_cost.objective_usd_per_hour
    new_usd = n_new * new.planned_cost.objective_usd_per_hour
    rollout_usd = new_usd * (new.pool.startup_seconds / 3600.0 + ROLLOUT_RISK_HOURS)
    return (current_usd - new_usd) * ROLLOUT_HORIZON_HOURS > rollout_usd
