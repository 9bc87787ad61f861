"""The global integer program, solved by HiGHS through ``scipy.optimize.milp``.

Variables: replicas ``n[o]`` per option o = (service, pool, tensor-parallel degree); unmet demand ``u[s]`` and
missing minimum replicas ``m[s]`` per service (heavily penalised slacks, so the program is always feasible and
the best partial plan comes back with its binding constraint named); ``up[o]``/``down[o]`` where replicas run
now, to charge churn.

    minimise   sum_o cost[o] n[o] + churn[o] (up[o] + down[o]) + P sum_s (u[s] + m[s])
    subject to sum_o cap[o] n[o] + u[s] >= demand[s] (1 + headroom[s])        for every service
               floor[s] <= sum_o n[o] + m[s],  sum_o n[o] <= max[s]             for every service
               sum_o k[o] n[o] <= gpus[p]                                       for every pool
               n[o] - up[o] + down[o] = current[o]                              where a replica runs now
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from kilowatt.economics.cost import ZERO, CostBreakdown
from kilowatt.performance.capacity import Calibration
from kilowatt.planner.explain import alternatives, reason_for
from kilowatt.planner.options import Option, options_for
from kilowatt.planner.snapshot import ServiceState, Snapshot
from kilowatt.planner.types import Placement, Plan, PoolUsage, ServicePlan

SOLVER_TIME_LIMIT_SECONDS = 10.0
EXACT_BELOW_OPTIONS = 64
LARGE_PROBLEM_GAP = 0.005  # 0.5%: far inside the capacity model's error, and what keeps 1000 x 10 under 1 s


def _gap(n_options: int) -> float:
    """Prove optimality on small programs; stop within 0.5% of the bound on large ones."""
    return 0.0 if n_options <= EXACT_BELOW_OPTIONS else LARGE_PROBLEM_GAP


def plan(snapshot: Snapshot, calibration: Calibration | None = None) -> Plan:
    started = time.perf_counter()
    by_service: dict[str, list[Option]] = {
        s.key: options_for(s, snapshot.pools, snapshot.at, calibration) for s in snapshot.services
    }
    options = [o for s in snapshot.services for o in by_service[s.key]]
    counts = _solve(snapshot, options)
    return _assemble(snapshot, by_service, options, counts, time.perf_counter() - started)


def _solve(snapshot: Snapshot, options: list[Option]) -> list[int]:
    services = snapshot.services
    pools = {p.name: i for i, p in enumerate(snapshot.pools)}
    service_index = {s.key: i for i, s in enumerate(services)}
    n_opt, n_svc = len(options), len(services)
    churned = [i for i, o in enumerate(options) if (_current(services[service_index[o.service]], o)) > 0]
    n_churn = len(churned)
    # Variable layout: [n (n_opt) | u (n_svc) | m (n_svc) | up (n_churn) | down (n_churn)]
    u0, m0, up0 = n_opt, n_opt + n_svc, n_opt + 2 * n_svc
    down0 = up0 + n_churn
    n_var = down0 + n_churn
    if n_var == 0:
        return []

    cost = np.zeros(n_var)
    churn_cost = np.zeros(n_opt)
    churned_set = set(churned)
    for i, o in enumerate(options):
        replica = o.planned_cost.total_usd_per_hour
        churn_cost[i] = snapshot.churn_hours * replica
        # A new replica where none runs now pays churn once; where some run, up/down variables charge it.
        cost[i] = replica + (0.0 if i in churned_set else churn_cost[i])
    worst = max((o.usd_per_rps_hour for o in options), default=1.0)
    worst_replica = max((o.planned_cost.total_usd_per_hour for o in options), default=1.0)
    cost[u0:m0] = 1000.0 * (worst + 1.0)  # per unmet req/s: dearer than any way of serving it
    cost[m0:up0] = 1000.0 * (worst_replica + 1.0)  # per replica below the floor
    for j, i in enumerate(churned):
        cost[up0 + j] = churn_cost[i]
        cost[down0 + j] = churn_cost[i]

    rows, cols, vals, lower, upper = [], [], [], [], []
    by_service: list[list[int]] = [[] for _ in services]
    by_pool: list[list[int]] = [[] for _ in snapshot.pools]
    for i, o in enumerate(options):
        by_service[service_index[o.service]].append(i)
        by_pool[pools[o.pool.name]].append(i)
    row = 0
    # Demand coverage and replica bounds, per service.
    for s_i, s in enumerate(services):
        for i in by_service[s_i]:
            rows += [row, row + 1, row + 2]
            cols += [i, i, i]
            vals += [options[i].capacity_rps, 1.0, 1.0]
        rows.append(row), cols.append(u0 + s_i), vals.append(1.0)
        lower.append(s.target_rps), upper.append(np.inf)
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

    matrix = coo_matrix((vals, (rows, cols)), shape=(row, n_var)).tocsr()
    integrality = np.zeros(n_var)
    integrality[:n_opt] = 1
    var_upper = np.full(n_var, np.inf)
    for i, o in enumerate(options):
        s = services[service_index[o.service]]
        var_upper[i] = min(s.max_replicas, o.pool.gpus_max // o.tensor_parallel)
    result = milp(
        cost,
        constraints=LinearConstraint(matrix, np.array(lower), np.array(upper)),
        integrality=integrality,
        bounds=Bounds(np.zeros(n_var), var_upper),
        options={"time_limit": SOLVER_TIME_LIMIT_SECONDS, "mip_rel_gap": _gap(n_opt)},
    )
    if result.x is None:
        # HiGHS found no integer point in time: keep what runs now rather than guess.
        return [_current(services[service_index[o.service]], o) for o in options]
    return [int(round(x)) for x in result.x[:n_opt]]


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
        capacity = sum(p.replicas * p.capacity_rps for p in placement)
        unmet = max(0.0, s.target_rps - capacity)
        binding = None
        replicas = sum(p.replicas for p in placement)
        if unmet > 1e-6 * max(1.0, s.target_rps) or replicas < min(s.floor_replicas, s.max_replicas):
            binding = _binding(s, by_service[s.key], replicas, used, snapshot)
            problems.append(f"{binding}; SLO at risk for {s.key}")
        alts = alternatives(s, by_service[s.key], snapshot.at)
        reason, next_best = reason_for(s, placement, cost, alts, binding)
        planned = sum(o.planned_cost.total_usd_per_hour * n for o, n in chosen)
        service_plans.append(ServicePlan(s.key, s.demand_rps, s.target_rps, placement, cost, reason, next_best,
                                         unmet, binding, planned))
    pools = tuple(PoolUsage(p.name, used[p.name], p.gpus_max) for p in snapshot.pools)
    return Plan(not problems, tuple(service_plans), pools, seconds, tuple(problems))


def served_cost(service: ServiceState, chosen: list[tuple[Option, int]], at) -> CostBreakdown:
    """Cost per hour with the demand shared across replicas in proportion to their capacity."""
    capacity = sum(o.capacity_rps * n for o, n in chosen)
    total = ZERO
    for o, n in chosen:
        share = service.demand_rps * (o.capacity_rps / capacity) / n if capacity > 0 else 0.0
        utilisation = share / o.saturation_rps if o.saturation_rps > 0 else 0.0
        total = total + o.pool.economics.replica_cost(o.tensor_parallel, utilisation, at).scaled(n)
    return total


def _binding(
    s: ServiceState, options: list[Option], replicas: int, used: dict[str, int], snapshot: Snapshot
) -> str:
    if not options:
        allowed = ", ".join(s.allowed_pools) if s.allowed_pools else "any pool"
        return (
            f"no allowed pool ({allowed}) fits {s.shape.parameters_billion:g}B {s.shape.dtype} within "
            f"TTFT {s.ttft_seconds * 1000:g} ms / TPOT {s.tpot_seconds * 1000:g} ms at p{s.percentile:g}"
        )
    if replicas >= s.max_replicas:
        return f"replicas.max ({s.max_replicas}) reached"
    full = []
    for o in options:
        pool = o.pool
        if used[pool.name] + o.tensor_parallel > pool.gpus_max:
            full.append(f"pool {pool.name} full: {used[pool.name]}/{pool.gpus_max} GPUs")
    return "; ".join(full) if full else "solver limit reached"


def replicas_needed(target_rps: float, capacity_rps: float) -> int:
    return math.ceil(target_rps / capacity_rps - 1e-9) if capacity_rps > 0 else 0
