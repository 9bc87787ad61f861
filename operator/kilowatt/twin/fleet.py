"""A fleet in the twin: several services, each with its own traffic, sharing the same GPU pools.

Each service runs on its own data plane (its replicas, its routing, its requests: kilowatt.twin.dataplane); the
planes share the pools' GPUs — a replica a service asks for when the others hold the pool stays Pending, neither
serving nor paid for, as on the cluster — and the fleet pays owned pools' hardware and idle power once. Every
policy decides once per control period for every service:

- ``kilowatt``: the operator's Decider over all services at once — one global plan, as ``kilowatt run`` makes it;
- ``kilowatt-analytic``: the same, planning on the analytic model corrected online instead of the engine-measured
  SLO capacity the operator plans on (kilowatt.decide.OPERATOR_ENGINE_CAPACITY off: the operator before issue 12);
- ``kilowatt-alone``: one Decider per service, each planning as if it were the only one on the GPUs the others
  leave it (what running kilowatt's planner per model, beside each other, would do), in turn;
  ``kilowatt-alone-analytic`` the same on the corrected analytic model;
- ``lower-bound``: each period's true arrivals of every service, no start-up delay, one global plan;
- every single-service baseline (``hpa-<pool>``, ``static-peak``, ``melange``, ``keda``) once per service, as a
  team running one autoscaler per model would; ``hpa-cheapest``: each service's HPA on the pool where a replica
  serves its SLO at the lowest cost per req/s (a 70B model has no HPA on 24-GB GPUs).

Each service's traffic comes from its InferenceService's annotations (``TRACE``, ``RATE_CURVE``, ``SCALE``,
``SHIFT_HOURS``): a per-request trace shaped by a rate curve shifted by some hours, times a scale — so a directory
of InferenceServices is a fleet scenario and stays a set of objects ``kubectl apply`` accepts.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np

from kilowatt.api.v1alpha1 import AcceleratorPool, InferenceService, ScalingMode
from kilowatt.decide import Decider, ServiceInput
from kilowatt.economics.prices import PriceSource
from kilowatt.metrics.source import Observations, ServiceObservation, ServiceRef, Topology
from kilowatt.performance.slo_capacity import CurveBook
from kilowatt.planner import PLANNER_BUDGET_SECONDS, Snapshot, plan
from kilowatt.planner.options import CapacityTable
from kilowatt.state import service_state
from kilowatt.twin.dataplane import Accounts, DataPlane, SimulatedMetrics, charge_owned
from kilowatt.twin.policies import (
    LOWER_BOUND_PERCENTILE,
    POLICIES,
    HpaPolicy,
    best_degree,
    Policy,
    PolicyUnavailable,
    make_policy,
)
from kilowatt.twin.simulate import (
    LEAD_IN_SECONDS,
    PolicyResult,
    opening_rps,
    run_periods,
    summarise,
    tune_hpa,
)
from kilowatt.twin.workload import TraceError, Workload, read_rate_curve, read_requests, shaped

TRACE = "twin.kilowatt.dev/trace"  # per-request CSV (timestamp_s,input_tokens,output_tokens)
RATE_CURVE = "twin.kilowatt.dev/rate-curve"  # CSV window_start_s,requests_per_s or a Prometheus range export
SCALE = "twin.kilowatt.dev/scale"  # x the trace's mean rate
SHIFT_HOURS = "twin.kilowatt.dev/shift-hours"  # the rate curve, later by this many hours (wrapping round)
FLEET_POLICIES = ("kilowatt", "kilowatt-analytic", "kilowatt-alone", "kilowatt-alone-analytic", "lower-bound",
                  "hpa-cheapest",
                  *[p for p in POLICIES if p not in ("kilowatt", "lower-bound")])
SECONDS_PER_HOUR = 3600.0
Desired = dict[str, tuple[int, int]]


@dataclass(frozen=True)
class Member:
    """One service of the fleet and the requests it gets."""

    service: InferenceService
    workload: Workload


def _annotation(service: InferenceService, name: str) -> str | None:
    return (getattr(service.metadata, "annotations", None) or {}).get(name)


def members_of(services: list[InferenceService], data_dir: Path, duration_s: float | None, seed: int = 0,
               default_trace: Path | None = None) -> list[Member]:
    """Every service with the workload its annotations describe (relative paths are read from ``data_dir``);
    raises TraceError naming the service and the annotation that is wrong."""
    out = []
    for i, svc in enumerate(services):
        def path(name: str, fallback: Path | None = None) -> Path | None:
            value = _annotation(svc, name)
            if value is None:
                return fallback
            p = Path(value)
            return p if p.is_absolute() else data_dir / p

        def number(name: str, default: float) -> float:
            value = _annotation(svc, name)
            try:
                return default if value is None else float(value)
            except ValueError:
                raise TraceError(f"{svc.key}: annotation {name}={value!r} is not a number") from None

        trace_path = path(TRACE, default_trace)
        if trace_path is None:
            raise TraceError(f"{svc.key}: no annotation {TRACE} (a per-request CSV) and no default trace")
        try:
            trace = read_requests(trace_path)
            curve_path = path(RATE_CURVE)
            curve = read_rate_curve(curve_path) if curve_path is not None else None
        except TraceError as exc:
            raise TraceError(f"{svc.key}: {exc}") from None
        shift_s = number(SHIFT_HOURS, 0.0) * SECONDS_PER_HOUR
        if curve is not None and shift_s:
            starts, rates = curve
            step = float(starts[1] - starts[0]) if len(starts) > 1 else 1.0
            curve = (starts, np.roll(rates, int(round(shift_s / step))))
        scale = number(SCALE, 1.0)
        if scale <= 0:
            raise TraceError(f"{svc.key}: annotation {SCALE} must be positive, got {scale:g}")
        workload = shaped(trace, curve, scale, duration_s, seed=seed + i)
        out.append(Member(svc, replace(workload, label=f"{svc.key}: {workload.label}")))
    if not out:
        raise TraceError("no InferenceService in the fleet")
    return out


@dataclass
class FleetSample:
    t_s: float
    arrivals_rps: float
    gpus: dict[str, int]  # pool -> GPUs every service's replicas hold
    cost_usd_per_hour: float


class Fleet:
    """The services' data planes over shared pools, stepped together."""

    def __init__(self, members: list[Member], pools: list[AcceleratorPool], prices: dict[str, PriceSource],
                 start: datetime, seed: int = 0, startup_override_seconds: float | None = None,
                 curves: CurveBook | None = None, engine_capacity: bool = True) -> None:
        self.pools = pools
        self.start = start
        self.planes: dict[str, DataPlane] = {}
        for i, m in enumerate(members):
            self.planes[m.service.key] = DataPlane(
                m.workload, m.service, pools, prices, start, seed=seed + i,
                startup_override_seconds=startup_override_seconds, curves=curves, engine_capacity=engine_capacity,
                room=partial(self.room, m.service.key), owned_charged=False)
        self.accounts = Accounts(gpu_hours={p.name: 0.0 for p in pools})  # owned pools, paid once
        self.samples: list[FleetSample] = []
        self.now = 0.0
        self.measured_from_s = 0.0
        self.duration_s = max(m.workload.duration_s for m in members)

    def begin_measuring(self, first_requests: dict[str, int]) -> None:
        """The lead-in is over: every plane's run and the fleet's own accounts are judged from now on
        (DataPlane.begin_measuring)."""
        for key, plane in self.planes.items():
            plane.begin_measuring(first_requests[key])
        self.accounts = Accounts(gpu_hours={p.name: 0.0 for p in self.pools})
        self.samples = []
        self.measured_from_s = self.now

    @property
    def any_plane(self) -> DataPlane:
        return next(iter(self.planes.values()))

    def room(self, key: str, pool: str) -> int:
        """GPUs of ``pool`` that service ``key``'s replicas may hold: what the other services' replicas leave."""
        others = sum(p.gpus_claimed(pool) for k, p in self.planes.items() if k != key)
        return max(0, self.any_plane.pool_state(pool).gpus_max - others)

    def held(self, pool: str) -> int:
        return sum(p.gpus_held(pool) for p in self.planes.values())

    def advance(self, until: float) -> None:
        t0 = self.now
        for plane in self.planes.values():
            plane.advance(until)
        states = [self.any_plane.pool_state(p.name) for p in self.pools]
        held = {p.name: self.held(p.name) for p in self.pools}
        at = self.any_plane.at((t0 + until) / 2.0)
        charge_owned(self.accounts, states, held, t0, until, at)
        cost = sum(plane.samples[-1].cost_usd_per_hour for plane in self.planes.values())
        for state in states:
            if state.economics.owned:
                idle = state.economics.idle_cost(max(0, state.gpus_max - held[state.name]), at)
                cost += state.gpus_max * state.economics.usd_per_gpu_hour + idle.energy_usd_per_hour
        self.samples.append(FleetSample(
            until - self.measured_from_s, sum(plane.samples[-1].arrivals_rps for plane in self.planes.values()),
            {p.name: sum(plane.samples[-1].gpus.get(p.name, 0) for plane in self.planes.values()) for p in self.pools},
            cost))
        self.now = until

    def unfinished(self) -> int:
        return sum(plane.unfinished() for plane in self.planes.values())


class FleetPolicy:
    name = "fleet-policy"
    startup_override_seconds: float | None = None
    decisions = 0
    detail = ""

    def bind(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def decide(self, initial_rps: dict[str, float] | None = None) -> dict[str, Desired]:
        raise NotImplementedError


class GlobalKilowatt(FleetPolicy):
    """The operator's Decider over every service at once (``kilowatt run``'s period, the twin as its cluster)."""

    name = "kilowatt"

    def __init__(self, planner_budget_seconds: float = PLANNER_BUDGET_SECONDS, engine: bool | None = None) -> None:
        """``engine``: plan on the engine-measured SLO capacity (True) or the corrected analytic model (False);
        None: as the operator does (kilowatt.decide.OPERATOR_ENGINE_CAPACITY)."""
        self.decider = Decider(ScalingMode.ACTIVE, planner_budget_seconds)
        self.engine = self.decider.capacity.engine if engine is None else engine
        if engine is not None:
            self.name = "kilowatt-engine" if engine else "kilowatt-analytic"

    def bind(self, fleet: Fleet) -> None:
        super().bind(fleet)
        plane = fleet.any_plane
        self.decider.capacity = CapacityTable(self.decider.capacity.calibration, engine=self.engine,
                                              curves=plane.capacity.curves)
        self.pools = {p.name: p for p in fleet.pools}

    def decide(self, initial_rps: dict[str, float] | None = None) -> dict[str, Desired]:
        fleet = self.fleet
        items = [_input(plane, None if initial_rps is None else initial_rps[key])
                 for key, plane in fleet.planes.items()]
        plane = fleet.any_plane
        states = {name: plane.pool_state(name) for name in self.pools}
        decided = self.decider.decide(plane.at(plane.now), plane.now, items, self.pools, states)
        out = {}
        for key in fleet.planes:
            d = decided.decisions[key]
            self.decisions += int(d.changed)
            out[key] = {p: (n, d.tensor_parallel.get(p, 1)) for p, n in d.desired.items()}
        return out


def _input(plane: DataPlane, initial_rps: float | None) -> ServiceInput:
    """The service as the operator would see it this period (its metrics through the MetricSource interface)."""
    svc = plane.service
    if initial_rps is not None:  # before the run: it was already serving this rate (every policy's warm start)
        data = ServiceObservation(initial_rps, plane.mix.input_tokens, plane.mix.output_tokens, None, None, None)
    else:
        obs = SimulatedMetrics(plane).observe([ServiceRef.of(svc)], Topology(), [])
        data = obs.services.get(svc.key) if obs.available else None
    return ServiceInput.of(svc, plane.placement(), data)


class AloneKilowatt(FleetPolicy):
    """kilowatt's Decider once per service, each seeing only the GPUs the other services leave it, in turn."""

    name = "kilowatt-alone"

    def __init__(self, engine: bool | None = None) -> None:
        """``engine``: as GlobalKilowatt's."""
        self.engine = engine
        if engine is not None:
            self.name = "kilowatt-alone-engine" if engine else "kilowatt-alone-analytic"

    def bind(self, fleet: Fleet) -> None:
        super().bind(fleet)
        self.pools = {p.name: p for p in fleet.pools}
        self.deciders = {}
        for key, plane in fleet.planes.items():
            decider = Decider(ScalingMode.ACTIVE)
            engine = decider.capacity.engine if self.engine is None else self.engine
            decider.capacity = CapacityTable(decider.capacity.calibration, engine=engine,
                                             curves=plane.capacity.curves)
            self.deciders[key] = decider

    def decide(self, initial_rps: dict[str, float] | None = None) -> dict[str, Desired]:
        fleet = self.fleet
        out = {}
        for key, plane in fleet.planes.items():
            item = _input(plane, None if initial_rps is None else initial_rps[key])
            # What is left for it: the pool less what the others hold (its own replicas' GPUs are its to keep).
            states = {name: replace(plane.pool_state(name), gpus_max=fleet.room(key, name)) for name in self.pools}
            d = self.deciders[key].decide(plane.at(plane.now), plane.now, [item], self.pools, states).decisions[key]
            self.decisions += int(d.changed)
            out[key] = {p: (n, d.tensor_parallel.get(p, 1)) for p, n in d.desired.items()}
            plane.apply(out[key])  # the next service plans on what this one now holds
        return out


class FleetLowerBound(FleetPolicy):
    """Every service's true arrivals in the coming period, no start-up delay, no headroom, one global plan on the
    capacity the twin's engine delivers for each service's own length distribution, sized for 99 % within."""

    name = "lower-bound"
    startup_override_seconds = 0.0

    def __init__(self, period_seconds: float) -> None:
        self.period = period_seconds

    def bind(self, fleet: Fleet) -> None:
        super().bind(fleet)
        plane = fleet.any_plane
        self.capacity = CapacityTable(plane.capacity.calibration, engine=True,
                                      curves=CurveBook.for_twin(grid=False))

    def decide(self, initial_rps: dict[str, float] | None = None) -> dict[str, Desired]:
        fleet = self.fleet
        states = []
        for plane in fleet.planes.values():
            w = plane.workload
            lo, hi = np.searchsorted(w.arrival_s, [plane.now, plane.now + self.period])
            state = service_state(plane.service, (hi - lo) / self.period, plane.mix)
            states.append(replace(state, burst_headroom=0.0, percentile=LOWER_BOUND_PERCENTILE))
        plane = fleet.any_plane
        pools = tuple(plane.pool_state(p.name) for p in fleet.pools)
        result = plan(Snapshot(plane.at(plane.now + self.period / 2), pools, tuple(states)), self.capacity,
                      exact=True, time_limit_seconds=5.0)
        out = {}
        for key in fleet.planes:
            placed = {p.pool: (p.replicas, p.tensor_parallel) for p in result.service(key).placement}
            out[key] = {p.name: placed.get(p.name, (0, 1)) for p in fleet.pools}
        return out


class EachService(FleetPolicy):
    """A single-service baseline run once per service (one HPA, KEDA ScaledObject, static mix per model)."""

    def __init__(self, name: str, period_seconds: float, prices: dict[str, PriceSource], start: datetime,
                 curves: CurveBook, engine_capacity: bool) -> None:
        self.name = name
        self.period = period_seconds
        self.prices, self.start, self.curves, self.engine_capacity = prices, start, curves, engine_capacity
        self.skipped: list[str] = []

    def bind(self, fleet: Fleet) -> None:
        super().bind(fleet)
        self.policies: dict[str, Policy] = {}
        details = []
        for key, plane in fleet.planes.items():
            name = f"hpa-{cheapest_pool(plane)}" if self.name == "hpa-cheapest" else self.name
            policy = make_policy(name, plane.service, fleet.pools, {}, self.period)
            if isinstance(policy, HpaPolicy):
                tune_hpa(policy, plane.workload, plane.service, fleet.pools, self.prices, self.start, self.period,
                         plane.routing, self.curves, self.engine_capacity)
                details.append(f"{key}: {policy.target_fraction:.0%}")
            try:
                policy.bind(plane)
            except PolicyUnavailable as exc:  # e.g. an HPA on a pool the model cannot meet its SLO on
                raise PolicyUnavailable(f"{self.name}: {exc}") from None
            self.policies[key] = policy
        if details:
            self.detail = "targets tuned per service on its busiest hour: " + ", ".join(details)

    def decide(self, initial_rps: dict[str, float] | None = None) -> dict[str, Desired]:
        return {key: policy.decide(initial_rps=None if initial_rps is None else initial_rps[key])
                for key, policy in self.policies.items()}


def cheapest_pool(plane: DataPlane) -> str:
    """The pool where a replica of the plane's service serves its SLO at the lowest cost per req/s (at 80 %
    load, as kilowatt's planner prices a replica); raises PolicyUnavailable where no pool can serve it."""
    at = plane.at(plane.workload.duration_s / 2)
    best, best_cost = None, np.inf
    for pool in plane.pools:
        k, within, _ = best_degree(plane, pool)
        if within <= 0:
            continue
        cost = plane.pool_state(pool).economics.marginal_cost(k, 0.8, at).objective_usd_per_hour / within
        if cost < best_cost:
            best, best_cost = pool, cost
    if best is None:
        raise PolicyUnavailable(f"hpa-cheapest: {plane.service.key} cannot meet its SLO on any pool")
    return best


def make_fleet_policy(name: str, period_seconds: float, prices: dict[str, PriceSource], start: datetime,
                      curves: CurveBook, engine_capacity: bool) -> FleetPolicy:
    if name == "kilowatt":
        return GlobalKilowatt()
    if name == "kilowatt-analytic":  # the global Decider on the corrected analytic model (before issue 12)
        return GlobalKilowatt(engine=False)
    if name == "kilowatt-alone":
        return AloneKilowatt()
    if name == "kilowatt-alone-analytic":
        return AloneKilowatt(engine=False)
    if name == "lower-bound":
        return FleetLowerBound(period_seconds)
    if name in POLICIES or name.startswith("hpa-"):  # hpa-cheapest: each service's HPA on its cheapest pool
        return EachService(name, period_seconds, prices, start, curves, engine_capacity)
    raise ValueError(f"unknown fleet policy {name!r}; known: {', '.join(FLEET_POLICIES)} (hpa-<pool> for any pool)")


@dataclass
class FleetResult:
    name: str
    services: list[PolicyResult]  # per service (owned pools' hardware and idle power not in them)
    owned: Accounts  # owned pools, paid once for the fleet
    samples: list[FleetSample] = field(default_factory=list, repr=False)
    decisions: int = 0
    wall_seconds: float = 0.0
    detail: str = ""

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.services)

    @property
    def cost_usd(self) -> float:
        return sum(s.cost_usd for s in self.services) + self.owned.hardware_usd + self.owned.energy_usd

    @property
    def slo_attainment(self) -> float:
        """Share of all the fleet's requests within their service's SLO."""
        return sum(s.slo_attainment * s.requests for s in self.services) / max(self.requests, 1)

    @property
    def gpu_hours(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.services:
            for p, h in s.gpu_hours.items():
                out[p] = out.get(p, 0.0) + h
        return out

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "requests": self.requests,
            "costUsd": round(self.cost_usd, 4),
            "hardwareUsd": round(sum(s.hardware_usd for s in self.services) + self.owned.hardware_usd, 4),
            "energyUsd": round(sum(s.energy_usd for s in self.services) + self.owned.energy_usd, 4),
            "energyKwh": round(sum(s.energy_kwh for s in self.services) + self.owned.energy_kwh, 4),
            "co2Kg": round(sum(s.co2_kg for s in self.services) + self.owned.co2_kg, 4),
            "ownedHardwareUsd": round(self.owned.owned_hardware_usd, 4),
            "sloAttainment": round(self.slo_attainment, 6),
            "worstServiceSloAttainment": round(min(s.slo_attainment for s in self.services), 6),
            "gpuHours": {p: round(h, 4) for p, h in self.gpu_hours.items()},
            "decisions": self.decisions,
            **({"detail": self.detail} if self.detail else {}),
            "wallSeconds": round(self.wall_seconds, 2),
            "services": {s.name: {"requests": s.requests, "sloAttainment": round(s.slo_attainment, 6),
                                  "costUsd": round(s.cost_usd, 4), "dropped": s.dropped,
                                  "gpuHours": {p: round(h, 4) for p, h in s.gpu_hours.items() if h}}
                         for s in self.services},
        }


def run_fleet_policy(name: str, members: list[Member], pools: list[AcceleratorPool],
                     prices: dict[str, PriceSource], start: datetime, period_seconds: float = 15.0, seed: int = 0,
                     curves: CurveBook | None = None, engine_capacity: bool = True,
                     progress: Callable[[str, float], None] | None = None,
                     lead_in_seconds: float = LEAD_IN_SECONDS) -> FleetResult:
    started = time.perf_counter()
    curves = curves if curves is not None else CurveBook.for_twin()
    policy = make_fleet_policy(name, period_seconds, prices, start, curves, engine_capacity)
    # Every member plays the same lead-in (kilowatt.twin.workload.LEAD_IN_SECONDS), so that their clocks agree.
    lead_s = min([lead_in_seconds, *(m.workload.duration_s for m in members)])
    played = {m.service.key: m.workload.with_lead_in(lead_s, period_seconds) for m in members}
    lead_s = next(iter(played.values()))[1] if played else 0.0
    first_requests = {m.service.key: len(played[m.service.key][0]) - len(m.workload) for m in members}
    members = [Member(m.service, played[m.service.key][0]) for m in members]
    fleet = Fleet(members, pools, prices, start - timedelta(seconds=lead_s), seed, policy.startup_override_seconds,
                  curves, engine_capacity)
    policy.bind(fleet)
    decisions_before = 0

    def begin() -> None:
        nonlocal decisions_before
        fleet.begin_measuring(first_requests)
        decisions_before = policy.decisions

    def apply(desired: dict[str, Desired]) -> None:
        # Scale-downs first, so that GPUs one service gives back are there for the others this period (the
        # draining replicas still hold theirs until they finish, as Pods do until they terminate).
        for key in sorted(desired, key=lambda k: _growth(fleet.planes[k], desired[k])):
            fleet.planes[key].apply(desired[key])

    apply(policy.decide(initial_rps={m.service.key: opening_rps(m.workload) for m in members}))
    for plane in fleet.planes.values():
        plane.warm_start()
    run_periods(name, fleet.duration_s, period_seconds, fleet.advance, lambda: apply(policy.decide()),
                fleet.unfinished, progress, lead_s, begin)
    wall = time.perf_counter() - started
    services = [summarise(key, plane, wall) for key, plane in fleet.planes.items()]
    return FleetResult(name, services, fleet.accounts, fleet.samples, policy.decisions - decisions_before, wall,
                       policy.detail)


def _growth(plane: DataPlane, desired: Desired) -> int:
    """GPUs a desired placement adds over what the plane holds (negative: gives back)."""
    return sum(n * k for n, k in desired.values()) - sum(plane.gpus_held(p) for p in desired)


def simulate_fleet(policies: list[str], members: list[Member], pools: list[AcceleratorPool],
                   prices: dict[str, PriceSource], start: datetime, period_seconds: float = 15.0, seed: int = 0,
                   quiet: bool = False, engine_capacity: bool = True,
                   lead_in_seconds: float = LEAD_IN_SECONDS) -> list[FleetResult]:
    tty = sys.stderr.isatty()

    def progress(name: str, fraction: float) -> None:
        if tty:
            print(f"\r  {name:14} {'#' * int(fraction * 30):30} {fraction:4.0%}", end="", file=sys.stderr, flush=True)
        elif round(fraction * 20) % 5 == 0:
            print(f"  {name:14} {fraction:4.0%}", file=sys.stderr, flush=True)

    curves = CurveBook.for_twin()
    results = []
    for name in policies:
        try:
            result = run_fleet_policy(name, members, pools, prices, start, period_seconds, seed, curves,
                                      engine_capacity, None if quiet else progress, lead_in_seconds)
        except PolicyUnavailable as exc:
            print(f"{chr(13) if tty else ''}  {name:14} skipped: {exc}", file=sys.stderr)
            continue
        if not quiet:
            print(f"{chr(13) if tty else ''}  {name:14} {'#' * 30} done in {result.wall_seconds:.1f}s: "
                  f"${result.cost_usd:.2f}, SLO {result.slo_attainment:.2%} (worst service "
                  f"{min(s.slo_attainment for s in result.services):.2%})", file=sys.stderr)
        results.append(result)
    return results
