"""What "within the SLO" means, written once: the operator's status, the capacity model, the twin's ledger and
the demo's live view all call this."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def within_slo(ttft_seconds: T, tpot_seconds: T, ttft_target_seconds: float, tpot_target_seconds: float) -> T:
    """True where TTFT and TPOT are both within their targets. A NaN TPOT (a request with one output token has
    no gap between tokens to time) passes on TTFT alone. Works on floats and on numpy arrays alike."""
    no_tpot = tpot_seconds != tpot_seconds  # NaN, without asking whether this is an array
    return (ttft_seconds <= ttft_target_seconds) & (no_tpot | (tpot_seconds <= tpot_target_seconds))  # type: ignore[operator]
