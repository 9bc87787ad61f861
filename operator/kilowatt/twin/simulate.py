"""Run policies over a workload in the twin and summarise what each cost and how its SLO held.

Every policy sees the same requests (same seed), starts warm, decides once per control period, and is charged
for every replica that exists. Starting warm means a lead-in (``LEAD_IN_SECONDS``): a policy that had been running
before the trace began has replicas up, a demand history, windows and budgets that remember the hour before, so
each run first plays the trace's last hour (all of it when shorter: a day's curve wraps around midnight, an
hour's trace stands for the hour before it) from replicas sized by the policy's own rule for its opening rate,
and is judged — cost, samples, attainment, decisions — from the trace's start on. After the last arrival the
replicas drain; anything still unserved then is counted as dropped (and as missing the SLO). ``sloAttainment``
is the share of all requests whose TTFT and TPOT are both within the targets.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from kilowatt.slo import within_slo
from kilowatt.api.v1alpha1 import AcceleratorPool, InferenceService
from kilowatt.economics.prices import PriceSource
from kilowatt.performance.slo_capacity import CurveBook
from kilowatt.twin.dataplane import DataPlane, Sample, routed_as
from kilowatt.twin.policies import (
    HPA_CALIBRATION_ATTAINMENT,
    HPA_TARGET_FRACTIONS,
    HpaPolicy,
    Policy,
    PolicyUnavailable,
    calibration_hour,
    make_policy,
)
from kilowatt.twin.workload import LEAD_IN_SECONDS, Workload

DRAIN_LIMIT_SECONDS = 3600.0
# The warm start: every policy begins the lead-in sized for the mean arrival rate of its first five minutes (the
# default scale-down stabilisation window), then runs the lead-in, unjudged: the hour a running service had behind it.
WARM_WINDOW_SECONDS = 300.0
SECONDS_PER_DAY = 86400.0
TOKENS_PER_MILLION = 1e6


@dataclass
class PolicyResult:
    name: str
    requests: int
    finished: int
    dropped: int
    cost_usd: float
    hardware_usd: float
    energy_usd: float
    energy_kwh: float
    tokens: float
    slo_attainment: float
    ttft_p95_s: float | None
    tpot_p95_s: float | None
    gpu_hours: dict[str, float]
    samples: list[Sample] = field(default_factory=list, repr=False)
    decisions: int = 0
    wall_seconds: float = 0.0
    mixed_hours: float = 0.0  # serving on more than one pool at once
    stranded_usd: float = 0.0  # paid for capacity the routing cannot reach (equal shares on a mixed placement)
    co2_kg: float = 0.0
    owned_hardware_usd: float = 0.0  # of hardware_usd: owned pools' GPUs, paid whether used or not
    detail: str = ""  # how the policy was set up (a tuned HPA target)

    def to_json(self) -> dict:
        ms = lambda s: None if s is None else round(s * 1000.0, 3)  # noqa: E731
        return {
            "name": self.name,
            "requests": self.requests,
            "finished": self.finished,
            "dropped": self.dropped,
            "costUsd": round(self.cost_usd, 6),
            "hardwareUsd": round(self.hardware_usd, 6),
            "energyUsd": round(self.energy_usd, 6),
            "energyKwh": round(self.energy_kwh, 6),
            "costPerMillionTokensUsd": round(self.cost_usd / (self.tokens / TOKENS_PER_MILLION), 6)
            if self.tokens else None,
            "sloAttainment": round(self.slo_attainment, 6),
            "ttftP95Ms": ms(self.ttft_p95_s),
            "tpotP95Ms": ms(self.tpot_p95_s),
            "gpuHours": {p: round(h, 6) for p, h in self.gpu_hours.items()},
            "decisions": self.decisions,
            "mixedPlacementHours": round(self.mixed_hours, 6),
            "strandedByRoutingUsd": round(self.stranded_usd, 6),
            "co2Kg": round(self.co2_kg, 6),
            "co2KgPerDay": round(self.co2_kg / (self.samples[-1].t_s / SECONDS_PER_DAY), 6)
            if self.samples and self.samples[-1].t_s > 0 else None,
            "ownedHardwareUsd": round(self.owned_hardware_usd, 6),
            **({"detail": self.detail} if self.detail else {}),
            "wallSeconds": round(self.wall_seconds, 3),
        }


def opening_rps(workload: Workload) -> float:
    """The rate the service was serving before the trace (the warm start every policy and the demo share): the
    mean of the first WARM_WINDOW_SECONDS, not the first minute, which in a bursty trace can be a lull a service
    that had been running would not have scaled down to."""
    window = min(WARM_WINDOW_SECONDS, workload.duration_s)
    return float(np.sum(workload.arrival_s < window)) / window if window > 0 else 0.0


def run_policy(name: str, workload: Workload, service: InferenceService, pools: list[AcceleratorPool],
               prices: dict[str, PriceSource], price_queries: dict[str, str], start: datetime,
               period_seconds: float = 15.0, seed: int = 0,
               progress: Callable[[str, float], None] | None = None, routing: str | None = None,
               curves: CurveBook | None = None, engine_capacity: bool = True,
               policy: Policy | None = None, lead_in_seconds: float = LEAD_IN_SECONDS) -> PolicyResult:
    """``routing``: how the cluster routes (None: the service's spec.routing.mode). ``curves``: the engine's
    latency curves, shared between the runs of one comparison (measured once, used by every policy).
    ``engine_capacity``: every policy plans with the SLO capacity measured on the engine, not the analytic model.
    ``lead_in_seconds``: how much of the trace's end is played, unjudged, before it (0: none)."""
    started = time.perf_counter()
    service, routing = routed_as(service, routing)
    policy = policy or make_policy(name, service, pools, price_queries, period_seconds)
    if isinstance(policy, HpaPolicy) and policy.target_fraction is None:
        tune_hpa(policy, workload, service, pools, prices, start, period_seconds, routing, curves, engine_capacity,
                 lead_in_seconds)
    played, lead_s = workload.with_lead_in(lead_in_seconds, period_seconds)
    first_request = len(played) - len(workload)
    plane = DataPlane(played, service, pools, prices, start - timedelta(seconds=lead_s), seed=seed,
                      startup_override_seconds=policy.startup_override_seconds, routing=routing, curves=curves,
                      engine_capacity=engine_capacity)
    policy.bind(plane)
    plane.apply(policy.decide(initial_rps=opening_rps(played)))
    plane.warm_start()  # what ran before the lead-in is already serving
    decisions_before = 0

    def begin() -> None:
        nonlocal decisions_before
        plane.begin_measuring(first_request)
        decisions_before = getattr(policy, "decisions", 0)

    run_periods(name, played.duration_s, period_seconds, plane.advance, lambda: plane.apply(policy.decide()),
                plane.unfinished, progress, lead_s, begin)
    result = summarise(name, plane, time.perf_counter() - started, getattr(policy, "decisions", 0) - decisions_before)
    result.detail = getattr(policy, "detail", "")
    return result


def run_periods(name: str, duration_s: float, period_seconds: float, advance: Callable[[float], None],
                decide: Callable[[], None], unfinished: Callable[[], int],
                progress: Callable[[str, float], None] | None, lead_in_s: float = 0.0,
                begin: Callable[[], None] | None = None) -> None:
    """Step a run to its end: advance one period, decide for the next (none after the last), say how far it is;
    then drain — no more arrivals, the replicas finish what they hold (the last placement kept), for at most
    DRAIN_LIMIT_SECONDS. ``begin`` is called once the lead-in's ``lead_in_s`` have been played, before the
    decision at that time (the first one judged)."""
    t, next_report = 0.0, 0.0
    if begin is not None and lead_in_s <= 0:
        begin()
    while t < duration_s:
        until = min(t + period_seconds, duration_s)
        advance(until)
        t = until
        if begin is not None and 0 < lead_in_s and t - period_seconds < lead_in_s <= t:
            begin()
        if t < duration_s:
            decide()
        if progress and t >= next_report:
            progress(name, t / duration_s)
            next_report = t + duration_s / 20
    while unfinished() and t < duration_s + DRAIN_LIMIT_SECONDS:
        t += period_seconds
        advance(t)


def tune_hpa(policy: HpaPolicy, workload: Workload, service: InferenceService, pools: list[AcceleratorPool],
             prices: dict[str, PriceSource], start: datetime, period_seconds: float, routing: str | None,
             curves: CurveBook | None, engine_capacity: bool, lead_in_seconds: float = LEAD_IN_SECONDS) -> None:
    """Set the HPA's target as a careful user would from a load test: the highest share of a replica's SLO
    capacity (HPA_TARGET_FRACTIONS) that keeps HPA_CALIBRATION_ATTAINMENT of the calibration hour's requests (the
    workload's busiest) within the SLO; the lowest tried if none does. Each try starts as the run it tunes for
    (``lead_in_seconds``: warm from a lead-in, or cold)."""
    hour = calibration_hour(workload)
    tried = []
    for fraction in HPA_TARGET_FRACTIONS:
        result = run_policy(policy.name, hour, service, pools, prices, {}, start, period_seconds, seed=1,
                            routing=routing, curves=curves, engine_capacity=engine_capacity,
                            policy=HpaPolicy(policy.pool, fraction), lead_in_seconds=lead_in_seconds)
        tried.append(f"{fraction:.0%}: {result.slo_attainment:.2%}")
        if result.slo_attainment >= HPA_CALIBRATION_ATTAINMENT:
            break
    policy.target_fraction = fraction
    policy.detail = f"target {fraction:.0%} of a replica's SLO capacity, tuned on the busiest hour ({'; '.join(tried)})"


def summarise(name: str, plane: DataPlane, wall_seconds: float, decisions: int = 0) -> PolicyResult:
    ledger, w, slo = plane.ledger, plane.workload, plane.service.spec.slo
    # The ledger may be longer: a run cut short (the demo's Ctrl-C) summarises its first n requests; a lead-in's
    # are before plane.measured_from.
    lo, n = plane.measured_from, len(w)
    w = Workload(w.arrival_s[lo:n], w.input_tokens[lo:n], w.output_tokens[lo:n], w.duration_s - plane.measured_from_s)
    finish_s, ttft_s, tpot_s = ledger.finish_s[lo:n], ledger.ttft_s[lo:n], ledger.tpot_s[lo:n]
    finished = ~np.isnan(finish_s)
    has_tpot = ~np.isnan(tpot_s)
    ok = finished & within_slo(ttft_s, tpot_s, slo.ttft_milliseconds / 1000.0, slo.tpot_milliseconds / 1000.0)
    a = plane.accounts
    tokens = float(np.sum(w.input_tokens[finished]) + np.sum(w.output_tokens[finished]))
    # Percentiles over all requests: an unserved one counts as infinitely late.
    ttft_all = np.where(finished, ttft_s, np.inf)
    tpot_all = np.where(finished, np.where(has_tpot, tpot_s, 0.0), np.inf)
    def p(x: np.ndarray) -> float | None:
        """The p95, or None when it is infinite (over 5 % of the requests were never served)."""
        if not len(x) or np.isfinite(x).mean() < 0.95:
            return None
        return float(np.percentile(x, 95))

    return PolicyResult(
        name=name, requests=len(w), finished=int(finished.sum()), dropped=int(len(w) - finished.sum()),
        cost_usd=a.hardware_usd + a.energy_usd, hardware_usd=a.hardware_usd, energy_usd=a.energy_usd,
        energy_kwh=a.energy_kwh, tokens=tokens, slo_attainment=float(ok.mean()) if len(w) else 1.0,
        ttft_p95_s=p(ttft_all), tpot_p95_s=p(tpot_all[has_tpot | ~finished]), gpu_hours=dict(a.gpu_hours),
        samples=plane.samples, decisions=decisions, wall_seconds=wall_seconds, mixed_hours=a.mixed_hours,
        stranded_usd=a.stranded_usd, co2_kg=a.co2_kg, owned_hardware_usd=a.owned_hardware_usd)


def simulate(policies: list[str], workload: Workload, service: InferenceService, pools: list[AcceleratorPool],
             prices: dict[str, PriceSource], price_queries: dict[str, str], start: datetime,
             period_seconds: float = 15.0, seed: int = 0, quiet: bool = False,
             routing: str | None = None, engine_capacity: bool = True,
             lead_in_seconds: float = LEAD_IN_SECONDS) -> list[PolicyResult]:
    tty = sys.stderr.isatty()

    def progress(name: str, fraction: float) -> None:
        if tty:
            print(f"\r  {name:12} {'#' * int(fraction * 30):30} {fraction:4.0%}", end="", file=sys.stderr, flush=True)
        elif round(fraction * 20) % 5 == 0:  # plain lines for logs: every quarter
            print(f"  {name:12} {fraction:4.0%}", file=sys.stderr, flush=True)

    results = []
    curves = CurveBook.for_twin()
    for name in policies:
        try:
            result = run_policy(name, workload, service, pools, prices, price_queries, start, period_seconds, seed,
                                None if quiet else progress, routing, curves, engine_capacity,
                                lead_in_seconds=lead_in_seconds)
        except PolicyUnavailable as exc:  # the others still compare
            print(f"{chr(13) if tty else ''}  {name:12} skipped: {exc}", file=sys.stderr)
            continue
        if not quiet:
            print(f"{chr(13) if tty else ''}  {name:12} {'#' * 30} done in {result.wall_seconds:.1f}s: ${result.cost_usd:.2f}, SLO "
                  f"{result.slo_attainment:.2%}", file=sys.stderr)
        results.append(result)
    return results
