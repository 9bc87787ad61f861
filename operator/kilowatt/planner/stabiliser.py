"""Turn each plan into safe steps: up fast, down slowly, bounded, no flapping, no gap while replicas start.

Like the HPA's behaviour field: a scale-up goes to the *lowest* recommendation of the up-window (0 s: at once),
a scale-down to the *highest* recommendation of the down-window, so a dip must last the whole window before
capacity goes (a pool may be given a longer window: ``down_window_seconds``, the Decider's warm replicas that
cost cents). Steps are bounded per pool. A scale-down that would leave less *ready* capacity than the
traffic needs right now (replacements still starting) is held until they are ready.

State is the recommendation history, in memory: after an operator restart the down-window starts again, which
only ever delays a scale-down.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

from kilowatt.planner.reasons import DownWindow, StepHold, UpBounded, WaitingForReady
from kilowatt.planner.types import placement_capacity


@dataclass(frozen=True)
class ScalingPolicy:
    scale_up_window_seconds: float = 0.0
    scale_down_window_seconds: float = 300.0
    max_scale_up_step: int = 8
    max_scale_down_step: int = 1


@dataclass(frozen=True)
class PoolUnits:
    """What runs on one pool now, in the stabiliser's unit: replicas, or GPUs when it is told ``units``."""

    desired: int  # what the Deployment asks for now
    ready: int  # what serves now
    capacity_rps_per_unit: float  # within the SLO
    units_per_replica: int = 1  # of what runs now (its tensor-parallel degree when counting GPUs)


@dataclass(frozen=True)
class Step:
    units: dict[str, int]  # pool -> replicas (or GPUs, when the step was asked in GPUs)
    holds: tuple[StepHold, ...] = ()


@dataclass
class Stabiliser:
    _history: dict[str, deque[tuple[float, dict[str, int]]]] = field(default_factory=lambda: defaultdict(deque))

    def forget(self, service: str) -> None:
        self._history.pop(service, None)

    def step(
        self,
        service: str,
        recommended: dict[str, int],
        current: dict[str, PoolUnits],
        served_rps: float,
        now_seconds: float,
        policy: ScalingPolicy,
        units: dict[str, int] | None = None,
        equal_share: bool = False,
        down_window_seconds: dict[str, float] | None = None,
    ) -> Step:
        """``served_rps``: the traffic the ready capacity serves now (what a scale-down may not cut below).
        ``units``: when counts are GPUs rather than replicas, the GPUs of one replica per pool; the step
        bounds (in replicas) are scaled by it and the holds say GPUs. ``equal_share``: the replicas sit behind
        a plain Service, so ready capacity is ready replicas x the slowest ready replica's capacity.
        ``down_window_seconds``: per pool, a scale-down window in place of the policy's."""
        history = self._history[service]
        unit = lambda p: (units or {}).get(p, 1)  # noqa: E731
        what = " GPUs" if units else ""
        history.append((now_seconds, dict(recommended)))
        down_window = lambda p: (down_window_seconds or {}).get(p, policy.scale_down_window_seconds)  # noqa: E731
        horizon = max(policy.scale_up_window_seconds, policy.scale_down_window_seconds,
                      *(down_window_seconds or {}).values())
        # Keep the newest entry older than the horizon too: with periods longer than the window the history must
        # still reach back, or a scale-down would wait for ever.
        while len(history) > 1 and history[1][0] <= now_seconds - horizon:
            history.popleft()

        pools = set(recommended) | set(current)
        out: dict[str, int] = {}
        holds: list[StepHold] = []
        for pool in sorted(pools):
            now = current.get(pool, PoolUnits(0, 0, 0.0)).desired
            want = recommended.get(pool, 0)
            if want > now:
                window = [r.get(pool, 0) for t, r in history if t >= now_seconds - policy.scale_up_window_seconds]
                target = max(now, min(window) if window else want)
                out[pool] = min(target, now + policy.max_scale_up_step * unit(pool))
                if out[pool] < want:
                    holds.append(UpBounded(pool, now, out[pool], want, what))
            elif want < now:
                window = [r.get(pool, 0) for t, r in history if t >= now_seconds - down_window(pool)]
                # Only a recommendation that has held for the whole window counts: history must reach back.
                covered = history[0][0] <= now_seconds - down_window(pool)
                target = max(window) if covered else now
                if equal_share and target == 0:
                    # Leaving a pool behind a plain Service goes whole: every replica gets an equal share, so
                    # removing its replicas one by one overloads the ones left (each step holds less than the last
                    # and the ready-capacity guard below holds it for ever). The guard still applies to the whole.
                    out[pool] = 0
                    continue
                out[pool] = max(min(now, target), now - policy.max_scale_down_step * unit(pool))
                if out[pool] > want:
                    holds.append(DownWindow(pool, now, out[pool], want, down_window(pool), what))
            else:
                out[pool] = now

        # Never remove ready capacity the current traffic needs while other replicas are still starting.
        def ready_capacity(plan: dict[str, int]) -> float:
            if not equal_share:
                return sum(min(plan.get(p, 0), c.ready) * c.capacity_rps_per_unit for p, c in current.items())
            ready = [(min(plan.get(p, 0), c.ready) / c.units_per_replica, c.capacity_rps_per_unit * c.units_per_replica)
                     for p, c in current.items()]
            return placement_capacity(ready, True)

        for pool in sorted(pools):
            c = current.get(pool)
            if c is None or out[pool] >= c.desired:
                continue
            held = out[pool]
            while held < c.desired and ready_capacity({**out, pool: held}) < served_rps:
                held = min(c.desired, held + unit(pool))
            if held > out[pool]:
                holds.append(WaitingForReady(pool, held, out[pool], what))
                out[pool] = held
        return Step(out, tuple(holds))
