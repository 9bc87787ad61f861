"""Short-horizon demand: what to plan for, from the observed request rate.

Scale-up must not lag a rising load by a replica start-up, so the estimate is the larger of the latest rate,
its exponential average, and the latest rate projected along the recent trend by the start-up time — at most
``max_growth`` times the latest rate: a trend read off a few short periods (a series that just started, a step
from 3 to 30 req/s within seconds) would otherwise project hundreds of req/s two minutes ahead.

A rate read off few requests is mostly noise (eight requests a minute: ±35 %): when the window held fewer than
``evidence_requests`` requests, the latest rate moves the estimate only in proportion, and no trend is projected —
a trickle's chance bunching never buys replicas.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class DemandEstimator:
    smoothing: float = 0.3
    history_length: int = 8
    max_growth: float = 2.0
    evidence_requests: float = 30.0
    _ewma: dict[str, float] = field(default_factory=dict)
    _history: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)

    def update(self, key: str, now_seconds: float, rps: float, lead_seconds: float,
               requests: float | None = None) -> float:
        """``requests``: how many requests the rate was read from (None: enough to trust it)."""
        confidence = 1.0 if requests is None else min(1.0, max(0.0, requests) / self.evidence_requests)
        previous = self._ewma.get(key, rps)
        ewma = self._ewma[key] = (1 - self.smoothing) * previous + self.smoothing * rps
        history = self._history.setdefault(key, deque(maxlen=self.history_length))
        history.append((now_seconds, rps))
        if confidence < 1.0:
            return max(ewma, previous + confidence * (rps - previous))
        projected = rps
        if len(history) >= 3:
            (t0, r0), (t1, r1) = history[0], history[-1]
            if t1 > t0 and r1 > r0:
                projected = min(r1 + (r1 - r0) / (t1 - t0) * lead_seconds, r1 * self.max_growth)
        return max(rps, ewma, projected)

    def forget(self, key: str) -> None:
        self._ewma.pop(key, None)
        self._history.pop(key, None)
