"""Shared parts for operator tests: GPU nodes, a simulated fleet behind a real Prometheus, the operator in a
thread (exactly what `kilowatt run` runs), and waiting helpers."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from kilowatt.api.v1alpha1 import ScalingMode
from kilowatt.metrics.prometheus import PrometheusSource
from kilowatt.runner import RunOptions, build_loop, serve
from kilowatt.demo.controlplane import free_port

GROUP, VERSION = "kilowatt.dev", "v1alpha1"


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.3,
             what: str | Callable[[], str] = "") -> Any:
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        time.sleep(interval)
    described = what() if callable(what) else (what or predicate)
    raise AssertionError(f"timed out after {timeout}s waiting for {described}: last error {last_error}")


def make_gpu_node(core: client.CoreV1Api, name: str, gpu_label: str, gpus: int) -> None:
    node = client.V1Node(metadata=client.V1ObjectMeta(name=name, labels={"kilowatt.dev/gpu": gpu_label}))
    core.create_node(node)
    core.patch_node_status(name, {"status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "32",
                                                             "memory": "256Gi", "pods": "110"},
                                             "capacity": {"nvidia.com/gpu": str(gpus)}}})


def pool_body(name: str, gpu: dict, selector: str, usd_per_gpu_hour: float, electricity: dict, pue: float) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AcceleratorPool", "metadata": {"name": name},
            "spec": {"gpu": gpu, "nodeSelector": {"kilowatt.dev/gpu": selector}, "gpusPerNode": 8,
                     "replicaStartupSeconds": 1,
                     "cost": {"usdPerGPUHour": usd_per_gpu_hour, "pue": pue, "electricity": electricity}}}


RTX4090 = {"model": "RTX-4090", "memoryGiB": 24, "memoryBandwidthGBps": 1008, "fp16TFLOPS": 165,
           "boardPowerWatts": 450, "idlePowerWatts": 68}
H100 = {"model": "H100-SXM", "memoryGiB": 80, "memoryBandwidthGBps": 3350, "fp16TFLOPS": 990,
        "boardPowerWatts": 700, "idlePowerWatts": 105, "interconnect": "NVLink"}
PRICE_QUERY = 'max(kilowatt_test_electricity_usd_per_kwh{region="onprem"})'


def service_body(namespace: str, name: str, **spec: Any) -> dict:
    base = {
        "model": {"name": "meta-llama/Meta-Llama-3-8B-Instruct", "parametersBillion": 8.03, "dtype": "bf16",
                  "layers": 32, "kvHeads": 8, "headDim": 128},
        "slo": {"ttftMilliseconds": 500, "tpotMilliseconds": 50, "percentile": 95},
        "replicas": {"min": 1, "max": 20},
        "scaling": {"mode": "Active", "scaleDownStabilizationSeconds": 0, "maxScaleDownStep": 20},
        "template": {"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.8.5",
                                              "args": ["--model", "meta-llama/Meta-Llama-3-8B-Instruct"]}]}},
    }
    for key, value in spec.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": namespace}, "spec": base}


class OperatorThread:
    """The operator as `kilowatt run` runs it, in a thread with its own event loop; stop() shuts kopf down."""

    def __init__(self, kubeconfig: str, prometheus_url: str, period_seconds: float = 1.0, standalone: bool = True,
                 priority: int | None = None, peering: str = "kilowatt", window: str = "10s",
                 default_mode: ScalingMode = ScalingMode.ACTIVE, peering_lifetime_seconds: int = 10,
                 stale_after_seconds: float | None = None) -> None:
        os.environ["KUBECONFIG"] = kubeconfig
        self.options = RunOptions(prometheus_url=prometheus_url, prometheus_timeout_seconds=2.0,
                                  period_seconds=period_seconds, metrics_port=free_port(), standalone=standalone,
                                  priority=priority, peering=peering, default_mode=default_mode,
                                  peering_lifetime_seconds=peering_lifetime_seconds,
                                  stale_after_seconds=stale_after_seconds)
        source = PrometheusSource(prometheus_url, 2.0, window=window)
        self.loop = build_loop(self.options, kubeconfig, source)
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(serve(self.options, self.loop, self.stop_flag, self.ready_flag))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def start(self) -> OperatorThread:
        self.thread.start()
        wait_for(self.ready_flag.is_set, 30, what="kopf ready")
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=30)
