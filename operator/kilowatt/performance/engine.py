"""One serving replica as vLLM's V1 engine serves: a scheduler step at a time, fast-forwarded where nothing changes.

What it follows (vLLM 0.8.5, the version of the measurements in ../shared/data; the same rules hold in current
``vllm/v1/core/sched/scheduler.py``):

* **Paged KV cache.** The cache is ``kv_blocks`` blocks of ``BLOCK_TOKENS`` (16) tokens. A request holds
  ``ceil(computed tokens / 16)`` blocks; a step that adds tokens to it allocates the blocks they need
  (``KVCacheManager.allocate_slots``), as the tokens are produced, and a finished request frees all of them.
* **One token budget per step.** Each step schedules at most ``max_batched_tokens`` tokens
  (``max_num_batched_tokens``) over at most ``max_seqs`` running requests (``max_num_seqs``): first the RUNNING
  requests in admission order (a decode is one token; a request whose prefill was cut short gets its next chunk),
  then WAITING requests first come first served, each getting a prefill chunk of what budget is left (chunked
  prefill: a prompt longer than the budget is prefilled over several steps, mixed with everyone's decodes).
* **Preemption by recompute.** When a running request needs a block and none is free, the most recently admitted
  running request is preempted: its blocks are freed and it goes back to the front of the queue; when it is
  admitted again its prompt and the tokens it already generated are prefilled again. No waiting request is
  admitted in a step that preempted.

A step lasts ``max(host, launch + all-reduces + max(weights + context KV read, tokens x FLOPs per token) +
sequences x per-sequence)`` (``EngineTimes.step_seconds``): memory bound for decodes, compute bound when prefill
chunks fill the budget, never shorter than the host's own work per step (V1 overlaps it with the GPU's). Every
time constant comes from ``kilowatt.performance.CapacityModel`` — the simulator has none of its own.

Speed: a step in which only decodes run and nothing changes (no prefill, no admission possible, no block
shortage) is the same as the next one, so such steps are skipped in bulk: decoding requests live on a shared step
counter V (a request that joined at V0 finishes at V0 + its remaining tokens, off a heap), and the blocks they hold
at any V are counted in O(16) from how many of them sit at each offset within a block. One event (an arrival, a
completion, a prefill chunk, a preemption) costs O(log B).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from operator import mul

import numpy as np

from kilowatt.performance.capacity import CapacityModel

BLOCK_TOKENS = 16  # vLLM's default --block-size on CUDA
# _PAD[v % 16][r]: the tokens a block's last row lacks for a request at offset r in its block when the step counter
# is v (the padding that rounds its tokens up to whole blocks).
_PAD = tuple(tuple((-(r + m)) % BLOCK_TOKENS for r in range(BLOCK_TOKENS)) for m in range(BLOCK_TOKENS))


def default_max_batched_tokens(gpu_memory_gib: float, gpu_model: str) -> int:
    """vLLM's default ``max_num_batched_tokens`` for the OpenAI server (``EngineArgs.get_batch_defaults``): 8192 on
    GPUs with at least 70 GiB that are not A100s, 2048 elsewhere."""
    return 8192 if gpu_memory_gib >= 70 and "a100" not in gpu_model.lower() else 2048


@dataclass(frozen=True)
class EngineTimes:
    """The capacity model's constants for one (model, GPU type, degree), unpacked for the inner loop."""

    host_seconds: float  # per step on the host (scheduling, sampling, output): overlaps the GPU's time, a floor
    fixed_seconds: float  # per step on the GPU: launches + all-reduce latency
    allreduce_seconds_per_token: float  # per scheduled token: its activations through the all-reduces
    weight_seconds: float  # per step: reading the (sharded) weights once
    context_seconds_per_token: float  # per step: reading one token's KV cache
    compute_seconds_per_token: float  # per scheduled token when compute bound
    per_sequence_seconds: float  # per scheduled sequence (sampling, attention kernel launches)
    ttft_overhead_seconds: float
    kv_blocks: int
    max_seqs: int
    max_batched_tokens: int

    @classmethod
    def of(cls, model: CapacityModel) -> EngineTimes:
        c, s, g, k = model.calibration, model.shape, model.gpu, model.tensor_parallel
        bandwidth = model.bandwidth_bytes_per_second
        return cls(
            host_seconds=c.step_overhead_for(g.model),
            fixed_seconds=c.launch_seconds + model.allreduce_seconds,
            allreduce_seconds_per_token=model.allreduce_seconds_per_token,
            weight_seconds=s.weight_bytes / bandwidth,
            context_seconds_per_token=s.kv_bytes_per_token / bandwidth,
            compute_seconds_per_token=s.flops_per_token / (c.flops_efficiency * g.flops_per_second * k),
            per_sequence_seconds=c.per_sequence_seconds,
            ttft_overhead_seconds=c.ttft_overhead_seconds,
            kv_blocks=max(0, int(model.kv_capacity_tokens // BLOCK_TOKENS)),
            max_seqs=c.max_batch,
            max_batched_tokens=c.max_batched_tokens or default_max_batched_tokens(g.memory_gib, g.model),
        )

    def step_seconds(self, sequences: int, tokens: int, context_tokens: float) -> float:
        gpu = (self.fixed_seconds + sequences * self.per_sequence_seconds + tokens * self.allreduce_seconds_per_token
               + max(self.weight_seconds + context_tokens * self.context_seconds_per_token,
                     tokens * self.compute_seconds_per_token))
        return max(self.host_seconds, gpu)


class Ledger:
    """Per-request results, indexed by request (numpy arrays, NaN until known), and the requests finished since
    the data plane last looked (``done``)."""

    def __init__(self, requests: int) -> None:
        self.ttft_s = np.full(requests, np.nan)
        self.tpot_s = np.full(requests, np.nan)  # stays NaN for one-token outputs
        self.finish_s = np.full(requests, np.nan)
        self.pool = np.full(requests, -1, dtype=np.int16)
        self.done: list[int] = []
        self.preemptions = 0


def _blocks(tokens: int) -> int:
    return -(-tokens // BLOCK_TOKENS)


class Replica:
    """A replica's engine state. ``run(arrivals, ..., until)`` hands it requests and runs it to a time."""

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
        self.t = ready_at  # engine clock, always at a step boundary
        self.busy_seconds = 0.0  # time with a step running (for power)
        self.served = 0
        self.incoming: deque[int] = deque()  # handed over, not yet arrived at the engine's clock
        self.queue: deque[int] = deque()  # WAITING (preempted requests go back to the front)
        self.order: dict[int, None] = {}  # RUNNING, in admission order (dicts keep insertion order)
        # Requests still prefilling: request -> (tokens computed, tokens to compute). Always a suffix of ``order``.
        self.prefilling: dict[int, tuple[int, int]] = {}
        self.prefill_blocks = 0
        # Decoding requests on the shared step counter v: request -> base (tokens in its KV cache = base + v).
        self.v = 0
        self.decoding: dict[int, int] = {}
        self.heap: list[tuple[int, int]] = []  # (step counter at which it finishes, request); lazily deleted
        self.base_sum = 0
        self.at_offset = [0] * BLOCK_TOKENS  # decoding requests by base mod 16
        self._blocks_at: dict[int, int] = {}  # counter -> _decode_blocks(counter), for the decoding set as it is
        self.generated: dict[int, int] = {}  # tokens a preempted request had produced before (for its recompute)
        self.first_token_s: dict[int, float] = {}

    # -- what the data plane reads ------------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        """Running requests (vLLM's num_requests_running)."""
        return len(self.order)

    def outstanding(self) -> int:
        return len(self.order) + len(self.queue) + len(self.incoming)

    def idle(self) -> bool:
        return not self.order and not self.queue and not self.incoming

    def blocks_in_use(self) -> int:
        """KV blocks held now: what the decoding requests' KV needs at the counter, plus the prefills'."""
        return self._decode_blocks(self.v) + self.prefill_blocks

    def _decode_blocks(self, v: int) -> int:
        # sum over decoding requests of ceil((base + v) / 16), from the counts per offset: O(16); remembered until
        # a request joins or leaves the decoding set (a step asks for the same counter several times)
        found = self._blocks_at.get(v)
        if found is None:
            total = self.base_sum + len(self.decoding) * v + sum(map(mul, self.at_offset, _PAD[v % BLOCK_TOKENS]))
            found = self._blocks_at[v] = total // BLOCK_TOKENS
        return found

    # -- running ------------------------------------------------------------------------------------------------
    def run(self, arrivals: list[int], arrival_s, input_tokens, output_tokens, until: float, out: Ledger) -> None:
        """Serve ``arrivals`` (request indices, in time order, all at or after the clock) and run to ``until``
        (the clock stops at the last step boundary it can reach by then)."""
        times = self.times
        incoming = self.incoming
        incoming.extend(arrivals)
        while True:
            ta = arrival_s[incoming[0]] if incoming else math.inf
            if ta <= self.t:
                self.queue.append(incoming.popleft())
                continue
            if self.prefilling or (self.queue and self._admissible(input_tokens, output_tokens)):
                if self.t + self._step_estimate(input_tokens) > until:
                    return
                if self._schedule_step(arrival_s, input_tokens, output_tokens, out):
                    continue
            elif self.decoding:
                d = len(self.decoding)
                step0 = times.step_seconds(d, d, self._decode_context() + d)
                if self.t + step0 > until:
                    return
                # Steps that cannot run out of blocks: an upper bound on the blocks they need stays in the cache.
                safe = (BLOCK_TOKENS * times.kv_blocks - self.base_sum - (BLOCK_TOKENS - 1) * d) // d - self.v
                if safe < 1:
                    self._schedule_step(arrival_s, input_tokens, output_tokens, out)
                    continue
                heap = self.heap
                while heap[0][1] not in self.decoding or self.decoding[heap[0][1]][1] != heap[0][0]:
                    heapq.heappop(heap)
                k = min(safe, heap[0][0] - self.v)
                if ta <= until and ta < math.inf:  # up to the first step boundary at or after the arrival
                    k = min(k, max(1, math.ceil((ta - self.t) / step0)))
                elif until < math.inf:  # not past ``until``
                    k = min(k, max(1, int((until - self.t) / step0)))
                self._decode_steps(k, output_tokens, out)
                continue
            # Nothing can run: wait for the next arrival.
            if min(ta, until) == math.inf:
                return
            self.t = max(self.t, min(ta, until))
            if ta > until:
                return

    def _admissible(self, input_tokens, output_tokens) -> bool:
        times = self.times
        d = len(self.decoding)
        if len(self.order) >= times.max_seqs or times.max_batched_tokens <= d:
            return False
        chunk = min(self._target(self.queue[0], input_tokens, output_tokens), times.max_batched_tokens - d)
        free = times.kv_blocks - self._decode_blocks(self.v + 1) - self.prefill_blocks
        return _blocks(chunk) <= free

    def _target(self, r: int, input_tokens, output_tokens) -> int:
        """Tokens to prefill: the prompt, plus what a preempted request had generated (recompute). A request
        longer than the whole cache is cut to fit (vLLM refuses it; none of kilowatt's traces has one)."""
        prompt, generate = int(input_tokens[r]), int(output_tokens[r])
        limit = self.times.kv_blocks * BLOCK_TOKENS
        prompt = max(1, min(prompt, limit - max(1, generate)))
        return prompt + self.generated.get(r, 0)

    def _decode_context(self) -> int:
        return self.base_sum + len(self.decoding) * self.v

    def _step_estimate(self, input_tokens) -> float:
        d = len(self.decoding)
        budget = max(0, self.times.max_batched_tokens - d)
        if self.prefilling:
            chunk = min(sum(need - done for done, need in self.prefilling.values()), budget)
        else:
            chunk = min(int(input_tokens[self.queue[0]]), budget)
        return self.times.step_seconds(d + 1, d + chunk, self._decode_context() + d + chunk)

    def _decode_steps(self, k: int, output_tokens, out: Ledger) -> None:
        """k steps in which every running request decodes one token and nothing else happens."""
        times, d = self.times, len(self.decoding)
        # The context grows by d tokens a step: the mean step is the one halfway through.
        context = self._decode_context() + d + d * (k - 1) / 2.0
        elapsed = k * times.step_seconds(d, d, context)
        self.t += elapsed
        self.busy_seconds += elapsed
        self.v += k
        self._finish_decoded(output_tokens, out)

    def _schedule_step(self, arrival_s, input_tokens, output_tokens, out: Ledger) -> bool:
        """One scheduler step as vLLM's V1 ``Scheduler.schedule`` takes it, then the step itself. False if
        nothing could be scheduled."""
        times = self.times
        preempted = False
        # RUNNING, decodes first (they precede any request still prefilling in admission order): one token each.
        while True:
            held = self._decode_blocks(self.v)
            free = times.kv_blocks - held - self.prefill_blocks
            need = self._decode_blocks(self.v + 1) - held
            if need <= free:
                break
            self._preempt_last(output_tokens, out)
            preempted = True
        free -= need
        decodes = len(self.decoding)
        budget = times.max_batched_tokens - decodes
        # RUNNING requests whose prefill was cut short: their next chunk.
        chunks: dict[int, int] = {}
        reserved = 0  # blocks given to this step's chunks so far
        for r in list(self.prefilling):
            if budget <= 0 or r not in self.prefilling:
                break
            done, target = self.prefilling[r]
            chunk = min(target - done, budget)
            extra = _blocks(done + chunk) - _blocks(done)
            while extra > free:
                victim = self._preempt_last(output_tokens, out)
                preempted = True
                free = times.kv_blocks - self._decode_blocks(self.v + 1) - self.prefill_blocks - reserved
                if victim == r:
                    break
            if r not in self.prefilling:
                break
            chunks[r] = chunk
            budget -= chunk
            free -= extra
            reserved += extra
        # WAITING, first come first served, unless this step preempted.
        if not preempted:
            while self.queue and budget > 0 and len(self.order) < times.max_seqs:
                r = self.queue[0]
                target = self._target(r, input_tokens, output_tokens)
                chunk = min(target, budget)
                extra = _blocks(chunk)
                if extra > free:
                    break
                self.queue.popleft()
                self.order[r] = None
                self.prefilling[r] = (0, target)
                chunks[r] = chunk
                budget -= chunk
                free -= extra
        if not decodes and not chunks:
            return False
        context = self._decode_context() + decodes
        tokens = decodes
        for r, chunk in chunks.items():
            context += self.prefilling[r][0] + chunk
            tokens += chunk
        elapsed = times.step_seconds(decodes + len(chunks), tokens, context)
        self.t += elapsed
        self.busy_seconds += elapsed
        if decodes:
            self.v += 1
        for r, chunk in chunks.items():
            done, target = self.prefilling[r]
            self.prefill_blocks += _blocks(done + chunk) - _blocks(done)
            done += chunk
            if done < target:
                self.prefilling[r] = (done, target)
                continue
            # The prefill is complete: this step sampled the request's next token.
            del self.prefilling[r]
            self.prefill_blocks -= _blocks(done)
            generated = self.generated.pop(r, 0) + 1
            if r not in self.first_token_s:
                self.first_token_s[r] = self.t
                out.ttft_s[r] = self.t - arrival_s[r] + times.ttft_overhead_seconds
            wanted = int(output_tokens[r])
            if generated >= wanted:
                del self.order[r]
                self._finish(r, wanted, out)
            else:
                self._join_decoding(r, done, wanted - generated)
        if decodes:
            self._finish_decoded(output_tokens, out)
        return True

    def _finish_decoded(self, output_tokens, out: Ledger) -> None:
        heap, decoding = self.heap, self.decoding
        while heap and heap[0][0] <= self.v:
            finish_v, r = heapq.heappop(heap)
            if r not in decoding or decoding[r][1] != finish_v:
                continue  # preempted since it was pushed
            self._leave_decoding(r)
            del self.order[r]
            self._finish(r, int(output_tokens[r]), out)
        if not decoding:
            self.v = 0  # restart the counter: keeps the integers small over long runs
            self.base_sum = 0
            self.heap.clear()

    def _finish(self, r: int, wanted: int, out: Ledger) -> None:
        first = self.first_token_s.pop(r)
        out.finish_s[r] = self.t
        if wanted > 1:
            out.tpot_s[r] = (self.t - first) / (wanted - 1)
        out.pool[r] = self.pool_index
        out.done.append(r)
        self.served += 1

    def _leave_decoding(self, r: int) -> tuple[int, int]:
        base, finish_v = self.decoding.pop(r)
        self._blocks_at.clear()
        self.base_sum -= base
        self.at_offset[base % BLOCK_TOKENS] -= 1
        return base, finish_v

    def _join_decoding(self, r: int, computed: int, remaining: int) -> None:
        base = computed - self.v
        finish_v = self.v + remaining
        self.decoding[r] = (base, finish_v)
        self._blocks_at.clear()
        self.base_sum += base
        self.at_offset[base % BLOCK_TOKENS] += 1
        heapq.heappush(self.heap, (finish_v, r))

    def _preempt_last(self, output_tokens, out: Ledger) -> int:
        """Preempt the most recently admitted running request (recompute): free its blocks, queue it first."""
        r = next(reversed(self.order))
        del self.order[r]
        if r in self.prefilling:
            done, target = self.prefilling.pop(r)
            self.prefill_blocks -= _blocks(done)
            # a prefill being recomputed keeps what it had generated before its first preemption
        else:
            _, finish_v = self._leave_decoding(r)
            self.generated[r] = int(output_tokens[r]) - (finish_v - self.v)
            if not self.decoding:
                self.v = 0
                self.base_sum = 0
                self.heap.clear()
        self.queue.appendleft(r)
        out.preemptions += 1
        return r
