"""End to end on a simulated cluster, as users run kilowatt: the real kube-apiserver, controller-manager and
scheduler, kwok GPU nodes, `helm install` of the chart, the operator process running with the chart's
ServiceAccount token (so RBAC is exercised for real), Prometheus scraping simulated vLLM/DCGM exporters, the
examples applied with kubectl, real Pods scheduled onto pools or left Pending, `helm upgrade` and `helm uninstall`.

The tests run in file order and build on each other (one cluster, one install), as a user's first hour would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client, config

from kilowatt.demo.controlplane import ControlPlane
from tests.support.cluster import SimulatedCluster, make_kwok_gpu_node
from kilowatt.demo.controlplane import free_port
from tests.support.exporters import Load, SimulatedFleet
from tests.support.prometheus import PrometheusServer

from tests.integration.conftest import Tool
from tests.integration.operator_harness import wait_for
from tests.paths import REPO

pytestmark = pytest.mark.integration

NAMESPACE = "kilowatt-system"
PERIOD_SECONDS = 2
TAINT = [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]


class E2E:
    def __init__(self, tmp: Path) -> None:
        self.cp = ControlPlane().start()
        self.sim = SimulatedCluster(self.cp).start()
        self.kubectl = Tool("kubectl", self.cp)
        self.helm = Tool("helm", self.cp)
        api = config.new_client_from_config(config_file=str(self.cp.kubeconfig))
        self.core, self.apps, self.custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
        self.fleet = SimulatedFleet(self.core).start(free_port())
        self.prometheus = PrometheusServer([f"127.0.0.1:{self.fleet.port}"], file_sd=self.fleet.targets_file).start()
        self.tmp = tmp
        self.operator: subprocess.Popen | None = None
        self.metrics_port = free_port()
        self.log = tmp / "operator.log"

    def start_operator(self, kubeconfig: Path) -> None:
        """`kilowatt run` as the chart's Deployment runs it (same flags), with the chart's ServiceAccount token."""
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "kilowatt.cli", "run", f"--prometheus-url={self.prometheus.url}",
             f"--period-seconds={PERIOD_SECONDS}", "--peering=kilowatt", f"--metrics-port={self.metrics_port}",
             "--prometheus-window=10s", "--prometheus-timeout-seconds=2"],
            cwd=REPO, env={**os.environ, "KUBECONFIG": str(kubeconfig), "KILOWATT_LOG_LEVEL": "INFO"},
            stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def periods(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("kilowatt_control_period_seconds_count"):
                    return float(line.split()[-1])
        return 0.0

    def stop(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.terminate()
            self.operator.wait(timeout=30)
        self.prometheus.stop()
        self.fleet.stop()
        self.sim.stop()

    def deployments(self) -> dict[str, int]:
        items = self.apps.list_namespaced_deployment("default", label_selector="kilowatt.dev/service=llama3-8b-chat").items
        return {d.metadata.labels["kilowatt.dev/pool"]: d.spec.replicas for d in items}

    def pods(self) -> list:
        return self.core.list_namespaced_pod("default", label_selector="kilowatt.dev/service=llama3-8b-chat").items

    def operator_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    env = E2E(tmp_path_factory.mktemp("e2e"))
    # Two RTX 4090 nodes of 4 GPUs, one H100 node of 8, tainted as GPU nodes usually are.
    make_kwok_gpu_node(env.core, "rtx4090-a", {"kilowatt.dev/gpu": "rtx4090"}, 4, TAINT)
    make_kwok_gpu_node(env.core, "rtx4090-b", {"kilowatt.dev/gpu": "rtx4090"}, 4, TAINT)
    make_kwok_gpu_node(env.core, "h100-a", {"kilowatt.dev/gpu": "h100"}, 8, TAINT)
    yield env
    env.stop()


def test_helm_install_and_the_operator_runs_with_the_charts_service_account(e2e: E2E) -> None:
    e2e.helm("install", "kilowatt", "charts/kilowatt", "--namespace", NAMESPACE, "--create-namespace",
             f"--set=prometheus.url={e2e.prometheus.url}", f"--set=operator.controlPeriodSeconds={PERIOD_SECONDS}")
    # The chart's own Deployment has no CPU node to run on here; its ServiceAccount is what the operator uses.
    # A bound token from the TokenRequest API, as the kubelet mounts one into the chart's pod (Kubernetes >= 1.24
    # issues no token Secrets).
    token = e2e.core.create_namespaced_service_account_token("kilowatt", NAMESPACE, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))).status.token
    kubeconfig = e2e.tmp / "kilowatt-sa.kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: '{e2e.cp.server}', certificate-authority: "
        f"'{e2e.cp.dir / 'ca.crt'}'}}}}]\n"
        f"users: [{{name: kilowatt, user: {{token: '{token}'}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: kilowatt}}]\ncurrent-context: c\n")
    denied = subprocess.run([e2e.kubectl.path, "--kubeconfig", str(kubeconfig), "auth", "can-i", "delete", "nodes"],
                            capture_output=True, text=True)
    assert denied.stdout.strip() == "no"
    e2e.start_operator(kubeconfig)
    # Up and healthy; it plans once there is a pool (the loop runs from a daemon per AcceleratorPool).
    wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{e2e.metrics_port}/healthz", timeout=2).status == 200,
             60, what=lambda: f"the operator's /healthz:\n{e2e.operator_log()}")
    assert e2e.operator.poll() is None
    assert "Traceback" not in e2e.operator_log() and "Forbidden" not in e2e.operator_log()


def test_examples_applied_with_kubectl_run_pods_on_the_cheapest_pool(e2e: E2E) -> None:
    e2e.fleet.set_load("default", "llama3-8b-chat", "rtx4090", Load(rps=3.0, input_tokens=205, output_tokens=200))
    e2e.kubectl("apply", "-f", "manifests/examples/")
    wait_for(lambda: e2e.deployments().get("rtx4090", 0) >= 1, 60,
             what=lambda: f"a Deployment on rtx4090: {e2e.deployments()}\n{e2e.operator_log()}")
    # Real ReplicaSets and Pods, scheduled by the real scheduler onto their pool's nodes, Running under kwok.
    running = wait_for(lambda: [p for p in e2e.pods() if p.status.phase == "Running"], 60, what="running pods")
    for p in running:
        pool = p.metadata.labels["kilowatt.dev/pool"]
        assert p.spec.node_name.startswith(pool + "-"), (pool, p.spec.node_name)
    wait_for(lambda: (e2e.custom.get_namespaced_custom_object("kilowatt.dev", "v1alpha1", "default",
                                                              "inferenceservices", "llama3-8b-chat")
                      .get("status", {}).get("observed") or {}).get("requestsPerSecond"), 60,
             what="observed load in status")
    def columns() -> list[str]:
        return e2e.kubectl("get", "inferenceservices", "-o", "custom-columns=MODE:.spec.scaling.mode,"
                           "PLACEMENT:.status.placementSummary,RPS:.status.observed.requestsPerSecond,"
                           "SLO:.status.sloMet,COST:.status.costPerHourUsd").stdout.splitlines()[1].split()

    # The first placement (before any load is observed) is the floor; at 3 req/s it settles on the cheap pool.
    out = wait_for(lambda: (c := columns()) and "RTX-4090" in c[1] and c, 60, what=lambda: str(columns()))
    assert out[0] == "Active" and float(out[2]) > 0 and out[3] in ("True", "False")
    assert float(out[4]) > 0
    row = [line for line in e2e.kubectl("get", "inferenceservices").stdout.splitlines()
           if line.startswith("llama3-8b-chat")][0]
    assert "RTX-4090" in row and "Active" in row
    pools = e2e.kubectl("get", "acceleratorpools").stdout
    assert "RTX-4090" in pools and "H100-SXM" in pools


def test_a_full_4090_pool_leaves_pods_pending_and_the_operator_spills_to_h100(e2e: E2E) -> None:
    # Another tenant takes all but one of the RTX 4090 GPUs kilowatt does not hold: the nodes still advertise
    # 8, the scheduler has room for one more GPU.
    held = sum(int(d.metadata.annotations["kilowatt.dev/tensor-parallel"]) * (d.spec.replicas or 0)
               for d in e2e.apps.list_namespaced_deployment("default", label_selector="kilowatt.dev/pool=rtx4090").items)
    others = max(0, 8 - held - 1)
    e2e.apps.create_namespaced_deployment("default", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "other-tenant"},
        "spec": {"replicas": others, "selector": {"matchLabels": {"app": "other"}}, "template": {
            "metadata": {"labels": {"app": "other"}},
            "spec": {"nodeSelector": {"kilowatt.dev/gpu": "rtx4090"},
                     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     "containers": [{"name": "c", "image": "other", "resources": {
                         "limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}}]}}}})
    wait_for(lambda: sum(1 for p in e2e.core.list_namespaced_pod("default", label_selector="app=other").items
                         if p.spec.node_name) >= others, 60, what="the other tenant's pods")
    e2e.fleet.set_load("default", "llama3-8b-chat", "rtx4090", Load(rps=30.0, input_tokens=205, output_tokens=200))

    def pending() -> list:
        return [p for p in e2e.pods() if p.status.phase == "Pending" and any(
            c.reason == "Unschedulable" for c in p.status.conditions or [])]

    wait_for(pending, 90, what=lambda: f"Pending pods: {e2e.deployments()}\n{e2e.operator_log()}")
    seen_pending_at = e2e.periods()
    h100_then = e2e.deployments().get("h100", 0)
    wait_for(lambda: e2e.deployments().get("h100", 0) > h100_then, 60,
             what=lambda: f"a spill to h100: {e2e.deployments()}\n{e2e.operator_log()}")
    # Within two control periods of the first Pending pod being visible (one more for when it was seen).
    assert e2e.periods() - seen_pending_at <= 3
    h100 = wait_for(lambda: [p for p in e2e.pods() if p.spec.node_name == "h100-a" and p.status.phase == "Running"],
                    60, what="pods running on the H100 node")
    assert h100
    events = e2e.kubectl("get", "events", "--field-selector", "reason=Scaled").stdout
    assert "h100" in events


def test_helm_upgrade_changes_the_operator_deployment(e2e: E2E) -> None:
    e2e.helm("upgrade", "kilowatt", "charts/kilowatt", "--namespace", NAMESPACE, "--reuse-values",
             "--set=operator.controlPeriodSeconds=5")
    args = e2e.kubectl("get", "deployment", "kilowatt", "-n", NAMESPACE,
                       "-o", "jsonpath={.spec.template.spec.containers[0].args}").stdout
    assert "--period-seconds=5" in args
    assert "2" == e2e.kubectl("get", "deployment", "kilowatt", "-n", NAMESPACE,
                              "-o", "jsonpath={.metadata.generation}").stdout.strip()


def test_helm_uninstall_leaves_only_what_users_own_and_gc_removes_the_rest(e2e: E2E) -> None:
    e2e.operator.terminate()
    e2e.operator.wait(timeout=30)
    e2e.helm("uninstall", "kilowatt", "--namespace", NAMESPACE)
    for kind, name, ns in [("serviceaccount", "kilowatt", NAMESPACE), ("deployment", "kilowatt", NAMESPACE),
                           ("service", "kilowatt-metrics", NAMESPACE), ("clusterrole", "kilowatt", None),
                           ("clusterrolebinding", "kilowatt", None)]:
        args = ["get", kind, name, "--ignore-not-found", "-o", "name"] + (["-n", ns] if ns else [])
        wait_for(lambda a=args: e2e.kubectl(*a).stdout.strip() == "", 30, what=f"{kind}/{name} removed")
    # The users' objects stay: their InferenceService, and the Deployments that serve it (owned by it).
    assert e2e.kubectl("get", "inferenceservice", "llama3-8b-chat", "-o", "name").stdout.strip()
    assert e2e.deployments()
    # Deleting the InferenceService with the operator gone completes at once (no finalizer waits for it), and
    # the real garbage collector removes its Deployments and Pods through their owner references.
    deleted = e2e.kubectl("delete", "inferenceservice", "llama3-8b-chat", "--timeout=30s", check=False)
    assert deleted.returncode == 0, deleted.stderr
    wait_for(lambda: not e2e.deployments() and not e2e.pods(), 90,
             what=lambda: f"garbage collection: {e2e.deployments()} {len(e2e.pods())} pods")
    assert e2e.kubectl("get", "deployment", "other-tenant", "-o", "name").stdout.strip()
