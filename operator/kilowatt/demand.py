"""Short-horizon demand: what to plan for, from the observed request rate.

Scale-up must not lag a rising load by a replica start-up, so the estimate is the larger of the latest rate,
its exponential average, and the latest rate projected along the recent trend by the start-up time — at most
``max_growth`` times the latest rate: a trend read off a few short periods (a series that just started, a step
from 3 to 30 req/s within seconds) would otherwise project hundreds of req/s two minutes ahead.

The rate is read over a metrics window, so a step in the arrivals (a burst from 8 to 72 req/s) shows as a ramp
one window long, which an extrapolation would read as a trend and double. Only a rise that has lasted beyond a
window is one: the trend projected is the slower of the rises over the older and the newer half of the history,
which spans two windows when the window is known — a step's older half is flat, a ramp's halves rise alike.

The same window delays a step by a window before the rate shows it whole; the rate of the last period alone can be
read off two consecutive windowed rates and the rate a window before (``latest_arrivals``), and a rise is planned
for as soon as that is seen.

A rate read off few requests is mostly noise (eight requests a minute: ±35 %): when the window held fewer than
``evidence_requests`` requests, the latest rate moves the estimate only in proportion, and no trend is projected —
a trickle's chance bunching never buys replicas.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

STEP_SIGMAS = 2.0  # a rise read as a step in the arrivals stands this many standard deviations above chance
NOISE_SAMPLES = 4  # earlier gains a measured spread of the arrivals needs (fewer: Poisson's is used)
MAX_HISTORY = 256  # rates kept per service, whatever the window: a bound, not a setting


@dataclass
class DemandEstimator:
    smoothing: float = 0.3
    history_length: int = 8
    max_growth: float = 2.0
    evidence_requests: float = 30.0
    _ewma: dict[str, float] = field(default_factory=dict)
    _history: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)

    def update(self, key: str, now_seconds: float, rps: float, lead_seconds: float,
               requests: float | None = None, window_seconds: float | None = None) -> float:
        """``requests``: how many requests the rate was read from (None: enough to trust it);
        ``window_seconds``: the window the rate is read over (None: unknown; the history is then the last
        ``history_length`` rates)."""
        confidence = 1.0 if requests is None else min(1.0, max(0.0, requests) / self.evidence_requests)
        previous = self._ewma.get(key, rps)
        ewma = self._ewma[key] = (1 - self.smoothing) * previous + self.smoothing * rps
        history = self._history.setdefault(key, deque(maxlen=MAX_HISTORY))
        history.append((now_seconds, rps))
        if window_seconds:
            # Two windows back, and the last rate read before that, so that the history covers them.
            while len(history) > 2 and history[1][0] <= now_seconds - 2 * window_seconds:
                history.popleft()
        else:
            while len(history) > self.history_length:
                history.popleft()
        if confidence < 1.0:
            return max(ewma, previous + confidence * (rps - previous))
        points = list(history)
        slope = sustained_slope(points)
        projected = rps if slope <= 0 else min(rps + slope * lead_seconds, rps * self.max_growth)
        latest = latest_arrivals(points, window_seconds) if window_seconds else None
        if latest is not None:
            projected = max(projected, min(latest, rps * self.max_growth))
        return max(rps, ewma, projected)

    def forget(self, key: str) -> None:
        self._ewma.pop(key, None)
        self._history.pop(key, None)


def sustained_slope(history: list[tuple[float, float]]) -> float:
    """The rise per second the rate has kept over the whole history (time, rate): the slower of its rises over
    the older and the newer half (split at the rate read nearest the middle), 0 with fewer than three rates or
    where either half did not rise."""
    if len(history) < 3:
        return 0.0
    (t0, r0), (t1, r1) = history[0], history[-1]
    middle = (t0 + t1) / 2
    tm, rm = min(history[1:-1], key=lambda point: abs(point[0] - middle))
    if not t0 < tm < t1:
        return 0.0
    return max(0.0, min((rm - r0) / (tm - t0), (r1 - rm) / (t1 - tm)))


def latest_arrivals(history: list[tuple[float, float]], window_seconds: float) -> float | None:
    """The arrival rate of the last period, read off rates over a longer trailing window (time, rate): a window
    slid on by p seconds gained the last p seconds' arrivals and lost those of p seconds a window ago, so
    R(t) - R(t-p) = p/W * (latest - then), and ``then`` is about the rate read a window ago. A step in the
    arrivals is then seen whole one period after it, not over a window. None without a rate a period and a window
    back, or where periods are not shorter than the window (each rate is then the latest already)."""
    if len(history) < 2:
        return None
    (t1, r1), (tp, rp) = history[-1], history[-2]
    period = t1 - tp
    if not 0 < period < window_seconds:
        return None
    tw, rw = min(history[:-1], key=lambda point: abs(point[0] - (t1 - window_seconds)))
    if abs(tw - (t1 - window_seconds)) > period / 2:
        return None
    # The requests the window gained, against the chance variation of two periods' arrivals: the difference is
    # read x W/p, and a noisy one would buy replicas for nothing. Poisson's at least; real traffic is burstier
    # (a conversation trace's requests come in bunches), so where the history holds enough earlier gains, their
    # spread measured is the noise when it is the larger.
    gained = (r1 - rp) * window_seconds
    if gained < STEP_SIGMAS * arrivals_noise(history[:-1], window_seconds, period, max(r1, rp)):
        return None
    return max(0.0, rw + window_seconds / period * (r1 - rp))


def arrivals_noise(history: list[tuple[float, float]], window_seconds: float, period: float, rps: float) -> float:
    """The standard deviation of the requests a window slid on by one period gains, (R(t) - R(t-p)) x W: Poisson's
    for ``rps`` over two periods, or the root mean square of the gains the history (time, rate) shows between
    rates read a period apart, where it holds at least ``NOISE_SAMPLES`` of them and that is larger."""
    poisson = math.sqrt(2.0 * rps * period)
    gains = [((r1 - r0) * window_seconds) ** 2 for (t0, r0), (t1, r1) in zip(history, history[1:])
             if abs((t1 - t0) - period) <= period / 2]
    if len(gains) < NOISE_SAMPLES:
        return poisson
    return max(poisson, math.sqrt(sum(gains) / len(gains)))
