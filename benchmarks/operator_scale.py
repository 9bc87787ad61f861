"""Operator time, memory and API requests per control period vs the number of InferenceServices, against the
real kube-apiserver + etcd (scripts/setup.sh builds them). Metrics come from the static source (every
service at a steady load), so the figures are the operator's own: list, plan, stabilise, apply, report.

Periods: "first" (every Deployment, Service, event and status created, on a fresh install); "warming" (the same
load for a few periods, each measuring capacity curves for up to its budget while the fleet's are not all measured,
then "left" seconds measuring the rest at once); "quiet" (the same load right after:
nothing due, not even the 30-s refresh of drifting status figures); "changing" (every service's load jumps, so
every placement changes); "steady" (the same load once the changes have settled: drifting figures' status
refreshes fall due in it).

Between periods the capacity curves a period had no budget for are measured, as `run_if_due` does in the idle
time after a period's writes (not counted in the period's time).

Reconcile latency: after a load change the next period applies the new Deployments, so the latency is one
control period (15 s by default) plus the period's own run time measured here.

    python benchmarks/operator_scale.py [--services 10,100,1000] [--pools 5] [--reads watches|lists]
        [--out benchmarks/results/operator_scale.json]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from kubernetes import client

from kilowatt.controller.loop import WRITE_CONCURRENCY, ControlLoop, LoopConfig
from kilowatt.decide import CURVE_CATCHUP_SHARE
from kilowatt.controller.reads import Informers
from kilowatt.controller.telemetry import Telemetry
from kilowatt.metrics.source import Observations, ServiceObservation
from kilowatt.metrics.static import StaticSource
from kilowatt.runner import kube_clients
from kilowatt.demo.controlplane import ControlPlane
from soak_harness import CountingApi  # benchmarks/, beside this file

GPUS = [("RTX-4090", 24, 1008, 165, 450), ("H100-SXM", 80, 3350, 990, 700), ("L40S", 48, 864, 362, 350),
        ("A100-80GB", 80, 2039, 312, 400), ("H100-PCIe", 80, 2000, 756, 350)]


def setup(cp: ControlPlane, n_services: int, n_pools: int) -> tuple:
    import subprocess

    from kilowatt.demo.controlplane import find_binary

    subprocess.run([str(find_binary("kubectl")), "apply", "-f", "crds/"], env=cp.env(), check=True,
                   capture_output=True)
    subprocess.run([str(find_binary("kubectl")), "wait", "--for=condition=established", "crd", "--all"],
                   env=cp.env(), check=True, capture_output=True)
    api = client.ApiClient()
    from kubernetes import config

    config.load_kube_config(str(cp.kubeconfig), client_configuration=api.configuration)
    api.configuration.connection_pool_maxsize = WRITE_CONCURRENCY + 4  # as kilowatt.runner.kube_clients sizes it
    counting = CountingApi(api.configuration)
    core, apps, custom = client.CoreV1Api(counting), client.AppsV1Api(counting), client.CustomObjectsApi(counting)
    for i in range(n_pools):
        model, mem, bw, tf, watts = GPUS[i % len(GPUS)]
        name = f"pool{i}"
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=f"node-{name}", labels={"pool": name})))
        core.patch_node_status(f"node-{name}", {"status": {"allocatable": {"nvidia.com/gpu": str(2 * n_services)}}})
        custom.create_cluster_custom_object("kilowatt.dev", "v1alpha1", "acceleratorpools", {
            "apiVersion": "kilowatt.dev/v1alpha1", "kind": "AcceleratorPool", "metadata": {"name": name},
            "spec": {"gpu": {"model": model, "memoryGiB": mem, "memoryBandwidthGBps": bw, "fp16TFLOPS": tf,
                             "boardPowerWatts": watts}, "nodeSelector": {"pool": name}, "gpusPerNode": 8,
                     "cost": {"usdPerGPUHour": 0.3 + i, "electricity": {"flatUsdPerKWh": 0.1 + 0.05 * i}}}})
    namespaces = [f"team-{j}" for j in range(10)]
    for ns in namespaces:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    for i in range(n_services):
        custom.create_namespaced_custom_object("kilowatt.dev", "v1alpha1", namespaces[i % 10], "inferenceservices", {
            "apiVersion": "kilowatt.dev/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": f"svc{i}", "namespace": namespaces[i % 10]},
            "spec": {"model": {"name": "m", "parametersBillion": [1.78, 8.03, 14.7][i % 3], "dtype": "bf16"},
                     "slo": {"ttftMilliseconds": 1000, "tpotMilliseconds": [50, 100][i % 2]},
                     "replicas": {"min": 1, "max": 16}, "scaling": {"scaleDownStabilizationSeconds": 0}}})
    return core, apps, custom, namespaces


def observations(n_services: int, namespaces: list[str], scale: float) -> Observations:
    services = {
        f"{namespaces[i % 10]}/svc{i}": ServiceObservation(
            requests_per_second=scale * (1 + i % 7), input_tokens_mean=300.0, output_tokens_mean=200.0,
            ttft_p_seconds=0.2, tpot_p_seconds=0.03, slo_attainment=0.99)
        for i in range(n_services)
    }
    return Observations(True, services=services)


def measure(n_services: int, n_pools: int, periods: int, reads_from: str = "watches") -> dict:
    with ControlPlane() as cp:
        core, apps, custom, namespaces = setup(cp, n_services, n_pools)
        source = StaticSource(observations(n_services, namespaces, 1.0))
        reads = None
        if reads_from == "watches":  # as `kilowatt run` reads (kilowatt.runner.build_loop), requests counted
            api = CountingApi(core.api_client.configuration)
            reads = Informers(client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api))
        loop = ControlLoop(core, apps, custom, source, LoopConfig(planner_budget_seconds=0.8), Telemetry(),
                           reads=reads)
        def period(scale: float) -> tuple[float, float, int, int]:
            source.observations = observations(n_services, namespaces, scale)
            CountingApi.calls = 0
            started = time.perf_counter()
            report = loop.run_once(datetime.now(timezone.utc))
            elapsed = time.perf_counter() - started
            assert not report.errors, report.errors
            # As run_if_due does after a period's writes, in the idle time before the next (not timed here): the
            # capacity curves this period had no budget for are measured.
            loop.decider.catch_up(loop.config.period_seconds * CURVE_CATCHUP_SHARE)
            return elapsed, report.planner_seconds, CountingApi.calls, len(report.decisions)

        first = period(1.0)
        # Warming: the first minutes, while the periods (1 s each, CURVE_BUDGET_SECONDS) and the idle time after
        # them measure the capacity curves of the fleet's kinds of service; then whatever is left, all at once.
        warming = [period(1.0) for _ in range(periods)]
        started = time.perf_counter()
        loop.decider.catch_up(math.inf)
        rest = time.perf_counter() - started
        curves = loop.decider.capacity.curves.measured
        # Quiet: the same load at once, nothing due (no drifting figure's 30-s status refresh yet): the period's own
        # work with no write to wait for.
        quiet = [period(1.0) for _ in range(periods)]
        # Worst case: every service's load jumps, so every placement changes (apply + status + event each).
        changing = [period(1.6 if p % 2 == 0 else 1.0) for p in range(periods)]
        # Steady: the same load until scale-downs (one replica per pool per period) have settled.
        for _ in range(12):
            if period(1.0)[3] == 0:
                break
        steady = [period(1.0) for _ in range(periods)]
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        loop.close()
        med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
        return {"first": first[0], "warming": med(warming, 0), "warming_calls": med(warming, 2),
                "curves": curves, "curves_left_seconds": rest, "quiet": med(quiet, 0), "quiet_calls": med(quiet, 2),
                "changing": med(changing, 0), "changing_calls": med(changing, 2),
                "steady": med(steady, 0), "steady_calls": med(steady, 2), "planner": med(steady, 1),
                "rss_mb": rss_mb}


def main() -> int:
    # Timed from cold: curves kept on disk by earlier runs (kilowatt.performance.slo_capacity.CurveStore) would
    # hide what measuring them costs. KILOWATT_CURVE_CACHE=<dir> to time a warm store.
    os.environ.setdefault("KILOWATT_CURVE_CACHE", "off")
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", default="10,100,1000")
    parser.add_argument("--pools", type=int, default=5)
    parser.add_argument("--periods", type=int, default=4)
    parser.add_argument("--reads", choices=("watches", "lists"), default="watches",
                        help="periods read from watches (as `kilowatt run` does) or list every object each period")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    print(f"{'services':>8} {'pools':>5} {'first s':>8} {'warming s':>9} {'curves':>6} {'left s':>6} {'quiet s':>8} {'API calls':>9} {'changing s':>12} "
          f"{'API calls':>9} {'steady s':>9} {'API calls':>9} {'planner s':>9} {'peak RSS MB':>11}")
    for n in (int(x) for x in args.services.split(",")):
        r = measure(n, args.pools, args.periods, args.reads)
        print(f"{n:8d} {args.pools:5d} {r['first']:8.2f} {r['warming']:9.2f} {r['curves']:6d} "
              f"{r['curves_left_seconds']:6.1f} {r['quiet']:8.2f} {r['quiet_calls']:9.0f} "
              f"{r['changing']:12.2f} {r['changing_calls']:9.0f} "
              f"{r['steady']:9.2f} {r['steady_calls']:9.0f} {r['planner']:9.2f} {r['rss_mb']:11.0f}", flush=True)
        rows.append({"services": n, "pools": args.pools, "firstSeconds": round(r["first"], 3),
                     "changingSeconds": round(r["changing"], 3), "steadySeconds": round(r["steady"], 3),
                     "warmingSeconds": round(r["warming"], 3), "warmingApiCalls": r["warming_calls"],
                     "curvesMeasured": r["curves"], "curvesLeftSeconds": round(r["curves_left_seconds"], 1),
                     "quietSeconds": round(r["quiet"], 3), "quietApiCalls": r["quiet_calls"],
                     "peakRssMb": round(r["rss_mb"], 1), "changingApiCalls": r["changing_calls"],
                     "steadyApiCalls": r["steady_calls"], "plannerSeconds": round(r["planner"], 3),
                     "writeConcurrency": WRITE_CONCURRENCY, "reads": args.reads})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
