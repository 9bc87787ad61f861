"""Percentiles and attainment from Prometheus histogram buckets (cumulative counts by upper bound ``le``)."""

from __future__ import annotations

import math


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Like PromQL's histogram_quantile: linear interpolation inside the bucket holding the q-th observation."""
    points = sorted(buckets)
    if not points or points[-1][1] <= 0:
        return None
    total = points[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in points:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # in the +Inf bucket: the highest finite bound is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return points[-1][0]


def share_below(target: float, buckets: list[tuple[float, float]]) -> float | None:
    """Fraction of observations at or below ``target``, interpolated inside its bucket."""
    points = sorted(buckets)
    if not points or points[-1][1] <= 0:
        return None
    total = points[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in points:
        if target <= bound:
            if math.isinf(bound):
                return lower_count / total
            fraction = (target - lower_bound) / (bound - lower_bound) if bound > lower_bound else 1.0
            return (lower_count + (count - lower_count) * fraction) / total
        lower_bound, lower_count = bound, count
    return 1.0


def within_all(shares: list[float | None]) -> float | None:
    """The share of requests within every target, at least, from each target's share alone: a request may miss
    several, so 1 - the sum of the misses (never below 0). Separate histograms cannot tell more; the lower of the
    shares would be the most it can be, and an SLO read on it would count up to one miss in two as met."""
    known = [x for x in shares if x is not None]
    if not known:
        return None
    return max(0.0, 1.0 - sum(1.0 - x for x in known))
