"""One serving replica under continuous batching, event by event (arrivals and completions, not tokens).

Between two events the running batch B is fixed, so every running request gains one token per engine step and
a step lasts the capacity model's ``step_seconds`` at that batch and the batch's actual total context (weights
plus every running sequence's KV cache read once, or the compute bound, whichever is slower). The engine keeps a
"step counter" V; a request admitted at V0 with n output tokens finishes at V0 + n - 1 (the first token comes from
its prefill), so completions come off a heap and one event costs O(log B), whatever the number of tokens.

Admission (vLLM's scheduler, simplified): a waiting request is admitted at the next step boundary when the batch
is below ``max_batch`` and its prompt plus output tokens fit in the free KV cache (reserved whole, so nothing is
ever preempted); its prefill is compute bound and stalls decoding for ``prefill_seconds``. Every time constant
comes from ``kilowatt.performance.CapacityModel`` — the simulator has none of its own.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from kilowatt.performance.capacity import CapacityModel


@dataclass(frozen=True)
class EngineTimes:
    """The capacity model's constants for one (model, GPU type, degree), unpacked for the inner loop."""

    fixed_memory_seconds: float  # step intercept when memory bound (overhead + all-reduce + weights / bandwidth)
    context_seconds_per_token: float  # KV bytes per token / bandwidth
    fixed_compute_seconds: float  # step intercept when compute bound
    compute_seconds_per_sequence: float  # per running sequence when compute bound
    per_sequence_seconds: float
    prefill_fixed_seconds: float
    prefill_seconds_per_token: float
    prefill_floor_seconds: float  # a prefill reads the weights at least once
    ttft_overhead_seconds: float
    kv_capacity_tokens: float
    max_batch: int

    @classmethod
    def of(cls, model: CapacityModel) -> EngineTimes:
        c, s, g, k = model.calibration, model.shape, model.gpu, model.tensor_parallel
        (mem_a, _), (comp_a, comp_b) = model.step_pieces(0.0)
        bandwidth = model.bandwidth_bytes_per_second
        compute = c.flops_efficiency * g.flops_per_second * k
        return cls(
            fixed_memory_seconds=mem_a,
            context_seconds_per_token=s.kv_bytes_per_token / bandwidth,
            fixed_compute_seconds=comp_a,
            compute_seconds_per_sequence=comp_b - c.per_sequence_seconds,
            per_sequence_seconds=c.per_sequence_seconds,
            prefill_fixed_seconds=c.step_overhead_for(g.model) + model.allreduce_seconds,
            prefill_seconds_per_token=s.flops_per_token / compute,
            prefill_floor_seconds=s.weight_bytes / bandwidth,
            ttft_overhead_seconds=c.ttft_overhead_seconds,
            kv_capacity_tokens=max(0.0, model.kv_capacity_tokens),
            max_batch=c.max_batch,
        )

    def step_seconds(self, batch: int, context_tokens: float) -> float:
        memory = self.fixed_memory_seconds + context_tokens * self.context_seconds_per_token
        compute = self.fixed_compute_seconds + batch * self.compute_seconds_per_sequence
        return max(memory, compute) + batch * self.per_sequence_seconds

    def prefill_seconds(self, prompt_tokens: float) -> float:
        return self.prefill_fixed_seconds + max(prompt_tokens * self.prefill_seconds_per_token,
                                                self.prefill_floor_seconds)


class Ledger:
    """Per-request results, indexed by request (numpy arrays, NaN until known), and the requests finished since
    the data plane last looked (``done``)."""

    def __init__(self, requests: int) -> None:
        self.ttft_s = np.full(requests, np.nan)
        self.tpot_s = np.full(requests, np.nan)  # stays NaN for one-token outputs
        self.finish_s = np.full(requests, np.nan)
        self.pool = np.full(requests, -1, dtype=np.int16)
        self.done: list[int] = []


class Replica:
    """A replica's engine state. ``advance(until)`` runs it to a time; ``arrive`` hands it a request."""

    def __init__(self, times: EngineTimes, pool_index: int, ready_at: float, gpus: int,
                 created_at: float | None = None) -> None:
        self.times = times
        self.created_at = ready_at if created_at is None else created_at
        self.charged_until = self.created_at  # the data plane's accounting: paid for up to here
        self.served_at_charge = 0
        self.pool_index = pool_index
        self.gpus = gpus
        self.ready_at = ready_at
        self.draining = False
        self.retire_at = math.inf  # set when a rollout replaces this replica
        self.t = ready_at  # engine clock
        self.v = 0.0  # engine steps done
        self.heap: list[tuple[float, int]] = []  # (finishing step, request)
        self.first_token: dict[int, tuple[float, float]] = {}  # request -> (first-token time, steps to go)
        self.batch = 0
        self.prompt_sum = 0.0  # sum of running prompts
        self.admitted_v_sum = 0.0  # sum of the step counter at each running request's admission
        self.reserved = 0.0  # KV tokens reserved by running requests
        self.queue: deque[int] = deque()
        self.busy_seconds = 0.0  # time with a batch or a prefill running (for power)
        self.served = 0

    def outstanding(self) -> int:
        return self.batch + len(self.queue)

    def idle(self) -> bool:
        return self.batch == 0 and not self.queue

    def _context(self) -> float:
        return self.prompt_sum + self.batch * self.v - self.admitted_v_sum

    def run(self, arrivals: list[int], arrival_s, input_tokens, output_tokens, until: float, out: Ledger) -> None:
        """Serve ``arrivals`` (request indices, in time order, all at or after the clock) and run to ``until``."""
        times = self.times
        heap = self.heap
        i, n = 0, len(arrivals)
        while True:
            ta = arrival_s[arrivals[i]] if i < n else math.inf
            if self.batch:
                step = times.step_seconds(self.batch, self._context())
                tc = self.t + (heap[0][0] - self.v) * step
            else:
                step, tc = 0.0, math.inf
            if min(ta, tc) > until or (ta == tc == math.inf):
                if self.batch and until > self.t:
                    self.busy_seconds += until - self.t
                    self.v += (until - self.t) / step
                if until < math.inf:
                    self.t = max(self.t, until)
                return
            if tc <= ta:
                self.busy_seconds += tc - self.t
                self.v, self.t = heap[0][0], tc
                self._complete(out)
            else:
                if self.batch and ta > self.t:
                    self.busy_seconds += ta - self.t
                    self.v += (ta - self.t) / step
                self.t = max(self.t, ta)
                self.queue.append(arrivals[i])
                i += 1
            self._admit(arrival_s, input_tokens, output_tokens, out)

    def _complete(self, out: Ledger) -> None:
        heap = self.heap
        while heap and heap[0][0] <= self.v + 1e-9:
            _, r = heapq.heappop(heap)
            first_t, steps, prompt, admitted_v, reserved = self.first_token.pop(r)
            self.batch -= 1
            self.prompt_sum -= prompt
            self.admitted_v_sum -= admitted_v
            self.reserved -= reserved
            out.finish_s[r] = self.t
            out.tpot_s[r] = (self.t - first_t) / steps
            out.pool[r] = self.pool_index
            out.done.append(r)
            self.served += 1
        if not self.batch:
            # An empty engine restarts its step counter: keeps the float arithmetic exact over long runs.
            self.v = 0.0
            self.admitted_v_sum = 0.0

    def _admit(self, arrival_s, input_tokens, output_tokens, out: Ledger) -> None:
        times = self.times
        queue = self.queue
        while queue and self.batch < times.max_batch:
            r = queue[0]
            prompt, generate = input_tokens[r], output_tokens[r]
            need = prompt + generate
            if self.reserved + need > times.kv_capacity_tokens and self.batch > 0:
                return  # wait for a completion to free KV cache
            queue.popleft()
            if self.batch:
                # Finish the step in flight: a prefill joins at a step boundary.
                frac = math.ceil(self.v - 1e-9) - self.v
                if frac > 0:
                    step = times.step_seconds(self.batch, self._context())
                    self.t += frac * step
                    self.busy_seconds += frac * step
                    self.v = float(math.ceil(self.v - 1e-9))
            prefill = times.prefill_seconds(prompt)
            self.t += prefill
            self.busy_seconds += prefill
            out.ttft_s[r] = self.t - arrival_s[r] + times.ttft_overhead_seconds
            if generate <= 1:
                out.finish_s[r] = self.t
                out.pool[r] = self.pool_index
                out.done.append(r)
                self.served += 1
                continue
            steps = generate - 1
            heapq.heappush(self.heap, (self.v + steps, r))
            self.first_token[r] = (self.t, steps, prompt, self.v, need)
            self.batch += 1
            self.prompt_sum += prompt
            self.admitted_v_sum += self.v
            self.reserved += need
