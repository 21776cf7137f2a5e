"""Phi-3 (`Phi3ForCausalLM`, model_type "phi3"; Abdin et al. 2024): fused projections. `qkv_proj`
holds rows [q | k | v] (grouped-query attention allowed), `gate_up_proj` rows [gate | up]; RMSNorm,
rotary positions.

Its attention splits `qkv_proj`'s output at `config.num_attention_heads * head_dim` and reads
`self.num_key_value_heads`: after head pruning each layer's attention gets its own copy of the
config with its own head counts (`after_heads_removed`), since the model's config is shared by all
layers and cannot hold per-layer counts.
"""
import copy

from .base import Anatomy, Family


class Phi3(Family):
    name = "Phi-3"
    model_types = ("phi3",)
    anatomy = Anatomy(
        blocks="model.layers", attention="self_attn", qkv=("qkv_proj",), qkv_layout="concat", out_proj="o_proj",
        head_dim_attr="head_dim", mlp="mlp", mlp_in=("gate_up_proj",), mlp_fused_gate_up=True, mlp_down="down_proj",
        block_norms=("input_layernorm", "post_attention_layernorm"), final_norm="model.norm",
        token_embedding="model.embed_tokens")

    def after_heads_removed(self, attention, n_q: int, n_kv: int) -> None:
        attention.config = copy.copy(attention.config)
        attention.config.num_attention_heads, attention.config.num_key_value_heads = n_q, n_kv
        attention.num_key_value_heads = n_kv
