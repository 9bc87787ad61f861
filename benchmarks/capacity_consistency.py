"""One truth: does the planner's SLO capacity agree with what the twin's engine really delivers?

For each cell of a grid — model size (1.5B-70B) x GPU type x tensor-parallel degree x length mix — two numbers:

* **planner**: one replica's req/s within the SLO as the operator's planner computes it
  (``CapacityTable.replica``): from the mix *as the operator sees it* — mean lengths and vLLM's 1-2-5 length
  histograms of a sample of the traffic — through the engine's latency curves on the length-mix grid.
* **twin**: the highest Poisson rate at which the engine, serving the *real* lengths (fresh draws from the trace,
  another seed, ``--requests`` requests, the first 10 % left out), keeps the p95 TTFT and TPOT within the SLO;
  binary search to 1 %.

Goal (issue 12): median |planner - twin| / twin <= 5 %, worst cell <= 15 %, and the planner never more than 10 %
optimistic (planner > 1.1 x twin). Cells where neither can meet the SLO at any load are counted apart.

    python benchmarks/capacity_consistency.py [--out benchmarks/results/capacity_consistency.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "operator"))

from kilowatt.performance.capacity import CapacityModel, TokenMix, default_calibration  # noqa: E402
from kilowatt.performance.engine import EngineTimes  # noqa: E402
from kilowatt.performance.hardware import gpu_by_name  # noqa: E402
from kilowatt.performance.lengths import (  # noqa: E402
    cumulative_histogram,
    quantiles_from_histogram,
    vllm_length_buckets,
)
from kilowatt.performance.shapes import KNOWN_MODELS, ModelShape  # noqa: E402
from kilowatt.performance.slo_capacity import measured_capacity_rps  # noqa: E402
from kilowatt.planner.options import CapacityTable  # noqa: E402
from kilowatt.planner.snapshot import PoolState, ServiceState  # noqa: E402
from kilowatt.twin.workload import read_requests  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"
TTFT_S, TPOT_S, PERCENTILE = 2.0, 0.1, 95.0
MODELS = {
    "1.5B": KNOWN_MODELS["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"],
    "8B": KNOWN_MODELS["meta-llama/Meta-Llama-3-8B-Instruct"],
    "14B": KNOWN_MODELS["microsoft/phi-4"],
    "32B": KNOWN_MODELS["Qwen/QwQ-32B-Preview"],
    "70B": KNOWN_MODELS["meta-llama/Meta-Llama-3-70B-Instruct"],
}
GPUS = ("RTX-4090", "L40S", "A100-80GB", "H100-PCIe", "H100-SXM")


def mixes(seed: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Length populations (prompt, output) to draw requests from."""
    rng = np.random.default_rng(seed)
    out = {}
    n = 20000
    # ShareGPT-like: short chat, log-normal around 205 / 200 tokens, capped at 1,024 as benchmark_serving does.
    out["sharegpt"] = (np.clip(np.round(rng.lognormal(np.log(150), 0.8, n)), 4, 1024),
                       np.clip(np.round(rng.lognormal(np.log(145), 0.8, n)), 4, 1024))
    for name, file in (("azure-conv", "azure2023_conv_requests.csv"), ("azure-code", "azure2023_code_requests.csv")):
        w = read_requests(DATA / file)
        out[name] = (np.asarray(w.input_tokens, dtype=float), np.asarray(w.output_tokens, dtype=float))
    # Long context: retrieval-augmented prompts of several thousand tokens, short answers.
    out["long-context"] = (np.clip(np.round(rng.lognormal(np.log(5000), 0.5, n)), 500, 7000),
                           np.clip(np.round(rng.lognormal(np.log(250), 0.7, n)), 4, 1024))
    return out


def observed_mix(prompts: np.ndarray, outputs: np.ndarray, rng: np.random.Generator) -> TokenMix:
    """What the operator reads: means and vLLM's length histograms over a sample of the traffic."""
    pick = rng.integers(0, len(prompts), 3000)
    p, o = prompts[pick], outputs[pick]
    bounds = vllm_length_buckets(8192)
    return TokenMix(float(p.mean()), float(o.mean()),
                    quantiles_from_histogram(cumulative_histogram(p, bounds), 8192),
                    quantiles_from_histogram(cumulative_histogram(o, bounds), 8192))


def degrees(shape: ModelShape, gpu: str) -> list[int]:
    fitting = [k for k in (1, 2, 4, 8) if CapacityModel(shape, gpu_by_name(gpu), k, default_calibration()).fits()]
    return fitting[:2]


def main() -> int:
    # Timed from cold: curves kept on disk by earlier runs (kilowatt.performance.slo_capacity.CurveStore) would
    # hide what measuring them costs. KILOWATT_CURVE_CACHE=<dir> to time a warm store.
    os.environ.setdefault("KILOWATT_CURVE_CACHE", "off")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE / "results" / "capacity_consistency.json"))
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--quick", action="store_true", help="two models, two GPUs, two mixes (a smoke run)")
    args = parser.parse_args()
    populations = mixes()
    models, gpus, mix_names = MODELS, GPUS, list(populations)
    if args.quick:
        models = {k: MODELS[k] for k in ("8B", "70B")}
        gpus, mix_names = ("RTX-4090", "H100-SXM"), ["sharegpt", "azure-code"]
    table = CapacityTable(engine=True)
    rng = np.random.default_rng(7)
    cells = []
    started = time.perf_counter()
    for model_name, shape in models.items():
        for gpu in gpus:
            for k in degrees(shape, gpu):
                times = EngineTimes.of(CapacityModel(shape, gpu_by_name(gpu), k, default_calibration()))
                for mix_name in mix_names:
                    prompts, outputs = populations[mix_name]
                    mix = observed_mix(prompts, outputs, rng)
                    service = ServiceState("bench/m", shape, TTFT_S, TPOT_S, PERCENTILE, mix=mix)
                    pool = _pool(gpu, k)
                    t0 = time.perf_counter()
                    planner = table.replica(service, pool, k)[0]
                    planner_s = time.perf_counter() - t0
                    twin = measured_capacity_rps(times, prompts, outputs, TTFT_S, TPOT_S, PERCENTILE, args.requests, rng)
                    error = (planner - twin) / twin if twin > 0 else (0.0 if planner <= 0 else math.inf)
                    cells.append({"model": model_name, "gpu": gpu, "tensorParallel": k, "mix": mix_name,
                                  "plannerRps": round(planner, 4), "twinRps": round(twin, 4),
                                  "relativeError": round(error, 4) if math.isfinite(error) else None,
                                  "plannerSeconds": round(planner_s, 3)})
                    print(f"{model_name:5} {k}x{gpu:10} {mix_name:13} planner {planner:8.3f}  twin {twin:8.3f}  "
                          f"{error:+7.1%}" if math.isfinite(error) else f"{model_name} {gpu} {mix_name} planner "
                          f"{planner:.3f} twin 0", flush=True)
    both = [c for c in cells if c["twinRps"] > 0]
    errors = [abs(c["relativeError"]) for c in both if c["relativeError"] is not None]
    summary = {
        "slo": {"ttftSeconds": TTFT_S, "tpotSeconds": TPOT_S, "percentile": PERCENTILE},
        "cells": len(cells),
        "cellsWithCapacity": len(both),
        "cellsBothZero": sum(1 for c in cells if c["twinRps"] == 0 and c["plannerRps"] == 0),
        "plannerPositiveTwinZero": sum(1 for c in cells if c["twinRps"] == 0 and c["plannerRps"] > 0),
        "medianAbsError": round(statistics.median(errors), 4) if errors else None,
        "worstAbsError": round(max(errors), 4) if errors else None,
        "mostOptimistic": round(max(c["relativeError"] for c in both), 4) if both else None,
        "optimisticOver10Percent": sum(1 for c in both if c["relativeError"] > 0.10),
        "curvesMeasured": table.curves.measured,
        "seconds": round(time.perf_counter() - started, 1),
        "requestsPerTwinProbe": args.requests,
    }
    print(json.dumps(summary, indent=2))
    if not args.quick:
        Path(args.out).write_text(json.dumps({"summary": summary, "cells": cells}, indent=2) + "\n", encoding="utf-8")
    return 0


def _pool(gpu: str, k: int) -> PoolState:
    """A pool as the planner sees it; only its GPU matters to a replica's capacity (no cost is computed here)."""
    return PoolState("bench", gpu_by_name(gpu), None, 64, 8)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
