"""The capacity model: memory fit, latency against load, the SLO bound, and its fit to measurements."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kilowatt.performance import CapacityModel, ModelShape, TokenMix, gpu_by_name
from kilowatt.performance.calibrate import read_measurements, score, usable
from kilowatt.performance.capacity import Calibration, default_calibration

from tests.paths import SHARED_DATA

LLAMA_8B = ModelShape(8.03, "bf16", 32, 8, 128)
LLAMA_70B = ModelShape(70.6, "bf16", 80, 8, 128)
CHAT = TokenMix(205, 200)


def model(shape=LLAMA_8B, gpu="RTX-4090", k=1):
    return CapacityModel(shape, gpu_by_name(gpu), k)


def test_8b_fits_a_4090_and_70b_does_not():
    assert model().fits()
    assert not model(LLAMA_70B).fits()
    assert model(LLAMA_70B).saturation_rps(CHAT) == 0.0


def test_70b_fits_two_h100s_but_not_one():
    assert not model(LLAMA_70B, "H100-SXM", 1).fits()
    assert model(LLAMA_70B, "H100-SXM", 2).fits()


def test_kv_capacity_counts_weights_and_runtime_overhead():
    c = default_calibration()
    m = model()
    usable_bytes = 24 * 1024**3 * c.memory_utilization - c.runtime_overhead_gib * 1024**3
    expected = (usable_bytes - 8.03e9 * 2 * (1 + c.activation_fraction)) / (2 * 32 * 8 * 128 * 2)
    assert m.kv_capacity_tokens == pytest.approx(expected)


def test_batch_one_decode_is_bandwidth_bound():
    # Reading 16 GB of weights at 1,008 GB/s takes at least 16 ms: no calibration can make a step faster.
    step = model().step_seconds(1, 300)
    assert step >= 8.03e9 * 2 / 1008e9
    assert model(gpu="H100-SXM").step_seconds(1, 300) < step / 2.5  # 3.3x the bandwidth


def test_latency_rises_with_load_until_saturation():
    m = model()
    saturation = m.saturation_rps(CHAT)
    loads = [saturation * f for f in (0.05, 0.3, 0.6, 0.9)]
    points = [m.at_load(x, CHAT) for x in loads]
    assert all(not p.saturated for p in points)
    for a, b in zip(points, points[1:]):
        assert b.tpot_mean_seconds > a.tpot_mean_seconds
        assert b.ttft_mean_seconds > a.ttft_mean_seconds
    over = m.at_load(saturation * 1.01, CHAT)
    assert over.saturated and math.isinf(over.ttft_p_seconds)


def test_tensor_parallel_is_worse_over_pcie_than_nvlink():
    pcie = CapacityModel(LLAMA_8B, gpu_by_name("RTX-4090"), 2)
    nvlink = CapacityModel(LLAMA_8B, gpu_by_name("H100-SXM"), 2)
    # Communication share of a batch-1 decode step.
    share = lambda m: m.allreduce_seconds / m.step_seconds(1, 300)  # noqa: E731
    assert share(pcie) > 2 * share(nvlink)


def test_max_rps_within_slo_meets_the_slo_there():
    m = model()
    rps = m.max_rps_within_slo(CHAT, 0.5, 0.05, 95)
    assert 0 < rps < m.saturation_rps(CHAT)
    at = m.at_load(rps, CHAT, 95)
    assert at.ttft_p_seconds <= 0.5 and at.tpot_p_seconds <= 0.05
    beyond = m.at_load(rps * 1.02, CHAT, 95)
    assert beyond.ttft_p_seconds > 0.5 or beyond.tpot_p_seconds > 0.05


def test_an_slo_below_the_physical_floor_gives_zero_capacity():
    # A 4090 cannot stream 16 GB of weights in 5 ms.
    assert model().max_rps_within_slo(CHAT, 0.5, 0.005) == 0.0


@settings(max_examples=40, deadline=None)
@given(
    tpot_ms=st.floats(20, 200),
    tighter=st.floats(0.5, 0.95),
    ttft_ms=st.floats(100, 5000),
    gpu=st.sampled_from(["RTX-4090", "H100-SXM", "L40S"]),
)
def test_a_tighter_slo_never_raises_capacity(tpot_ms, tighter, ttft_ms, gpu):
    m = model(gpu=gpu)
    loose = m.max_rps_within_slo(CHAT, ttft_ms / 1000, tpot_ms / 1000)
    tight = m.max_rps_within_slo(CHAT, ttft_ms / 1000, tpot_ms * tighter / 1000)
    assert tight <= loose * (1 + 1e-6)


def test_latency_correction_shrinks_capacity():
    m = model()
    slower = m.corrected(1.0, 1.3)
    assert slower.max_rps_within_slo(CHAT, 0.5, 0.05) < m.max_rps_within_slo(CHAT, 0.5, 0.05)
    assert slower.at_load(2, CHAT).tpot_mean_seconds == pytest.approx(1.3 * m.at_load(2, CHAT).tpot_mean_seconds)


def test_shipped_calibration_reproduces_the_measurements():
    data = usable(read_measurements(SHARED_DATA / "vllm_serving_4090_vs_h100pcie.csv"))
    medians = score(data, default_calibration()).medians()
    # In-sample; the leave-one-model-out figures are in benchmarks/RESULTS.md.
    assert medians["throughput"] <= 0.15
    assert medians["tpot"] <= 0.20
    assert medians["ttft"] <= 0.25
    assert default_calibration().source != Calibration().source  # the fitted file, not the code's defaults
