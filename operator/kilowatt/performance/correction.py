"""Online correction of the capacity model from observed latency, per service and pool.

Each control period the operator reports the observed p-th percentile TTFT and TPOT at the observed load
next to what the model predicted for that load. The ratio, smoothed (EWMA, each period weighted by the requests
behind its percentile: a p95 read off eight requests is their slowest one, not evidence) and clamped to [0.5, 4], scales
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
    # A percentile is evidence when this many requests lie beyond it (100 requests at p95, 500 at p99); a period
    # with fewer weighs in proportionally less, and one with less than one request beyond it not at all.
    tail_requests: float = 5.0
    _factors: dict[tuple[str, str, str], _Factor] = field(default_factory=dict)

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
    ) -> None:
        """Fold one period's observation in. ``predicted_*`` must be the *uncorrected* model's prediction;
        ``requests``: how many requests the observed percentiles were read from (None: enough)."""
        if load_rps < self.min_load_rps:
            return
        weight = self.smoothing
        if requests is not None:
            beyond = max(0.0, requests) * (1.0 - percentile / 100.0)  # requests expected past the percentile
            if beyond < 1.0:
                return  # fewer requests than one past the percentile: the "percentile" is the slowest request
            weight *= min(1.0, beyond / self.tail_requests)
        for metric, predicted, observed in (
            ("ttft", predicted_ttft_seconds, observed_ttft_seconds),
            ("tpot", predicted_tpot_seconds, observed_tpot_seconds),
        ):
            if observed is None or not predicted > 0 or predicted == float("inf") or not observed > 0:
                continue
            self._factors.setdefault((service, pool, metric), _Factor()).update(observed / predicted, weight)

    def factors(self, service: str, pool: str) -> tuple[float, float]:
        ttft = self._factors.get((service, pool, "ttft"), _Factor()).value
        tpot = self._factors.get((service, pool, "tpot"), _Factor()).value
        return ttft, tpot

    def explain(self, service: str, pool: str) -> str:
        ttft, tpot = self.factors(service, pool)
        n = max((f.samples for (s, p, _), f in self._factors.items() if (s, p) == (service, pool)), default=0)
        if n == 0:
            return f"{pool}: no latency observed yet; the model's prior stands"
        return f"{pool}: observed latency is {ttft:.2f}× (TTFT) and {tpot:.2f}× (TPOT) the model's, over {n} periods"
