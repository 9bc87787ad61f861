"""A simulated cluster on top of the embedded control plane: kube-controller-manager and kube-scheduler (built
by scripts/setup.sh from the Go module proxy) and kwok simulating GPU nodes and pod lifecycles.

Deployments become ReplicaSets and Pods (the real controllers), Pods are scheduled by the real scheduler on
nodeSelector, tolerations and allocatable ``nvidia.com/gpu`` — or stay Pending when a pool is full — and kwok
marks the ones bound to its nodes Running and Ready. Owner references are followed by the real garbage collector.
A ServiceAccount's token comes from the TokenRequest API, so an operator can run with exactly the credentials the
Helm chart gives it.
"""

from __future__ import annotations

import time
from typing import Any

from kilowatt.demo.controlplane import ControlPlane, ControlPlaneError, cache_bin_dir, find_binary, free_port

KWOK_ANNOTATION = "kwok.x-k8s.io/node"


class SimulatedCluster:
    def __init__(self, control_plane: ControlPlane) -> None:
        self.cp = control_plane

    def start(self, timeout_seconds: float = 60.0) -> SimulatedCluster:
        cp = self.cp
        kubeconfig = str(cp.kubeconfig)
        cp._spawn("kube-controller-manager", [
            str(find_binary("kube-controller-manager")), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--service-account-private-key-file={cp.dir / 'sa.key'}", f"--root-ca-file={cp.dir / 'ca.crt'}",
            "--use-service-account-credentials=false", "--controllers=*",
            "--node-monitor-grace-period=120s", "--v=0",  # kwok's heartbeats come every 20-45 s
        ])
        cp._spawn("kube-scheduler", [
            str(find_binary("kube-scheduler")), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--v=0",
        ])
        stages = cache_bin_dir().parent / "kwok-stages.yaml"
        if not stages.is_file():
            raise ControlPlaneError(f"{stages} not found; run scripts/setup.sh to install kwok and its stages")
        cp._spawn("kwok", [
            str(find_binary("kwok")), f"--kubeconfig={kubeconfig}", f"--config={stages}", "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            "--server-address=127.0.0.1:" + str(free_port()),
        ])
        self._wait_for_controllers(timeout_seconds)
        return self

    def _wait_for_controllers(self, timeout_seconds: float) -> None:
        """The controller-manager's ServiceAccount controller creates the default namespace's ServiceAccount."""
        from kubernetes import client, config

        core = client.CoreV1Api(config.new_client_from_config(config_file=str(self.cp.kubeconfig)))
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            for proc, name in zip(self.cp.processes[2:], ("kube-controller-manager", "kube-scheduler", "kwok")):
                if proc.poll() is not None:
                    raise ControlPlaneError(f"{name} exited with code {proc.returncode}:\n{self.cp.log(name)[-2000:]}")
            try:
                core.read_namespaced_service_account("default", "default")
                return
            except Exception:  # noqa: BLE001 - not there yet
                pass
            time.sleep(0.3)
        raise ControlPlaneError("kube-controller-manager created no default ServiceAccount in "
                                f"{timeout_seconds:.0f}s:\n{self.cp.log('kube-controller-manager')[-2000:]}")

    def stop(self) -> None:
        self.cp.stop()


def make_kwok_gpu_node(core: Any, name: str, labels: dict[str, str], gpus: int,
                       taints: list[dict] | None = None) -> None:
    """A node kwok keeps Ready, with ``gpus`` allocatable ``nvidia.com/gpu``."""
    from kubernetes import client

    resources = {"nvidia.com/gpu": str(gpus), "cpu": "64", "memory": "512Gi", "pods": "110"}
    node = client.V1Node(
        metadata=client.V1ObjectMeta(name=name, labels={**labels, "kubernetes.io/hostname": name, "type": "kwok"},
                                     annotations={KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"}),
        spec=client.V1NodeSpec(taints=[client.V1Taint(**t) for t in taints or []] or None),
        status=client.V1NodeStatus(allocatable=resources, capacity=resources))
    core.create_node(node)
