"""Policies the twin compares: kilowatt itself and what a user would otherwise run.

- ``kilowatt``: the operator's Decider (demand estimate, latency correction, the global planner, the stabiliser)
  fed through the operator's MetricSource interface, every control period.
- ``hpa-<pool>``: HPA-style threshold scaling on one pool: replicas = ceil(observed req/s / target per replica),
  10 % tolerance, scale up at once, scale down to the highest recommendation of the last 300 s (the HPA's
  defaults); the target tuned as a careful user would: the highest share (90 %, 80 %, ... 30 %) of what one replica
  serves within the SLO that keeps 99 % of requests within it over a calibration hour (the trace's busiest).
- ``static-peak``: the planner's cheapest mix for the trace's peak minute (plus burst headroom), all day.
- ``melange``: Mélange-style static optimum (Griggs et al., 2024): requests bucketed by prompt and output length,
  an integer program choosing GPUs per type and which share of each bucket each type serves, sized for the
  peak; requests are routed by bucket.
- ``keda``: what llm-d recommends since its variant autoscaler was deprecated: one KEDA ScaledObject per GPU
  type, each scaling its pool on the p90 TTFT and TPOT its own replicas show, relative to the SLO, with a
  hysteresis band (up above 0.55, down below 0.40) and no cost preference between GPU types; the HPA's
  defaults underneath (scale up by at most max(100 %, 4 pods) per period, down to the highest recommendation of
  the last 300 s).
- ``lower-bound``: perfect knowledge of each period's true arrival rate, no start-up delay, no headroom, the
  planner's cheapest integer plan every period — the floor for the cost of any policy on this model.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from kilowatt.api.v1alpha1 import AcceleratorPool, InferenceService, ScalingMode
from kilowatt.decide import Decider, ServiceInput
from kilowatt.metrics.source import Observations, ServiceObservation, ServiceRef, Topology
from kilowatt.performance import TokenMix
from kilowatt.performance.lengths import quantiles_of
from kilowatt.planner import PLANNER_BUDGET_SECONDS, Snapshot, plan
from kilowatt.performance.slo_capacity import CurveBook
from kilowatt.planner.options import CapacityTable, replica_capacity
from kilowatt.state import service_state
from kilowatt.twin.dataplane import DataPlane, SimulatedMetrics
from kilowatt.twin.workload import Workload

Desired = dict[str, tuple[int, int]]  # pool -> (replicas, tensor-parallel degree)
POLICIES = ("kilowatt", "hpa-h100", "hpa-rtx4090", "static-peak", "melange", "keda", "lower-bound")


class PolicyUnavailable(ValueError):
    """A baseline that cannot be set up for this service and these pools (an HPA on a pool where no replica meets
    the SLO): the comparison goes on without it and says why."""


class Policy:
    name = "policy"
    startup_override_seconds: float | None = None

    def bind(self, plane: DataPlane) -> None:
        self.plane = plane

    def decide(self, initial_rps: float | None = None) -> Desired:
        raise NotImplementedError


class KilowattPolicy(Policy):
    name = "kilowatt"

    def __init__(self, service: InferenceService, pools: list[AcceleratorPool], price_queries: dict[str, str],
                 planner_budget_seconds: float = PLANNER_BUDGET_SECONDS) -> None:
        self.service = service
        self.pools = {p.name: p for p in pools}
        self.price_queries = price_queries
        self.decider = Decider(ScalingMode.ACTIVE, planner_budget_seconds)
        self.last_reason = ""
        self.decisions = 0

    def bind(self, plane: DataPlane) -> None:
        super().bind(plane)
        self.metrics = SimulatedMetrics(plane, self.price_queries)
        # As the operator plans (its Decider's capacity setting, whatever the run's --capacity says for the other
        # policies); the curves are the run's (the same engine, measured once), without a measuring budget so a
        # run is deterministic.
        self.decider.capacity = CapacityTable(self.decider.capacity.calibration, engine=self.decider.capacity.engine,
                                              curves=plane.capacity.curves)

    def decide(self, initial_rps: float | None = None) -> Desired:
        plane, svc = self.plane, self.service
        obs = self.metrics.observe([ServiceRef.of(svc)], Topology(), list(self.price_queries))
        if initial_rps is not None:
            # Before the run: the service was already serving this rate (the same warm start every policy gets).
            obs = Observations(True, services={svc.key: ServiceObservation(
                initial_rps, plane.mix.input_tokens, plane.mix.output_tokens, None, None, None)})
        pool_states = {name: plane.pool_state(name) for name in self.pools}
        item = ServiceInput.of(svc, plane.placement(), obs.services.get(svc.key) if obs.available else None)
        decided = self.decider.decide(plane.at(plane.now), plane.now, [item], self.pools, pool_states)
        d = decided.decisions[svc.key]
        if d.changed:
            self.decisions += 1
            self.last_reason = d.reason
        return {p: (n, d.tensor_parallel.get(p, 1)) for p, n in d.desired.items()}


def best_degree(plane: DataPlane, pool: str, mix: TokenMix | None = None) -> tuple[int, float, float]:
    """(degree, req/s within the SLO, saturation) of the cheapest-per-req/s degree a replica can take on ``pool``."""
    state = service_state(plane.service, 0.0, mix or plane.mix)
    ps = plane.pool_state(pool)
    best = (1, 0.0, 0.0)
    for k in ps.tensor_parallel_degrees:
        within, saturation = replica_capacity(state, ps, k, plane.capacity)
        if within > 0 and (best[1] == 0 or within / k > best[1] / best[0]):
            best = (k, within, saturation)
    return best


HPA_TARGET_FRACTIONS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
HPA_CALIBRATION_SECONDS = 3600.0
HPA_CALIBRATION_ATTAINMENT = 0.99
HPA_DEFAULT_TARGET_FRACTION = 0.8


class HpaPolicy(Policy):
    def __init__(self, pool: str, target_fraction: float | None = None, tolerance: float = 0.1,
                 down_window_seconds: float = 300.0) -> None:
        """``target_fraction`` None: to be tuned on a calibration hour (``kilowatt.twin.simulate.tune_hpa``)."""
        self.pool = pool
        self.name = f"hpa-{pool}"
        self.target_fraction, self.tolerance, self.down_window = target_fraction, tolerance, down_window_seconds
        self.history: deque[tuple[float, int]] = deque()
        self.detail = ""

    def bind(self, plane: DataPlane) -> None:
        super().bind(plane)
        if self.pool not in plane.pools:
            raise ValueError(f"policy {self.name}: no pool named {self.pool!r} (pools: {', '.join(plane.pools)})")
        self.degree, within, _ = best_degree(plane, self.pool)
        if within <= 0:
            raise PolicyUnavailable(f"policy {self.name}: {plane.service.key} cannot meet its SLO on pool "
                                    f"{self.pool} at any tensor-parallel degree")
        if self.target_fraction is None:  # untuned (the twin's runner tunes it first: simulate.tune_hpa)
            self.target_fraction = HPA_DEFAULT_TARGET_FRACTION
        self.target_rps = self.target_fraction * within
        self.limit = min(plane.service.spec.replicas.max, (plane.pool_state(self.pool).gpus_max // self.degree))

    def decide(self, initial_rps: float | None = None) -> Desired:
        plane = self.plane
        current = plane.placement().get(self.pool)
        n = current.replicas if current else 0
        if initial_rps is not None:
            rps = initial_rps
        else:
            data = SimulatedMetrics(plane).observe([ServiceRef.of(plane.service)], Topology(), []).services.get(plane.service.key)
            if data is None:
                return {self.pool: (max(n, 1), self.degree)}
            rps = data.requests_per_second
        wanted = math.ceil(rps / self.target_rps - 1e-9)
        if n and abs(rps / (n * self.target_rps) - 1.0) <= self.tolerance:
            wanted = n
        floor = max(plane.service.spec.replicas.min, 1)
        wanted = min(max(wanted, floor), self.limit)
        self.history.append((plane.now, wanted))
        while self.history and self.history[0][0] < plane.now - self.down_window:
            self.history.popleft()
        if wanted < n:
            wanted = min(n, max(w for _, w in self.history))
        return {self.pool: (wanted, self.degree)}


KEDA_PERCENTILE = 90.0
KEDA_UP_ABOVE = 0.55  # of the SLO: p90 latency / target
KEDA_DOWN_BELOW = 0.40


class KedaPolicy(Policy):
    """Each GPU type scaled on its own replicas' p90 latency against the SLO, with a hysteresis band."""

    name = "keda"

    def __init__(self, down_window_seconds: float = 300.0) -> None:
        self.down_window = down_window_seconds
        self.history: dict[str, deque[tuple[float, int]]] = {}

    def bind(self, plane: DataPlane) -> None:
        super().bind(plane)
        self.degree, self.limit = {}, {}
        for pool in plane.pools:
            k, within, _ = best_degree(plane, pool)
            if within > 0:  # a variant is deployed only where a replica can meet the SLO at all
                self.degree[pool] = k
                self.limit[pool] = min(plane.service.spec.replicas.max, plane.pool_state(pool).gpus_max // k)
                self.history[pool] = deque()
        if not self.degree:
            raise ValueError(f"policy keda: {plane.service.key} cannot meet its SLO on any pool")
        self.floor = max(plane.service.spec.replicas.min, 1)
        self.ref = replace(ServiceRef.of(plane.service), percentile=KEDA_PERCENTILE)

    def decide(self, initial_rps: float | None = None) -> Desired:
        plane = self.plane
        placement = plane.placement()
        if initial_rps is not None:
            # Before the run: the traffic split evenly over the variants, each sized for its share at 80 %.
            share = initial_rps / len(self.degree)
            out = {}
            for pool, k in self.degree.items():
                within = best_degree(plane, pool)[1]
                out[pool] = (min(self.limit[pool], max(self.floor, math.ceil(share / (0.8 * within)))), k)
            return out
        data = SimulatedMetrics(plane).observe([self.ref], Topology(), []).services.get(plane.service.key)
        slo = plane.service.spec.slo
        out = {}
        for pool, k in self.degree.items():
            n = placement[pool].replicas if pool in placement else 0
            wanted = max(n, self.floor)
            seen = data.by_pool.get(pool) if data is not None else None
            if seen is not None and seen.ttft_p_seconds is not None:
                ratio = max(seen.ttft_p_seconds / (slo.ttft_milliseconds / 1000.0),
                            (seen.tpot_p_seconds or 0.0) / (slo.tpot_milliseconds / 1000.0))
                if ratio > KEDA_UP_ABOVE:
                    wanted = max(n + 1, math.ceil(n * ratio / KEDA_UP_ABOVE - 1e-9))
                    wanted = min(wanted, max(2 * n, n + 4))  # the HPA's default scale-up policy per period
                elif ratio < KEDA_DOWN_BELOW:
                    wanted = math.ceil(n * ratio / KEDA_DOWN_BELOW - 1e-9)
            wanted = min(max(wanted, self.floor), self.limit[pool])
            history = self.history[pool]
            history.append((plane.now, wanted))
            while history and history[0][0] < plane.now - self.down_window:
                history.popleft()
            if wanted < n:
                wanted = min(n, max(w for _, w in history))
            out[pool] = (wanted, k)
        return out


def calibration_hour(workload: Workload) -> Workload:
    """The workload's busiest hour (all of it when it is an hour or shorter), starting at zero."""
    if workload.duration_s <= HPA_CALIBRATION_SECONDS:
        return workload
    hourly = workload.rate_per_window(HPA_CALIBRATION_SECONDS)
    start = float(np.argmax(hourly[: int(workload.duration_s // HPA_CALIBRATION_SECONDS)])) \
        * HPA_CALIBRATION_SECONDS
    lo, hi = np.searchsorted(workload.arrival_s, [start, start + HPA_CALIBRATION_SECONDS])
    return Workload(workload.arrival_s[lo:hi] - start, workload.input_tokens[lo:hi], workload.output_tokens[lo:hi],
                    HPA_CALIBRATION_SECONDS, f"{workload.label} (busiest hour)")


def _peak_rps(plane: DataPlane, window_s: float = 60.0) -> float:
    rates = plane.workload.rate_per_window(window_s)
    return float(rates.max()) if len(rates) else 0.0


def _plan_for(plane: DataPlane, rps: float, at_s: float, headroom: float | None = None,
              percentile: float | None = None, capacity: CapacityTable | None = None) -> Desired:
    state = service_state(plane.service, rps, plane.mix)
    if headroom is not None:
        state = replace(state, burst_headroom=headroom)
    if percentile is not None:
        state = replace(state, percentile=percentile)
    pools = tuple(plane.pool_state(p) for p in plane.pools)
    result = plan(Snapshot(plane.at(at_s), pools, (state,)), capacity or plane.capacity, exact=True,
                  time_limit_seconds=5.0)
    placed = {p.pool: (p.replicas, p.tensor_parallel) for p in result.service(state.key).placement}
    return {p: placed.get(p, (0, 1)) for p in plane.pools}


class StaticPeakPolicy(Policy):
    name = "static-peak"

    def bind(self, plane: DataPlane) -> None:
        super().bind(plane)
        self.fixed = _plan_for(plane, _peak_rps(plane), plane.workload.duration_s / 2)

    def decide(self, initial_rps: float | None = None) -> Desired:
        return self.fixed


LOWER_BOUND_PERCENTILE = 99.0


class LowerBoundPolicy(Policy):
    name = "lower-bound"
    startup_override_seconds = 0.0

    def __init__(self, period_seconds: float) -> None:
        self.period = period_seconds

    def bind(self, plane: DataPlane) -> None:
        super().bind(plane)
        # The capacity the twin really delivers: measured on its engine for the trace's own length distribution
        # (no grid: interpolating between grid mixes overstates capacity where a prompt length's TTFT crosses the
        # SLO between two grid points, as the conversation trace's ~4,100-token prompts do on an RTX 4090).
        self.capacity = CapacityTable(plane.capacity.calibration, engine=True,
                                      curves=CurveBook.for_twin(grid=False))

    def decide(self, initial_rps: float | None = None) -> Desired:
        plane = self.plane
        w = plane.workload
        lo, hi = np.searchsorted(w.arrival_s, [plane.now, plane.now + self.period])
        # Sized so that 99 % of requests meet the SLO (the attainment it must reach), not the SLO's own p95: a
        # placement whose every replica keeps its p99 TTFT and TPOT within the targets serves >= 99 % within.
        return _plan_for(plane, (hi - lo) / self.period, plane.now + self.period / 2, headroom=0.0,
                         percentile=LOWER_BOUND_PERCENTILE, capacity=self.capacity)


INPUT_EDGES = (0, 256, 512, 1024, 2048, 4096, math.inf)
OUTPUT_EDGES = (0, 64, 256, 1024, math.inf)


class MelangePolicy(Policy):
    name = "melange"

    def bind(self, plane: DataPlane) -> None:
        super().bind(plane)
        w = plane.workload
        ib = np.searchsorted(INPUT_EDGES, w.input_tokens, side="right") - 1
        ob = np.searchsorted(OUTPUT_EDGES, w.output_tokens, side="right") - 1
        self.bucket = ib * (len(OUTPUT_EDGES) - 1) + ob
        buckets = sorted(set(self.bucket.tolist()))
        peak = _peak_rps(plane) * (1.0 + plane.service.spec.scaling.burst_headroom)
        shares = {b: float(np.mean(self.bucket == b)) for b in buckets}
        pools = list(plane.pools)
        at = plane.at(w.duration_s / 2)
        # Per (bucket, pool): req/s one replica serves within the SLO for that bucket's own lengths (means and
        # quantiles: a bucket is narrow, and the default spread would make Mélange size for tails it never sees).
        cap = np.zeros((len(buckets), len(pools)))
        degree = {}
        for j, pool in enumerate(pools):
            k, _, _ = best_degree(plane, pool)
            degree[pool] = k
            for i, b in enumerate(buckets):
                mask = self.bucket == b
                mix = TokenMix(float(w.input_tokens[mask].mean()), float(w.output_tokens[mask].mean()),
                               quantiles_of(w.input_tokens[mask]), quantiles_of(w.output_tokens[mask]))
                cap[i, j] = replica_capacity(service_state(plane.service, 0.0, mix), plane.pool_state(pool), k,
                                             plane.capacity)[0]
        # What a replica adds (an owned GPU's hardware is paid either way), as kilowatt's planner prices it.
        cost = np.array([plane.pool_state(p).economics.marginal_cost(degree[p], 0.8, at).objective_usd_per_hour
                         for p in pools])
        nb, npool = len(buckets), len(pools)
        # Variables: n[pool] (integer replicas), x[bucket, pool] (share of the bucket served there).
        c = np.concatenate([cost, np.zeros(nb * npool)])
        rows, lo, hi = [], [], []
        for i in range(nb):  # every bucket fully served
            row = np.zeros(npool + nb * npool)
            row[npool + i * npool: npool + (i + 1) * npool] = 1.0
            rows.append(row), lo.append(1.0), hi.append(1.0)
        for j in range(npool):  # load on a pool within its replicas' capacity
            row = np.zeros(npool + nb * npool)
            row[j] = -1.0
            for i, b in enumerate(buckets):
                row[npool + i * npool + j] = peak * shares[b] / cap[i, j] if cap[i, j] > 0 else 0.0
            rows.append(row), lo.append(-np.inf), hi.append(0.0)
        upper = np.concatenate([[plane.pool_state(p).gpus_max // degree[p] for p in pools],
                                [1.0 if cap[i, j] > 0 else 0.0 for i in range(nb) for j in range(npool)]])
        result = milp(c, constraints=LinearConstraint(np.array(rows), lo, hi),
                      integrality=np.concatenate([np.ones(npool), np.zeros(nb * npool)]),
                      bounds=Bounds(np.zeros(len(c)), upper))
        if result.x is None:
            raise ValueError(f"melange: no static mix serves the peak of {peak:.1f} req/s ({result.message})")
        n = np.round(result.x[:npool]).astype(int)
        share = result.x[npool:].reshape(nb, npool)
        self.fixed = {p: (int(n[j]), degree[p]) for j, p in enumerate(pools)}
        self.route_share = {b: share[i] / max(share[i].sum(), 1e-12) for i, b in enumerate(buckets)}
        self.pools = pools
        plane.router = self.route

    def route(self, segment: np.ndarray, serving: list, rng: np.random.Generator) -> np.ndarray:
        """Each request to a pool drawn by its bucket's shares, then to one of that pool's serving replicas."""
        by_pool: dict[int, list[int]] = {}
        for pos, r in enumerate(serving):
            by_pool.setdefault(r.pool_index, []).append(pos)
        everyone = np.arange(len(serving))
        buckets = self.bucket[segment]
        pool_of = np.empty(len(segment), dtype=np.int64)
        for b in np.unique(buckets):
            mask = buckets == b
            pool_of[mask] = rng.choice(len(self.pools), size=int(mask.sum()), p=self.route_share[int(b)])
        out = np.empty(len(segment), dtype=np.int64)
        for j, pool in enumerate(self.pools):
            mask = pool_of == j
            if mask.any():
                choices = np.asarray(by_pool.get(self.plane.pool_index[pool]) or everyone)
                out[mask] = choices[rng.integers(len(choices), size=int(mask.sum()))]
        return out

    def decide(self, initial_rps: float | None = None) -> Desired:
        return self.fixed


def make_policy(name: str, service: InferenceService, pools: list[AcceleratorPool], price_queries: dict[str, str],
                period_seconds: float) -> Policy:
    if name == "kilowatt":
        return KilowattPolicy(service, pools, price_queries)
    if name.startswith("hpa-"):
        return HpaPolicy(name.removeprefix("hpa-"))
    if name == "static-peak":
        return StaticPeakPolicy()
    if name == "melange":
        return MelangePolicy()
    if name == "keda":
        return KedaPolicy()
    if name == "lower-bound":
        return LowerBoundPolicy(period_seconds)
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)} (hpa-<pool> for any pool)")
