"""The global control loop, once per period: observe -> decide -> account -> report -> apply.

- observe (``controller.observe``): API objects, nodes, Deployments, Pods and metrics -> one ``PeriodInput``;
- decide (``kilowatt.decide.Decider``): demand, plan, stabilise — pure, shared with the twin;
- account (``planner.cost``): what each placement costs at its load, corrected by the power meters;
- report (``controller.status``): pure functions to each object's status and the events it calls for;
- apply (``controller.apply``): Deployments, status and events written to the API server.

Missing metrics are a state: a service without data keeps its placement (never scaled down, never to zero),
and says so in ``MetricsAvailable``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from kilowatt.api.v1alpha1 import ScalingMode
from kilowatt.clock import Clock, SimulatedClock, SystemClock
from kilowatt.controller.apply import Applier
from kilowatt.controller.observe import ObservedService, ParseMemo, PeriodInput, observe
from kilowatt.controller.reads import Lister, Reads
from kilowatt.controller.status import pool_status, scaled_event, service_status
from kilowatt.controller.telemetry import Telemetry
from kilowatt.decide import CURVE_CATCHUP_SHARE, Decision, Decider
from kilowatt.metrics import MetricSource
from kilowatt.planner import PLANNER_BUDGET_SECONDS
from kilowatt.planner.cost import measured_power_factors, placement_cost
from kilowatt.planner.options import replica_capacity

log = logging.getLogger("kilowatt.loop")
WRITE_CONCURRENCY = 16
WRITE_CHUNKS_PER_WRITER = 4  # tasks per writer thread a period's services are split into (few futures, balanced)
__all__ = ["WRITE_CONCURRENCY", "Clock", "ControlLoop", "LoopConfig", "PeriodReport", "SimulatedClock", "SystemClock"]


@dataclass
class LoopConfig:
    period_seconds: float = 15.0
    default_mode: ScalingMode = ScalingMode.ACTIVE
    planner_budget_seconds: float = PLANNER_BUDGET_SECONDS
    namespaces: tuple[str, ...] = ()  # empty: all
    poll_seconds: float = 0.5  # how often the kopf daemon asks whether a period is due
    # Services applied at once (Deployments, routing objects, events, status): each service's writes in order on
    # one thread, different services' in parallel (a few per task), at most this many HTTP requests in flight.
    write_concurrency: int = WRITE_CONCURRENCY


@dataclass
class PeriodReport:
    """What one period did, for tests, logs and the demo."""

    at: datetime
    metrics_available: bool
    decisions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    desired: dict[str, dict[str, int]] = field(default_factory=dict)  # service -> pool -> replicas
    cost_usd_per_hour: float = 0.0  # every placed service, this period
    planner_seconds: float = 0.0


@dataclass(frozen=True)
class Applied:
    """What applying one service's decision did, merged into the period's report on the loop's thread."""

    cost_usd_per_hour: float
    desired: dict[str, int] | None  # None: held, nothing applied
    decision: str | None  # the Scaled event's message when the placement changed


class ControlLoop:
    def __init__(self, core: Any, apps: Any, custom: Any, source: MetricSource, config: LoopConfig | None = None,
                 telemetry: Telemetry | None = None, clock: Clock | None = None, reads: Reads | None = None) -> None:
        """``reads``: where periods read the API objects: ``Informers`` (watches, as ``kilowatt run``) or a ``Lister``."""
        self.core, self.apps, self.custom = core, apps, custom
        self.clock = clock or SystemClock()
        self.source = source
        self.config = config or LoopConfig()
        self.telemetry = telemetry or Telemetry()
        self.reads = reads or Lister(core, apps, custom, self.config.namespaces)
        self._parsed = ParseMemo()
        self.applier = Applier(core, apps, custom, self.telemetry, self.clock, self.reads)
        self.decider = Decider(self.config.default_mode, self.config.planner_budget_seconds)
        self._last_run = -float("inf")
        self._forgotten: set[str] = set()  # services deleted since the last period (kopf's handler threads)
        self._forgotten_lock = threading.Lock()
        self._writers = ThreadPoolExecutor(max_workers=max(1, self.config.write_concurrency),
                                           thread_name_prefix="kilowatt-apply")
        self.last_report: PeriodReport | None = None
        self.periods_run = 0

    @property
    def actuator(self):
        return self.applier.actuator

    def due(self) -> bool:
        return self.clock.monotonic() - self._last_run >= self.config.period_seconds * 0.95

    def request_run(self) -> None:
        """Run at the next opportunity (a spec changed), not at the end of the period."""
        self._last_run = -float("inf")

    def forget(self, key: str) -> None:
        """A service was deleted: drop what is remembered of it before the next period. Safe from any thread."""
        with self._forgotten_lock:
            self._forgotten.add(key)

    def run_if_due(self, now: datetime | None = None) -> PeriodReport | None:
        if not self.due():
            return None
        self._last_run = self.clock.monotonic()
        self.telemetry.leader.set(1)
        report = self.run_once(now)
        self.decider.catch_up(self.config.period_seconds * CURVE_CATCHUP_SHARE)  # after the writes: idle time
        self.last_report = report  # before the count moves: whoever sees the count sees this report
        self.periods_run += 1
        self.telemetry.mark_period()
        self.telemetry.ready = True
        return report

    def stand_by(self) -> None:
        """Another operator holds peering: nothing this period (asked again at the next)."""
        self._last_run = self.clock.monotonic()
        self.telemetry.leader.set(0)

    def run_once(self, now: datetime | None = None) -> PeriodReport:
        now = now or self.clock.now()
        started = time.perf_counter()
        try:
            report = self._period(now, self.clock.monotonic())
        except Exception as exc:
            self.telemetry.errors.labels(kind=type(exc).__name__).inc()
            if isinstance(exc, (HTTPError, OSError)):  # the API server is away: one line, and try next period
                log.warning("control period skipped: the API server did not answer (%s)", str(exc).splitlines()[0][:200])
            else:
                log.exception("control period failed")
            report = PeriodReport(now, False, errors=[f"{type(exc).__name__}: {exc}"])
        self.telemetry.period_seconds.observe(time.perf_counter() - started)
        return report

    def _period(self, now: datetime, clock_seconds: float) -> PeriodReport:
        self._drop_forgotten()
        seen = observe(self.reads, self.core, self.source, self.config.namespaces, self._parsed)
        report = PeriodReport(now, seen.observations.available)
        if not seen.observations.available:
            self.telemetry.errors.labels(kind="MetricsUnavailable").inc()
        for body, problems in seen.invalid_pools:
            self.applier.invalid_pool(body, problems)
        for body, problems in seen.invalid_services:
            self.applier.invalid_service(body, problems)
        for key in {orphan[0] for orphan in seen.orphans}:
            self.forget(key)
        for _, namespace, name, api_version, kind in seen.orphans:
            self.applier.actuator.delete(namespace, name, api_version, kind)
            log.info("deleted %s %s/%s: its InferenceService is gone", kind, namespace, name)

        decided = self.decider.decide(now, clock_seconds, [s.input for s in seen.services], seen.pools,
                                      seen.pool_states, seen.metrics_error)
        if decided.plan is not None:
            report.planner_seconds = decided.plan.solve_seconds
            self.telemetry.planner_seconds.observe(decided.plan.solve_seconds)
        factors = self._power_factors(seen, now)
        # Each service in one task only (its own objects): no Deployment is written by two threads in a period.
        size = max(1, math.ceil(len(seen.services) / (WRITE_CHUNKS_PER_WRITER * self.config.write_concurrency)))
        chunks = [seen.services[i:i + size] for i in range(0, len(seen.services), size)]
        done = [self._writers.submit(self._chunk, chunk, decided.decisions, seen, factors, now) for chunk in chunks]
        for chunk, future in zip(chunks, done):  # in the services' order, whatever order they finished in
            for item, outcome in zip(chunk, future.result()):
                if isinstance(outcome, ApiException):  # the API server refused this service's write: mark it, go on
                    self.telemetry.errors.labels(kind="ApplyFailed").inc()
                    report.errors.append(self.applier.apply_failed(item.body, outcome))
                    continue
                report.cost_usd_per_hour += outcome.cost_usd_per_hour
                report.desired.update({item.key: outcome.desired} if outcome.desired is not None else {})
                report.decisions += [outcome.decision] if outcome.decision is not None else []
        for name, pool in seen.pools.items():
            status, events = pool_status(pool, seen.pool_states[name], seen.view,
                                         seen.observations.pools[name].power_watts
                                         if name in seen.observations.pools else None,
                                         seen.price_fallbacks.get(name), self.applier.previous_pool_status(name), now)
            self.applier.pool_status(pool, status, events)
        return report

    def _chunk(self, items: list[ObservedService], decisions: dict[str, Decision], seen: PeriodInput, factors:
               dict[str, float], now: datetime) -> list[Applied | ApiException]:
        """One writer thread's task: a few services in turn; a refused write gives its ApiException, the rest go on."""
        out: list[Applied | ApiException] = []
        for item in items:
            try:
                out.append(self._service(item, decisions[item.key], seen, factors, now))
            except ApiException as exc:
                out.append(exc)
        return out

    def _service(self, item: ObservedService, decision: Decision, seen: PeriodInput, factors: dict[str, float],
                 now: datetime) -> Applied:
        """Apply and report one service's decision (on a writer thread: it touches this service's objects only)."""
        mode = self.decider.mode(item.input.service)
        routed = None
        desired, message = None, None
        if not decision.held:
            desired = decision.desired
            self.applier.deployments(item, decision, seen.pools, mode)
            if mode is ScalingMode.ACTIVE:
                routed = self.applier.routes(
                    item, decision, seen.served_apis, seen.routing_objects.get(item.key, {}),
                    lambda pool, k: replica_capacity(item.input.state, seen.pool_states[pool], k,
                                                     self.decider.capacity)[0])
            if decision.changed:
                event = scaled_event(item, decision, mode is ScalingMode.ACTIVE)
                self.applier.post(item.body, [event])
                self.telemetry.decisions.labels(kind="binding" if decision.binding else "placement").inc()
                message = event.message
        served = replace(item.input.state, demand_rps=item.input.data.requests_per_second if item.input.data else 0.0)
        cost = placement_cost(served, {p: (n, decision.tensor_parallel.get(p, 1)) for p, n in decision.desired.items()},
                              seen.pool_states, now, factors, self.decider.capacity)
        status, events = service_status(item, decision, cost, self.applier.previous_status(item), seen.pools,
                                        seen.metrics_error, now, seen.observations.metric_names, routed)
        self.applier.post(item.body, events)
        self.applier.service_status(item.body, status)
        self.telemetry.record_service(item.input.service, decision, item.input.current, cost)
        return Applied(cost.total_usd_per_hour, desired, message)

    def _power_factors(self, seen: PeriodInput, now: datetime) -> dict[str, float]:
        running = [(replace(s.input.state, demand_rps=s.input.data.requests_per_second if s.input.data else 0.0),
                    {p: (c.replicas, c.tensor_parallel) for p, c in s.input.current.items()}) for s in seen.services]
        measured = {p: o.power_watts for p, o in seen.observations.pools.items() if o.power_watts is not None}
        return measured_power_factors(running, seen.pool_states, measured, now, self.decider.capacity)

    def close(self) -> None:
        """Stop the watches (if reading from them) and the writer threads."""
        self.reads.stop()
        self._writers.shutdown(wait=False)

    def _drop_forgotten(self) -> None:
        with self._forgotten_lock:
            keys, self._forgotten = self._forgotten, set()
        for key in keys:
            self.applier.forget(key)
            self.decider.forget(key)
