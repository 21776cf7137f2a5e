"""Mistral (`MistralForCausalLM`, model_type "mistral"; Jiang et al. 2023): Llama's anatomy with
grouped-query attention (8 key-value heads for 32 query heads in Mistral 7B) and an optional
sliding attention window, which pruning does not touch."""
from .llama import LLAMA_ANATOMY
from .base import Family


class Mistral(Family):
    name = "Mistral"
    model_types = ("mistral",)
    anatomy = LLAMA_ANATOMY
