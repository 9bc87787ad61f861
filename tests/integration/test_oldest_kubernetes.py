"""The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) serves kilowatt's CRDs as 1.36 does: they
install, the examples apply, and the CEL rules refuse a bad spec with the field and the fix. scripts/setup.sh
builds that version's kube-apiserver from the Go module proxy, the same way as 1.36."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config, utils
from kubernetes.client.rest import ApiException

from kilowatt.demo.controlplane import ControlPlane

from tests.paths import EXAMPLES, REPO

pytestmark = pytest.mark.integration


def _oldest() -> tuple[str, Path]:
    claim = yaml.safe_load((REPO / "charts/kilowatt/Chart.yaml").read_text())["kubeVersion"]
    minor = re.fullmatch(r">=1\.(\d+)\.0-0", claim)
    assert minor, f"Chart.yaml kubeVersion {claim!r}: expected '>=1.N.0-0'"
    setup = (REPO / "scripts/setup.sh").read_text()
    version = re.search(r'OLDEST_KUBERNETES_VERSION:-(v1\.\d+\.\d+)', setup).group(1)
    assert version.startswith(f"v1.{minor.group(1)}."), (claim, version)
    cache = Path(os.environ.get("KILOWATT_CACHE", Path.home() / ".cache/kilowatt"))
    return version, cache / f"kubernetes-{version}" / "kube-apiserver"


@pytest.fixture(scope="module")
def oldest_api():
    version, binary = _oldest()
    if not binary.exists():
        pytest.fail(f"{binary} missing: scripts/setup.sh builds kube-apiserver {version}")
    cp = ControlPlane(apiserver=binary).start()
    api_client = config.new_client_from_config(str(cp.kubeconfig))
    yield version, api_client
    api_client.close()
    cp.stop()


def test_the_api_server_is_the_claimed_version(oldest_api) -> None:
    version, api_client = oldest_api
    assert client.VersionApi(api_client).get_code().git_version == version


def test_crds_install_examples_apply_and_cel_refuses_by_field(oldest_api) -> None:
    _, api_client = oldest_api
    for path in sorted((REPO / "crds").glob("*.yaml")):
        utils.create_from_yaml(api_client, str(path))
    ext = client.ApiextensionsV1Api(api_client)
    for crd in ("inferenceservices.kilowatt.dev", "acceleratorpools.kilowatt.dev"):
        _wait_established(ext, crd)
    custom = client.CustomObjectsApi(api_client)
    service = yaml.safe_load((EXAMPLES / "llama3-8b.yaml").read_text())
    for path in sorted(EXAMPLES.glob("pool-*.yaml")):
        custom.create_cluster_custom_object("kilowatt.dev", "v1alpha1", "acceleratorpools",
                                            yaml.safe_load(path.read_text()))
    custom.create_namespaced_custom_object("kilowatt.dev", "v1alpha1", "default", "inferenceservices", service)
    bad = copy.deepcopy(service)
    bad["metadata"]["name"] = "inverted"
    bad["spec"]["replicas"] = {"min": 4, "max": 2}
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object("kilowatt.dev", "v1alpha1", "default", "inferenceservices", bad)
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    assert "spec.replicas.min" in message and "replicas.min must be at most replicas.max" in message, message


def _wait_established(ext: client.ApiextensionsV1Api, name: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise AssertionError(f"CRD {name} not established after 30 s")
