"""GPU types: the vendor figures the capacity and power models start from.

Sources: ../shared/data/README.md and gpu_specs.csv (vendor spec sheets; bandwidth in GB/s = 10^9 B/s,
dense FP16 tensor TFLOP/s without sparsity).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class GPU:
    model: str
    memory_gib: float
    memory_bandwidth_gb_per_second: float
    fp16_tflops: float
    board_power_watts: float
    idle_power_watts: float
    nvlink: bool = False

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * GIB

    @property
    def bandwidth_bytes_per_second(self) -> float:
        return self.memory_bandwidth_gb_per_second * 1e9

    @property
    def flops_per_second(self) -> float:
        return self.fp16_tflops * 1e12


def _idle(board_watts: float) -> float:
    # Rule of thumb from the reference data: a GPU holding a CUDA context idles near 15% of board power.
    return 0.15 * board_watts


GPU_CATALOGUE: dict[str, GPU] = {
    g.model: g
    for g in (
        GPU("RTX-4090", 24, 1008, 165, 450, _idle(450)),
        GPU("H100-SXM", 80, 3350, 990, 700, _idle(700), nvlink=True),
        GPU("H100-PCIe", 80, 2000, 756, 350, _idle(350)),
        GPU("A100-80GB", 80, 2039, 312, 400, _idle(400), nvlink=True),
        GPU("L40S", 48, 864, 362, 350, _idle(350)),
    )
}

_ALIASES = {
    "NVIDIA-GeForce-RTX-4090": "RTX-4090",
    "RTX 4090": "RTX-4090",
    "NVIDIA-H100-PCIe": "H100-PCIe",
    "H100": "H100-SXM",
    "H100 SXM5 80GB": "H100-SXM",
    "A100": "A100-80GB",
    "A100-SXM": "A100-80GB",
}


def gpu_by_name(name: str) -> GPU:
    """Look up a catalogue GPU by its name or a common alias; a clear error lists the known names."""
    key = _ALIASES.get(name, name)
    if key not in GPU_CATALOGUE:
        raise KeyError(f"unknown GPU {name!r}; known: {', '.join(GPU_CATALOGUE)}")
    return GPU_CATALOGUE[key]
