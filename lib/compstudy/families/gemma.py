"""Gemma (`GemmaForCausalLM`, model_type "gemma"; Gemma Team 2024): Llama's anatomy with an explicit
head size, tied embeddings scaled by sqrt(hidden size) in the forward pass (recomputed from the
config, so it follows a pruned hidden size) and RMSNorms that scale by (1 + weight)."""
from .llama import LLAMA_ANATOMY
from .base import Family


class Gemma(Family):
    name = "Gemma"
    model_types = ("gemma",)
    anatomy = LLAMA_ANATOMY

    def after_residual_sliced(self, model) -> None:
        # the embedding scale sqrt(hidden) is a buffer set at construction: rebuilt from the config at reload
        emb = model.get_input_embeddings()
        scale = self.hidden_size(model) ** 0.5
        emb.scalar_embed_scale = scale
        emb.embed_scale.fill_(scale)
