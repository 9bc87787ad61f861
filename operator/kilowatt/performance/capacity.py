"""The capacity model: latency of one replica of a model on k GPUs at an offered load, from physics.

One decode step reads the (sharded) weights once and the KV cache of every running sequence, so it is
memory-bandwidth bound: ``step = max(host, launch + allreduce(k, B) + max(bytes / bandwidth, flops / compute) + B * c)``
(the host's scheduling and sampling overlap the GPU's work in vLLM's V1 engine, so they are a floor, not a sum).
Prefill is compute bound and steals a share ``rho = rate * prompt_tokens * 2P / compute`` of the GPU's time
from decode. Under continuous batching the running batch ``B`` satisfies Little's law
``B = rate * output_tokens * step(B) / (1 - rho)``; with ``step`` affine in ``B`` this has a closed form,
and the replica saturates when it has none within the memory-bound batch limit.

Every constant that is not a vendor figure lives in ``Calibration``, fitted on published measurements by
``kilowatt.performance.calibrate`` (see benchmarks/RESULTS.md for the error).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from importlib import resources

from kilowatt.performance.hardware import GIB, GPU
from kilowatt.performance.shapes import ModelShape
from kilowatt.slo import within_slo


@dataclass(frozen=True)
class TokenMix:
    """Mean prompt and output length of the requests a replica serves, and, where known, their quantiles at
    ``kilowatt.performance.lengths.LEVELS`` (empty: ShareGPT's shape around the means)."""

    input_tokens: float = 205.0
    output_tokens: float = 200.0
    input_quantiles: tuple[float, ...] = ()
    output_quantiles: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.input_tokens <= 0 or self.output_tokens <= 0:
            raise ValueError(f"token counts must be positive, got {self.input_tokens}/{self.output_tokens}")


@dataclass(frozen=True)
class Calibration:
    bandwidth_efficiency: float = 0.85  # share of peak memory bandwidth a decode step achieves
    flops_efficiency: float = 0.45  # share of peak FP16 tensor throughput prefill achieves
    step_overhead_seconds: float = 0.0015  # host time of one engine step (scheduler, sampling, output); overlaps the GPU's
    launch_seconds: float = 0.0005  # GPU time of one step beyond its reads and FLOPs (kernel launches, sync)
    per_sequence_seconds: float = 0.00005  # extra step time per running sequence (sampling, attention kernels)
    allreduce_pcie_seconds: float = 0.00005  # one all-reduce over PCIe, per layer (two per layer per step)
    allreduce_nvlink_seconds: float = 0.00001  # the same over NVLink
    # All-reduce payload rate (bytes/s of activations per GPU): NVLink, and PCIe (per GPU type where measured:
    # consumer cards have no peer-to-peer, so their all-reduce goes through host memory).
    allreduce_nvlink_bytes_per_second: float = 150e9
    allreduce_pcie_bytes_per_second: float = 20e9
    allreduce_bytes_per_second_by_gpu: tuple[tuple[str, float], ...] = ()
    ttft_overhead_seconds: float = 0.010  # tokenisation, scheduling, first-token return
    ttft_tail: float = 2.0  # p99 / mean of the prefill part of TTFT (prompt lengths vary)
    tpot_tail: float = 1.15  # p99 / mean TPOT below saturation
    max_batch: int = 256  # vLLM's max_num_seqs
    max_batched_tokens: int = 0  # vLLM's max_num_batched_tokens (0: vLLM's default for the GPU, see performance.engine)
    memory_utilization: float = 0.90  # vLLM's gpu_memory_utilization
    runtime_overhead_gib: float = 1.5  # CUDA graphs, allocator slack per GPU
    activation_fraction: float = 0.03  # activation workspace per GPU, as a share of that GPU's weight bytes
    tensor_parallel_efficiency: float = 0.9  # bandwidth kept per doubling of k (smaller shards, sync points)
    # Per-GPU-type engine-step overhead where measurements show the host differs (consumer PCs vs servers):
    # (gpu model, seconds) pairs; others use step_overhead_seconds.
    step_overhead_by_gpu: tuple[tuple[str, float], ...] = ()
    power_exponent: float = 0.25  # power = idle + (board - idle) * utilisation ** exponent
    source: str = "defaults"

    @classmethod
    def load(cls, path: str | None = None) -> Calibration:
        """The shipped calibration (kilowatt/data/calibration.json) or one from a file."""
        if path is None:
            text = resources.files("kilowatt").joinpath("data/calibration.json").read_text()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        raw = json.loads(text)
        for name in ("step_overhead_by_gpu", "allreduce_bytes_per_second_by_gpu"):
            raw[name] = tuple((g, float(x)) for g, x in raw.get(name, {}).items())
        return cls(**raw)

    def to_json(self) -> str:
        raw = asdict(self)
        raw["step_overhead_by_gpu"] = dict(self.step_overhead_by_gpu)
        raw["allreduce_bytes_per_second_by_gpu"] = dict(self.allreduce_bytes_per_second_by_gpu)
        return json.dumps(raw, indent=2, sort_keys=True) + "\n"

    def step_overhead_for(self, gpu_model: str) -> float:
        return dict(self.step_overhead_by_gpu).get(gpu_model, self.step_overhead_seconds)

    def allreduce_bytes_per_second_for(self, gpu_model: str, nvlink: bool) -> float:
        if nvlink:
            return self.allreduce_nvlink_bytes_per_second
        return dict(self.allreduce_bytes_per_second_by_gpu).get(gpu_model, self.allreduce_pcie_bytes_per_second)


def _shipped_calibration() -> Calibration:
    try:
        return Calibration.load()
    except FileNotFoundError:
        return Calibration()


# Read once at import: a frozen value, not a cache (no one can change it, so no one can see a stale copy).
DEFAULT_CALIBRATION = _shipped_calibration()


def default_calibration() -> Calibration:
    """The calibration shipped in kilowatt/data/calibration.json (the code's defaults where it is missing)."""
    return DEFAULT_CALIBRATION


def _tail(percentile: float) -> float:
    """How far a percentile sits into an exponential tail, normalised so p99 -> 1 and the mean -> ~0."""
    return -math.log(1.0 - percentile / 100.0) / math.log(100.0)


@dataclass(frozen=True)
class LoadPoint:
    load_rps: float
    saturated: bool
    batch: float
    utilisation: float  # offered load / saturation throughput
    ttft_mean_seconds: float
    ttft_p_seconds: float
    tpot_mean_seconds: float
    tpot_p_seconds: float
    percentile: float


@dataclass(frozen=True)
class CapacityModel:
    """One replica of ``shape`` on ``tensor_parallel`` GPUs of type ``gpu``."""

    shape: ModelShape
    gpu: GPU
    tensor_parallel: int = 1
    calibration: Calibration = field(default_factory=default_calibration)
    ttft_factor: float = 1.0  # online correction: observed / predicted TTFT (see correction.py)
    tpot_factor: float = 1.0  # online correction: observed / predicted TPOT

    def corrected(self, ttft_factor: float, tpot_factor: float) -> CapacityModel:
        return replace(self, ttft_factor=ttft_factor, tpot_factor=tpot_factor)

    # -- memory -------------------------------------------------------------------------------------------------
    @cached_property
    def kv_capacity_tokens(self) -> float:
        """Tokens of KV cache that fit beside the weights on all k GPUs (negative: the weights do not fit)."""
        c, k = self.calibration, self.tensor_parallel
        usable = k * (self.gpu.memory_bytes * c.memory_utilization - c.runtime_overhead_gib * GIB)
        weights = self.shape.weight_bytes * (1.0 + c.activation_fraction)
        return (usable - weights) / self.shape.kv_bytes_per_token

    def fits(self) -> bool:
        """Weights plus the KV cache of at least one full-context request fit in k GPUs' memory."""
        return self.kv_capacity_tokens >= self.shape.max_context_tokens

    def batch_limit(self, mix: TokenMix) -> float:
        """Most sequences that run at once: vLLM's max_num_seqs, or KV memory at the mix's mean occupancy."""
        occupancy = mix.input_tokens + mix.output_tokens / 2.0
        return max(0.0, min(float(self.calibration.max_batch), self.kv_capacity_tokens / occupancy))

    # -- time -----------------------------------------------------------------------------------------------------
    @cached_property
    def allreduce_seconds(self) -> float:
        """Per engine step: the latency of two all-reduces per layer across the k GPUs (0 at k = 1)."""
        k = self.tensor_parallel
        if k == 1:
            return 0.0
        c = self.calibration
        per = c.allreduce_nvlink_seconds if self.gpu.nvlink else c.allreduce_pcie_seconds
        return 2.0 * self.shape.resolved_layers * per * math.log2(k)

    @cached_property
    def allreduce_seconds_per_token(self) -> float:
        """Per token in a step: moving its activations (hidden x 2 bytes) through two ring all-reduces per layer,
        each sending 2(k-1)/k of the payload (0 at k = 1)."""
        k = self.tensor_parallel
        if k == 1:
            return 0.0
        c, s = self.calibration, self.shape
        rate = c.allreduce_bytes_per_second_for(self.gpu.model, self.gpu.nvlink)
        return 2.0 * s.resolved_layers * s.hidden_size * 2.0 * 2.0 * (k - 1) / k / rate

    def step_pieces(self, context_tokens: float) -> tuple[tuple[float, float], ...]:
        """Decode step time as the max of affine functions of the batch, (intercept, slope): memory bound,
        compute bound, and the host's own time per step (it overlaps the GPU's work, so it is a floor)."""
        c, g, s = self.calibration, self.gpu, self.shape
        bandwidth = self.bandwidth_bytes_per_second
        fixed = c.launch_seconds + self.allreduce_seconds
        per_sequence = c.per_sequence_seconds + self.allreduce_seconds_per_token
        memory = (fixed + s.weight_bytes / bandwidth, context_tokens * s.kv_bytes_per_token / bandwidth)
        compute = (fixed, s.flops_per_token / (c.flops_efficiency * g.flops_per_second * self.tensor_parallel))
        return ((memory[0], memory[1] + per_sequence), (compute[0], compute[1] + per_sequence),
                (c.step_overhead_for(g.model), 0.0))

    @cached_property
    def bandwidth_bytes_per_second(self) -> float:
        """Effective bytes/s of k GPUs streaming their shards."""
        c, k = self.calibration, self.tensor_parallel
        return c.bandwidth_efficiency * self.gpu.bandwidth_bytes_per_second * k * c.tensor_parallel_efficiency ** math.log2(k)

    def step_seconds(self, batch: float, context_tokens: float) -> float:
        return max(a + b * batch for a, b in self.step_pieces(context_tokens))

    def prefill_seconds(self, prompt_tokens: float) -> float:
        c, k, g, s = self.calibration, self.tensor_parallel, self.gpu, self.shape
        compute = prompt_tokens * s.flops_per_token / (c.flops_efficiency * g.flops_per_second * k)
        weights = s.weight_bytes / self.bandwidth_bytes_per_second
        gpu = (c.launch_seconds + self.allreduce_seconds + prompt_tokens * self.allreduce_seconds_per_token
               + max(compute, weights))
        return max(c.step_overhead_for(g.model), gpu)

    def _prefill_share(self, load_rps: float, mix: TokenMix) -> float:
        c = self.calibration
        per_request = mix.input_tokens * self.shape.flops_per_token
        return load_rps * per_request / (c.flops_efficiency * self.gpu.flops_per_second * self.tensor_parallel)

    def _batch_at(self, load_rps: float, mix: TokenMix) -> float | None:
        """Steady-state running batch at a load, or None when the replica cannot keep up."""
        if load_rps <= 0:
            return 0.0
        rho = self._prefill_share(load_rps, mix)
        if rho >= 1.0:
            return None
        q = load_rps * mix.output_tokens / (1.0 - rho)
        context = mix.input_tokens + mix.output_tokens / 2.0
        batch = 0.0
        for a, b in self.step_pieces(context):
            if q * b >= 1.0:
                return None
            batch = max(batch, q * a / (1.0 - q * b))
        return batch if batch <= self.batch_limit(mix) else None

    def saturation_rps(self, mix: TokenMix) -> float:
        """The most requests per second one replica sustains, whatever the latency (0 if it does not fit)."""
        return self._saturation(mix)

    def _saturation(self, mix: TokenMix) -> float:
        # Memoised on this (frozen) model: the SLO search asks for it at every probe.
        found = self._saturation_by_mix.get(mix)
        if found is None:
            found = self._saturation_by_mix[mix] = self._solve_saturation(mix)
        return found

    @cached_property
    def _saturation_by_mix(self) -> dict[TokenMix, float]:
        return {}

    def _solve_saturation(self, mix: TokenMix) -> float:
        if not self.fits() or self.batch_limit(mix) < 1.0:
            return 0.0
        high = 1.0 / max(self._prefill_share(1.0, mix), 1e-12)
        low = 0.0
        for _ in range(48):
            mid = (low + high) / 2.0
            if self._batch_at(mid, mix) is None:
                high = mid
            else:
                low = mid
        return low

    def at_load(self, load_rps: float, mix: TokenMix, percentile: float = 95.0) -> LoadPoint:
        """Predicted latency at an offered load. Past saturation the queue grows without bound (inf TTFT)."""
        saturation = self._saturation(mix)
        batch = self._batch_at(load_rps, mix) if saturation > 0 else None
        c = self.calibration
        tail = _tail(percentile)
        if batch is None or load_rps >= saturation:
            inf = math.inf
            return LoadPoint(load_rps, True, self.batch_limit(mix), inf, inf, inf, inf, inf, percentile)
        rho = self._prefill_share(load_rps, mix)
        context = mix.input_tokens + mix.output_tokens / 2.0
        step = self.step_seconds(batch, context)
        tpot = step / (1.0 - rho) * self.tpot_factor
        utilisation = load_rps / saturation
        # Queueing for admission, M/D/1 with the replica's saturation rate as its service rate.
        wait = utilisation / (2.0 * saturation * (1.0 - utilisation))
        prefill = self.prefill_seconds(mix.input_tokens)
        ttft_mean = (c.ttft_overhead_seconds + prefill + step / 2.0 + wait) * self.ttft_factor
        prefill_tail = self.prefill_seconds(mix.input_tokens * (1.0 + (c.ttft_tail - 1.0) * tail))
        ttft_p = (c.ttft_overhead_seconds + prefill_tail + step + wait * (1.0 + math.log(100.0) * tail)) * (
            self.ttft_factor
        )
        tpot_p = tpot * (1.0 + (c.tpot_tail - 1.0) * tail * (1.0 + utilisation))
        return LoadPoint(load_rps, False, batch, utilisation, ttft_mean, ttft_p, tpot, tpot_p, percentile)

    def max_rps_within_slo(
        self, mix: TokenMix, ttft_seconds: float, tpot_seconds: float, percentile: float = 95.0
    ) -> float:
        """The most load one replica serves with TTFT and TPOT at ``percentile`` within the targets."""
        saturation = self._saturation(mix)
        if saturation <= 0:
            return 0.0

        def ok(load: float) -> bool:
            p = self.at_load(load, mix, percentile)
            return not p.saturated and within_slo(p.ttft_p_seconds, p.tpot_p_seconds, ttft_seconds, tpot_seconds)

        if not ok(saturation * 1e-6):
            return 0.0
        low, high = saturation * 1e-6, saturation
        for _ in range(50):
            mid = (low + high) / 2.0
            low, high = (mid, high) if ok(mid) else (low, mid)
        return low
