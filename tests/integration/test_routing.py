"""Routing objects against the real API server with the Gateway API's standard CRDs and the Inference Extension's
InferencePool CRD (from their Go modules, fetched by scripts/setup.sh): the route follows the plan and the ready
replicas, a pool with nothing ready leaves it, a mode switch cleans up the old objects, deleting the service removes
everything, and with the CRDs absent a condition says so while the Deployments are placed all the same.
On its own control plane: it installs and removes CRDs."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
from kubernetes import client, config

from kilowatt.controller.loop import ControlLoop, LoopConfig
from kilowatt.controller.routing import WEIGHT_SCALE
from kilowatt.demo.controlplane import ControlPlane, find_binary
from kilowatt.metrics import Observations
from kilowatt.metrics.source import ServiceObservation
from kilowatt.metrics.static import StaticSource

from tests.integration.operator_harness import H100, RTX4090, make_gpu_node, pool_body, service_body
from tests.paths import REPO

pytestmark = pytest.mark.integration

GROUP, VERSION = "kilowatt.dev", "v1alpha1"
NS, NAME = "routes", "chat"
KEY = f"{NS}/{NAME}"
CACHE = Path(os.environ.get("KILOWATT_CACHE", Path.home() / ".cache/kilowatt")) / "crds"


def measured(loop: ControlLoop) -> ControlLoop:
    """Capacity curves measured whenever a period needs them (no per-period budget, as in the twin): the routes'
    weights follow the planned capacity, and these tests are about the objects written, not about how fast this
    machine measures curves (a period past its budget plans on provisional figures: tests/unit/test_decide.py)."""
    loop.decider.capacity.measure_budget_seconds = None
    return loop


class Rig:
    def __init__(self) -> None:
        self.cp = ControlPlane().start()
        api_client = config.new_client_from_config(str(self.cp.kubeconfig))
        self.core, self.apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        self.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", "-l",
                     "app.kubernetes.io/part-of=kilowatt")
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
        make_gpu_node(self.core, "r-4090", "rtx-r", 2)
        make_gpu_node(self.core, "r-h100", "h100-r", 8)
        flat = {"flatUsdPerKWh": 0.12}
        for body in (pool_body("rtx-r", RTX4090, "rtx-r", 0.10, flat, 1.0),
                     pool_body("h100-r", H100, "h100-r", 2.50, flat, 1.0)):
            body["spec"]["maxGPUs"] = 2 if body["metadata"]["name"] == "rtx-r" else 8
            self.custom.create_cluster_custom_object(GROUP, VERSION, "acceleratorpools", body)
        # Demand the floor covers: three replicas, the RTX 4090 pool holds two, the third goes to the H100s.
        load = ServiceObservation(requests_per_second=0.5, input_tokens_mean=None, output_tokens_mean=None,
                                  ttft_p_seconds=None, tpot_p_seconds=None, slo_attainment=None)
        self.loop = measured(ControlLoop(self.core, self.apps, self.custom,
                                         StaticSource(Observations(available=True, services={KEY: load})),
                                         LoopConfig(namespaces=(NS,))))

    def kubectl(self, *args: str) -> str:
        out = subprocess.run([str(find_binary("kubectl")), *args], env=self.cp.env(), capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def period(self) -> None:
        report = self.loop.run_once()
        assert report.errors == [], report.errors

    def mark_ready(self, ready: dict[str, int]) -> None:
        for d in self.apps.list_namespaced_deployment(NS).items:
            pool = d.metadata.labels["kilowatt.dev/pool"]
            n = ready.get(pool, d.spec.replicas or 0)
            self.apps.patch_namespaced_deployment_status(d.metadata.name, NS, {"status": {
                "replicas": d.spec.replicas, "readyReplicas": n, "availableReplicas": n, "updatedReplicas": n,
                "observedGeneration": d.metadata.generation}})

    def replicas(self) -> dict[str, int]:
        return {d.metadata.labels["kilowatt.dev/pool"]: d.spec.replicas
                for d in self.apps.list_namespaced_deployment(NS).items}

    def services(self) -> dict[str, dict]:
        return {s.metadata.name: s.spec.selector for s in self.core.list_namespaced_service(
            NS, label_selector="app.kubernetes.io/managed-by=kilowatt").items}

    def custom_objects(self, group: str, plural: str) -> list[dict]:
        try:
            return self.custom.list_namespaced_custom_object(group, "v1", NS, plural)["items"]
        except client.ApiException as exc:
            if exc.status == 404:
                return []
            raise

    def route(self) -> dict | None:
        routes = self.custom_objects("gateway.networking.k8s.io", "httproutes")
        assert len(routes) <= 1
        return routes[0] if routes else None

    def condition(self, kind: str) -> dict:
        body = self.custom.get_namespaced_custom_object(GROUP, VERSION, NS, "inferenceservices", NAME)
        return {c["type"]: c for c in body["status"]["conditions"]}.get(kind, {})

    def set_routing(self, routing: dict) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "inferenceservices", NAME,
                                                   {"spec": {"routing": routing}})


@pytest.fixture(scope="module")
def rig():
    rig = Rig()
    yield rig
    rig.cp.stop()


WEIGHTED = {"mode": "Weighted", "parentRefs": [{"name": "inference-gateway"}]}


def test_without_the_gateway_api_the_condition_says_so_and_deployments_are_placed(rig: Rig) -> None:
    body = service_body(NS, NAME, replicas={"min": 3, "max": 6}, pools=["rtx-r", "h100-r"])
    body["spec"]["routing"] = copy.deepcopy(WEIGHTED)
    rig.custom.create_namespaced_custom_object(GROUP, VERSION, NS, "inferenceservices", body)
    rig.period()
    assert rig.replicas() == {"rtx-r": 2, "h100-r": 1}
    routed = rig.condition("Routed")
    assert routed["status"] == "False" and routed["reason"] == "RoutingAPIMissing", routed
    assert "HTTPRoute (gateway.networking.k8s.io/v1)" in routed["message"] and "mode to Service" in routed["message"]


def test_the_route_follows_the_plan_and_the_ready_replicas(rig: Rig) -> None:
    for folder in CACHE.glob("gateway-api-*"):
        rig.kubectl("apply", "--server-side", "-f", str(folder))
    for folder in CACHE.glob("inference-extension-*"):
        rig.kubectl("apply", "--server-side", "-f", str(folder))
    rig.kubectl("wait", "--for=condition=established", "--timeout=60s", "crd/httproutes.gateway.networking.k8s.io",
                "crd/inferencepools.inference.networking.k8s.io")
    rig.mark_ready({})
    rig.period()
    # A Service per pool, selecting that pool's pods of this service only.
    assert rig.services() == {
        "chat-rtx-r": {"kilowatt.dev/service": NAME, "kilowatt.dev/pool": "rtx-r"},
        "chat-h100-r": {"kilowatt.dev/service": NAME, "kilowatt.dev/pool": "h100-r"}}
    route = rig.route()
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": "inference-gateway"}]
    refs = {r["name"]: r for r in route["spec"]["rules"][0]["backendRefs"]}
    assert set(refs) == {"chat-rtx-r", "chat-h100-r"} and all(r["kind"] == "Service" for r in refs.values())
    weights = {n: r["weight"] for n, r in refs.items()}
    assert abs(sum(weights.values()) - WEIGHT_SCALE) <= 2
    # Two RTX 4090 replicas against one H100: the H100's replica is the faster one, but not twice as fast.
    assert weights["chat-h100-r"] > weights["chat-rtx-r"] / 2, weights
    assert rig.condition("Routed")["status"] == "True"
    assert "HTTPRoute weights by planned capacity" in rig.condition("Routed")["message"]
    # One RTX 4090 replica stops being ready: its pool's weight falls; none ready: the pool leaves the route.
    rig.mark_ready({"rtx-r": 1})
    rig.period()
    fewer = {r["name"]: r["weight"] for r in rig.route()["spec"]["rules"][0]["backendRefs"]}
    assert fewer["chat-rtx-r"] < weights["chat-rtx-r"], (weights, fewer)
    rig.mark_ready({"rtx-r": 0})
    rig.period()
    assert [r["name"] for r in rig.route()["spec"]["rules"][0]["backendRefs"]] == ["chat-h100-r"]
    rig.mark_ready({})


def test_a_restarted_operator_rewrites_no_routing_object_that_is_as_it_would_write_it(rig: Rig) -> None:
    rig.period()
    source = rig.loop.source
    rig.loop = measured(ControlLoop(rig.core, rig.apps, rig.custom, source, LoopConfig(namespaces=(NS,))))  # fresh memory
    applied: list[str] = []
    apply = rig.loop.applier.actuator.apply
    rig.loop.applier.actuator.apply = lambda manifest: (applied.append(manifest["kind"]), apply(manifest))
    rig.period()
    assert applied == []  # the hash stamped on each object says it is as kilowatt would write it


def test_a_pool_scaled_to_zero_leaves_the_route_and_its_service_goes(rig: Rig) -> None:
    rig.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "inferenceservices", NAME,
                                              {"spec": {"pools": ["h100-r"]}})
    for _ in range(4):  # down-steps, then the Deployment at 0 replicas
        rig.period()
        rig.mark_ready({})
    assert rig.replicas().get("rtx-r", 0) == 0 and rig.replicas()["h100-r"] >= 3
    assert set(rig.services()) == {"chat-h100-r"}
    assert [r["name"] for r in rig.route()["spec"]["rules"][0]["backendRefs"]] == ["chat-h100-r"]


def test_switching_to_inference_pools_replaces_the_services(rig: Rig) -> None:
    rig.set_routing({"mode": "InferencePool"})
    rig.period()
    pools = rig.custom_objects("inference.networking.k8s.io", "inferencepools")
    assert [p["metadata"]["name"] for p in pools] == ["chat-h100-r"]
    spec = pools[0]["spec"]
    assert spec["selector"]["matchLabels"] == {"kilowatt.dev/service": NAME, "kilowatt.dev/pool": "h100-r"}
    assert spec["targetPorts"] == [{"number": 8000}]
    assert spec["endpointPickerRef"]["name"] == "chat-h100-r-epp"
    refs = rig.route()["spec"]["rules"][0]["backendRefs"]
    assert [(r["group"], r["kind"], r["name"]) for r in refs] == [
        ("inference.networking.k8s.io", "InferencePool", "chat-h100-r")]
    assert rig.services() == {}  # the per-pool Services of Weighted mode are gone


def test_switching_to_service_mode_leaves_one_service_over_every_pod(rig: Rig) -> None:
    rig.set_routing({"mode": "Service", "parentRefs": []})
    rig.period()
    assert rig.services() == {NAME: {"kilowatt.dev/service": NAME}}
    assert rig.route() is None
    assert rig.custom_objects("inference.networking.k8s.io", "inferencepools") == []
    assert "equal share" in rig.condition("Routed")["message"]


def test_deleting_the_service_removes_everything_it_owned(rig: Rig) -> None:
    rig.set_routing(WEIGHTED)
    rig.period()
    assert rig.route() is not None
    rig.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "inferenceservices", NAME)
    rig.period()  # no garbage collector here: the operator's own sweep
    assert rig.replicas() == {} and rig.services() == {} and rig.route() is None
