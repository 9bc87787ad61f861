"""A stand-in for kubelets, the scheduler and the Deployment controller where none run (the integration tier
without kwok): each of kilowatt's Deployments gets its Pods, bound to a node of its pool that has room for their
GPUs (or Pending and Unschedulable), Running and Ready after an optional delay, and reports its replicas ready —
as a cluster would once the pods start. The end-to-end tier runs the real controller-manager, scheduler and kwok
instead."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

LABEL_SERVICE = "kilowatt.dev/service"
GPU = "nvidia.com/gpu"


def _gpus(pod: Any) -> int:
    return sum(int(((c.resources.limits or {}) if c.resources else {}).get(GPU, 0) or 0) for c in pod.spec.containers)


def _condition(pod: Any, type_: str) -> str | None:
    return next((c.status for c in (pod.status.conditions or []) if c.type == type_), None) if pod.status else None


def _free_gpus(nodes: list, pods: list) -> dict[str, int]:
    """Allocatable GPUs per node less what the Pods bound there (anyone's) hold."""
    free = {n.metadata.name: int((n.status.allocatable or {}).get(GPU, 0) or 0) if n.status else 0 for n in nodes}
    for p in pods:
        if p.spec.node_name and not (p.status and p.status.phase in ("Succeeded", "Failed")):
            free[p.spec.node_name] = free.get(p.spec.node_name, 0) - _gpus(p)
    return free


class ReadyDeployments:
    def __init__(self, apps: Any, interval_seconds: float = 0.3, startup_seconds: float = 0.0,
                 core: Any = None, namespaces: tuple[str, ...] = ()) -> None:
        """``namespaces``: only the Deployments there (empty: all) — other test modules' leftovers on the same
        API server then take no GPUs on this module's nodes."""
        self.apps = apps
        self.namespaces = namespaces
        self.core = core or client.CoreV1Api(apps.api_client)
        self.interval = interval_seconds
        self.startup = startup_seconds
        self._seen: dict[tuple[str, str, int], float] = {}
        self._accounts: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ReadyDeployments:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the API server may be restarting under a fault test
                pass

    def tick(self) -> None:
        now = time.monotonic()
        nodes = self.core.list_node().items
        every_pod = self.core.list_pod_for_all_namespaces().items
        free = _free_gpus(nodes, every_pod)
        pods = {(p.metadata.namespace, p.metadata.name): p for p in every_pod
                if LABEL_SERVICE in (p.metadata.labels or {})}
        for d in self.apps.list_deployment_for_all_namespaces(label_selector=LABEL_SERVICE).items:
            if self.namespaces and d.metadata.namespace not in self.namespaces:
                continue
            want = d.spec.replicas or 0
            key = (d.metadata.namespace, d.metadata.name, want)
            since = self._seen.setdefault(key, now)
            started = want if now - since >= self.startup else min(want, (d.status.ready_replicas or 0))
            ready = self._pods(d, nodes, pods, free, want, started)
            status = d.status
            if status and status.ready_replicas == ready and status.replicas == want:
                continue
            self.apps.patch_namespaced_deployment_status(d.metadata.name, d.metadata.namespace, {"status": {
                "replicas": want, "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": want,
                "observedGeneration": d.metadata.generation}})

    def _pods(self, d: Any, nodes: list, pods: dict, free: dict[str, int], want: int, started: int) -> int:
        """Pods ``<deployment>-<i>`` for i < want, each bound to a node of the pool with room for its GPUs (as
        kube-scheduler would) or left Pending and Unschedulable; the first ``started`` bound ones Ready.
        Returns how many are Ready."""
        ns, name = d.metadata.namespace, d.metadata.name
        selector = d.spec.template.spec.node_selector or {}
        matching = sorted(n.metadata.name for n in nodes
                          if all((n.metadata.labels or {}).get(k) == v for k, v in selector.items()))
        for (pod_ns, pod_name), pod in pods.items():
            suffix = pod_name[len(name) + 1:]
            if pod_ns == ns and pod_name.startswith(f"{name}-") and suffix.isdigit() and int(suffix) >= want:
                self.core.delete_namespaced_pod(pod_name, ns, grace_period_seconds=0)
                if pod.spec.node_name:
                    free[pod.spec.node_name] = free.get(pod.spec.node_name, 0) + _gpus(pod)
        self._service_account(ns)
        template = self.apps.api_client.sanitize_for_serialization(d.spec.template)
        gpus = sum(int(((c.get("resources") or {}).get("limits") or {}).get(GPU, 0) or 0)
                   for c in template["spec"]["containers"])
        ready = 0
        for i in range(want):
            pod_name = f"{name}-{i}"
            pod = pods.get((ns, pod_name))
            if pod is None:
                try:
                    self.core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {
                        "name": pod_name, "labels": template["metadata"].get("labels") or {}},
                        "spec": {**template["spec"], "automountServiceAccountToken": False}})
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                node = None
            else:
                node = pod.spec.node_name
            if node is None:
                node = next((n for n in matching[i % max(len(matching), 1):] + matching if free.get(n, 0) >= gpus),
                            None)
                if node is None:
                    if pod is None or _condition(pod, "PodScheduled") != "False":
                        self.core.patch_namespaced_pod_status(pod_name, ns, {"status": {"phase": "Pending", "conditions": [
                            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                             "message": f"0/{len(nodes)} nodes are available: Insufficient {GPU}."}]}})
                    continue
                self.core.create_namespaced_pod_binding(pod_name, ns, client.V1Binding(
                    metadata=client.V1ObjectMeta(name=pod_name),
                    target=client.V1ObjectReference(kind="Node", name=node)), _preload_content=False)
                free[node] -= gpus
                pod = None  # its status is written below
            is_ready = ready < started
            ready += is_ready
            was = (_condition(pod, "Ready") == "True") if pod is not None and pod.status and \
                pod.status.phase == "Running" else None
            if was is is_ready:
                continue
            value = "True" if is_ready else "False"
            self.core.patch_namespaced_pod_status(pod_name, ns, {"status": {"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": value},
                {"type": "ContainersReady", "status": value}]}})
        return ready

    def _service_account(self, namespace: str) -> None:
        """The namespace's default ServiceAccount, which Pod admission wants (no controller-manager makes it)."""
        if namespace in self._accounts:
            return
        try:
            self.core.create_namespaced_service_account(namespace, client.V1ServiceAccount(
                metadata=client.V1ObjectMeta(name="default")))
        except ApiException as exc:
            if exc.status != 409:
                raise
        self._accounts.add(namespace)
