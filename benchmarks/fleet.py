"""The fleet scenario, for benchmarks/RESULTS.md (issue 17): what global placement is worth.

    python benchmarks/fleet.py [--hours 24] [--period-seconds 15] [--policies kilowatt,kilowatt-alone,...]
                               [--out benchmarks/results/fleet.json] [--report DIR]

Twelve models from 1.5B to 70B (benchmarks/scenarios/fleet: chat, code and batch-like SLOs, each judged on 99 % of
requests; ServeGen's day curve shifted by 2 h per service) share an owned RTX 4090 pool, a rented L40S pool and a
rented H100 pool, every pool paying ERCOT's hourly wholesale price from 2024-07-16. kilowatt's global plan against
kilowatt planning each service alone, one HPA per service on its cheapest pool, one static peak mix per service,
KEDA per service and the lower bound. Writes the fleet's and each service's cost, SLO attainment and GPU-hours per
pool to --out (a run of some --policies keeps the other policies of the same run already there), and the report
(plots, report.html) to --report; copies the two main plots beside --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from kilowatt.state import load_objects  # noqa: E402
from kilowatt.twin.fleet import members_of, simulate_fleet  # noqa: E402
from kilowatt.twin.report import write_fleet_report  # noqa: E402
from kilowatt.twin.workload import LEAD_IN_SECONDS, read_prices  # noqa: E402

DATA = REPO.parent / "shared" / "data"
SCENARIO = REPO / "benchmarks" / "scenarios" / "fleet"
START = datetime(2024, 7, 16, tzinfo=timezone.utc)
POLICIES = "kilowatt,kilowatt-alone,kilowatt-analytic,hpa-cheapest,static-peak,keda,lower-bound"


def verdict(policies: list[dict]) -> dict:
    by = {p["name"]: p for p in policies}
    out = {}
    if "kilowatt" in by and "kilowatt-alone" in by:
        kw, alone = by["kilowatt"], by["kilowatt-alone"]
        out["globalCostUsd"], out["aloneCostUsd"] = kw["costUsd"], alone["costUsd"]
        out["globalSavingVsAlone"] = round(1 - kw["costUsd"] / alone["costUsd"], 4)
        out["globalSloAttainment"], out["aloneSloAttainment"] = kw["sloAttainment"], alone["sloAttainment"]
    if "kilowatt" in by:
        kw = by["kilowatt"]
        reaching = [p["name"] for p in policies if p["name"] not in ("kilowatt", "lower-bound")
                    and p["sloAttainment"] >= 0.99]
        out["kilowattMeets99"] = kw["sloAttainment"] >= 0.99
        out["baselinesAt99"] = reaching
        out["cheaperThanEveryBaselineAt99"] = all(kw["costUsd"] < by[n]["costUsd"] for n in reaching)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--period-seconds", type=float, default=15.0)
    parser.add_argument("--policies", default=POLICIES)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fleet.json"))
    parser.add_argument("--report", default="/tmp/kilowatt-fleet-report")
    args = parser.parse_args()
    pools, services = load_objects([SCENARIO])
    members = members_of(services, DATA, args.hours * 3600.0, seed=1)
    series = read_prices(DATA / "grid_price_hourly_2024.csv", "US-TEX-ERCO", START, args.hours * 3600.0)
    prices = {p.name: series for p in pools}
    started = time.perf_counter()
    print(f"fleet: {len(members)} services, {sum(len(m.workload) for m in members):,} requests, {args.hours:g} h",
          file=sys.stderr)
    results = simulate_fleet(args.policies.split(","), members, pools, prices, START, args.period_seconds, seed=1)
    policies = [r.to_json() for r in results]
    out = Path(args.out)
    earlier = json.loads(out.read_text()) if out.exists() else {}
    if (earlier.get("durationHours"), earlier.get("periodSeconds"), earlier.get("leadInSeconds")) == \
            (args.hours, args.period_seconds, LEAD_IN_SECONDS):
        # The same run's other policies (run separately with --policies) are kept beside the new ones.
        ran = {p["name"] for p in policies}
        policies = [p for p in earlier["policies"] if p["name"] not in ran] + policies
    summary = {"services": [m.service.key for m in members], "requests": sum(len(m.workload) for m in members),
               "durationHours": args.hours, "periodSeconds": args.period_seconds, "leadInSeconds": LEAD_IN_SECONDS,
               "start": START.isoformat(),
               "prices": "US-TEX-ERCO hourly wholesale", "wallSeconds": round(time.perf_counter() - started, 1),
               "workloads": {m.service.key: m.workload.label for m in members},
               "policies": policies, "verdict": verdict(policies)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    page = write_fleet_report(args.report, results, f"kilowatt twin: a fleet of {len(members)} services, "
                                                    f"{args.hours:g} h", summary)
    if any(r.name == "kilowatt" for r in results):  # the plots of the main run, not of an added policy's
        for name in ("gpus-per-pool.png", "slo-per-service.png"):
            shutil.copy(Path(args.report) / name, out.parent / f"fleet-{name}")
    print(json.dumps(summary["verdict"], indent=2))
    print(f"report: {page}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
