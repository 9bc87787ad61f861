"""Capacity-model error, leave one model out, against ../shared/data/vllm_serving_4090_vs_h100pcie.csv.

For each model: fit the calibration on every other model's runs, then predict this model's runs.
Quantities: saturation throughput (the highest achieved request throughput of a configuration, predicted as
a 200-prompt run at that offered rate), and mean TPOT and TTFT at offered loads below 75% of saturation.

    python benchmarks/capacity_error.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from kilowatt.performance.calibrate import fit, read_measurements, score, ttft_artefact, usable

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data"))
    args = parser.parse_args()
    all_rows = read_measurements(Path(args.data) / "vllm_serving_4090_vs_h100pcie.csv")
    data = usable(all_rows)
    dropped = sorted({(*m.config, m.offered_rps) for m in data if ttft_artefact(m)})
    pooled = {"throughput": [], "tpot": [], "ttft": []}
    print(f"{'held-out model':58} {'thr':>6} {'TPOT':>6} {'TTFT':>6}   (median abs. % error)")
    for model_id in sorted({m.model_id for m in data}):
        train = [m for m in data if m.model_id != model_id]
        test = [m for m in data if m.model_id == model_id]
        errors = score(test, fit(train))
        for key in pooled:
            pooled[key] += getattr(errors, key)
        med = errors.medians()
        print(f"{model_id:58} {med['throughput']:6.1%} {med['tpot']:6.1%} {med['ttft']:6.1%}", flush=True)
    print(f"{'ALL (pooled held-out errors)':58} " + " ".join(f"{statistics.median(v):6.1%}" for v in pooled.values()))
    for gpu in ("RTX-4090", "H100-PCIe"):
        sub = [m for m in data if m.gpu == gpu]
        pooled_gpu = {"throughput": [], "tpot": [], "ttft": []}
        for model_id in sorted({m.model_id for m in sub}):
            errors = score([m for m in sub if m.model_id == model_id], fit([m for m in data if m.model_id != model_id]))
            for key in pooled_gpu:
                pooled_gpu[key] += getattr(errors, key)
        print(f"{'  on ' + gpu:58} " + " ".join(f"{statistics.median(v):6.1%}" if v else "   n/a"
                                              for v in pooled_gpu.values()))
    print(f"rows whose TTFT is warm-up (kept for TPOT and throughput): {dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
