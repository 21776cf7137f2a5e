"""GPT-2 (`GPT2LMHeadModel`, model_type "gpt2"; Radford et al. 2019): the seed paper's architecture.

Fused query-key-value projection `c_attn` (rows [q | k | v]) and every linear layer a
`transformers.pytorch_utils.Conv1D` (weight [in, out]); learned position table `wpe`; LayerNorm;
tied input and output embeddings. The head size is derived from the hidden size (`n_embd /
n_head`): after embedding-channel pruning the attention width is recorded in `pruned_shape.json`.
"""
from .base import Anatomy, Family


class GPT2(Family):
    name = "GPT-2"
    model_types = ("gpt2",)
    anatomy = Anatomy(
        blocks="transformer.h", attention="attn", qkv=("c_attn",), qkv_layout="concat", out_proj="c_proj",
        head_dim_attr="head_dim", mlp="mlp", mlp_in=("c_fc",), mlp_down="c_proj", block_norms=("ln_1", "ln_2"),
        final_norm="transformer.ln_f", token_embedding="transformer.wte", position_embedding="transformer.wpe",
        n_layer="n_layer", hidden="n_embd", intermediate="n_inner", n_head="n_head", n_kv_head="", head_dim="")

    def after_heads_removed(self, attention, n_q: int, n_kv: int) -> None:
        # GPT2Attention splits c_attn's output into q, k, v at split_size
        attention.num_heads, attention.split_size = n_q, n_q * attention.head_dim
