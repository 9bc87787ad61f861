"""The twin's data plane: replicas on GPU pools serving a workload, start-up delays, routing, cost and power.

A policy says how many replicas of which degree run on each pool; the data plane creates them (serving after the
pool's ``replicaStartupSeconds``), retires them (one not yet serving goes at once; a serving one stops taking
requests and drains), routes each arriving request to a serving replica and runs every replica's engine. A
request that arrives while nothing serves waits at the gateway. Hardware is paid for every replica that exists,
starting or draining included; power follows each replica's load on the pool's power curve.

Routing, as the cluster routes for ``spec.routing.mode`` (``ROUTINGS``), or a policy's own router (the Mélange
baseline routes by request size):

Without one, the service's own ``spec.routing.mode`` (Service unless a gateway is configured), so the twin routes
as the cluster would and the planner plans for it; naming one rewrites the service's mode for the run.

- ``weighted``: a gateway picks a pool's Service by the HTTPRoute's weight (per-replica capacity x serving
  replicas), then kube-proxy a pod of it at random — together, each serving replica takes requests in proportion
  to what it serves within the SLO, at random.
- ``service``: one ClusterIP Service over every pod: each serving replica an equal share, at random (the
  planner counts a mixed placement at its slowest replica).
- ``inferencepool``: the pool by weight as above, then, within the pool, the next replica in turn: the endpoint
  picker sends each request to the least-loaded replica of a homogeneous pool, which round-robin approximates
  (its KV-cache and queue-depth scoring is not modelled).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from kilowatt.api.v1alpha1 import AcceleratorPool, InferenceService, RoutingMode
from kilowatt.economics.carbon import GRAMS_PER_KILOGRAM
from kilowatt.economics.cost import WATTS_PER_KILOWATT, PoolEconomics
from kilowatt.economics.prices import PriceSource
from kilowatt.metrics.source import (
    Observations,
    PoolLatency,
    PoolObservation,
    ServiceObservation,
    ServiceRef,
    Topology,
)
from kilowatt.performance import CapacityModel, TokenMix
from kilowatt.planner.options import CapacityTable, replica_capacity
from kilowatt.planner.snapshot import CurrentPlacement, PoolState
from kilowatt.slo import within_slo
from kilowatt.state import gpu_of, pool_state, service_state
from kilowatt.performance.engine import EngineTimes, Ledger, Replica
from kilowatt.performance.slo_capacity import CurveBook
from kilowatt.performance.lengths import cumulative_histogram, quantiles_of, vllm_length_buckets
from kilowatt.twin.workload import Workload

SECONDS_PER_HOUR = 3600.0
ROUTINGS = ("weighted", "service", "inferencepool")
MODE_OF_ROUTING = {"weighted": RoutingMode.WEIGHTED, "service": RoutingMode.SERVICE,
                   "inferencepool": RoutingMode.INFERENCE_POOL}


def routed_as(service: InferenceService, routing: str | None) -> tuple[InferenceService, str]:
    """The service as the run routes it, and the routing's name: ``routing`` None keeps the spec's mode; a name
    rewrites ``spec.routing.mode`` (not validated: a what-if needs no Gateway to attach to)."""
    if routing is None:
        return service, {m: r for r, m in MODE_OF_ROUTING.items()}[service.spec.routing.mode]
    if routing not in ROUTINGS:
        raise ValueError(f"routing {routing!r}: use one of {', '.join(ROUTINGS)}")
    mode = MODE_OF_ROUTING[routing]
    if service.spec.routing.mode is mode:
        return service, routing
    spec = service.spec.model_copy(update={"routing": service.spec.routing.model_copy(update={"mode": mode})})
    return service.model_copy(update={"spec": spec}), routing
Router = Callable[[np.ndarray, list[Replica], np.random.Generator], np.ndarray]


@dataclass
class Sample:
    """One control period of one run, for the report's time series."""

    t_s: float
    arrivals_rps: float
    replicas: dict[str, int]  # pool -> replicas that exist (starting included)
    gpus: dict[str, int]  # pool -> GPUs those replicas hold
    serving: dict[str, int]  # pool -> replicas serving
    cost_usd_per_hour: float
    power_watts: float  # at the wall
    price_usd_per_kwh: dict[str, float]
    ttft_p95_s: float | None
    tpot_p95_s: float | None


@dataclass
class Accounts:
    hardware_usd: float = 0.0
    energy_usd: float = 0.0
    energy_kwh: float = 0.0
    gpu_hours: dict[str, float] = field(default_factory=dict)
    # What routing costs a mixed placement: hours with serving replicas on more than one pool, and the share of
    # the cost paid for capacity the routing cannot reach (a plain Service gives every replica an equal share, so
    # only replicas x the slowest replica's capacity is usable; weighted routing reaches all of it).
    mixed_hours: float = 0.0
    stranded_usd: float = 0.0
    co2_kg: float = 0.0
    # Owned pools: every GPU's amortised price is charged whether a replica holds it or not (included in
    # hardware_usd; sunk, the same under every policy), and GPUs no replica holds draw idle power.
    owned_hardware_usd: float = 0.0


def book(accounts: Accounts, economics: PoolEconomics, hardware_usd_per_hour: float, it_watts: float,
         hours: float, at: datetime) -> None:
    """Charge ``hardware_usd_per_hour`` and ``it_watts`` of IT power for ``hours`` at prices of ``at``: hardware,
    energy (PUE included) and its carbon."""
    cost = economics.cost_of(hardware_usd_per_hour, it_watts, at)
    accounts.hardware_usd += cost.hardware_usd_per_hour * hours
    accounts.energy_kwh += cost.power_watts / WATTS_PER_KILOWATT * hours
    accounts.energy_usd += cost.energy_usd_per_hour * hours
    accounts.co2_kg += cost.co2_grams_per_hour * hours / GRAMS_PER_KILOGRAM


def charge_owned(accounts: Accounts, pools: list[PoolState], held_gpus: dict[str, int], t0: float, t1: float,
                 at: datetime) -> None:
    """Owned pools from t0 to t1: every GPU's amortised price, and idle power for the GPUs no replica holds
    (``held_gpus``: pool -> GPUs replicas hold)."""
    for state in pools:
        economics = state.economics
        if not economics.owned or t1 <= t0:
            continue
        hours = (t1 - t0) / SECONDS_PER_HOUR
        idle = max(0, state.gpus_max - held_gpus.get(state.name, 0))
        book(accounts, economics, state.gpus_max * economics.usd_per_gpu_hour, idle * economics.power.idle_watts,
             hours, at)
        accounts.owned_hardware_usd += state.gpus_max * economics.usd_per_gpu_hour * hours


class DataPlane:
    def __init__(self, workload: Workload, service: InferenceService, pools: list[AcceleratorPool],
                 prices: dict[str, PriceSource], start: datetime, seed: int = 0,
                 startup_override_seconds: float | None = None, metrics_window_seconds: float = 60.0,
                 routing: str | None = None, curves: CurveBook | None = None,
                 engine_capacity: bool = True, room: Callable[[str], int] | None = None,
                 owned_charged: bool = True) -> None:
        """``room`` and ``owned_charged``: for a plane that shares its pools with other services' planes (a
        fleet, kilowatt.twin.fleet): ``room(pool)`` is how many of the pool's GPUs this plane's replicas may hold
        (the rest are held by the others'; default the whole pool), and with ``owned_charged`` False the fleet,
        not each plane, pays owned pools' hardware and idle power."""
        service, self.routing = routed_as(service, routing)
        self.room = room
        self.owned_charged = owned_charged
        self._turn: dict[str, int] = {}  # pool -> the next replica's turn (inferencepool routing)
        self.workload = workload
        self.service = service
        self.pools = {p.name: p for p in pools}
        self.pool_index = {p.name: i for i, p in enumerate(pools)}
        self.prices = prices
        self.start = start
        self.rng = np.random.default_rng(seed)
        self.startup_override = startup_override_seconds
        self.metrics_window = metrics_window_seconds
        self.ledger = Ledger(len(workload))
        self.replicas: dict[str, list[Replica]] = {p.name: [] for p in pools}
        self.draining: list[Replica] = []
        self.replacing: list[Replica] = []  # still serving until their replacements are ready
        self.gateway: deque[int] = deque()
        self.next_arrival = 0
        self.now = 0.0
        self.accounts = Accounts(gpu_hours={p.name: 0.0 for p in pools})
        self.samples: list[Sample] = []
        self.measured_from = 0  # the first request the run is judged on (after a lead-in: begin_measuring)
        self.measured_from_s = 0.0  # and the time it begins (samples' times count from it)
        self.router: Router | None = None
        self._recent: deque[tuple[float, np.ndarray]] = deque()
        self._power_by_pool: dict[str, float] = {}
        self._engines: dict[tuple[str, int], tuple[EngineTimes, float, float]] = {}
        self._pool_states: dict[str, PoolState] = {}
        self._pool_names = [p.name for p in pools]
        mix = TokenMix(float(np.mean(workload.input_tokens)), float(np.mean(workload.output_tokens)),
                       quantiles_of(workload.input_tokens), quantiles_of(workload.output_tokens)) if len(workload) \
            else TokenMix()
        self.mix = mix
        self._state = service_state(service, 0.0, mix)
        # Per-replica capacities of this run's service, shared with its policies; the engine's latency curves
        # (``curves``) may be shared across runs on the same pools.
        # engine_capacity: every policy plans with the SLO capacity measured on this engine (the one truth);
        # False: with the analytic model at the mix's means (the operator's model before issue 12).
        self.capacity = CapacityTable(curves=curves if curves is not None else CurveBook.for_twin(),
                                      engine=engine_capacity)

    # -- what runs ------------------------------------------------------------------------------------------------
    def at(self, t_s: float) -> datetime:
        return self.start + timedelta(seconds=t_s)

    def pool_state(self, name: str) -> PoolState:
        """The pool as the planner sees it: GPUs from maxGPUs (no nodes here), the twin's price if one is set."""
        found = self._pool_states.get(name)
        if found is None:
            found = self._pool_states[name] = self._make_pool_state(name)
        return found

    def _make_pool_state(self, name: str) -> PoolState:
        pool = self.pools[name]
        price = self.prices.get(name)
        state = pool_state(pool, pool.spec.max_gpus or 0)
        if price is not None:
            state = replace(state, economics=replace(state.economics, price=price))
        return state

    def engine(self, pool: str, tp: int) -> tuple[EngineTimes, float, float]:
        """(engine constants, req/s within the SLO, saturation req/s) of one replica on ``pool`` at degree tp."""
        key = (pool, tp)
        if key not in self._engines:
            p = self.pools[pool]
            model = CapacityModel(self._state.shape, gpu_of(p), tp)
            within, saturation = replica_capacity(self._state, self.pool_state(pool), tp, self.capacity)
            self._engines[key] = (EngineTimes.of(model), within, saturation)
        return self._engines[key]

    def placement(self) -> dict[str, CurrentPlacement]:
        out = {}
        for pool, replicas in self.replicas.items():
            if replicas:
                out[pool] = CurrentPlacement(len(replicas), replicas[0].gpus,
                                             sum(1 for r in replicas if r.ready_at <= self.now))
        return out

    def apply(self, desired: dict[str, tuple[int, int]]) -> None:
        """Make ``pool -> (replicas, tensor-parallel degree)`` true from now; pools not named keep what they run."""
        for pool, (count, tp) in desired.items():
            if pool not in self.replicas:
                continue
            alive = self.replicas[pool]
            startup = self.pools[pool].spec.replica_startup_seconds
            if self.startup_override is not None:
                startup = self.startup_override
            if alive and alive[0].gpus != tp:
                # A new degree is a new set of replicas, rolled out like a Deployment with surge: the old
                # ones keep serving until the new ones are ready, then drain.
                for r in alive:
                    if r.ready_at <= self.now:
                        r.retire_at = self.now + startup
                        self.replacing.append(r)
                    else:
                        self._charge(r, self.now)
                alive.clear()
            # Replicas beyond the pool's GPUs (or beyond what other services leave of it) would stay Pending:
            # they neither serve nor cost.
            room = self.pool_state(pool).gpus_max if self.room is None else self.room(pool)
            count = min(count, room // max(tp, 1))
            if count > len(alive):
                times = self.engine(pool, tp)[0]
                for _ in range(count - len(alive)):
                    alive.append(Replica(times, self.pool_index[pool], self.now + startup, tp, self.now))
            elif count < len(alive):
                self._retire(pool, len(alive) - count)

    def _retire(self, pool: str, count: int) -> None:
        alive = self.replicas[pool]
        # Starting replicas go first (nothing to drain), then the least busy serving ones.
        alive.sort(key=lambda r: (r.ready_at <= self.now, r.outstanding()))
        for replica in alive[:count]:
            if replica.ready_at > self.now:
                self._charge(replica, self.now)
            else:
                replica.draining = True
                self.draining.append(replica)
        del alive[:count]

    # -- running -------------------------------------------------------------------------------------------------
    def advance(self, until: float) -> None:
        """Route the arrivals up to ``until`` and run every replica to it; charge the period's cost."""
        t0 = self.now
        for r in [r for r in self.replacing if r.retire_at <= t0]:
            self.replacing.remove(r)
            r.draining = True
            self.draining.append(r)
        w = self.workload
        end = int(np.searchsorted(w.arrival_s, until, side="left"))
        arrivals = np.arange(self.next_arrival, end)
        self.next_arrival = end
        per_replica: dict[int, list[int]] = {}
        # Serving sets change when a replica becomes ready: route segment by segment.
        bounds = sorted({r.ready_at for rs in self.replicas.values() for r in rs if t0 < r.ready_at < until})
        edges = [t0, *bounds, until]
        times = w.arrival_s
        lo = 0
        for a, b in zip(edges, edges[1:]):
            hi = int(np.searchsorted(times[arrivals], b, side="left")) if len(arrivals) else 0
            segment = arrivals[lo:hi]
            lo = hi
            serving = [r for rs in self.replicas.values() for r in rs if r.ready_at <= a] + self.replacing
            if not serving:
                self.gateway.extend(segment.tolist())
                continue
            if self.gateway:
                segment = np.concatenate([np.fromiter(self.gateway, dtype=np.int64), segment])
                self.gateway.clear()
            if not len(segment):
                continue
            chosen = self._route(segment, serving)
            for replica_pos, r in zip(chosen.tolist(), segment.tolist()):
                per_replica.setdefault(id(serving[replica_pos]), []).append(r)
        everyone = [r for rs in self.replicas.values() for r in rs] + self.draining + self.replacing
        inputs, outputs = w.input_tokens, w.output_tokens
        for replica in everyone:
            if replica.ready_at < until:
                replica.run(per_replica.get(id(replica), []), times, inputs, outputs, until, self.ledger)
        power: dict[str, float] = {}
        for replica in everyone:
            pool = self._pool_name(replica)
            power[pool] = power.get(pool, 0.0) + self._charge(replica, until)
        self._power_by_pool = power
        if self.owned_charged:
            self._charge_owned(t0, until)
        self.draining = [r for r in self.draining if not r.idle()]
        self.now = until
        done = np.asarray(self.ledger.done, dtype=np.int64)
        self.ledger.done.clear()
        self._recent.append((until, done))
        while self._recent and self._recent[0][0] <= until - self.metrics_window:
            self._recent.popleft()
        self._sample(t0, until, len(arrivals), done)

    def _route(self, segment: np.ndarray, serving: list[Replica]) -> np.ndarray:
        if self.router is not None:
            return self.router(segment, serving, self.rng)
        if len(serving) == 1:
            return np.zeros(len(segment), dtype=np.int64)
        if self.routing == "service":
            return self.rng.integers(0, len(serving), size=len(segment))
        weights = np.array([max(self.engine(self._pool_name(r), r.gpus)[1], 1e-9) for r in serving])
        if self.routing == "weighted":
            return self.rng.choice(len(serving), size=len(segment), p=weights / weights.sum())
        # inferencepool: the pool by weight, then each pool's replicas in turn.
        members: dict[str, list[int]] = {}
        for i, r in enumerate(serving):
            members.setdefault(self._pool_name(r), []).append(i)
        names = sorted(members)
        pool_weights = np.array([sum(weights[i] for i in members[n]) for n in names])
        picks = self.rng.choice(len(names), size=len(segment), p=pool_weights / pool_weights.sum())
        chosen = np.empty(len(segment), dtype=np.int64)
        for k, name in enumerate(names):
            where = np.flatnonzero(picks == k)
            turn = self._turn.get(name, 0)
            chosen[where] = np.asarray(members[name])[(turn + np.arange(len(where))) % len(members[name])]
            self._turn[name] = (turn + len(where)) % len(members[name])
        return chosen

    def _pool_name(self, replica: Replica) -> str:
        return self._pool_names[replica.pool_index]

    def _charge(self, replica: Replica, t1: float) -> float:
        """Charge one replica's hardware and energy from where it was last charged to ``t1``; return its IT
        power in watts. Power follows the requests it completed per serving second against its saturation."""
        t0 = replica.charged_until
        dt = t1 - t0
        if dt <= 0:
            return 0.0
        pool = self.pools[self._pool_name(replica)]
        state = self.pool_state(pool.name)
        serving_s = max(0.0, t1 - max(t0, replica.ready_at))
        saturation = self.engine(pool.name, replica.gpus)[2]
        served = replica.served - replica.served_at_charge
        utilisation = min(1.0, served / serving_s / saturation) if serving_s > 0 and saturation > 0 else 0.0
        watts = replica.gpus * state.economics.power.watts(utilisation)
        # An owned pool's hardware is charged for all its GPUs at once (_charge_owned), not per replica.
        hardware_usd_per_hour = 0.0 if state.economics.owned else replica.gpus * state.economics.usd_per_gpu_hour
        self._book(state.economics, hardware_usd_per_hour, watts, t0, t1)
        self.accounts.gpu_hours[pool.name] += replica.gpus * dt / SECONDS_PER_HOUR
        replica.charged_until = t1
        replica.served_at_charge = replica.served
        return watts

    def _book(self, economics: PoolEconomics, hardware_usd_per_hour: float, it_watts: float, t0: float,
              t1: float) -> None:
        book(self.accounts, economics, hardware_usd_per_hour, it_watts, (t1 - t0) / SECONDS_PER_HOUR,
             self.at((t0 + t1) / 2.0))

    def gpus_held(self, name: str) -> int:
        """GPUs of pool ``name`` this plane's replicas hold: starting, serving, draining or being replaced."""
        return sum(r.gpus for r in [*self.replicas[name], *self.draining, *self.replacing]
                   if self._pool_name(r) == name)

    def gpus_claimed(self, name: str) -> int:
        """GPUs of pool ``name`` no other service's replica may start on (what ``Fleet.room`` leaves the others):
        those held, less the draining and replaced replicas' where replicas start at once (the lower bound's
        idealisation, startup_override 0: a change takes effect at once, so a replica stops as it starts — its
        requests still finish on it, but its GPUs are the next holder's this period, not after the drain)."""
        if self.startup_override == 0:
            return sum(r.gpus for r in self.replicas[name])
        return self.gpus_held(name)

    def _owned_idle_gpus(self, name: str) -> int:
        return max(0, self.pool_state(name).gpus_max - self.gpus_held(name))

    def _charge_owned(self, t0: float, t1: float) -> None:
        charge_owned(self.accounts, [self.pool_state(n) for n in self.pools],
                     {n: self.gpus_held(n) for n in self.pools}, t0, t1, self.at((t0 + t1) / 2.0))

    def _sample(self, t0: float, t1: float, arrived: int, done: np.ndarray) -> None:
        dt = max(t1 - t0, 1e-9)
        ttft = self.ledger.ttft_s[done] if len(done) else np.zeros(0)
        tpot = self.ledger.tpot_s[done] if len(done) else np.zeros(0)
        tpot = tpot[~np.isnan(tpot)]
        at = self.at((t0 + t1) / 2)
        prices = {name: self.pool_state(name).economics.price.usd_per_kwh(at) for name in self.pools}
        power_wall = sum(w * self.pools[p].spec.cost.pue for p, w in self._power_by_pool.items())
        cost_rate = sum(w * self.pools[p].spec.cost.pue / WATTS_PER_KILOWATT * prices[p]
                        for p, w in self._power_by_pool.items())
        for p, rs in self.replicas.items():
            economics = self.pool_state(p).economics
            if economics.owned and not self.owned_charged:
                continue  # the fleet pays the pool (kilowatt.twin.fleet)
            if economics.owned:
                idle = economics.idle_cost(self._owned_idle_gpus(p), at)
                cost_rate += self.pool_state(p).gpus_max * economics.usd_per_gpu_hour + idle.energy_usd_per_hour
                power_wall += idle.power_watts
            else:
                cost_rate += sum(r.gpus for r in rs) * economics.usd_per_gpu_hour
        serving = [(self._pool_name(r), r.gpus) for rs in self.replicas.values() for r in rs if r.ready_at <= t1]
        if len({p for p, _ in serving}) > 1:  # (replicas that serve nothing within the SLO strand nothing more)
            per_replica = [self.engine(p, k)[1] for p, k in serving]
            reachable = len(per_replica) * min(per_replica) if self.routing == "service" and self.router is None \
                else sum(per_replica)
            self.accounts.mixed_hours += dt / SECONDS_PER_HOUR
            if sum(per_replica) > 0:
                self.accounts.stranded_usd += cost_rate * dt / SECONDS_PER_HOUR * (1.0 - reachable / sum(per_replica))
        self.samples.append(Sample(
            t1 - self.measured_from_s, arrived / dt, {p: len(rs) for p, rs in self.replicas.items()},
            {p: sum(r.gpus for r in rs) for p, rs in self.replicas.items()},
            {p: sum(1 for r in rs if r.ready_at <= t1) for p, rs in self.replicas.items()}, cost_rate, power_wall,
            prices, float(np.percentile(ttft, 95)) if len(ttft) else None,
            float(np.percentile(tpot, 95)) if len(tpot) else None))

    def waiting(self) -> int:
        """Requests not yet admitted: at the gateway and in replicas' queues (vLLM's num_requests_waiting)."""
        return len(self.gateway) + sum(len(r.queue) for rs in self.replicas.values() for r in rs)

    def finished_in_window(self) -> np.ndarray:
        """Indices of the requests that finished within the metrics window (what a rate over it would count)."""
        return np.concatenate([d for _, d in self._recent]) if self._recent else np.zeros(0, dtype=np.int64)

    @property
    def power_by_pool_watts(self) -> dict[str, float]:
        """GPU board power per pool over the last ``advance``, as DCGM would report it (PUE not included)."""
        return dict(self._power_by_pool)

    def warm_start(self) -> None:
        """What runs now was already serving before the trace began: ready, and charged from t = 0."""
        for replicas in self.replicas.values():
            for r in replicas:
                r.ready_at = r.t = r.created_at = r.charged_until = 0.0

    def begin_measuring(self, first_request: int) -> None:
        """The lead-in is over (kilowatt.twin.workload.LEAD_IN_SECONDS): from now on the run is judged — its
        accounts and samples start again at zero, and its attainment counts requests from ``first_request`` on.
        What runs, what queues and what the policy learned carry over, as they would in a cluster."""
        self.accounts = Accounts(gpu_hours={p: 0.0 for p in self.pools})
        self.samples = []
        self.measured_from = first_request
        self.measured_from_s = self.now

    def finished_last_period(self) -> np.ndarray:
        """Indices of the requests that finished in the last ``advance``."""
        return self._recent[-1][1] if self._recent else np.zeros(0, dtype=np.int64)

    def unfinished(self) -> int:
        return (len(self.gateway) + sum(r.outstanding() for rs in self.replicas.values() for r in rs)
                + sum(r.outstanding() for r in self.draining + self.replacing) + (len(self.workload) - self.next_arrival))


class SimulatedMetrics:
    """The operator's MetricSource, read from the data plane: what vLLM's and DCGM's exporters would report
    through Prometheus (completions over the last minute, latency percentiles, watts), and the price feed."""

    def __init__(self, plane: DataPlane, price_queries: dict[str, str] | None = None) -> None:
        self.plane = plane
        self.price_queries = price_queries or {}  # PromQL -> pool whose price it reads

    def observe(self, services: list[ServiceRef], topology: Topology, price_queries: list[str]) -> Observations:
        plane = self.plane
        done = plane.finished_in_window()
        at = plane.at(plane.now)
        prices = {q: plane.pool_state(pool).economics.price.usd_per_kwh(at) for q, pool in self.price_queries.items()
                  if q in price_queries}
        pools = {p: PoolObservation(w, None) for p, w in plane.power_by_pool_watts.items()}
        out = Observations(available=True, pools=pools, prices_usd_per_kwh=prices)
        window = min(plane.metrics_window, max(plane.now, 1e-9))
        for ref in services:
            if ref.key != plane.service.key or not len(done):
                out.services[ref.key] = None
                continue
            out.services[ref.key] = observation(plane, done, window, ref)
        return out


def observation(plane: DataPlane, done: np.ndarray, window_s: float, ref: ServiceRef) -> ServiceObservation:
    ledger, w = plane.ledger, plane.workload
    q = ref.percentile
    ttft, tpot = ledger.ttft_s[done], ledger.tpot_s[done]
    has_tpot = ~np.isnan(tpot)
    ok = within_slo(ttft, tpot, ref.ttft_seconds, ref.tpot_seconds)
    by_pool = {}
    pools = ledger.pool[done]
    for name, i in plane.pool_index.items():
        mine = pools == i
        if mine.any():
            t = tpot[mine & has_tpot]
            by_pool[name] = PoolLatency(float(mine.sum()) / window_s, float(np.percentile(ttft[mine], q)),
                                        float(np.percentile(t, q)) if len(t) else None)
    running = sum(r.batch for rs in plane.replicas.values() for r in rs)
    waiting = plane.waiting()
    bounds = vllm_length_buckets(plane.service.spec.model.max_context_tokens)
    return ServiceObservation(
        requests_per_second=len(done) / window_s,
        input_tokens_mean=float(np.mean(w.input_tokens[done])),
        output_tokens_mean=float(np.mean(w.output_tokens[done])),
        prompt_length_buckets=cumulative_histogram(w.input_tokens[done], bounds),
        output_length_buckets=cumulative_histogram(w.output_tokens[done], bounds),
        ttft_p_seconds=float(np.percentile(ttft, q)),
        tpot_p_seconds=float(np.percentile(tpot[has_tpot], q)) if has_tpot.any() else None,
        slo_attainment=float(np.mean(ok)),
        running=float(running), waiting=float(waiting), by_pool=by_pool, window_seconds=window_s)

