"""`kilowatt demo`: the real operator against a real API server, with the twin as its data plane.

One simulated control period at a time:

1. the twin serves the trace's requests up to the period's end on the replicas that run now;
2. the simulated clock moves to the period's end and the operator — started exactly as ``kilowatt run`` starts
   it (kopf, handlers, control loop), reading metrics through its MetricSource interface from the twin instead of
   Prometheus — runs its period: plan, Deployments applied to the API server, status, events;
3. the demo reads the Deployments back from the API server, makes the twin run what they ask for (new replicas
   serve after the pool's ``replicaStartupSeconds``) and writes each Deployment's status as a cluster would.

The clock only moves when the operator has run, so the demo is as fast as ``--speed`` asks or as the machine
allows, never faster than the operator can decide. Every twin policy starts warm (replicas sized for the
trace's first minute already serving); so does the demo, so its figures compare with the baselines'.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from kubernetes import client, config

from kilowatt.slo import within_slo
from kilowatt.api.v1alpha1 import AcceleratorPool, InferenceService
from kilowatt.controller.actuator import ANNOTATION_TP, LABEL_POOL, LABEL_SERVICE
from kilowatt.clock import SimulatedClock
from kilowatt.demo.cluster import (
    apply_objects,
    build_binaries,
    create_nodes,
    install_crds,
    manifest_documents,
    missing_binaries,
)
from kilowatt.demo.view import Frame, Header, LiveView, PlainView, PoolFrame, View
from kilowatt.metrics.source import Observations, ServiceObservation, ServiceRef, Topology
from kilowatt.runner import RunOptions, build_loop, serve
from kilowatt.demo.controlplane import ControlPlane, ControlPlaneError, free_port
from kilowatt.twin.dataplane import DataPlane, SimulatedMetrics
from kilowatt.twin.simulate import DRAIN_LIMIT_SECONDS, PolicyResult, opening_rps, simulate, summarise
from kilowatt.twin.workload import Workload

log = logging.getLogger("kilowatt.demo")

OPERATOR_PERIOD_TIMEOUT_SECONDS = 60.0  # wall seconds to wait for one operator period before giving up
BASELINES = ("hpa-h100", "hpa-rtx4090", "static-peak", "melange", "keda", "lower-bound")


class DemoError(RuntimeError):
    """Something the user can act on; the message says what."""


class DemoMetrics:
    """The operator's MetricSource over the twin, behind the lock the demo holds while the twin runs; before the
    twin has served anything it reports the rate the service was already serving (the warm start)."""

    def __init__(self, plane: DataPlane, lock: threading.Lock, initial_rps: float) -> None:
        self.metrics = SimulatedMetrics(plane)
        self.plane = plane
        self.lock = lock
        self.initial_rps = initial_rps

    def observe(self, services: list[ServiceRef], topology: Topology, price_queries: list[str]) -> Observations:
        with self.lock:
            if self.plane.now == 0.0:
                svc = self.plane.service
                mix = self.plane.mix
                return Observations(True, services={svc.key: ServiceObservation(
                    self.initial_rps, mix.input_tokens, mix.output_tokens, None, None, None)})
            return self.metrics.observe(services, topology, price_queries)


@dataclass
class DemoOptions:
    workload: Workload
    service: InferenceService
    pools: list[AcceleratorPool]
    files: list[str]
    start: datetime
    speed: float = 500.0  # simulated seconds per wall second; 0: as fast as the machine goes
    period_seconds: float = 60.0
    report: str | None = None
    tui: bool = True
    kubeconfig: str | None = None  # an existing API server instead of the embedded one
    baselines: tuple[str, ...] = BASELINES
    seed: int = 0
    prices: dict = field(default_factory=dict)


@dataclass
class DemoOutcome:
    result: PolicyResult
    baselines: list[PolicyResult]
    deployment_changes: int
    decisions: int
    interrupted: bool
    report: Path | None
    summary: dict


CHANGED_BACK_WITHIN_SECONDS = 3600.0


class Demo:
    def __init__(self, options: DemoOptions, out=None) -> None:
        self.o = options
        self.out = out or sys.stdout
        self.lock = threading.Lock()
        self.clock = SimulatedClock(options.start)
        self.plane = DataPlane(options.workload, options.service, options.pools, options.prices, options.start,
                               seed=options.seed)
        w = options.workload
        self.initial_rps = opening_rps(w)
        self.control_plane: ControlPlane | None = None
        self.operator_thread: threading.Thread | None = None
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.operator_error: BaseException | None = None
        self.loop = None
        self.view: View | None = None
        self.deployment_changes = 0
        self.decisions = 0
        self._generations: dict[str, int] = {}
        # Tensor-parallel degree changes (a rollout: every replica of the pool restarts), and those that changed a
        # degree back to what it was less than an hour (simulated) before.
        self.degree_changes = 0
        self.degree_changed_back = 0
        self._degrees: dict[str, tuple[int, float, int | None]] = {}  # pool -> (degree, since s, the one before)
        self._ok = 0
        self._finished = 0
        self._interrupted = False
        self._driving = False  # the simulated clock is running: a Ctrl-C stops it at the end of a period

    # -- set-up ---------------------------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.view is not None:
            self.view.say(text)
        else:
            print(text, file=self.out, flush=True)

    def _cluster(self) -> str:
        if self.o.kubeconfig:
            return self.o.kubeconfig
        if missing_binaries():
            build_binaries(self._say, sys.stderr.isatty() and self.o.tui)
        started = time.monotonic()
        self._say("starting the embedded control plane (kube-apiserver + etcd on 127.0.0.1)…")
        self.control_plane = ControlPlane().start()
        self._say(f"  ready in {time.monotonic() - started:.1f}s: {self.control_plane.server}")
        return str(self.control_plane.kubeconfig)

    def _install(self, kubeconfig: str) -> client.ApiClient:
        api = config.new_client_from_config(config_file=kubeconfig)
        install_crds(api)
        apply_objects(api, manifest_documents(self.o.files))
        gpus = create_nodes(api, self.o.pools)
        self._say("applied the CRDs and " + ", ".join(self.o.files) + "; nodes: " +
                  ", ".join(f"{n} GPUs in pool {p}" for p, n in gpus.items()))
        return api

    def _start_operator(self, kubeconfig: str) -> None:
        os.environ["KUBECONFIG"] = kubeconfig
        options = RunOptions(prometheus_url="(the twin)", period_seconds=self.o.period_seconds, standalone=True,
                             metrics_port=free_port(), poll_seconds=0.01)
        source = DemoMetrics(self.plane, self.lock, self.initial_rps)
        self.loop = build_loop(options, kubeconfig, source, self.clock)

        def run() -> None:
            try:
                asyncio.run(serve(options, self.loop, self.stop_flag, self.ready_flag))
            except BaseException as exc:  # noqa: BLE001 - reported by the demo
                self.operator_error = exc

        self.operator_thread = threading.Thread(target=run, name="kilowatt-operator", daemon=True)
        self.operator_thread.start()
        deadline = time.monotonic() + 60
        while not self.ready_flag.is_set():
            if self.operator_error is not None or time.monotonic() > deadline:
                raise DemoError(f"the operator did not start: {self.operator_error or 'no answer in 60 s'}")
            time.sleep(0.05)
        self._say(f"operator running (kopf, as `kilowatt run`), metrics on http://127.0.0.1:{options.metrics_port}"
                  "/metrics; its metrics come from the twin through the same interface as from Prometheus")

    # -- one period -----------------------------------------------------------------------------------------------
    def _operator_period(self) -> None:
        """Let the operator run one period at the clock's time, and wait until it has."""
        before = self.loop.periods_run
        deadline = time.monotonic() + OPERATOR_PERIOD_TIMEOUT_SECONDS
        while self.loop.periods_run <= before:
            if self.operator_error is not None:
                raise DemoError(f"the operator stopped: {self.operator_error}")
            if time.monotonic() > deadline:
                raise DemoError(f"the operator ran no control period in {OPERATOR_PERIOD_TIMEOUT_SECONDS:.0f}s "
                                "of wall time; see its log above")
            time.sleep(0.002)
        report = self.loop.last_report
        for message in report.decisions if report else []:
            self.decisions += 1
            self.view.decision(self.clock.now(), message)
        for error in report.errors if report else []:
            self.view.say(f"operator error: {error}")

    def _sync(self, apps: client.AppsV1Api, warm: bool = False) -> None:
        """Run in the twin what the Deployments ask for; write back their status as a cluster would."""
        svc = self.o.service
        deployments = apps.list_namespaced_deployment(svc.metadata.namespace,
                                                      label_selector=f"{LABEL_SERVICE}={svc.metadata.name}").items
        desired = {}
        for d in deployments:
            pool = (d.metadata.labels or {}).get(LABEL_POOL)
            if pool not in self.plane.pools:
                continue
            tp = int((d.metadata.annotations or {}).get(ANNOTATION_TP, "1"))
            desired[pool] = (d.spec.replicas or 0, tp)
            self._note_degree(pool, tp, d.spec.replicas or 0)
            generation = d.metadata.generation or 0
            if self._generations.get(d.metadata.name, generation) != generation:
                self.deployment_changes += 1
            self._generations[d.metadata.name] = generation
        with self.lock:
            self.plane.apply(desired)
            if warm:  # what ran before the demo started is already serving
                self.plane.warm_start()
            placement = self.plane.placement()
        for d in deployments:
            pool = (d.metadata.labels or {}).get(LABEL_POOL)
            want = d.spec.replicas or 0
            ready = placement[pool].ready if pool in placement else 0
            status = d.status
            if status and status.replicas == want and (status.ready_replicas or 0) == ready \
                    and status.observed_generation == d.metadata.generation:
                continue
            apps.patch_namespaced_deployment_status(d.metadata.name, d.metadata.namespace, {"status": {
                "replicas": want, "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": want,
                "observedGeneration": d.metadata.generation}})

    def _note_degree(self, pool: str, degree: int, replicas: int) -> None:
        if replicas <= 0:
            return  # a pool scaled to zero keeps no degree; the next one it runs at is a fresh start
        now = self.plane.now
        seen = self._degrees.get(pool)
        if seen is None or seen[0] == degree:
            if seen is None:
                self._degrees[pool] = (degree, now, None)
            return
        self.degree_changes += 1
        if seen[2] == degree and now - seen[1] < CHANGED_BACK_WITHIN_SECONDS:
            self.degree_changed_back += 1
        self._degrees[pool] = (degree, now, seen[0])

    def _frame(self, wall_started: float) -> Frame:
        plane = self.plane
        sample = plane.samples[-1]
        done = plane.finished_last_period()
        if len(done):
            slo = self.o.service.spec.slo
            ttft, tpot = plane.ledger.ttft_s[done], plane.ledger.tpot_s[done]
            ok = within_slo(ttft, tpot, slo.ttft_milliseconds / 1000, slo.tpot_milliseconds / 1000)
            self._ok += int(ok.sum())
            self._finished += len(done)
        placement = plane.placement()
        pools = {}
        for name in plane.pools:
            p = placement.get(name)
            pools[name] = PoolFrame(sample.replicas.get(name, 0), sample.serving.get(name, 0),
                                    p.tensor_parallel if p else 1, sample.price_usd_per_kwh.get(name, 0.0))
        waiting = plane.waiting()
        a = plane.accounts
        elapsed = max(time.monotonic() - wall_started, 1e-9)
        return Frame(self.clock.now(), plane.now / plane.workload.duration_s, plane.now / elapsed,
                     sample.arrivals_rps, waiting, pools,
                     None if sample.ttft_p95_s is None else sample.ttft_p95_s * 1000,
                     None if sample.tpot_p95_s is None else sample.tpot_p95_s * 1000,
                     sample.cost_usd_per_hour, a.hardware_usd + a.energy_usd, a.energy_kwh,
                     self._ok / self._finished if self._finished else None, self.decisions, self.deployment_changes)

    # -- the whole run --------------------------------------------------------------------------------------------
    def run(self) -> DemoOutcome:
        o = self.o
        slo = o.service.spec.slo
        header = Header(o.service.key, slo.ttft_milliseconds, slo.tpot_milliseconds, "", o.workload.label, o.report)
        previous_sigint = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_sigint)
        try:
            kubeconfig = self._cluster()
            header.kubeconfig = kubeconfig
            self._say(f"KUBECONFIG={kubeconfig}  (kubectl get inferenceservices,acceleratorpools,deployments -A "
                      "works against it while the demo runs)")
            api = self._install(kubeconfig)
            apps = client.AppsV1Api(api)
            self._start_operator(kubeconfig)
            self.view = LiveView(header, self.out) if o.tui else PlainView(header, self.out)
            _log_to(self.view)
            self._say(f"serving {len(o.workload):,} requests ({o.workload.label}) over "
                      f"{o.workload.duration_s / 3600:.1f} simulated hours, control period {o.period_seconds:g}s, "
                      f"speed {'as fast as possible' if o.speed <= 0 else f'{o.speed:g}x'}")
            self.view.start()
            self._drive(apps)
        except KeyboardInterrupt:
            self._interrupted = True
        finally:
            self._driving = False
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, previous_sigint)
            if self.view is not None:
                self.view.stop()
            self._stop_operator()
        try:
            return self._finish()
        finally:
            if self.control_plane is not None:
                self.control_plane.stop()

    def _on_sigint(self, signum, frame) -> None:
        """Ctrl-C while the clock runs stops it at the end of the period being served (a KeyboardInterrupt in the
        middle of one would leave the twin half-advanced); before that, or pressed twice, it interrupts at once."""
        if self._driving and not self._interrupted:
            self._interrupted = True
            return
        raise KeyboardInterrupt

    def _drive(self, apps: client.AppsV1Api) -> None:
        plane, w, period = self.plane, self.o.workload, self.o.period_seconds
        self.clock.t_s = 0.0
        self.loop.request_run()
        self._operator_period()
        self._sync(apps, warm=True)
        wall_started = time.monotonic()
        t = 0.0
        self._driving = True
        while t < w.duration_s and not self._interrupted:
            until = min(t + period, w.duration_s)
            with self.lock:
                plane.advance(until)
            self.clock.t_s = until
            self._operator_period()
            self._sync(apps)
            self.view.update(self._frame(wall_started))
            t = until
            if self.o.speed > 0:
                ahead = wall_started + t / self.o.speed - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)

    def _stop_operator(self) -> None:
        if self.operator_thread is not None:
            self.stop_flag.set()
            self.operator_thread.join(timeout=30)

    def _finish(self) -> DemoOutcome:
        """Drain, summarise the demo and the baselines on the same requests, print the summary, write the
        report. After Ctrl-C: over the requests that arrived up to the stop."""
        plane, o = self.plane, self.o
        stopped_at = plane.now
        with self.lock:
            if self._interrupted:
                self._say(f"stopped at {self.clock.now():%H:%M} (simulated); summarising the first "
                          f"{stopped_at / 3600:.2f} h")
            t = stopped_at
            # Every request routed so far belongs to the summary (a second Ctrl-C may have stopped a period
            # after routing its arrivals and before the clock moved).
            cut = max(int(np.searchsorted(plane.workload.arrival_s, stopped_at, side="left")), plane.next_arrival)
            last = float(plane.workload.arrival_s[cut - 1]) if cut else 0.0
            plane.workload = _head(plane.workload, cut, max(stopped_at, last, 1.0))
            while plane.unfinished() and t < stopped_at + DRAIN_LIMIT_SECONDS:
                t += o.period_seconds
                plane.advance(t)
            result = summarise("kilowatt", plane, 0.0, self.decisions)
        baselines: list[PolicyResult] = []
        if o.baselines and len(plane.workload):
            self._say(f"the baselines on the same {len(plane.workload):,} requests (the twin, no API server):")
            try:
                # Started as the operator was: cold, at the opening rate (a fresh install has no hour behind it).
                baselines = simulate(list(o.baselines), plane.workload, o.service, o.pools, o.prices, {}, o.start,
                                     o.period_seconds, o.seed, lead_in_seconds=0.0)
            except KeyboardInterrupt:
                self._say("baselines skipped (Ctrl-C)")
        summary = {
            "service": o.service.key, "workload": plane.workload.label, "requests": len(plane.workload),
            "durationHours": round(stopped_at / 3600, 4), "start": o.start.isoformat(), "routing": plane.routing,
            "interrupted": self._interrupted, "deploymentChanges": self.deployment_changes,
            "tensorParallelChanges": self.degree_changes, "tensorParallelChangedBackWithinHour": self.degree_changed_back,
            "decisions": self.decisions, "policies": [result.to_json()] + [b.to_json() for b in baselines],
        }
        self._print_summary(result, baselines)
        page = None
        if o.report:
            from kilowatt.twin.report import write_report

            slo = o.service.spec.slo
            page = write_report(o.report, [result, *baselines], f"kilowatt demo: {o.service.key}, "
                                f"{plane.workload.label}", slo.ttft_milliseconds, slo.tpot_milliseconds, summary)
            self._say(f"report: {page}")
        return DemoOutcome(result, baselines, self.deployment_changes, self.decisions, self._interrupted, page, summary)

    def _print_summary(self, result: PolicyResult, baselines: list[PolicyResult]) -> None:
        say = self._say
        say("")
        say(f"summary: {result.requests:,} requests, {self.decisions} decisions, {self.deployment_changes} "
            f"Deployment changes in the API server, {self.degree_changes} tensor-parallel changes "
            f"({self.degree_changed_back} changed back within an hour)")
        carbon = any(r.co2_kg > 0 for r in [result, *baselines])
        say(f"{'POLICY':22} {'COST $':>9} {'ENERGY kWh':>11} {'SLO MET':>8} {'TTFT p95':>9} {'TPOT p95':>9}"
            + (f" {'CO2 kg':>8}" if carbon else ""))
        fmt = lambda s: "-" if s is None else f"{s * 1000:.0f}ms"  # noqa: E731
        for r in [result, *baselines]:
            name = "kilowatt (the operator)" if r is result else r.name
            say(f"{name:22} {r.cost_usd:9.2f} {r.energy_kwh:11.1f} {r.slo_attainment:8.2%} "
                f"{fmt(r.ttft_p95_s):>9} {fmt(r.tpot_p95_s):>9}" + (f" {r.co2_kg:8.1f}" if carbon else ""))
        if result.owned_hardware_usd > 0:
            say(f"  every cost includes ${result.owned_hardware_usd:.2f} of owned hardware, paid whatever runs on it")
        for b in baselines:
            if b.name == "lower-bound" or b.cost_usd <= 0:
                continue
            saved = 1 - result.cost_usd / b.cost_usd
            verdict = (f"{saved:.0%} cheaper (saves ${b.cost_usd - result.cost_usd:.2f})" if saved >= 0 else
                       f"{-saved:.0%} dearer (costs ${result.cost_usd - b.cost_usd:.2f} more)")
            say(f"  against {b.name}: {verdict}; requests within the SLO {result.slo_attainment:.2%} vs "
                f"{b.slo_attainment:.2%}")
        if self.plane.routing == "service" and result.mixed_hours > 0:
            say(f"  routing mode Service (equal shares): {result.mixed_hours:.1f} h on a mixed placement, "
                f"${result.stranded_usd:.2f} of kilowatt's cost paid for capacity only weighted routing reaches "
                "(spec.routing.mode Weighted, docs/operations.md)")


def _log_to(view: View) -> None:
    """Warnings from the operator and kopf go through the view (above the live panel, or as plain lines)."""
    class ToView(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                view.say(f"{record.levelname.lower()}: {record.name}: {record.getMessage()}")
            except Exception:  # noqa: BLE001 - logging must never stop the demo
                pass

    root = logging.getLogger()
    root.handlers = [ToView(level=logging.WARNING)]
    root.setLevel(logging.WARNING)


def _head(w: Workload, n: int, duration_s: float) -> Workload:
    if n >= len(w) and duration_s >= w.duration_s:
        return w
    return Workload(w.arrival_s[:n], w.input_tokens[:n], w.output_tokens[:n], min(duration_s, w.duration_s), w.label)


def run_demo(options: DemoOptions, out=None) -> DemoOutcome:
    """Run the demo; raises DemoError or ControlPlaneError with a message for the user."""
    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("kopf._core.reactor.running").setLevel(logging.ERROR)  # "OS signals are ignored": expected
    return Demo(options, out).run()


__all__ = ["DemoError", "DemoOptions", "DemoOutcome", "ControlPlaneError", "run_demo"]
