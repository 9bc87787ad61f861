"""Observations from Prometheus: what vLLM exports (``vllm:*``) and what the DCGM exporter exports
(``DCGM_FI_DEV_*``), read by today's names and attributed without any relabelling.

Names. vLLM renamed what kilowatt reads: the per-request TPOT the SLO speaks of is
``vllm:request_time_per_output_token_seconds`` (``vllm:time_per_output_token_seconds``, deprecated in 0.11 and
since removed, timed each gap between tokens: that is ``vllm:inter_token_latency_seconds`` now); KV-cache use
is ``vllm:kv_cache_usage_perc`` (was ``vllm:gpu_cache_usage_perc``). Each reading has a list of names, newest
first; the source asks Prometheus which exist (one query over the ``vllm:`` names it holds) and reads the first
found, so a cluster still on an older vLLM keeps working. ``Observations.metric_names`` says what was found.

Attribution. Series are grouped by ``namespace`` and ``pod`` — the target labels a stock PodMonitor (or any
``kubernetes_sd`` pod scrape) adds — and mapped to (service, pool) through the pod list the loop reads anyway
(``Topology.pods``). The labels of kilowatt's old relabelling rule, ``kilowatt_service``/``kilowatt_pool``, still
work. Only series whose ``model_name`` is one the service serves count. DCGM power is attributed to the pod
holding the GPU (``exported_pod``/``exported_namespace`` where Prometheus renamed the exporter's own labels, else
``pod``/``namespace``); a node whose GPUs carry no pod labels at all (dcgm-exporter without its Kubernetes
mapping) is counted whole, by ``Hostname``/``hostname``.

One query per reading for every service at once, so a period costs a fixed handful of queries whatever the
number of services. Every query is a template, overridable by name.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from kilowatt.metrics.histogram import quantile, share_below, within_all
from kilowatt.metrics.source import (
    Observations,
    PoolLatency,
    PoolObservation,
    ServiceObservation,
    ServiceRef,
    Topology,
)

# What each reading is called, newest vLLM first (vllm/v1/metrics/loggers.py; docs/operations.md lists them).
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "requests": ("vllm:request_success_total",),
    "prompt_tokens": ("vllm:prompt_tokens_total",),
    "generation_tokens": ("vllm:generation_tokens_total",),
    "ttft_buckets": ("vllm:time_to_first_token_seconds_bucket",),
    "tpot_buckets": ("vllm:request_time_per_output_token_seconds_bucket", "vllm:time_per_output_token_seconds_bucket"),
    "e2e_buckets": ("vllm:e2e_request_latency_seconds_bucket",),
    "prompt_length_buckets": ("vllm:request_prompt_tokens_bucket",),
    "generation_length_buckets": ("vllm:request_generation_tokens_bucket",),
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "kv_cache": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
BY = "namespace, pod, model_name, kilowatt_service, kilowatt_pool"
GPU_BY = "namespace, pod, exported_namespace, exported_pod, Hostname, hostname"
_RATE = f"sum by ({BY}) (rate({{metric}}[{{window}}]))"
_BUCKETS = f"sum by ({BY}, le) (rate({{metric}}[{{window}}]))"
DEFAULT_QUERIES: dict[str, str] = {
    "requests": _RATE,
    "prompt_tokens": _RATE,
    "generation_tokens": _RATE,
    "ttft_buckets": _BUCKETS,
    "tpot_buckets": _BUCKETS,
    "e2e_buckets": _BUCKETS,
    "prompt_length_buckets": _BUCKETS,
    "generation_length_buckets": _BUCKETS,
    "running": f"sum by ({BY}) ({{metric}})",
    "waiting": f"sum by ({BY}) ({{metric}})",
    "kv_cache": f"max by ({BY}) ({{metric}})",
    "power": f"sum by ({GPU_BY}) (DCGM_FI_DEV_POWER_USAGE)",
    "utilisation": f"avg by ({GPU_BY}) (DCGM_FI_DEV_GPU_UTIL)",
}
NAMES_QUERY = 'count by (__name__) ({__name__=~"vllm:.+"})'
REPROBE_EVERY_PERIODS = 20  # while a reading has none of its names, ask again this often


class PrometheusSource:
    def __init__(
        self,
        url: str,
        timeout_seconds: float = 5.0,
        queries: dict[str, str] | None = None,
        window: str = "1m",
    ) -> None:
        unknown = set(queries or {}) - set(DEFAULT_QUERIES)
        if unknown:
            raise ValueError(f"unknown query names {sorted(unknown)}; known: {sorted(DEFAULT_QUERIES)}")
        self.url = url
        self.timeout_seconds = timeout_seconds
        self.queries = {**DEFAULT_QUERIES, **(queries or {})}
        self.window = window
        self.window_seconds = duration_seconds(window)
        self.names: dict[str, str] = {}  # reading -> the series name read for it (found, or the newest if none)
        self.found: set[str] = set()  # readings whose name Prometheus holds
        self._periods_since_probe = 0
        # No retries inside a period: a failed read is reported now and tried again next period.
        self._client = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout_seconds, retry=Retry(total=0))

    def _probe(self) -> None:
        """Which of each reading's names Prometheus holds: one query over every vllm: name."""
        present = {r["metric"].get("__name__", "") for r in
                   self._client.custom_query(NAMES_QUERY, timeout=self.timeout_seconds)}
        self.found = set()
        for reading, candidates in METRIC_NAMES.items():
            hit = next((n for n in candidates if n in present), None)
            self.names[reading] = hit or candidates[0]
            if hit:
                self.found.add(reading)
        self._periods_since_probe = 0

    def _query(self, name: str) -> list[dict]:
        text = self.queries[name].format(window=self.window, metric=self.names.get(name, ""))
        return self._client.custom_query(text, timeout=self.timeout_seconds)

    def observe(self, services: list[ServiceRef], topology: Topology, price_queries: list[str]) -> Observations:
        try:
            # Until anything is found (no vLLM pod scraped yet) ask every period; then, while some reading has
            # none of its names, every REPROBE_EVERY_PERIODS.
            if not self.found or (len(self.found) < len(METRIC_NAMES)
                                  and self._periods_since_probe >= REPROBE_EVERY_PERIODS):
                self._probe()
            self._periods_since_probe += 1
            raw = {name: self._query(name) for name in self.queries}
            prices = {}
            for q in price_queries:
                result = self._client.custom_query(q, timeout=self.timeout_seconds)
                if result:
                    prices[q] = float(result[0]["value"][1])
        except Exception as exc:  # noqa: BLE001 - any failure to read is "metrics unavailable", with its reason
            return Observations(available=False, error=f"Prometheus at {self.url}: {_reason(exc, self.timeout_seconds)}")
        series = _Attributed(raw, topology)
        return Observations(
            available=True,
            services={s.key: _service(s, series, self.window_seconds) for s in services},
            pools=_pools(raw, topology),
            prices_usd_per_kwh=prices,
            metric_names={r: self.names[r] for r in sorted(self.found)},
        )


def _reason(exc: Exception, timeout_seconds: float) -> str:
    """One readable clause: what a person can act on, not urllib3's retry chain."""
    import requests

    if isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc).lower():
        return f"read timed out: no answer within {timeout_seconds:g}s (--prometheus-timeout-seconds)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
        return f"cannot connect ({found.group(1) if found else 'connection failed'})"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


def _value(sample: dict) -> float:
    value = float(sample["value"][1])
    return 0.0 if math.isnan(value) else value


class _Attributed:
    """Each vLLM series of this period under the service it belongs to, with its pool and model_name."""

    def __init__(self, raw: dict[str, list[dict]], topology: Topology) -> None:
        self.by_reading: dict[str, dict[str, list[tuple[str, str, dict]]]] = {}
        for reading in METRIC_NAMES:
            grouped: dict[str, list[tuple[str, str, dict]]] = defaultdict(list)
            for sample in raw.get(reading, []):
                owner = _owner(sample["metric"], topology)
                if owner is not None:
                    grouped[owner[0]].append((owner[1], sample["metric"].get("model_name", ""), sample))
            self.by_reading[reading] = grouped

    def of(self, reading: str, ref: ServiceRef) -> list[tuple[str, dict]]:
        """(pool, sample) for the service's series of a reading; series of models it does not serve left out."""
        return [(pool, sample) for pool, model, sample in self.by_reading[reading].get(ref.key, [])
                if not model or not ref.model_names or model in ref.model_names]


def _owner(metric: dict, topology: Topology) -> tuple[str, str] | None:
    """(service key, pool) a series belongs to: by its pod, else by kilowatt's old relabelled labels."""
    namespace, pod = metric.get("namespace", ""), metric.get("pod", "")
    if (namespace, pod) in topology.pods:
        return topology.pods[(namespace, pod)]
    if metric.get("kilowatt_service"):
        return f"{namespace}/{metric['kilowatt_service']}", metric.get("kilowatt_pool", "")
    return None


def _by_pool(series: list[tuple[str, dict]]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for pool, sample in series:
        out[pool] += _value(sample)
    return out


def _buckets(series: list[tuple[str, dict]]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for pool, sample in series:
        out[pool][float(sample["metric"]["le"])] += _value(sample)
    return {pool: sorted(b.items()) for pool, b in out.items()}


def _merge(buckets: dict[str, list[tuple[float, float]]]) -> list[tuple[float, float]]:
    total: dict[float, float] = defaultdict(float)
    for points in buckets.values():
        for bound, count in points:
            total[bound] += count
    return sorted(total.items())


def duration_seconds(text: str) -> float:
    """A Prometheus duration (``90s``, ``1m``, ``1h30m``) in seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a Prometheus duration (e.g. 1m, 90s, 1h30m)")
    return sum(int(n) * units[u] for n, u in parts)


def _service(ref: ServiceRef, series: _Attributed, window_seconds: float = 60.0) -> ServiceObservation | None:
    requests = _by_pool(series.of("requests", ref))
    if not requests:
        return None  # no series at all: not scraped yet, or no pods. Unknown, not zero.
    q = ref.percentile / 100.0
    ttft, tpot = _buckets(series.of("ttft_buckets", ref)), _buckets(series.of("tpot_buckets", ref))
    rps = sum(requests.values())
    prompt = sum(_by_pool(series.of("prompt_tokens", ref)).values())
    generated = sum(_by_pool(series.of("generation_tokens", ref)).values())
    all_ttft, all_tpot = _merge(ttft), _merge(tpot)
    attainment = within_all([share_below(ref.ttft_seconds, all_ttft), share_below(ref.tpot_seconds, all_tpot)])
    by_pool = {
        pool: PoolLatency(r, quantile(q, ttft.get(pool, [])), quantile(q, tpot.get(pool, [])))
        for pool, r in requests.items()
    }
    running, waiting = series.of("running", ref), series.of("waiting", ref)
    return ServiceObservation(
        requests_per_second=rps,
        input_tokens_mean=prompt / rps if rps > 0 else None,
        output_tokens_mean=generated / rps if rps > 0 else None,
        ttft_p_seconds=quantile(q, all_ttft),
        tpot_p_seconds=quantile(q, all_tpot),
        slo_attainment=attainment,
        running=sum(_by_pool(running).values()) if running else None,
        waiting=sum(_by_pool(waiting).values()) if waiting else None,
        kv_cache_usage=max(_by_pool(series.of("kv_cache", ref)).values(), default=None),
        by_pool=by_pool,
        e2e_p_seconds=quantile(q, _merge(_buckets(series.of("e2e_buckets", ref)))),
        prompt_length_buckets=tuple(_merge(_buckets(series.of("prompt_length_buckets", ref)))),
        output_length_buckets=tuple(_merge(_buckets(series.of("generation_length_buckets", ref)))),
        window_seconds=window_seconds,
    )


def _host(metric: dict) -> str:
    return metric.get("Hostname") or metric.get("hostname") or ""


def _gpu_pool(metric: dict, topology: Topology, hosts_with_pods: set[str]) -> str | None:
    """The pool a GPU's series counts for: the pool of the kilowatt pod holding it; on a node whose exporter
    maps no GPU to a pod, the node's pool. A GPU another tenant's pod holds, or one idle beside pod-mapped
    ones, counts for none."""
    if metric.get("exported_pod"):
        owner = topology.pods.get((metric.get("exported_namespace", ""), metric["exported_pod"]))
        return owner[1] if owner else None
    owner = topology.pods.get((metric.get("namespace", ""), metric.get("pod", "")))
    if owner:
        return owner[1]
    host = _host(metric)
    return topology.node_pools.get(host) if host not in hosts_with_pods else None


def _pools(raw: dict[str, list[dict]], topology: Topology) -> dict[str, PoolObservation]:
    hosts_with_pods = {_host(s["metric"]) for s in raw["power"] + raw["utilisation"]
                       if s["metric"].get("exported_pod")
                       or (s["metric"].get("namespace", ""), s["metric"].get("pod", "")) in topology.pods}
    power: dict[str, float] = defaultdict(float)
    utilisation: dict[str, list[float]] = defaultdict(list)
    for sample in raw["power"]:
        pool = _gpu_pool(sample["metric"], topology, hosts_with_pods)
        if pool:
            power[pool] += _value(sample)
    for sample in raw["utilisation"]:
        pool = _gpu_pool(sample["metric"], topology, hosts_with_pods)
        if pool:
            utilisation[pool].append(_value(sample) / 100.0)
    pools = set(power) | set(utilisation)
    return {
        p: PoolObservation(power.get(p), sum(utilisation[p]) / len(utilisation[p]) if utilisation[p] else None)
        for p in pools
    }
