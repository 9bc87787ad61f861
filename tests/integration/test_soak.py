"""The soak (benchmarks/soak_harness.py): 500 InferenceServices over 4 pools through a simulated day of changing load
against the real API server, with an operator restart at noon. Its figures are recorded by benchmarks/soak.py;
here the properties: no error in any period, no duplicate or missing Deployment, and a bounded number of API
requests per period (the operator must not hammer the API server)."""

from __future__ import annotations

import sys

import pytest

from tests.paths import REPO, SHARED_DATA

sys.path.insert(0, str(REPO / "benchmarks"))
from soak_harness import soak  # noqa: E402 - the benchmark's own harness, so the test checks what it records

pytestmark = pytest.mark.integration

SERVICES, POOLS = 500, 4
LISTS_PER_PERIOD = 5  # pools, services, nodes, Deployments, Pods


def test_a_simulated_day_of_500_services_over_4_pools() -> None:
    result = soak(SERVICES, POOLS, periods=96, data_dir=SHARED_DATA)
    assert len(result.periods) == 96
    assert result.error_messages == [] and all(p.errors == 0 for p in result.periods)
    assert result.restarts == 1
    assert result.duplicate_deployments == 0 and result.services_without_placement == 0
    assert sum(p.decisions for p in result.periods) >= SERVICES  # the first period places every service
    # Writes follow decisions: a changed placement costs an apply per pool touched, an event and a status
    # PATCH, and one more status PATCH when its replicas turn ready (the next period); drifting figures are
    # refreshed at most every 30 s of the loop's clock per service — here once per 15-minute period (the
    # throttle itself: tests/unit/test_operator_parts.py). The first period after each (re)start writes everything.
    for i, p in enumerate(result.periods):
        if i in (0, len(result.periods) // 2):
            continue
        recent = p.decisions + result.periods[i - 1].decisions
        assert p.api_calls <= LISTS_PER_PERIOD + 4 * recent + SERVICES, (i, p)
