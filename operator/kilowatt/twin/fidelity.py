"""Does the simulator reproduce the published vLLM measurements? Replays each benchmark run (200 prompts at the
mean measured lengths, Poisson arrivals at the offered rate) on one simulated replica and compares the achieved
request throughput, mean TTFT and mean TPOT with ../shared/data/vllm_serving_4090_vs_h100pcie.csv."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kilowatt.performance.calibrate import PROMPTS_PER_RUN, Measurement, read_measurements, ttft_artefact
from kilowatt.performance.capacity import CapacityModel, default_calibration
from kilowatt.performance.hardware import gpu_by_name
from kilowatt.performance.shapes import KNOWN_MODELS
from kilowatt.twin.engine import EngineTimes, Ledger, Replica


@dataclass(frozen=True)
class RunResult:
    measurement: Measurement
    throughput_rps: float
    ttft_mean_s: float
    tpot_mean_s: float

    def errors(self) -> dict[str, float]:
        """Relative errors; no TTFT error for runs whose measured TTFT is benchmark warm-up (see calibrate)."""
        m = self.measurement
        out = {"throughput": abs(self.throughput_rps - m.achieved_rps) / m.achieved_rps,
               "tpot": abs(self.tpot_mean_s - m.tpot_mean_s) / m.tpot_mean_s}
        if not ttft_artefact(m):
            out["ttft"] = abs(self.ttft_mean_s - m.ttft_mean_s) / m.ttft_mean_s
        return out


def simulate_run(m: Measurement, seed: int = 0, prompts: int = PROMPTS_PER_RUN) -> RunResult | None:
    shape = KNOWN_MODELS.get(m.model_id)
    if shape is None:
        return None
    model = CapacityModel(shape, gpu_by_name(m.gpu), m.gpus, default_calibration())
    if not model.fits():
        return None
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / m.offered_rps, prompts))
    arrival -= arrival[0]
    # Poisson gaps, stretched so the run's mean rate is exactly the offered one (as the benchmark's target).
    arrival *= (prompts - 1) / m.offered_rps / arrival[-1]
    inputs = np.full(prompts, round(m.input_tokens))
    outputs = np.full(prompts, round(m.output_tokens))
    ledger = Ledger(prompts)
    replica = Replica(EngineTimes.of(model), 0, 0.0, m.gpus)
    replica.run(list(range(prompts)), arrival, inputs, outputs, float("inf"), ledger)
    makespan = float(np.nanmax(ledger.finish_s))
    return RunResult(m, prompts / makespan, float(np.nanmean(ledger.ttft_s)), float(np.nanmean(ledger.tpot_s)))


def fidelity(data_dir: str | Path) -> dict:
    """Per (model, GPU, degree): median relative error of throughput, mean TTFT and mean TPOT; and pooled."""
    data = read_measurements(Path(data_dir) / "vllm_serving_4090_vs_h100pcie.csv")
    runs = [r for m in data if (r := simulate_run(m)) is not None]
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for r in runs:
        m = r.measurement
        groups[f"{m.model_id.split('/')[-1]} on {m.gpus}×{m.gpu}"].append(r.errors())
    def median(errs: list[dict[str, float]], k: str) -> float | None:
        values = [e[k] for e in errs if k in e]
        return statistics.median(values) if values else None

    per_config = {name: {k: median(errs, k) for k in ("throughput", "ttft", "tpot")}
                  for name, errs in sorted(groups.items())}
    pooled = {k: median([r.errors() for r in runs], k) for k in ("throughput", "ttft", "tpot")}
    return {"runs": len(runs), "pooled": pooled, "configs": per_config}
