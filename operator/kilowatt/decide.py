"""One control period's decision, with no Kubernetes in it: observations -> demand -> plan -> stabilise.

The operator's control loop (kilowatt.controller.loop) gathers the inputs from the API server and Prometheus and
applies the result; the twin (kilowatt.twin) gathers them from its simulated data plane. Both call exactly this,
so a result in the twin is a result of the shipped decision code.

Missing metrics are a state: a service without data that has replicas keeps its placement (never scaled down,
never to zero); a service without data and without replicas starts at its floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from kilowatt.api.v1alpha1 import AcceleratorPool, InferenceService, ScalingMode
from kilowatt.demand import DemandEstimator
from kilowatt.metrics import Observations, ServiceObservation
from kilowatt.performance import CapacityModel, TokenMix
from kilowatt.performance.correction import LatencyCorrection
from kilowatt.planner import Snapshot, Stabiliser, plan
from kilowatt.planner.options import replica_capacity
from kilowatt.planner.snapshot import CurrentPlacement, PoolState
from kilowatt.planner.stabiliser import PoolReplicas, ScalingPolicy
from kilowatt.planner.types import Plan
from kilowatt.state import pool_state, service_state


BACKLOG_SECONDS = 60.0


@dataclass(frozen=True)
class Decision:
    """What one service should run after this period, and why."""

    desired: dict[str, int]  # pool -> replicas
    tensor_parallel: dict[str, int]  # pool -> degree
    reason: str
    binding: str | None  # the constraint that left demand unmet, if any
    changed: bool  # desired differs from what runs now
    held: bool  # no decision was made (mode Off, or no metrics): the placement stays as it is
    demand_rps: float = 0.0


@dataclass
class PeriodDecisions:
    decisions: dict[str, Decision] = field(default_factory=dict)  # service key -> decision
    pool_states: dict[str, PoolState] = field(default_factory=dict)
    plan: Plan | None = None


@dataclass
class Decider:
    """The stateful part of deciding (demand history, latency corrections, stabiliser windows), in memory."""

    default_mode: ScalingMode = ScalingMode.ACTIVE
    planner_budget_seconds: float = 0.8
    demand: DemandEstimator = field(default_factory=DemandEstimator)
    correction: LatencyCorrection = field(default_factory=LatencyCorrection)
    stabiliser: Stabiliser = field(default_factory=Stabiliser)

    def mode(self, svc: InferenceService) -> ScalingMode:
        return svc.spec.scaling.mode if "mode" in svc.spec.scaling.model_fields_set else self.default_mode

    def forget(self, key: str) -> None:
        self.stabiliser.forget(key)
        self.demand.forget(key)

    def decide(
        self,
        now: datetime,
        clock_seconds: float,
        services: list[InferenceService],
        pools: dict[str, AcceleratorPool],
        pool_states: dict[str, PoolState],
        current: dict[str, dict[str, CurrentPlacement]],
        obs: Observations,
    ) -> PeriodDecisions:
        """``pool_states``: every pool with the GPUs kilowatt may use now and its price; ``current``: per service
        key, what runs on each pool (replicas, degree, ready)."""
        planned, held = [], []
        states = {}
        demands: dict[str, float] = {}
        for svc in services:
            key = svc.key
            mine = current.get(key, {})
            data = obs.services.get(key) if obs.available else None
            running = sum(c.replicas for c in mine.values())
            if self.mode(svc) is ScalingMode.OFF or (data is None and running > 0):
                held.append(svc)
                continue
            if data is None:
                demand, mix = 0.0, None  # nothing runs and nothing is known: start at the floor (>= 1 replica)
            else:
                lead = max((p.spec.replica_startup_seconds for p in pools.values()), default=0.0)
                # Completions understate demand when replicas fall behind: requests waiting are demand too,
                # to be served within a minute on top of the arrivals.
                rps = data.requests_per_second + (data.waiting or 0.0) / BACKLOG_SECONDS
                demand = self.demand.update(key, clock_seconds, rps, lead)
                mix = observed_mix(data)
                self._learn(svc, pools, mine, data, mix)
            demands[key] = demand
            corrections = {p: self.correction.factors(key, p) for p in pools}
            states[key] = service_state(svc, demand, mix, mine, corrections)
            planned.append(svc)

        # Held services keep their GPUs: the plan for the others works around them.
        free = _minus_held(pool_states, [current.get(s.key, {}) for s in held])
        snapshot = Snapshot(now, tuple(free.values()), tuple(states[s.key] for s in planned))
        result = plan(snapshot, time_limit_seconds=self.planner_budget_seconds)
        out = PeriodDecisions(pool_states=pool_states, plan=result)
        for svc in planned:
            sp = result.service(svc.key)
            recommended = {p.pool: p.replicas for p in sp.placement}
            tp = {p.pool: p.tensor_parallel for p in sp.placement}
            data = obs.services.get(svc.key) if obs.available else None
            out.decisions[svc.key] = self._stabilise(svc, current.get(svc.key, {}), data, recommended, tp,
                                                     sp.reason, sp.binding, clock_seconds, pools, pool_states,
                                                     demands[svc.key])
        for svc in held:
            mine = current.get(svc.key, {})
            reason = ("scaling.mode is Off: Deployments left alone" if self.mode(svc) is ScalingMode.OFF else
                      f"no metrics for {svc.key} ({obs.error or 'no series yet'}): placement held, nothing scaled down")
            out.decisions[svc.key] = Decision({p: c.replicas for p, c in mine.items()},
                                              {p: c.tensor_parallel for p, c in mine.items()}, reason, None,
                                              changed=False, held=True)
        return out

    def _learn(self, svc: InferenceService, pools: dict[str, AcceleratorPool], current: dict[str, CurrentPlacement],
               data: ServiceObservation, mix: TokenMix | None) -> None:
        """Feed observed latency per pool into the online correction (against the uncorrected model).

        Not while requests queue: latency then measures the backlog (too few replicas), not how fast the GPUs
        are, and learning it would make every replica look slow long after the backlog is gone."""
        ready = sum(c.ready for c in current.values())
        if data.waiting is not None and data.waiting > max(1.0, float(ready)):
            return
        state = service_state(svc, 0.0, mix)
        for pool_name, latency in data.by_pool.items():
            running = current.get(pool_name)
            pool = pools.get(pool_name)
            if running is None or pool is None or running.ready <= 0:
                continue
            model = CapacityModel(state.shape, pool_state(pool).gpu, running.tensor_parallel)
            per_replica = latency.requests_per_second / running.ready
            point = model.at_load(per_replica, state.mix, svc.spec.slo.percentile)
            self.correction.observe(svc.key, pool_name, per_replica, point.ttft_p_seconds, latency.ttft_p_seconds,
                                    point.tpot_p_seconds, latency.tpot_p_seconds)

    def _stabilise(self, svc, current, data, recommended, tp, reason, binding, clock_seconds, pools, pool_states,
                   demand_rps) -> Decision:
        scaling = svc.spec.scaling
        policy = ScalingPolicy(scaling.scale_up_stabilization_seconds, scaling.scale_down_stabilization_seconds,
                               scaling.max_scale_up_step, scaling.max_scale_down_step)
        state = service_state(svc, 0.0, observed_mix(data) if data else None)
        # The stabiliser counts GPUs, not replicas: a change of tensor-parallel degree (3 replicas of 4 GPUs for
        # 6 of 2) is then a change of capacity it can bound and hold, and a held count never asks a pool for
        # more GPUs than the replicas it replaces used.
        degree = {p: tp.get(p) or (current[p].tensor_parallel if p in current else 1)
                  for p in set(recommended) | set(current)}
        now_gpus = {}
        for p, c in current.items():
            k = c.tensor_parallel
            per_replica = replica_capacity(state, pool_states[p], k)[0] if p in pool_states else 0.0
            now_gpus[p] = PoolReplicas(c.replicas * k, c.ready * k, per_replica / k)
        observed_rps = data.requests_per_second if data else 0.0
        step = self.stabiliser.step(svc.key, {p: n * degree[p] for p, n in recommended.items()}, now_gpus,
                                    observed_rps, clock_seconds, policy, units=degree)
        desired = {}
        for p, gpus in step.replicas.items():
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
        tp = dict(tp)
        for p in desired:
            tp.setdefault(p, degree[p])
        changed = any(desired.get(p, 0) != (current[p].replicas if p in current else 0) for p in desired) or any(
            tp.get(p) != c.tensor_parallel and desired.get(p, 0) > 0 for p, c in current.items())
        if step.notes:
            reason = f"{reason} Held: {'; '.join(step.notes)}."
        return Decision(desired, tp, reason, binding, changed, held=False, demand_rps=demand_rps)


def observed_mix(data: ServiceObservation | None) -> TokenMix | None:
    if data is None or not data.input_tokens_mean or not data.output_tokens_mean:
        return None
    return TokenMix(max(1.0, data.input_tokens_mean), max(1.0, data.output_tokens_mean))


def _minus_held(pool_states: dict[str, PoolState], held: list[dict[str, CurrentPlacement]]) -> dict[str, PoolState]:
    taken: dict[str, int] = {}
    for current in held:
        for p, c in current.items():
            taken[p] = taken.get(p, 0) + c.replicas * c.tensor_parallel
    return {name: replace(s, gpus_max=max(0, s.gpus_max - taken.get(name, 0))) for name, s in pool_states.items()}
