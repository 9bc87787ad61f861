"""One Deployment per (InferenceService, pool): what it looks like (pure) and how it is applied (server-side)."""

from __future__ import annotations

import copy
import hashlib
import json
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
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": "InferenceService", "name": service, "uid": meta["uid"],
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {LABEL_SERVICE: service, LABEL_POOL: pool.name}},
            "template": template,
        },
    }


class Actuator:
    """Applies Deployments with server-side apply (field manager ``kilowatt``, forced: kilowatt owns replicas,
    GPU requests and placement; every other field stays with whoever set it)."""

    def __init__(self, apps_api: Any) -> None:
        self.apps = apps_api

    def apply(self, manifest: dict) -> None:
        meta = manifest["metadata"]
        self.apps.patch_namespaced_deployment(
            name=meta["name"], namespace=meta["namespace"], body=manifest, field_manager=FIELD_MANAGER, force=True,
            _content_type="application/apply-patch+yaml",
        )

    def delete(self, namespace: str, name: str) -> None:
        try:
            self.apps.delete_namespaced_deployment(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
