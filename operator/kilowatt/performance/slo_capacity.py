"""SLO capacity measured on the serving engine: the one number the planner and the twin share.

How many requests per second one replica serves with the p-th percentile TTFT and TPOT within the SLO depends on
the whole length distribution (a few long prompts stall everyone's decode; long answers fill the KV cache), on
chunked prefill, paged KV blocks and preemption. No closed form follows all of that, so kilowatt measures it on
the engine the twin serves with (``kilowatt.performance.engine``): once per (engine constants, length mix), a
latency curve — the replica's saturation throughput, then TTFT and TPOT percentiles at a ladder of Poisson rates
below it (the same arrival and length draws at every rate, scaled, so the curve is monotone and smooth). Any SLO,
percentile and online correction is then answered from the curve by interpolation, in microseconds.

A curve costs ~0.2-1 s of CPU (``benchmarks/capacity_consistency.py`` records it); curves are remembered per
process for the engine constants and the mix (its means and quantiles at two significant digits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from kilowatt.performance.capacity import TokenMix
from kilowatt.performance.engine import EngineTimes, Ledger, Replica
from kilowatt.performance.lengths import sample_lengths

# Offered load as a share of saturation; dense near the top, where SLO capacities usually sit.
RATE_FRACTIONS = (0.02, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.75, 0.8, 0.85, 0.89, 0.93, 0.96, 0.99)
PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0)
REQUESTS = 2000  # per rate; the first WARMUP_SHARE are left out (the replica starts empty)
WARMUP_SHARE = 0.1
SEED = 20261122


@dataclass(frozen=True)
class LatencyCurve:
    saturation_rps: float
    rates_rps: tuple[float, ...]
    ttft_s: tuple[tuple[float, ...], ...]  # [percentile][rate]
    tpot_s: tuple[tuple[float, ...], ...]

    def at(self, percentile: float, which: str) -> np.ndarray:
        """Latency at ``percentile`` for every rate (interpolated between the recorded percentiles)."""
        table = np.asarray(self.ttft_s if which == "ttft" else self.tpot_s)
        p = min(max(percentile, PERCENTILES[0]), PERCENTILES[-1])
        return np.array([np.interp(p, PERCENTILES, table[:, i]) for i in range(table.shape[1])])

    def max_rps_within_slo(self, ttft_seconds: float, tpot_seconds: float, percentile: float = 95.0,
                           ttft_factor: float = 1.0, tpot_factor: float = 1.0) -> float:
        """The highest rate whose percentile TTFT and TPOT, times the online correction, are within the targets
        (linear between the curve's rates; 0 when even the lightest load misses)."""
        if self.saturation_rps <= 0:
            return 0.0
        ttft = self.at(percentile, "ttft") * ttft_factor
        tpot = self.at(percentile, "tpot") * tpot_factor
        # slack > 0: within; the curve's latencies rise with the rate, so the first miss ends the search
        slack = np.minimum(1.0 - ttft / ttft_seconds, 1.0 - tpot / tpot_seconds)
        rates = self.rates_rps
        if slack[0] < 0:
            # Below the lightest recorded load: scale towards zero load (latency at ~0 load is the first point's).
            return 0.0
        for i in range(1, len(rates)):
            if slack[i] < 0:
                share = slack[i - 1] / (slack[i - 1] - slack[i])
                return rates[i - 1] + share * (rates[i] - rates[i - 1])
        return rates[-1]


def _serve(times: EngineTimes, arrival: np.ndarray, inputs: np.ndarray, outputs: np.ndarray) -> Ledger:
    n = len(arrival)
    ledger = Ledger(n)
    Replica(times, 0, 0.0, 1).run(list(range(n)), arrival, inputs, outputs, math.inf, ledger)
    return ledger


def saturation_rps(times: EngineTimes, inputs: np.ndarray, outputs: np.ndarray) -> float:
    """Requests per second a replica completes with a standing queue: everything arrives at once, throughput
    between the 10th and 90th percentile completion (no ramp-up, no drain)."""
    n = len(inputs)
    ledger = _serve(times, np.zeros(n), inputs, outputs)
    finish = np.sort(ledger.finish_s)
    lo, hi = int(0.1 * n), int(0.9 * n)
    span = finish[hi] - finish[lo]
    return (hi - lo) / span if span > 0 else 0.0


@lru_cache(maxsize=4096)
def latency_curve(times: EngineTimes, mix: TokenMix, requests: int = REQUESTS, seed: int = SEED) -> LatencyCurve:
    """The replica's latency percentiles against offered load for this mix (see the module's docstring)."""
    if times.kv_blocks <= 0:
        return LatencyCurve(0.0, (), (), ())
    rng = np.random.default_rng(seed)
    inputs = sample_lengths(mix.input_tokens, mix.input_quantiles, requests, rng)
    outputs = sample_lengths(mix.output_tokens, mix.output_quantiles, requests, rng)
    gaps = rng.exponential(1.0, requests)
    saturation = saturation_rps(times, inputs, outputs)
    if saturation <= 0:
        return LatencyCurve(0.0, (), (), ())
    warm = int(WARMUP_SHARE * requests)
    rates, ttft, tpot = [], [], []
    base = np.cumsum(gaps)
    for fraction in RATE_FRACTIONS:
        rate = fraction * saturation
        ledger = _serve(times, base / rate, inputs, outputs)
        t = ledger.ttft_s[warm:]
        d = ledger.tpot_s[warm:]
        d = d[~np.isnan(d)]
        rates.append(rate)
        ttft.append([float(np.percentile(t, p)) for p in PERCENTILES])
        tpot.append([float(np.percentile(d, p)) if len(d) else 0.0 for p in PERCENTILES])
    # Percentiles of a finite sample can dip as the rate rises; a curve used for "the most load within" must not.
    ttft_arr = np.maximum.accumulate(np.asarray(ttft), axis=0).T
    tpot_arr = np.maximum.accumulate(np.asarray(tpot), axis=0).T
    return LatencyCurve(saturation, tuple(rates), tuple(map(tuple, ttft_arr)), tuple(map(tuple, tpot_arr)))
