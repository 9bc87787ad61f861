"""Periods read the API objects from watches (``controller.reads.Informers``, what ``kilowatt run`` uses): against
the real API server, the watches hold what a list returns through creates, changes and deletes; a steady period
lists nothing; and a period sees kilowatt's own writes of the period before at once."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from kubernetes import client

from kilowatt.controller.loop import ControlLoop, LoopConfig
from kilowatt.controller.reads import Informers, Lister
from kilowatt.controller.telemetry import Telemetry
from kilowatt.metrics.source import Observations, ServiceObservation
from kilowatt.metrics.static import StaticSource
from kilowatt.runner import kube_clients

from tests.integration.operator_harness import H100, make_gpu_node, pool_body, wait_for

GROUP, VERSION = "kilowatt.dev", "v1alpha1"
NS = "reads"
POOL = "reads-h100"


class Counting(client.ApiClient):
    """Counts the requests made through it, by HTTP method and path."""

    def __init__(self, configuration) -> None:
        super().__init__(configuration)
        self.requests: list[tuple[str, str, bool]] = []  # method, url, whether a watch
        self._lock = threading.Lock()

    def call_api(self, method, url, *args, **kwargs):
        with self._lock:
            self.requests.append((method, url, "watch=true" in url.lower()))
        return super().call_api(method, url, *args, **kwargs)

    def lists(self) -> list[str]:
        with self._lock:
            return [url for method, url, watch in self.requests if method == "GET" and not watch]


def _service(name: str, tpot_ms: int = 50) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"model": {"name": "m", "parametersBillion": 8.03, "dtype": "bf16"},
                     "slo": {"ttftMilliseconds": 1000, "tpotMilliseconds": tpot_ms},
                     "replicas": {"min": 1, "max": 8}, "pools": [POOL],
                     "scaling": {"scaleDownStabilizationSeconds": 0}}}


@pytest.fixture(scope="module")
def cluster(control_plane, crds):
    core, apps, custom = kube_clients(str(control_plane.kubeconfig))
    make_gpu_node(core, f"{POOL}-node", POOL, 32)
    custom.create_cluster_custom_object(GROUP, VERSION, "acceleratorpools", pool_body(
        POOL, H100, POOL, 2.49, {"flatUsdPerKWh": 0.10}, 1.2))
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    yield core, apps, custom
    core.delete_namespace(NS)
    custom.delete_cluster_custom_object(GROUP, VERSION, "acceleratorpools", POOL)
    core.delete_node(f"{POOL}-node")


def _names_and_versions(objects: list[dict]) -> set[tuple[str, str, str]]:
    return {(o["metadata"].get("namespace") or "", o["metadata"]["name"], o["metadata"]["resourceVersion"])
            for o in objects}


def test_watches_hold_what_a_list_returns_through_creates_changes_and_deletes(cluster) -> None:
    core, apps, custom = cluster
    informers = Informers(core, apps, custom, namespaces=(NS,))
    lister = Lister(core, apps, custom, namespaces=(NS,))
    try:
        assert informers.objects("services") == []  # synced on the first ask, and nothing there yet
        for i in range(3):
            custom.create_namespaced_custom_object(GROUP, VERSION, NS, "inferenceservices", _service(f"w{i}"))
        custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "inferenceservices", "w1",
                                              {"spec": {"slo": {"tpotMilliseconds": 80}}})
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "inferenceservices", "w2")
        wait_for(lambda: _names_and_versions(informers.objects("services")) ==
                 _names_and_versions(lister.objects("services")), 20,
                 what=lambda: f"watched {_names_and_versions(informers.objects('services'))} vs listed "
                              f"{_names_and_versions(lister.objects('services'))}")
        held = {o["metadata"]["name"]: o for o in informers.objects("services")}
        assert set(held) == {"w0", "w1"}
        assert held["w1"]["spec"]["slo"]["tpotMilliseconds"] == 80  # the change, not the object as created
        assert held["w0"]["kind"] == "InferenceService" and "managedFields" not in held["w0"]["metadata"]
        nodes = {o["metadata"]["name"] for o in informers.objects("nodes")}
        assert f"{POOL}-node" in nodes and all(o["kind"] == "Node" for o in informers.objects("nodes"))
    finally:
        informers.stop()
        for i in range(3):
            try:
                custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "inferenceservices", f"w{i}")
            except client.ApiException:
                pass


def _observations(rps: float) -> Observations:
    return Observations(True, services={f"{NS}/p{i}": ServiceObservation(
        requests_per_second=rps * (i + 1), input_tokens_mean=300.0, output_tokens_mean=200.0, ttft_p_seconds=0.2,
        tpot_p_seconds=0.03, slo_attainment=0.99) for i in range(3)})


def test_a_period_reading_from_watches_lists_nothing_and_sees_its_own_writes_at_once(cluster, control_plane) -> None:
    core, apps, custom = cluster
    for i in range(3):
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, "inferenceservices", _service(f"p{i}"))
    configuration = client.Configuration()
    from kubernetes import config

    config.load_kube_config(str(control_plane.kubeconfig), client_configuration=configuration)
    counting = Counting(configuration)
    informers = Informers(client.CoreV1Api(counting), client.AppsV1Api(counting), client.CustomObjectsApi(counting),
                          namespaces=(NS,))
    source = StaticSource(_observations(3.0))
    loop = ControlLoop(core, apps, custom, source, LoopConfig(namespaces=(NS,)), Telemetry(), reads=informers)
    # Capacity curves measured whenever a period needs them (as in the twin): this test is about what periods read
    # and write, not about which curves this machine measures within a period's budget (run_once has no time
    # between periods to catch up in; tests/unit/test_decide.py covers the budget).
    loop.decider.capacity.measure_budget_seconds = None
    try:
        wait_for(lambda: len(informers.objects("services")) == 3, 20, what="the three services watched")
        assert informers.objects("deployments") is not None  # listed once (none of ours yet) ...
        for informer in informers.informers("deployments"):
            informer.stop()  # ... and no longer watched: from here only kilowatt's own writes reach this copy
        first = loop.run_once(datetime.now(timezone.utc))
        assert not first.errors, first.errors
        assert {key for key in first.desired} == {f"{NS}/p{i}" for i in range(3)}
        # The Deployments this period applied are in the copy at once, with no watch event to bring them.
        held = {o["metadata"]["name"]: o["spec"]["replicas"] for o in informers.objects("deployments")
                if o["metadata"]["namespace"] == NS}
        assert held == {f"p{i}-{POOL}": first.desired[f"{NS}/p{i}"][POOL] for i in range(3)}, held

        lists_before = len(counting.lists())
        second = loop.run_once(datetime.now(timezone.utc))  # the same load, right away
        assert not second.errors, second.errors
        assert second.decisions == [], "a period planned again on its own writes as if they had not happened"
        assert second.desired == first.desired
        assert counting.lists()[lists_before:] == []  # nothing listed: every object came from the watches

        source.observations = _observations(60.0)  # the load grows 20x: the next period scales from the copy
        third = loop.run_once(datetime.now(timezone.utc))
        assert third.decisions, "a 20x load changed no placement"
        grown = 0
        for key, desired in third.desired.items():
            name = key.split("/")[1]
            found = apps.read_namespaced_deployment(f"{name}-{POOL}", NS).spec.replicas
            assert found == desired[POOL] >= first.desired[key][POOL], (key, found, desired)
            grown += desired[POOL] > first.desired[key][POOL]
        assert grown, (first.desired, third.desired)
    finally:
        loop.close()
        for i in range(3):
            custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "inferenceservices", f"p{i}")
