"""The embedded control plane (kilowatt demo, and every integration test) picks free ports and binds them a moment
later; when another process takes one in between, it starts again on fresh ports instead of failing the run."""

from __future__ import annotations

import socket

import pytest

from kilowatt.demo.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def test_a_port_taken_between_picking_and_binding_is_picked_again() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        cp = ControlPlane()
        cp.apiserver_port, cp.server = taken, f"https://127.0.0.1:{taken}"
        try:
            cp.start()
            assert cp.apiserver_port != taken
            assert cp.server == f"https://127.0.0.1:{cp.apiserver_port}"
            assert f"server: {cp.server}" in cp.kubeconfig.read_text()
        finally:
            cp.stop()
