"""Power drawn by one GPU against its load: sub-linear between idle and board power.

ML.ENERGY v3 (H100 SXM, Llama-3.1-8B): 486 W at batch 8, 691 W at batch 256 — most of the power is drawn at
low load. ``watts = idle + (board - idle) * utilisation ** exponent`` with the exponent fitted on that file
(``kilowatt.performance.calibrate.fit_power_exponent``; ~0.3).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PowerCurve:
    idle_watts: float
    board_watts: float
    exponent: float = 0.33

    def __post_init__(self) -> None:
        if not 0 <= self.idle_watts <= self.board_watts:
            raise ValueError(f"need 0 <= idle ({self.idle_watts} W) <= board ({self.board_watts} W)")
        if not 0 < self.exponent <= 1:
            raise ValueError(f"exponent must be in (0, 1], got {self.exponent}")

    def watts(self, utilisation: float) -> float:
        """Per-GPU power at a utilisation in [0, 1] (clamped) of the replica's saturation throughput."""
        u = min(1.0, max(0.0, utilisation))
        return self.idle_watts + (self.board_watts - self.idle_watts) * u**self.exponent
