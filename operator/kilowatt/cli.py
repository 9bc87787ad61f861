"""The ``kilowatt`` command line: crds, plan, profile, calibrate, validate."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from kilowatt import __version__

REPO_ROOT = Path(__file__).resolve().parents[2]
TWIN_EXTRA = ("matplotlib", "rich")  # the report's plots and the demo's live view; not the operator's


def _parse_demand(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "/" not in key:
            raise SystemExit(f"--demand {item!r}: expected NAMESPACE/NAME=REQUESTS_PER_SECOND, e.g. default/llama3-8b=12")
        try:
            out[key] = float(value)
        except ValueError:
            raise SystemExit(f"--demand {item!r}: {value!r} is not a number of requests per second") from None
        if out[key] < 0:
            raise SystemExit(f"--demand {item!r}: demand cannot be negative")
    return out


def _non_negative_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: minutes cannot be negative")
    return value


def _parse_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(timezone.utc)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"--at {text!r}: expected an ISO 8601 time such as 2026-07-01T18:30:00+02:00") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def cmd_crds(args: argparse.Namespace) -> int:
    from kilowatt.api.crd import render

    from kilowatt.api.reference import render as render_reference

    targets = [Path(d) for d in (args.out or [REPO_ROOT / "crds", REPO_ROOT / "charts/kilowatt/crds"])]
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        for name, text in render().items():
            (target / name).write_text(text, encoding="utf-8")
            print(f"wrote {target / name}")
    reference = Path(args.reference)
    reference.write_text(render_reference(), encoding="utf-8")
    print(f"wrote {reference}")
    return 0


def _load_objects(files: list[str]) -> tuple[list, list] | None:
    """Pools and services from YAML, or None after saying on stderr what is wrong (no traceback)."""
    from kilowatt.state import ManifestError, load_objects

    try:
        pools, services = load_objects(files)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if not pools or not services:
        print(f"error: found {len(pools)} AcceleratorPool(s) and {len(services)} InferenceService(s) in "
              f"{', '.join(files)}; need at least one of each", file=sys.stderr)
        return None
    return pools, services


def _plan_inputs(args: argparse.Namespace) -> tuple[list, list, dict[str, float]] | None:
    """Pools, services and --demand for `plan` and `render`, or None after saying on stderr what is wrong."""
    loaded = _load_objects(args.file)
    if loaded is None:
        return None
    pools, services = loaded
    demand = _parse_demand(args.demand)
    unknown = sorted(set(demand) - {s.key for s in services})
    if unknown:
        print(f"error: --demand names {', '.join(unknown)}, not found; services: "
              f"{', '.join(s.key for s in services)}", file=sys.stderr)
        return None
    return pools, services, demand


def cmd_plan(args: argparse.Namespace) -> int:
    from kilowatt.planner import CapacityTable, plan
    from kilowatt.state import snapshot_from_objects

    inputs = _plan_inputs(args)
    if inputs is None:
        return 2
    pools, services, demand = inputs
    missing = [p.name for p in pools if p.spec.max_gpus is None]
    if missing:
        print(f"note: without a cluster the pool size comes from spec.maxGPUs; unset on {', '.join(missing)} "
              "(treated as 0 GPUs)", file=sys.stderr)
    capacity = CapacityTable()
    result = plan(snapshot_from_objects(pools, services, demand, _parse_time(args.at)), capacity)
    _curve_note(capacity)
    if args.output == "json":
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(f"{'SERVICE':32} {'DEMAND':>8} {'PLACEMENT':28} {'USD/H':>8}  REASON")
    for s in result.services:
        print(f"{s.key:32} {s.demand_rps:8.2f} {s.summary():28} {s.cost.total_usd_per_hour:8.2f}  {s.reason}")
    print()
    for p in result.pools:
        print(f"pool {p.name}: {p.gpus_used}/{p.gpus_max} GPUs")
    c = result.cost
    print(f"total ${c.total_usd_per_hour:.2f}/h (hardware ${c.hardware_usd_per_hour:.2f}, energy "
          f"${c.energy_usd_per_hour:.2f}, {c.power_watts / 1000:.2f} kW); solved in {result.solve_seconds * 1000:.0f} ms")
    for problem in result.problems:
        print(f"warning: {problem}")
    return 0


CURVE_NOTE_SECONDS = 0.5  # measuring that took longer is worth a word: the plan's time is mostly not the solve


def _curve_note(capacity) -> None:
    """Say on stderr where a plan's time went when it measured latency curves (a model, GPU and length mix planned
    for the first time: seconds, where the solve is milliseconds), and that the next plan reads them back."""
    seconds = capacity.measure_spent_seconds
    if seconds < CURVE_NOTE_SECONDS:
        return
    store = capacity.curves.store
    kept = f"kept in {store.base} for the next plan" if store is not None else \
        "not kept: KILOWATT_CURVE_CACHE is off"
    print(f"note: {seconds:.1f} s of this plan measured latency curves on the serving engine (the first plan for "
          f"a model, GPU and length mix; {kept})", file=sys.stderr)


def cmd_render(args: argparse.Namespace) -> int:
    """The objects the operator would apply for the plan (Deployments, and the Service, HTTPRoute or InferencePools
    that route to them), as YAML: built by the same functions the operator applies, with every planned replica
    counted ready for the route's weights. Owner references are left out (the objects are not in a cluster yet)."""
    import yaml

    from kilowatt.controller.actuator import deployment_manifest
    from kilowatt.controller.routing import Backend, backend_weights, routing_objects
    from kilowatt.planner import CapacityTable, plan
    from kilowatt.state import snapshot_from_objects

    inputs = _plan_inputs(args)
    if inputs is None:
        return 2
    pools, services, demand = inputs
    capacity = CapacityTable()
    result = plan(snapshot_from_objects(pools, services, demand, _parse_time(args.at)), capacity)
    _curve_note(capacity)
    by_pool = {p.name: p for p in pools}
    planned = {s.key: s for s in result.services}
    documents = []
    for svc in services:
        body = svc.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"status"})
        body["metadata"].setdefault("namespace", "default")
        placements = [p for p in planned[svc.key].placement if p.replicas > 0]
        for p in placements:
            documents.append(deployment_manifest(body, by_pool[p.pool], p.replicas, p.tensor_parallel))
        weights = backend_weights([Backend(p.pool, p.replicas, p.capacity_rps) for p in placements])
        documents += routing_objects(body, svc.spec.routing, [p.pool for p in placements], weights)
    print(f"# kilowatt render: the objects the operator would apply at {_parse_time(args.at).isoformat()} for "
          f"{', '.join(f'{s.key} at {s.demand_rps:g} req/s' for s in result.services)}")
    print(yaml.safe_dump_all(documents, sort_keys=False, width=120), end="")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from kilowatt.performance import CapacityModel, ModelShape, TokenMix, gpu_by_name

    try:
        gpu = gpu_by_name(args.gpu)
    except KeyError as exc:
        print(f"error: --gpu: {exc.args[0]}", file=sys.stderr)
        return 2
    shape = ModelShape(args.params_billion, args.dtype, max_context_tokens=args.max_context_tokens)
    model = CapacityModel(shape, gpu, args.tensor_parallel)
    mix = TokenMix(args.input_tokens, args.output_tokens)
    loads = [float(x) for x in args.load.split(",") if x.strip()]
    fits = model.fits()
    saturation = model.saturation_rps(mix) if fits else 0.0
    within = model.max_rps_within_slo(mix, args.slo_ttft_ms / 1000.0, args.slo_tpot_ms / 1000.0, args.percentile)

    def ms(x: float) -> float | None:
        return None if x == float("inf") else round(x * 1000.0, 3)

    points = []
    for load in loads:
        mean, p99 = model.at_load(load, mix, 50.0), model.at_load(load, mix, 99.0)
        points.append({"loadRps": load, "ttftMeanMs": ms(mean.ttft_mean_seconds), "ttftP99Ms": ms(p99.ttft_p_seconds),
                       "tpotMeanMs": ms(mean.tpot_mean_seconds), "tpotP99Ms": ms(p99.tpot_p_seconds)})
    out = {"fits": fits, "saturationRps": round(saturation, 4), "maxRpsWithinSlo": round(within if fits else 0.0, 4),
           "kvCacheTokens": int(max(0.0, model.kv_capacity_tokens)), "points": points}
    if args.output == "json":
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.params_billion:g}B {args.dtype} on {args.tensor_parallel}×{gpu.model}: "
          f"{'fits' if fits else 'does NOT fit'} ({out['kvCacheTokens']} KV-cache tokens)")
    print(f"saturation {saturation:.2f} req/s; within TTFT p{args.percentile:g} {args.slo_ttft_ms:g} ms / TPOT "
          f"{args.slo_tpot_ms:g} ms: {out['maxRpsWithinSlo']:.2f} req/s")
    print(f"{'LOAD':>6} {'TTFT mean':>10} {'TTFT p99':>10} {'TPOT mean':>10} {'TPOT p99':>10}  (ms)")
    for p in points:
        cells = [("-" if p[k] is None else f"{p[k]:.1f}") for k in ("ttftMeanMs", "ttftP99Ms", "tpotMeanMs", "tpotP99Ms")]
        print(f"{p['loadRps']:6g} " + " ".join(f"{c:>10}" for c in cells))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from kilowatt.performance.calibrate import (fit_engine, fit_power_exponent, read_measurements, replay,
                                                replay_errors, usable)

    data_dir = Path(args.data)
    data = read_measurements(data_dir / "vllm_serving_4090_vs_h100pcie.csv")
    print("fitting the serving engine on the measured runs (about a minute)...", file=sys.stderr)
    calibration = fit_engine(
        data, source="engine replay fit on vllm_serving_4090_vs_h100pcie.csv (IOG-Foundation, Apache-2.0)")
    from dataclasses import replace

    exponent = fit_power_exponent(data_dir / "mlenergy_v3_llm_h100_b200.csv")
    calibration = replace(calibration, power_exponent=round(exponent, 4),
                          source=calibration.source + "; power exponent fit on ML.ENERGY v3")
    Path(args.out).write_text(calibration.to_json(), encoding="utf-8")
    errors = [e for m in usable(data) if (got := replay(m, calibration)) for e in [replay_errors(m, got)]]
    import statistics

    medians = {k: statistics.median([e[k] for e in errors if k in e]) for k in ("throughput", "tpot", "ttft")}
    print(f"wrote {args.out}; in-sample median errors: " + ", ".join(f"{k} {v:.1%}" for k, v in medians.items()))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from kilowatt.state import ManifestError, load_objects

    try:
        pools, services = load_objects(args.file)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"ok: {len(pools)} AcceleratorPool(s), {len(services)} InferenceService(s)")
    return 0


def _twin_objects(args: argparse.Namespace) -> tuple[list, object] | None:
    """Pools and the service a trace drives (``--service`` or the first), for simulate and demo; None after
    saying on stderr what is wrong. The twin counts GPUs from maxGPUs (it has no nodes), so every pool needs one."""
    loaded = _load_objects(args.file)
    if loaded is None:
        return None
    pools, services = loaded
    wanted = args.service
    service = services[0]
    if wanted:
        chosen = [s for s in services if s.key == wanted]
        if not chosen:
            print(f"error: --service {wanted}: not found; services: {', '.join(s.key for s in services)}",
                  file=sys.stderr)
            return None
        service = chosen[0]
    unsized = [p.name for p in pools if p.spec.max_gpus is None]
    if unsized:
        print(f"error: pool(s) {', '.join(unsized)} have no spec.maxGPUs; the twin has no nodes to count GPUs on: "
              "set maxGPUs", file=sys.stderr)
        return None
    return pools, service


def _policy_names(text: str, known: tuple[str, ...], pools: list, flag: str) -> list[str] | None:
    """Comma-separated policy names: the known ones whose pools exist here, and hpa-<pool> for any pool; None
    after saying on stderr which are unknown."""
    pool_names = {p.name for p in pools}
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known and not (n.startswith("hpa-") and n[4:] in pool_names)]
    if unknown:
        print(f"error: {flag} {', '.join(unknown)}: unknown; known: {', '.join(known)} (hpa-<pool> for any pool: "
              f"{', '.join(sorted(pool_names))})", file=sys.stderr)
        return None
    return [n for n in names if not n.startswith("hpa-") or n[4:] in pool_names or n == "hpa-cheapest"]


def _workload(args: argparse.Namespace, pools: list, start, duration_s: float | None) -> tuple | None:
    """The requests (--trace shaped by --rate-curve and --scale) and, with --prices/--region, every pool's hourly
    price; None after saying on stderr what is wrong."""
    from kilowatt.twin.workload import TraceError, read_rate_curve, read_requests, shaped

    try:
        trace = read_requests(args.trace)
        curve = read_rate_curve(args.rate_curve) if args.rate_curve else None
        workload = shaped(trace, curve, args.scale, duration_s, seed=args.seed)
    except (TraceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    prices = _prices(args, pools, start, workload.duration_s)
    return None if prices is None else (workload, prices)


def _prices(args: argparse.Namespace, pools: list, start, duration_s: float) -> dict | None:
    """With --prices/--region, every pool's hourly price (empty without); None after saying what is wrong."""
    from kilowatt.twin.workload import TraceError, read_prices

    if not args.prices:
        return {}
    if not args.region:
        print("error: --prices needs --region (e.g. US-TEX-ERCO)", file=sys.stderr)
        return None
    try:
        series = read_prices(args.prices, args.region, start, duration_s)
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return {p.name: series for p in pools}


SIMULATE_POLICIES = "kilowatt,hpa-h100,hpa-rtx4090,static-peak,melange,lower-bound"
FLEET_SIMULATE_POLICIES = "kilowatt,kilowatt-alone,hpa-cheapest,static-peak,keda,lower-bound"


def cmd_simulate(args: argparse.Namespace) -> int:
    from kilowatt.twin.dataplane import routed_as
    from kilowatt.twin.policies import POLICIES
    from kilowatt.twin.simulate import simulate

    if args.fleet:
        return cmd_simulate_fleet(args)
    loaded = _twin_objects(args)
    if loaded is None:
        return 2
    pools, service = loaded
    policies = _policy_names(args.policy or SIMULATE_POLICIES, POLICIES, pools, "--policy")
    if policies is None:
        return 2
    start = _parse_time(args.start)
    duration = args.duration_hours * 3600.0 if args.duration_hours else (86400.0 if args.rate_curve else None)
    loaded_workload = _workload(args, pools, start, duration)
    if loaded_workload is None:
        return 2
    workload, prices = loaded_workload
    if not args.quiet:
        print(f"simulating {len(workload):,} requests over {workload.duration_s / 3600:.2f} h for {service.key} on "
              f"{', '.join(p.name for p in pools)}: {', '.join(policies)}", file=sys.stderr)
    service, routing = routed_as(service, args.routing)
    results = simulate(policies, workload, service, pools, prices, {}, start, args.period_seconds, args.seed,
                       quiet=args.quiet, routing=routing,
                       engine_capacity=args.capacity == "engine", lead_in_seconds=args.lead_in_minutes * 60.0)
    summary = {"service": service.key, "requests": len(workload), "durationHours": round(workload.duration_s / 3600, 4),
               "workload": workload.label, "start": start.isoformat(), "routing": routing,
               "capacity": args.capacity, "leadInMinutes": args.lead_in_minutes,
               "policies": [r.to_json() for r in results]}
    if args.report:
        from kilowatt.twin.report import write_report

        slo = service.spec.slo
        page = write_report(args.report, results, f"kilowatt twin: {service.key}, {workload.label}",
                            slo.ttft_milliseconds, slo.tpot_milliseconds, summary)
        if not args.quiet:
            print(f"report: {page}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{'POLICY':14} {'COST $':>9} {'HW $':>8} {'ENERGY $':>9} {'kWh':>8} {'$/M TOK':>8} {'SLO':>8} "
          f"{'TTFT p95':>9} {'TPOT p95':>9}")
    for p in summary["policies"]:
        fmt = lambda x: "-" if x is None else f"{x:.0f}ms"  # noqa: E731
        print(f"{p['name']:14} {p['costUsd']:9.2f} {p['hardwareUsd']:8.2f} {p['energyUsd']:9.2f} "
              f"{p['energyKwh']:8.1f} {p['costPerMillionTokensUsd'] or 0:8.4f} {p['sloAttainment']:8.2%} "
              f"{fmt(p['ttftP95Ms']):>9} {fmt(p['tpotP95Ms']):>9}")
    return 0


def cmd_simulate_fleet(args: argparse.Namespace) -> int:
    """``simulate --fleet DIR``: every InferenceService in DIR (and -f) at once on the pools found there, each
    driven by its own twin.kilowatt.dev/ annotations (kilowatt.twin.fleet)."""
    from kilowatt.twin.fleet import FLEET_POLICIES, members_of, simulate_fleet
    from kilowatt.twin.workload import TraceError

    loaded = _load_objects([args.fleet, *(args.file or [])])
    if loaded is None:
        return 2
    pools, services = loaded
    unsized = [p.name for p in pools if p.spec.max_gpus is None]
    if unsized:
        print(f"error: pool(s) {', '.join(unsized)} have no spec.maxGPUs; the twin has no nodes to count GPUs on: "
              "set maxGPUs", file=sys.stderr)
        return 2
    policies = _policy_names(args.policy or FLEET_SIMULATE_POLICIES, FLEET_POLICIES, pools, "--policy")
    if policies is None:
        return 2
    start = _parse_time(args.start)
    duration = args.duration_hours * 3600.0 if args.duration_hours else None
    try:
        members = members_of(services, Path(args.data), duration, args.seed, default_trace=Path(args.trace))
    except (TraceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    horizon = max(m.workload.duration_s for m in members)
    prices = _prices(args, pools, start, horizon)
    if prices is None:
        return 2
    if not args.quiet:
        total = sum(len(m.workload) for m in members)
        print(f"simulating a fleet of {len(members)} services, {total:,} requests over {horizon / 3600:.2f} h on "
              f"{', '.join(p.name for p in pools)}: {', '.join(policies)}", file=sys.stderr)
    results = simulate_fleet(policies, members, pools, prices, start, args.period_seconds, args.seed,
                             quiet=args.quiet, engine_capacity=args.capacity == "engine",
                             lead_in_seconds=args.lead_in_minutes * 60.0)
    summary = {"services": [m.service.key for m in members], "requests": sum(len(m.workload) for m in members),
               "durationHours": round(horizon / 3600, 4), "start": start.isoformat(), "capacity": args.capacity,
               "leadInMinutes": args.lead_in_minutes,
               "workloads": {m.service.key: m.workload.label for m in members},
               "policies": [r.to_json() for r in results]}
    if args.report:
        from kilowatt.twin.report import write_fleet_report

        page = write_fleet_report(args.report, results, f"kilowatt twin: a fleet of {len(members)} services",
                                  summary)
        if not args.quiet:
            print(f"report: {page}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps(summary, indent=2))
        return 0
    pool_names = [p.name for p in pools]
    print(f"{'POLICY':15} {'COST $':>9} {'HW $':>8} {'ENERGY $':>9} {'SLO':>8} {'WORST SVC':>9} "
          + " ".join(f"{'GPU-h ' + n:>14}" for n in pool_names))
    for p in summary["policies"]:
        print(f"{p['name']:15} {p['costUsd']:9.2f} {p['hardwareUsd']:8.2f} {p['energyUsd']:9.2f} "
              f"{p['sloAttainment']:8.2%} {p['worstServiceSloAttainment']:9.2%} "
              + " ".join(f"{p['gpuHours'].get(n, 0.0):14.1f}" for n in pool_names))
    return 0


def _parse_duration(text: str) -> float:
    """'24h', '90m', '3600s' or a number of seconds -> seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    value, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(value) * units[unit]
    except ValueError:
        raise SystemExit(f"--duration {text!r}: expected e.g. 24h, 90m or 600s") from None
    if seconds <= 0:
        raise SystemExit(f"--duration {text!r}: must be positive")
    return seconds


def cmd_demo(args: argparse.Namespace) -> int:
    from kilowatt.demo import BASELINES, DemoError, DemoOptions, run_demo
    from kilowatt.demo.controlplane import ControlPlaneError

    loaded = _twin_objects(args)
    if loaded is None:
        return 2
    pools, service = loaded
    duration = _parse_duration(args.duration)
    start = _parse_time(args.start)
    # The default names hpa-h100 and hpa-rtx4090: pools that -f files may not have are dropped, not refused.
    baselines = _policy_names(args.baselines or "", BASELINES, pools, "--baselines")
    if baselines is None:
        return 2
    loaded_workload = _workload(args, pools, start, duration)
    if loaded_workload is None:
        return 2
    workload, prices = loaded_workload
    options = DemoOptions(workload=workload, service=service, pools=pools, files=args.file, start=start,
                          speed=args.speed, period_seconds=args.period_seconds, report=args.report,
                          tui=not args.no_tui and sys.stdout.isatty(), kubeconfig=args.kubeconfig,
                          baselines=tuple(baselines), seed=args.seed, prices=prices)
    try:
        outcome = run_demo(options)
    except (DemoError, ControlPlaneError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(outcome.summary, indent=2))
    return 130 if outcome.interrupted else 0


def cmd_run(args: argparse.Namespace) -> int:
    import os

    from kilowatt.api.v1alpha1 import ScalingMode
    from kilowatt.planner import PLANNER_BUDGET_SECONDS
    from kilowatt.runner import RunOptions, StartupError, run

    os.environ["KILOWATT_LOG_LEVEL"] = args.log_level
    options = RunOptions(
        prometheus_url=args.prometheus_url, prometheus_timeout_seconds=args.prometheus_timeout_seconds,
        prometheus_window=args.prometheus_window,
        period_seconds=args.period_seconds, namespaces=tuple(args.namespace or ()),
        default_mode=ScalingMode(args.default_mode), metrics_port=args.metrics_port, peering=args.peering,
        priority=args.priority, standalone=args.standalone, planner_budget_seconds=(PLANNER_BUDGET_SECONDS if args.planner_budget_seconds is None
                                else args.planner_budget_seconds),
        queries_json=os.environ.get("KILOWATT_QUERIES", ""),
    )
    try:
        return run(options)
    except KeyboardInterrupt:
        return 0
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - one or two lines a newcomer can act on, not a traceback
        from kubernetes.config import ConfigException

        if isinstance(exc, ConfigException):
            print("error: no Kubernetes cluster configured: set KUBECONFIG or run inside a cluster", file=sys.stderr)
        else:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kilowatt", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kilowatt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("crds", help="generate the CRDs from the API models")
    p.add_argument("--out", action="append", help="directory to write (repeatable); default crds/ and the chart's")
    p.add_argument("--reference", default=str(REPO_ROOT / "docs/api-reference.md"),
                   help="where to write the API reference generated from the same models")
    p.set_defaults(func=cmd_crds)

    default_examples = str(REPO_ROOT / "manifests/examples")
    p = sub.add_parser("plan", help="plan placements for pools and services read from YAML")
    p.add_argument("-f", "--file", action="append", help=f"YAML file or directory (default {default_examples})")
    p.add_argument("--demand", action="append", default=[], metavar="NAMESPACE/NAME=RPS")
    p.add_argument("--at", help="ISO 8601 time for electricity prices (default now)")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("render", help="print the Kubernetes objects the operator would apply for a plan, as YAML")
    p.add_argument("-f", "--file", action="append", help=f"YAML file or directory (default {default_examples})")
    p.add_argument("--demand", action="append", default=[], metavar="NAMESPACE/NAME=RPS")
    p.add_argument("--at", help="ISO 8601 time for electricity prices (default now)")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("profile", help="predicted latency and capacity of one replica")
    p.add_argument("--params-billion", type=float, required=True)
    p.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp8", "int8", "int4"])
    p.add_argument("--gpu", required=True, help="RTX-4090, H100-SXM, H100-PCIe, A100-80GB or L40S")
    p.add_argument("--tensor-parallel", type=int, default=1)
    p.add_argument("--input-tokens", type=float, default=205)
    p.add_argument("--output-tokens", type=float, default=200)
    p.add_argument("--max-context-tokens", type=int, default=8192)
    p.add_argument("--load", default="1,4,8,16", help="comma-separated req/s")
    p.add_argument("--slo-ttft-ms", type=float, default=500)
    p.add_argument("--slo-tpot-ms", type=float, default=50)
    p.add_argument("--percentile", type=float, default=95)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("calibrate", help="fit the capacity model on published measurements")
    p.add_argument("--data", default=str(REPO_ROOT.parent / "shared/data"))
    p.add_argument("--out", default=str(Path(__file__).parent / "data/calibration.json"))
    p.set_defaults(func=cmd_calibrate)

    import os as _os

    p = sub.add_parser("run", help="run the operator (what the Helm chart's Deployment starts)")
    p.add_argument("--prometheus-url", default=_os.environ.get("KILOWATT_PROMETHEUS_URL", "http://localhost:9090"))
    p.add_argument("--prometheus-timeout-seconds", type=float, default=5.0)
    p.add_argument("--prometheus-window", default=_os.environ.get("KILOWATT_PROMETHEUS_WINDOW", "2m"),
                   help="range of the rate() and latency-histogram queries (PromQL duration, default 2m: at least "
                        "four scrape intervals)")
    p.add_argument("--period-seconds", type=float, default=float(_os.environ.get("KILOWATT_PERIOD_SECONDS", 15)))
    p.add_argument("--namespace", action="append", help="watch only this namespace (repeatable; default all)")
    p.add_argument("--default-mode", choices=["Active", "Advisory", "Off"], default="Active")
    p.add_argument("--metrics-port", type=int, default=8080)
    p.add_argument("--peering", default="kilowatt", help="kopf peering name shared by the operator's replicas")
    p.add_argument("--priority", type=int, default=None, help="peering priority (default: random per process)")
    p.add_argument("--standalone", action="store_true", help="no peering (a single operator, e.g. for development)")
    p.add_argument("--planner-budget-seconds", type=float, default=None,
                   help="time limit of one plan over every service (default: the planner's, 0.8 s)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_run)

    data_dir = REPO_ROOT.parent / "shared/data"
    p = sub.add_parser("simulate", help="replay a trace in the twin: kilowatt against baselines, cost and SLO")
    p.add_argument("--trace", default=str(data_dir / "azure2023_conv_requests.csv"),
                   help="per-request CSV: timestamp_s,input_tokens,output_tokens")
    p.add_argument("--rate-curve", help="CSV window_start_s,requests_per_s,... or a Prometheus query_range JSON")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the request rate")
    p.add_argument("--duration-hours", type=float, help="default: the trace's length, or a day with a rate curve")
    p.add_argument("-f", "--file", action="append", help=f"YAML file or directory (default {default_examples})")
    p.add_argument("--service", help="NAMESPACE/NAME the trace drives (default: the first service)")
    p.add_argument("--prices", help="hourly prices CSV datetime_utc,region,price_usd_per_mwh (every pool pays it)")
    p.add_argument("--region", help="region in --prices, e.g. US-TEX-ERCO")
    p.add_argument("--start", default="2024-07-16T00:00:00Z", help="simulated start time (ISO 8601)")
    p.add_argument("--policy", help=f"comma-separated (default {SIMULATE_POLICIES}; with --fleet "
                                    f"{FLEET_SIMULATE_POLICIES})")
    p.add_argument("--fleet", metavar="DIR",
                   help="simulate every InferenceService in DIR at once on shared pools (pools from DIR and -f), "
                        "each driven by its annotations twin.kilowatt.dev/trace, rate-curve, scale, shift-hours")
    p.add_argument("--data", default=str(data_dir), help="where --fleet's relative trace and curve paths are read")
    p.add_argument("--period-seconds", type=float, default=15.0, help="control period")
    p.add_argument("--lead-in-minutes", type=_non_negative_minutes, default=60.0,  # twin.workload.LEAD_IN_SECONDS
                   help="play the trace's last this many minutes first, unjudged, so that every policy starts as "
                        "one that had been running does (replicas up, its history and budget warm); 0: a cold "
                        "start at the trace's opening rate (default %(default)g)")
    p.add_argument("--routing", choices=["weighted", "service", "inferencepool"],
                   help="how the cluster routes, overriding the service's spec.routing.mode (the default): service "
                        "(one Service, equal shares), weighted (an HTTPRoute weighted by capacity) or inferencepool "
                        "(by weight, then each replica of the pool in turn)")
    p.add_argument("--capacity", choices=["analytic", "engine"], default="engine",
                   help="the SLO capacity the baselines plan with: engine (measured on the twin's engine for the "
                        "trace's length distribution: the one truth) or analytic (the queueing model at the mix's "
                        "means: faster, optimistic for long prompts); the kilowatt policy plans as the operator does")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", help="directory for the plots and report.html")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="the operator against an embedded API server, the twin as its cluster")
    p.add_argument("--trace", default=str(data_dir / "azure2023_conv_requests.csv"),
                   help="per-request CSV: timestamp_s,input_tokens,output_tokens")
    p.add_argument("--rate-curve", default=str(data_dir / "servegen_m_large_10min.csv"),
                   help="the day's shape: CSV window_start_s,requests_per_s,... or a Prometheus query_range JSON")
    p.add_argument("--scale", type=float, default=3.0, help="multiply the request rate (default 3: ~17 req/s mean)")
    p.add_argument("--duration", default="24h", help="simulated time, e.g. 24h, 90m (default a day)")
    p.add_argument("--speed", type=float, default=500.0,
                   help="simulated seconds per real second (default 500: a day in about 3 minutes; 0: flat out)")
    p.add_argument("--period-seconds", type=float, default=60.0, help="the operator's control period (simulated)")
    p.add_argument("-f", "--file", action="append", help=f"YAML file or directory (default {default_examples})")
    p.add_argument("--service", help="NAMESPACE/NAME the trace drives (default: the first service)")
    p.add_argument("--prices", help="hourly prices CSV datetime_utc,region,price_usd_per_mwh (every pool pays it)")
    p.add_argument("--region", help="region in --prices, e.g. US-TEX-ERCO")
    p.add_argument("--start", default="2024-07-16T00:00:00-07:00",
                   help="simulated start (ISO 8601; default midnight in California, so the day crosses the "
                        "RTX 4090 pool's evening tariff peak)")
    p.add_argument("--baselines", default=",".join(("hpa-h100", "hpa-rtx4090", "static-peak", "melange", "keda",
                                                    "lower-bound")),
                   help="twin baselines run on the same requests at the end ('' for none)")
    p.add_argument("--report", default="kilowatt-demo-report", help="directory for the plots and report.html")
    p.add_argument("--no-tui", action="store_true", help="plain log lines instead of the live view")
    p.add_argument("--kubeconfig", help="use this API server instead of starting the embedded one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text", help="json: the summary at the end")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("validate", help="check YAML objects against the API, including cross-field rules")
    p.add_argument("-f", "--file", action="append", required=True)
    p.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "file", None) is None and args.command in ("plan", "render", "simulate", "demo") \
            and not getattr(args, "fleet", None):
        args.file = [str(REPO_ROOT / "manifests/examples")]
    try:
        return args.func(args)
    except ModuleNotFoundError as exc:
        if exc.name not in TWIN_EXTRA:
            raise
        print(f"error: `kilowatt {args.command}` needs {exc.name}, part of the twin extra that the operator image "
              "leaves out; install it with: pip install 'kilowatt[twin]'", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
