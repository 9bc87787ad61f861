"""Simulated vLLM pods and dcgm-exporters, for a real Prometheus to discover and scrape the way it does in a
cluster. Driven by a scripted load; counters integrate the set rate over wall-clock time.

vLLM: one /metrics per serving pod the API server lists (label ``kilowatt.dev/service``, Running and Ready),
with the names, types and labels vLLM's V1 engine exports (vllm/v1/metrics/loggers.py, PrometheusStatLogger:
``labelnames = ["model_name", "engine"]``, and ``finished_reason`` on ``vllm:request_success``). ``names="new"``
is vLLM 0.11+ (``vllm:request_time_per_output_token_seconds``, ``vllm:inter_token_latency_seconds``,
``vllm:kv_cache_usage_perc``); ``names="old"`` a vLLM before the renames (``vllm:time_per_output_token_seconds``
per token gap, ``vllm:gpu_cache_usage_perc``). Histogram buckets are vLLM's own.

DCGM: one /metrics per node, as the dcgm-exporter DaemonSet pod on it serves: per GPU ``DCGM_FI_DEV_POWER_USAGE``
and ``DCGM_FI_DEV_GPU_UTIL`` (gauges) with ``gpu``, ``UUID``, ``pci_bus_id``, ``device``, ``modelName``,
``Hostname`` and, for a GPU a pod holds, ``pod``, ``namespace``, ``container`` (dcgm-exporter's Kubernetes
mapping, internal/pkg/transformation/const.go). Each node also has a GPU another tenant's pod holds and an idle
one: neither is kilowatt's.

Discovery: a file_sd targets file Prometheus watches, one target per pod with the target labels a
prometheus-operator PodMonitor gives it (``namespace``, ``pod``, ``container``); the dcgm-exporter targets carry
the exporter pod's own ``namespace``/``pod``, so Prometheus renames the GPU's to ``exported_namespace``/
``exported_pod``, as in a cluster.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

# vllm/v1/metrics/loggers.py
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
                80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)
LENGTH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)  # build_1_2_5_buckets(max_model_len)
LABEL_SERVICE, LABEL_POOL = "kilowatt.dev/service", "kilowatt.dev/pool"
MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
OTHER_TENANT = ("ml-research", "training-0")  # a pod of another team holding a GPU on the same nodes
OTHER_TENANT_WATTS, IDLE_WATTS = 250.0, 30.0


@dataclass
class Load:
    rps: float = 0.0
    ttft_seconds: float = 0.1
    tpot_seconds: float = 0.02
    input_tokens: float = 205.0
    output_tokens: float = 200.0


@dataclass
class _Pod:
    namespace: str
    name: str
    service: str
    pool: str
    node: str
    gpus: int
    requests: float = 0.0
    prompt: float = 0.0
    generated: float = 0.0
    ttft: dict[float, float] = field(default_factory=lambda: {b: 0.0 for b in TTFT_BUCKETS})
    tpot: dict[float, float] = field(default_factory=lambda: {b: 0.0 for b in TPOT_BUCKETS})
    itl: dict[float, float] = field(default_factory=lambda: {b: 0.0 for b in TPOT_BUCKETS})
    e2e: dict[float, float] = field(default_factory=lambda: {b: 0.0 for b in E2E_BUCKETS})
    prompt_len: dict[float, float] = field(default_factory=lambda: {b: 0.0 for b in LENGTH_BUCKETS})
    output_len: dict[float, float] = field(default_factory=lambda: {b: 0.0 for b in LENGTH_BUCKETS})
    sums: dict[str, float] = field(default_factory=dict)


def _add(buckets: dict[float, float], value: float, n: float) -> None:
    for b in buckets:
        if value <= b:
            buckets[b] += n


class SimulatedFleet:
    """Series for every serving pod kilowatt's Deployments have, per the load set for its (namespace, service,
    pool) and shared evenly by its pods; DCGM power per node; an electricity price gauge."""

    def __init__(self, core: Any, names: str = "new", model_name: str = MODEL, refresh_seconds: float = 0.5) -> None:
        if names not in ("new", "old"):
            raise ValueError("names: 'new' (vLLM 0.11+) or 'old' (before the renames)")
        self.core, self.names, self.model_name = core, names, model_name
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._loads: dict[tuple[str, str, str], Load] = {}
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._power: dict[str, float] = {}
        self._prices: dict[str, float] = {}
        self._last = time.monotonic()
        self.dir = Path(tempfile.mkdtemp(prefix="kilowatt-fleet-"))
        self.targets_file = self.dir / "targets.json"
        self.targets_file.write_text("[]")
        self.port: int | None = None
        self._server = None
        self._stop = threading.Event()

    # -- what the tests set ---------------------------------------------------------------------------------------
    def set_load(self, namespace: str, service: str, pool: str, load: Load) -> None:
        with self._lock:
            self._advance()
            self._loads[(namespace, service, pool)] = load

    def set_power(self, host: str, watts: float) -> None:
        """The GPUs kilowatt's pods hold on ``host`` draw ``watts`` together."""
        with self._lock:
            self._power[host] = watts

    def set_price(self, region: str, usd_per_kwh: float | None) -> None:
        """None: the price series disappears (a feed that stopped)."""
        with self._lock:
            if usd_per_kwh is None:
                self._prices.pop(region, None)
            else:
                self._prices[region] = usd_per_kwh

    def pods(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._pods)

    # -- time and pods --------------------------------------------------------------------------------------------
    def _advance(self) -> None:
        now = time.monotonic()
        dt, self._last = now - self._last, now
        groups: dict[tuple[str, str, str], list[_Pod]] = {}
        for pod in self._pods.values():
            groups.setdefault((pod.namespace, pod.service, pod.pool), []).append(pod)
        for key, pods in groups.items():
            load = self._loads.get(key)
            if load is None or load.rps <= 0:
                continue
            n = load.rps * dt / len(pods)
            e2e = load.ttft_seconds + (load.output_tokens - 1) * load.tpot_seconds
            for p in pods:
                p.requests += n
                p.prompt += n * load.input_tokens
                p.generated += n * load.output_tokens
                _add(p.ttft, load.ttft_seconds, n)
                _add(p.tpot, load.tpot_seconds, n)
                _add(p.itl, load.tpot_seconds, n * (load.output_tokens - 1))
                _add(p.e2e, e2e, n)
                _add(p.prompt_len, load.input_tokens, n)
                _add(p.output_len, load.output_tokens, n)
                for name, value in (("ttft", n * load.ttft_seconds), ("tpot", n * load.tpot_seconds),
                                    ("itl", n * (load.output_tokens - 1) * load.tpot_seconds), ("e2e", n * e2e),
                                    ("prompt_len", n * load.input_tokens), ("output_len", n * load.output_tokens)):
                    p.sums[name] = p.sums.get(name, 0.0) + value

    def _refresh(self) -> None:
        """The serving pods the API server lists, Running and Ready on a node, and Prometheus's targets for them."""
        found: dict[tuple[str, str], tuple[str, str, str, int]] = {}
        for p in self.core.list_pod_for_all_namespaces(label_selector=LABEL_SERVICE).items:
            labels = p.metadata.labels or {}
            ready = any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])) \
                if p.status else False
            if not (p.spec.node_name and p.status and p.status.phase == "Running" and ready) \
                    or p.metadata.deletion_timestamp:
                continue
            gpus = sum(int(((c.resources.limits or {}) if c.resources else {}).get("nvidia.com/gpu", 0) or 0)
                       for c in p.spec.containers)
            found[(p.metadata.namespace, p.metadata.name)] = (labels[LABEL_SERVICE], labels.get(LABEL_POOL, ""),
                                                             p.spec.node_name, gpus)
        with self._lock:
            self._advance()
            for key in set(self._pods) - set(found):
                del self._pods[key]
            for key, (service, pool, node, gpus) in found.items():
                if key not in self._pods:
                    self._pods[key] = _Pod(key[0], key[1], service, pool, node, gpus)
            nodes = sorted({p.node for p in self._pods.values()} | set(self._power))
            pods = sorted(self._pods)
        groups = [{"targets": [f"127.0.0.1:{self.port}"],
                   "labels": {"__metrics_path__": f"/pods/{ns}/{name}/metrics", "namespace": ns, "pod": name,
                              "container": "vllm"}} for ns, name in pods]
        groups += [{"targets": [f"127.0.0.1:{self.port}"],
                    "labels": {"__metrics_path__": f"/nodes/{node}/metrics", "namespace": "gpu-operator",
                               "pod": f"nvidia-dcgm-exporter-{node}", "container": "nvidia-dcgm-exporter"}}
                   for node in nodes]
        text = json.dumps(groups, sort_keys=True)
        if text != self.targets_file.read_text():
            tmp = self.targets_file.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.targets_file)  # atomic: Prometheus never reads half a file

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self._refresh()
            except Exception:  # noqa: BLE001 - the API server may be restarting under a fault test
                pass

    # -- what each target serves ----------------------------------------------------------------------------------
    def _pod_families(self, ns: str, name: str) -> list:
        pod = self._pods.get((ns, name))
        if pod is None:
            return []
        load = self._loads.get((pod.namespace, pod.service, pod.pool)) or Load()
        base = [self.model_name, "0"]  # model_name, engine
        labels = ["model_name", "engine"]
        success = CounterMetricFamily("vllm:request_success", "Count of successfully processed requests.",
                                      labels=labels + ["finished_reason"])
        success.add_metric(base + ["length"], pod.requests * 0.3)
        success.add_metric(base + ["stop"], pod.requests * 0.7)
        prompt = CounterMetricFamily("vllm:prompt_tokens", "Number of prefill tokens processed.", labels=labels)
        prompt.add_metric(base, pod.prompt)
        generated = CounterMetricFamily("vllm:generation_tokens", "Number of generation tokens processed.",
                                        labels=labels)
        generated.add_metric(base, pod.generated)

        def histogram(metric: str, doc: str, buckets: dict[float, float], count: float, total: float):
            h = HistogramMetricFamily(metric, doc, labels=labels)
            h.add_metric(base, [(str(float(b)), v) for b, v in buckets.items()] + [("+Inf", count)], sum_value=total)
            return h

        s = pod.sums
        out = [success, prompt, generated,
               histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                         pod.ttft, pod.requests, s.get("ttft", 0.0)),
               histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                         pod.e2e, pod.requests, s.get("e2e", 0.0)),
               histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", pod.prompt_len,
                         pod.requests, s.get("prompt_len", 0.0)),
               histogram("vllm:request_generation_tokens", "Number of generation tokens processed.",
                         pod.output_len, pod.requests, s.get("output_len", 0.0))]
        gaps = pod.requests * max(load.output_tokens - 1, 0.0)
        if self.names == "new":
            out.append(histogram("vllm:request_time_per_output_token_seconds",
                                 "Histogram of time_per_output_token_seconds per request.", pod.tpot, pod.requests,
                                 s.get("tpot", 0.0)))
            out.append(histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                                 pod.itl, gaps, s.get("itl", 0.0)))
        else:
            out.append(histogram("vllm:time_per_output_token_seconds",
                                 "Histogram of time per output token in seconds.", pod.itl, gaps, s.get("itl", 0.0)))
        in_flight = load.rps / max(1, sum(1 for p in self._pods.values() if (p.namespace, p.service, p.pool) ==
                                          (pod.namespace, pod.service, pod.pool))) * (
            load.ttft_seconds + load.output_tokens * load.tpot_seconds)
        running = GaugeMetricFamily("vllm:num_requests_running", "Number of requests in model execution batches.",
                                    labels=labels)
        running.add_metric(base, in_flight)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                                    labels=labels)
        waiting.add_metric(base, 0.0)
        kv_name = "vllm:kv_cache_usage_perc" if self.names == "new" else "vllm:gpu_cache_usage_perc"
        kv = GaugeMetricFamily(kv_name, "KV-cache usage. 1 means 100 percent usage.", labels=labels)
        kv.add_metric(base, min(1.0, in_flight / 100))
        return out + [running, waiting, kv]

    def _node_families(self, node: str) -> list:
        labels = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "container", "namespace", "pod"]
        power = GaugeMetricFamily("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", labels=labels)
        util = GaugeMetricFamily("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels=labels)
        held = [p for p in self._pods.values() if p.node == node for _ in range(max(p.gpus, 1))]
        watts = self._power.get(node, 0.0)
        index = 0

        def gpu(container: str, namespace: str, pod: str, w: float, u: float) -> None:
            nonlocal index
            values = [str(index), f"GPU-{node}-{index}", f"00000000:{index:02x}:00.0", f"nvidia{index}",
                      "NVIDIA GeForce RTX 4090", node, container, namespace, pod]
            power.add_metric(values, w)
            util.add_metric(values, u)
            index += 1

        for p in held:
            gpu("vllm", p.namespace, p.name, watts / len(held), 60.0)
        gpu("trainer", *OTHER_TENANT, OTHER_TENANT_WATTS, 95.0)
        gpu("", "", "", IDLE_WATTS, 0.0)
        return [power, util]

    def _root_families(self) -> list:
        price = GaugeMetricFamily("kilowatt_test_electricity_usd_per_kwh", "Price", labels=["region"])
        for region, usd in self._prices.items():
            price.add_metric([region], usd)
        return [price]

    def render(self, path: str) -> bytes | None:
        with self._lock:
            self._advance()
            if path in ("/", "/metrics"):
                families = self._root_families()
            elif m := re.fullmatch(r"/pods/([^/]+)/([^/]+)/metrics", path):
                families = self._pod_families(m.group(1), m.group(2))
            elif m := re.fullmatch(r"/nodes/([^/]+)/metrics", path):
                families = self._node_families(m.group(1))
            else:
                return None

        class Snapshot:
            def collect(self):
                return families

        registry = CollectorRegistry()
        registry.register(Snapshot())
        return generate_latest(registry)

    def start(self, port: int) -> SimulatedFleet:
        """Serve the classic text format (0.0.4), as vLLM and the DCGM exporter do, whatever Prometheus asks
        for: prometheus_client's OpenMetrics output renames ``vllm:`` samples and Prometheus then drops them."""
        fleet = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = fleet.render(self.path.split("?")[0])
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.port = port
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
