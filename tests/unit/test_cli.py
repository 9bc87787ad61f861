"""The CLI contracts: `kilowatt plan` and `kilowatt profile` JSON shapes, and errors a user can act on."""

import json
import subprocess
import sys

import yaml

from tests.paths import EXAMPLES


def kilowatt(*args):
    return subprocess.run([sys.executable, "-m", "kilowatt.cli", *args], capture_output=True, text=True, timeout=120)


def test_plan_json_contract():
    out = kilowatt("plan", "-f", str(EXAMPLES), "--demand", "default/llama3-8b-chat=20",
                   "--at", "2026-07-01T12:00:00-07:00", "-o", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["feasible"] is True
    assert isinstance(data["totalCostPerHourUsd"], float) and data["totalCostPerHourUsd"] > 0
    (svc,) = data["services"]
    assert svc["namespace"] == "default" and svc["name"] == "llama3-8b-chat"
    assert sum(p["replicas"] * p["capacityRps"] for p in svc["placement"]) >= 20 * 1.2
    assert svc["reason"].endswith(".")
    assert {p["name"]: p["gpusMax"] for p in data["pools"]} == {"rtx4090": 16, "h100": 16}


def test_evening_peak_raises_the_cost_of_the_same_plan():
    args = ["plan", "-f", str(EXAMPLES), "--demand", "default/llama3-8b-chat=20", "-o", "json"]
    noon = json.loads(kilowatt(*args, "--at", "2026-07-01T12:00:00-07:00").stdout)
    peak = json.loads(kilowatt(*args, "--at", "2026-07-01T18:00:00-07:00").stdout)
    assert peak["energyCostPerHourUsd"] > 2.5 * noon["energyCostPerHourUsd"]  # $0.41 vs $0.14 per kWh
    assert peak["hardwareCostPerHourUsd"] == noon["hardwareCostPerHourUsd"]


def test_plan_text_output_names_placement_and_cost():
    out = kilowatt("plan", "-f", str(EXAMPLES), "--demand", "default/llama3-8b-chat=20")
    assert out.returncode == 0, out.stderr
    assert "RTX-4090" in out.stdout and "total $" in out.stdout and "pool rtx4090:" in out.stdout


def test_plan_says_when_its_time_went_to_measuring_curves(tmp_path):
    """A first plan for a model, GPU and length mix measures latency curves (seconds; the solve is milliseconds):
    stderr says so and where they are kept; the next plan reads them back and says nothing."""
    import os

    env = {**os.environ, "KILOWATT_CURVE_CACHE": str(tmp_path)}
    args = [sys.executable, "-m", "kilowatt.cli", "plan", "-f", str(EXAMPLES), "--demand", "default/llama3-8b-chat=20"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr
    assert "measured latency curves on the serving engine" in first.stderr and str(tmp_path) in first.stderr
    again = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr
    assert "latency curves" not in again.stderr
    # The same plan from the curves read back (all but the time it took).
    assert again.stdout.rsplit("solved in", 1)[0] == first.stdout.rsplit("solved in", 1)[0]


def test_plan_refuses_a_malformed_demand():
    out = kilowatt("plan", "-f", str(EXAMPLES), "--demand", "llama3=20")
    assert out.returncode != 0
    assert "expected NAMESPACE/NAME=REQUESTS_PER_SECOND" in out.stderr and "Traceback" not in out.stderr


def test_plan_names_an_unknown_service():
    out = kilowatt("plan", "-f", str(EXAMPLES), "--demand", "default/nope=1")
    assert out.returncode == 2
    assert "default/nope" in out.stderr and "default/llama3-8b-chat" in out.stderr


def test_profile_json_contract():
    out = kilowatt("profile", "--params-billion", "8", "--dtype", "fp16", "--gpu", "RTX-4090", "--tensor-parallel",
                   "1", "--input-tokens", "205", "--output-tokens", "200", "--load", "1,4,8,16",
                   "--slo-ttft-ms", "500", "--slo-tpot-ms", "50", "-o", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["fits"] is True
    assert 0 < data["maxRpsWithinSlo"] < data["saturationRps"]
    assert [p["loadRps"] for p in data["points"]] == [1, 4, 8, 16]
    assert set(data["points"][0]) == {"loadRps", "ttftMeanMs", "ttftP99Ms", "tpotMeanMs", "tpotP99Ms"}
    assert data["points"][0]["tpotMeanMs"] < data["points"][1]["tpotMeanMs"]


def test_profile_reports_a_model_that_does_not_fit():
    out = kilowatt("profile", "--params-billion", "70", "--gpu", "RTX-4090", "-o", "json")
    data = json.loads(out.stdout)
    assert data["fits"] is False and data["saturationRps"] == 0 and data["maxRpsWithinSlo"] == 0


def test_profile_lists_known_gpus_for_an_unknown_one():
    out = kilowatt("profile", "--params-billion", "8", "--gpu", "TPU")
    assert out.returncode == 2 and "RTX-4090, H100-SXM, H100-PCIe, A100-80GB, L40S" in out.stderr


def test_validate_names_the_field(tmp_path):
    doc = yaml.safe_load((EXAMPLES / "pool-h100.yaml").read_text())
    doc["spec"]["cost"]["electricity"]["flatUsdPerKWh"] = -1
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
    out = kilowatt("validate", "-f", str(tmp_path))
    assert out.returncode == 1
    assert "AcceleratorPool h100: spec.cost.electricity.flatUsdPerKWh: Input should be greater than or equal to 0" \
        in out.stderr
