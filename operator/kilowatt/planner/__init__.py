"""Deciding how many replicas of which service run on which pool: one integer program, then a stabiliser.

Pure code over a snapshot: no Kubernetes, no Prometheus. The operator, the twin and the CLI run the same planner.
"""

from kilowatt.planner.milp import PLANNER_BUDGET_SECONDS, plan
from kilowatt.planner.options import CapacityTable
from kilowatt.planner.snapshot import PoolState, ServiceState, Snapshot
from kilowatt.planner.stabiliser import Stabiliser
from kilowatt.planner.types import Placement, Plan, ServicePlan

__all__ = ["PLANNER_BUDGET_SECONDS", "CapacityTable", "Placement", "Plan", "PoolState", "ServicePlan", "ServiceState", "Snapshot", "Stabiliser", "plan"]
