"""A start for large programs: each service's whole-replica placements ("patterns") priced against the pools.

The compact relaxation (fractional replicas per option) knows nothing of whole replicas: rounding it up where
the pools bind leaves hundreds of req/s unmet at 1,000 services (benchmarks/RESULTS.md). Here each column of the
master LP is one integer placement of one service — e.g. 3 replicas on pool A, or 2 on A and 1 on B, or 2 on A
with the rest unmet — priced exactly as the integer program prices it (replicas, churn, unmet demand, replicas
below the floor, equal-share worth). Only the pools couple the services:

    minimise   sum_q cost[q] x[q]
    subject to sum_{q of s} x[q] = 1                  for every service s
               sum_q gpus[q, p] x[q] <= gpus[p]        for every pool p

A basic solution has at most one fractional service per pool row, so rounding it changes little: the master is
Dantzig-Wolfe's reformulation, restricted to the patterns enumerated below, and grown by column generation
(each round adds, per service, the pattern of least reduced cost under the pools' duals).

Patterns enumerated per service (all vectorised over every option of every service at once): nothing; the
replicas it runs now; one option at ceil, floor, floor-1, floor-2 and 1 replica of the target (and its floor of
replicas); two options, floor or floor-1 on the first and the rest (ceil or floor) on the second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np
from scipy.sparse import coo_matrix, csc_matrix, csr_matrix, vstack

ROUNDS_AT_MOST = 60  # column-generation rounds (1,000 services x 10 pools converge in ~7 from the relaxation's duals)
SPLIT_SECONDS = 0.05  # for settling the split services together


def quiet_highs(seconds: float | None = None) -> highspy.Highs:
    """A HiGHS instance as the planner runs every one: silent, one thread (the operator shares its cores),
    within ``seconds`` where given."""
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    if seconds is not None:
        h.setOptionValue("time_limit", float(seconds))
    return h


@dataclass(frozen=True)
class Priced:
    """What the master prices a service's options with, per option (aligned with the program's options)."""

    service: np.ndarray  # service index of each option; options of a service are contiguous
    capacity_rps: np.ndarray
    gpus: np.ndarray  # GPUs per replica (tensor-parallel degree)
    pool: np.ndarray  # pool index
    replica_usd_per_hour: np.ndarray  # objective cost of one replica, churn excluded
    churn_usd: np.ndarray  # charged per replica started or stopped
    current: np.ndarray  # replicas running now with this option
    target_rps: np.ndarray  # per service
    floor_replicas: np.ndarray  # per service
    max_replicas: np.ndarray  # per service
    equal_share: np.ndarray  # per service, bool
    unmet_usd_per_rps: float
    short_usd_per_replica: float
    pool_gpus: np.ndarray  # per pool


def pattern_start(p: Priced, deadline: float, gpu_price: np.ndarray | None = None) -> np.ndarray | None:
    """Whole replica counts per option from the master LP over patterns, rounded; None where the master does not
    solve (the caller falls back to rounding the compact relaxation)."""
    table = _enumerate(p)
    n_svc, n_pool = len(p.target_rps), len(p.pool_gpus)
    # Start: per service, its cheapest pattern with the pools free and at ``gpu_price`` (the compact relaxation's
    # duals: close to the master's own), and "nothing" (always feasible).
    chosen = set(_cheapest(table, np.zeros(n_pool), np.zeros(n_svc), n_svc)) | set(table.nothing.tolist())
    if gpu_price is not None:
        chosen |= set(_cheapest(table, gpu_price, np.zeros(n_svc), n_svc))
    h = quiet_highs()
    lp = highspy.HighsLp()
    lp.num_row_ = n_svc + n_pool
    lp.row_lower_ = np.concatenate([np.ones(n_svc), np.full(n_pool, -highspy.kHighsInf)])
    lp.row_upper_ = np.concatenate([np.ones(n_svc), p.pool_gpus.astype(float)])
    h.passModel(lp)
    columns: list[int] = []
    _add(h, table, sorted(chosen), n_svc, columns)
    for round_ in range(ROUNDS_AT_MOST):
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        if time.perf_counter() > deadline or round_ == ROUNDS_AT_MOST - 1:
            break
        dual = np.asarray(h.getSolution().row_dual)
        gpu_price = np.maximum(0.0, -dual[n_svc:])
        entering = [q for q in _cheapest(table, gpu_price, dual[:n_svc], n_svc, reduced=True) if q not in chosen]
        if not entering:
            break
        chosen.update(entering)
        _add(h, table, entering, n_svc, columns)
    x = np.asarray(h.getSolution().col_value)
    return _round(p, table, np.asarray(columns), x)


@dataclass
class _Table:
    service: np.ndarray  # per pattern
    cost: np.ndarray
    gpus: csr_matrix  # patterns x pools
    counts: csr_matrix  # patterns x options
    nothing: np.ndarray  # the "nothing" pattern of each service


def _enumerate(p: Priced) -> _Table:
    n_opt, n_svc = len(p.service), len(p.target_rps)
    cap, svc = np.maximum(p.capacity_rps, 1e-12), p.service
    target = p.target_rps[svc]
    maxr = p.max_replicas[svc]
    floor = np.floor(target / cap + 1e-9).astype(np.int64)
    ceil = np.ceil(target / cap - 1e-9).astype(np.int64)
    # One option.
    singles = [ceil, floor, floor - 1, floor - 2, np.ones(n_opt, np.int64), np.maximum(floor, p.floor_replicas[svc])]
    a1 = np.tile(np.arange(n_opt), len(singles))
    n1 = np.concatenate(singles)
    keep = (n1 >= 1) & (n1 <= maxr[a1 % n_opt])
    a1, n1 = a1[keep], n1[keep]
    # Two options of one service: a at floor or floor-1, b covering the rest (ceil, or floor: the rest partly).
    sizes = np.bincount(svc, minlength=n_svc)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    reps = sizes[svc]
    a = np.repeat(np.arange(n_opt), reps)
    within = np.arange(len(a)) - np.repeat(np.cumsum(reps) - reps, reps)
    b = starts[svc[a]] + within
    other = a != b
    a, b = a[other], b[other]
    pairs = []
    for na in (floor[a], floor[a] - 1):
        rest = p.target_rps[svc[a]] - na * cap[a]
        for nb in (np.ceil(rest / cap[b] - 1e-9), np.floor(rest / cap[b] + 1e-9)):
            pairs.append((a, na, b, nb.astype(np.int64)))
    a2 = np.concatenate([q[0] for q in pairs])
    na2 = np.concatenate([q[1] for q in pairs])
    b2 = np.concatenate([q[2] for q in pairs])
    nb2 = np.concatenate([q[3] for q in pairs])
    keep = (na2 >= 1) & (nb2 >= 1) & (na2 + nb2 <= p.max_replicas[svc[a2]])
    a2, na2, b2, nb2 = a2[keep], na2[keep], b2[keep], nb2[keep]
    # Patterns as sparse rows over options: singles, pairs, nothing, what runs now.
    n_single, n_pair = len(a1), len(a2)
    rows = [np.arange(n_single), n_single + np.arange(n_pair), n_single + np.arange(n_pair)]
    cols = [a1, a2, b2]
    vals = [n1, na2, nb2]
    pattern_service = [svc[a1], svc[a2], np.arange(n_svc)]
    base = n_single + n_pair + n_svc
    running = np.flatnonzero(p.current > 0)
    now_total = np.bincount(svc[running], weights=p.current[running], minlength=n_svc)
    running = running[now_total[svc[running]] <= p.max_replicas[svc[running]]]
    now_service = np.unique(svc[running])
    if len(now_service):
        where = np.searchsorted(now_service, svc[running])
        rows.append(base + where), cols.append(running), vals.append(p.current[running])
        pattern_service.append(now_service)
    n_pat = base + len(now_service)
    counts = coo_matrix((np.concatenate(vals).astype(float), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(n_pat, n_opt)).tocsr()
    service = np.concatenate(pattern_service)
    # Cost: replicas, churn against what runs now, unmet demand, replicas below the floor.
    replicas = np.asarray(counts.sum(axis=1)).ravel()
    weighted = counts @ cap
    slowest = np.full(n_pat, np.inf)
    entries = counts.tocoo()
    np.minimum.at(slowest, entries.row, cap[entries.col])
    worth = np.where(p.equal_share[service], replicas * np.where(np.isfinite(slowest), slowest, 0.0), weighted)
    churn_all_stopped = np.bincount(svc, weights=p.churn_usd * p.current, minlength=n_svc)
    churn = churn_all_stopped[service] + np.bincount(
        entries.row, weights=p.churn_usd[entries.col] * (np.abs(entries.data - p.current[entries.col])
                                                         - p.current[entries.col]), minlength=n_pat)
    cost = (counts @ p.replica_usd_per_hour + churn
            + p.unmet_usd_per_rps * np.maximum(0.0, p.target_rps[service] - worth)
            + p.short_usd_per_replica * np.maximum(0.0, np.minimum(p.floor_replicas, p.max_replicas)[service]
                                                   - replicas))
    gpus = coo_matrix((entries.data * p.gpus[entries.col], (entries.row, p.pool[entries.col])),
                      shape=(n_pat, len(p.pool_gpus))).tocsr()
    return _Table(service, cost, gpus, counts, n_single + n_pair + np.arange(n_svc))


def _cheapest(table: _Table, gpu_price: np.ndarray, service_dual: np.ndarray, n_svc: int,
              reduced: bool = False) -> list[int]:
    """Per service, its pattern of least cost with each pool GPU priced at ``gpu_price``; with ``reduced``, only
    those whose reduced cost (less the service's convexity dual) is negative."""
    priced = table.cost + table.gpus @ gpu_price
    best = np.full(n_svc, np.inf)
    np.minimum.at(best, table.service, priced)
    at_best = np.flatnonzero(priced <= best[table.service] + 1e-9)
    _, first = np.unique(table.service[at_best], return_index=True)
    winners = at_best[first]
    if reduced:
        scale = np.maximum(1.0, np.abs(service_dual[table.service[winners]]))
        winners = winners[priced[winners] - service_dual[table.service[winners]] < -1e-7 * scale]
    return winners.tolist()


def _columns(table: _Table, patterns: np.ndarray, row: np.ndarray, n_rows: int) -> csc_matrix:
    """The master's columns for ``patterns``: 1 in the convexity row ``row[service]`` of each one's service (of
    ``n_rows``), then the GPUs it takes in each pool's row."""
    convexity = coo_matrix((np.ones(len(patterns)), (row[table.service[patterns]], np.arange(len(patterns)))),
                           shape=(n_rows, len(patterns)))
    return vstack([convexity, table.gpus[patterns].T]).tocsc()


def _add(h: highspy.Highs, table: _Table, patterns: list[int], n_svc: int, columns: list[int]) -> None:
    if not patterns:
        return
    q = np.asarray(patterns)
    block = _columns(table, q, np.arange(n_svc), n_svc)
    h.addCols(len(q), table.cost[q], np.zeros(len(q)), np.full(len(q), highspy.kHighsInf), block.nnz,
              block.indptr[:-1].astype(np.int32), block.indices.astype(np.int32), block.data)
    columns.extend(q.tolist())


def _round(p: Priced, table: _Table, columns: np.ndarray, x: np.ndarray) -> np.ndarray:
    """One pattern per service: where the master is whole, its pattern; the few split services (at most one per
    pool row) are settled together by a small integer program over every pattern they have, within the GPUs the
    whole ones leave."""
    n_svc, n_pool = len(p.target_rps), len(p.pool_gpus)
    service = table.service[columns]
    whole = x >= 1.0 - 1e-6
    pick = np.full(n_svc, -1, dtype=np.int64)
    pick[service[whole]] = columns[whole]
    room = p.pool_gpus.astype(float) - np.asarray(table.gpus[pick[pick >= 0]].sum(axis=0)).ravel()
    split = np.flatnonzero(pick < 0)
    if len(split):
        mine = np.flatnonzero(np.isin(table.service, split))
        row = np.zeros(n_svc, dtype=np.int64)
        row[split] = np.arange(len(split))
        matrix = _columns(table, mine, row, len(split))
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = len(mine), len(split) + n_pool
        lp.col_cost_ = table.cost[mine]
        lp.col_lower_, lp.col_upper_ = np.zeros(len(mine)), np.ones(len(mine))
        lp.row_lower_ = np.concatenate([np.ones(len(split)), np.full(n_pool, -highspy.kHighsInf)])
        lp.row_upper_ = np.concatenate([np.ones(len(split)), room])
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = matrix.indptr, matrix.indices, matrix.data
        lp.integrality_ = [highspy.HighsVarType.kInteger] * len(mine)
        h = quiet_highs(SPLIT_SECONDS)
        h.passModel(lp)
        h.run()
        sol = h.getSolution()
        if sol.value_valid and h.getInfo().primal_solution_status == 2:
            chosen = mine[np.asarray(sol.col_value) > 0.5]
            pick[table.service[chosen]] = chosen
        pick[pick < 0] = table.nothing[pick < 0]
    return np.asarray(table.counts[pick].sum(axis=0)).ravel().round().astype(np.int64)
