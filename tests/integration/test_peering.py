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
