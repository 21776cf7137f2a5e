"""Qwen3 (`Qwen3ForCausalLM`, model_type "qwen3"; Yang et al. 2025): Qwen2's anatomy without q/k/v
biases and with per-head RMSNorms on queries and keys (`q_norm`, `k_norm`, over the head size):
they are shared by all heads of a layer, so head pruning keeps them as they are, and they are not
norms of the residual stream."""
from .llama import LLAMA_ANATOMY
from .base import Family


class Qwen3(Family):
    name = "Qwen3"
    model_types = ("qwen3",)
    anatomy = LLAMA_ANATOMY
