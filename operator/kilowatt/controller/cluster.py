"""What the loop reads from the cluster each period: pools' GPUs from Nodes, kilowatt's Deployments and Pods.
Three list calls per period, whatever the number of services."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils import parse_quantity

from kilowatt.api.v1alpha1 import AcceleratorPool
from kilowatt.controller.actuator import ANNOTATION_TEMPLATE, ANNOTATION_TP, GPU_RESOURCE, LABEL_POOL, LABEL_SERVICE
from kilowatt.metrics.source import Topology


@dataclass(frozen=True)
class Running:
    name: str
    replicas: int
    ready: int
    tensor_parallel: int
    template_hash: str | None = None  # kilowatt.dev/template-hash: the pod template it was last applied with


@dataclass
class ClusterView:
    gpus_by_pool: dict[str, int] = field(default_factory=dict)  # allocatable on schedulable matching nodes
    nodes_by_pool: dict[str, list[str]] = field(default_factory=dict)
    unusable_nodes_by_pool: dict[str, list[str]] = field(default_factory=dict)  # cordoned or not Ready
    deployments: dict[tuple[str, str], Running] = field(default_factory=dict)  # (ns/service, pool) -> Running
    scheduled_gpus_by_pool: dict[str, int] = field(default_factory=dict)
    unschedulable_pools: set[str] = field(default_factory=set)  # pools with kilowatt pods Pending: no room
    unschedulable_services: dict[str, set[str]] = field(default_factory=dict)  # service -> pools it has such Pods on
    pods: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # (ns, pod) -> (service key, pool)

    @property
    def node_pools(self) -> dict[str, str]:
        return {node: pool for pool, nodes in self.nodes_by_pool.items() for node in nodes}

    @property
    def topology(self) -> Topology:
        return Topology(self.node_pools, dict(self.pods))


def _quantity(value: Any) -> int:
    """A Kubernetes quantity as a whole number: the API server writes 2000 GPUs as "2k"."""
    if value is None:
        return 0
    try:
        return int(parse_quantity(str(value)))
    except (TypeError, ValueError):
        return 0


def _node_usable(node: Any) -> bool:
    if node.spec and node.spec.unschedulable:
        return False
    for c in (node.status.conditions or []) if node.status else []:
        if c.type == "Ready":
            return c.status == "True"
    return True  # a Node without a Ready condition (nothing reports on it yet) is taken at its word


def read_cluster(core: Any, apps: Any, pools: list[AcceleratorPool]) -> ClusterView:
    view = ClusterView()
    nodes = core.list_node().items
    for pool in pools:
        selector = pool.spec.node_selector
        matching = [n for n in nodes if all((n.metadata.labels or {}).get(k) == v for k, v in selector.items())]
        view.nodes_by_pool[pool.name] = [n.metadata.name for n in matching]
        view.unusable_nodes_by_pool[pool.name] = [n.metadata.name for n in matching
                                                  if not (n.status and _node_usable(n))]
        view.gpus_by_pool[pool.name] = sum(
            _quantity((n.status.allocatable or {}).get(GPU_RESOURCE)) for n in matching if n.status and _node_usable(n)
        )
    for d in apps.list_deployment_for_all_namespaces(label_selector=LABEL_SERVICE).items:
        labels = d.metadata.labels or {}
        key = (f"{d.metadata.namespace}/{labels[LABEL_SERVICE]}", labels.get(LABEL_POOL, ""))
        tp = _quantity((d.metadata.annotations or {}).get(ANNOTATION_TP)) or 1
        view.deployments[key] = Running(d.metadata.name, d.spec.replicas or 0,
                                        (d.status.ready_replicas or 0) if d.status else 0, tp,
                                        (d.metadata.annotations or {}).get(ANNOTATION_TEMPLATE))
    scheduled: dict[str, int] = defaultdict(int)
    for p in core.list_pod_for_all_namespaces(label_selector=LABEL_POOL).items:
        labels = p.metadata.labels or {}
        pool = labels.get(LABEL_POOL, "")
        phase = p.status.phase if p.status else None
        if phase in ("Succeeded", "Failed"):
            continue
        if labels.get(LABEL_SERVICE):
            view.pods[(p.metadata.namespace, p.metadata.name)] = (f"{p.metadata.namespace}/{labels[LABEL_SERVICE]}",
                                                                  pool)
        gpus = sum(_quantity(((c.resources.requests or {}) if c.resources else {}).get(GPU_RESOURCE))
                   for c in p.spec.containers)
        if p.spec.node_name:
            scheduled[pool] += gpus
        elif any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                 for c in (p.status.conditions or []) if p.status):
            view.unschedulable_pools.add(pool)
            if labels.get(LABEL_SERVICE):
                view.unschedulable_services.setdefault(f"{p.metadata.namespace}/{labels[LABEL_SERVICE]}",
                                                       set()).add(pool)
    view.scheduled_gpus_by_pool = dict(scheduled)
    return view
