"""Does the simulator reproduce the published vLLM measurements? Replays each benchmark run of
../shared/data/vllm_serving_4090_vs_h100pcie.csv (200 prompts with ShareGPT-like lengths at the run's mean
lengths, Poisson arrivals at the offered rate) on one replica of the serving engine and compares the achieved
request throughput, mean TTFT and mean TPOT (``kilowatt.performance.calibrate.replay``)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from kilowatt.performance.calibrate import read_measurements, replay, replay_errors, usable
from kilowatt.performance.capacity import default_calibration

QUANTITIES = ("throughput", "ttft", "tpot")


def _medians(errors: list[dict[str, float]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k in QUANTITIES:
        values = [e[k] for e in errors if k in e]
        out[k] = statistics.median(values) if values else None
    return out


def fidelity(data_dir: str | Path) -> dict:
    """Median relative error of throughput, mean TTFT and mean TPOT: per (model, GPU, degree), pooled, and on
    the RTX 4090 rows alone."""
    calibration = default_calibration()
    data = usable(read_measurements(Path(data_dir) / "vllm_serving_4090_vs_h100pcie.csv"))
    runs = [(m, replay_errors(m, got)) for m in data if (got := replay(m, calibration)) is not None]
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for m, errors in runs:
        groups[f"{m.model_id.split('/')[-1]} on {m.gpus}×{m.gpu}"].append(errors)
    return {
        "runs": len(runs),
        "pooled": _medians([e for _, e in runs]),
        "rtx4090": _medians([e for m, e in runs if m.gpu == "RTX-4090"]),
        "h100": _medians([e for m, e in runs if m.gpu != "RTX-4090"]),
        "configs": {name: _medians(errs) for name, errs in sorted(groups.items())},
    }
