"""The API models: defaults, validation the schema cannot express, and the messages users read."""

import copy

import pytest
import yaml
from pydantic import ValidationError

from kilowatt.api.v1alpha1 import AcceleratorPool, InferenceService, ScalingMode, short_error
from kilowatt.state import ManifestError, load_objects

from tests.paths import EXAMPLES

POOL = yaml.safe_load((EXAMPLES / "pool-rtx4090.yaml").read_text())
SERVICE = yaml.safe_load((EXAMPLES / "llama3-8b.yaml").read_text())


def _pool_with(**electricity):
    doc = copy.deepcopy(POOL)
    doc["spec"]["cost"]["electricity"] = electricity
    return doc


def _tou(*periods, zone="Europe/Berlin"):
    return _pool_with(timeOfUse={"timeZone": zone, "periods": [
        {"start": s, "end": e, "usdPerKWh": p} for s, e, p in periods]})


def test_examples_are_valid():
    pools, services = load_objects([EXAMPLES])
    assert sorted(p.name for p in pools) == ["h100", "rtx4090"]
    assert [s.key for s in services] == ["default/llama3-8b-chat"]


def test_service_defaults_fill_scaling_and_replicas():
    doc = copy.deepcopy(SERVICE)
    del doc["spec"]["scaling"], doc["spec"]["replicas"]
    svc = InferenceService.model_validate(doc)
    assert svc.spec.scaling.mode is ScalingMode.ACTIVE
    assert (svc.spec.replicas.min, svc.spec.replicas.max) == (0, 16)
    assert svc.spec.scaling.scale_down_stabilization_seconds == 300


def test_inverted_replica_bounds_name_the_field():
    doc = copy.deepcopy(SERVICE)
    doc["spec"]["replicas"] = {"min": 5, "max": 2}
    with pytest.raises(ValidationError) as err:
        InferenceService.model_validate(doc)
    assert short_error(err.value) == "spec.replicas: min (5) must be at most max (2)"


@pytest.mark.parametrize("field,value", [("ttftMilliseconds", 0), ("tpotMilliseconds", -5)])
def test_slo_targets_must_be_positive(field, value):
    doc = copy.deepcopy(SERVICE)
    doc["spec"]["slo"][field] = value
    with pytest.raises(ValidationError) as err:
        InferenceService.model_validate(doc)
    assert f"spec.slo.{field}" in short_error(err.value)


def test_negative_hardware_price_is_refused():
    doc = copy.deepcopy(POOL)
    doc["spec"]["cost"]["usdPerGPUHour"] = -0.1
    with pytest.raises(ValidationError) as err:
        AcceleratorPool.model_validate(doc)
    assert "spec.cost.usdPerGPUHour" in short_error(err.value)


def test_time_of_use_wrapping_past_midnight_is_accepted():
    pool = AcceleratorPool.model_validate(_tou(("07:00", "22:00", 0.3), ("22:00", "07:00", 0.1)))
    assert len(pool.spec.cost.electricity.time_of_use.periods) == 2


@pytest.mark.parametrize(
    "periods,message",
    [
        ((("00:00", "12:00", 0.1), ("13:00", "24:00", 0.2)), "gap from 12:00 to 13:00"),
        ((("00:00", "12:00", 0.1), ("11:00", "24:00", 0.2)), "overlap"),
        ((("00:00", "20:00", 0.1),), "gap from 20:00 to 24:00"),
        ((("06:00", "06:00", 0.1),), "empty"),
    ],
)
def test_time_of_use_must_tile_the_day(periods, message):
    with pytest.raises(ValidationError) as err:
        AcceleratorPool.model_validate(_tou(*periods))
    assert message in short_error(err.value)
    assert "spec.cost.electricity.timeOfUse" in short_error(err.value)


def test_unknown_time_zone_is_refused():
    with pytest.raises(ValidationError) as err:
        AcceleratorPool.model_validate(_tou(("00:00", "24:00", 0.1), zone="Mars/Olympus_Mons"))
    assert "unknown time zone 'Mars/Olympus_Mons'" in short_error(err.value)


def test_electricity_needs_exactly_one_price():
    with pytest.raises(ValidationError) as err:
        AcceleratorPool.model_validate(_pool_with(flatUsdPerKWh=0.1, prometheus={"query": "x", "fallbackUsdPerKWh": 0.1}))
    assert "set exactly one of flatUsdPerKWh, timeOfUse, prometheus (got flatUsdPerKWh, prometheus)" in short_error(
        err.value
    )


def test_unknown_fields_are_refused_with_their_path():
    doc = copy.deepcopy(SERVICE)
    doc["spec"]["slo"]["ttftMs"] = 100
    with pytest.raises(ValidationError) as err:
        InferenceService.model_validate(doc)
    assert "spec.slo.ttftMs: Extra inputs are not permitted" in short_error(err.value)


def test_load_objects_reports_file_object_and_field(tmp_path):
    doc = copy.deepcopy(SERVICE)
    doc["spec"]["replicas"] = {"min": 3, "max": 1}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ManifestError) as err:
        load_objects([tmp_path])
    assert str(err.value) == (
        f"{tmp_path / 'bad.yaml'}: InferenceService llama3-8b-chat: spec.replicas: min (3) must be at most max (1)"
    )
