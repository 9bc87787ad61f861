"""Simulated vLLM and DCGM exporters: the same metric names and labels the real ones expose, driven by a
scripted load, for a real Prometheus to scrape. Counters integrate the set rate over wall-clock time."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Load:
    rps: float = 0.0
    ttft_seconds: float = 0.1
    tpot_seconds: float = 0.02
    input_tokens: float = 205.0
    output_tokens: float = 200.0


@dataclass
class _Totals:
    requests: float = 0.0
    prompt: float = 0.0
    generated: float = 0.0
    ttft: dict | None = None
    tpot: dict | None = None


class SimulatedFleet:
    """Series for (namespace, service, pool); DCGM power per host; an electricity price gauge."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loads: dict[tuple[str, str, str], Load] = {}
        self._totals: dict[tuple[str, str, str], _Totals] = {}
        self._power: dict[str, float] = {}
        self._prices: dict[str, float] = {}
        self._last = time.monotonic()
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.port: int | None = None
        self._server = None

    def set_load(self, namespace: str, service: str, pool: str, load: Load) -> None:
        with self._lock:
            self._advance()
            self._loads[(namespace, service, pool)] = load

    def set_power(self, host: str, watts: float) -> None:
        with self._lock:
            self._power[host] = watts

    def set_price(self, region: str, usd_per_kwh: float | None) -> None:
        """None: the price series disappears (a feed that stopped)."""
        with self._lock:
            if usd_per_kwh is None:
                self._prices.pop(region, None)
            else:
                self._prices[region] = usd_per_kwh

    def _advance(self) -> None:
        now = time.monotonic()
        dt, self._last = now - self._last, now
        for key, load in self._loads.items():
            t = self._totals.setdefault(key, _Totals(ttft={b: 0.0 for b in BUCKETS}, tpot={b: 0.0 for b in BUCKETS}))
            n = load.rps * dt
            t.requests += n
            t.prompt += n * load.input_tokens
            t.generated += n * load.output_tokens
            for b in BUCKETS:
                if load.ttft_seconds <= b:
                    t.ttft[b] += n
                if load.tpot_seconds <= b:
                    t.tpot[b] += n * load.output_tokens

    def collect(self):  # prometheus_client Collector protocol
        with self._lock:
            self._advance()
            labels = ["namespace", "kilowatt_service", "kilowatt_pool", "model_name"]
            success = CounterMetricFamily("vllm:request_success", "Finished requests", labels=labels)
            prompt = CounterMetricFamily("vllm:prompt_tokens", "Prefill tokens", labels=labels)
            generated = CounterMetricFamily("vllm:generation_tokens", "Generated tokens", labels=labels)
            ttft = HistogramMetricFamily("vllm:time_to_first_token_seconds", "TTFT", labels=labels)
            tpot = HistogramMetricFamily("vllm:time_per_output_token_seconds", "TPOT", labels=labels)
            running = GaugeMetricFamily("vllm:num_requests_running", "Running", labels=labels)
            waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Waiting", labels=labels)
            kv = GaugeMetricFamily("vllm:gpu_cache_usage_perc", "KV cache usage", labels=labels)
            for (ns, svc, pool), t in self._totals.items():
                values = [ns, svc, pool, svc]
                load = self._loads[(ns, svc, pool)]
                success.add_metric(values, t.requests)
                prompt.add_metric(values, t.prompt)
                generated.add_metric(values, t.generated)
                ttft.add_metric(values, [(str(b), t.ttft[b]) for b in BUCKETS] + [("+Inf", t.requests)],
                                sum_value=t.requests * load.ttft_seconds)
                tpot.add_metric(values, [(str(b), t.tpot[b]) for b in BUCKETS] + [("+Inf", t.generated)],
                                sum_value=t.generated * load.tpot_seconds)
                in_flight = load.rps * (load.ttft_seconds + load.output_tokens * load.tpot_seconds)
                running.add_metric(values, in_flight)
                waiting.add_metric(values, 0.0)
                kv.add_metric(values, min(1.0, in_flight / 100))
            power = GaugeMetricFamily("DCGM_FI_DEV_POWER_USAGE", "Power draw (W)", labels=["Hostname", "gpu"])
            util = GaugeMetricFamily("DCGM_FI_DEV_GPU_UTIL", "GPU utilisation (%)", labels=["Hostname", "gpu"])
            for host, watts in self._power.items():
                power.add_metric([host, "0"], watts)
                util.add_metric([host, "0"], 50.0)
            price = GaugeMetricFamily("kilowatt_test_electricity_usd_per_kwh", "Price", labels=["region"])
            for region, usd in self._prices.items():
                price.add_metric([region], usd)
        return [success, prompt, generated, ttft, tpot, running, waiting, kv, power, util, price]

    def start(self, port: int) -> SimulatedFleet:
        """Serve the classic text format (0.0.4), as vLLM and the DCGM exporter do, whatever Prometheus asks
        for: prometheus_client's OpenMetrics output renames ``vllm:`` samples and Prometheus then drops them."""
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.port = port
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
