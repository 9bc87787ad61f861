"""The planner's start on large programs: whole-replica patterns per service priced against the pools."""

import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kilowatt.planner.patterns import Priced, pattern_start

UNMET_USD_PER_RPS = 1000.0
SHORT_USD_PER_REPLICA = 1000.0


def priced(services, options, pool_gpus):
    """services: (target req/s, floor, max, equal share); options: (service, capacity req/s, GPUs, pool,
    USD per hour, churn USD, replicas now)."""
    o = list(zip(*options))
    s = list(zip(*services))
    return Priced(np.array(o[0]), np.array(o[1], dtype=float), np.array(o[2]), np.array(o[3]),
                  np.array(o[4], dtype=float), np.array(o[5], dtype=float), np.array(o[6]),
                  np.array(s[0], dtype=float), np.array(s[1]), np.array(s[2]), np.array(s[3], dtype=bool),
                  UNMET_USD_PER_RPS, SHORT_USD_PER_REPLICA, np.array(pool_gpus))


def start(p):
    counts = pattern_start(p, time.perf_counter() + 60)
    assert counts is not None
    return counts.tolist()


def test_whole_replicas_go_where_they_leave_least_unmet():
    # Four GPUs, two services of 2.5 and 1.2 req/s at 1 req/s a GPU: 3 + 1 leaves 0.2 req/s unmet, 2 + 2 leaves
    # 0.5. The compact relaxation (2.5 + 1.2 GPUs) fits and says nothing about which to round down.
    p = priced([(2.5, 0, 8, False), (1.2, 0, 8, False)],
               [(0, 1.0, 1, 0, 1.0, 0.0, 0), (1, 1.0, 1, 0, 1.0, 0.0, 0)], [4])
    assert start(p) == [3, 1]


def test_what_runs_now_stays_where_moving_saves_less_than_it_costs():
    # Two replicas run on pool 1 at $1.00/h each; pool 0 offers $0.90/h, but each replica started or stopped
    # costs $0.50: moving both saves $0.20/h for $2.00 of churn.
    p = priced([(1.8, 0, 8, False)],
               [(0, 1.0, 1, 0, 0.90, 0.5, 0), (0, 1.0, 1, 1, 1.00, 0.5, 2)], [8, 8])
    assert start(p) == [0, 2]
    # With churn free, the cheaper pool wins.
    p = priced([(1.8, 0, 8, False)],
               [(0, 1.0, 1, 0, 0.90, 0.0, 0), (0, 1.0, 1, 1, 1.00, 0.0, 2)], [8, 8])
    assert start(p) == [2, 0]


def test_behind_a_plain_service_a_mix_counts_at_its_slowest_replica():
    # 10 req/s: one fast replica (6 req/s, the only GPU of pool 0) and slow ones (4 req/s, two GPUs in pool 1).
    # Weighted shares: fast + slow = 10 covers it. Equal shares: fast + slow is worth 2 x 4 = 8; it takes
    # fast + 2 slow (3 x 4 = 12).
    options = [(0, 6.0, 1, 0, 3.0, 0.0, 0), (0, 4.0, 1, 1, 1.0, 0.0, 0)]
    assert start(priced([(10.0, 0, 8, False)], options, [1, 2])) == [1, 1]
    assert start(priced([(10.0, 0, 8, True)], options, [1, 2])) == [1, 2]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_pools_and_replica_limits_always_hold(data):
    n_svc = data.draw(st.integers(1, 12))
    n_pool = data.draw(st.integers(1, 4))
    services = [(data.draw(st.floats(0.1, 40.0)), data.draw(st.integers(0, 2)), data.draw(st.integers(1, 10)),
                 data.draw(st.booleans())) for _ in range(n_svc)]
    options = []
    for s in range(n_svc):
        for pool in data.draw(st.lists(st.integers(0, n_pool - 1), min_size=1, max_size=n_pool, unique=True)):
            options.append((s, data.draw(st.floats(0.5, 20.0)), data.draw(st.sampled_from([1, 2, 4, 8])), pool,
                            data.draw(st.floats(0.1, 10.0)), data.draw(st.floats(0.0, 2.0)),
                            data.draw(st.integers(0, 3))))
    pool_gpus = [data.draw(st.integers(0, 24)) for _ in range(n_pool)]
    counts = start(priced(services, options, pool_gpus))
    used = [0] * n_pool
    replicas = [0] * n_svc
    for (s, _, gpus, pool, *_), n in zip(options, counts):
        assert n >= 0
        used[pool] += n * gpus
        replicas[s] += n
    assert all(u <= g for u, g in zip(used, pool_gpus)), (used, pool_gpus)
    assert all(r <= s[2] for r, s in zip(replicas, services)), (replicas, services)
