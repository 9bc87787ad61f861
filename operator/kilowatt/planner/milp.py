"""The global integer program, solved by HiGHS (``highspy``) from a warm start found by LP diving.

Variables: replicas ``n[o]`` per option o = (service, pool, tensor-parallel degree); unmet demand ``u[s]`` and
missing minimum replicas ``m[s]`` per service (heavily penalised slacks, so the program is always feasible and
the best partial plan comes back with its binding constraint named); ``up[o]``/``down[o]`` where replicas run
now, to charge churn.

    minimise   sum_o cost[o] n[o] + churn[o] (up[o] + down[o]) + P sum_s (u[s] + m[s])
    subject to sum_o cap[o] n[o] + u[s] >= demand[s] (1 + headroom[s])        for every service
               floor[s] <= sum_o n[o] + m[s],  sum_o n[o] <= max[s]             for every service
               sum_o k[o] n[o] <= gpus[p]                                       for every pool
               n[o] - up[o] + down[o] = current[o]                              where a replica runs now

A service routed by a plain Service (``equal_share``: every ready replica gets the same share) is worth
replicas x its slowest replica's capacity (``placement_capacity``), linearised with, per option j of the
service, a binary ``z[j]`` ("j is the slowest option that runs") and its replicas-at-that-capacity ``w[j]``:

               sum_j cap[j] w[j] + u[s] >= demand[s] (1 + headroom[s])             (instead of the sum above)
               sum_j w[j] = sum_o n[o],  w[j] <= max[s] z[j],  sum_j z[j] <= 1
               n[o] <= ub[o] sum_{j: cap[j] <= cap[o]} z[j]                      (nothing slower than j runs)

so a mix is chosen only when it beats every homogeneous placement at its equal-share worth.

How it is solved, within the time budget (benchmarks/RESULTS.md has what each step is worth):

1. The LP relaxation (equal-share services covered by capacity-weighted shares there: the big-M rows above
   make a useless relaxation): the bound the plan's gap is measured against, and what a GPU of each pool is
   worth under contention (the pool rows' duals).
2. Above ``EXACT_BELOW_OPTIONS``, the start is each service's whole-replica placements priced against the pools
   (``patterns.py``: a Dantzig-Wolfe master grown by column generation from those duals, its few split services
   settled by a small integer program), at most ``PATTERN_SHARE`` of the budget; then ``round_and_repair`` tops up
   what a pool still has room for. Rounding the compact relaxation instead (by diving, before) left 60-490 req/s
   unmet at 1,000 services where the pools bind; the patterns leave what the exact solve leaves, or near it.
3. Small programs (<= 64 options) to proven optimality; up to ``SEARCH_AT_MOST_OPTIONS`` branch-and-bound from
   that start (presolve on up to ``PRESOLVE_AT_MOST_OPTIONS`` without equal-share services, off otherwise,
   where it alone would take the budget); above, where HiGHS's root node alone overruns the budget,
   a large-neighbourhood search re-plans blocks of ten services, each cut out as its own small program.
4. A last top-up: demand still unmet where a pool has room for the service is placed.

The plan reports the gap to the LP bound it returned with; the benchmark reports the distance to a long
reference solve.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable

import highspy
import numpy as np
from scipy.sparse import coo_matrix

from kilowatt.planner.cost import served_cost
from kilowatt.planner.explain import alternatives, reason_for
from kilowatt.planner.options import CapacityTable, Option, options_for
from kilowatt.planner.patterns import Priced, pattern_start, quiet_highs
from kilowatt.planner.reasons import Binding, FullPool, MaxReplicasReached, NoPoolFits, PoolsFull, SolverLimit
from kilowatt.planner.snapshot import ServiceState, Snapshot
from kilowatt.planner.types import Placement, Plan, PoolUsage, ServicePlan, placement_capacity

PLANNER_BUDGET_SECONDS = 0.8  # the default for one plan, wherever it runs (operator, twin, CLI)
MIN_SEARCH_SECONDS = 0.1
# Above this, branch-and-bound found nothing better than the rounded start within a second in our benchmark
# (1000 services x 10 pools = ~9,400 options) and overran its limit at the root node: skip it.
SEARCH_AT_MOST_OPTIONS = 2000
# Presolve pays for itself up to here (100 x 5 and 100 x 10 in the benchmark: 0.4-2.6 req/s less unmet in the
# budget); at ~1,800 options (1000 x 2) it takes the whole budget and the search never leaves the start. Not
# with equal-share services: on their binary "slowest option" variables and big-M rows it took 0.6 s of a
# program (100 services x 5 pools, nothing binding) that closes at the root in 0.09 s without it.
PRESOLVE_AT_MOST_OPTIONS = 1000
EXACT_BELOW_OPTIONS = 64
LARGE_PROBLEM_GAP = 0.005  # 0.5%: far inside the capacity model's error, and what keeps 1000 x 10 under 1 s


def _gap(n_options: int) -> float:
    """Prove optimality on small programs; stop within 0.5% of the bound on large ones."""
    return 0.0 if n_options <= EXACT_BELOW_OPTIONS else LARGE_PROBLEM_GAP


def plan(
    snapshot: Snapshot,
    capacity: CapacityTable | None = None,
    time_limit_seconds: float = PLANNER_BUDGET_SECONDS,
    exact: bool = False,
) -> Plan:
    """Plan every service on every pool. ``time_limit_seconds`` bounds the whole call on large programs;
    ``exact`` runs full branch-and-bound (presolve on) until the gap closes or the limit — for reference solves.
    ``capacity``: the caller's table of per-replica capacities, kept between plans (without one: the analytic
    model, a quick estimate; whoever plans for real keeps a table on the engine's curves)."""
    started = time.perf_counter()
    by_service: dict[str, list[Option]] = {
        s.key: options_for(s, snapshot.pools, snapshot.at, capacity) for s in snapshot.services
    }
    options = [o for s in snapshot.services for o in by_service[s.key]]
    # What is left for solving, less what assembling the plan (reasons, costs) takes after it (~0.1 ms/service).
    budget = max(0.05, time_limit_seconds - (time.perf_counter() - started) - 1e-4 * len(snapshot.services))
    counts, gap = _solve(snapshot, options, budget, exact)
    # Whatever the search returned, demand left unmet where a pool still has room for the service is placed.
    counts = round_and_repair(snapshot, options, np.asarray(counts, dtype=float), consolidate=False)
    return _assemble(snapshot, by_service, options, counts, time.perf_counter() - started, gap)


def greedy(snapshot: Snapshot, options: list[Option]) -> list[int]:
    """A feasible plan fast: biggest services first, each on its cheapest options per req/s, spilling over
    when a pool fills or replicas.max binds. The warm start for HiGHS, and its fallback."""
    free = {p.name: p.gpus_max for p in snapshot.pools}
    counts = [0] * len(options)
    index: dict[str, list[int]] = {}
    for i, o in enumerate(options):
        index.setdefault(o.service, []).append(i)
    for s in sorted(snapshot.services, key=lambda s: -s.target_rps):
        mine = sorted(index.get(s.key, []), key=lambda i: options[i].usd_per_rps_hour)
        floor = min(s.floor_replicas, s.max_replicas)
        for i in mine:
            o = options[i]
            now = [(counts[j], options[j].capacity_rps) for j in mine]
            replicas = sum(n for n, _ in now)
            covered = placement_capacity(now, s.equal_share) >= s.target_rps - 1e-9
            if replicas >= s.max_replicas or (covered and replicas >= floor):
                break
            want = max(_more(s, o, now), floor - replicas)
            n = min(want, s.max_replicas - replicas, free[o.pool.name] // o.tensor_parallel)
            if n <= 0:
                continue
            counts[i] = n
            free[o.pool.name] -= n * o.tensor_parallel
    return counts


def _more(s: ServiceState, o: Option, now: list[tuple[int, float]]) -> int:
    """Replicas of option ``o`` that would cover what is left of the service's target, given what it runs now
    as (replicas, per-replica capacity) pairs. With equal shares a slower option lowers what every replica is
    worth, so it is counted from the whole target at the new slowest capacity."""
    if s.equal_share:
        slowest = min([c for n, c in now if n > 0] + [o.capacity_rps])
        return max(0, math.ceil(s.target_rps / slowest - 1e-9) - sum(n for n, _ in now))
    need = s.target_rps - placement_capacity(now, False)
    return max(0, math.ceil(need / o.capacity_rps - 1e-9))


def _solve(
    snapshot: Snapshot, options: list[Option], time_limit_seconds: float, exact: bool = False
) -> tuple[list[int], float]:
    started = time.perf_counter()
    services = snapshot.services
    pools = {p.name: i for i, p in enumerate(snapshot.pools)}
    service_index = {s.key: i for i, s in enumerate(services)}
    n_opt, n_svc = len(options), len(services)
    churned = [i for i, o in enumerate(options) if (_current(services[service_index[o.service]], o)) > 0]
    n_churn = len(churned)
    by_service: list[list[int]] = [[] for _ in services]
    by_pool: list[list[int]] = [[] for _ in snapshot.pools]
    for i, o in enumerate(options):
        by_service[service_index[o.service]].append(i)
        by_pool[pools[o.pool.name]].append(i)
    shared = _equal_share_groups(services, options, by_service)
    n_z = sum(len(g) for _, g in shared)
    # Variable layout: [n (n_opt) | u (n_svc) | m (n_svc) | up (n_churn) | down (n_churn) | z (n_z) | w (n_z)]
    u0, m0, up0 = n_opt, n_opt + n_svc, n_opt + 2 * n_svc
    down0 = up0 + n_churn
    z0 = down0 + n_churn
    w0 = z0 + n_z
    n_var = w0 + n_z
    if n_var == 0:
        return [], 0.0

    cost = np.zeros(n_var)
    churn_cost = np.zeros(n_opt)
    churned_set = set(churned)
    for i, o in enumerate(options):
        replica = o.planned_cost.objective_usd_per_hour
        churn_cost[i] = snapshot.churn_hours * replica
        # A new replica where none runs now pays churn once; where some run, up/down variables charge it.
        cost[i] = replica + (0.0 if i in churned_set else churn_cost[i])
    worst = max((o.usd_per_rps_hour for o in options), default=1.0)
    worst_replica = max((o.planned_cost.objective_usd_per_hour for o in options), default=1.0)
    cost[u0:m0] = 1000.0 * (worst + 1.0)  # per unmet req/s: dearer than any way of serving it
    cost[m0:up0] = 1000.0 * (worst_replica + 1.0)  # per replica below the floor
    for j, i in enumerate(churned):
        cost[up0 + j] = churn_cost[i]
        cost[down0 + j] = churn_cost[i]

    rows, cols, vals, lower, upper = [], [], [], [], []
    equal = {s_i for s_i, _ in shared}
    row = 0
    # Demand coverage and replica bounds, per service. Equal-share services are covered through w (below); their
    # capacity-weighted coverage row is switched on only for the LP relaxation, whose big-M form would be useless.
    for s_i, s in enumerate(services):
        for i in by_service[s_i]:
            rows += [row, row + 1, row + 2]
            cols += [i, i, i]
            vals += [options[i].capacity_rps, 1.0, 1.0]
        rows.append(row), cols.append(u0 + s_i), vals.append(1.0)
        lower.append(-np.inf if s_i in equal else s.target_rps), upper.append(np.inf)
        rows.append(row + 1), cols.append(m0 + s_i), vals.append(1.0)
        lower.append(float(min(s.floor_replicas, s.max_replicas))), upper.append(np.inf)
        lower.append(-np.inf), upper.append(float(s.max_replicas))
        row += 3
    # Pool GPU limits.
    for p_i, members in enumerate(by_pool):
        for i in members:
            rows.append(row), cols.append(i), vals.append(float(options[i].tensor_parallel))
        lower.append(-np.inf), upper.append(float(snapshot.pools[p_i].gpus_max))
        row += 1
    # Churn: n - up + down = current.
    for j, i in enumerate(churned):
        o = options[i]
        current = float(_current(services[service_index[o.service]], o))
        rows += [row, row, row]
        cols += [i, up0 + j, down0 + j]
        vals += [1.0, -1.0, 1.0]
        lower.append(current), upper.append(current)
        row += 1
    var_upper = np.full(n_var, highspy.kHighsInf)
    for i, o in enumerate(options):
        s = services[service_index[o.service]]
        var_upper[i] = min(s.max_replicas, o.pool.gpus_max // o.tensor_parallel)
    # Equal shares: worth = sum_j cap[j] w[j]; w counts every replica at the slowest running option's capacity.
    offset = 0
    equal_rows_from = row
    for s_i, group in shared:
        big = float(services[s_i].max_replicas)
        z = range(z0 + offset, z0 + offset + len(group))
        w = range(w0 + offset, w0 + offset + len(group))
        for j, i in enumerate(group):
            rows.append(row), cols.append(w[j]), vals.append(options[i].capacity_rps)
            var_upper[z[j]], var_upper[w[j]] = 1.0, big
        rows.append(row), cols.append(u0 + s_i), vals.append(1.0)  # sum_j cap[j] w[j] + u >= target
        lower.append(services[s_i].target_rps), upper.append(np.inf)
        row += 1
        rows += [row] * (2 * len(group))  # sum_j w[j] - sum_o n[o] = 0
        cols += list(w) + group
        vals += [1.0] * len(group) + [-1.0] * len(group)
        lower.append(0.0), upper.append(0.0)
        row += 1
        for j in range(len(group)):  # w[j] <= max z[j]
            rows += [row, row]
            cols += [w[j], z[j]]
            vals += [1.0, -big]
            lower.append(-np.inf), upper.append(0.0)
            row += 1
        rows += [row] * len(group)  # at most one slowest option
        cols += list(z)
        vals += [1.0] * len(group)
        lower.append(-np.inf), upper.append(1.0)
        row += 1
        for i in group:  # n[o] runs only where the slowest chosen option is no faster than o
            rows.append(row), cols.append(i), vals.append(1.0)
            for j, k in enumerate(group):
                if options[k].capacity_rps <= options[i].capacity_rps:
                    rows.append(row), cols.append(z[j]), vals.append(-float(var_upper[i]))
            lower.append(-np.inf), upper.append(0.0)
            row += 1
        offset += len(group)

    matrix = coo_matrix((vals, (rows, cols)), shape=(row, n_var)).tocsc()

    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n_var, row
    lp.col_cost_ = cost
    lp.col_lower_ = np.zeros(n_var)
    lp.col_upper_ = var_upper
    inf = highspy.kHighsInf
    lp.row_lower_ = np.array([max(-inf, x) for x in lower])
    lp.row_upper_ = np.array([min(inf, x) for x in upper])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = matrix.indptr
    lp.a_matrix_.index_ = matrix.indices
    lp.a_matrix_.value_ = matrix.data
    integer, continuous = highspy.HighsVarType.kInteger, highspy.HighsVarType.kContinuous
    lp.integrality_ = [integer] * n_opt + [continuous] * (z0 - n_opt) + [integer] * n_z + [continuous] * n_z

    h = quiet_highs(time_limit_seconds)
    h.setOptionValue("mip_rel_gap", 1e-4 if exact else _gap(n_opt))
    h.passModel(lp)
    # Warm start: the LP relaxation rounded and repaired (much closer to optimal than a greedy plan on large,
    # contended instances), or the greedy plan when the relaxation is not available.
    pool_rows = np.arange(3 * len(services), 3 * len(services) + len(snapshot.pools), dtype=np.int32)
    row_lower, row_upper = np.asarray(lp.row_lower_), np.asarray(lp.row_upper_)
    # The relaxation: equal-share services covered by capacity-weighted shares, their big-M rows off.
    weighted_rows = np.array([3 * s_i for s_i, _ in shared], dtype=np.int32)
    equal_rows = np.arange(equal_rows_from, row, dtype=np.int32)
    swaps = [(weighted_rows, np.array([services[s_i].target_rps for s_i, _ in shared]), row_upper[weighted_rows]),
             (equal_rows, np.full(len(equal_rows), -inf), np.full(len(equal_rows), inf))]
    option_pool = np.array([pools[o.pool.name] for o in options], dtype=np.int64)
    option_gpus = np.array([o.tensor_parallel for o in options], dtype=np.int64)
    pool_gpus = np.array([p.gpus_max for p in snapshot.pools], dtype=np.int64)
    gpu_price = np.zeros(len(snapshot.pools))
    lp_bound: list[float] = []

    def after_relaxation(h_: highspy.Highs, v: np.ndarray) -> np.ndarray:
        # What a GPU of each pool is worth under contention (the pool rows' duals), for the patterns and repair.
        gpu_price[:] = np.maximum(0.0, -np.asarray(h_.getSolution().row_dual)[pool_rows])
        lp_bound.append(h_.getInfo().objective_function_value)
        return v

    relaxed = _relaxation(h, n_var, lp.integrality_, swaps, row_lower, row_upper, after_relaxation)
    counts = None
    if n_opt > EXACT_BELOW_OPTIONS:
        # Whole-replica patterns per service, priced against the pools (patterns.py): far fewer req/s left
        # unmet than rounding the relaxation where pools bind.
        priced = Priced(
            service=np.array([service_index[o.service] for o in options]),
            capacity_rps=np.array([o.capacity_rps for o in options]), gpus=option_gpus, pool=option_pool,
            replica_usd_per_hour=np.array([o.planned_cost.objective_usd_per_hour for o in options]),
            churn_usd=churn_cost, current=np.array([_current(services[service_index[o.service]], o) for o in options]),
            target_rps=np.array([s.target_rps for s in services]),
            floor_replicas=np.array([s.floor_replicas for s in services]),
            max_replicas=np.array([s.max_replicas for s in services]),
            equal_share=np.array([s.equal_share for s in services], dtype=bool),
            unmet_usd_per_rps=float(cost[u0]), short_usd_per_replica=float(cost[m0]), pool_gpus=pool_gpus)
        found = pattern_start(priced, started + PATTERN_SHARE * time_limit_seconds, gpu_price)
        if found is not None:
            counts = round_and_repair(snapshot, options, found.astype(float), consolidate=False)
    if counts is None:
        prices = {p.name: float(gpu_price[i]) for i, p in enumerate(snapshot.pools)}
        counts = round_and_repair(snapshot, options, relaxed, prices) if relaxed is not None \
            else greedy(snapshot, options)
    start = _complete(snapshot, options, counts, churned, n_var, (u0, m0, up0, down0), shared, (z0, w0))
    left = time_limit_seconds - (time.perf_counter() - started)
    if not exact and n_opt > EXACT_BELOW_OPTIONS and (left < MIN_SEARCH_SECONDS or n_opt > SEARCH_AT_MOST_OPTIONS):
        contended = bool(np.any(gpu_price > 1e-9)) or start[u0:u0 + len(services)].sum() > 1e-6
        if left >= MIN_SEARCH_SECONDS and contended:
            # Too large for branch-and-bound in the budget (its root node alone overruns): re-plan small blocks.
            # Not where no pool binds and all demand is met: services are then independent, nothing to trade.
            columns_of = [list(group) + [u0 + s_i, m0 + s_i] for s_i, group in enumerate(by_service)]
            for j, i in enumerate(churned):
                columns_of[service_index[options[i].service]] += [up0 + j, down0 + j]
            offset = 0
            for s_i, group in shared:
                columns_of[s_i] += list(range(z0 + offset, z0 + offset + len(group)))
                columns_of[s_i] += list(range(w0 + offset, w0 + offset + len(group)))
                offset += len(group)
            program = _Program(matrix, cost, var_upper, row_lower, row_upper,
                               np.array([t == integer for t in lp.integrality_]))
            start = _large_neighbourhoods(program, start, started + time_limit_seconds, columns_of, u0,
                                          lp_bound[0] if lp_bound else -math.inf)
        return [int(round(x)) for x in start[:n_opt]], _gap_to(cost @ start, lp_bound[0] if lp_bound else -math.inf)
    h.setOptionValue("time_limit", float(max(left, MIN_SEARCH_SECONDS)))  # per run: HiGHS's clock is cumulative
    if not exact and n_opt > EXACT_BELOW_OPTIONS and (n_opt > PRESOLVE_AT_MOST_OPTIONS or n_z > 0):
        h.setOptionValue("presolve", "off")
    solution = _run_from(h, start)
    if not solution.value_valid or cost @ np.array(solution.col_value) > cost @ start:
        return [int(round(x)) for x in start[:n_opt]], math.inf
    info = h.getInfo()
    return [int(round(x)) for x in solution.col_value[:n_opt]], float(info.mip_gap)


LNS_BLOCK = 10  # services re-planned together in one step of the large-neighbourhood search
LNS_SUB_SECONDS = 0.1  # the most one step may take


class _Program:
    """The whole integer program as arrays, to cut sub-programs from: a block of columns free, every other column
    fixed at a point, the rows those columns touch with the fixed columns' share moved into their bounds."""

    def __init__(self, matrix, cost: np.ndarray, upper: np.ndarray, row_lower: np.ndarray, row_upper: np.ndarray,
                 integer: np.ndarray):
        self.matrix, self.cost, self.upper = matrix, cost, upper
        self.row_lower, self.row_upper, self.integer = row_lower, row_upper, integer

    def solve_block(self, point: np.ndarray, free: np.ndarray, seconds: float) -> np.ndarray | None:
        """The best values of the ``free`` columns with the others at ``point`` (HiGHS from ``point``, within
        ``seconds``); None where it found no feasible point."""
        block = self.matrix[:, free]
        rows = np.unique(block.indices)
        fixed = self.matrix[:, ~free] @ point[~free]
        block = block[rows, :].tocsc()
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = int(free.sum()), len(rows)
        lp.col_cost_ = self.cost[free]
        lp.col_lower_ = np.zeros(lp.num_col_)
        lp.col_upper_ = self.upper[free]
        lp.row_lower_ = self.row_lower[rows] - fixed[rows]
        lp.row_upper_ = self.row_upper[rows] - fixed[rows]
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = block.indptr
        lp.a_matrix_.index_ = block.indices
        lp.a_matrix_.value_ = block.data
        kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
        lp.integrality_ = [kinds[int(k)] for k in self.integer[free]]
        h = quiet_highs(seconds)
        h.passModel(lp)
        solution = _run_from(h, point[free])
        if solution.value_valid and h.getInfo().primal_solution_status == 2:
            return np.array(solution.col_value)
        return None


def _large_neighbourhoods(program: _Program, start: np.ndarray, deadline: float, columns_of: list[list[int]],
                          u0: int, bound: float) -> np.ndarray:
    """Large-neighbourhood search: free a small block of services (half of them those with most demand unmet,
    the rest in turn), fix every other column at the incumbent, and let HiGHS re-plan the block within the GPUs
    the rest leaves (a sub-program of ~100 columns, cut out rather than bounded inside the whole one: HiGHS's
    presolve of the whole program alone took longer than a step); keep what is better. Repeats while the budget
    lasts, until the plan is within ``LARGE_PROBLEM_GAP`` of the LP ``bound``, or until a whole pass over the
    services found nothing better (so an uncontended period returns at once, and the same problem gets the same
    plan)."""
    rng = np.random.default_rng(0)
    incumbent = start.copy()
    n_svc = len(columns_of)
    order = list(rng.permutation(n_svc))
    position = 0
    since_better = 0
    cost = program.cost
    while time.perf_counter() < deadline - 0.01 and since_better < n_svc and \
            _gap_to(cost @ incumbent, bound) > LARGE_PROBLEM_GAP:
        unmet = [s_i for s_i in np.argsort(-incumbent[u0:u0 + n_svc]) if incumbent[u0 + s_i] > 1e-6]
        block = set(unmet[: LNS_BLOCK // 2])
        while len(block) < min(LNS_BLOCK, n_svc):
            block.add(order[position % n_svc])
            position += 1
        free = np.zeros(len(incumbent), dtype=bool)
        for s_i in block:
            free[columns_of[s_i]] = True
        seconds = float(min(LNS_SUB_SECONDS, max(0.005, deadline - time.perf_counter())))
        found = program.solve_block(incumbent, free, seconds)
        if found is not None:
            trial = incumbent.copy()
            trial[free] = found
            trial[:u0] = np.round(trial[:u0])
            if cost @ trial < cost @ incumbent * (1 - 1e-9):
                incumbent, since_better = trial, 0
                continue
        since_better += len(block)
    return incumbent


def _run_from(h: highspy.Highs, start: np.ndarray) -> highspy.HighsSolution:
    """Run HiGHS with ``start`` as its incumbent; its solution (the incumbent it ended with, for a MIP)."""
    warm = highspy.HighsSolution()
    warm.col_value = list(start)
    warm.value_valid = True
    h.setSolution(warm)
    h.run()
    return h.getSolution()


def _gap_to(objective: float, bound: float) -> float:
    return max(0.0, (objective - bound) / max(abs(objective), 1e-9))


def _relaxation(h: highspy.Highs, n_var: int, integrality: list,
                swaps: list[tuple[np.ndarray, np.ndarray, np.ndarray]], row_lower: np.ndarray,
                row_upper: np.ndarray, then: Callable[[highspy.Highs, np.ndarray], np.ndarray] | None = None,
                ) -> np.ndarray | None:
    """The LP relaxation with some rows' bounds swapped for it (``swaps``: rows, lower, upper), then put back:
    equal-share services are covered as if shares were capacity-weighted (their big-M rows off). ``then`` runs
    on the solved relaxation before anything is put back (the dive) and its values are returned."""
    everything = np.arange(n_var, dtype=np.int32)
    h.changeColsIntegrality(n_var, everything, np.array([highspy.HighsVarType.kContinuous] * n_var))
    for rows, lower, upper in swaps:
        if len(rows):
            h.changeRowsBounds(len(rows), rows, np.asarray(lower, dtype=float), np.asarray(upper, dtype=float))
    h.setOptionValue("time_limit", highspy.kHighsInf)  # the relaxation always finishes: everything rests on it
    h.run()
    solution = h.getSolution()
    optimal = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    values = np.array(solution.col_value) if solution.value_valid and optimal else None
    if values is not None and then is not None:
        values = then(h, values)  # while the model is still the relaxation: the dive
    for rows, _, _ in swaps:
        if len(rows):
            h.changeRowsBounds(len(rows), rows, row_lower[rows], row_upper[rows])
    h.changeColsIntegrality(n_var, everything, np.array(integrality))
    return values


PATTERN_SHARE = 0.5  # of the budget, at most, for the patterns' column generation


def round_and_repair(snapshot: Snapshot, options: list[Option], relaxed: np.ndarray,
                     gpu_price: dict[str, float] | None = None, consolidate: bool = True) -> list[int]:
    """Round the LP relaxation down, then cover what is left of each service's target by regret: the service
    that would lose most by missing its cheapest pool with room goes first (classic remedy for contended
    assignment), taking whole replicas within free GPUs and replicas.max. ``gpu_price``: what a GPU of each pool
    is worth to the others (the relaxation's duals), added to a replica's cost. ``consolidate``: keep only the
    relaxation's main pool of an equal-share service (off when ``relaxed`` is already a whole plan to top up)."""
    counts = [int(math.floor(relaxed[i] + 1e-9)) for i in range(len(options))]
    index: dict[str, list[int]] = {}
    for i, o in enumerate(options):
        index.setdefault(o.service, []).append(i)
    services = {s.key: s for s in snapshot.services}
    for key, mine in index.items():
        if consolidate and services[key].equal_share and len(mine) > 1:
            # The relaxation splits equal-share services as if shares were weighted; keep only the pool it gave
            # most, and let the repair cover the rest (a mix of rounded-down parts is worth little at N x slowest).
            keep = max(mine, key=lambda i: relaxed[i])
            for i in mine:
                if i != keep:
                    counts[i] = 0
    free = {p.name: p.gpus_max for p in snapshot.pools}
    for o, n in zip(options, counts):
        free[o.pool.name] -= n * o.tensor_parallel

    def remaining(key: str) -> tuple[float, int, int, list[tuple[int, float]]]:
        mine = index.get(key, [])
        s = services[key]
        now = [(counts[i], options[i].capacity_rps) for i in mine]
        need = s.target_rps - placement_capacity(now, s.equal_share)
        total = sum(counts[i] for i in mine)
        return need, total, min(s.floor_replicas, s.max_replicas) - total, now

    def price(o: Option) -> float:
        """A replica's cost, plus what its GPUs are worth to others where pools are contended."""
        return o.planned_cost.objective_usd_per_hour + (gpu_price or {}).get(o.pool.name, 0.0) * o.tensor_parallel

    def best_two(key: str) -> tuple[float, int | None]:
        """(regret, best option) for covering this service's remaining need from pools with room."""
        need, total, short, now = remaining(key)
        s = services[key]
        if (need <= 1e-9 and short <= 0) or total >= s.max_replicas:
            return 0.0, None
        costs = []
        for i in index.get(key, []):
            o = options[i]
            n = max(_more(s, o, now), short, 1)
            n = min(n, s.max_replicas - total)
            if free[o.pool.name] >= n * o.tensor_parallel:
                costs.append((n * price(o), i))
            elif free[o.pool.name] >= o.tensor_parallel:
                fits = free[o.pool.name] // o.tensor_parallel
                if s.equal_share and short <= 0 and placement_capacity(now + [(fits, o.capacity_rps)], True) <= \
                        placement_capacity(now, True) + 1e-9:
                    continue  # slower replicas that fit would lower what every replica is worth
                # Partial cover: what fits here, priced as if the rest had to come from the dearest option.
                costs.append((n * price(o) * 1.5, i))
        if not costs:
            return 0.0, None
        costs.sort()
        regret = (costs[1][0] - costs[0][0]) if len(costs) > 1 else math.inf
        return regret, costs[0][1]

    heap = []
    for key in services:
        regret, best = best_two(key)
        if best is not None:
            heapq.heappush(heap, (-regret, key))
    while heap:
        negative, key = heapq.heappop(heap)
        regret, best = best_two(key)
        if best is None:
            continue
        if heap and -regret > heap[0][0] + 1e-12 and regret != -negative:
            heapq.heappush(heap, (-regret, key))  # stale: its options changed since it was queued
            continue
        need, total, short, now = remaining(key)
        o = options[best]
        s = services[key]
        n = max(_more(s, o, now), short, 1)
        n = min(n, s.max_replicas - total, free[o.pool.name] // o.tensor_parallel)
        counts[best] += n
        free[o.pool.name] -= n * o.tensor_parallel
        regret, best = best_two(key)
        if best is not None:
            heapq.heappush(heap, (-regret, key))
    return counts


def _complete(
    snapshot: Snapshot, options: list[Option], counts: list[int], churned: list[int], n_var: int,
    offsets: tuple[int, int, int, int], shared: list[tuple[int, list[int]]] = (), shared_offsets: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Fill in the slack, churn and equal-share variables for given replica counts, making a full feasible point."""
    u0, m0, up0, down0 = offsets
    z0, w0 = shared_offsets
    x = np.zeros(n_var)
    x[: len(counts)] = counts
    services = snapshot.services
    index = {s.key: i for i, s in enumerate(services)}
    running: list[list[tuple[int, float]]] = [[] for _ in services]
    for o, n in zip(options, counts):
        running[index[o.service]].append((n, o.capacity_rps))
    for i, s in enumerate(services):
        x[u0 + i] = max(0.0, s.target_rps - placement_capacity(running[i], s.equal_share))
        x[m0 + i] = max(0.0, min(s.floor_replicas, s.max_replicas) - sum(n for n, _ in running[i]))
    for j, i in enumerate(churned):
        delta = counts[i] - _current(services[index[options[i].service]], options[i])
        x[up0 + j], x[down0 + j] = max(delta, 0), max(-delta, 0)
    offset = 0
    for _, group in shared:
        live = [j for j, i in enumerate(group) if counts[i] > 0]
        if live:
            slowest = min(live, key=lambda j: options[group[j]].capacity_rps)
            x[z0 + offset + slowest] = 1.0
            x[w0 + offset + slowest] = sum(counts[i] for i in group)
        offset += len(group)
    return x


def _equal_share_groups(services: tuple[ServiceState, ...], options: list[Option],
                        by_service: list[list[int]]) -> list[tuple[int, list[int]]]:
    """(service index, its option indices) for the equal-share services with a choice of pools (one option is
    exact without the extra variables)."""
    return [(s_i, by_service[s_i]) for s_i, s in enumerate(services) if s.equal_share and len(by_service[s_i]) > 1]


def _current(service: ServiceState, option: Option) -> int:
    current = service.current_on(option.pool.name)
    if current is None or current.tensor_parallel != option.tensor_parallel:
        return 0
    return current.replicas


def _assemble(
    snapshot: Snapshot,
    by_service: dict[str, list[Option]],
    options: list[Option],
    counts: list[int],
    seconds: float,
    gap: float = 0.0,
) -> Plan:
    count = {id(o): n for o, n in zip(options, counts)}
    used = {p.name: 0 for p in snapshot.pools}
    for o, n in zip(options, counts):
        used[o.pool.name] += n * o.tensor_parallel
    service_plans, problems = [], []
    for s in snapshot.services:
        chosen = [(o, count[id(o)]) for o in by_service[s.key]]
        placement = tuple(
            Placement(o.pool.name, o.pool.gpu.model, n, o.tensor_parallel, o.capacity_rps) for o, n in chosen if n > 0
        )
        cost = served_cost(s, [(o, n) for o, n in chosen if n > 0], snapshot.at)
        capacity = placement_capacity([(p.replicas, p.capacity_rps) for p in placement], s.equal_share)
        unmet = max(0.0, s.target_rps - capacity)
        binding: Binding | None = None
        replicas = sum(p.replicas for p in placement)
        if unmet > 1e-6 * max(1.0, s.target_rps) or replicas < min(s.floor_replicas, s.max_replicas):
            binding = _binding(s, by_service[s.key], replicas, used, snapshot)
            problems.append(f"{binding}; SLO at risk for {s.key}")
        alts = alternatives(s, by_service[s.key], snapshot.at)
        weighed = served_cost(s, [(o, n) for o, n in chosen if n > 0], snapshot.at, marginal=True)
        reason, next_best = reason_for(s, placement, cost, alts, binding, by_service[s.key], weighed)
        planned = sum(o.planned_cost.total_usd_per_hour * n for o, n in chosen)
        service_plans.append(ServicePlan(s.key, s.demand_rps, s.target_rps, placement, cost, reason, next_best,
                                         unmet, binding, planned, s.equal_share))
    pools = tuple(PoolUsage(p.name, used[p.name], p.gpus_max) for p in snapshot.pools)
    return Plan(not problems, tuple(service_plans), pools, seconds, tuple(problems), gap)


def _binding(
    s: ServiceState, options: list[Option], replicas: int, used: dict[str, int], snapshot: Snapshot
) -> Binding:
    if not options:
        return NoPoolFits(s.allowed_pools, s.shape.parameters_billion, s.shape.dtype, s.ttft_seconds,
                          s.tpot_seconds, s.percentile)
    if replicas >= s.max_replicas:
        return MaxReplicasReached(s.max_replicas)
    full = tuple(FullPool(o.pool.name, used[o.pool.name], o.pool.gpus_max) for o in options
                 if used[o.pool.name] + o.tensor_parallel > o.pool.gpus_max)
    return PoolsFull(full) if full else SolverLimit()


def replicas_needed(target_rps: float, capacity_rps: float) -> int:
    return math.ceil(target_rps / capacity_rps - 1e-9) if capacity_rps > 0 else 0
