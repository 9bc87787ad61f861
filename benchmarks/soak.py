"""Soak: 500 InferenceServices over 4 pools through a simulated day (96 control periods of 15 simulated minutes)
against the real kube-apiserver + etcd, the operator restarted at noon. Records per period: wall time, API
requests, decisions, errors and the process's resident memory; writes benchmarks/results/soak.json and a plot.

    python benchmarks/soak.py [--services 500] [--pools 4] [--periods 96]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

from soak_harness import soak  # benchmarks/, beside this file

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--pools", type=int, default=4)
    parser.add_argument("--periods", type=int, default=96)
    parser.add_argument("--out", default=str(HERE / "results/soak.json"))
    args = parser.parse_args()

    def show(p):
        print(f"  {p.t_hours:5.2f} h  {p.wall_seconds:5.2f} s  {p.api_calls:5d} API  {p.decisions:4d} decisions  "
              f"{p.errors} errors  {p.rss_mb:5.0f} MB  {p.total_rps:7.0f} req/s  {p.replicas} replicas", flush=True)

    result = soak(args.services, args.pools, args.periods, HERE.parent.parent / "shared/data", progress=show)
    periods = result.periods
    later = periods[1:len(periods) // 2] + periods[len(periods) // 2 + 1:]  # without the two start-up periods
    summary = {
        "services": result.services, "pools": result.pools, "periods": len(periods), "restarts": result.restarts,
        "decisions": sum(p.decisions for p in periods), "errors": sum(p.errors for p in periods),
        "duplicateDeployments": result.duplicate_deployments,
        "servicesWithoutPlacement": result.services_without_placement,
        "firstPeriodSeconds": periods[0].wall_seconds, "firstPeriodApiCalls": periods[0].api_calls,
        "medianPeriodSeconds": statistics.median(p.wall_seconds for p in later),
        "maxPeriodSeconds": max(p.wall_seconds for p in later),
        "medianApiCallsPerPeriod": statistics.median(p.api_calls for p in later),
        "maxApiCallsPerPeriod": max(p.api_calls for p in later),
        "rssMbStart": periods[0].rss_mb, "rssMbEnd": periods[-1].rss_mb, "rssMbMax": max(p.rss_mb for p in periods),
        "perPeriod": [asdict(p) for p in periods],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    hours = [p.t_hours for p in periods]
    axes[0].plot(hours, [p.api_calls for p in periods]); axes[0].set_ylabel("API requests / period")
    axes[1].plot(hours, [p.wall_seconds for p in periods]); axes[1].set_ylabel("period wall s")
    axes[2].plot(hours, [p.rss_mb for p in periods]); axes[2].set_ylabel("RSS MB"); axes[2].set_xlabel("simulated hour")
    fig.suptitle(f"soak: {result.services} services, {result.pools} pools, restart at noon")
    fig.tight_layout()
    fig.savefig(Path(args.out).with_suffix(".png"), dpi=90)
    print(json.dumps({k: v for k, v in summary.items() if k != "perPeriod"}, indent=1))
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
