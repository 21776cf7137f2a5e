"""Qwen2 and Qwen2.5 (`Qwen2ForCausalLM`, model_type "qwen2"; Yang et al. 2024): Llama's anatomy
with biases on the q, k and v projections (sliced with their rows) and grouped-query attention.
Its attention reads `config.head_dim` when present, so the head size is written there when the
hidden size shrinks."""
from .llama import LLAMA_ANATOMY
from .base import Family


class Qwen2(Family):
    name = "Qwen2"
    model_types = ("qwen2",)
    anatomy = LLAMA_ANATOMY
