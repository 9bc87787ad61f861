"""What the planner returns: a placement per service, its cost, and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from kilowatt.economics.cost import CostBreakdown
from kilowatt.planner.reasons import Binding


def replica_label(replicas: int, gpu_model: str, tensor_parallel: int) -> str:
    """``3×RTX-4090(tp4)``: three replicas of four GPUs each; the degree is left out at 1."""
    return f"{replicas}×{gpu_model}" + (f"(tp{tensor_parallel})" if tensor_parallel > 1 else "")


def placement_capacity(replicas_and_capacity: list[tuple[int, float]], equal_share: bool) -> float:
    """Req/s a placement serves within the SLO, from (replicas, per-replica capacity) per pool.

    Weighted routing gives each pool traffic in proportion to its capacity: the capacities add up. A plain
    Service (``equal_share``) gives every replica the same share, so the slowest replica reaches its SLO limit
    first: the placement is worth replicas x the smallest per-replica capacity among those that run."""
    live = [(n, c) for n, c in replicas_and_capacity if n > 0]
    if not live:
        return 0.0
    if equal_share:
        return sum(n for n, _ in live) * min(c for _, c in live)
    return sum(n * c for n, c in live)


@dataclass(frozen=True)
class Placement:
    pool: str
    gpu_model: str
    replicas: int
    tensor_parallel: int
    capacity_rps: float  # per replica, within the SLO


@dataclass(frozen=True)
class Alternative:
    description: str
    cost_usd_per_hour: float


@dataclass(frozen=True)
class ServicePlan:
    key: str
    demand_rps: float
    target_rps: float
    placement: tuple[Placement, ...]
    cost: CostBreakdown
    reason: str
    next_best: Alternative | None = None
    unmet_rps: float = 0.0
    binding: Binding | None = None  # what left demand unmet or replicas below the floor
    planned_usd_per_hour: float = 0.0  # the objective's view: per-replica cost at the planned utilisation
    equal_share: bool = False  # routing.mode Service: every replica gets the same share (placement_capacity)

    @property
    def capacity_rps(self) -> float:
        return placement_capacity([(p.replicas, p.capacity_rps) for p in self.placement], self.equal_share)

    @property
    def replicas(self) -> int:
        return sum(p.replicas for p in self.placement)

    def summary(self) -> str:
        """``3×RTX-4090 1×H100-SXM``, or ``0`` when nothing runs."""
        parts = [replica_label(p.replicas, p.gpu_model, p.tensor_parallel) for p in self.placement if p.replicas > 0]
        return " ".join(parts) or "0"


@dataclass(frozen=True)
class PoolUsage:
    name: str
    gpus_used: int
    gpus_max: int


@dataclass(frozen=True)
class Plan:
    feasible: bool
    services: tuple[ServicePlan, ...]
    pools: tuple[PoolUsage, ...]
    solve_seconds: float
    problems: tuple[str, ...] = field(default_factory=tuple)
    optimality_gap: float = 0.0  # relative gap to HiGHS's bound when the plan was returned (0: proven optimal)

    @property
    def cost(self) -> CostBreakdown:
        total = CostBreakdown(0.0, 0.0, 0.0)
        for s in self.services:
            total = total + s.cost
        return total

    def service(self, key: str) -> ServicePlan:
        # Indexed on first use (a frozen dataclass: set once through object.__setattr__); asked once per service.
        index = self.__dict__.get("_index")
        if index is None:
            index = {s.key: s for s in self.services}
            object.__setattr__(self, "_index", index)
        return index[key]

    def to_json(self) -> dict:
        """The CLI's contract: ``kilowatt plan -o json``."""
        return {
            "feasible": self.feasible,
            "totalCostPerHourUsd": round(self.cost.total_usd_per_hour, 6),
            "hardwareCostPerHourUsd": round(self.cost.hardware_usd_per_hour, 6),
            "energyCostPerHourUsd": round(self.cost.energy_usd_per_hour, 6),
            "powerWatts": round(self.cost.power_watts, 3),
            "solveSeconds": round(self.solve_seconds, 6),
            "optimalityGap": round(self.optimality_gap, 6) if self.optimality_gap != float("inf") else None,
            "problems": list(self.problems),
            "services": [
                {
                    "namespace": s.key.split("/", 1)[0],
                    "name": s.key.split("/", 1)[1],
                    "demandRps": round(s.demand_rps, 6),
                    "targetRps": round(s.target_rps, 6),
                    "capacityRps": round(s.capacity_rps, 6),
                    "costPerHourUsd": round(s.cost.total_usd_per_hour, 6),
                    "hardwareCostPerHourUsd": round(s.cost.hardware_usd_per_hour, 6),
                    "energyCostPerHourUsd": round(s.cost.energy_usd_per_hour, 6),
                    "powerWatts": round(s.cost.power_watts, 3),
                    "placement": [
                        {
                            "pool": p.pool,
                            "gpu": p.gpu_model,
                            "replicas": p.replicas,
                            "tensorParallel": p.tensor_parallel,
                            "capacityRps": round(p.capacity_rps, 6),
                        }
                        for p in s.placement
                    ],
                    "reason": s.reason,
                    "nextBest": (
                        {"description": s.next_best.description, "costPerHourUsd": round(s.next_best.cost_usd_per_hour, 6)}
                        if s.next_best
                        else None
                    ),
                    "unmetRps": round(s.unmet_rps, 6),
                    "binding": str(s.binding) if s.binding is not None else None,
                    "bindingKind": s.binding.kind if s.binding is not None else None,
                }
                for s in self.services
            ],
            "pools": [{"name": p.name, "gpusUsed": p.gpus_used, "gpusMax": p.gpus_max} for p in self.pools],
        }
