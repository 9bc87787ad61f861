"""A soak: many InferenceServices over several pools through a simulated day of changing load, against the real
kube-apiserver + etcd, with the operator's own control loop on a simulated clock (one call per period, back to
back). Counts decisions, errors, restarts, the operator's own API requests per period and memory over time. Used
by benchmarks/soak.py (which records it) and tests/integration/test_soak.py (which asserts on it).

No kubelet runs: after each period the soak marks every Deployment's replicas ready, through a client of its
own that is not counted, as a cluster would once the pods start.

Load: every service follows ServeGen's day curve (../shared/data, or a smooth day when absent), scaled by its
own size and phase-shifted by its namespace's time zone, with ±15 % noise per period. Halfway through the day the
operator is "restarted" (a fresh loop, empty memory), as a rolling upgrade would.
"""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from kubernetes import client, config

from kilowatt.controller.actuator import LABEL_POOL, LABEL_SERVICE
from kilowatt.clock import SimulatedClock
from kilowatt.controller.loop import ControlLoop, LoopConfig
from kilowatt.controller.telemetry import Telemetry
from kilowatt.demo.controlplane import ControlPlane
from kilowatt.metrics.source import Observations, ServiceObservation
from kilowatt.metrics.static import StaticSource

POOLS = [("rtx4090", "RTX-4090", 24, 1008, 165, 450, 0.10, 0.14),
         ("h100", "H100-SXM", 80, 3350, 990, 700, 2.49, 0.10),
         ("l40s", "L40S", 48, 864, 362, 350, 0.85, 0.12),
         ("a100", "A100-80GB", 80, 2039, 312, 400, 1.29, 0.11)]


class CountingApi(client.ApiClient):
    """Counts every request the operator makes (from any of its writer threads)."""

    calls = 0
    _lock = threading.Lock()

    def call_api(self, *args, **kwargs):
        with CountingApi._lock:
            CountingApi.calls += 1
        return super().call_api(*args, **kwargs)


@dataclass
class Period:
    t_hours: float
    wall_seconds: float
    api_calls: int
    decisions: int
    errors: int
    rss_mb: float
    total_rps: float
    replicas: int


@dataclass
class SoakResult:
    services: int
    pools: int
    periods: list[Period] = field(default_factory=list)
    restarts: int = 0
    duplicate_deployments: int = 0
    services_without_placement: int = 0
    error_messages: list[str] = field(default_factory=list)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def day_curve(data_dir: Path | None, points: int) -> np.ndarray:
    """The day's relative load at ``points`` even steps, mean 1."""
    path = (data_dir or Path()) / "servegen_m_large_10min.csv"
    if data_dir is not None and path.exists():
        with path.open() as fh:
            rates = np.array([float(r["requests_per_s"]) for r in csv.DictReader(fh)][:144])
    else:
        rates = 1.0 + 0.6 * np.sin(np.linspace(0, 2 * np.pi, 144, endpoint=False) - np.pi / 2)
    x = np.linspace(0, len(rates), points, endpoint=False)
    curve = np.interp(x, np.arange(len(rates)), rates)
    return curve / curve.mean()


def _plain_client(cp: ControlPlane) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(str(cp.kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)  # built after loading: its connection pool knows the CA


def _setup(cp: ControlPlane, n_services: int, n_pools: int) -> tuple:
    counting = CountingApi(_plain_client(cp).configuration)
    core, apps, custom = client.CoreV1Api(counting), client.AppsV1Api(counting), client.CustomObjectsApi(counting)
    ext = client.ApiextensionsV1Api(counting)
    import yaml

    repo = Path(__file__).resolve().parents[1]
    for path in sorted((repo / "crds").glob("kilowatt.dev_*.yaml")):
        ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
    import time

    for _ in range(100):
        names = {c.metadata.name for c in ext.list_custom_resource_definition().items
                 if any(x.type == "Established" and x.status == "True" for x in c.status.conditions or [])}
        if {"inferenceservices.kilowatt.dev", "acceleratorpools.kilowatt.dev"} <= names:
            break
        time.sleep(0.1)
    for name, model, mem, bw, tf, watts, usd, kwh in POOLS[:n_pools]:
        for j in range(4):
            node = f"{name}-{j}"
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node, labels={"pool": name})))
            core.patch_node_status(node, {"status": {"allocatable": {"nvidia.com/gpu": str(n_services // 2)}}})
        custom.create_cluster_custom_object("kilowatt.dev", "v1alpha1", "acceleratorpools", {
            "apiVersion": "kilowatt.dev/v1alpha1", "kind": "AcceleratorPool", "metadata": {"name": name},
            "spec": {"gpu": {"model": model, "memoryGiB": mem, "memoryBandwidthGBps": bw, "fp16TFLOPS": tf,
                             "boardPowerWatts": watts}, "nodeSelector": {"pool": name}, "gpusPerNode": 8,
                     "replicaStartupSeconds": 120,
                     "cost": {"usdPerGPUHour": usd, "electricity": {"flatUsdPerKWh": kwh}}}})
    namespaces = [f"team-{j}" for j in range(10)]
    for ns in namespaces:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    for i in range(n_services):
        custom.create_namespaced_custom_object("kilowatt.dev", "v1alpha1", namespaces[i % 10], "inferenceservices", {
            "apiVersion": "kilowatt.dev/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": f"svc{i}", "namespace": namespaces[i % 10]},
            "spec": {"model": {"name": "m", "parametersBillion": [1.78, 8.03, 14.7][i % 3], "dtype": "bf16"},
                     "slo": {"ttftMilliseconds": 1000, "tpotMilliseconds": [50, 100][i % 2]},
                     "replicas": {"min": 1, "max": 16}}})
    return core, apps, custom, namespaces


def mark_ready(apps: Any) -> None:
    """Every kilowatt Deployment's replicas ready, as kubelets and the Deployment controller would report."""
    for d in apps.list_deployment_for_all_namespaces(label_selector=LABEL_SERVICE).items:
        want = d.spec.replicas or 0
        status = d.status
        if status and status.ready_replicas == want and status.replicas == want:
            continue
        apps.patch_namespaced_deployment_status(d.metadata.name, d.metadata.namespace, {"status": {
            "replicas": want, "readyReplicas": want, "availableReplicas": want, "updatedReplicas": want,
            "observedGeneration": d.metadata.generation}})


def soak(n_services: int = 500, n_pools: int = 4, periods: int = 96, data_dir: Path | None = None, seed: int = 0,
         progress: Callable[[Period], None] | None = None) -> SoakResult:
    """One simulated day in ``periods`` control periods (96: every 15 minutes)."""
    import time

    rng = np.random.default_rng(seed)
    curve = day_curve(data_dir, periods)
    base = np.array([1.5 + (i * 7919 % 13) * 0.75 for i in range(n_services)])  # 1.5 .. 10.5 req/s at the mean
    shift = np.array([(i % 10) * periods // 40 for i in range(n_services)])  # namespaces a few zones apart
    step_s = 86400.0 / periods
    result = SoakResult(n_services, n_pools)
    with ControlPlane() as cp:
        core, apps, custom, namespaces = _setup(cp, n_services, n_pools)
        kubelet = client.AppsV1Api(_plain_client(cp))  # not counted: the operator's requests are the figure
        clock = SimulatedClock(datetime(2024, 7, 16, tzinfo=timezone.utc))
        source = StaticSource()

        def new_loop() -> ControlLoop:
            return ControlLoop(core, apps, custom, source, LoopConfig(period_seconds=step_s), Telemetry(), clock)

        loop = new_loop()
        for p in range(periods):
            if p == periods // 2:
                loop, result.restarts = new_loop(), result.restarts + 1  # a rolling upgrade mid-day
            load = base * curve[(p + shift) % periods] * rng.lognormal(0, 0.15, n_services)
            source.observations = Observations(True, services={
                f"{namespaces[i % 10]}/svc{i}": ServiceObservation(
                    float(load[i]), 300.0, 200.0, 0.2, 0.03, 0.99) for i in range(n_services)})
            clock.t_s = p * step_s
            CountingApi.calls = 0
            started = time.perf_counter()
            report = loop.run_if_due()
            wall = time.perf_counter() - started
            errors = len(report.errors) if report else 1
            result.error_messages += report.errors if report else ["period not run"]
            period = Period(clock.t_s / 3600, wall, CountingApi.calls, len(report.decisions) if report else 0,
                            errors, _rss_mb(), float(load.sum()),
                            sum(sum(d.values()) for d in report.desired.values()) if report else 0)
            result.periods.append(period)
            if progress:
                progress(period)
            mark_ready(kubelet)
        deployments = apps.list_deployment_for_all_namespaces(label_selector=LABEL_SERVICE).items
        keys = [(d.metadata.namespace, d.metadata.labels[LABEL_SERVICE], d.metadata.labels[LABEL_POOL])
                for d in deployments]
        result.duplicate_deployments = len(keys) - len(set(keys))
        placed = {(ns, s) for ns, s, _ in keys}
        result.services_without_placement = n_services - len(placed)
    return result
