"""Nothing kilowatt leaves behind makes a deletion wait: an InferenceService or AcceleratorPool is deleted at once
whether the operator runs or not, the finalizer earlier versions added is removed by the operator, and deleting
the CRDs with objects still in them completes. On its own control plane, since it deletes the CRDs."""

from __future__ import annotations

import copy
import subprocess

import pytest
import yaml
from kubernetes import client, config

from kilowatt.api.v1alpha1 import AcceleratorPool
from kilowatt.controller.actuator import deployment_manifest, deployment_name
from kilowatt.controller.loop import ControlLoop, LoopConfig
from kilowatt.demo.controlplane import ControlPlane, find_binary, free_port
from kilowatt.metrics.static import StaticSource

from tests.integration.operator_harness import OperatorThread, wait_for
from tests.paths import EXAMPLES, REPO

pytestmark = pytest.mark.integration

GROUP, VERSION = "kilowatt.dev", "v1alpha1"
LEGACY_FINALIZER = "kilowatt.dev/finalizer"
SERVICE = yaml.safe_load((EXAMPLES / "llama3-8b.yaml").read_text())


@pytest.fixture(scope="module")
def plane():
    cp = ControlPlane().start()
    api_client = config.new_client_from_config(str(cp.kubeconfig))

    def kubectl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(find_binary("kubectl")), *args], env=cp.env(), cwd=REPO, capture_output=True,
                              text=True, timeout=120)

    assert kubectl("apply", "--server-side", "-f", "crds/").returncode == 0
    assert kubectl("wait", "--for=condition=established", "--timeout=60s", "crd",
                   "-l", "app.kubernetes.io/part-of=kilowatt").returncode == 0
    yield cp, client.CustomObjectsApi(api_client), kubectl
    api_client.close()
    cp.stop()


def _service(name: str, finalizers: list[str] | None = None) -> dict:
    doc = copy.deepcopy(SERVICE)
    doc["metadata"] = {"name": name, "namespace": "default", **({"finalizers": finalizers} if finalizers else {})}
    return doc


def _get(custom, name: str) -> dict | None:
    try:
        return custom.get_namespaced_custom_object(GROUP, VERSION, "default", "inferenceservices", name)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_the_running_operator_adds_no_finalizer_and_removes_the_old_one(plane) -> None:
    cp, custom, kubectl = plane
    assert kubectl("apply", "-f", "manifests/examples/").returncode == 0
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", "inferenceservices",
                                           _service("upgraded", [LEGACY_FINALIZER]))
    operator = OperatorThread(str(cp.kubeconfig), f"http://127.0.0.1:{free_port()}").start()
    try:
        def handled(name: str) -> dict | None:
            body = _get(custom, name)
            annotations = (body or {}).get("metadata", {}).get("annotations") or {}
            return body if f"{GROUP}/last-handled-configuration" in annotations else None

        # kopf has handled both: the new one got no finalizer, the one from an older version lost its own.
        fresh = wait_for(lambda: handled("llama3-8b-chat"), 30, what="kopf to handle llama3-8b-chat")
        assert not fresh["metadata"].get("finalizers"), fresh["metadata"]
        wait_for(lambda: (b := handled("upgraded")) and not b["metadata"].get("finalizers"), 30,
                 what="kopf to drop the finalizer an earlier kilowatt added")
        # Deleted while the operator runs: gone at once.
        out = kubectl("delete", "inferenceservice", "llama3-8b-chat", "-n", "default", "--timeout=30s")
        assert out.returncode == 0, out.stderr
        assert _get(custom, "llama3-8b-chat") is None
    finally:
        operator.stop()
    assert operator.error is None, operator.error


def test_deleting_a_service_or_a_pool_never_waits_for_a_stopped_operator(plane) -> None:
    _, custom, kubectl = plane
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", "inferenceservices", _service("orphan"))
    for kind, name in (("inferenceservice", "orphan"), ("acceleratorpool", "h100")):
        out = kubectl("delete", kind, name, "--timeout=30s", *(["-n", "default"] if kind == "inferenceservice" else []))
        assert out.returncode == 0, out.stderr


def test_a_period_removes_the_deployments_of_a_service_deleted_while_the_operator_was_away(plane) -> None:
    """No finalizer kept the service for the operator, and no garbage collector runs on this control plane: the
    next period removes what kilowatt placed for a service that is gone, and nothing else."""
    cp, custom, _ = plane
    api_client = config.new_client_from_config(str(cp.kubeconfig))
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    pool = AcceleratorPool.model_validate(yaml.safe_load((EXAMPLES / "pool-rtx4090.yaml").read_text()))
    bodies = {}
    for name in ("gone", "staying"):
        bodies[name] = custom.create_namespaced_custom_object(GROUP, VERSION, "default", "inferenceservices",
                                                              _service(name))
        apps.create_namespaced_deployment("default", deployment_manifest(bodies[name], pool, 1, 1))
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "inferenceservices", "gone")
    loop = ControlLoop(core, apps, custom, StaticSource(), LoopConfig())
    report = loop.run_once()
    assert report.errors == [], report.errors
    left = {d.metadata.name for d in apps.list_namespaced_deployment("default").items}
    assert deployment_name("gone", "rtx4090") not in left
    assert deployment_name("staying", "rtx4090") in left
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "inferenceservices", "staying")
    api_client.close()


def test_deleting_the_crds_with_objects_in_them_completes(plane) -> None:
    _, custom, kubectl = plane
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", "inferenceservices", _service("left-behind"))
    assert kubectl("get", "acceleratorpool", "rtx4090", "-o", "name").returncode == 0  # still there
    out = kubectl("delete", "-f", "crds/", "--timeout=90s")
    assert out.returncode == 0, out.stderr
    remaining = kubectl("get", "crd", "-l", "app.kubernetes.io/part-of=kilowatt", "-o", "name")
    assert remaining.stdout.strip() == "", remaining.stdout
