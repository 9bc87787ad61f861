"""Where time comes from: wall time in a cluster, simulated time in ``kilowatt demo``, the soak and the twin.
Everything that reads the time takes a Clock (or a ``now``) rather than asking the system."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()


class SimulatedClock:
    """Simulated time: ``t_s`` seconds after ``start``, moved by whoever drives it."""

    def __init__(self, start: datetime) -> None:
        self.start, self.t_s = start, 0.0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.t_s)

    def monotonic(self) -> float:
        return self.t_s
