"""Why a plan falls short or a step is held back, as data.

Like Karpenter's disruption reasons: code compares types and fields; the text a person reads is rendered from
them only at the edge (status, events, logs), by ``str()``. ``kind`` is the one-word reason a condition or an
event carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class NoPoolFits:
    """No allowed pool runs the model within the SLO at any degree."""

    kind: ClassVar[str] = "DoesNotFit"
    allowed_pools: tuple[str, ...]
    parameters_billion: float
    dtype: str
    ttft_seconds: float
    tpot_seconds: float
    percentile: float

    def __str__(self) -> str:
        allowed = ", ".join(self.allowed_pools) if self.allowed_pools else "any pool"
        return (f"no allowed pool ({allowed}) fits {self.parameters_billion:g}B {self.dtype} within "
                f"TTFT {self.ttft_seconds * 1000:g} ms / TPOT {self.tpot_seconds * 1000:g} ms at p{self.percentile:g}")


@dataclass(frozen=True)
class MaxReplicasReached:
    kind: ClassVar[str] = "MaxReplicas"
    max_replicas: int

    def __str__(self) -> str:
        return f"replicas.max ({self.max_replicas}) reached"


@dataclass(frozen=True)
class FullPool:
    pool: str
    gpus_used: int
    gpus_max: int

    def __str__(self) -> str:
        return f"pool {self.pool} full: {self.gpus_used}/{self.gpus_max} GPUs"


@dataclass(frozen=True)
class PoolsFull:
    """Every pool that could add a replica of the service has no GPUs left for it."""

    kind: ClassVar[str] = "PoolFull"
    pools: tuple[FullPool, ...]

    def __str__(self) -> str:
        return "; ".join(map(str, self.pools))


@dataclass(frozen=True)
class SolverLimit:
    """Room was left, but the solver's time budget ran out before it found a plan that uses it."""

    kind: ClassVar[str] = "SolverLimit"

    def __str__(self) -> str:
        return "solver limit reached"


Binding = NoPoolFits | MaxReplicasReached | PoolsFull | SolverLimit


# -- why a step of the stabiliser, or a whole decision, is held back ----------------------------------------------


@dataclass(frozen=True)
class UpBounded:
    """A scale-up limited by the step bound or the up-window."""

    kind: ClassVar[str] = "UpBounded"
    pool: str
    current: int
    to: int
    wanted: int
    unit: str = ""  # "" for replicas, " GPUs" when the stabiliser counts GPUs

    def __str__(self) -> str:
        return f"{self.pool}: up {self.current}→{self.to} of {self.wanted}{self.unit} (step or window bound)"


@dataclass(frozen=True)
class DownWindow:
    """A scale-down waiting out the down-window, or limited by the step bound."""

    kind: ClassVar[str] = "DownWindow"
    pool: str
    current: int
    to: int
    wanted: int
    window_seconds: float
    unit: str = ""

    def __str__(self) -> str:
        return (f"{self.pool}: down {self.current}→{self.to} of {self.wanted}{self.unit} (waiting out the "
                f"{self.window_seconds:g}s window or step bound)")


@dataclass(frozen=True)
class WaitingForReady:
    """Ready capacity kept because the replicas replacing it are still starting."""

    kind: ClassVar[str] = "WaitingForReady"
    pool: str
    held: int
    instead_of: int
    unit: str = ""

    def __str__(self) -> str:
        return f"{self.pool}: holding {self.held}{self.unit} (not {self.instead_of}) until new replicas are ready"


StepHold = UpBounded | DownWindow | WaitingForReady


@dataclass(frozen=True)
class ModeOff:
    kind: ClassVar[str] = "ModeOff"

    def __str__(self) -> str:
        return "scaling.mode is Off: Deployments left alone"


@dataclass(frozen=True)
class MetricsMissing:
    kind: ClassVar[str] = "MetricsMissing"
    service: str
    error: str | None

    def __str__(self) -> str:
        return (f"no metrics for {self.service} ({self.error or 'no series yet'}): placement held, "
                "nothing scaled down")


DecisionHold = ModeOff | MetricsMissing
