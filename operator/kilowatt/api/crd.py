"""Generate the CustomResourceDefinitions from the pydantic models.

Kubernetes wants a *structural* OpenAPI v3 schema: every node typed, no ``$ref``, no ``anyOf`` with null, no
``additionalProperties: false`` beside ``properties``. Pydantic emits JSON Schema 2020-12; ``structural``
rewrites one into the other so the CRD can never drift from the models (a test regenerates and compares).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from kilowatt.api.v1alpha1 import (
    DNS_1035,
    DNS_LABEL,
    GROUP,
    VERSION,
    AcceleratorPoolSpec,
    AcceleratorPoolStatus,
    InferenceServiceSpec,
    NO_EMPTY_DEFAULT,
    InferenceServiceStatus,
    cel,
)

_DROP = {"title", "$defs", "discriminator"}


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON schema into a Kubernetes structural schema."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        node = dict(node)
        if "$ref" in node:
            target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
            # Keep the field's own description/default over the referenced model's.
            node = {**target, **node}
        if "anyOf" in node:
            options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"cannot express a union of {len(options)} types structurally: {options}")
            node = {**walk(options[0]), **node}
        if "allOf" in node and len(node["allOf"]) == 1:
            node = {**walk(node.pop("allOf")[0]), **node}
        if "const" in node:
            node["enum"] = [node.pop("const")]
        for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(node.get(bound), (int, float)) and not isinstance(node.get(bound), bool):
                node[plain] = node.pop(bound)
                node[bound] = True
        if "enum" in node and "type" not in node:
            node["type"] = "string" if all(isinstance(v, str) for v in node["enum"]) else "integer"
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
        if node.get("type") == "object" and "properties" not in node:
            extra = node.get("additionalProperties")
            if extra in (None, True, {}) or node.get("x-kubernetes-preserve-unknown-fields"):
                node.pop("additionalProperties", None)
                node["x-kubernetes-preserve-unknown-fields"] = True
        if node.get("default", "") is None:
            del node["default"]
        for key in _DROP:
            node.pop(key, None)
        if "properties" in node:
            node["type"] = "object"
            node["properties"] = {k: walk(v) for k, v in node["properties"].items()}
            required = set(node.get("required", []))
            # An optional sub-object whose fields all have defaults defaults to {} so the API server fills them in
            # (unless its field says NO_EMPTY_DEFAULT: absent means something else than all defaults).
            for name, sub in node["properties"].items():
                if (
                    name not in required
                    and not sub.pop(NO_EMPTY_DEFAULT, False)
                    and sub.get("type") == "object"
                    and "properties" in sub
                    and not sub.get("required")
                    and "default" not in sub
                ):
                    sub["default"] = {}
        if isinstance(node.get("items"), dict):
            node["items"] = walk(node["items"])
        if isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = walk(node["additionalProperties"])
        return dict(sorted(node.items()))

    return walk(schema)


def name_rule(pattern: str, what: str) -> dict[str, str]:
    """CEL on the object's root: the name must be ``pattern`` (``what`` in words) and at most 63 characters."""
    return cel(f"self.metadata.name.matches('{pattern}') && size(self.metadata.name) <= 63",
               f"metadata.name must be {what} of at most 63 characters: kilowatt names Deployments and labels "
               "after it; choose a shorter or simpler name")


def _schema(spec_model: type, status_model: type, description: str, root_rules: list[dict]) -> dict[str, Any]:
    spec = structural(spec_model.model_json_schema(by_alias=True, mode="validation"))
    status = structural(status_model.model_json_schema(by_alias=True, mode="validation"))
    status["x-kubernetes-preserve-unknown-fields"] = True
    status.pop("required", None)
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": root_rules,
    }


def _crd(
    plural: str, kind: str, scope: str, short_names: list[str], columns: list[dict], schema: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "kilowatt"}},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
                "shortNames": short_names,
                "categories": ["kilowatt"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    # No scale subresource: kilowatt, not an HPA, decides replicas, and they span several
                    # Deployments (one per pool), so a single .spec.replicas would be a lie.
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def inference_service_crd() -> dict[str, Any]:
    columns = [
        {"name": "Mode", "type": "string", "jsonPath": ".spec.scaling.mode"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas", "description": "Ready replicas"},
        {"name": "Placement", "type": "string", "jsonPath": ".status.placementSummary"},
        {"name": "Req/s", "type": "number", "jsonPath": ".status.observed.requestsPerSecond"},
        {"name": "TTFT-ms", "type": "number", "jsonPath": ".status.observed.ttftAtPercentileMilliseconds",
         "description": "Time to first token at the SLO's percentile"},
        {"name": "SLO-Met", "type": "string", "jsonPath": ".status.sloMet"},
        {"name": "USD/h", "type": "number", "jsonPath": ".status.costPerHourUsd"},
        {"name": "CO2-kg/day", "type": "number", "jsonPath": ".status.co2KgPerDay", "priority": 1,
         "description": "CO2 a day at the current power and carbon intensity"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    schema = _schema(InferenceServiceSpec, InferenceServiceStatus, "One model served under one latency SLO.",
                     [name_rule(DNS_1035, "a DNS-1035 label (lowercase letters, digits and '-', starting with a "
                                "letter)")])
    return _crd("inferenceservices", "InferenceService", "Namespaced", ["kwis", "kwisvc"], columns, schema)


def accelerator_pool_crd() -> dict[str, Any]:
    columns = [
        {"name": "GPU", "type": "string", "jsonPath": ".spec.gpu.model"},
        {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpusTotal"},
        {"name": "In-Use", "type": "integer", "jsonPath": ".status.gpusInUse"},
        {"name": "USD/GPU-h", "type": "number", "jsonPath": ".status.effectiveUsdPerGPUHour"},
        {"name": "USD/kWh", "type": "number", "jsonPath": ".status.electricityUsdPerKWh"},
        {"name": "Ownership", "type": "string", "jsonPath": ".spec.cost.ownership", "priority": 1},
        {"name": "gCO2/kWh", "type": "number", "jsonPath": ".status.gridGramsCO2PerKWh", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    schema = _schema(AcceleratorPoolSpec, AcceleratorPoolStatus, "One GPU type on a set of nodes, and its cost.",
                     [name_rule(DNS_LABEL, "a DNS label (lowercase letters, digits and '-')")])
    return _crd("acceleratorpools", "AcceleratorPool", "Cluster", ["kwpool", "accpool"], columns, schema)


def kopf_peering_crds() -> list[dict[str, Any]]:
    """kopf's peering kinds: operator replicas sharing a peering see each other and only one acts."""
    out = []
    for scope, kind in (("Cluster", "ClusterKopfPeering"), ("Namespaced", "KopfPeering")):
        plural = kind.lower() + "s"
        status = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        out.append({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.kopf.dev", "labels": {"app.kubernetes.io/part-of": "kilowatt"}},
            "spec": {
                "scope": scope,
                "group": "kopf.dev",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                "versions": [{
                    "name": "v1", "served": True, "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"status": status}}},
                }],
            },
        })
    return out


def render() -> dict[str, str]:
    """File name -> YAML text for every CRD."""
    header = "# Generated by `kilowatt crds` from operator/kilowatt/api/. Do not edit.\n"
    out = {}
    for crd in (accelerator_pool_crd(), inference_service_crd(), *kopf_peering_crds()):
        name = f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml"
        out[name] = header + yaml.safe_dump(crd, sort_keys=False, width=120)
    return out
