"""One period's decision over a day of noisy demand: the stabiliser counts GPUs, so a change of tensor-parallel
degree never asks a pool for more GPUs than it has, and the degree is not rebuilt while a scale-down is held."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from kilowatt.decide import Decider, ServiceInput
from kilowatt.planner.reasons import DownWindow
from kilowatt.metrics.source import Observations, ServiceObservation
from kilowatt.planner.snapshot import CurrentPlacement
from kilowatt.state import load_objects, pool_state

from tests.paths import EXAMPLES


def test_a_day_of_decisions_stays_within_every_pool_and_holds_degrees_while_scaling_down():
    pools, services = load_objects([EXAMPLES])
    svc = services[0]
    by_name = {p.name: p for p in pools}
    states = {p.name: pool_state(p, p.spec.max_gpus) for p in pools}
    decider = Decider()
    rng = np.random.default_rng(7)
    start = datetime(2024, 7, 16, 7, tzinfo=timezone.utc)
    current: dict[str, CurrentPlacement] = {}
    degree_changes = 0
    for minute in range(0, 24 * 60):
        base = 13 + 9 * np.sin(minute / 1440 * 2 * np.pi) ** 2
        rps = float(max(0.5, base * rng.lognormal(0, 0.15)))
        # The mean lengths of a minute's requests wander too (the Azure conversation trace: 1155 / 211 tokens).
        prompt, output = 1155.0 * rng.lognormal(0, 0.2), 211.0 * rng.lognormal(0, 0.1)
        obs = Observations(True, services={svc.key: ServiceObservation(rps, prompt, output, None, None, None)})
        item = ServiceInput.of(svc, current, obs.services[svc.key])
        d = decider.decide(start + timedelta(minutes=minute), minute * 60.0, [item], by_name, states).decisions[svc.key]
        for pool, n in d.desired.items():
            k = d.tensor_parallel[pool]
            assert n * k <= states[pool].gpus_max, (minute, pool, n, k, d.reason)
            if pool in current and n > 0 and k != current[pool].tensor_parallel:
                degree_changes += 1
                assert not any(isinstance(h, DownWindow) and h.pool == pool for h in d.holds), (minute, d.reason)
        current = {p: CurrentPlacement(n, d.tensor_parallel[p], n) for p, n in d.desired.items() if n > 0}
    # Churn stays bounded: a degree is not flipped back and forth every few minutes.
    assert degree_changes <= 24, degree_changes
