"""Request length distributions: where the planner learns that long prompts exist.

A ``TokenMix`` carries the mean prompt and output lengths and, when known, their quantiles at ``LEVELS`` (from
vLLM's ``vllm:request_prompt_tokens`` / ``vllm:request_generation_tokens`` histograms, or from a trace). Without
quantiles a mix has ShareGPT's shape (log-normal, coefficient of variation ~1) around its means. ``sample`` draws
lengths by inverse transform, log-linear between quantiles, rescaled so the sample's mean is the mix's mean (a
histogram's sum is exact; its buckets are coarse).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Quantile levels a mix keeps (0 and 1: the smallest and largest length seen).
LEVELS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
# ShareGPT-like default shape: log-normal with sigma 0.8, quantiles relative to the mean.
DEFAULT_SIGMA = 0.8


def _lognormal_relative_quantiles(sigma: float) -> tuple[float, ...]:
    from statistics import NormalDist

    mean = math.exp(sigma * sigma / 2.0)
    z = NormalDist()
    out = []
    for level in LEVELS:
        q = min(max(level, 0.002), 0.998)
        out.append(math.exp(sigma * z.inv_cdf(q)) / mean)
    return tuple(out)


DEFAULT_SHAPE = _lognormal_relative_quantiles(DEFAULT_SIGMA)


def quantiles_of(values: np.ndarray) -> tuple[float, ...]:
    """A sample's lengths at LEVELS."""
    if not len(values):
        return ()
    return tuple(float(x) for x in np.quantile(np.asarray(values, dtype=float), LEVELS))


def quantiles_from_histogram(buckets: Sequence[tuple[float, float]], max_tokens: float | None = None
                             ) -> tuple[float, ...]:
    """Lengths at LEVELS from a Prometheus histogram's cumulative (upper bound, count) pairs (``+Inf`` last),
    interpolating log-linearly within a bucket (lengths span decades; vLLM's buckets go 1, 2, 5, 10, 20, 50...).
    The ``+Inf`` bucket ends at ``max_tokens`` (the model's context; vLLM refuses longer), else at twice the
    last bound. Empty when the histogram has no observations."""
    points = sorted((float(le), float(c)) for le, c in buckets)
    if not points or points[-1][1] <= 0:
        return ()
    total = points[-1][1]
    finite = [(le, c) for le, c in points if math.isfinite(le)]
    largest_finite = finite[-1][0] if finite else 1.0
    out = []
    for level in LEVELS:
        target = level * total
        lower_le, lower_c = 1.0, 0.0
        value = largest_finite
        for le, c in points:
            if c >= target and c > lower_c:
                upper = le if math.isfinite(le) else (max_tokens or 2.0 * lower_le)
                frac = (target - lower_c) / (c - lower_c)
                lo = max(lower_le, 1.0)
                value = math.exp(math.log(lo) + frac * (math.log(max(upper, lo)) - math.log(lo)))
                break
            lower_le, lower_c = (le if math.isfinite(le) else lower_le), c
        out.append(max(1.0, value))
    return tuple(out)


def relative_shape(quantiles: tuple[float, ...], mean: float) -> tuple[float, ...]:
    return tuple(q / mean for q in quantiles)


def sample_lengths(mean: float, quantiles: tuple[float, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """n lengths (whole tokens, at least 1) with the given quantiles (DEFAULT_SHAPE x mean when empty), their
    mean rescaled to ``mean``."""
    shape = quantiles if quantiles else tuple(mean * r for r in DEFAULT_SHAPE)
    logs = np.log(np.maximum(np.asarray(shape, dtype=float), 1.0))
    x = np.exp(np.interp(rng.random(n), LEVELS, logs))
    x *= mean / max(x.mean(), 1e-9)
    return np.maximum(1, np.round(x)).astype(np.int64)


def vllm_length_buckets(max_model_len: int) -> tuple[int, ...]:
    """The bucket bounds vLLM gives its length histograms: ``build_1_2_5_buckets(max_model_len)``."""
    out, exponent = [], 0
    while True:
        for m in (1, 2, 5):
            value = m * 10 ** exponent
            if value > max_model_len:
                return tuple(out)
            out.append(value)
        exponent += 1


def cumulative_histogram(values: np.ndarray, bounds: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """(upper bound, count of values <= it) per bound and ``+Inf``: what a Prometheus histogram exposes."""
    values = np.sort(np.asarray(values, dtype=float))
    counts = np.searchsorted(values, np.asarray(bounds, dtype=float), side="right")
    return tuple((float(b), float(c)) for b, c in zip(bounds, counts)) + ((math.inf, float(len(values))),)
