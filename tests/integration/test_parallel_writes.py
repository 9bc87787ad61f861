"""The control loop applies services in parallel (``LoopConfig.write_concurrency``): each service's writes on
one thread, different services' at once. Against the real API server: no Deployment is written twice with
different replica counts in one period, several writers really run at once, and what lands is the plan."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime, timezone

import pytest
from kubernetes import client

from kilowatt.controller.loop import ControlLoop, LoopConfig
from kilowatt.controller.telemetry import Telemetry
from kilowatt.metrics.source import Observations, ServiceObservation
from kilowatt.metrics.static import StaticSource
from kilowatt.runner import kube_clients

from tests.integration.operator_harness import H100, RTX4090, make_gpu_node, pool_body

GROUP, VERSION = "kilowatt.dev", "v1alpha1"
NAMESPACES = ("pw-0", "pw-1", "pw-2")
SERVICES = 36
POOLS = ("pw-rtx4090", "pw-h100")


def _observations(scale: float) -> Observations:
    return Observations(True, services={
        f"{NAMESPACES[i % 3]}/svc{i}": ServiceObservation(requests_per_second=scale * (1 + i % 5),
                                                          input_tokens_mean=300.0, output_tokens_mean=200.0,
                                                          ttft_p_seconds=0.2, tpot_p_seconds=0.03, slo_attainment=0.99)
        for i in range(SERVICES)})


@pytest.fixture(scope="module")
def fleet(control_plane, crds):
    core, apps, custom = kube_clients(str(control_plane.kubeconfig))
    make_gpu_node(core, "pw-rtx4090-node", "pw-rtx4090", 64)
    make_gpu_node(core, "pw-h100-node", "pw-h100", 64)
    custom.create_cluster_custom_object(GROUP, VERSION, "acceleratorpools", pool_body(
        "pw-rtx4090", RTX4090, "pw-rtx4090", 0.30, {"flatUsdPerKWh": 0.12}, 1.2))
    custom.create_cluster_custom_object(GROUP, VERSION, "acceleratorpools", pool_body(
        "pw-h100", H100, "pw-h100", 2.49, {"flatUsdPerKWh": 0.10}, 1.2))
    for ns in NAMESPACES:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    for i in range(SERVICES):
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACES[i % 3], "inferenceservices", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
            "metadata": {"name": f"svc{i}", "namespace": NAMESPACES[i % 3]},
            "spec": {"model": {"name": "m", "parametersBillion": [1.78, 8.03][i % 2], "dtype": "bf16"},
                     "slo": {"ttftMilliseconds": 1000, "tpotMilliseconds": 50},
                     "replicas": {"min": 1, "max": 16}, "pools": list(POOLS),
                     "scaling": {"scaleDownStabilizationSeconds": 0, "maxScaleDownStep": 16}}})
    yield core, apps, custom
    for ns in NAMESPACES:
        core.delete_namespace(ns)
    for name in POOLS:
        custom.delete_cluster_custom_object(GROUP, VERSION, "acceleratorpools", name)
        core.delete_node(f"{name}-node")


def test_parallel_writes_apply_one_count_per_deployment_per_period(fleet) -> None:
    core, apps, custom = fleet
    source = StaticSource(_observations(1.0))
    loop = ControlLoop(core, apps, custom, source, LoopConfig(namespaces=NAMESPACES, write_concurrency=8),
                       Telemetry())
    writes: dict[str, list[int]] = defaultdict(list)  # deployment -> replica counts applied this period
    threads: set[str] = set()
    in_flight, most_in_flight = 0, 0
    lock = threading.Lock()
    apply = loop.applier.actuator.apply

    def recording(manifest: dict) -> None:
        nonlocal in_flight, most_in_flight
        with lock:
            if manifest["kind"] == "Deployment":
                writes[manifest["metadata"]["name"]].append(manifest["spec"]["replicas"])
            threads.add(threading.current_thread().name)
            in_flight += 1
            most_in_flight = max(most_in_flight, in_flight)
        try:
            apply(manifest)
        finally:
            with lock:
                in_flight -= 1

    loop.applier.actuator.apply = recording
    applied = 0
    for scale in (1.0, 6.0, 2.0, 8.0):  # every period moves every service's load a lot
        source.observations = _observations(scale)
        writes.clear()
        report = loop.run_once(datetime.now(timezone.utc))
        assert not report.errors, report.errors
        twice = {name: counts for name, counts in writes.items() if len(counts) > 1}
        assert not twice, f"Deployments written more than once in one period: {twice}"
        applied += len(writes)
        # What landed is what the period decided, for every service and pool.
        for key, desired in report.desired.items():
            namespace, name = key.split("/")
            found = {d.metadata.labels["kilowatt.dev/pool"]: d.spec.replicas for d in apps.list_namespaced_deployment(
                namespace, label_selector=f"kilowatt.dev/service={name}").items}
            for pool, replicas in desired.items():
                assert found.get(pool, 0) == replicas, (key, pool, found, desired)
    assert applied >= 2 * SERVICES, f"only {applied} Deployment writes over four periods of changing load"
    assert len(threads) > 1 and most_in_flight > 1, (threads, most_in_flight)
    assert most_in_flight <= 8  # the bound holds
