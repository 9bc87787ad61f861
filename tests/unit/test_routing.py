"""The routing objects (controller/routing.py): weights by planned capacity, which objects each mode calls for,
and `kilowatt render`, which prints them with the operator's own builders."""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kilowatt.api.v1alpha1 import InferenceService, Routing
from kilowatt.cli import main
from kilowatt.controller.routing import WEIGHT_SCALE, Backend, backend_weights, missing_api, routing_objects

from tests.paths import EXAMPLES

SERVICE = yaml.safe_load((EXAMPLES / "llama3-8b.yaml").read_text())
BODY = {**SERVICE, "metadata": {**SERVICE["metadata"], "namespace": "default", "uid": "0000-1111"}}
GATEWAY = [{"name": "inference-gateway"}]


def test_weights_follow_capacity_times_ready_replicas() -> None:
    weights = backend_weights([Backend("rtx4090", 15, 7.7), Backend("h100", 1, 34.8)])
    assert weights == {"rtx4090": round(WEIGHT_SCALE * 115.5 / 150.3), "h100": round(WEIGHT_SCALE * 34.8 / 150.3)}


def test_a_pool_with_nothing_ready_leaves_the_route_and_a_ready_one_never_gets_zero() -> None:
    assert backend_weights([Backend("rtx4090", 0, 7.7), Backend("h100", 2, 34.8)]) == {"h100": WEIGHT_SCALE}
    tiny = backend_weights([Backend("rtx4090", 1, 0.01), Backend("h100", 16, 340.0)])
    assert tiny["rtx4090"] >= 1
    assert backend_weights([Backend("rtx4090", 0, 7.7)]) == {}


@settings(max_examples=200, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 20), st.floats(0.1, 100)), min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(0, 20), st.floats(0.1, 100)), min_size=1, max_size=4))
def test_weights_move_only_when_a_share_moves_past_the_tolerance(before, after) -> None:
    pools = [f"p{i}" for i in range(min(len(before), len(after)))]
    old = backend_weights([Backend(p, n, c) for p, (n, c) in zip(pools, before)])
    now = [Backend(p, n, c) for p, (n, c) in zip(pools, after)]
    kept = backend_weights(now, old, tolerance=0.05)
    fresh = backend_weights(now)
    if kept != fresh:  # kept the old weights: the same pools, and every share within 5 points of the new one
        assert kept == old and set(old) == set(fresh)
        total = sum(n * c for n, c in after[:len(pools)] if n > 0)
        for p, (n, c) in zip(pools, after):
            if n > 0:
                assert abs(old[p] / sum(old.values()) - n * c / total) <= 0.05 + 1e-9


def test_service_mode_is_one_service_over_every_pool() -> None:
    (svc,) = routing_objects(BODY, Routing(), ["rtx4090", "h100"], {})
    assert svc["kind"] == "Service" and svc["metadata"]["name"] == "llama3-8b-chat"
    assert svc["spec"]["selector"] == {"kilowatt.dev/service": "llama3-8b-chat"}
    assert svc["spec"]["ports"][0]["targetPort"] == 8000
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "0000-1111"


def test_weighted_mode_is_a_service_per_pool_behind_a_weighted_route() -> None:
    routing = Routing.model_validate({"mode": "Weighted", "parentRefs": GATEWAY, "port": 8080})
    objects = routing_objects(BODY, routing, ["rtx4090", "h100"], {"rtx4090": 700, "h100": 300})
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Service", "llama3-8b-chat-h100"), ("Service", "llama3-8b-chat-rtx4090"), ("HTTPRoute", "llama3-8b-chat")]
    assert objects[0]["spec"]["selector"] == {"kilowatt.dev/service": "llama3-8b-chat", "kilowatt.dev/pool": "h100"}
    refs = objects[2]["spec"]["rules"][0]["backendRefs"]
    assert refs == [{"kind": "Service", "name": "llama3-8b-chat-h100", "port": 8080, "weight": 300},
                    {"kind": "Service", "name": "llama3-8b-chat-rtx4090", "port": 8080, "weight": 700}]


def test_inference_pool_mode_is_a_homogeneous_pool_per_gpu_type() -> None:
    routing = Routing.model_validate({"mode": "InferencePool", "parentRefs": GATEWAY})
    objects = routing_objects(BODY, routing, ["rtx4090"], {"rtx4090": 1000})
    assert [o["kind"] for o in objects] == ["InferencePool", "HTTPRoute"]
    assert objects[0]["apiVersion"] == "inference.networking.k8s.io/v1"
    assert objects[0]["spec"]["selector"]["matchLabels"]["kilowatt.dev/pool"] == "rtx4090"
    assert objects[1]["spec"]["rules"][0]["backendRefs"][0]["kind"] == "InferencePool"


def test_a_mode_that_needs_an_api_the_cluster_lacks_is_named() -> None:
    weighted = Routing.model_validate({"mode": "Weighted", "parentRefs": GATEWAY})
    assert missing_api(weighted.mode, set()).kind == "HTTPRoute"
    assert missing_api(weighted.mode, {"gateway.networking.k8s.io/v1"}) is None
    assert missing_api(Routing().mode, set()) is None


def test_weighted_without_a_gateway_is_refused_by_field() -> None:
    doc = copy.deepcopy(SERVICE)
    doc["spec"]["routing"] = {"mode": "Weighted"}
    with pytest.raises(ValueError, match="routing.parentRefs must name the Gateway"):
        InferenceService.model_validate(doc)


def test_render_prints_what_the_plan_places_and_routes(capsys, tmp_path) -> None:
    for f in EXAMPLES.glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text())
    doc = copy.deepcopy(SERVICE)
    doc["spec"]["routing"] = {"mode": "Weighted", "parentRefs": GATEWAY}
    (tmp_path / "llama3-8b.yaml").write_text(yaml.safe_dump(doc))
    args = ["-f", str(tmp_path), "--demand", "default/llama3-8b-chat=120", "--at", "2026-07-01T18:00:00-07:00"]
    assert main(["plan", *args, "-o", "json"]) == 0
    import json

    planned = {p["pool"]: p["replicas"] for p in json.loads(capsys.readouterr().out)["services"][0]["placement"]}
    assert main(["render", *args]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    deployments = {d["metadata"]["labels"]["kilowatt.dev/pool"]: d["spec"]["replicas"] for d in documents
                   if d["kind"] == "Deployment"}
    assert deployments == {p: n for p, n in planned.items() if n > 0}
    (route,) = [d for d in documents if d["kind"] == "HTTPRoute"]
    assert {r["name"] for r in route["spec"]["rules"][0]["backendRefs"]} == {
        f"llama3-8b-chat-{p}" for p in deployments}
    assert all("ownerReferences" not in d["metadata"] for d in documents)
