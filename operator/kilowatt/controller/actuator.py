"""One Deployment per (InferenceService, pool): what it looks like (pure) and how it is applied (server-side)."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

from kubernetes.client.rest import ApiException

from kilowatt.api.v1alpha1 import API_VERSION, AcceleratorPool
from kilowatt.controller.pod import serving_pod

LABEL_SERVICE = "kilowatt.dev/service"
LABEL_POOL = "kilowatt.dev/pool"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
ANNOTATION_TP = "kilowatt.dev/tensor-parallel"
ANNOTATION_TEMPLATE = "kilowatt.dev/template-hash"  # of the rendered pod template: a change rolls out at once
FIELD_MANAGER = "kilowatt"
GPU_RESOURCE = "nvidia.com/gpu"


def deployment_name(service: str, pool: str) -> str:
    name = f"{service}-{pool}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


# Characters YAML carries raw inside a double-quoted scalar: its printable set less the line breaks it folds into
# spaces (NEL, LS, PS) and the byte-order mark. JSON is sent as YAML to the apply endpoint.
_YAML_UNPRINTABLE = re.compile("[^\t\n\r\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd"
                               "\U00010000-\U0010ffff]")


def apply_patch_body(manifest: dict) -> bytes:
    """The server-side apply body: JSON, which the API server reads as YAML. The client's own json.dumps escapes
    characters beyond the BMP as surrogate pairs (an emoji in a template's env becomes "\\ud83d\\udca5"), which
    the YAML decoder refuses with a 400; here they stay raw UTF-8, and only what YAML cannot carry raw is escaped."""
    text = json.dumps(manifest, ensure_ascii=False, separators=(",", ":"))
    return _YAML_UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


def owner_references(meta: dict) -> dict[str, list[dict]]:
    """``{"ownerReferences": [...]}`` naming the InferenceService as controller; empty for an object not yet in a
    cluster (no uid: ``kilowatt render``), where the operator adds it when it applies."""
    if not meta.get("uid"):
        return {}
    return {"ownerReferences": [{"apiVersion": API_VERSION, "kind": "InferenceService", "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]}


def template_hash(template: dict) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def deployment_manifest(
    service_body: dict, pool: AcceleratorPool, replicas: int, tensor_parallel: int
) -> dict[str, Any]:
    """The Deployment for ``service_body`` on ``pool``: the service's pod template plus GPUs, node selection,
    tolerations, the arguments, shared memory, probes and requests vLLM needs (``controller.pod``) and
    kilowatt's labels. Only fields kilowatt owns are set."""
    meta = service_body["metadata"]
    service, namespace = meta["name"], meta["namespace"]
    labels = {LABEL_SERVICE: service, LABEL_POOL: pool.name, LABEL_MANAGED: "kilowatt"}
    template = copy.deepcopy(service_body.get("spec", {}).get("template") or {})
    pod_meta = template.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
    pod = template.setdefault("spec", {})
    pod["nodeSelector"] = {**(pod.get("nodeSelector") or {}), **pool.spec.node_selector}
    tolerations = list(pod.get("tolerations") or [])
    for t in pool.spec.tolerations:
        toleration = t.model_dump(by_alias=True, exclude_none=True)
        if toleration not in tolerations:
            tolerations.append(toleration)
    if tolerations:
        pod["tolerations"] = tolerations
    serving_pod(template, service_body.get("spec", {}).get("model") or {}, tensor_parallel,
                pool.spec.replica_startup_seconds)
    resources = pod["containers"][0].setdefault("resources", {})
    for part in ("requests", "limits"):
        resources[part] = {**(resources.get(part) or {}), GPU_RESOURCE: str(tensor_parallel)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(service, pool.name),
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANNOTATION_TP: str(tensor_parallel), ANNOTATION_TEMPLATE: template_hash(template)},
            **owner_references(meta),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {LABEL_SERVICE: service, LABEL_POOL: pool.name}},
            "template": template,
        },
    }


_PLURALS = {"Deployment": "deployments", "Service": "services", "HTTPRoute": "httproutes",
            "InferencePool": "inferencepools"}


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    """The REST path of a namespaced object: /api/v1/... for the core group, /apis/GROUP/VERSION/... otherwise."""
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{root}/namespaces/{namespace}/{_PLURALS[kind]}/{name}"


class Actuator:
    """Applies kilowatt's objects (Deployments, and the Services, HTTPRoutes and InferencePools that route to
    them) with server-side apply (field manager ``kilowatt``, forced: kilowatt owns replicas, GPU requests,
    placement and routing; every other field stays with whoever set it)."""

    def __init__(self, apps_api: Any, reads: Any = None) -> None:
        """``reads`` (a ``controller.reads.Reads``): told of every object applied or deleted, so a period reading
        from watches sees kilowatt's own writes at once."""
        self.apps = apps_api
        self.reads = reads

    def apply(self, manifest: dict) -> None:
        """Server-side apply, with the body as ``apply_patch_body`` writes it: the generated client would
        json.dumps it (surrogate pairs for anything beyond the BMP), so the request is built with the client's own
        public pieces and only the body replaced. Raises ApiException as the generated methods do."""
        meta = manifest["metadata"]
        applied = self._call("PATCH", object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"],
                                                  meta["name"]),
                             [("fieldManager", FIELD_MANAGER), ("force", True)], apply_patch_body(manifest),
                             "application/apply-patch+yaml")
        if self.reads is not None and isinstance(applied, dict):
            self.reads.applied(applied)

    def delete(self, namespace: str, name: str, api_version: str = "apps/v1", kind: str = "Deployment") -> None:
        """Delete one object; gone already is fine."""
        try:
            self._call("DELETE", object_path(api_version, kind, namespace, name), [], None, "application/json")
        except ApiException as exc:
            if exc.status != 404:
                raise
        if self.reads is not None:
            self.reads.deleted(api_version, kind, namespace, name)

    def _call(self, method: str, path: str, query: list, body: bytes | None, content_type: str) -> Any:
        api = self.apps.api_client
        method, url, headers, _, post = api.param_serialize(
            method, path, query_params=query, auth_settings=["BearerToken"],
            header_params={"Content-Type": content_type, "Accept": "application/json"})
        response = api.call_api(method, url, headers, body, post)
        response.read()
        return api.response_deserialize(response, {"200": "object", "201": "object", "202": "object"}).data
