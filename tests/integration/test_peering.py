"""Two operators, one active: kopf peering with distinct priorities; the other stands by, and takes over."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from tests.integration.operator_harness import OperatorThread, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def peering(api, crds):
    api_client, _ = api
    custom = client.CustomObjectsApi(api_client)
    custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings",
                                        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                                         "metadata": {"name": "kilowatt-peering-test"}})
    return "kilowatt-peering-test"


def test_two_operators_one_acts_and_the_other_takes_over(control_plane, peering):
    url = "http://127.0.0.1:9"  # no Prometheus: acting or not does not depend on metrics
    low = OperatorThread(str(control_plane.kubeconfig), url, standalone=False, priority=10, peering=peering).start()
    high = OperatorThread(str(control_plane.kubeconfig), url, standalone=False, priority=20, peering=peering).start()
    try:
        wait_for(lambda: high.loop.periods_run >= 2, 40, what="the high-priority operator runs")
        time.sleep(3)  # let the low-priority one see its peer and pause
        low_before, high_before = low.loop.periods_run, high.loop.periods_run
        time.sleep(5)
        assert high.loop.periods_run >= high_before + 3
        assert low.loop.periods_run == low_before, "the standby operator must not plan or actuate"
        assert _gauge(high, "kilowatt_leader") == 1.0 and _gauge(low, "kilowatt_leader") == 0.0
        high.stop()  # the active one goes away: the standby resumes
        wait_for(lambda: low.loop.periods_run >= low_before + 2, 60, what="the standby takes over")
        assert _gauge(low, "kilowatt_leader") == 1.0
    finally:
        high.stop()
        low.stop()


def _gauge(operator: OperatorThread, name: str) -> float:
    return operator.loop.telemetry.registry.get_sample_value(name)


def test_the_loop_runs_with_no_pool_at_all(kubectl):
    """One loop per process, not one per AcceleratorPool: on a cluster with no pool yet it still runs (and
    reports the services it cannot place)."""
    from kilowatt.demo.controlplane import ControlPlane

    from tests.integration.conftest import Tool

    cp = ControlPlane().start()
    try:
        own = Tool("kubectl", cp)
        own("apply", "-f", "crds/")
        own("wait", "--for=condition=established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/part-of=kilowatt")
        op = OperatorThread(str(cp.kubeconfig), "http://127.0.0.1:9").start()
        try:
            wait_for(lambda: op.loop.periods_run >= 3, 40, what="periods with no AcceleratorPool")
            assert op.loop.last_report.errors == []
        finally:
            op.stop()
    finally:
        cp.stop()
