"""The CRDs are generated from the models, structural, and what is committed."""

import yaml

from kilowatt.api.crd import render

from tests.paths import REPO

FORBIDDEN_IN_STRUCTURAL = {"$ref", "anyOf", "oneOf", "allOf", "title", "$defs", "const"}


def _walk(node, path="$"):
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_committed_crds_match_the_models():
    for directory in (REPO / "crds", REPO / "charts/kilowatt/crds"):
        committed = {p.name: p.read_text() for p in directory.glob("*.yaml")}
        assert committed == render(), f"{directory} is stale: run `kilowatt crds`"


def test_schemas_are_structural():
    for name, text in render().items():
        crd = yaml.safe_load(text)
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, key, value in _walk(schema):
            assert key not in FORBIDDEN_IN_STRUCTURAL, f"{name}: {path} has {key}"
            if key == "properties":
                assert isinstance(value, dict)
        for path, key, value in _walk(schema):
            if isinstance(value, dict) and key not in ("properties",) and ("properties" in value or "items" in value):
                assert "type" in value or "x-kubernetes-preserve-unknown-fields" in value, f"{name}: {path}.{key}"


def test_names_columns_and_subresources():
    crds = {yaml.safe_load(t)["spec"]["names"]["kind"]: yaml.safe_load(t) for t in render().values()}
    isvc, pool = crds["InferenceService"]["spec"], crds["AcceleratorPool"]["spec"]
    assert isvc["scope"] == "Namespaced" and pool["scope"] == "Cluster"
    kserve_short_names = {"isvc", "inferenceservice", "ig", "tm", "sr", "cisvc"}
    for spec in (isvc, pool):
        assert not set(spec["names"]["shortNames"]) & kserve_short_names
        assert spec["names"]["categories"] == ["kilowatt"]
        version = spec["versions"][0]
        assert version["subresources"] == {"status": {}}  # no scale: replicas span one Deployment per pool
    # Priority-1 columns show with `kubectl get -o wide` only.
    isvc_columns = [c["name"] for c in isvc["versions"][0]["additionalPrinterColumns"] if not c.get("priority")]
    assert isvc_columns == ["Mode", "Replicas", "Placement", "Req/s", "TTFT-ms", "SLO-Met", "USD/h", "Age"]
    pool_columns = [c["name"] for c in pool["versions"][0]["additionalPrinterColumns"] if not c.get("priority")]
    assert pool_columns == ["GPU", "GPUs", "In-Use", "USD/GPU-h", "USD/kWh", "Age"]
    wide = [c["name"] for spec in (isvc, pool) for c in spec["versions"][0]["additionalPrinterColumns"]
            if c.get("priority")]
    assert wide == ["CO2-kg/day", "Ownership", "gCO2/kWh"]


def test_schema_carries_validation_and_descriptions():
    crd = yaml.safe_load(render()["kilowatt.dev_inferenceservices.yaml"])
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(spec["required"]) == {"model", "slo"}
    slo = spec["properties"]["slo"]
    assert slo["properties"]["ttftMilliseconds"]["minimum"] == 0
    assert slo["properties"]["ttftMilliseconds"]["exclusiveMinimum"] is True
    assert "milliseconds" in slo["properties"]["ttftMilliseconds"]["description"]
    assert spec["properties"]["replicas"]["properties"]["min"]["minimum"] == 0
    assert spec["properties"]["scaling"]["properties"]["mode"]["enum"] == ["Active", "Advisory", "Off"]
    assert spec["properties"]["template"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["properties"]["scaling"]["default"] == {}  # lets the API server fill in nested defaults


def test_committed_api_reference_matches_the_models():
    from kilowatt.api.reference import render as render_reference

    committed = (REPO / "docs/api-reference.md").read_text()
    assert committed == render_reference(), "docs/api-reference.md is stale: run `kilowatt crds`"


def test_api_reference_names_every_field_with_its_bounds():
    from kilowatt.api.reference import render as render_reference

    text = render_reference()
    for row in ("| `spec.slo.ttftMilliseconds` | number | yes |  | > 0, ≤ 3,600,000 |",
                "| `spec.cost.pue` | number |  | `1.0` | ≥ 1, ≤ 5 |",
                "| `spec.scaling.mode` | `Active` \\| `Advisory` \\| `Off` |  | `\"Active\"` |"):
        assert row in text
