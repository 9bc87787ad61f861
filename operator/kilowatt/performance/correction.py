"""Online correction of the capacity model from observed latency, per service and pool.

Each control period the operator reports the observed p-th percentile TTFT and TPOT at the observed load
next to what the model predicted for that load. The ratio, smoothed (EWMA; a period with too few requests behind
its percentile is pooled with the next ones until they are enough) and clamped to [0.5, 4], scales
the model's latency predictions for that service on that pool, so capacity shrinks when the GPUs are slower
than the physics says (a noisy neighbour, a slower host) and grows back when they are faster. Bounded and
explainable by construction: one number per (service, pool, metric), with the sample count behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_FACTOR, MAX_FACTOR = 0.5, 4.0


@dataclass
class _Factor:
    value: float = 1.0
    samples: int = 0

    def update(self, ratio: float, weight: float) -> None:
        ratio = min(MAX_FACTOR, max(MIN_FACTOR, ratio))
        self.value = min(MAX_FACTOR, max(MIN_FACTOR, (1.0 - weight) * self.value + weight * ratio))
        self.samples += 1


@dataclass
class LatencyCorrection:
    smoothing: float = 0.3  # weight of the newest sample, when enough requests back it
    min_load_rps: float = 0.05  # ignore periods with too little traffic to have a percentile
    # A percentile is evidence when this many requests lie beyond it (100 requests at p95, 500 at p99). A period
    # with fewer is kept aside until the periods kept add up to that many requests; then one ratio is read off
    # them and folded in once. A window of n requests "p95" with n < 20 is its slowest request, and the slowest
    # of n is below the request-level p-th percentile with probability (p/100)^n: the pooled ratio is the
    # request-weighted quantile at that level, not the median. A trickle still learns, in time; one long prompt
    # in it never moves it.
    tail_requests: float = 5.0
    _factors: dict[tuple[str, str, str], _Factor] = field(default_factory=dict)
    _pending: dict[tuple[str, str, str], list[tuple[float, float, float]]] = field(default_factory=dict)

    def observe(
        self,
        service: str,
        pool: str,
        load_rps: float,
        predicted_ttft_seconds: float,
        observed_ttft_seconds: float | None,
        predicted_tpot_seconds: float,
        observed_tpot_seconds: float | None,
        requests: float | None = None,
        percentile: float = 95.0,
        window_requests: float | None = None,
    ) -> None:
        """Fold one period's observation in. ``predicted_*`` must be the *uncorrected* model's prediction;
        ``requests``: how many requests not seen in an earlier period the percentiles were read from (None:
        enough); ``window_requests``: how many the window held in all (default ``requests``)."""
        if load_rps < self.min_load_rps:
            return
        needed = self.tail_requests / max(1e-6, 1.0 - percentile / 100.0)
        for metric, predicted, observed in (
            ("ttft", predicted_ttft_seconds, observed_ttft_seconds),
            ("tpot", predicted_tpot_seconds, observed_tpot_seconds),
        ):
            if observed is None or not predicted > 0 or predicted == float("inf") or not observed > 0:
                continue
            key = (service, pool, metric)
            ratio = observed / predicted
            if requests is not None and requests < needed:
                pending = self._pending.setdefault(key, [])
                pending.append((ratio, max(0.0, requests), window_requests if window_requests else requests))
                fresh = sum(n for _, n, _ in pending)
                if fresh < needed:
                    continue
                # The level at which the pooled windows' percentiles estimate the request-level one.
                per_window = sum(n * w for _, n, w in pending) / fresh
                level = 0.5 if per_window * (1.0 - percentile / 100.0) >= 1.0 else \
                    max(0.5, (percentile / 100.0) ** per_window)
                ratio = _weighted_quantile([(r, n) for r, n, _ in pending], level)
                pending.clear()
            self._factors.setdefault(key, _Factor()).update(ratio, self.smoothing)

    def forget(self, service: str) -> None:
        """The service is gone: what was learned of it goes too (a new service of the same name starts from the
        model's prior, not from another deployment's latency)."""
        for table in (self._factors, self._pending):
            for key in [k for k in table if k[0] == service]:
                del table[key]

    def factors(self, service: str, pool: str) -> tuple[float, float]:
        ttft = self._factors.get((service, pool, "ttft"))
        tpot = self._factors.get((service, pool, "tpot"))
        return 1.0 if ttft is None else ttft.value, 1.0 if tpot is None else tpot.value

    def explain(self, service: str, pool: str) -> str:
        ttft, tpot = self.factors(service, pool)
        n = max((f.samples for (s, p, _), f in self._factors.items() if (s, p) == (service, pool)), default=0)
        if n == 0:
            return f"{pool}: no latency observed yet; the model's prior stands"
        return f"{pool}: observed latency is {ttft:.2f}× (TTFT) and {tpot:.2f}× (TPOT) the model's, over {n} periods"


def _weighted_quantile(samples: list[tuple[float, float]], level: float) -> float:
    """The smallest value with at least ``level`` of the weight at or below it."""
    ordered = sorted(samples)
    target = sum(w for _, w in ordered) * level
    seen = 0.0
    for value, weight in ordered:
        seen += weight
        if seen >= target - 1e-12:
            return value
    return ordered[-1][0]
