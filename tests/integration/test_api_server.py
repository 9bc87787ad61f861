"""The CRDs in a real API server: examples apply, kubectl shows the columns, bad objects get a 422 naming the field."""

import copy
import json

import pytest
import yaml

from tests.paths import EXAMPLES

pytestmark = pytest.mark.integration

SERVICE = yaml.safe_load((EXAMPLES / "llama3-8b.yaml").read_text())
POOL = yaml.safe_load((EXAMPLES / "pool-h100.yaml").read_text())


@pytest.fixture(scope="module")
def examples(kubectl, crds):
    kubectl("apply", "-f", "manifests/examples/")
    yield
    kubectl("delete", "-f", "manifests/examples/", "--ignore-not-found")


def _custom(api):
    api_client, client = api
    return client.CustomObjectsApi(api_client)


def _create(api, doc):
    from kubernetes.client.rest import ApiException

    custom = _custom(api)
    try:
        if doc["kind"] == "AcceleratorPool":
            custom.create_cluster_custom_object("kilowatt.dev", "v1alpha1", "acceleratorpools", doc)
        else:
            custom.create_namespaced_custom_object("kilowatt.dev", "v1alpha1", doc["metadata"].get("namespace", "default"),
                                                   "inferenceservices", doc)
    except ApiException as exc:
        return exc.status, json.loads(exc.body)["message"]
    return 201, ""


def test_examples_apply_and_show_every_column(kubectl, examples):
    pools = kubectl("get", "acceleratorpools").stdout
    assert pools.split("\n")[0].split() == ["NAME", "GPU", "GPUS", "IN-USE", "USD/GPU-H", "USD/KWH", "AGE"]
    assert "RTX-4090" in pools and "H100-SXM" in pools
    services = kubectl("get", "kwis", "-n", "default").stdout
    header = services.split("\n")[0].split()
    assert header == ["NAME", "MODE", "REPLICAS", "PLACEMENT", "REQ/S", "TTFT-MS", "SLO-MET", "USD/H", "AGE"]
    assert services.split("\n")[1].split()[:2] == ["llama3-8b-chat", "Active"]
    # The category lists both kinds at once.
    everything = kubectl("get", "kilowatt", "-A").stdout
    assert "inferenceservice.kilowatt.dev/llama3-8b-chat" in everything
    assert "acceleratorpool.kilowatt.dev/rtx4090" in everything


def test_status_fills_the_columns(kubectl, api, examples):
    status = {"status": {"readyReplicas": 3, "placementSummary": "3×RTX-4090", "sloMet": "True",
                         "costPerHourUsd": 0.47, "observed": {"requestsPerSecond": 20.0, "ttftAtPercentileMilliseconds": 180.5}}}
    _custom(api).patch_namespaced_custom_object_status("kilowatt.dev", "v1alpha1", "default", "inferenceservices",
                                                        "llama3-8b-chat", status)
    row = kubectl("get", "kwis", "llama3-8b-chat", "-n", "default", "--no-headers").stdout.split()
    assert row[:8] == ["llama3-8b-chat", "Active", "3", "3×RTX-4090", "20", "180.5", "True", "0.47"]


def test_the_api_server_fills_in_defaults(api, crds):
    doc = copy.deepcopy(SERVICE)
    doc["metadata"]["name"] = "defaults"
    del doc["spec"]["scaling"], doc["spec"]["replicas"]
    assert _create(api, doc) == (201, "")
    got = _custom(api).get_namespaced_custom_object("kilowatt.dev", "v1alpha1", "default", "inferenceservices",
                                                    "defaults")
    assert got["spec"]["scaling"]["mode"] == "Active"
    assert got["spec"]["scaling"]["scaleDownStabilizationSeconds"] == 300
    assert got["spec"]["replicas"] == {"min": 0, "max": 16}
    assert got["spec"]["model"]["maxContextTokens"] == 8192


def _service(name, mutate):
    doc = copy.deepcopy(SERVICE)
    doc["metadata"]["name"] = name
    mutate(doc["spec"])
    return doc


def _pool(name, mutate):
    doc = copy.deepcopy(POOL)
    doc["metadata"]["name"] = name
    mutate(doc["spec"])
    return doc


@pytest.mark.parametrize(
    "doc,field",
    [
        (_service("neg-min", lambda s: s["replicas"].update(min=-1)), "spec.replicas.min"),
        (_service("zero-max", lambda s: s["replicas"].update(max=0)), "spec.replicas.max"),
        (_service("no-slo", lambda s: s.pop("slo")), "spec.slo"),
        (_service("neg-ttft", lambda s: s["slo"].update(ttftMilliseconds=-5)), "spec.slo.ttftMilliseconds"),
        (_service("zero-tpot", lambda s: s["slo"].update(tpotMilliseconds=0)), "spec.slo.tpotMilliseconds"),
        (_service("wrong-type", lambda s: s["model"].update(parametersBillion="eight")),
         "spec.model.parametersBillion"),
        (_service("bad-mode", lambda s: s["scaling"].update(mode="Aggressive")), "spec.scaling.mode"),
        (_service("bad-pool-name", lambda s: s.update(pools=["Not_A_Name"])), "spec.pools"),
        (_pool("neg-price", lambda s: s["cost"].update(usdPerGPUHour=-1)), "spec.cost.usdPerGPUHour"),
        (_pool("neg-kwh", lambda s: s["cost"]["electricity"].update(flatUsdPerKWh=-0.1)),
         "spec.cost.electricity.flatUsdPerKWh"),
        (_pool("bad-pue", lambda s: s["cost"].update(pue=0.5)), "spec.cost.pue"),
        (_pool("bad-hour", lambda s: s["cost"].update(electricity={"timeOfUse": {"timeZone": "UTC", "periods": [
            {"start": "25:00", "end": "24:00", "usdPerKWh": 0.1}]}})), "spec.cost.electricity.timeOfUse.periods"),
        (_pool("short-day", lambda s: s["cost"].update(carbon={"hourly": {"timeZone": "UTC",
                                                                            "gramsCO2PerKWh": [300] * 23}})),
         "spec.cost.carbon.hourly.gramsCO2PerKWh"),
        (_pool("neg-carbon", lambda s: s["cost"].update(carbon={"gramsCO2PerKWh": -1})),
         "spec.cost.carbon.gramsCO2PerKWh"),
        (_pool("bad-ownership", lambda s: s["cost"].update(ownership="Leased")), "spec.cost.ownership"),
    ],
    ids=lambda x: x if isinstance(x, str) else x["metadata"]["name"],
)
def test_invalid_objects_are_refused_with_the_field(api, crds, doc, field):
    status, message = _create(api, doc)
    assert status == 422, message
    assert field in message


_TILES = [{"start": "00:00", "end": "07:00", "usdPerKWh": 0.1}, {"start": "07:00", "end": "24:00", "usdPerKWh": 0.2}]
CROSS_FIELD = [
    (_service("inverted", lambda s: s.update(replicas={"min": 5, "max": 2})), "spec.replicas.min",
     "replicas.min must be at most replicas.max"),
    (_service("zero-min-1", lambda s: s.update(replicas={"min": 1, "max": 4}, scaling={"scaleToZero": True})),
     "spec.scaling.scaleToZero", "set replicas.min to 0"),
    (_service("twin-profiles", lambda s: s.update(profiles=[
        {"pool": "h100", "maxRequestsPerSecond": 9}, {"pool": "h100", "tensorParallel": 1, "maxRequestsPerSecond": 7}])),
     "spec.profiles", "unique per (pool, tensorParallel)"),
    (_service("gatewayless", lambda s: s.update(routing={"mode": "Weighted"})), "spec.routing.parentRefs",
     "must name the Gateway"),
    (_service("Upper", lambda s: None), "metadata.name", "DNS-1035"),
    (_service("7up", lambda s: None), "metadata.name", "starting with a letter"),
    (_service("x" * 64, lambda s: None), "metadata.name", "at most 63 characters"),
    (_pool("two-prices", lambda s: s["cost"]["electricity"].update(
        timeOfUse={"timeZone": "UTC", "periods": _TILES})), "spec.cost.electricity",
     "exactly one of flatUsdPerKWh, timeOfUse and prometheus"),
    (_pool("no-price", lambda s: s["cost"].update(electricity={"gramsCO2PerKWh": 300})), "spec.cost.electricity",
     "exactly one of"),
    (_pool("two-carbons", lambda s: s["cost"].update(carbon={"gramsCO2PerKWh": 300, "prometheus": {
        "query": "grid_carbon_intensity", "fallbackGramsCO2PerKWh": 400}})), "spec.cost.carbon",
     "exactly one of gramsCO2PerKWh, hourly and prometheus"),
    (_pool("carbon-price-only", lambda s: s["cost"].update(carbon={"usdPerTonneCO2": 80})), "spec.cost.carbon",
     "exactly one of"),
    (_pool("gap", lambda s: s["cost"].update(electricity={"timeOfUse": {"timeZone": "UTC", "periods": [
        {"start": "00:00", "end": "07:00", "usdPerKWh": 0.1}, {"start": "08:00", "end": "24:00", "usdPerKWh": 0.2}]}})),
     "spec.cost.electricity.timeOfUse.periods", "every period must start when another one ends"),
    (_pool("overlap", lambda s: s["cost"].update(electricity={"timeOfUse": {"timeZone": "UTC", "periods": [
        {"start": "22:00", "end": "08:00", "usdPerKWh": 0.1}, {"start": "07:00", "end": "22:00", "usdPerKWh": 0.2}]}})),
     "spec.cost.electricity.timeOfUse.periods", "lengths must add up to 24 hours"),
    (_pool("idle-above-board", lambda s: s["gpu"].update(boardPowerWatts=8, idlePowerWatts=68)),
     "spec.gpu.idlePowerWatts", "must be at most gpu.boardPowerWatts"),
    (_pool("empty-period", lambda s: s["cost"].update(electricity={"timeOfUse": {"timeZone": "UTC", "periods": [
        {"start": "09:00", "end": "09:00", "usdPerKWh": 0.1}]}})),
     "spec.cost.electricity.timeOfUse.periods[0].end", "ends when it starts"),
]


@pytest.mark.parametrize("doc,field,fix", CROSS_FIELD, ids=[d["metadata"]["name"][:20] for d, _, _ in CROSS_FIELD])
def test_the_api_server_refuses_cross_field_rules_as_kilowatt_does(api, crds, doc, field, fix):
    """CEL rules in the CRD: a 422 naming the field and the fix. The same spec fails the pydantic model's own
    validators (the CLI's and the twin's), so the API server and kilowatt agree on what is valid."""
    from kilowatt.api.v1alpha1 import AcceleratorPool, InferenceService

    status, message = _create(api, doc)
    assert status == 422, message
    assert field in message and fix in message, message
    model = AcceleratorPool if doc["kind"] == "AcceleratorPool" else InferenceService
    with pytest.raises(ValueError):
        model.model_validate(doc)


def test_a_wrapping_time_of_use_schedule_is_accepted(api, crds):
    """22:00-06:00 wraps past midnight: with 06:00-22:00 it covers the day once, and both sides say so."""
    from kilowatt.api.v1alpha1 import AcceleratorPool

    doc = _pool("night-and-day", lambda s: s["cost"].update(electricity={"timeOfUse": {"timeZone": "UTC", "periods": [
        {"start": "22:00", "end": "06:00", "usdPerKWh": 0.1}, {"start": "06:00", "end": "22:00", "usdPerKWh": 0.2}]}}))
    assert _create(api, doc) == (201, "")
    AcceleratorPool.model_validate(doc)
    _custom(api).delete_cluster_custom_object("kilowatt.dev", "v1alpha1", "acceleratorpools", "night-and-day")


def test_kubectl_shows_the_field_and_the_fix(kubectl, crds, tmp_path):
    doc = _service("kubectl-inverted", lambda s: s.update(replicas={"min": 3, "max": 1}))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = kubectl("apply", "-f", str(path), check=False)
    assert out.returncode != 0
    assert ('The InferenceService "kubectl-inverted" is invalid' in out.stderr
            and "spec.replicas.min: Invalid value" in out.stderr
            and "replicas.min must be at most replicas.max: lower min or raise max" in out.stderr), out.stderr
