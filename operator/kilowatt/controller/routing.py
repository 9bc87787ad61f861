"""The objects that route requests to the replicas kilowatt places (pure; ``apply.py`` writes them).

``spec.routing.mode``:

- ``Service``: one ClusterIP Service named after the InferenceService over all its pods, every pool. kube-proxy
  gives each ready pod an equal share.
- ``Weighted``: a Service per (service, pool) and a Gateway API ``HTTPRoute`` (gateway.networking.k8s.io/v1)
  whose backendRefs are those Services, weighted by planned capacity (per-replica capacity x ready replicas).
- ``InferencePool``: an ``InferencePool`` (inference.networking.k8s.io/v1) per (service, pool) — homogeneous, as
  the endpoint picker expects — as the weighted HTTPRoute's backendRefs.

A pool with no ready replica leaves the route (a pool that only has replicas starting gets no traffic yet);
weights move only when some pool's share moves by more than ``WEIGHT_TOLERANCE``, so a route is not rewritten
every period for noise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from kilowatt.api.v1alpha1 import Routing, RoutingMode
from kilowatt.controller.actuator import LABEL_MANAGED, LABEL_POOL, LABEL_SERVICE, deployment_name, owner_references

GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"
INFERENCE_GROUP, INFERENCE_VERSION = "inference.networking.k8s.io", "v1"
WEIGHT_TOLERANCE = 0.05  # a pool's share of the route moves by more than this before weights are rewritten
WEIGHT_SCALE = 1000  # weights are integers (the Gateway API allows 0..1,000,000): shares in thousandths
ANNOTATION_APPLIED = "kilowatt.dev/applied-hash"  # of the object as kilowatt last applied it


@dataclass(frozen=True)
class Backend:
    """One pool's replicas of a service, as the route sees them."""

    pool: str
    ready: int
    capacity_rps: float  # one replica's capacity within the SLO


@dataclass(frozen=True)
class Kind:
    """An API kind kilowatt writes for routing: where it lives and its plural."""

    api_version: str
    kind: str
    plural: str


SERVICE = Kind("v1", "Service", "services")
HTTP_ROUTE = Kind(f"{GATEWAY_GROUP}/{GATEWAY_VERSION}", "HTTPRoute", "httproutes")
INFERENCE_POOL = Kind(f"{INFERENCE_GROUP}/{INFERENCE_VERSION}", "InferencePool", "inferencepools")


def kinds_needed(mode: RoutingMode) -> tuple[Kind, ...]:
    return {RoutingMode.SERVICE: (SERVICE,), RoutingMode.WEIGHTED: (SERVICE, HTTP_ROUTE),
            RoutingMode.INFERENCE_POOL: (INFERENCE_POOL, HTTP_ROUTE)}[mode]


def missing_api(mode: RoutingMode, served: set[str]) -> Kind | None:
    """The first kind ``mode`` needs that the cluster does not serve (``served``: "group/version" strings)."""
    for kind in kinds_needed(mode):
        if kind.api_version != "v1" and kind.api_version not in served:
            return kind
    return None


def backend_weights(backends: list[Backend], previous: dict[str, int] | None = None,
                    tolerance: float = WEIGHT_TOLERANCE) -> dict[str, int]:
    """Pool -> integer weight in proportion to planned capacity (per-replica capacity x ready replicas). Pools with
    no ready replica are left out. ``previous`` is kept while the same pools carry the route and no pool's share
    moved by more than ``tolerance``."""
    live = [b for b in backends if b.ready > 0 and b.capacity_rps > 0]
    if not live:
        return {}
    total = sum(b.ready * b.capacity_rps for b in live)
    share = {b.pool: b.ready * b.capacity_rps / total for b in live}
    if previous and set(previous) == set(share) and sum(previous.values()) > 0:
        before = sum(previous.values())
        if all(abs(previous[p] / before - share[p]) <= tolerance for p in share):
            return dict(previous)
    return {p: max(1, round(WEIGHT_SCALE * s)) for p, s in share.items()}


def _meta(body: dict, name: str, pool: str | None = None) -> dict[str, Any]:
    meta = body["metadata"]
    labels = {LABEL_SERVICE: meta["name"], LABEL_MANAGED: "kilowatt", **({LABEL_POOL: pool} if pool else {})}
    return {"name": name, "namespace": meta["namespace"], "labels": labels, **owner_references(meta)}


def _service(body: dict, name: str, selector: dict[str, str], port: int, pool: str | None = None) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(body, name, pool),
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]},
    }


def _inference_pool(body: dict, pool: str, routing: Routing) -> dict:
    name = deployment_name(body["metadata"]["name"], pool)
    picker = routing.endpoint_picker
    return {
        "apiVersion": INFERENCE_POOL.api_version, "kind": "InferencePool", "metadata": _meta(body, name, pool),
        "spec": {
            "selector": {"matchLabels": {LABEL_SERVICE: body["metadata"]["name"], LABEL_POOL: pool}},
            "targetPorts": [{"number": routing.port}],
            "endpointPickerRef": {"kind": "Service", "name": f"{name}-epp"[:63], "port": {"number": picker.port},
                                  "failureMode": picker.failure_mode},
        },
    }


def _http_route(body: dict, routing: Routing, weights: dict[str, int], inference_pools: bool) -> dict:
    service = body["metadata"]["name"]
    refs = []
    for pool, weight in sorted(weights.items()):
        name = deployment_name(service, pool)
        if inference_pools:
            refs.append({"group": INFERENCE_GROUP, "kind": "InferencePool", "name": name, "weight": weight})
        else:
            refs.append({"kind": "Service", "name": name, "port": routing.port, "weight": weight})
    spec: dict[str, Any] = {
        "parentRefs": [r.model_dump(by_alias=True, exclude_none=True) for r in routing.parent_refs],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": refs}],
    }
    if routing.hostnames:
        spec["hostnames"] = list(routing.hostnames)
    return {"apiVersion": HTTP_ROUTE.api_version, "kind": "HTTPRoute", "metadata": _meta(body, service), "spec": spec}


def routing_objects(body: dict, routing: Routing, pools: list[str], weights: dict[str, int]) -> list[dict]:
    """Every object ``routing.mode`` calls for: ``pools`` are those the service has replicas on (desired or
    running), ``weights`` the route's (``backend_weights``)."""
    service = body["metadata"]["name"]
    if routing.mode is RoutingMode.SERVICE:
        return [_service(body, service, {LABEL_SERVICE: service}, routing.port)]
    objects: list[dict] = []
    for pool in sorted(pools):
        if routing.mode is RoutingMode.WEIGHTED:
            objects.append(_service(body, deployment_name(service, pool), {LABEL_SERVICE: service, LABEL_POOL: pool},
                                    routing.port, pool))
        else:
            objects.append(_inference_pool(body, pool, routing))
    objects.append(_http_route(body, routing, weights, routing.mode is RoutingMode.INFERENCE_POOL))
    return objects


def stamp(manifest: dict) -> str:
    """Put the hash of ``manifest`` (as kilowatt writes it) in its ``kilowatt.dev/applied-hash`` annotation and
    return it: comparing a listed object's annotation with this says whether it must be written again."""
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations.pop(ANNOTATION_APPLIED, None)
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    annotations[ANNOTATION_APPLIED] = digest
    return digest


def describe(routing: Routing, weights: dict[str, int], ready: int) -> str:
    """The Routed condition's message when the objects are in place."""
    if routing.mode is RoutingMode.SERVICE:
        if not ready:
            return "Service has no ready replica yet; each will get an equal share"
        return f"Service routes to all {ready} ready replicas, each an equal share"
    if not weights:
        return f"HTTPRoute has no backend yet: no replica is ready ({routing.mode.value})"
    total = sum(weights.values())
    shares = ", ".join(f"{p} {w / total:.0%}" for p, w in sorted(weights.items()))
    via = "InferencePools" if routing.mode is RoutingMode.INFERENCE_POOL else "Services"
    return f"HTTPRoute weights by planned capacity over per-pool {via}: {shares}"
