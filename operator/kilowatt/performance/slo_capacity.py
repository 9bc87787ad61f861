"""SLO capacity measured on the serving engine: the one number the planner and the twin share.

How many requests per second one replica serves with the p-th percentile TTFT and TPOT within the SLO depends on
the whole length distribution (a few long prompts stall everyone's decode; long answers fill the KV cache), on
chunked prefill, paged KV blocks and preemption. No closed form follows all of that, so kilowatt measures it on
the engine the twin serves with (``kilowatt.performance.engine``): once per (engine constants, length mix), a
latency curve — the replica's saturation throughput, then TTFT and TPOT percentiles at a ladder of Poisson rates
below it (the same arrival and length draws at every rate, scaled, so the curve is monotone and smooth). Any SLO,
percentile and online correction is then answered from the curve by interpolation, in microseconds.

A curve costs a few tenths of a second of CPU (``benchmarks/capacity_consistency.py`` records it). A
``CurveBook`` remembers curves for whoever plans: mean prompt and output lengths on a log grid (ratio
``MEAN_GRID``), a curve between grid points interpolated bilinearly in length at each share of saturation
(``CurveBook.interpolated``), so a service whose mean lengths wander from period to period reuses four curves instead of measuring new ones. The distribution's shape
(quantiles relative to the mean) is matched, not gridded: a curve measured for a shape whose every quantile is
within ``SHAPE_TOLERANCE`` of this one's is reused. A length histogram's quantiles wobble from period to period
around bucket bounds (vLLM's buckets are 1-2-5 wide); rounding each of nine quantiles on a grid turned that
wobble into a new curve most periods, matching turns it into none, and services with similar traffic share
curves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kilowatt.performance.capacity import TokenMix
from kilowatt.performance.engine import EngineTimes, Ledger, Replica
from kilowatt.performance.lengths import sample_lengths

# Offered load as a share of saturation; dense near the top, where SLO capacities usually sit.
RATE_FRACTIONS = (0.02, 0.2, 0.4, 0.55, 0.68, 0.78, 0.85, 0.9, 0.94, 0.97)
PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0)
REQUESTS = 2000  # per rate; the first WARMUP_SHARE are left out (the replica starts empty)
MEAN_GRID = 1.5  # mean lengths' grid (ratio between neighbours)
SHAPE_TOLERANCE = 1.5  # a measured shape is reused when each quantile / mean is within this factor of it
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

    def latency_at(self, rate_rps: float, percentile: float) -> tuple[float, float]:
        """(TTFT, TPOT) at ``percentile`` for an offered load, linear between the curve's rates (held at the
        ends: the lightest load's below it, the heaviest recorded above)."""
        if not self.rates_rps:
            return math.inf, math.inf
        return (float(np.interp(rate_rps, self.rates_rps, self.at(percentile, "ttft"))),
                float(np.interp(rate_rps, self.rates_rps, self.at(percentile, "tpot"))))

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
            return 0.0  # even 2 % of saturation misses: the SLO is out of reach for this replica and mix
        for i in range(1, len(rates)):
            if slack[i] < 0:
                share = slack[i - 1] / (slack[i - 1] - slack[i])
                return rates[i - 1] + share * (rates[i] - rates[i - 1])
        return rates[-1]


log = logging.getLogger(__name__)


STALE_VERSION_DAYS = 7  # another engine version's curves are removed when unused this long (CurveStore._prune)
_VERSION_DIR = re.compile(r"[0-9a-f]{16}")  # what _engine_version names a directory


def _engine_version() -> str:
    """What a curve is a function of besides its arguments: the engine's, the length sampler's and this module's
    source and numpy's random streams. Any change to them starts a fresh store."""
    from kilowatt.performance import engine, lengths

    digest = hashlib.sha256(np.__version__.encode())
    for module in (engine, lengths):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


class CurveStore:
    """Measured latency curves on disk: ``latency_curve`` is a pure function of its arguments (seeded draws, a
    deterministic engine), so a curve measured once on this machine, by any process, is read back instead of
    measured again — a restarted operator, the next ``kilowatt simulate``, the test suite. Results never depend
    on what the store holds: it memoises the measurement, not the CurveBook's choice of which mix to measure.

    ``KILOWATT_CURVE_CACHE``: the directory (default ``$XDG_CACHE_HOME/kilowatt/curves``, else
    ``~/.cache/kilowatt/curves``); ``off`` turns the store off. Keyed by the engine's version (``_engine_version``),
    so a change to the engine never reads a stale curve. A directory that cannot be written is used read-only,
    with one warning."""

    def __init__(self, root: Path) -> None:
        self.base = Path(root)
        self._root: Path | None = None  # base / the engine's version, worked out when a curve is first asked for
        self.read = 0  # curves read back instead of measured
        self._writable = True

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = self.base / _engine_version()
            self._prune()
        return self._root

    def _prune(self) -> None:
        """Mark this engine version's directory as in use (its time) and remove other versions' directories
        unused for STALE_VERSION_DAYS: every change to the engine starts a new directory, and an upgraded
        operator or CLI never reads the old ones again. One still in use elsewhere (another checkout, a rollback)
        is touched by whoever uses it, so kept."""
        try:
            if self._root.is_dir():
                os.utime(self._root)
            stale_before = time.time() - STALE_VERSION_DAYS * 86400.0
            for other in self.base.iterdir():
                if (other != self._root and other.is_dir() and _VERSION_DIR.fullmatch(other.name)
                        and other.stat().st_mtime < stale_before):
                    shutil.rmtree(other, ignore_errors=True)
                    log.info("removed latency curves of an engine version unused for %d days: %s",
                             STALE_VERSION_DAYS, other)
        except OSError:
            pass  # nothing there yet, or not ours to tidy: the store works without it

    @classmethod
    def default(cls) -> CurveStore | None:
        where = os.environ.get("KILOWATT_CURVE_CACHE", "")
        if where.lower() == "off":
            return None
        if not where:
            base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
            where = str(Path(base) / "kilowatt" / "curves")
        return cls(Path(where))

    @staticmethod
    def _key(times: EngineTimes, mix: TokenMix, requests: int, seed: int) -> str:
        return hashlib.sha256(repr((times, mix, requests, seed, RATE_FRACTIONS, PERCENTILES,
                                    WARMUP_SHARE)).encode()).hexdigest()

    def get(self, times: EngineTimes, mix: TokenMix, requests: int = REQUESTS, seed: int = SEED
            ) -> LatencyCurve | None:
        path = self.root / f"{self._key(times, mix, requests, seed)}.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            curve = LatencyCurve(float(raw["saturationRps"]), tuple(raw["ratesRps"]),
                                 tuple(map(tuple, raw["ttftSeconds"])), tuple(map(tuple, raw["tpotSeconds"])))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # not there, or unreadable (a torn or foreign file): measured again and rewritten
        self.read += 1
        return curve

    def put(self, times: EngineTimes, mix: TokenMix, curve: LatencyCurve, requests: int = REQUESTS,
            seed: int = SEED) -> None:
        if not self._writable:
            return
        body = json.dumps({"saturationRps": curve.saturation_rps, "ratesRps": list(curve.rates_rps),
                           "ttftSeconds": [list(r) for r in curve.ttft_s],
                           "tpotSeconds": [list(r) for r in curve.tpot_s]})
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed: a reader never sees half a curve, two writers of one key agree.
            with tempfile.NamedTemporaryFile("w", dir=self.root, suffix=".tmp", delete=False,
                                             encoding="utf-8") as f:
                f.write(body)
            os.replace(f.name, self.root / f"{self._key(times, mix, requests, seed)}.json")
        except OSError as exc:
            self._writable = False
            log.warning("latency curves are not kept on disk (%s: %s); set KILOWATT_CURVE_CACHE to a writable "
                        "directory, or to off", self.root, exc)


def _serve(times: EngineTimes, arrival: np.ndarray, inputs: np.ndarray, outputs: np.ndarray) -> Ledger:
    n = len(arrival)
    ledger = Ledger(n)
    # Python lists: the engine reads one element at a time, which costs several times more from numpy arrays.
    Replica(times, 0, 0.0, 1).run(list(range(n)), arrival.tolist(), inputs.tolist(), outputs.tolist(), math.inf,
                                  ledger)
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


def measured_capacity_rps(times: EngineTimes, prompts: np.ndarray, outputs: np.ndarray, ttft_seconds: float,
                          tpot_seconds: float, percentile: float, requests: int, rng: np.random.Generator) -> float:
    """The twin's answer to what ``CurveBook.capacity`` predicts: the highest Poisson rate at which the engine,
    serving ``requests`` lengths drawn from the real populations (the first ``WARMUP_SHARE`` left out), keeps the
    percentile TTFT and TPOT within the SLO; binary search from 1.2 x saturation down until the bracket is within 1 %
    of its top. 0 when the lightest probe (1 % of that bound) already misses."""
    pick = rng.integers(0, len(prompts), requests)
    p = np.maximum(1, prompts[pick]).astype(np.int64)
    o = np.maximum(1, outputs[pick]).astype(np.int64)
    gaps = np.cumsum(rng.exponential(1.0, requests))
    warm = int(WARMUP_SHARE * requests)

    def within(rate: float) -> bool:
        ledger = _serve(times, gaps / rate, p, o)
        ttft = ledger.ttft_s[warm:]
        tpot = ledger.tpot_s[warm:]
        tpot = tpot[~np.isnan(tpot)]
        return bool(np.percentile(ttft, percentile) <= ttft_seconds
                    and (not len(tpot) or np.percentile(tpot, percentile) <= tpot_seconds))

    high = 1.2 * saturation_rps(times, p, o)
    if high <= 0 or not within(0.01 * high):
        return 0.0
    low = 0.01 * high
    while high - low > 0.01 * high:
        mid = (low + high) / 2
        low, high = (mid, high) if within(mid) else (low, mid)
    return low


def twin_workers() -> int:
    """Processes a twin run measures curves on (``CurveBook.prefetch``): ``KILOWATT_CURVE_WORKERS`` if set, else
    the CPUs this process may use, at most 8."""
    given = os.environ.get("KILOWATT_CURVE_WORKERS", "")
    if given:
        try:
            return max(1, int(given))
        except ValueError:
            log.warning("KILOWATT_CURVE_WORKERS=%r is not a whole number; curves are measured in one process", given)
            return 1
    return max(1, min(8, len(os.sched_getaffinity(0))))


def _grid_neighbours(x: float, step: float) -> tuple[float, float, float]:
    """(lower grid point, upper grid point, weight of the upper) around x on a log grid; the weight linear in
    length between them (a prefill's time, and a decode's KV reads, grow linearly with tokens)."""
    x = max(x, 1.0)
    low = step ** math.floor(math.log(x) / math.log(step))
    high = low * step
    return low, high, min(1.0, max(0.0, (x - low) / (high - low)))


def _relative_shape(quantiles: tuple[float, ...], mean: float) -> tuple[float, ...]:
    """Quantiles relative to their mean (empty stays empty: the default shape)."""
    return tuple(max(q, 1e-9) / mean for q in quantiles)


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Two relative shapes within SHAPE_TOLERANCE at every level above the smallest (the shortest request seen
    decides nothing)."""
    if len(a) != len(b):
        return False
    limit = math.log(SHAPE_TOLERANCE)
    return all(abs(math.log(x / y)) <= limit for x, y in zip(a[1:], b[1:]))


class CurveBook:
    """Latency curves measured on the engine, remembered on the length-mix grid; owned by whoever plans (the
    operator's Decider, a twin run and its policies, a benchmark), never a module global. Bounded: cleared when
    it holds ``limit`` curves."""

    def __init__(self, limit: int = 2000, grid: bool = True, store: CurveStore | None | str = "default",
                 workers: int = 1) -> None:
        self.limit = limit
        # Processes ``prefetch`` measures curves on (1: none, everything in this process). The twin gives it the
        # machine's cores (twin_workers()); the operator measures in its own process, within its period's budget.
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        # Where measured curves are kept across processes (CurveStore; "default": CurveStore.default(), which the
        # KILOWATT_CURVE_CACHE variable can turn off; None: measure everything here).
        self.store = CurveStore.default() if store == "default" else store
        # grid False: every mix measured as it is (no mean grid, shapes matched exactly): for one fixed mix (the
        # lower bound's whole trace), where interpolating across a capacity cliff (a prompt length whose TTFT
        # crosses the SLO between two grid points) would overstate capacity.
        self.grid = grid
        # (engine constants, mean prompt, mean output) -> [(input shape, output shape, curve)], first measured first
        self._curves: dict[tuple[EngineTimes, float, float], list[tuple[tuple, tuple, LatencyCurve]]] = {}
        self._count = 0
        self.measured = 0  # curves added so far, measured here or read from the store

    @classmethod
    def for_twin(cls, grid: bool = True) -> CurveBook:
        """A twin run's book: the default store, curves measured on the machine's cores (twin_workers)."""
        return cls(grid=grid, workers=twin_workers())

    def curve(self, times: EngineTimes, mix: TokenMix) -> LatencyCurve:
        """The curve for ``mix`` (means exactly; a shape within SHAPE_TOLERANCE of a measured one reuses it)."""
        found = self._find(times, mix)
        if found is not None:
            return found
        curve = self.store.get(times, mix) if self.store is not None else None
        if curve is None:
            curve = latency_curve(times, mix)
            if self.store is not None:
                self.store.put(times, mix, curve)
        self._add(times, mix, curve)
        return curve

    def _add(self, times: EngineTimes, mix: TokenMix, curve: LatencyCurve) -> None:
        key = (times, mix.input_tokens, mix.output_tokens)
        if key not in self._curves and self._count >= self.limit:
            self._curves.clear()
            self._count = 0
        self._curves.setdefault(key, []).append((_relative_shape(mix.input_quantiles, mix.input_tokens),
                                                 _relative_shape(mix.output_quantiles, mix.output_tokens), curve))
        self._count += 1
        self.measured += 1

    def prefetch(self, wanted: Iterable[tuple[EngineTimes, TokenMix]]) -> int:
        """Measure at once, on ``workers`` processes, the grid curves ``interpolated`` would measure one after
        another for each of ``wanted`` (a planner's every pool and degree for one length mix). The same curves
        as measuring them here (a curve is a pure function of its arguments), in less wall time. Returns how
        many the workers measured (curves the store holds are read here; a single one is left to ``curve``); a
        no-op with one worker."""
        if self.workers <= 1:
            return 0
        missing: dict[tuple, tuple[EngineTimes, TokenMix]] = {}
        for times, mix in wanted:
            if times.kv_blocks <= 0:
                continue
            for _, corner in self._corners(mix):
                key = (times, corner.input_tokens, corner.output_tokens)
                # One per grid point: a second mix of another shape at the same point is measured when asked for.
                if key not in missing and self._find(times, corner) is None:
                    missing[key] = (times, corner)
        todo = []
        for times, corner in missing.values():
            curve = self.store.get(times, corner) if self.store is not None else None
            if curve is None:
                todo.append((times, corner))
            else:
                self._add(times, corner, curve)
        if len(todo) < 2:  # one curve is measured where it is asked for: no processes to wait on
            return 0
        if self._executor is None:
            # fork: the workers need nothing but the engine, already imported here, and start in milliseconds.
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"))
            weakref.finalize(self, self._executor.shutdown, wait=False, cancel_futures=True)
        times_list, corners = zip(*todo)
        for times, corner, curve in zip(times_list, corners, self._executor.map(latency_curve, times_list, corners)):
            if self.store is not None:
                self.store.put(times, corner, curve)
            self._add(times, corner, curve)
        return len(todo)

    def has(self, times: EngineTimes, mix: TokenMix) -> bool:
        """Whether every curve ``capacity``/``latency`` would read for ``mix`` is measured already."""
        return not self.missing(times, mix)

    def missing(self, times: EngineTimes, mix: TokenMix) -> list[TokenMix]:
        """The grid corners ``capacity``/``latency`` would read for ``mix`` that are not measured yet (``curve``
        measures one): a caller on a budget measures them one at a time."""
        if times.kv_blocks <= 0:
            return []
        return [corner for _, corner in self._corners(mix) if self._find(times, corner) is None]

    def _find(self, times: EngineTimes, mix: TokenMix) -> LatencyCurve | None:
        in_shape = _relative_shape(mix.input_quantiles, mix.input_tokens)
        out_shape = _relative_shape(mix.output_quantiles, mix.output_tokens)
        for i, o, curve in self._curves.get((times, mix.input_tokens, mix.output_tokens), ()):
            if (_close(i, in_shape) and _close(o, out_shape)) if self.grid else (i == in_shape and o == out_shape):
                return curve
        return None

    def _corners(self, mix: TokenMix) -> list[tuple[float, TokenMix]]:
        """The grid mixes around ``mix``, with their bilinear weights (without a grid, the mix itself)."""
        if not self.grid:
            return [(1.0, mix)]
        in_shape = _relative_shape(mix.input_quantiles, mix.input_tokens)
        out_shape = _relative_shape(mix.output_quantiles, mix.output_tokens)
        i_lo, i_hi, wi = _grid_neighbours(mix.input_tokens, MEAN_GRID)
        o_lo, o_hi, wo = _grid_neighbours(mix.output_tokens, MEAN_GRID)
        out = []
        for m_in, w_in in ((i_lo, 1.0 - wi), (i_hi, wi)):
            for m_out, w_out in ((o_lo, 1.0 - wo), (o_hi, wo)):
                if w_in * w_out <= 1e-9:
                    continue
                corner = TokenMix(float(f"{m_in:.4g}"), float(f"{m_out:.4g}"), tuple(r * m_in for r in in_shape),
                                  tuple(r * m_out for r in out_shape))
                out.append((w_in * w_out, corner))
        return out

    def interpolated(self, times: EngineTimes, mix: TokenMix) -> LatencyCurve:
        """The curve for ``mix`` between its grid corners: saturation interpolated bilinearly in length, and
        latency at each share of saturation (every curve is measured at the same RATE_FRACTIONS) the corners'
        latencies at that share, weighted alike. Interpolating at one absolute rate instead mixes a corner far
        below its saturation with one past it (a 0.5 s and a 16 s TTFT averaged into a latency neither shows);
        capacity and latency both read this one curve, so what the planner promises is what the correction
        compares observations with."""
        corners = [(weight, self.curve(times, corner)) for weight, corner in self._corners(mix)]
        if len(corners) == 1:
            return corners[0][1]
        if any(not c.rates_rps for _, c in corners):  # a corner that cannot serve at all (no KV room)
            return LatencyCurve(0.0, (), (), ())
        total = sum(w for w, _ in corners)
        saturation = sum(w * c.saturation_rps for w, c in corners) / total
        ttft = sum(w * np.asarray(c.ttft_s) for w, c in corners) / total
        tpot = sum(w * np.asarray(c.tpot_s) for w, c in corners) / total
        return LatencyCurve(saturation, tuple(f * saturation for f in RATE_FRACTIONS), tuple(map(tuple, ttft)),
                            tuple(map(tuple, tpot)))

    def capacity(self, times: EngineTimes, mix: TokenMix, ttft_seconds: float, tpot_seconds: float,
                 percentile: float, ttft_factor: float = 1.0, tpot_factor: float = 1.0) -> tuple[float, float]:
        """(req/s within the SLO, saturation req/s) of one replica for ``mix``, on the interpolated curve."""
        curve = self.interpolated(times, mix)
        return (curve.max_rps_within_slo(ttft_seconds, tpot_seconds, percentile, ttft_factor, tpot_factor),
                curve.saturation_rps)

    def latency(self, times: EngineTimes, mix: TokenMix, load_rps: float, percentile: float) -> tuple[float, float]:
        """(TTFT, TPOT) at ``percentile`` for an offered load, on the interpolated curve."""
        return self.interpolated(times, mix).latency_at(load_rps, percentile)
