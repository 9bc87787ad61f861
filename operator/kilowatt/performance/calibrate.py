"""Fit the capacity model's Calibration on published serving measurements, and score it.

Measurements: vLLM ``benchmark_serving`` runs in ../shared/data/vllm_serving_4090_vs_h100pcie.csv (200 ShareGPT
prompts, Poisson arrivals). ``fit`` replays every run on the serving engine (``kilowatt.performance.engine``, the
same engine the twin serves with and the planner's SLO capacity is measured on): 200 requests with ShareGPT-like
lengths at the run's mean lengths, Poisson arrivals at the offered rate, and compares the achieved throughput
(requests / makespan, a finite run as the benchmark measures it), mean TTFT and mean TPOT.
The analytic model (``CapacityModel.at_load``, a fast first guess) is scored by ``score``.
Power: the ML.ENERGY v3 file gives average power against batch; we fit the exponent of
``power = idle + (board - idle) * utilisation ** exponent``.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from kilowatt.performance.capacity import Calibration, CapacityModel, TokenMix
from kilowatt.performance.engine import EngineTimes, Ledger, Replica
from kilowatt.performance.hardware import gpu_by_name
from kilowatt.performance.shapes import KNOWN_MODELS

PROMPTS_PER_RUN = 200
FITTED = (
    "launch_seconds",
    "bandwidth_efficiency",
    "flops_efficiency",
    "per_sequence_seconds",
    "allreduce_pcie_seconds",
    "ttft_overhead_seconds",
    "ttft_tail",
    "tpot_tail",
    "activation_fraction",
    "tensor_parallel_efficiency",
)
# GPU types whose measurement host gets its own fitted step overhead.
PER_GPU_OVERHEAD = ("RTX-4090", "H100-PCIe")
BOUNDS = {
    "launch_seconds": (0.0, 0.01),
    "bandwidth_efficiency": (0.3, 1.0),
    "flops_efficiency": (0.05, 0.9),
    "per_sequence_seconds": (0.0, 0.002),
    "allreduce_pcie_seconds": (0.0, 0.002),
    "ttft_overhead_seconds": (0.0, 0.2),
    "ttft_tail": (1.0, 6.0),
    "tpot_tail": (1.0, 2.0),
    "activation_fraction": (0.0, 0.3),
    "tensor_parallel_efficiency": (0.5, 1.0),
}


@dataclass(frozen=True)
class Measurement:
    model_id: str
    gpu: str
    gpus: int
    offered_rps: float
    achieved_rps: float
    input_tokens: float
    output_tokens: float
    ttft_mean_s: float
    ttft_p99_s: float
    tpot_mean_s: float
    tpot_p99_s: float

    @property
    def config(self) -> tuple[str, str, int]:
        return (self.model_id, self.gpu, self.gpus)


def read_measurements(path: str | Path) -> list[Measurement]:
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            completed = float(row["completed"])
            out.append(
                Measurement(
                    model_id=row["model_id"],
                    gpu=gpu_by_name(row["gpu_name"]).model,
                    gpus=int(row["gpu_count"]),
                    offered_rps=float(row["request_rate"]),
                    achieved_rps=float(row["request_throughput"]),
                    input_tokens=float(row["total_input_tokens"]) / completed,
                    output_tokens=float(row["total_output_tokens"]) / completed,
                    ttft_mean_s=float(row["mean_ttft_ms"]) / 1000.0,
                    ttft_p99_s=float(row["p99_ttft_ms"]) / 1000.0,
                    tpot_mean_s=float(row["mean_tpot_ms"]) / 1000.0,
                    tpot_p99_s=float(row["p99_tpot_ms"]) / 1000.0,
                )
            )
    return out


def _model(m: Measurement, calibration: Calibration) -> CapacityModel:
    return CapacityModel(KNOWN_MODELS[m.model_id], gpu_by_name(m.gpu), m.gpus, calibration)


def predicted_run_throughput(model: CapacityModel, offered_rps: float, mix: TokenMix) -> float:
    """Achieved request throughput of a finite benchmark run of PROMPTS_PER_RUN prompts at ``offered_rps``."""
    saturation = model.saturation_rps(mix)
    if saturation <= 0:
        return 0.0
    rate = min(offered_rps, 0.98 * saturation)
    point = model.at_load(rate, mix, 50.0)
    last_request = point.ttft_mean_seconds + mix.output_tokens * point.tpot_mean_seconds
    return PROMPTS_PER_RUN / (PROMPTS_PER_RUN / rate + last_request)


def saturation_by_config(data: list[Measurement]) -> dict[tuple[str, str, int], float]:
    best: dict[tuple[str, str, int], float] = defaultdict(float)
    for m in data:
        best[m.config] = max(best[m.config], m.achieved_rps)
    return best


def below_saturation(m: Measurement, saturation: dict[tuple[str, str, int], float]) -> bool:
    return m.offered_rps <= 0.75 * saturation[m.config]


@dataclass
class Errors:
    """Absolute percentage errors, per quantity, as lists (one entry per measured configuration or row)."""

    throughput: list[float]
    tpot: list[float]
    ttft: list[float]

    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) if v else math.nan for k, v in vars(self).items()}


def score(data: list[Measurement], calibration: Calibration) -> Errors:
    saturation = saturation_by_config(data)
    errors = Errors([], [], [])
    peak_rows = {}
    for m in data:
        if m.achieved_rps == saturation[m.config]:
            peak_rows[m.config] = m
    for m in peak_rows.values():
        mix = TokenMix(m.input_tokens, m.output_tokens)
        got = predicted_run_throughput(_model(m, calibration), m.offered_rps, mix)
        errors.throughput.append(abs(got - m.achieved_rps) / m.achieved_rps)
    for m in data:
        if not below_saturation(m, saturation):
            continue
        point = _model(m, calibration).at_load(m.offered_rps, TokenMix(m.input_tokens, m.output_tokens), 50.0)
        if point.saturated:
            errors.tpot.append(1.0)
            errors.ttft.append(1.0)
            continue
        errors.tpot.append(abs(point.tpot_mean_seconds - m.tpot_mean_s) / m.tpot_mean_s)
        if not ttft_artefact(m):
            errors.ttft.append(abs(point.ttft_mean_seconds - m.ttft_mean_s) / m.ttft_mean_s)
    return errors


def _apply(theta: np.ndarray, base: Calibration, source: str | None = None) -> Calibration:
    values = [float(x) for x in theta]
    named = dict(zip(FITTED, values[: len(FITTED)]))
    per_gpu = tuple(zip(PER_GPU_OVERHEAD, values[len(FITTED):]))
    # GPU types without measurements get the mean of the measured hosts' overheads.
    generic = sum(x for _, x in per_gpu) / len(per_gpu)
    return replace(base, **named, step_overhead_by_gpu=per_gpu, step_overhead_seconds=generic,
                   source=source or base.source)


def _residuals(theta: np.ndarray, data: list[Measurement], base: Calibration) -> np.ndarray:
    calibration = _apply(theta, base)
    saturation = saturation_by_config(data)
    out: list[float] = []
    for m in data:
        model = _model(m, calibration)
        mix = TokenMix(m.input_tokens, m.output_tokens)
        if m.achieved_rps == saturation[m.config]:
            got = predicted_run_throughput(model, m.offered_rps, mix)
            out.append(2.0 * math.log(max(got, 1e-3) / m.achieved_rps))
        if below_saturation(m, saturation):
            p50 = model.at_load(m.offered_rps, mix, 50.0)
            p99 = model.at_load(m.offered_rps, mix, 99.0)
            if p50.saturated:
                out.extend([3.0, 3.0, 3.0, 3.0])
                continue
            out.append(2.0 * math.log(p50.tpot_mean_seconds / m.tpot_mean_s))
            out.append(0.5 * math.log(p99.tpot_p_seconds / m.tpot_p99_s))
            if not ttft_artefact(m):
                out.append(math.log(p50.ttft_mean_seconds / m.ttft_mean_s))
                out.append(0.5 * math.log(p99.ttft_p_seconds / m.ttft_p99_s))
    return np.asarray(out)


def ttft_artefact(m: Measurement) -> bool:
    """A mean TTFT of seconds at 1-4 req/s, far below saturation, is warm-up (the 4090 TP runs show 4 s at
    1 req/s and 0.1 s at 8 req/s): its TPOT and throughput stand, its TTFT is not a latency to fit."""
    return m.offered_rps <= 4.0 and m.ttft_mean_s > 1.0 and m.tpot_mean_s < 0.1


def usable(data: list[Measurement]) -> list[Measurement]:
    """Rows for models whose shape we know (all of them in the shipped file)."""
    return [m for m in data if m.model_id in KNOWN_MODELS]


def fit(data: list[Measurement], base: Calibration | None = None, source: str = "fit") -> Calibration:
    base = base or Calibration()
    data = usable(data)
    x0 = np.array([getattr(base, name) for name in FITTED] + [base.step_overhead_for(g) for g in PER_GPU_OVERHEAD])
    lower = np.array([BOUNDS[n][0] for n in FITTED] + [0.0] * len(PER_GPU_OVERHEAD))
    upper = np.array([BOUNDS[n][1] for n in FITTED] + [0.03] * len(PER_GPU_OVERHEAD))
    result = least_squares(_residuals, np.clip(x0, lower, upper), bounds=(lower, upper), args=(data, base))
    return _apply(result.x, base, source)


# What the engine replay fits (the analytic model's tails are not the engine's).
ENGINE_FITTED = tuple(n for n in FITTED if n not in ("ttft_tail", "tpot_tail"))
SHAREGPT_SIGMA = 0.8  # log-normal spread of ShareGPT's prompt and answer lengths (coefficient of variation ~0.95)


def sharegpt_lengths(prompts: int, input_mean: float, output_mean: float, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths like benchmark_serving's ShareGPT sample (prompts and answers of 4-1024 tokens,
    log-normally spread), scaled to the run's measured means."""
    rng = np.random.default_rng(seed)

    def draw(mean: float) -> np.ndarray:
        x = np.clip(rng.lognormal(0.0, SHAREGPT_SIGMA, prompts), 0.02, 5.0)
        return np.maximum(1, np.round(x * mean / x.mean())).astype(np.int64)

    return draw(input_mean), draw(output_mean)


@dataclass(frozen=True)
class Replayed:
    throughput_rps: float
    ttft_mean_s: float
    tpot_mean_s: float


def replay(m: Measurement, calibration: Calibration, seed: int = 0, prompts: int = PROMPTS_PER_RUN) -> Replayed | None:
    """One benchmark run replayed on the serving engine; None when the model does not fit the GPUs."""
    model = _model(m, calibration)
    if not model.fits():
        return None
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / m.offered_rps, prompts))
    arrival -= arrival[0]
    # Poisson gaps, stretched so the run's mean rate is exactly the offered one (as the benchmark's target).
    arrival *= (prompts - 1) / m.offered_rps / arrival[-1]
    inputs, outputs = sharegpt_lengths(prompts, m.input_tokens, m.output_tokens, seed)
    ledger = Ledger(prompts)
    Replica(EngineTimes.of(model), 0, 0.0, m.gpus).run(list(range(prompts)), arrival, inputs, outputs, math.inf,
                                                       ledger)
    makespan = float(np.nanmax(ledger.finish_s))
    return Replayed(prompts / makespan, float(np.nanmean(ledger.ttft_s)), float(np.nanmean(ledger.tpot_s)))


def replay_errors(m: Measurement, got: Replayed) -> dict[str, float]:
    """Relative errors of one replayed run; no TTFT error where the measured TTFT is warm-up (``ttft_artefact``)."""
    out = {"throughput": abs(got.throughput_rps - m.achieved_rps) / m.achieved_rps,
           "tpot": abs(got.tpot_mean_s - m.tpot_mean_s) / m.tpot_mean_s}
    if not ttft_artefact(m):
        out["ttft"] = abs(got.ttft_mean_s - m.ttft_mean_s) / m.ttft_mean_s
    return out


def _engine_residuals(theta: np.ndarray, data: list[Measurement], base: Calibration) -> np.ndarray:
    calibration = _apply_engine(theta, base)
    out: list[float] = []
    for m in data:
        got = replay(m, calibration)
        if got is None:
            out.extend([3.0, 3.0, 3.0])
            continue
        out.append(math.log(got.throughput_rps / m.achieved_rps))
        out.append(math.log(got.tpot_mean_s / m.tpot_mean_s))
        out.append(0.0 if ttft_artefact(m) else 0.7 * math.log(got.ttft_mean_s / m.ttft_mean_s))
    return np.asarray(out)


def _apply_engine(theta: np.ndarray, base: Calibration, source: str | None = None) -> Calibration:
    values = [float(x) for x in theta]
    n, g = len(ENGINE_FITTED), len(PER_GPU_OVERHEAD)
    named = dict(zip(ENGINE_FITTED, values[:n]))
    per_gpu = tuple(zip(PER_GPU_OVERHEAD, values[n:n + g]))
    # All-reduce rates are fitted in GB/s (the optimiser's scale); stored in bytes/s.
    allreduce = tuple((gpu, x * 1e9) for gpu, x in zip(PER_GPU_OVERHEAD, values[n + g:]))
    generic = sum(x for _, x in per_gpu) / len(per_gpu)
    return replace(base, **named, step_overhead_by_gpu=per_gpu, step_overhead_seconds=generic,
                   allreduce_bytes_per_second_by_gpu=allreduce, source=source or base.source)


def fit_engine(data: list[Measurement], base: Calibration | None = None, source: str = "fit") -> Calibration:
    """The calibration under which the serving engine best replays the measured runs (log errors of throughput,
    mean TPOT and mean TTFT, least squares with HiGHS-free scipy ``least_squares``, finite differences wide enough
    to step over the engine's integer steps)."""
    base = base or default_calibration_for_fit()
    data = usable(data)
    x0 = np.array([getattr(base, n) for n in ENGINE_FITTED] + [base.step_overhead_for(g) for g in PER_GPU_OVERHEAD]
                  + [base.allreduce_bytes_per_second_for(g, False) / 1e9 for g in PER_GPU_OVERHEAD])
    lower = np.array([BOUNDS[n][0] for n in ENGINE_FITTED] + [0.0] * len(PER_GPU_OVERHEAD)
                     + [0.5] * len(PER_GPU_OVERHEAD))
    upper = np.array([BOUNDS[n][1] for n in ENGINE_FITTED] + [0.03] * len(PER_GPU_OVERHEAD)
                     + [400.0] * len(PER_GPU_OVERHEAD))
    result = least_squares(_engine_residuals, np.clip(x0, lower, upper), bounds=(lower, upper), args=(data, base),
                           diff_step=0.03, x_scale="jac", loss="soft_l1", f_scale=0.3, max_nfev=200)
    return _apply_engine(result.x, base, source)


def default_calibration_for_fit() -> Calibration:
    from kilowatt.performance.capacity import default_calibration

    return default_calibration()


def fit_power_exponent(mlenergy_csv: str | Path, board_watts: float = 700.0) -> float:
    """Fit ``(P - idle) / (board - idle) = utilisation ** e`` on ML.ENERGY's H100 rows (utilisation: throughput
    over the configuration's highest measured throughput)."""
    groups: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    with open(mlenergy_csv, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if not row["gpu_model"].startswith("H100") or row["num_gpus"] != "1":
                continue
            key = (row["model_id"], row["task"], row["num_gpus"])
            groups[key].append((float(row["output_throughput_tokens_per_sec"]), float(row["avg_power_watts_per_gpu"])))
    idle = 0.15 * board_watts
    xs, ys = [], []
    for points in groups.values():
        if len(points) < 3:
            continue
        peak = max(t for t, _ in points)
        for throughput, watts in points:
            u = throughput / peak
            share = (watts - idle) / (board_watts - idle)
            if 0.0 < u < 1.0 and 0.0 < share < 1.0:
                xs.append(math.log(u))
                ys.append(math.log(share))
    x, y = np.asarray(xs), np.asarray(ys)
    return float((x @ y) / (x @ x))  # least squares through the origin in log-log space


def leave_one_model_out(data: list[Measurement], base: Calibration | None = None) -> dict[str, dict[str, float]]:
    """For each model: fit on the others, score on it. Returns model -> median errors."""
    data = usable(data)
    out = {}
    for model_id in sorted({m.model_id for m in data}):
        train = [m for m in data if m.model_id != model_id]
        test = [m for m in data if m.model_id == model_id]
        calibration = fit(train, base, source=f"fit without {model_id}")
        out[model_id] = score(test, calibration).medians()
    return out


def fitted_fields() -> list[str]:
    return [f.name for f in fields(Calibration) if f.name in FITTED]
