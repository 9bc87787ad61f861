"""The operator's own metrics (prometheus_client) and its /metrics, /healthz and /readyz endpoints."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        by_pool = ["namespace", "service", "pool"]
        self.desired = Gauge("kilowatt_desired_replicas", "Replicas kilowatt wants, per service and pool", by_pool,
                             registry=r)
        self.current = Gauge("kilowatt_ready_replicas", "Ready replicas, per service and pool", by_pool, registry=r)
        self.cost = Gauge("kilowatt_cost_usd_per_hour", "Hardware plus energy cost, per service",
                          ["namespace", "service"], registry=r)
        self.power = Gauge("kilowatt_power_watts", "Power at the wall (PUE included), per service",
                           ["namespace", "service"], registry=r)
        self.planner_seconds = Histogram("kilowatt_planner_seconds", "Planner run time per period", registry=r,
                                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
        self.period_seconds = Histogram("kilowatt_control_period_seconds", "Whole control period run time",
                                        registry=r, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
        self.decisions = Counter("kilowatt_decisions_total", "Placement changes, by kind", ["kind"], registry=r)
        self.actuations = Counter("kilowatt_actuations_total", "Deployments applied", registry=r)
        self.errors = Counter("kilowatt_errors_total", "Errors, by kind", ["kind"], registry=r)
        self.leader = Gauge("kilowatt_leader", "1 while this operator holds peering and its control loop acts",
                            registry=r)
        self.ready = False
        self.last_period = 0.0
        self.last_heartbeat = 0.0

    def record_service(self, service: Any, decision: Any, current: Any, cost: Any) -> None:
        """One service's gauges after a period: replicas wanted and ready per pool, cost and power."""
        ns, name = service.metadata.namespace, service.metadata.name
        for p, n in decision.desired.items():
            self.desired.labels(namespace=ns, service=name, pool=p).set(n)
            self.current.labels(namespace=ns, service=name, pool=p).set(current[p].ready if p in current else 0)
        self.cost.labels(namespace=ns, service=name).set(cost.total_usd_per_hour)
        self.power.labels(namespace=ns, service=name).set(cost.power_watts)

    def mark_period(self) -> None:
        self.last_period = time.monotonic()

    def heartbeat(self) -> None:
        """The control loop's driver made a pass (a period, a stand-by, or nothing due): it is alive."""
        self.last_heartbeat = time.monotonic()
        self.ready = True

    async def serve(self, port: int, period_seconds: float, host: str = "0.0.0.0",
                    stale_after_seconds: float | None = None) -> web.AppRunner:
        """``/healthz`` fails once the control loop's driver has made no pass for ``stale_after_seconds``
        (default: five periods, at least 120 s): it is stuck, and the liveness probe restarts the pod. A standby
        replica (another holds peering) and a period the API server did not answer are passes: healthy."""
        stale_after = stale_after_seconds or max(5 * period_seconds, 120.0)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            silent = time.monotonic() - self.last_heartbeat
            if self.ready and silent > stale_after:
                return web.Response(text=f"the control loop made no pass for {silent:.0f}s (limit {stale_after:.0f}s)",
                                    status=503)
            return web.Response(text="ok")

        async def readyz(_: web.Request) -> web.Response:
            return web.Response(text="ready" if self.ready else "starting", status=200 if self.ready else 503)

        app = web.Application()
        app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)])
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        await asyncio.sleep(0)
        return runner
