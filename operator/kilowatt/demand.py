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

Some traffic swings faster than a replica starts: the code trace bursts to ~70 req/s for a minute or two every few
minutes and is idle between. No estimate of the rate now can follow that; what can be done is to hold, in the
lulls, for the rise that keeps coming back (``recurring``: the rise the last hour's rates made within a start-up,
at the SLO's percentile, at most the hour's peak). The Decider scales that rise by the share of its burst
headroom the error budget leaves, so a service that meets its SLO with room to spare gives it up with the headroom.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections import deque
from dataclasses import dataclass, field

import numpy as np

STEP_SIGMAS = 2.0  # a rise read as a step in the arrivals stands this many standard deviations above chance
NOISE_SAMPLES = 4  # earlier gains a measured spread of the arrivals needs (fewer: Poisson's is used)
MAX_HISTORY = 256  # rates kept per service, whatever the window: a bound, not a setting
RECURRING_SECONDS = 3600.0  # how far back a rise that came within a start-up is remembered (``recurring``)
RECURRING_MIN_RATES = 20  # rates read over that span before it is believed (5 minutes of 15-s periods)
RECURRING_MAX_RATES = 480  # a bound on what is kept (an hour of 7.5-s periods): 7.5 kB a service
RECURRING_REFRESH_SECONDS = 60.0  # the rise is worked out again this often (an hour's quantile moves slowly)
# ``reach``: the rise that followed moments at this share of the latest rate or above tells what can follow now, and
# REACH_MIN_MOMENTS such moments are needed before it is believed (fewer: no reach, the estimate stands).
REACH_LEVEL_SHARE = 0.8
REACH_MIN_MOMENTS = 5
# ... and only for traffic that comes in bursts: the rise within a start-up (at the SLO's percentile) at least this
# share of the hour's mean rate. A smooth day's rises within two minutes are a few per cent; there a step read in the
# arrivals is a ramp's start, and the estimate stands (capped on a day of ServeGen's curve, the twin's (b) cost 1.4 %
# more).
REACH_BURSTY_RISE_SHARE = 1.0


@dataclass
class _Rates:
    """An hour of (time, rate) as two flat arrays: a thousand services keep 240 rates each in ~4 MB, not ~25 MB
    of tuples."""

    times: array = field(default_factory=lambda: array("d"))
    rates: array = field(default_factory=lambda: array("d"))
    rise_at: float = -math.inf  # when ``rise`` was worked out, and for which start-up and percentile
    rise_for: tuple[float, float] = (0.0, 0.0)
    rise: float | None = None
    # The moments the rise was worked out over (those whose start-up has passed): their rates, and how far the
    # rate rose within a start-up after each.
    judged_rates: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    judged_rises: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def append(self, t: float, rps: float) -> None:
        self.times.append(t)
        self.rates.append(rps)
        old = bisect.bisect_left(self.times, t - RECURRING_SECONDS)
        old = max(old, len(self.times) - RECURRING_MAX_RATES)
        if old > 0:
            del self.times[:old], self.rates[:old]


@dataclass
class DemandEstimator:
    smoothing: float = 0.3
    history_length: int = 8
    max_growth: float = 2.0
    evidence_requests: float = 30.0
    _ewma: dict[str, float] = field(default_factory=dict)
    _history: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    _long: dict[str, _Rates] = field(default_factory=dict)

    def update(self, key: str, now_seconds: float, rps: float, lead_seconds: float,
               requests: float | None = None, window_seconds: float | None = None) -> float:
        """``requests``: how many requests the rate was read from (None: enough to trust it);
        ``window_seconds``: the window the rate is read over (None: unknown; the history is then the last
        ``history_length`` rates)."""
        confidence = 1.0 if requests is None else min(1.0, max(0.0, requests) / self.evidence_requests)
        self._long.setdefault(key, _Rates()).append(now_seconds, rps)
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

    def recurring(self, key: str, lead_seconds: float, percentile: float, share: float = 1.0) -> float | None:
        """The rate that may come back before a replica asked for now could serve: the latest rate plus the rise
        the last hour's rates made within a start-up (``lead_seconds``) of a moment, at the SLO's percentile of
        those moments — at most the hour's highest rate (a new high is the estimate's to follow, not this).
        Traffic that comes in bursts shorter than a start-up (the code trace: 70 req/s for a minute or two,
        every few minutes, idle between) cannot be followed, only held for; a smooth day's rises within two
        minutes are a few per cent and add little. None before ``RECURRING_MIN_RATES`` rates."""
        series = self._risen(key, lead_seconds, percentile)
        if series is None:
            return None
        return min(series.rates[-1] + share * series.rise, max(series.rates))

    def reach(self, key: str, lead_seconds: float, percentile: float) -> float | None:
        """The most a replica asked for now can be needed for, on the last hour's evidence: the hour's highest
        rate, or the latest rate plus the rise that followed, within a start-up (``lead_seconds``), the hour's
        moments at about this rate or above (REACH_LEVEL_SHARE of it), at the SLO's percentile, where that is
        higher. A step read in the arrivals (``latest_arrivals``: a window's gain x W/p) of a burst shorter than a
        start-up reads far above anything the windowed rate has shown (the code trace's bursts read 90-112 req/s
        where a minute's rate never passed 84, and the hour's moments at burst level were followed by falls):
        replicas for it come up after it ended and are held for a scale-down window. On a ramp the moments at
        this level are the ramp's own, and its rise within a start-up stays in reach. A rise beyond the reach is
        planned for once the rate itself shows it (a new high lifts the reach with it). None before
        ``RECURRING_MIN_RATES`` rates, with fewer than REACH_MIN_MOMENTS moments at this level, and for traffic
        that does not come in bursts (REACH_BURSTY_RISE_SHARE)."""
        series = self._risen(key, lead_seconds, percentile)
        if series is None or series.rise < REACH_BURSTY_RISE_SHARE * float(np.frombuffer(series.rates).mean()):
            return None
        latest = series.rates[-1]
        rises = series.judged_rises[series.judged_rates >= REACH_LEVEL_SHARE * latest]
        if len(rises) < REACH_MIN_MOMENTS:
            return None
        return max(max(series.rates), latest + _at_percentile(rises, percentile))

    def _risen(self, key: str, lead_seconds: float, percentile: float) -> _Rates | None:
        """The service's hour of rates with its rise within a start-up worked out (at most once a
        RECURRING_REFRESH_SECONDS), or None where there is not history enough for it."""
        series = self._long.get(key)
        if series is None or len(series.rates) < RECURRING_MIN_RATES:
            return None
        now = series.times[-1]
        if series.rise_for != (lead_seconds, percentile) or now - series.rise_at >= RECURRING_REFRESH_SECONDS:
            judged_rates, judged_rises = _rises(np.frombuffer(series.times), np.frombuffer(series.rates), lead_seconds)
            series.rise = None if len(judged_rises) < RECURRING_MIN_RATES // 2 else \
                _at_percentile(judged_rises, percentile)
            # Kept until the next refresh, a thousand services' worth: float32 (~2 kB a service) is precision
            # enough for req/s.
            series.judged_rates, series.judged_rises = judged_rates.astype(np.float32), judged_rises.astype(np.float32)
            series.rise_at, series.rise_for = now, (lead_seconds, percentile)
        return None if series.rise is None else series

    def forget(self, key: str) -> None:
        self._ewma.pop(key, None)
        self._history.pop(key, None)
        self._long.pop(key, None)


def _at_percentile(values: np.ndarray, percentile: float) -> float:
    """The ``percentile`` (0-100) of ``values``, one of them (no interpolation between two moments)."""
    return float(np.quantile(values, min(1.0, max(0.0, percentile / 100.0)), method="inverted_cdf"))


def _rises(times: np.ndarray, rates: np.ndarray, lead_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Each moment whose start-up (``lead_seconds``) has all passed: its rate, and how far the rate rose within
    the start-up after it (at least 0)."""
    n = len(rates)
    index = np.arange(n)
    ahead = np.searchsorted(times, times + lead_seconds, side="right") - index - 1  # rates read within a start-up
    judged = (times + lead_seconds <= times[-1]) & (ahead > 0)
    if not judged.any():
        return np.zeros(0), np.zeros(0)
    highest = np.full(n, -np.inf)
    for d in range(1, min(int(ahead.max()), RECURRING_MAX_RATES) + 1):
        highest = np.where(ahead >= d, np.maximum(highest, rates[np.minimum(index + d, n - 1)]), highest)
    return rates[judged].copy(), np.maximum(0.0, highest[judged] - rates[judged])


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
