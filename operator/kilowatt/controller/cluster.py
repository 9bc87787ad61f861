"""What the loop makes of the cluster each period: pools' GPUs from Nodes, kilowatt's Deployments and Pods
(read by ``controller.reads``: listed, or kept by watches)."""

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


def _node_usable(node: dict) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return True  # a Node without a Ready condition (nothing reports on it yet) is taken at its word


def read_cluster(nodes: list[dict], deployments: list[dict], pods: list[dict],
                 pools: list[AcceleratorPool]) -> ClusterView:
    """The pools' GPUs, kilowatt's Deployments and Pods, from the objects as the API server sends them (dicts)."""
    view = ClusterView()
    for pool in pools:
        selector = pool.spec.node_selector
        matching = [n for n in nodes
                    if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())]
        view.nodes_by_pool[pool.name] = [n["metadata"]["name"] for n in matching]
        view.unusable_nodes_by_pool[pool.name] = [n["metadata"]["name"] for n in matching
                                                  if not (n.get("status") and _node_usable(n))]
        view.gpus_by_pool[pool.name] = sum(
            _quantity((n["status"].get("allocatable") or {}).get(GPU_RESOURCE))
            for n in matching if n.get("status") and _node_usable(n)
        )
    for d in deployments:
        meta = d["metadata"]
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        key = (f"{meta['namespace']}/{labels[LABEL_SERVICE]}", labels.get(LABEL_POOL, ""))
        tp = _quantity(annotations.get(ANNOTATION_TP)) or 1
        view.deployments[key] = Running(meta["name"], (d.get("spec") or {}).get("replicas") or 0,
                                        (d.get("status") or {}).get("readyReplicas") or 0, tp,
                                        annotations.get(ANNOTATION_TEMPLATE))
    scheduled: dict[str, int] = defaultdict(int)
    for p in pods:
        meta, spec, status = p["metadata"], p.get("spec") or {}, p.get("status") or {}
        labels = meta.get("labels") or {}
        pool = labels.get(LABEL_POOL, "")
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        service = f"{meta['namespace']}/{labels[LABEL_SERVICE]}" if labels.get(LABEL_SERVICE) else None
        if service:
            view.pods[(meta["namespace"], meta["name"])] = (service, pool)
        gpus = sum(_quantity(((c.get("resources") or {}).get("requests") or {}).get(GPU_RESOURCE))
                   for c in spec.get("containers") or [])
        if spec.get("nodeName"):
            scheduled[pool] += gpus
        elif any(c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
                 for c in status.get("conditions") or []):
            view.unschedulable_pools.add(pool)
            if service:
                view.unschedulable_services.setdefault(service, set()).add(pool)
    view.scheduled_gpus_by_pool = dict(scheduled)
    return view
