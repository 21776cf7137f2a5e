"""Llama (`LlamaForCausalLM`, model_type "llama"; Touvron et al. 2023), also SmolLM and TinyLlama,
which ship as Llama: separate q / k / v / o projections (grouped-query attention when
`num_key_value_heads < num_attention_heads`), SwiGLU MLP (gate, up, down), RMSNorm, rotary
positions, an explicit `head_dim`. Mistral, Qwen2, Qwen3 and Gemma share this anatomy
(`families/mistral.py`, ...).
"""
from .base import Anatomy, Family

LLAMA_ANATOMY = Anatomy(
    blocks="model.layers", attention="self_attn", qkv=("q_proj", "k_proj", "v_proj"), qkv_layout="separate",
    out_proj="o_proj", head_dim_attr="head_dim", mlp="mlp", mlp_in=("gate_proj", "up_proj"), mlp_down="down_proj",
    block_norms=("input_layernorm", "post_attention_layernorm"), final_norm="model.norm",
    token_embedding="model.embed_tokens")


class Llama(Family):
    name = "Llama"
    model_types = ("llama",)
    anatomy = LLAMA_ANATOMY

    def embedding_channel_multiple(self, model) -> int:
        # LlamaConfig validates hidden_size % num_attention_heads == 0 (head_dim stays explicit)
        return int(model.config.num_attention_heads)
