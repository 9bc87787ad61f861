"""Planner time per control period for services x pools: median and p99 over repeated solves.

Services draw from a realistic mix (1.5B-70B models, chat and code token mixes, SLOs from 30 to 150 ms TPOT),
demand from 0.1 to 30 req/s; pools from the GPU catalogue with 8-64 GPUs each, enough that the GPU limits
bind on the large instances. "warm" is the operator's steady state (capacity figures cached across
periods, as they are while the services' token mix and SLO do not change); "cold" includes computing them.

    python benchmarks/planner_solve_time.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import datetime, timezone

from kilowatt.economics import FlatPrice, PoolEconomics, PowerCurve
from kilowatt.performance import GPU_CATALOGUE, ModelShape, TokenMix
from kilowatt.planner import PoolState, ServiceState, Snapshot, plan
from kilowatt.planner.options import _capacity

SHAPES = [ModelShape(1.78, "bf16", 28, 2, 128), ModelShape(8.03, "bf16", 32, 8, 128),
          ModelShape(14.7, "bf16", 40, 10, 128), ModelShape(70.6, "fp8", 80, 8, 128)]
MIXES = [TokenMix(205, 200), TokenMix(1155, 211), TokenMix(2048, 28)]
SLOS = [(0.5, 0.05), (1.0, 0.1), (2.0, 0.15), (0.3, 0.03)]


def instance(n_services: int, n_pools: int, seed: int = 0) -> Snapshot:
    rng = random.Random(seed)
    gpus = list(GPU_CATALOGUE.values())
    services = []
    for i in range(n_services):
        ttft, tpot = rng.choice(SLOS)
        services.append(ServiceState(f"ns{i % 20}/svc{i}", rng.choice(SHAPES), ttft, tpot, 95.0,
                                     demand_rps=rng.uniform(0.1, 20), mix=rng.choice(MIXES), max_replicas=64))
    # Size the pools so the cheap ones run out and the plan must spill: ~1.5 GPUs per service in all,
    # split unevenly.
    weights = [rng.uniform(0.5, 1.5) for _ in range(n_pools)]
    pools = []
    for i in range(n_pools):
        g = gpus[i % len(gpus)]
        econ = PoolEconomics(rng.uniform(0.1, 3.0), 1.3, PowerCurve(g.idle_power_watts, g.board_power_watts, 0.33),
                             FlatPrice(rng.uniform(0.05, 0.4)))
        gpus_max = max(8, round(3.0 * n_services * weights[i] / sum(weights)))
        pools.append(PoolState(f"pool{i}", g, econ, gpus_max, 8))
    return Snapshot(datetime(2026, 7, 1, 12, tzinfo=timezone.utc), tuple(pools), tuple(services))


def measure(n_services: int, n_pools: int, repeats: int) -> tuple[float, float, float, bool]:
    snapshot = instance(n_services, n_pools)
    _capacity.cache_clear()
    started = time.perf_counter()
    result = plan(snapshot)
    cold = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        plan(snapshot)
        times.append(time.perf_counter() - started)
    times.sort()
    p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
    return statistics.median(times), p99, cold, result.feasible


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    print(f"{'services':>8} {'pools':>5} {'median ms':>10} {'p99 ms':>10} {'cold ms':>10}  feasible")
    for n_services in (10, 100, 1000):
        for n_pools in (2, 5, 10):
            repeats = args.repeats if n_services < 1000 else max(5, args.repeats // 3)
            median, p99, cold, feasible = measure(n_services, n_pools, repeats)
            print(f"{n_services:8d} {n_pools:5d} {median * 1000:10.1f} {p99 * 1000:10.1f} {cold * 1000:10.1f}  "
                  f"{feasible}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
