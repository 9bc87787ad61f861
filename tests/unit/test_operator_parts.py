"""The operator's pure parts: histogram maths, demand estimate, the Deployment it writes, reference checks."""

import copy
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kilowatt.api.v1alpha1 import AcceleratorPool, InferenceService
from kilowatt.controller.actuator import deployment_manifest, deployment_name
from kilowatt.controller.conditions import set_condition
from kilowatt.controller.validation import parse_service, reference_problems
from kilowatt.demand import DemandEstimator
from kilowatt.metrics.histogram import quantile, share_below, within_all

from tests.paths import EXAMPLES

BUCKETS = [(0.1, 50.0), (0.2, 90.0), (0.5, 99.0), (float("inf"), 100.0)]


def test_quantile_interpolates_like_promql():
    assert quantile(0.5, BUCKETS) == pytest.approx(0.1)
    assert quantile(0.7, BUCKETS) == pytest.approx(0.15)
    assert quantile(0.95, BUCKETS) == pytest.approx(0.2 + 0.3 * 5 / 9)
    assert quantile(0.999, BUCKETS) == 0.5  # in the +Inf bucket: the highest finite bound
    assert quantile(0.5, []) is None and quantile(0.5, [(0.1, 0.0)]) is None


def test_share_below_a_target():
    assert share_below(0.2, BUCKETS) == pytest.approx(0.9)
    assert share_below(0.15, BUCKETS) == pytest.approx(0.7)
    assert share_below(10.0, BUCKETS) == pytest.approx(0.99)


def test_attainment_from_two_histograms_counts_every_miss_of_either():
    """1 % miss TTFT and 2 % miss TPOT: at least 97 % met both (they may be different requests); the lower share,
    98 %, would count a third of the misses as met. Unknown shares are left out; none known is unknown."""
    assert within_all([0.99, 0.98]) == pytest.approx(0.97)
    assert within_all([0.99, None]) == pytest.approx(0.99)
    assert within_all([0.4, 0.5]) == 0.0
    assert within_all([None, None]) is None


def test_demand_follows_a_rise_at_once_and_a_fall_slowly():
    est = DemandEstimator(smoothing=0.3)
    assert est.update("s", 0, 10.0, 0) == 10.0
    assert est.update("s", 15, 20.0, 0) == 20.0  # up: the latest rate wins at once
    fall = est.update("s", 30, 2.0, 0)
    assert 2.0 < fall < 20.0  # down: the average remembers


def test_demand_projects_a_rising_trend_over_the_startup_time():
    est = DemandEstimator()
    for t, rps in ((0, 10.0), (15, 12.0), (30, 14.0)):
        got = est.update("s", t, rps, lead_seconds=60)
    assert got == pytest.approx(14.0 + (4.0 / 30.0) * 60)


def test_a_steep_trend_over_short_periods_projects_at_most_double():
    """A series that just started (0 -> 3 req/s in 4 s) must not plan for 90 req/s two minutes ahead."""
    est = DemandEstimator()
    for t, rps in ((0, 0.0), (2, 1.5), (4, 3.0)):
        got = est.update("s", t, rps, lead_seconds=120)
    assert got == pytest.approx(6.0)


def test_a_step_seen_through_the_metrics_window_is_not_projected_as_a_trend():
    """A burst from 8 to 72 req/s read over a 60-s window rises for exactly one window (24, 40, 56, 72): that is
    the step itself, not a trend to double two minutes ahead (the code trace's bursts bought 20 H100s for one)."""
    est = DemandEstimator()
    rates = [(t, 8.0) for t in range(0, 135, 15)] + [(135, 24.0), (150, 40.0), (165, 56.0), (180, 72.0)]
    seen = {t: est.update("s", t, rps, lead_seconds=120, window_seconds=60) for t, rps in rates}
    # One period after the step the rate reads 24: the step is read as 72, planned at twice the rate read (the
    # cap); a period later, whole.
    assert seen[135] == pytest.approx(48.0) and seen[150] == pytest.approx(72.0)
    got = seen[180]
    assert got == pytest.approx(72.0)  # extrapolating its first and last rate gave min(72 + 64/105 * 120, 2 * 72)


def test_a_steady_rate_s_chance_wobble_is_not_read_as_a_step():
    """20 req/s read over 60 s at 15-s periods: one period's Poisson wobble moves the rate by ~0.4 req/s, which
    the step reading multiplies by W/p = 4; a wobble within 2 sigma buys nothing."""
    est = DemandEstimator()
    for t in range(0, 180, 15):
        est.update("s", t, 20.0, lead_seconds=120, window_seconds=60)
    got = est.update("s", 180, 20.6, lead_seconds=120, window_seconds=60)  # +36 requests in the window: < 2 sigma
    assert got == pytest.approx(20.6)
    stepped = est.update("s", 195, 23.0, lead_seconds=120, window_seconds=60)  # +144 requests: a step to ~29.6
    assert stepped == pytest.approx(20.0 + 4 * 2.4)


def test_a_bursty_rate_s_usual_swing_is_not_read_as_a_step_but_a_step_beyond_it_is():
    """Real traffic comes in bunches: 20 req/s whose windowed rate swings by +-1.5 req/s period to period (the
    window gains or loses ~90 requests, where Poisson would move it by ~25). Another such swing is this rate's
    noise, measured off its own history, though it stands 2 Poisson sigma high; a rise well beyond it is a step."""
    est = DemandEstimator()
    for i, t in enumerate(range(0, 180, 15)):
        est.update("s", t, 20.0 + (1.5 if i % 2 else 0.0), lead_seconds=120, window_seconds=60)
    got = est.update("s", 180, 21.5, lead_seconds=120, window_seconds=60)  # +90 requests: its usual swing
    assert got == pytest.approx(21.5, abs=0.5)  # not read as 20 + 4 x 1.5 = 26
    fresh = DemandEstimator()  # the same swing on a history too short to measure the spread: Poisson decides
    for t in (0, 15, 30, 45, 60):
        fresh.update("s", t, 20.0, lead_seconds=120, window_seconds=60)
    assert fresh.update("s", 75, 21.5, lead_seconds=120, window_seconds=60) == pytest.approx(26.0)
    stepped = est.update("s", 195, 26.0, lead_seconds=120, window_seconds=60)  # +270 requests: a step
    assert stepped == pytest.approx(21.5 + 4 * 4.5)


def test_a_rise_kept_over_two_windows_is_projected_over_the_startup_time():
    est = DemandEstimator()
    for t in range(0, 195, 15):  # +1 req/s every 15 s for over three minutes, read over a 60-s window
        got = est.update("s", t, 10.0 + t / 15, lead_seconds=120, window_seconds=60)
    assert got == pytest.approx(22.0 + 120 / 15)


def _bursts(est: DemandEstimator, key: str, until_s: int) -> None:
    """The code trace's shape, read over a 60-s window every 15 s: 70 req/s for two periods every five minutes,
    2 req/s between — bursts shorter than a 120-s start-up."""
    for t in range(0, until_s, 15):
        est.update(key, float(t), 70.0 if t % 300 in (150, 165) else 2.0, lead_seconds=120, window_seconds=60)


def test_bursts_shorter_than_a_startup_are_held_for_between_them():
    est = DemandEstimator()
    _bursts(est, "s", 15 * 19)
    assert est.recurring("s", 120.0, 99.0) is None  # under five minutes of rates: not believed yet
    _bursts(est, "s", 3600)  # an hour of them; the last rate read is a lull's
    held = est.recurring("s", 120.0, 99.0)
    assert held == pytest.approx(70.0)  # the lull plus the rise that came within a start-up, at most the peak
    assert est.recurring("s", 120.0, 99.0, share=0.5) == pytest.approx(2.0 + 0.5 * 68.0)
    assert est.recurring("s", 120.0, 99.0, share=0.0) == pytest.approx(2.0)
    # Half the moments were followed by no burst within a start-up: the median rise is none.
    assert est.recurring("s", 120.0, 50.0) == pytest.approx(2.0)


def test_a_burst_read_as_a_step_is_out_of_reach_and_smooth_traffic_has_no_reach():
    est = DemandEstimator()
    _bursts(est, "s", 3600)  # an hour of 70 req/s bursts shorter than a start-up, 2 req/s between
    est.update("s", 3600.0, 70.0, lead_seconds=120, window_seconds=60)  # the next burst's first period
    # What followed the hour's moments at burst level within a start-up was a fall: nothing beyond the hour's peak
    # can be needed by a replica asked for now.
    assert est.reach("s", 120.0, 99.0) == pytest.approx(70.0)
    # In the lull, the moments at its level were followed by bursts: a burst stays in reach.
    _bursts(est, "lull", 3600)
    assert est.reach("lull", 120.0, 99.0) == pytest.approx(70.0)
    # A ramp rises 2 req/s within a start-up, a few per cent of its rate: not bursts, and the estimate stands.
    ramp = DemandEstimator()
    for t in range(0, 3600, 15):  # +1 req/s a minute
        ramp.update("r", float(t), 10.0 + t / 60.0, lead_seconds=120, window_seconds=60)
    assert ramp.reach("r", 120.0, 99.0) is None
    # A burst at a new level, far above the hour's: no moment at its level in the hour, the estimate stands.
    est.update("s", 3615.0, 200.0, lead_seconds=120, window_seconds=60)
    assert est.reach("s", 120.0, 99.0) is None
    # A first burst: nothing in the hour rose within a start-up, so the traffic is not bursts yet.
    first = DemandEstimator()
    for t in range(0, 600, 15):
        first.update("f", float(t), 2.0, lead_seconds=120, window_seconds=60)
    first.update("f", 600.0, 70.0, lead_seconds=120, window_seconds=60)
    assert first.reach("f", 120.0, 99.0) is None
    assert DemandEstimator().reach("none", 120.0, 99.0) is None


def test_a_smooth_ramp_adds_only_what_it_rose_within_a_startup_and_never_beyond_the_peak():
    est = DemandEstimator()
    for t in range(0, 3600, 15):  # +1 req/s a minute
        est.update("s", float(t), 10.0 + t / 60.0, lead_seconds=120, window_seconds=60)
    assert est.recurring("s", 120.0, 99.0) == pytest.approx(10.0 + 3585 / 60.0)  # at a new high: the high itself
    for t in range(3600, 4200, 15):  # then a fall
        est.update("s", float(t), 69.75 - (t - 3600) / 60.0, lead_seconds=120, window_seconds=60)
    latest = 69.75 - 585 / 60.0
    assert est.recurring("s", 120.0, 99.0) == pytest.approx(latest + 2.0)  # the ramp's two minutes' rise
    est.forget("s")
    assert est.recurring("s", 120.0, 99.0) is None


def _objects():
    service = InferenceService.model_validate(yaml.safe_load((EXAMPLES / "llama3-8b.yaml").read_text()))
    pool = AcceleratorPool.model_validate(yaml.safe_load((EXAMPLES / "pool-rtx4090.yaml").read_text()))
    body = service.model_dump(by_alias=True, exclude_none=True)
    body["metadata"]["uid"] = "1234"
    return body, pool


def test_the_deployment_adds_gpus_placement_labels_and_owner():
    body, pool = _objects()
    d = deployment_manifest(body, pool, replicas=3, tensor_parallel=2)
    assert d["metadata"]["name"] == "llama3-8b-chat-rtx4090" and d["spec"]["replicas"] == 3
    pod = d["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kilowatt.dev/gpu": "rtx4090"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["args"][-2:] == ["--tensor-parallel-size", "2"]
    assert container["readinessProbe"] == {"httpGet": {"path": "/health", "port": 8000}}  # the user's, kept
    assert d["spec"]["template"]["metadata"]["labels"] == d["spec"]["selector"]["matchLabels"] | {
        "app.kubernetes.io/managed-by": "kilowatt"}
    owner = d["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("InferenceService", "1234", True)
    assert body["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "8192"  # the input is not mutated


def _container(d):
    return d["spec"]["template"]["spec"]["containers"][0]


def test_a_single_gpu_replica_says_its_degree_once():
    body, pool = _objects()
    args = _container(deployment_manifest(body, pool, 1, 1))["args"]
    assert args.count("--tensor-parallel-size") == 1 and args[args.index("--tensor-parallel-size") + 1] == "1"


@pytest.mark.parametrize("written", [
    ["--tensor-parallel-size", "1"], ["--tensor-parallel-size=1"], ["-tp", "1"], ["-tp=8"],
    ["--tensor-parallel-size", "2", "-tp", "4"],
])
def test_kilowatt_owns_the_degree_whatever_the_spelling(written):
    body, pool = _objects()
    body["spec"]["template"]["spec"]["containers"][0]["args"] = ["--port", "8000", *written, "--enforce-eager"]
    args = _container(deployment_manifest(body, pool, 2, 4))["args"]
    degrees = [a for a in args if a.split("=")[0] in ("--tensor-parallel-size", "-tp")]
    assert degrees == ["--tensor-parallel-size"] and args[args.index("--tensor-parallel-size") + 1] == "4"
    assert args[:3] == ["--port", "8000", "--enforce-eager"]  # the user's other arguments, in order


def test_the_model_and_its_context_come_from_the_spec():
    body, pool = _objects()
    body["spec"]["template"]["spec"]["containers"][0]["args"] = ["--model=some/other", "--max-model-len", "4096"]
    args = _container(deployment_manifest(body, pool, 1, 2))["args"]
    assert args.count("--model") == 1 and args[args.index("--model") + 1] == body["spec"]["model"]["name"]
    assert args[args.index("--max-model-len") + 1] == str(body["spec"]["model"]["maxContextTokens"])
    assert not any(a.startswith("--model=") for a in args)


def test_a_positional_model_is_replaced_not_doubled():
    body, pool = _objects()
    body["spec"]["template"]["spec"]["containers"][0]["args"] = ["some/other-model", "--port", "8000"]
    args = _container(deployment_manifest(body, pool, 1, 1))["args"]
    assert args[0] == body["spec"]["model"]["name"] and "--model" not in args and "some/other-model" not in args


def test_tensor_parallel_pods_get_memory_backed_shared_memory():
    body, pool = _objects()
    d = deployment_manifest(body, pool, 1, 4)
    pod = d["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "kilowatt-shm"]
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert {"name": "kilowatt-shm", "mountPath": "/dev/shm"} in _container(d)["volumeMounts"]
    single = deployment_manifest(body, pool, 1, 1)["spec"]["template"]["spec"]
    assert "volumes" not in single  # one GPU: no NCCL, no extra shared memory


def test_probes_and_requests_are_added_only_where_the_template_has_none():
    body, pool = _objects()
    c = _container(deployment_manifest(body, pool, 1, 2))
    assert c["readinessProbe"] == {"httpGet": {"path": "/health", "port": 8000}}  # the user's, kept
    assert c["startupProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 600
    # 8.03B parameters in bf16 = 14.96 GiB of weights: ceil(1.2x) = 18 GiB, plus 4 GiB of /dev/shm for two GPUs.
    assert c["resources"]["requests"] == {"cpu": "4", "memory": "22Gi", "nvidia.com/gpu": "2"}
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "1", "memory": "8Gi"}}
    mine = _container(deployment_manifest(body, pool, 1, 2))["resources"]["requests"]
    assert (mine["cpu"], mine["memory"]) == ("1", "8Gi")


def test_a_template_change_changes_the_template_hash():
    body, pool = _objects()
    before = deployment_manifest(body, pool, 2, 1)["metadata"]["annotations"]["kilowatt.dev/template-hash"]
    again = deployment_manifest(body, pool, 5, 1)["metadata"]["annotations"]["kilowatt.dev/template-hash"]
    assert before == again  # replicas are not the template
    body["spec"]["template"]["spec"]["containers"][0]["image"] = "vllm/vllm-openai:v0.11.0"
    after = deployment_manifest(body, pool, 2, 1)["metadata"]["annotations"]["kilowatt.dev/template-hash"]
    assert after != before


def test_long_names_are_shortened_stably():
    name = deployment_name("a" * 50, "pool-with-a-long-name")
    assert len(name) <= 63 and name == deployment_name("a" * 50, "pool-with-a-long-name")


def test_references_to_missing_pools_name_the_field_and_the_choices():
    doc = yaml.safe_load((EXAMPLES / "llama3-8b.yaml").read_text())
    doc["spec"]["pools"] = ["h100", "rtx-4090"]
    service, problems = parse_service(doc)
    assert problems == []
    (problem,) = reference_problems(service, {"h100", "rtx4090"})
    assert str(problem) == "spec.pools[1]: no AcceleratorPool named 'rtx-4090'; use one of: h100, rtx4090, or create it"


def test_conditions_keep_their_transition_time_until_the_status_changes():
    t0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    first = set_condition([], "Ready", True, "R", "m", t0)
    assert first[0]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    later = t0 + timedelta(hours=1)
    again = set_condition(copy.deepcopy(first), "Ready", True, "R", "other message", later)
    assert again[0]["lastTransitionTime"] == "2026-01-01T12:00:00Z" and again[0]["message"] == "other message"
    flipped = set_condition(copy.deepcopy(again), "Ready", False, "R", "m", later)
    assert flipped[0]["status"] == "False" and flipped[0]["lastTransitionTime"] == "2026-01-01T13:00:00Z"


def test_gpu_quantities_are_read_in_the_api_servers_canonical_form():
    """Found by operator_scale: the API server stores 2000 allocatable GPUs as "2k"."""
    from kilowatt.controller.cluster import _quantity

    assert [_quantity(v) for v in ("8", "2k", None, "nonsense")] == [8, 2000, 0, 0]


def test_a_spec_is_parsed_again_only_when_its_resource_version_moves(monkeypatch):
    from kilowatt.controller import observe as observe_module

    doc = yaml.safe_load((EXAMPLES / "llama3-8b.yaml").read_text())
    doc["metadata"].update(uid="u1", resourceVersion="10", namespace="ns")
    calls = []

    def counting(body):
        calls.append(body["metadata"]["resourceVersion"])
        return parse_service(body)

    monkeypatch.setattr(observe_module, "parse_service", counting)
    memo = observe_module.ParseMemo()
    first, _ = memo.service(doc)
    memo.end_period()
    again, problems = memo.service(copy.deepcopy(doc))  # the same object, read again the next period
    assert again is first and problems == [] and calls == ["10"]
    problems.append("a caller's own list")  # what a caller adds to the problems is not remembered
    assert memo.service(doc)[1] == []
    memo.end_period()
    changed = copy.deepcopy(doc)
    changed["metadata"]["resourceVersion"] = "11"
    changed["spec"]["slo"]["tpotMilliseconds"] = 80
    service, _ = memo.service(changed)
    assert calls == ["10", "11"] and service.spec.slo.tpot_milliseconds == 80
    memo.end_period()
    memo.service(doc)  # version 10 was not read in the last period: forgotten, parsed again
    assert calls == ["10", "11", "10"]


class _RecordingStatusApi:
    """Only what the Applier's status writes call: records each PATCH (a unit test of the throttle alone)."""

    def __init__(self) -> None:
        self.patches: list[dict] = []

    def patch_namespaced_custom_object_status(self, group, version, namespace, plural, name, body) -> None:
        self.patches.append(body["status"])


def test_drifting_figures_are_written_at_most_every_refresh_interval_of_the_loops_clock():
    from kilowatt.clock import SimulatedClock
    from kilowatt.controller.apply import STATUS_REFRESH_SECONDS, Applier
    from kilowatt.controller.telemetry import Telemetry

    clock = SimulatedClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
    api = _RecordingStatusApi()
    applier = Applier(core=None, apps=None, custom=api, telemetry=Telemetry(), clock=clock)
    body = {"metadata": {"namespace": "ns", "name": "svc"}}
    status = {"placementSummary": "1×H100", "costPerHourUsd": 2.0, "conditions": []}
    applier.service_status(body, status)
    clock.t_s = 10.0
    applier.service_status(body, {**status, "costPerHourUsd": 2.1})  # a figure drifted: not yet
    clock.t_s = 20.0
    applier.service_status(body, {**status, "placementSummary": "2×H100"})  # a decision: at once
    clock.t_s = 20.0 + STATUS_REFRESH_SECONDS - 1
    applier.service_status(body, {**status, "placementSummary": "2×H100", "costPerHourUsd": 4.2})
    clock.t_s = 20.0 + STATUS_REFRESH_SECONDS
    applier.service_status(body, {**status, "placementSummary": "2×H100", "costPerHourUsd": 4.3})
    assert [(p["placementSummary"], p["costPerHourUsd"]) for p in api.patches] == [
        ("1×H100", 2.0), ("2×H100", 2.0), ("2×H100", 4.3)]


@settings(max_examples=300, derandomize=True)
@given(st.text())
def test_the_apply_body_is_json_a_yaml_decoder_reads_back_unchanged(text) -> None:
    """Server-side apply reads its JSON body as YAML: whatever a user writes in a template (an emoji, a bidi
    control, a C1 character) must come back the same, where json.dumps' surrogate pairs made it a 400."""
    import json

    from kilowatt.controller.actuator import apply_patch_body

    manifest = {"metadata": {"name": "x"}, "spec": {"env": [{"name": "NOTE", "value": text}]}}
    body = apply_patch_body(manifest)
    assert json.loads(body) == manifest
    assert yaml.safe_load(body.decode("utf-8")) == manifest
    assert b"\\ud8" not in body.lower() and b"\\udc" not in body.lower()
