"""The Prometheus reader against a real Prometheus that discovers simulated vLLM pods and dcgm-exporters the
way a stock PodMonitor does (namespace and pod labels, no kilowatt relabelling), with the names today's vLLM
exports and with the names an older vLLM exported. Table-driven, as KEDA tests its scalers."""

from __future__ import annotations

import pytest
from kubernetes import client

from kilowatt.controller.cluster import read_cluster
from kilowatt.controller.reads import Lister
from kilowatt.demo.controlplane import free_port
from kilowatt.metrics.prometheus import PrometheusSource
from kilowatt.metrics.source import ServiceRef
from kilowatt.state import load_objects

from tests.integration.operator_harness import make_gpu_node, wait_for
from tests.paths import EXAMPLES
from tests.support.exporters import Load, SimulatedFleet
from tests.support.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

NAMESPACE = "metrics-test"
OURS = {(NAMESPACE, "llama3-8b-chat-rtx4090-0"), (NAMESPACE, "llama3-8b-chat-rtx4090-1")}


@pytest.fixture(scope="module")
def core(api):
    api_client, _ = api
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    core.create_namespaced_service_account(NAMESPACE, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="default")))
    make_gpu_node(core, "metrics-4090-a", "metrics-4090", 8)
    for i, gpus in enumerate((1, 2)):  # two replicas of the service on the node, one and two GPUs
        name = f"llama3-8b-chat-rtx4090-{i}"
        core.create_namespaced_pod(NAMESPACE, client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels={"kilowatt.dev/service": "llama3-8b-chat",
                                                            "kilowatt.dev/pool": "rtx4090"}),
            spec=client.V1PodSpec(node_name="metrics-4090-a", automount_service_account_token=False,
                                  containers=[client.V1Container(
                                      name="vllm", image="vllm/vllm-openai:v0.11.0",
                                      resources=client.V1ResourceRequirements(
                                          limits={"nvidia.com/gpu": str(gpus)}))])))
        core.patch_namespaced_pod_status(name, NAMESPACE, {"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}]}})
    return core


def _service():
    pools, services = load_objects([EXAMPLES])
    svc = services[0]
    pool = next(p for p in pools if p.name == "rtx4090")
    pool = pool.model_copy(update={"spec": pool.spec.model_copy(update={"node_selector": {
        "kilowatt.dev/gpu": "metrics-4090"}})})
    ref = ServiceRef.of(svc)
    return ServiceRef(NAMESPACE, ref.name, ref.percentile, ref.ttft_seconds, ref.tpot_seconds, ref.model_names), pool


def _view(api, core, pool):
    reads = Lister(core, client.AppsV1Api(api[0]), client.CustomObjectsApi(api[0]))
    return read_cluster(reads.objects("nodes"), reads.objects("deployments"), reads.objects("pods"), [pool])


@pytest.mark.parametrize("names, tpot_name, kv_name", [
    ("new", "vllm:request_time_per_output_token_seconds", "vllm:kv_cache_usage_perc"),
    ("old", "vllm:time_per_output_token_seconds", "vllm:gpu_cache_usage_perc"),
])
def test_series_are_read_by_the_names_found_and_attributed_by_pod(api, core, names, tpot_name, kv_name):
    ref, pool = _service()
    fleet = SimulatedFleet(core, names=names).start(free_port())
    prometheus = PrometheusServer([f"127.0.0.1:{fleet.port}"], file_sd=fleet.targets_file).start()
    try:
        fleet.set_load(NAMESPACE, "llama3-8b-chat", "rtx4090", Load(rps=6.0, ttft_seconds=0.2, tpot_seconds=0.04))
        fleet.set_power("metrics-4090-a", 900.0)
        wait_for(lambda: OURS <= set(fleet.pods()), 20, what="the fleet found both pods")
        view = _view(api, core, pool)
        assert OURS <= set(view.pods)  # other modules' pods share the session's API server
        source = PrometheusSource(prometheus.url, 2.0, window="10s")

        def observed():
            obs = source.observe([ref], view.topology, [])
            data = obs.services.get(ref.key)
            return obs if data and data.tpot_p_seconds and data.requests_per_second > 5 else None

        obs = wait_for(observed, 60, what=lambda: f"series for {ref.key}: {source.observe([ref], view.topology, [])}")
        data = obs.services[ref.key]
        assert data.requests_per_second == pytest.approx(6.0, rel=0.25)
        assert 0.1 < data.ttft_p_seconds <= 0.25  # 0.2 s falls in vLLM's (0.1, 0.25] bucket
        assert 0.025 < data.tpot_p_seconds <= 0.05
        assert data.input_tokens_mean == pytest.approx(205.0, rel=0.05)
        assert data.kv_cache_usage is not None and data.running is not None
        assert obs.metric_names["tpot_buckets"] == f"{tpot_name}_bucket" and obs.metric_names["kv_cache"] == kv_name
        assert set(data.by_pool) == {"rtx4090"}
        # DCGM: the three GPUs the two pods hold; not the other team's (250 W) nor the idle one (30 W).
        assert obs.pools["rtx4090"].power_watts == pytest.approx(900.0)
    finally:
        prometheus.stop()
        fleet.stop()


def test_series_of_another_model_on_the_same_pods_are_not_this_services(api, core):
    ref, pool = _service()
    fleet = SimulatedFleet(core, model_name="some-other/model").start(free_port())
    prometheus = PrometheusServer([f"127.0.0.1:{fleet.port}"], file_sd=fleet.targets_file).start()
    try:
        fleet.set_load(NAMESPACE, "llama3-8b-chat", "rtx4090", Load(rps=6.0))
        wait_for(lambda: OURS <= set(fleet.pods()), 20, what="the fleet found both pods")
        view = _view(api, core, pool)
        source = PrometheusSource(prometheus.url, 2.0, window="10s")
        wait_for(lambda: source.observe([ref], view.topology, []).metric_names.get("requests"), 60,
                 what="vLLM series scraped")
        assert source.observe([ref], view.topology, []).services[ref.key] is None  # NoSeries: not a zero
    finally:
        prometheus.stop()
        fleet.stop()
