"""Real components for integration tests: kube-apiserver 1.36 + etcd, kubectl and helm from the setup cache."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from kilowatt.demo.controlplane import ControlPlane, ControlPlaneError, find_binary

from tests.paths import REPO


class Tool:
    """A CLI pointed at the test control plane: ``kubectl("get", "ns")`` returns the CompletedProcess."""

    def __init__(self, name: str, control_plane: ControlPlane) -> None:
        self.path = str(find_binary(name))
        self.cp = control_plane

    def __call__(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([self.path, *args], env=self.cp.env(), cwd=REPO, capture_output=True, text=True,
                                input=stdin, timeout=180)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.path} {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    try:
        cp = ControlPlane().start()
    except ControlPlaneError as exc:
        pytest.fail(f"cannot start the test control plane: {exc}")
    yield cp
    cp.stop()


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Tool:
    return Tool("kubectl", control_plane)


@pytest.fixture(scope="session")
def helm(control_plane: ControlPlane) -> Tool:
    return Tool("helm", control_plane)


@pytest.fixture(scope="session")
def crds(kubectl: Tool) -> None:
    kubectl("apply", "-f", "crds/")
    kubectl("wait", "--for=condition=established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/part-of=kilowatt")
    # kubectl cached discovery before the CRDs existed and does not refresh it for short names: refresh now.
    kubectl("api-resources", "--api-group=kilowatt.dev")


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane):
    """The official kubernetes client, configured for the test control plane."""
    from kubernetes import client, config

    return config.new_client_from_config(config_file=str(control_plane.kubeconfig)), client
