"""Traces and prices for the twin: per-request CSVs, rate curves, hourly price files, Prometheus range exports.

Formats (those of ../shared/data; users bring their own in the same shape):

- per-request trace: ``timestamp_s,input_tokens,output_tokens`` (Azure LLM inference trace 2023);
- rate curve: ``window_start_s,requests_per_s,...`` at any fixed resolution (ServeGen's 10-minute windows);
- prices: ``datetime_utc,region,price_usd_per_mwh`` hourly (green-dcc's grid prices), read as USD/kWh;
- a Prometheus range-query export (``/api/v1/query_range`` JSON) of a request rate, read as a rate curve.

A day-long load is built by shaping the per-request trace with a day curve: arrivals are a Poisson process whose
rate follows the curve (normalised to mean 1, times the trace's own mean rate, times ``scale``), and each
arrival's prompt and output length is drawn from the trace's requests. Without a curve and at scale 1 the trace
is replayed exactly.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from kilowatt.economics.prices import PriceSeries

KWH_PER_MWH = 1000.0
# A run first plays this much of the trace's end, unjudged (Workload.with_lead_in; kilowatt.twin.simulate).
LEAD_IN_SECONDS = 3600.0


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival: seconds from the start, prompt and output tokens."""

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    duration_s: float
    label: str = ""

    def __len__(self) -> int:
        return len(self.arrival_s)

    def with_lead_in(self, seconds: float, step_s: float) -> tuple[Workload, float]:
        """The workload with its own last ``seconds`` (all of it when it is shorter; whole ``step_s`` either way)
        played before it: what a service that had been running served before the trace began, taken to look like
        the trace's end (a day's curve wraps around midnight; a trace of an hour or less stands for the hour before
        it). Returns the longer workload and where the trace itself begins in it."""
        lead = float(np.floor(min(seconds, self.duration_s) / step_s) * step_s) if step_s > 0 else 0.0
        if lead <= 0 or not len(self):
            return self, 0.0
        lo = int(np.searchsorted(self.arrival_s, self.duration_s - lead, side="left"))
        return Workload(np.concatenate([self.arrival_s[lo:] - (self.duration_s - lead), self.arrival_s + lead]),
                        np.concatenate([self.input_tokens[lo:], self.input_tokens]),
                        np.concatenate([self.output_tokens[lo:], self.output_tokens]),
                        self.duration_s + lead, self.label), lead

    def rate_per_window(self, window_s: float) -> np.ndarray:
        """Arrivals per second in consecutive windows of ``window_s`` over the whole duration."""
        bins = int(np.ceil(self.duration_s / window_s)) or 1
        counts = np.bincount(np.minimum((self.arrival_s // window_s).astype(np.int64), bins - 1), minlength=bins)
        return counts / window_s


class TraceError(ValueError):
    """A file that is not in the expected format; the message names the file, the row and what was expected."""


def _rows(path: str | Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    path = Path(path)
    if not path.exists():
        raise TraceError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(required)}")
        rows = list(reader)
    if not rows:
        raise TraceError(f"{path}: no rows")
    return rows


def read_requests(path: str | Path) -> Workload:
    rows = _rows(path, ("timestamp_s", "input_tokens", "output_tokens"))
    try:
        data = np.array([[float(r["timestamp_s"]), float(r["input_tokens"]), float(r["output_tokens"])] for r in rows])
    except ValueError as exc:
        raise TraceError(f"{path}: a value is not a number ({exc})") from None
    data = data[np.argsort(data[:, 0], kind="stable")]
    arrival = data[:, 0] - data[0, 0]
    return Workload(arrival, np.maximum(data[:, 1], 1.0), np.maximum(data[:, 2], 1.0),
                    float(arrival[-1]) + 1.0, Path(path).name)


def read_rate_curve(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(window start seconds, requests per second) from a CSV rate curve or a Prometheus range-query export."""
    path = Path(path)
    if path.suffix == ".json":
        return read_prometheus_range(path)
    rows = _rows(path, ("window_start_s", "requests_per_s"))
    starts = np.array([float(r["window_start_s"]) for r in rows])
    rates = np.array([float(r["requests_per_s"]) for r in rows])
    return starts - starts[0], rates


def read_prometheus_range(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A ``query_range`` result (matrix): the series are summed, e.g. ``sum(rate(vllm:request_success_total[5m]))``."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        series = doc["data"]["result"] if "data" in doc else doc["result"]
        total: dict[float, float] = {}
        for s in series:
            for t, v in s["values"]:
                total[float(t)] = total.get(float(t), 0.0) + float(v)
    except (KeyError, TypeError, ValueError) as exc:
        raise TraceError(f"{path}: not a Prometheus query_range export ({exc})") from None
    if not total:
        raise TraceError(f"{path}: the export has no samples")
    times = np.array(sorted(total))
    return times - times[0], np.array([total[t] for t in times])


def shaped(trace: Workload, curve: tuple[np.ndarray, np.ndarray] | None, scale: float = 1.0,
           duration_s: float | None = None, seed: int = 0) -> Workload:
    """The trace's request sizes, arriving at the curve's shape (or the trace's own, per minute) times ``scale``."""
    if scale <= 0:
        raise ValueError(f"--scale must be positive, got {scale}")
    if curve is None and scale == 1.0 and duration_s is None:
        return trace
    rng = np.random.default_rng(seed)
    mean_rate = len(trace) / trace.duration_s
    if curve is None:
        window = 60.0
        starts = np.arange(0.0, trace.duration_s, window)
        rates = trace.rate_per_window(window)[: len(starts)]
    else:
        starts, rates = curve
        used = starts < (duration_s or np.inf)  # normalise over the part of the curve the run uses
        rates = rates / max(float(np.mean(rates[used])), 1e-12) * mean_rate
    rates = np.maximum(rates, 0.0) * scale
    step = float(starts[1] - starts[0]) if len(starts) > 1 else trace.duration_s
    end = float(starts[-1] + step)
    duration_s = duration_s or (end if curve is not None else trace.duration_s)
    arrivals = []
    t0 = 0.0
    while t0 < duration_s:
        # The curve repeats if the run is longer than it (a day curve over several days).
        for start, rate in zip(starts, rates):
            lo = t0 + start
            if lo >= duration_s:
                break
            hi = min(lo + step, duration_s)
            n = rng.poisson(rate * (hi - lo))
            arrivals.append(np.sort(rng.uniform(lo, hi, n)))
        t0 += end
    arrival = np.concatenate(arrivals) if arrivals else np.zeros(0)
    pick = rng.integers(0, len(trace), len(arrival))
    label = f"{trace.label} ×{scale:g}" + (" shaped by a rate curve" if curve is not None else "")
    return Workload(arrival, trace.input_tokens[pick], trace.output_tokens[pick], float(duration_s), label)


def read_prices(path: str | Path, region: str, start: datetime, duration_s: float,
                floor_usd_per_kwh: float | None = 0.0) -> PriceSeries:
    """Hourly prices of one region from ``start`` for ``duration_s`` (and the lead-in's hour before it), in
    USD/kWh (the file is USD/MWh).

    Wholesale prices go negative; ``floor_usd_per_kwh`` (default 0) clips them, since a site buying at retail
    is not paid to draw power and a planner must not add replicas to burn it."""
    rows = _rows(path, ("datetime_utc", "region", "price_usd_per_mwh"))
    regions = sorted({r["region"] for r in rows})
    if region not in regions:
        raise TraceError(f"{path}: no region {region!r}; regions: {', '.join(regions)}")
    series = []
    for r in rows:
        if r["region"] != region:
            continue
        at = datetime.fromisoformat(r["datetime_utc"]).replace(tzinfo=timezone.utc)
        price = float(r["price_usd_per_mwh"]) / KWH_PER_MWH
        if floor_usd_per_kwh is not None:
            price = max(price, floor_usd_per_kwh)
        series.append((at, price))
    series.sort()
    end = start + timedelta(seconds=duration_s)
    # From the hour that holds ``start - LEAD_IN_SECONDS``: a run's lead-in is priced at its own hours.
    window = [(t, p) for t, p in series if start - timedelta(hours=1, seconds=LEAD_IN_SECONDS) < t <= end]
    if not window:
        raise TraceError(f"{path}: no {region} prices between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC "
                         f"(the file covers {series[0][0]:%Y-%m-%d} to {series[-1][0]:%Y-%m-%d})")
    return PriceSeries(tuple(t for t, _ in window), tuple(p for _, p in window), f"{region} wholesale")
