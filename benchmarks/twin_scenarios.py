"""Twin scenarios, fidelity and speed, for benchmarks/RESULTS.md.

    python benchmarks/twin_scenarios.py [--only a,b,c,quiet,spike,week,engine,fidelity,speed]
                                        [--out benchmarks/results/twin.json] [--policies kilowatt,...]
                                        [--no-error-budget]

``--policies``: run only these policies and put their rows in place of theirs in --out's scenarios (the other
policies' rows are kept): a change to one policy re-runs that policy alone.

(a) a small owned RTX 4090 pool (8 GPUs) plus elastic cloud H100s, flat prices, the Azure conversation trace
    scaled ×8 (one hour);
(b) the same over a full day shaped by the ServeGen curve (×4), every pool paying ERCOT's hourly wholesale price;
(c) the Azure code trace (prompts of ~2,048 tokens) scaled ×8, where 24 GB binds;
quiet: a day under 0.3 req/s on the example pools; spike: (b) on the day of ERCOT's 2024 price spike; week: seven
    days of ServeGen's curve (×1) on ERCOT's hourly prices.
Fidelity: the simulator against ../shared/data/vllm_serving_4090_vs_h100pcie.csv. Speed: one million requests
through the simulator (static placement, then kilowatt's full decision loop).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from kilowatt.state import load_objects  # noqa: E402
from kilowatt.twin.fidelity import fidelity  # noqa: E402
from kilowatt.twin.simulate import run_policy, simulate  # noqa: E402
from kilowatt.twin.workload import (  # noqa: E402
    LEAD_IN_SECONDS,
    read_prices,
    read_rate_curve,
    read_requests,
    shaped,
)

DATA = REPO.parent / "shared" / "data"
SCENARIO = REPO / "benchmarks" / "scenarios" / "owned-4090-cloud-h100"
START = datetime(2024, 7, 16, tzinfo=timezone.utc)
EXAMPLES = REPO / "manifests" / "examples"
SPIKE_START = datetime(2024, 5, 8, 12, tzinfo=timezone.utc)
QUIET_SCALE = 0.025  # x the conversation trace's 5.5 req/s mean: ~0.14 req/s, peaks under 0.3
# The goal every scenario is judged by counts requests: >= 99 % within the latency SLO. The service states that
# as its SLO (percentile 99) so every policy plans for what it is judged by; the files' services say p95.
SLO_PERCENTILE = 99.0
POLICIES = ["kilowatt", "hpa-h100", "hpa-rtx4090", "static-peak", "melange", "keda", "lower-bound"]


# --no-error-budget: every scenario's service sets spec.scaling.spendErrorBudget false (the comparison without it).
SPEND_ERROR_BUDGET = True


def at_percentile(service, percentile: float):
    slo = service.spec.slo.model_copy(update={"percentile": percentile})
    scaling = service.spec.scaling if SPEND_ERROR_BUDGET else \
        service.spec.scaling.model_copy(update={"spend_error_budget": False})
    return service.model_copy(update={"spec": service.spec.model_copy(update={"slo": slo, "scaling": scaling})})


def verdict(policies: list[dict]) -> dict:
    by = {p["name"]: p for p in policies}
    if "kilowatt" not in by:
        return {}
    kw = by["kilowatt"]
    others = [p for p in policies if p["name"] not in ("kilowatt", "lower-bound")]
    reaching = [p for p in others if p["sloAttainment"] >= 0.99]
    out = {
        "kilowattSloAttainment": kw["sloAttainment"],
        "kilowattMeets99": kw["sloAttainment"] >= 0.99,
        # Issue 13's goal: at 99 % itself, and cheaper than every baseline that also reaches it.
        "cheaperThanEveryBaselineAt99": kw["sloAttainment"] >= 0.99 and all(kw["costUsd"] < p["costUsd"]
                                                                             for p in reaching),
        "baselinesAt99": [p["name"] for p in reaching],
    }
    if "hpa-h100" in by:
        out["savingVsHpaH100"] = 1 - kw["costUsd"] / by["hpa-h100"]["costUsd"]
    if "lower-bound" in by:
        out["aboveLowerBound"] = kw["costUsd"] / by["lower-bound"]["costUsd"] - 1
    return out


def scenario(name: str, workload, prices: dict, policies: list[str] = POLICIES, routing: str | None = None,
             engine_capacity: bool = True, files: Path = SCENARIO, start: datetime = START) -> dict:
    pools, services = load_objects([files])
    service = at_percentile(services[0], SLO_PERCENTILE)
    print(f"scenario {name}: {len(workload):,} requests, {workload.duration_s / 3600:.1f} h, {routing} routing",
          file=sys.stderr)
    started = time.perf_counter()
    results = simulate(policies, workload, service, pools, prices, {}, start, routing=routing,
                       engine_capacity=engine_capacity)
    policies = [r.to_json() for r in results]
    return {"requests": len(workload), "hours": workload.duration_s / 3600, "leadInSeconds": LEAD_IN_SECONDS,
            "wallSeconds": time.perf_counter() - started, "policies": policies, "verdict": verdict(policies)}


def merged(before: dict | None, after: dict) -> dict:
    """``after``'s policies in place of theirs in ``before`` (a re-run of some policies on the same workload), the
    other policies' rows kept and the verdict taken again over all of them."""
    names = [p["name"] for p in after["policies"]]
    if not before or before.get("requests") != after["requests"] or \
            before.get("leadInSeconds") != after.get("leadInSeconds") or \
            {p["name"] for p in before.get("policies", [])} <= set(names):
        return after
    ran = {p["name"]: p for p in after["policies"]}
    policies = [ran.pop(p["name"], p) for p in before["policies"]] + list(ran.values())
    return {**before, "policies": policies, "verdict": verdict(policies),
            "rerun": {"policies": names, "wallSeconds": after["wallSeconds"],
                      "date": datetime.now(timezone.utc).date().isoformat()}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="fidelity,a,c,speed,b")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "twin.json"))
    parser.add_argument("--policies", default=",".join(POLICIES),
                        help="the policies to run in a, b, c, quiet, spike and week (the others' rows in --out kept)")
    parser.add_argument("--no-error-budget", action="store_true",
                        help="the scenarios' service sets spec.scaling.spendErrorBudget false (use another --out)")
    args = parser.parse_args()
    global SPEND_ERROR_BUDGET
    SPEND_ERROR_BUDGET = not args.no_error_budget
    policies = args.policies.split(",")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    conv = read_requests(DATA / "azure2023_conv_requests.csv")
    code = read_requests(DATA / "azure2023_code_requests.csv")
    for part in args.only.split(","):
        if part == "fidelity":
            results["fidelity"] = fidelity(DATA)
        elif part == "a":
            results["a"] = merged(results.get("a"), scenario("a", shaped(conv, None, 8.0, seed=1), {}, policies))
        elif part == "a-routing":
            # Scenario (a) as the cluster would route it under each spec.routing.mode (Mélange routes by request
            # size with its own router, so it is left out; the lower bound is no bound and is left out too).
            results["aRouting"] = {routing: scenario(f"a/{routing}", shaped(conv, None, 8.0, seed=1), {},
                                                     ["kilowatt", "hpa-h100", "static-peak"], routing)
                                   for routing in ("weighted", "service", "inferencepool")}
        elif part == "b":
            day = shaped(conv, read_rate_curve(DATA / "servegen_m_large_10min.csv"), 4.0, 86400.0, seed=1)
            series = read_prices(DATA / "grid_price_hourly_2024.csv", "US-TEX-ERCO", START, day.duration_s)
            pools, _ = load_objects([SCENARIO])
            results["b"] = merged(results.get("b"), scenario("b", day, {p.name: series for p in pools}, policies))
        elif part == "quiet":
            # Under 0.3 req/s all day (ServeGen's day curve, mean ~0.14 req/s), one service on the example pools
            # (an owned RTX 4090 pool on a time-of-use tariff, rented H100s).
            day = shaped(conv, read_rate_curve(DATA / "servegen_m_large_10min.csv"), QUIET_SCALE, 86400.0, seed=1)
            results["quiet"] = merged(results.get("quiet"), scenario("quiet", day, {}, policies,
                                                                       files=EXAMPLES))
        elif part == "spike":
            # (b)'s day on the day of 2024's highest ERCOT price ($2,064/MWh at 01:00 UTC on 9 May, the evening
            # peak in Texas), starting 12:00 UTC on 8 May.
            day = shaped(conv, read_rate_curve(DATA / "servegen_m_large_10min.csv"), 4.0, 86400.0, seed=1)
            series = read_prices(DATA / "grid_price_hourly_2024.csv", "US-TEX-ERCO", SPIKE_START, day.duration_s)
            pools, _ = load_objects([SCENARIO])
            results["spike"] = merged(results.get("spike"), scenario("spike", day, {p.name: series for p in pools},
                                                                     policies, start=SPIKE_START))
        elif part == "week":
            # A week of ServeGen's two-week curve (weekday/weekend shape, ×1: ~5.5 req/s mean, peaks ~15), every
            # pool on ERCOT's hourly price for that week.
            week = shaped(conv, read_rate_curve(DATA / "servegen_m_large_10min.csv"), 1.0, 7 * 86400.0, seed=1)
            series = read_prices(DATA / "grid_price_hourly_2024.csv", "US-TEX-ERCO", START, week.duration_s)
            pools, _ = load_objects([SCENARIO])
            results["week"] = merged(results.get("week"), scenario("week", week, {p.name: series for p in pools},
                                                                   policies))
        elif part == "c":
            results["c"] = merged(results.get("c"), scenario("c", shaped(code, None, 8.0, seed=1), {}, policies))
        elif part == "analytic":
            # (a) and (c) with every policy planning on the analytic model (--capacity analytic), for comparison.
            results["analyticCapacity"] = {
                "a": scenario("a/analytic", shaped(conv, None, 8.0, seed=1), {}, engine_capacity=False),
                "c": scenario("c/analytic", shaped(code, None, 8.0, seed=1), {}, engine_capacity=False)}
        elif part == "speed":
            pools, services = load_objects([SCENARIO])
            million = shaped(conv, None, 8.0, duration_s=1_000_000 / (len(conv) / conv.duration_s * 8.0), seed=2)
            speed = {"requests": len(million)}
            # kilowatt's loop plans on the engine's curves (every policy does): timed with an empty curve store
            # (every curve measured in the run, as on a fresh machine), then again with the curves that run kept
            # on disk (a later run on this machine: kilowatt.performance.slo_capacity.CurveStore).
            with tempfile.TemporaryDirectory() as store:
                os.environ["KILOWATT_CURVE_CACHE"] = store
                for policy, key in (("static-peak", "static-peak"), ("kilowatt", "kilowatt"),
                                    ("kilowatt", "kilowatt-curves-on-disk")):
                    t = time.perf_counter()
                    r = run_policy(policy, million, services[0], pools, {}, {}, START)
                    speed[key] = {"wallSeconds": time.perf_counter() - t, "finished": r.finished}
                    print(f"speed {key}: {speed[key]}", file=sys.stderr)
                del os.environ["KILOWATT_CURVE_CACHE"]
            results["speed"] = speed
        out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v.get("verdict", v) if isinstance(v, dict) else v for k, v in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
