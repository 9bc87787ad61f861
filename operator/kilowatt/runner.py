"""`kilowatt run`: the operator process — kopf plus the control loop and the metrics/health endpoints."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
from dataclasses import dataclass

import kopf
from kubernetes import client, config

from kilowatt.api.v1alpha1 import ScalingMode
from kilowatt.controller import handlers
from kilowatt.controller.loop import Clock, ControlLoop, LoopConfig
from kilowatt.controller.telemetry import Telemetry
from kilowatt.metrics.prometheus import PrometheusSource

log = logging.getLogger("kilowatt")


@dataclass
class RunOptions:
    prometheus_url: str
    prometheus_timeout_seconds: float = 5.0
    period_seconds: float = 15.0
    namespaces: tuple[str, ...] = ()
    default_mode: ScalingMode = ScalingMode.ACTIVE
    metrics_port: int = 8080
    peering: str = "kilowatt"
    priority: int | None = None
    standalone: bool = False
    planner_budget_seconds: float = 0.8
    queries_json: str = ""
    peering_lifetime_seconds: int = 60
    poll_seconds: float = 0.5


def kube_clients(kubeconfig: str | None = None) -> tuple[client.CoreV1Api, client.AppsV1Api, client.CustomObjectsApi]:
    if kubeconfig:
        api = config.new_client_from_config(config_file=kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api = client.ApiClient()
    return client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)


def build_loop(options: RunOptions, kubeconfig: str | None = None, source=None, clock: Clock | None = None) -> ControlLoop:
    queries = json.loads(options.queries_json) if options.queries_json.strip() else {}
    source = source or PrometheusSource(options.prometheus_url, options.prometheus_timeout_seconds, queries or None)
    core, apps, custom = kube_clients(kubeconfig)
    loop_config = LoopConfig(options.period_seconds, options.default_mode, options.planner_budget_seconds,
                             options.namespaces, options.poll_seconds)
    return ControlLoop(core, apps, custom, source, loop_config, Telemetry(), clock)


async def serve(options: RunOptions, loop: ControlLoop, stop_flag: asyncio.Event | threading.Event | None = None,
                ready_flag: asyncio.Event | threading.Event | None = None) -> None:
    runner = await loop.telemetry.serve(options.metrics_port, options.period_seconds)
    # Distinct priorities: kopf freezes *every* operator when two peers share one, so a replica picks its own.
    priority = options.priority if options.priority is not None else random.randint(1, 1_000_000)
    try:
        await kopf.operator(
            clusterwide=True,
            standalone=options.standalone,
            priority=priority,
            peering_name=None if options.standalone else options.peering,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            memo=handlers.runtime_memo(loop, options.namespaces, options.peering_lifetime_seconds),
        )
    finally:
        await runner.cleanup()


def run(options: RunOptions) -> int:
    logging.basicConfig(level=os.environ.get("KILOWATT_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loop = build_loop(options)
    log.info("kilowatt operator: Prometheus %s, period %ss, namespaces %s, default mode %s, metrics on :%d",
             options.prometheus_url, options.period_seconds, ", ".join(options.namespaces) or "all",
             options.default_mode.value, options.metrics_port)
    asyncio.run(serve(options, loop))
    return 0
