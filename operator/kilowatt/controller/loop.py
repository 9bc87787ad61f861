"""The global control loop: metrics -> demand -> plan -> stabilise -> actuate -> report, once per period.

Deciding is pure (kilowatt.planner); this module gathers the snapshot, applies the decision and reports it.
Missing metrics are a state: a service without data keeps its placement (never scaled down, never to zero),
and says so in ``MetricsAvailable``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from urllib3.exceptions import HTTPError

from kilowatt.api.v1alpha1 import GROUP, VERSION, AcceleratorPool, InferenceService, ScalingMode
from kilowatt.controller.actuator import Actuator, deployment_manifest
from kilowatt.controller.cluster import ClusterView, read_cluster
from kilowatt.controller.conditions import now_iso, set_condition
from kilowatt.controller.events import EventRecorder
from kilowatt.controller.telemetry import Telemetry
from kilowatt.controller.validation import Problem, parse_pool, parse_service, reference_problems
from kilowatt.decide import Decision, Decider, observed_mix
from kilowatt.economics.cost import ZERO, CostBreakdown
from kilowatt.metrics import MetricSource, Observations, ServiceRef
from kilowatt.planner.options import replica_capacity
from kilowatt.planner.snapshot import CurrentPlacement, PoolState
from kilowatt.state import pool_state, service_state

log = logging.getLogger("kilowatt.loop")

FIGURES = ("observed", "sloAttainment", "costPerHourUsd", "powerWatts")  # drift every period
STATUS_REFRESH_SECONDS = 30.0


@dataclass
class LoopConfig:
    period_seconds: float = 15.0
    default_mode: ScalingMode = ScalingMode.ACTIVE
    planner_budget_seconds: float = 0.8
    namespaces: tuple[str, ...] = ()  # empty: all
    poll_seconds: float = 0.5  # how often the kopf daemon asks whether a period is due


class Clock(Protocol):
    """Where the loop reads the time: wall time in a cluster, simulated time in ``kilowatt demo``."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class SimulatedClock:
    """Simulated time (the demo, the soak): ``t_s`` seconds after ``start``, moved by whoever drives it."""

    def __init__(self, start: datetime) -> None:
        self.start, self.t_s = start, 0.0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t_s)

    def monotonic(self) -> float:
        return self.t_s


@dataclass
class PeriodReport:
    """What one period did, for tests, logs and the demo."""

    at: datetime
    metrics_available: bool
    decisions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    desired: dict[str, dict[str, int]] = field(default_factory=dict)  # service -> pool -> replicas
    cost_usd_per_hour: float = 0.0
    planner_seconds: float = 0.0


class ControlLoop:
    def __init__(self, core: Any, apps: Any, custom: Any, source: MetricSource, config: LoopConfig | None = None,
                 telemetry: Telemetry | None = None, clock: Clock | None = None) -> None:
        self.core, self.apps, self.custom = core, apps, custom
        self.clock = clock or SystemClock()
        self.source = source
        self.config = config or LoopConfig()
        self.telemetry = telemetry or Telemetry()
        self.actuator = Actuator(apps)
        self.events = EventRecorder(core)
        self.decider = Decider(self.config.default_mode, self.config.planner_budget_seconds)
        self._last_status: dict[str, dict] = {}
        self._last_write: dict[str, float] = {}
        self._last_pool_status: dict[str, dict] = {}
        self._last_run = -float("inf")
        self._power_factor: dict[str, float] = {}
        self._measured_power: dict[str, float] = {}
        self._price_fallback: dict[str, str] = {}  # pool -> why its price is the fallback this period
        self.last_report: PeriodReport | None = None
        self.periods_run = 0

    @property
    def correction(self):
        return self.decider.correction

    # -- scheduling -------------------------------------------------------------------------------------------------
    def due(self) -> bool:
        return self.clock.monotonic() - self._last_run >= self.config.period_seconds * 0.95

    def request_run(self) -> None:
        """Run at the next opportunity (a spec changed), not at the end of the period."""
        self._last_run = -float("inf")

    def run_if_due(self, now: datetime | None = None) -> PeriodReport | None:
        if not self.due():
            return None
        self._last_run = self.clock.monotonic()
        report = self.run_once(now)
        self.periods_run += 1
        self.telemetry.mark_period()
        self.telemetry.ready = True
        self.last_report = report
        return report

    # -- one period ---------------------------------------------------------------------------------------------
    def run_once(self, now: datetime | None = None) -> PeriodReport:
        now = now or self.clock.now()
        clock = self.clock.monotonic()
        started = time.perf_counter()
        try:
            report = self._period(now, clock)
        except Exception as exc:
            self.telemetry.errors.labels(kind=type(exc).__name__).inc()
            if isinstance(exc, (HTTPError, OSError)):  # the API server is away: one line, and try next period
                log.warning("control period skipped: the API server did not answer (%s)", str(exc).splitlines()[0][:200])
            else:
                log.exception("control period failed")
            report = PeriodReport(now, False, errors=[f"{type(exc).__name__}: {exc}"])
        self.telemetry.period_seconds.observe(time.perf_counter() - started)
        return report

    def _list(self, plural: str) -> list[dict]:
        if plural == "acceleratorpools":
            return self.custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
        if not self.config.namespaces:
            return self.custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
        items = []
        for ns in self.config.namespaces:
            items += self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]
        return items

    def _period(self, now: datetime, clock: float) -> PeriodReport:
        report = PeriodReport(now, True)
        pool_bodies = self._list("acceleratorpools")
        service_bodies = self._list("inferenceservices")
        pools: dict[str, AcceleratorPool] = {}
        for body in pool_bodies:
            pool, problems = parse_pool(body)
            if pool is None:
                self._pool_invalid(body, problems)
            else:
                pools[pool.name] = pool
        services: list[tuple[dict, InferenceService]] = []
        for body in service_bodies:
            if body["metadata"].get("deletionTimestamp"):
                continue
            svc, problems = parse_service(body)
            problems += reference_problems(svc, set(pools)) if svc else []
            if svc is None or problems:
                self._service_invalid(body, problems)
                continue
            services.append((body, svc))

        view = read_cluster(self.core, self.apps, list(pools.values()))
        refs = [ServiceRef(s.metadata.namespace, s.metadata.name, s.spec.slo.percentile,
                           s.spec.slo.ttft_milliseconds / 1000, s.spec.slo.tpot_milliseconds / 1000)
                for _, s in services]
        price_queries = [p.spec.cost.electricity.prometheus.query for p in pools.values()
                         if p.spec.cost.electricity.prometheus is not None]
        obs = self.source.observe(refs, view.node_pools, price_queries)
        report.metrics_available = obs.available
        if not obs.available:
            self.telemetry.errors.labels(kind="MetricsUnavailable").inc()

        pool_states = self._pool_states(pools, view, obs)
        current: dict[str, dict[str, CurrentPlacement]] = {s.key: {} for _, s in services}
        for (key, pool), r in view.deployments.items():
            if key in current:
                current[key][pool] = CurrentPlacement(r.replicas, r.tensor_parallel, r.ready)
        decided = self.decider.decide(now, clock, [s for _, s in services], pools, pool_states, current, obs)
        if decided.plan is not None:
            report.planner_seconds = decided.plan.solve_seconds
            self.telemetry.planner_seconds.observe(decided.plan.solve_seconds)
        self._power_factor = self._measured_power_factors(
            pools, view, pool_states, obs, now,
            [(s, current[s.key], obs.services.get(s.key) if obs.available else None) for _, s in services])
        for body, svc in services:
            decision = decided.decisions[svc.key]
            data = obs.services.get(svc.key) if obs.available else None
            if decision.held:
                self._report(body, svc, current[svc.key], decision.desired, dict(decision.tensor_parallel), data,
                             obs, pools, pool_states, decision.reason, None, report, changed=False, now=now)
            else:
                self._act(body, svc, current[svc.key], data, decision, obs, pools, pool_states, report, now)
        self._report_pools(pools, view, pool_states, now)
        report.cost_usd_per_hour = sum(self._last_status.get(s.key, {}).get("costPerHourUsd", 0.0)
                                       for _, s in services)
        return report

    # -- pieces ---------------------------------------------------------------------------------------------------
    def _pool_states(self, pools: dict[str, AcceleratorPool], view: ClusterView, obs: Observations) -> dict[str, PoolState]:
        out = {}
        for name, pool in pools.items():
            gpus = view.gpus_by_pool.get(name, 0)
            if name in view.unschedulable_pools:
                # Pods wait for room the nodes do not have: the pool is full at what is scheduled now.
                gpus = min(gpus, view.scheduled_gpus_by_pool.get(name, 0))
            price = None
            prom = pool.spec.cost.electricity.prometheus
            self._price_fallback.pop(name, None)
            if prom is not None:
                price = obs.prices_usd_per_kwh.get(prom.query)
                if price is None:
                    price = prom.fallback_usd_per_kwh
                    why = obs.error if not obs.available else f"the price query returned no sample ({prom.query})"
                    self._price_fallback[name] = (f"{why}; using spec.cost.electricity.prometheus."
                                                  f"fallbackUsdPerKWh ${price:g}/kWh")
            out[name] = pool_state(pool, gpus, price)
        return out

    def _act(self, body, svc, current, data, decision: Decision, obs, pools, pool_states, report, now) -> None:
        key = svc.key
        desired, tp, reason, binding, changed = (decision.desired, dict(decision.tensor_parallel), decision.reason,
                                                 decision.binding, decision.changed)
        mode = self.decider.mode(svc)
        report.desired[key] = desired
        if mode is ScalingMode.ACTIVE:
            for pool_name, replicas in desired.items():
                if pool_name in current and current[pool_name].replicas == replicas and \
                        current[pool_name].tensor_parallel == tp[pool_name]:
                    continue
                if replicas == 0 and pool_name not in current:
                    continue
                self.actuator.apply(deployment_manifest(body, pools[pool_name], replicas, tp[pool_name]))
                self.telemetry.actuations.inc()
        if changed:
            summary = ", ".join(f"{p} {current[p].replicas if p in current else 0}→{desired.get(p, 0)}"
                                for p in sorted(desired))
            verb = "scaled" if mode is ScalingMode.ACTIVE else "would scale (Advisory)"
            message = f"{verb} {svc.metadata.name}: {summary}: {reason}"
            self.events.post(body, "Normal", "Scaled" if mode is ScalingMode.ACTIVE else "Recommendation", message)
            self.telemetry.decisions.labels(kind="binding" if binding else "placement").inc()
            report.decisions.append(message)
        self._report(body, svc, current, desired, tp, data, obs, pools, pool_states, reason, binding, report,
                     changed=changed, now=now)

    def _report(self, body, svc, current, desired, tp, data, obs, pools, pool_states, reason, binding, report,
                changed, now) -> None:
        key = svc.key
        previous = self._last_status.get(key) or dict(body.get("status") or {})
        conditions = list(previous.get("conditions") or [])
        placement = [{"pool": p, "desiredReplicas": n, "readyReplicas": current[p].ready if p in current else 0,
                      "tensorParallel": tp.get(p, 1)} for p, n in sorted(desired.items())]
        ready = sum(x["readyReplicas"] for x in placement)
        wanted = sum(x["desiredReplicas"] for x in placement)
        cost = self._cost(svc, desired, tp, data, pools, pool_states, now)
        summary = " ".join(
            f"{n}×{pools[p].spec.gpu.model}" + (f"(tp{tp[p]})" if tp.get(p, 1) > 1 else "")
            for p, n in sorted(desired.items()) if n > 0 and p in pools) or "0"
        slo_met = None
        if data is not None and data.ttft_p_seconds is not None and data.tpot_p_seconds is not None:
            slo_met = (data.ttft_p_seconds <= svc.spec.slo.ttft_milliseconds / 1000
                       and data.tpot_p_seconds <= svc.spec.slo.tpot_milliseconds / 1000)
        conditions = set_condition(conditions, "MetricsAvailable", data is not None,
                                   "Observed" if data is not None else ("PrometheusUnavailable" if not obs.available
                                                                         else "NoSeries"),
                                   "latency and load observed" if data is not None else
                                   (obs.error or f"no vLLM series for {key} yet") + "; placement held")
        self._metrics_transition(body, conditions, previous, data is not None)
        conditions = set_condition(conditions, "Placed", binding is None, "Planned" if binding is None else
                                   "CapacityShort", reason if binding is None else binding)
        conditions = set_condition(conditions, "SLOMet", slo_met, {None: "Unknown", True: "WithinTargets",
                                                                    False: "AboveTargets"}[slo_met],
                                   _slo_text(svc, data))
        conditions = set_condition(conditions, "Ready", ready > 0 and ready >= min(wanted, 1),
                                   "ReplicasReady" if ready > 0 else "NoReadyReplicas", f"{ready}/{wanted} replicas ready")
        status = {
            "placement": placement,
            "placementSummary": summary,
            "desiredReplicas": wanted,
            "readyReplicas": ready,
            "observed": _observed(data),
            "sloAttainment": round(data.slo_attainment, 4) if data and data.slo_attainment is not None else None,
            "sloMet": {None: "Unknown", True: "True", False: "False"}[slo_met],
            "costPerHourUsd": round(cost.total_usd_per_hour, 4),
            "powerWatts": round(cost.power_watts, 1),
            "lastDecision": ({"time": now_iso(), "reason": reason} if changed or not previous.get("lastDecision")
                             else previous.get("lastDecision")),
            "conditions": conditions,
            "observedGeneration": body["metadata"].get("generation"),
        }
        self._write_status(body, status)
        for p in desired:
            self.telemetry.desired.labels(namespace=svc.metadata.namespace, service=svc.metadata.name,
                                          pool=p).set(desired[p])
            self.telemetry.current.labels(namespace=svc.metadata.namespace, service=svc.metadata.name,
                                          pool=p).set(current[p].ready if p in current else 0)
        self.telemetry.cost.labels(namespace=svc.metadata.namespace, service=svc.metadata.name).set(
            cost.total_usd_per_hour)
        self.telemetry.power.labels(namespace=svc.metadata.namespace, service=svc.metadata.name).set(cost.power_watts)

    def _metrics_transition(self, body: dict, conditions: list[dict], previous: dict, available: bool) -> None:
        """A Warning event when a service's metrics go missing (placement held), a Normal one when they return."""
        before = _condition(previous.get("conditions"), "MetricsAvailable")
        now = _condition(conditions, "MetricsAvailable")
        if before is None or now is None or before.get("status") == now.get("status"):
            return
        if available:
            self.events.post(body, "Normal", "MetricsRestored", "latency and load observed again; planning resumes")
        else:
            self.events.post(body, "Warning", "MetricsUnavailable", now.get("message", ""))

    def _measured_power_factors(self, pools, view, pool_states, obs, now, services) -> dict[str, float]:
        """Measured (DCGM) over modelled power per pool, for the replicas running now: it scales the energy
        part of every cost on that pool, so reported cost follows the meters, not only the model."""
        modelled: dict[str, float] = {}
        for svc, current, data in services:
            running = {p: c.replicas for p, c in current.items() if c.replicas > 0}
            tp = {p: c.tensor_parallel for p, c in current.items()}
            for p in running:
                if p in pool_states:
                    cost = self._cost(svc, {p: running[p]}, tp, data, pools, pool_states, now, factors={})
                    modelled[p] = modelled.get(p, 0.0) + cost.power_watts / pool_states[p].economics.pue
        factors = {}
        for name, measured in obs.pools.items():
            if measured.power_watts and modelled.get(name, 0.0) > 0:
                factors[name] = min(3.0, max(1 / 3, measured.power_watts / modelled[name]))
        self._measured_power = {n: o.power_watts for n, o in obs.pools.items() if o.power_watts is not None}
        return factors

    def _cost(self, svc, desired, tp, data, pools, pool_states, now, factors=None) -> CostBreakdown:
        factors = self._power_factor if factors is None else factors
        total = ZERO
        state = service_state(svc, data.requests_per_second if data else 0.0, observed_mix(data) if data else None)
        capacity = sum(replica_capacity(state, pool_states[p], tp.get(p, 1))[0] * n
                       for p, n in desired.items() if p in pool_states)
        for p, n in desired.items():
            if n <= 0 or p not in pool_states:
                continue
            within, saturation = replica_capacity(state, pool_states[p], tp.get(p, 1))
            share = state.demand_rps * (within / capacity) / n if capacity > 0 else 0.0
            utilisation = share / saturation if saturation > 0 else 0.0
            replica = pool_states[p].economics.replica_cost(tp.get(p, 1), utilisation, now)
            f = factors.get(p, 1.0)
            replica = CostBreakdown(replica.hardware_usd_per_hour, replica.energy_usd_per_hour * f,
                                    replica.power_watts * f)
            total = total + replica.scaled(n)
        return total

    def _write_status(self, body: dict, status: dict) -> None:
        """Patch status when a decision changed (placement, conditions, generation) at once; when only the
        drifting figures changed (observed load, cost, power), at most every STATUS_REFRESH_SECONDS — so 1000
        services at steady load do not cost 1000 PATCHes a period."""
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        last = self._last_status.get(key)
        # A condition's status or reason is a decision; its message quotes figures (demand, latency) that drift.
        decisive = lambda st: ({k: v for k, v in st.items() if k not in FIGURES and k != "conditions"},  # noqa: E731
                               [{k: v for k, v in c.items() if k not in ("lastTransitionTime", "message")}
                                for c in st.get("conditions") or []])
        if last is not None:
            if decisive(last) == decisive(status):
                if all(last.get(k) == status.get(k) for k in FIGURES) and last.get("conditions") == status.get(
                        "conditions"):
                    return
                if time.monotonic() - self._last_write.get(key, 0.0) < STATUS_REFRESH_SECONDS:
                    return
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"], "inferenceservices",
                                                          meta["name"], {"status": status})
        self._last_status[key] = status
        self._last_write[key] = time.monotonic()

    def _service_invalid(self, body: dict, problems: list[Problem]) -> None:
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        text = "; ".join(str(p) for p in problems)
        status = dict(body.get("status") or {})
        if _condition_message(status, "Ready") == text:
            return
        conditions = set_condition(status.get("conditions") or [], "Ready", False, "InvalidSpec", text)
        conditions = set_condition(conditions, "Placed", False, "InvalidSpec", text)
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], "inferenceservices", meta["name"],
            {"status": {"conditions": conditions, "observedGeneration": meta.get("generation")}})
        self.events.post(body, "Warning", "InvalidSpec", text)
        self._last_status.pop(key, None)

    def _pool_invalid(self, body: dict, problems: list[Problem]) -> None:
        text = "; ".join(str(p) for p in problems)
        status = dict(body.get("status") or {})
        if _condition_message(status, "Ready") == text:
            return
        conditions = set_condition(status.get("conditions") or [], "Ready", False, "InvalidSpec", text)
        self.custom.patch_cluster_custom_object_status(GROUP, VERSION, "acceleratorpools", body["metadata"]["name"],
                                                       {"status": {"conditions": conditions}})
        self.events.post(body, "Warning", "InvalidSpec", text)

    def _report_pools(self, pools, view: ClusterView, pool_states: dict[str, PoolState], now) -> None:
        used: dict[str, int] = {}
        for (svc, pool), r in view.deployments.items():
            used[pool] = used.get(pool, 0) + r.ready * r.tensor_parallel
        for name, pool in pools.items():
            state = pool_states[name]
            gpus = view.gpus_by_pool.get(name, 0)
            if pool.spec.max_gpus is not None:
                gpus = min(gpus, pool.spec.max_gpus)
            utilisation = 0.6  # effective $/GPU-h is quoted at a typical serving load
            status = {
                "gpusTotal": gpus,
                "gpusInUse": used.get(name, 0),
                "electricityUsdPerKWh": round(state.economics.price.usd_per_kwh(now), 4),
                "effectiveUsdPerGPUHour": round(state.economics.effective_usd_per_gpu_hour(utilisation, now), 4),
            }
            measured = self._measured_power.get(name)
            if measured is not None:
                status["measuredPowerWatts"] = round(measured * state.economics.pue, 1)  # at the wall
                in_use = used.get(name, 0)
                if in_use > 0:
                    # Hardware plus the energy the meters say each GPU in use draws, at today's price.
                    per_gpu_kw = measured / in_use / 1000.0
                    status["effectiveUsdPerGPUHour"] = round(
                        state.economics.usd_per_gpu_hour
                        + per_gpu_kw * state.economics.pue * state.economics.price.usd_per_kwh(now), 4)
            nodes = view.nodes_by_pool.get(name, [])
            previous = self._last_pool_status.get(name, {})
            unusable = view.unusable_nodes_by_pool.get(name, [])
            if not nodes:
                ready, reason = False, "NoMatchingNodes"
                message = (f"no node matches nodeSelector {pool.spec.node_selector}; label the GPU nodes or fix "
                           "spec.nodeSelector")
            elif gpus <= 0:
                ready, reason = False, "NoUsableGPUs"
                message = (f"{len(nodes)} node(s), none usable (cordoned or not Ready: {', '.join(unusable)}); "
                           "uncordon or repair them" if unusable else
                           f"{len(nodes)} node(s) with no allocatable nvidia.com/gpu; is the NVIDIA device plugin "
                           "running on them?")
            else:
                ready, reason = True, "NodesFound"
                message = f"{len(nodes)} node(s), {gpus} GPU(s)" + (
                    f"; not used: {', '.join(unusable)} (cordoned or not Ready)" if unusable else "")
            conditions = set_condition(previous.get("conditions") or [], "Ready", ready, reason, message)
            fallback = self._price_fallback.get(name)
            if pool.spec.cost.electricity.prometheus is not None:
                conditions = set_condition(conditions, "PriceAvailable", fallback is None,
                                           "Observed" if fallback is None else "Fallback",
                                           fallback or "price read from Prometheus")
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AcceleratorPool",
                    "metadata": {"name": name, "namespace": None, "uid": getattr(pool.metadata, "uid", None)}}
            for type_, bad, good in (("Ready", "PoolUnavailable", "PoolAvailable"),
                                     ("PriceAvailable", "PriceFallback", "PriceRestored")):
                was, cond = _condition(previous.get("conditions"), type_), _condition(conditions, type_)
                if cond is not None and (was or {}).get("status", "True") != cond["status"]:
                    self.events.post(body, "Warning" if cond["status"] == "False" else "Normal",
                                     bad if cond["status"] == "False" else good, cond["message"])
            status["conditions"] = conditions
            if not ready and _condition_message(previous, "Ready") != message:
                log.warning("pool %s: %s", name, message)
            if {k: v for k, v in previous.items() if k != "conditions"} == {k: v for k, v in status.items()
                                                                            if k != "conditions"} \
                    and _conditions_same(previous.get("conditions"), conditions):
                continue
            self.custom.patch_cluster_custom_object_status(GROUP, VERSION, "acceleratorpools", name, {"status": status})
            self._last_pool_status[name] = status

    def forget(self, key: str) -> None:
        self._last_status.pop(key, None)
        self.decider.forget(key)


def _observed(data: Any) -> dict | None:
    if data is None:
        return None
    ms = lambda s: round(s * 1000, 1) if s is not None else None  # noqa: E731
    return {
        "requestsPerSecond": round(data.requests_per_second, 3),
        "inputTokensMean": round(data.input_tokens_mean, 1) if data.input_tokens_mean else None,
        "outputTokensMean": round(data.output_tokens_mean, 1) if data.output_tokens_mean else None,
        "ttftP95Milliseconds": ms(data.ttft_p_seconds),
        "tpotP95Milliseconds": ms(data.tpot_p_seconds),
    }


def _slo_text(svc: InferenceService, data: Any) -> str:
    slo = svc.spec.slo
    if data is None or data.ttft_p_seconds is None or data.tpot_p_seconds is None:
        return "no latency observed"
    return (f"p{slo.percentile:g} TTFT {data.ttft_p_seconds * 1000:.0f} ms (target {slo.ttft_milliseconds:g}), "
            f"TPOT {data.tpot_p_seconds * 1000:.1f} ms (target {slo.tpot_milliseconds:g})")


def _conditions_same(a: list | None, b: list | None) -> bool:
    strip = lambda cs: [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in cs or []]  # noqa: E731
    return strip(a) == strip(b)


def _condition(conditions: list | None, type_: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)


def _condition_message(status: dict, type_: str) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return c.get("message")
    return None
