"""The planner's view of the world at one instant: pools with free GPUs and prices, services with demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from kilowatt.economics import PoolEconomics
from kilowatt.performance import GPU, ModelShape, TokenMix


@dataclass(frozen=True)
class PoolState:
    name: str
    gpu: GPU
    economics: PoolEconomics
    gpus_max: int  # GPUs kilowatt may use in this pool now (discovered, capped by maxGPUs, minus unschedulable)
    gpus_per_node: int = 1
    startup_seconds: float = 120.0

    @property
    def tensor_parallel_degrees(self) -> tuple[int, ...]:
        return tuple(k for k in (1, 2, 4, 8) if k <= self.gpus_per_node)


@dataclass(frozen=True)
class CurrentPlacement:
    replicas: int
    tensor_parallel: int
    ready: int = 0


@dataclass(frozen=True)
class ServiceState:
    key: str  # namespace/name
    shape: ModelShape
    ttft_seconds: float
    tpot_seconds: float
    percentile: float = 95.0
    demand_rps: float = 0.0
    mix: TokenMix = field(default_factory=TokenMix)
    min_replicas: int = 0
    max_replicas: int = 16
    burst_headroom: float = 0.2
    scale_to_zero: bool = False
    allowed_pools: tuple[str, ...] = ()  # empty: every pool
    profiles: tuple[tuple[str, int, float], ...] = ()  # (pool, tensor_parallel, max req/s within SLO)
    current: tuple[tuple[str, CurrentPlacement], ...] = ()  # (pool, placement)
    corrections: tuple[tuple[str, float, float], ...] = ()  # (pool, ttft factor, tpot factor)
    # routing.mode Service: one ClusterIP Service gives every ready replica an equal share of the traffic, so a
    # placement serves within the SLO only up to replicas x its slowest replica's capacity (placement_capacity).
    equal_share: bool = False
    # Pools whose tensor-parallel degree changed within the last hour: the planner keeps it (no change back).
    degree_held: tuple[str, ...] = ()

    @property
    def target_rps(self) -> float:
        return self.demand_rps * (1.0 + self.burst_headroom)

    @property
    def floor_replicas(self) -> int:
        """Fewest replicas: min, and never zero unless scale-to-zero is on."""
        return max(self.min_replicas, 0 if self.scale_to_zero else 1)

    def current_on(self, pool: str) -> CurrentPlacement | None:
        return dict(self.current).get(pool)

    def correction_on(self, pool: str) -> tuple[float, float]:
        for name, ttft, tpot in self.corrections:
            if name == pool:
                return ttft, tpot
        return 1.0, 1.0

    def profile_on(self, pool: str) -> list[tuple[int, float]]:
        return [(k, rps) for name, k, rps in self.profiles if name == pool]

    def may_use(self, pool: str) -> bool:
        return not self.allowed_pools or pool in self.allowed_pools


@dataclass(frozen=True)
class Snapshot:
    at: datetime
    pools: tuple[PoolState, ...]
    services: tuple[ServiceState, ...]
    churn_hours: float = 0.25  # a replica moved must pay for itself within this many hours of cost
