"""Plan quality: (1) the planner's cost equals a brute-force optimum on small random instances; (2) on the
example pools it is never dearer than the cheapest single-GPU-type plan meeting the same SLO, and by how much
it is cheaper, across demand levels and hours of the day (the RTX 4090 pool's tariff has an evening peak).

    python benchmarks/plan_quality.py [--instances 200]
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kilowatt.economics import FlatPrice, PoolEconomics, PowerCurve
from kilowatt.performance import GPU_CATALOGUE, ModelShape, TokenMix
from kilowatt.planner import PoolState, ServiceState, Snapshot, plan
from kilowatt.planner.options import options_for
from kilowatt.state import load_objects, snapshot_from_objects

EXAMPLES = Path(__file__).resolve().parents[1] / "manifests/examples"
SHAPES = [ModelShape(1.78, "bf16", 28, 2, 128), ModelShape(8.03, "bf16", 32, 8, 128), ModelShape(14.7, "bf16", 40, 10, 128)]


def brute_force(snapshot: Snapshot) -> float:
    options = [o for s in snapshot.services for o in options_for(s, snapshot.pools, snapshot.at)]
    ranges = [range(0, next(s.max_replicas for s in snapshot.services if s.key == o.service) + 1) for o in options]
    best = math.inf
    for counts in itertools.product(*ranges):
        used = {p.name: 0 for p in snapshot.pools}
        for o, n in zip(options, counts):
            used[o.pool.name] += n * o.tensor_parallel
        if any(used[p.name] > p.gpus_max for p in snapshot.pools):
            continue
        ok = True
        for s in snapshot.services:
            mine = [(o, n) for o, n in zip(options, counts) if o.service == s.key]
            total = sum(n for _, n in mine)
            ok &= sum(o.capacity_rps * n for o, n in mine) >= s.target_rps - 1e-9
            ok &= min(s.floor_replicas, s.max_replicas) <= total <= s.max_replicas
        if ok:
            best = min(best, sum(o.planned_cost.total_usd_per_hour * n for o, n in zip(options, counts)))
    return best


def small_instance(rng: random.Random) -> Snapshot:
    at = datetime(2026, 7, 1, 12, tzinfo=timezone.utc)
    gpus = rng.sample(list(GPU_CATALOGUE.values()), 2)
    pools = tuple(
        PoolState(f"p{i}", g, PoolEconomics(rng.uniform(0.1, 3), 1.2, PowerCurve(g.idle_power_watts, g.board_power_watts,
                                                                             0.33), FlatPrice(rng.uniform(0, 0.5))),
                  rng.randint(2, 10), 1)
        for i, g in enumerate(gpus)
    )
    services = tuple(
        ServiceState(f"ns/s{i}", rng.choice(SHAPES), 1.0, rng.uniform(0.04, 0.15), demand_rps=rng.uniform(0.5, 25),
                     mix=TokenMix(205, 200), max_replicas=6)
        for i in range(rng.randint(1, 2))
    )
    return Snapshot(at, pools, services)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(1)
    equal = compared = 0
    worst = 0.0
    for _ in range(args.instances):
        snapshot = small_instance(rng)
        result = plan(snapshot)
        if not result.feasible:
            continue
        best = brute_force(snapshot)
        got = sum(s.planned_usd_per_hour for s in result.services)
        compared += 1
        equal += abs(got - best) <= 1e-6 * max(1.0, best)
        worst = max(worst, got / best - 1.0)
    print(f"brute force: {equal}/{compared} feasible instances at the optimum (worst excess {worst:.2%})")

    pools, services = load_objects([EXAMPLES])
    key = services[0].key
    print("\nexamples (rtx4090 on-prem TOU + h100 cloud), llama3-8b-chat, USD/h:")
    print(f"{'demand':>7} {'local time':>10} {'kilowatt':>9} {'4090 only':>10} {'H100 only':>10} {'saving vs best single':>22}")
    base = datetime(2026, 7, 1, 0, 0, tzinfo=timezone(timedelta(hours=-7)))  # PDT
    savings = []
    for demand in (5, 20, 60, 120, 200):
        for hour in (3, 12, 18):
            at = base + timedelta(hours=hour)
            kw = plan(snapshot_from_objects(pools, services, {key: demand}, at))
            singles = {}
            for only in ("rtx4090", "h100"):
                restricted = [s.model_copy(update={"spec": s.spec.model_copy(update={"pools": [only]})}) for s in services]
                result = plan(snapshot_from_objects(pools, restricted, {key: demand}, at))
                singles[only] = result.cost.total_usd_per_hour if result.feasible else math.inf
            best_single = min(singles.values())
            cost = kw.cost.total_usd_per_hour
            saving = 1 - cost / best_single if best_single < math.inf else math.nan
            savings.append(saving)
            fmt = lambda x: f"{x:10.2f}" if x < math.inf else f"{'infeasible':>10}"  # noqa: E731
            print(f"{demand:7d} {hour:8d}:00 {cost:9.2f} {fmt(singles['rtx4090'])} {fmt(singles['h100'])} "
                  f"{saving:22.1%}")
            assert cost <= best_single + 1e-6, "kilowatt dearer than a single-GPU-type plan"
    print(f"never dearer than the best single-GPU-type plan; median saving {sorted(savings)[len(savings) // 2]:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
