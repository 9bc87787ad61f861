"""Apply: the thin step that writes what deciding and reporting computed — Deployments, status, events.

Remembers what it last wrote (in memory, so a restart writes everything once again) so that a period at steady
load costs few API requests: status is patched at once when a decision changed and at most every
``STATUS_REFRESH_SECONDS`` of the loop's clock when only drifting figures (load, cost, power) moved.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from kubernetes.client.rest import ApiException

from kilowatt.api.v1alpha1 import GROUP, VERSION, AcceleratorPool, ScalingMode
from kilowatt.clock import Clock
from kilowatt.controller.actuator import ANNOTATION_TEMPLATE, Actuator, deployment_manifest
from kilowatt.controller.conditions import condition_message, conditions_same, set_condition
from kilowatt.controller.events import EventRecorder
from kilowatt.controller.observe import ObservedService
from kilowatt.controller.reads import Reads
from kilowatt.controller.routing import Backend, backend_weights, describe, missing_api, routing_objects, stamp
from kilowatt.controller.status import Event, Routed, invalid_conditions
from kilowatt.controller.telemetry import Telemetry
from kilowatt.controller.validation import Problem
from kilowatt.decide import Decision

log = logging.getLogger("kilowatt.apply")

FIGURES = ("observed", "sloAttainment", "costPerHourUsd", "powerWatts")  # drift every period
STATUS_REFRESH_SECONDS = 30.0


class Applier:
    def __init__(self, core: Any, apps: Any, custom: Any, telemetry: Telemetry, clock: Clock,
                 reads: Reads | None = None) -> None:
        self.custom, self.clock, self.telemetry = custom, clock, telemetry
        self.actuator = Actuator(apps, reads)
        self.events = EventRecorder(core)
        self._last_status: dict[str, dict] = {}  # service key -> status as last written
        self._last_write: dict[str, float] = {}  # service key -> clock.monotonic() of that write
        self._last_pool_status: dict[str, dict] = {}
        self._weights: dict[str, dict[str, int]] = {}  # service key -> its HTTPRoute's weights as applied

    def previous_status(self, item: ObservedService) -> dict:
        return self._last_status.get(item.key) or dict(item.body.get("status") or {})

    def deployments(self, item: ObservedService, decision: Decision, pools: dict[str, AcceleratorPool],
                    mode: ScalingMode) -> None:
        """Server-side apply the Deployments whose replicas, degree or rendered pod template change (Active mode
        only): a template edited in the InferenceService rolls out at once, not at the next scale event."""
        if mode is not ScalingMode.ACTIVE:
            return
        current = item.input.current
        for pool_name, replicas in decision.desired.items():
            k = decision.tensor_parallel[pool_name]
            if replicas == 0 and pool_name not in current:
                continue
            manifest = deployment_manifest(item.body, pools[pool_name], replicas, k)
            if pool_name in current and current[pool_name].replicas == replicas and \
                    current[pool_name].tensor_parallel == k and item.applied_templates.get(pool_name) == \
                    manifest["metadata"]["annotations"][ANNOTATION_TEMPLATE]:
                continue
            self.actuator.apply(manifest)
            self.telemetry.actuations.inc()

    def routes(self, item: ObservedService, decision: Decision, served_apis: set[str],
               existing: dict[tuple[str, str, str], str | None], capacity_rps: Callable[[str, int], float]) -> Routed:
        """Apply the Service / HTTPRoute / InferencePools ``spec.routing.mode`` calls for (Active mode), delete
        the ones it no longer does (a pool scaled to zero, a mode switch), and say how they stand. ``existing``:
        the objects there now, each with the hash kilowatt stamped on it when it applied it — an object whose hash
        matches is not written again, after a restart too.
        ``capacity_rps(pool, degree)``: one replica's capacity within the SLO, for the route's weights."""
        routing = item.input.service.spec.routing
        missing = missing_api(routing.mode, served_apis)
        if missing is not None:
            return Routed(False, "RoutingAPIMissing",
                          f"spec.routing.mode {routing.mode.value} needs {missing.kind} ({missing.api_version}), "
                          "which this cluster does not serve: install its CRDs (docs/operations.md, Routing), or set "
                          "spec.routing.mode to Service; the Deployments are placed all the same")
        current = item.input.current
        pools = sorted(p for p, n in decision.desired.items() if n > 0 or (p in current and current[p].replicas > 0))
        backends = [Backend(p, current[p].ready if p in current else 0,
                            capacity_rps(p, decision.tensor_parallel.get(p, 1))) for p in pools]
        weights = backend_weights(backends, self._weights.get(item.key))
        objects = routing_objects(item.body, routing, pools, weights)
        wanted = {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects}
        for o in objects:
            digest = stamp(o)
            if existing.get((o["apiVersion"], o["kind"], o["metadata"]["name"])) != digest:
                self.actuator.apply(o)
                self.telemetry.actuations.inc()
        for api_version, kind, name in sorted(set(existing) - wanted):
            if api_version == "v1" or api_version in served_apis:
                self.actuator.delete(item.input.service.metadata.namespace, name, api_version, kind)
        self._weights[item.key] = weights
        ready = sum(b.ready for b in backends)
        return Routed(True, "Routed", describe(routing, weights, ready))

    def post(self, body: dict, events: list[Event]) -> None:
        for e in events:
            self.events.post(body, e.type, e.reason, e.message)

    def service_status(self, body: dict, status: dict) -> None:
        """Patch status when a decision changed (placement, conditions, generation) at once; when only the
        drifting figures changed, at most every STATUS_REFRESH_SECONDS — so 1000 services at steady load do not
        cost 1000 PATCHes a period."""
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        last = self._last_status.get(key)
        if last is not None and _decisive(last) == _decisive(status):
            if all(last.get(k) == status.get(k) for k in FIGURES) and last.get("conditions") == status.get(
                    "conditions"):
                return
            if self.clock.monotonic() - self._last_write.get(key, -float("inf")) < STATUS_REFRESH_SECONDS:
                return
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"], "inferenceservices",
                                                          meta["name"], {"status": status})
        self._last_status[key] = status
        self._last_write[key] = self.clock.monotonic()

    def invalid_service(self, body: dict, problems: list[Problem]) -> None:
        meta = body["metadata"]
        text = "; ".join(str(p) for p in problems)
        status = dict(body.get("status") or {})
        self._last_status.pop(f"{meta['namespace']}/{meta['name']}", None)
        if condition_message(status, "Ready") == text:
            return
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], "inferenceservices", meta["name"],
            {"status": {"conditions": invalid_conditions(status, text, self.clock.now()),
                        "observedGeneration": meta.get("generation")}})
        self.events.post(body, "Warning", "InvalidSpec", text)

    def apply_failed(self, body: dict, exc: Exception) -> str:
        """One service's write was refused: Placed=False (ApplyFailed) with the API server's message and a Warning
        event; the period goes on with the others. Returns the message."""
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        message = f"{key}: {api_message(exc)}"
        log.warning("applying %s failed: %s", key, message)
        status = self._last_status.pop(key, None) or dict(body.get("status") or {})
        placed = next((c for c in status.get("conditions") or [] if c.get("type") == "Placed"), {})
        if placed.get("reason") == "ApplyFailed" and placed.get("message") == message[:1000]:
            return message  # said already: no event or status write every period
        self.events.post(body, "Warning", "ApplyFailed", message)
        conditions = set_condition(status.get("conditions") or [], "Placed", False, "ApplyFailed", message,
                                   self.clock.now())
        try:
            self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"], "inferenceservices",
                                                              meta["name"], {"status": {"conditions": conditions}})
        except ApiException as again:
            log.warning("could not report ApplyFailed on %s: %s", key, api_message(again))
        return message

    def invalid_pool(self, body: dict, problems: list[Problem]) -> None:
        text = "; ".join(str(p) for p in problems)
        status = dict(body.get("status") or {})
        if condition_message(status, "Ready") == text:
            return
        self.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "acceleratorpools", body["metadata"]["name"],
            {"status": {"conditions": invalid_conditions(status, text, self.clock.now(), placed=False)}})
        self.events.post(body, "Warning", "InvalidSpec", text)

    def previous_pool_status(self, name: str) -> dict:
        return self._last_pool_status.get(name, {})

    def pool_status(self, pool: AcceleratorPool, status: dict, events: list[Event]) -> None:
        name = pool.name
        previous = self._last_pool_status.get(name, {})
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AcceleratorPool",
                "metadata": {"name": name, "namespace": None, "uid": getattr(pool.metadata, "uid", None)}}
        self.post(body, events)
        ready = condition_message(status, "Ready")
        if ready is not None and condition_message(previous, "Ready") != ready and any(
                c.get("type") == "Ready" and c.get("status") == "False" for c in status.get("conditions") or []):
            log.warning("pool %s: %s", name, ready)
        if {k: v for k, v in previous.items() if k != "conditions"} == \
                {k: v for k, v in status.items() if k != "conditions"} \
                and conditions_same(previous.get("conditions"), status.get("conditions")):
            return
        self.custom.patch_cluster_custom_object_status(GROUP, VERSION, "acceleratorpools", name, {"status": status})
        self._last_pool_status[name] = status

    def forget(self, key: str) -> None:
        self._last_status.pop(key, None)
        self._last_write.pop(key, None)
        self._weights.pop(key, None)


def api_message(exc: Exception) -> str:
    """The API server's own message (a Status body's ``message``), else the exception's first line."""
    body = getattr(exc, "body", None)
    if body:
        try:
            found = json.loads(body).get("message")
            if found:
                return f"{getattr(exc, 'status', '')} {found}".strip()
        except (ValueError, AttributeError):
            pass
    return str(exc).splitlines()[0][:500]


def _decisive(status: dict) -> tuple:
    """What a status says that is a decision. A condition's status or reason is one; its message quotes figures
    (demand, latency) that drift."""
    return ({k: v for k, v in status.items() if k not in FIGURES and k != "conditions"},
            [{k: v for k, v in c.items() if k not in ("lastTransitionTime", "message")}
             for c in status.get("conditions") or []])
