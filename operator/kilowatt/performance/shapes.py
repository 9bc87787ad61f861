"""The shape of a transformer that matters for serving: weight bytes and KV-cache bytes per token."""

from __future__ import annotations

from dataclasses import dataclass

BYTES_PER_PARAMETER = {"fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}


@dataclass(frozen=True)
class ModelShape:
    parameters_billion: float
    dtype: str = "fp16"
    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    max_context_tokens: int = 8192

    @property
    def weight_bytes(self) -> float:
        return self.parameters_billion * 1e9 * BYTES_PER_PARAMETER[self.dtype]

    @property
    def flops_per_token(self) -> float:
        # A forward pass costs about two FLOPs per parameter per token.
        return 2.0 * self.parameters_billion * 1e9

    @property
    def resolved_layers(self) -> int:
        # Dense decoder families (Llama, Qwen) grow depth roughly with P^0.4: 8B -> 32, 70B -> ~76.
        return self.layers or max(12, round(32 * (self.parameters_billion / 8.0) ** 0.4))

    @property
    def hidden_size(self) -> float:
        # A dense decoder has ~12 x layers x hidden^2 parameters (attention 4 h^2, MLP ~8 h^2).
        return (self.parameters_billion * 1e9 / (12.0 * self.resolved_layers)) ** 0.5

    @property
    def kv_bytes_per_token(self) -> float:
        # K and V, per layer, per KV head; grouped-query attention with 8 KV heads of 128 is the modern default.
        # The KV cache stays 16-bit even for quantised weights (vLLM's default).
        return 2.0 * self.resolved_layers * (self.kv_heads or 8) * (self.head_dim or 128) * 2.0


# Shapes of the models in ../shared/data/vllm_serving_4090_vs_h100pcie.csv (from their published configs).
KNOWN_MODELS: dict[str, ModelShape] = {
    "Qwen/QwQ-32B-Preview": ModelShape(32.8, "bf16", 64, 8, 128),
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": ModelShape(70.6, "bf16", 80, 8, 128),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": ModelShape(1.78, "bf16", 28, 2, 128),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": ModelShape(7.62, "bf16", 28, 4, 128),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": ModelShape(32.8, "bf16", 64, 8, 128),
    "google/gemma-2-9b-it": ModelShape(9.24, "bf16", 42, 8, 256),
    "meta-llama/Meta-Llama-3-70B-Instruct": ModelShape(70.6, "bf16", 80, 8, 128),
    "meta-llama/Meta-Llama-3-8B-Instruct": ModelShape(8.03, "bf16", 32, 8, 128),
    "microsoft/phi-4": ModelShape(14.7, "bf16", 40, 10, 128),
    "neuralmagic/Llama-3.1-Nemotron-70B-Instruct-HF-FP8-dynamic": ModelShape(70.6, "fp8", 80, 8, 128),
    "nvidia/AceMath-7B-Instruct": ModelShape(7.62, "bf16", 28, 4, 128),
}
