"""Observations from Prometheus: what vLLM exports (vllm:*) and what the DCGM exporter exports (DCGM_FI_DEV_*).

One query per metric for every service at once (grouped by labels), so a period costs a fixed handful of
queries whatever the number of services. Serving pods carry the labels ``kilowatt.dev/service`` and
``kilowatt.dev/pool``; the usual Kubernetes pod scrape config turns them into ``kilowatt_service`` and
``kilowatt_pool`` (see docs/operations.md). Every query is a template, overridable by name.
"""

from __future__ import annotations

import re

import math
from collections import defaultdict

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from kilowatt.metrics.histogram import quantile, share_below
from kilowatt.metrics.source import Observations, PoolLatency, PoolObservation, ServiceObservation, ServiceRef

BY = "namespace, kilowatt_service, kilowatt_pool"
DEFAULT_QUERIES: dict[str, str] = {
    "requests": f"sum by ({BY}) (rate(vllm:request_success_total[{{window}}]))",
    "prompt_tokens": f"sum by ({BY}) (rate(vllm:prompt_tokens_total[{{window}}]))",
    "generation_tokens": f"sum by ({BY}) (rate(vllm:generation_tokens_total[{{window}}]))",
    "ttft_buckets": f"sum by ({BY}, le) (rate(vllm:time_to_first_token_seconds_bucket[{{window}}]))",
    "tpot_buckets": f"sum by ({BY}, le) (rate(vllm:time_per_output_token_seconds_bucket[{{window}}]))",
    "running": f"sum by ({BY}) (vllm:num_requests_running)",
    "waiting": f"sum by ({BY}) (vllm:num_requests_waiting)",
    "kv_cache": f"avg by ({BY}) (vllm:gpu_cache_usage_perc)",
    "power": "sum by (Hostname) (DCGM_FI_DEV_POWER_USAGE)",
    "utilisation": "avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)",
}


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
        # No retries inside a period: a failed read is reported now and tried again next period.
        self._client = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout_seconds, retry=Retry(total=0))

    def _query(self, name: str) -> list[dict]:
        return self._client.custom_query(self.queries[name].format(window=self.window), timeout=self.timeout_seconds)

    def observe(self, services: list[ServiceRef], node_pools: dict[str, str], price_queries: list[str]) -> Observations:
        try:
            raw = {name: self._query(name) for name in self.queries}
            prices = {}
            for q in price_queries:
                result = self._client.custom_query(q, timeout=self.timeout_seconds)
                if result:
                    prices[q] = float(result[0]["value"][1])
        except Exception as exc:  # noqa: BLE001 - any failure to read is "metrics unavailable", with its reason
            return Observations(available=False, error=f"Prometheus at {self.url}: {_reason(exc, self.timeout_seconds)}")
        return Observations(
            available=True,
            services={s.key: _service(s, raw) for s in services},
            pools=_pools(raw, node_pools),
            prices_usd_per_kwh=prices,
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


def _key(metric: dict) -> tuple[str, str]:
    return f"{metric.get('namespace', '')}/{metric.get('kilowatt_service', '')}", metric.get("kilowatt_pool", "")


def _value(sample: dict) -> float:
    value = float(sample["value"][1])
    return 0.0 if math.isnan(value) else value


def _by_pool(series: list[dict], key: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for sample in series:
        service, pool = _key(sample["metric"])
        if service == key:
            out[pool] += _value(sample)
    return out


def _buckets(series: list[dict], key: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for sample in series:
        service, pool = _key(sample["metric"])
        if service == key:
            out[pool][float(sample["metric"]["le"])] += _value(sample)
    return {pool: sorted(b.items()) for pool, b in out.items()}


def _merge(buckets: dict[str, list[tuple[float, float]]]) -> list[tuple[float, float]]:
    total: dict[float, float] = defaultdict(float)
    for points in buckets.values():
        for bound, count in points:
            total[bound] += count
    return sorted(total.items())


def _service(ref: ServiceRef, raw: dict[str, list[dict]]) -> ServiceObservation | None:
    requests = _by_pool(raw["requests"], ref.key)
    if not requests:
        return None  # no series at all: not scraped yet, or no pods. Unknown, not zero.
    q = ref.percentile / 100.0
    ttft, tpot = _buckets(raw["ttft_buckets"], ref.key), _buckets(raw["tpot_buckets"], ref.key)
    rps = sum(requests.values())
    prompt, generated = sum(_by_pool(raw["prompt_tokens"], ref.key).values()), sum(
        _by_pool(raw["generation_tokens"], ref.key).values())
    all_ttft, all_tpot = _merge(ttft), _merge(tpot)
    shares = [x for x in (share_below(ref.ttft_seconds, all_ttft), share_below(ref.tpot_seconds, all_tpot))
              if x is not None]
    by_pool = {
        pool: PoolLatency(r, quantile(q, ttft.get(pool, [])), quantile(q, tpot.get(pool, [])))
        for pool, r in requests.items()
    }
    return ServiceObservation(
        requests_per_second=rps,
        input_tokens_mean=prompt / rps if rps > 0 else None,
        output_tokens_mean=generated / rps if rps > 0 else None,
        ttft_p_seconds=quantile(q, all_ttft),
        tpot_p_seconds=quantile(q, all_tpot),
        slo_attainment=min(shares) if shares else None,
        running=sum(_by_pool(raw["running"], ref.key).values()) if raw["running"] else None,
        waiting=sum(_by_pool(raw["waiting"], ref.key).values()) if raw["waiting"] else None,
        kv_cache_usage=max(_by_pool(raw["kv_cache"], ref.key).values(), default=None),
        by_pool=by_pool,
    )


def _pools(raw: dict[str, list[dict]], node_pools: dict[str, str]) -> dict[str, PoolObservation]:
    power: dict[str, float] = defaultdict(float)
    utilisation: dict[str, list[float]] = defaultdict(list)
    for sample in raw["power"]:
        pool = node_pools.get(sample["metric"].get("Hostname", ""))
        if pool:
            power[pool] += _value(sample)
    for sample in raw["utilisation"]:
        pool = node_pools.get(sample["metric"].get("Hostname", ""))
        if pool:
            utilisation[pool].append(_value(sample) / 100.0)
    pools = set(power) | set(utilisation)
    return {
        p: PoolObservation(power.get(p), sum(utilisation[p]) / len(utilisation[p]) if utilisation[p] else None)
        for p in pools
    }
