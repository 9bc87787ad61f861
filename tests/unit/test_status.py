"""Report and decide, without a cluster: what status and events a decision leads to, and why a decision is held,
on a simulated clock. The API server is not involved: these are the pure steps the control loop calls."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from kilowatt.api.v1alpha1 import ScalingMode
from kilowatt.controller.cluster import ClusterView, Running
from kilowatt.controller.observe import ObservedService
from kilowatt.controller.status import pool_status, service_status
from kilowatt.decide import Decider, Decision, ServiceInput
from kilowatt.economics.cost import CostBreakdown
from kilowatt.metrics.source import ServiceObservation
from kilowatt.planner.reasons import DownWindow, MaxReplicasReached, MetricsMissing, ModeOff
from kilowatt.planner.snapshot import CurrentPlacement
from kilowatt.state import load_objects, pool_state

from tests.paths import EXAMPLES

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
COST = CostBreakdown(1.0, 0.5, 900.0)


def _objects():
    pools, services = load_objects([EXAMPLES])
    return {p.name: p for p in pools}, services[0]


def _item(svc, current=None, data=None) -> ObservedService:
    body = {"metadata": {"namespace": svc.metadata.namespace, "name": svc.metadata.name, "generation": 3}}
    return ObservedService(body, ServiceInput.of(svc, current or {}, data))


def _condition(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_a_binding_constraint_is_reported_as_capacity_short_with_its_text():
    pools, svc = _objects()
    decision = Decision({"rtx4090": 4}, {"rtx4090": 1}, "4×RTX-4090 is the most that can run", MaxReplicasReached(4),
                        changed=True)
    status, _ = service_status(_item(svc), decision, COST, {}, pools, None, T0)
    placed = _condition(status, "Placed")
    assert (placed["status"], placed["reason"], placed["message"]) == ("False", "CapacityShort",
                                                                       "replicas.max (4) reached")
    assert status["lastDecision"] == {"time": "2026-03-01T09:00:00Z", "reason": "4×RTX-4090 is the most that can run"}
    assert status["placementSummary"] == "4×RTX-4090" and status["observedGeneration"] == 3


def test_last_decision_keeps_its_time_until_the_next_change():
    pools, svc = _objects()
    changed = Decision({"rtx4090": 2}, {"rtx4090": 1}, "first", None, changed=True)
    first, _ = service_status(_item(svc), changed, COST, {}, pools, None, T0)
    same = Decision({"rtx4090": 2}, {"rtx4090": 1}, "second", None, changed=False)
    later, _ = service_status(_item(svc), same, COST, first, pools, None, T0 + timedelta(minutes=5))
    assert later["lastDecision"] == first["lastDecision"]
    moved, _ = service_status(_item(svc), Decision({"rtx4090": 3}, {"rtx4090": 1}, "third", None, changed=True),
                              COST, later, pools, None, T0 + timedelta(minutes=9))
    assert moved["lastDecision"] == {"time": "2026-03-01T09:09:00Z", "reason": "third"}


def test_metrics_going_missing_and_returning_post_one_event_each():
    pools, svc = _objects()
    data = ServiceObservation(10.0, 800.0, 200.0, 0.2, 0.03, 0.99)
    decision = Decision({"rtx4090": 2}, {"rtx4090": 1}, "ok", None, changed=False)
    seen, events = service_status(_item(svc, data=data), decision, COST, {}, pools, None, T0)
    assert events == [] and _condition(seen, "MetricsAvailable")["status"] == "True"
    assert _condition(seen, "SLOMet")["status"] == "True"  # 200 ms / 30 ms within the example's SLO
    assert seen["observed"]["ttftAtPercentileMilliseconds"] == 200.0
    assert seen["observed"]["percentile"] == svc.spec.slo.percentile
    gone, events = service_status(_item(svc), decision, COST, seen, pools, "Prometheus at http://x: timed out", T0)
    assert [(e.type, e.reason) for e in events] == [("Warning", "MetricsUnavailable")]
    assert _condition(gone, "MetricsAvailable")["reason"] == "PrometheusUnavailable"
    still, events = service_status(_item(svc), decision, COST, gone, pools, "Prometheus at http://x: timed out", T0)
    assert events == []
    _, events = service_status(_item(svc, data=data), decision, COST, still, pools, None, T0)
    assert [(e.type, e.reason) for e in events] == [("Normal", "MetricsRestored")]


def test_a_pool_without_nodes_says_how_to_fix_it_and_warns_once():
    pools, _ = _objects()
    pool = pools["rtx4090"]
    view = ClusterView(nodes_by_pool={"rtx4090": []})
    status, events = pool_status(pool, pool_state(pool, 0), view, None, None, {}, T0)
    ready = _condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NoMatchingNodes")
    assert "fix spec.nodeSelector" in ready["message"]
    assert [(e.type, e.reason) for e in events] == [("Warning", "PoolUnavailable")]
    _, again = pool_status(pool, pool_state(pool, 0), view, None, None, status, T0)
    assert again == []


def test_a_pool_quotes_the_metered_cost_per_gpu_in_use():
    pools, _ = _objects()
    pool = pools["rtx4090"]
    view = ClusterView(gpus_by_pool={"rtx4090": 8}, nodes_by_pool={"rtx4090": ["n1"]},
                       deployments={("default/a", "rtx4090"): Running("a-rtx4090", 2, 2, 2)})
    state = pool_state(pool, 8)
    status, _ = pool_status(pool, state, view, 1200.0, None, {}, T0)
    e = state.economics
    # 1200 W over 4 GPUs in use: 0.3 kW each, at the wall (PUE) at the hour's price, plus the hardware rate.
    expected = e.usd_per_gpu_hour + 0.3 * e.pue * e.price.usd_per_kwh(T0)
    assert status["gpusInUse"] == 4 and status["effectiveUsdPerGPUHour"] == round(expected, 4)
    assert status["measuredPowerWatts"] == round(1200.0 * e.pue, 1)


def test_a_service_without_metrics_keeps_what_runs_and_says_why():
    pools, svc = _objects()
    states = {name: pool_state(p, p.spec.max_gpus) for name, p in pools.items()}
    running = {"rtx4090": CurrentPlacement(3, 2, 3)}
    decided = Decider().decide(T0, 0.0, [ServiceInput.of(svc, running, None)], pools, states, "Prometheus down")
    d = decided.decisions[svc.key]
    assert d.held and not d.changed and d.desired == {"rtx4090": 3} and d.tensor_parallel == {"rtx4090": 2}
    assert d.holds == (MetricsMissing(svc.key, "Prometheus down"),)


def test_mode_off_leaves_deployments_alone_even_with_metrics():
    pools, svc = _objects()
    svc = svc.model_copy(update={"spec": svc.spec.model_copy(update={"scaling": svc.spec.scaling.model_copy(
        update={"mode": ScalingMode.OFF})})})
    svc.spec.scaling.model_fields_set.add("mode")
    states = {name: pool_state(p, p.spec.max_gpus) for name, p in pools.items()}
    data = ServiceObservation(50.0, 800.0, 200.0, 0.2, 0.03, 0.99)
    d = Decider().decide(T0, 0.0, [ServiceInput.of(svc, {"rtx4090": CurrentPlacement(1, 1, 1)}, data)], pools,
                         states).decisions[svc.key]
    assert d.holds == (ModeOff(),) and d.desired == {"rtx4090": 1}


def test_a_scale_down_waits_out_the_window_as_a_typed_hold():
    from kilowatt.api.v1alpha1 import RoutingMode
    from kilowatt.decide import keep_warm_seconds
    from kilowatt.planner.stabiliser import ScalingPolicy

    pools, svc = _objects()
    states = {name: pool_state(p, p.spec.max_gpus) for name, p in pools.items()}
    decider = Decider()
    busy = ServiceObservation(15.0, 800.0, 200.0, 0.2, 0.03, 0.99)  # within one step up (8 replicas)
    quiet = ServiceObservation(0.5, 800.0, 200.0, 0.2, 0.03, 0.99)
    first = decider.decide(T0, 0.0, [ServiceInput.of(svc, {}, busy)], pools, states).decisions[svc.key]
    running = {p: CurrentPlacement(n, first.tensor_parallel[p], n) for p, n in first.desired.items() if n > 0}
    later = decider.decide(T0 + timedelta(seconds=15), 15.0, [ServiceInput.of(svc, running, quiet)], pools,
                           states).decisions[svc.key]
    downs = [h for h in later.holds if isinstance(h, DownWindow)]
    # The service's window, or longer where keeping the replicas through the dip costs little (keep_warm_seconds:
    # owned GPUs behind weighted routes).
    windows = keep_warm_seconds(running, {}, states, ScalingPolicy(scale_down_window_seconds=300.0), T0, None,
                                svc.spec.routing.mode is RoutingMode.SERVICE)
    assert svc.spec.scaling.scale_down_stabilization_seconds == 300.0
    assert downs and all(h.window_seconds == windows.get(h.pool, 300.0) for h in downs)
    assert later.desired == {p: c.replicas for p, c in running.items()} | {
        p: n for p, n in later.desired.items() if p not in running}
    assert "Held: " in later.reason and str(downs[0]) in later.reason


def test_the_loop_acts_only_while_this_process_holds_kopfs_peering():
    from kilowatt.controller.leadership import holds_peering

    now = datetime(2026, 3, 1, 12, 0, 30, tzinfo=timezone.utc)
    seen = lambda s: {"lastseen": f"2026-03-01T12:00:{s:02d}+00:00", "lifetime": 60}  # noqa: E731
    me = {"me": {"priority": 20, **seen(25)}}
    assert holds_peering(me, "me", 20, now)
    assert holds_peering({**me, "low": {"priority": 10, **seen(29)}}, "me", 20, now)
    assert not holds_peering({**me, "high": {"priority": 30, **seen(29)}}, "me", 20, now)
    assert not holds_peering({**me, "twin": {"priority": 20, **seen(29)}}, "me", 20, now)  # kopf pauses both
    gone = {**me, "high": {"priority": 30, "lastseen": "2026-03-01T11:58:00+00:00", "lifetime": 60}}
    assert holds_peering(gone, "me", 20, now)  # a peer silent past its lifetime is gone
    assert not holds_peering({"low": {"priority": 10, **seen(29)}}, "me", 20, now)  # kopf has not announced us
    stale = {"me": {"priority": 20, "lastseen": "2026-03-01T11:58:00+00:00", "lifetime": 60}}
    assert not holds_peering(stale, "me", 20, now)  # our own kopf stopped touching: others may take over


def test_a_service_whose_only_replica_cannot_be_scheduled_moves_rather_than_waits_for_metrics():
    """No series can come from a replica that never starts: with nothing ready and its Pod Unschedulable, the
    service is planned at its floor where there is room; with a replica ready it is held as any service
    without metrics is."""
    from dataclasses import replace

    pools, svc = _objects()
    states = {name: pool_state(p, p.spec.max_gpus) for name, p in pools.items()}
    full = {**states, "rtx4090": replace(states["rtx4090"], gpus_max=8)}  # the plan's view: room; the nodes': none
    pending = {"rtx4090": CurrentPlacement(1, 1, 0)}
    d = Decider().decide(T0, 0.0, [ServiceInput.of(svc, pending, None, unschedulable=frozenset({"rtx4090"}))], pools, full) \
        .decisions[svc.key]
    assert not d.held and d.changed and d.desired.get("h100", 0) >= 1
    assert d.holds == (DownWindow("rtx4090", 1, 1, 0, 300.0, " GPUs"),)  # the Pending one goes after the window
    waiting = Decider().decide(T0, 0.0, [ServiceInput.of(svc, pending, None)], pools, full).decisions[svc.key]
    assert waiting.held  # merely not scraped yet: hold
    ready = {"rtx4090": CurrentPlacement(2, 1, 1)}
    held = Decider().decide(T0, 0.0, [ServiceInput.of(svc, ready, None, unschedulable=frozenset({"rtx4090"}))], pools, full) \
        .decisions[svc.key]
    assert held.held and held.desired == {"rtx4090": 2}
    down = Decider().decide(T0, 0.0, [ServiceInput.of(svc, pending, None, unschedulable=frozenset({"rtx4090"}))], pools, full,
                            "Prometheus down").decisions[svc.key]
    assert down.held  # Prometheus unreadable: nothing is known, nothing moves


def test_status_says_the_headroom_planned_with_and_the_reason_why_it_is_lower():
    from kilowatt.budget import Headroom

    pools, svc = _objects()
    lowered = Decision({"h100": 1}, {"h100": 1}, "1×H100-SXM serve 20 req/s (+5% headroom ...).", None, changed=True,
                       headroom=Headroom(0.05, 0.2, 0.9991, 0.05))
    status, _ = service_status(_item(svc), lowered, COST, {}, pools, None, T0)
    assert status["burstHeadroom"] == 0.05
    assert status["lastDecision"]["reason"].endswith(
        "Headroom 5% of the spec's 20%: 99.91% of the last hour's requests within the SLO, 5.0% may miss.")
    spec_s = Decision({"h100": 1}, {"h100": 1}, "1×H100-SXM serve 20 req/s.", None, changed=True)
    status, _ = service_status(_item(svc), spec_s, COST, {}, pools, None, T0)
    assert "burstHeadroom" not in status or status["burstHeadroom"] is None
    assert "Headroom" not in status["lastDecision"]["reason"]
