"""GPT-NeoX and Pythia (`GPTNeoXForCausalLM`, model_type "gpt_neox"; Black et al. 2022, Biderman et
al. 2023): a fused `query_key_value` projection whose rows are interleaved per head ([q_h | k_h |
v_h] for each head h), a parallel residual (attention and MLP read the same input), partial rotary
positions (`rotary_pct` of each head), LayerNorm, untied embeddings (`embed_in`, `embed_out`).

The head size is derived from the hidden size (`hidden_size / num_attention_heads`, validated by
its config), so embedding-channel counts are multiples of the head count and, after such pruning,
the attention width is recorded in `pruned_shape.json`.
"""
from .base import Anatomy, Family


class GPTNeoX(Family):
    name = "GPT-NeoX"
    model_types = ("gpt_neox",)
    anatomy = Anatomy(
        blocks="gpt_neox.layers", attention="attention", qkv=("query_key_value",), qkv_layout="interleaved",
        out_proj="dense", head_dim_attr="head_size", mlp="mlp", mlp_in=("dense_h_to_4h",), mlp_down="dense_4h_to_h",
        block_norms=("input_layernorm", "post_attention_layernorm"), final_norm="gpt_neox.final_layer_norm",
        token_embedding="gpt_neox.embed_in", n_kv_head="", head_dim="")

    def embedding_channel_multiple(self, model) -> int:
        return int(model.config.num_attention_heads)  # GPTNeoXConfig validates hidden_size % heads
