"""`kilowatt run`: the operator process — kopf plus the control loop and the metrics/health endpoints."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import socket
import threading
from dataclasses import dataclass

import kopf
from kubernetes import client, config

from kilowatt.api.v1alpha1 import ScalingMode
from kilowatt.clock import Clock
from kilowatt.controller import handlers
from kilowatt.controller.leadership import KopfPeering, Leadership, Standalone
from kilowatt.controller.loop import WRITE_CONCURRENCY, ControlLoop, LoopConfig
from kilowatt.controller.reads import Informers
from kilowatt.controller.telemetry import Telemetry
from kilowatt.metrics.prometheus import PrometheusSource
from kilowatt.planner import PLANNER_BUDGET_SECONDS

log = logging.getLogger("kilowatt")


@dataclass
class RunOptions:
    prometheus_url: str
    prometheus_timeout_seconds: float = 5.0
    prometheus_window: str = "2m"  # the range of rate() and histogram queries: >= 4 scrape intervals
    period_seconds: float = 15.0
    namespaces: tuple[str, ...] = ()
    default_mode: ScalingMode = ScalingMode.ACTIVE
    metrics_port: int = 8080
    peering: str = "kilowatt"
    priority: int | None = None
    standalone: bool = False
    planner_budget_seconds: float = PLANNER_BUDGET_SECONDS
    queries_json: str = ""
    peering_lifetime_seconds: int = 60
    poll_seconds: float = 0.5
    stale_after_seconds: float | None = None  # /healthz fails after this long without a period (None: 5 periods, >= 120 s)


def kube_clients(kubeconfig: str | None = None, connections: int = WRITE_CONCURRENCY + 4,
                 ) -> tuple[client.CoreV1Api, client.AppsV1Api, client.CustomObjectsApi]:
    """Clients sharing one connection pool of ``connections`` (the loop's parallel writers, and its reads)."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    api = client.ApiClient(configuration)
    return client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)


def build_loop(options: RunOptions, kubeconfig: str | None = None, source=None, clock: Clock | None = None) -> ControlLoop:
    queries = json.loads(options.queries_json) if options.queries_json.strip() else {}
    source = source or PrometheusSource(options.prometheus_url, options.prometheus_timeout_seconds, queries or None,
                                        options.prometheus_window)
    core, apps, custom = kube_clients(kubeconfig)
    loop_config = LoopConfig(options.period_seconds, options.default_mode, options.planner_budget_seconds,
                             options.namespaces, options.poll_seconds, WRITE_CONCURRENCY)
    # Periods read from watches: a steady period lists nothing. Each watch holds a connection of its own pool.
    watches = 7 + max(1, len(options.namespaces))  # pools, services (per namespace), nodes, Deployments, Pods, routing
    reads = Informers(*kube_clients(kubeconfig, connections=watches), options.namespaces)
    return ControlLoop(core, apps, custom, source, loop_config, Telemetry(), clock, reads)


async def serve(options: RunOptions, loop: ControlLoop, stop_flag: asyncio.Event | threading.Event | None = None,
                ready_flag: asyncio.Event | threading.Event | None = None) -> None:
    runner = await loop.telemetry.serve(options.metrics_port, options.period_seconds,
                                        stale_after_seconds=options.stale_after_seconds)
    # Distinct priorities: kopf freezes *every* operator when two peers share one, so a replica picks its own.
    priority = options.priority if options.priority is not None else random.randint(1, 1_000_000)
    identity = f"kilowatt@{socket.gethostname()}/{os.getpid()}/{random.randint(0, 1 << 30):x}"
    leadership = Standalone() if options.standalone else KopfPeering(loop.custom, options.peering, identity, priority)
    stopping = asyncio.Event()
    driver = asyncio.create_task(drive(loop, leadership, stopping), name="kilowatt control loop")
    try:
        await kopf.operator(
            clusterwide=True,
            standalone=options.standalone,
            priority=priority,
            identity=identity,  # a NewType of str in kopf: the same id the leadership check looks for
            peering_name=None if options.standalone else options.peering,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            memo=handlers.runtime_memo(loop, options.namespaces, options.peering_lifetime_seconds),
        )
    finally:
        stopping.set()
        await asyncio.wait({driver}, timeout=loop.config.period_seconds + 30)
        loop.close()
        await runner.cleanup()


async def drive(loop: ControlLoop, leadership: Leadership, stopping: asyncio.Event) -> None:
    """The one control loop of this process: a period whenever one is due, while this process holds peering;
    independent of how many pools exist and of kopf's watches, so it carries on by itself after the API server
    restarts. Each pass is a heartbeat for /healthz: it fails only when this driver stops or hangs."""
    while not stopping.is_set():
        try:
            if loop.due():
                if await asyncio.to_thread(leadership.active):
                    await asyncio.to_thread(loop.run_if_due)
                else:
                    loop.stand_by()
            loop.telemetry.heartbeat()
        except Exception:  # noqa: BLE001 - a period's own errors are caught inside it; this is the last guard
            log.exception("control loop pass failed")
        try:
            await asyncio.wait_for(stopping.wait(), timeout=loop.config.poll_seconds)
        except asyncio.TimeoutError:
            pass


class StartupError(RuntimeError):
    """What stops the operator before it starts, in a line or two a newcomer can act on."""


def preflight(options: RunOptions, kubeconfig: str | None = None) -> list[str]:
    """Check what a newcomer most often gets wrong before kopf starts: a cluster configured and reachable, the
    CRDs installed and listable. Raises StartupError for those; returns warnings for what the operator survives
    (Prometheus not answering, a pool no node matches)."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    from kilowatt.api.v1alpha1 import GROUP, VERSION

    try:
        core, _, custom = kube_clients(kubeconfig)
    except config.ConfigException as exc:
        raise StartupError("no Kubernetes cluster configured: set KUBECONFIG (or create ~/.kube/config), or run "
                           f"inside a cluster with the Helm chart ({exc})") from None
    host = core.api_client.configuration.host
    try:
        client.VersionApi(core.api_client).get_code(_request_timeout=5)
    except ApiException as exc:
        if exc.status in (401, 403):
            raise StartupError(f"the API server at {host} refused kilowatt's credentials ({exc.status} {exc.reason}): "
                               "check the user in KUBECONFIG, or the ServiceAccount the chart creates") from None
        raise StartupError(f"the API server at {host} answered {exc.status} {exc.reason}") from None
    except (HTTPError, OSError) as exc:
        found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
        reason = found.group(1) if found else (getattr(exc, "reason", None) or exc)
        raise StartupError(f"cannot reach the Kubernetes API server at {host} ({reason}); is the cluster running? "
                           "`kubectl cluster-info` should answer with the same KUBECONFIG") from None
    for plural in ("acceleratorpools", "inferenceservices"):
        try:
            custom.list_cluster_custom_object(GROUP, VERSION, plural, limit=1, _request_timeout=10)
        except ApiException as exc:
            if exc.status == 404:
                raise StartupError(f"the kilowatt CRDs are not installed in {host} (no {plural}.{GROUP}): "
                                   "kubectl apply -f crds/ — or install with helm, which installs them") from None
            if exc.status == 403 and not options.namespaces:
                raise StartupError(f"not allowed to list {plural}.{GROUP} cluster-wide: the operator's RBAC is "
                                   "missing; install with the Helm chart or manifests/install.yaml") from None
            if exc.status != 403:
                raise
    warnings = []
    try:
        import urllib.request

        with urllib.request.urlopen(f"{options.prometheus_url.rstrip('/')}/api/v1/query?query=vector(1)",
                                    timeout=options.prometheus_timeout_seconds):
            pass
    except Exception as exc:  # noqa: BLE001 - any failure: the operator holds placements until it answers
        warnings.append(f"Prometheus at {options.prometheus_url} does not answer ({getattr(exc, 'reason', exc)}): "
                        "kilowatt holds every placement (scales nothing down) until it does; set --prometheus-url "
                        "or KILOWATT_PROMETHEUS_URL")
    try:
        pools = custom.list_cluster_custom_object(GROUP, VERSION, "acceleratorpools")["items"]
        labels = [n.metadata.labels or {} for n in core.list_node().items]
    except ApiException:
        pools, labels = [], []  # RBAC without node access: the control loop reports what it can
    for pool in pools:
        selector = (pool.get("spec") or {}).get("nodeSelector") or {}
        if not any(all(lab.get(k) == v for k, v in selector.items()) for lab in labels):
            warnings.append(f"pool {pool['metadata']['name']}: no node matches nodeSelector {selector}; label the "
                            "GPU nodes (kubectl label node NODE key=value) or fix spec.nodeSelector")
    return warnings


def run(options: RunOptions) -> int:
    logging.basicConfig(level=os.environ.get("KILOWATT_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # every Prometheus scrape otherwise
    retries = logging.getLogger("urllib3.connectionpool")
    level, retries.level = retries.level, logging.ERROR  # its retry chatter says nothing the error does not
    try:
        found = preflight(options)
    finally:
        retries.setLevel(level)
    for warning in found:
        log.warning(warning)
    loop = build_loop(options)
    log.info("kilowatt operator: Prometheus %s, period %ss, namespaces %s, default mode %s, metrics on :%d",
             options.prometheus_url, options.period_seconds, ", ".join(options.namespaces) or "all",
             options.default_mode.value, options.metrics_port)
    asyncio.run(serve(options, loop))
    return 0
