"""OPT (`OPTForCausalLM`, model_type "opt"; Zhang et al. 2022): separate q / k / v / out projections
with biases, the MLP's `fc1` / `fc2` held by the block itself, LayerNorm, a learned position table
(`embed_positions`, offset by 2), tied embeddings. The head size is derived from the hidden size;
the attention reshapes by `self.num_heads`, which `after_heads_removed` updates. Models whose word
embeddings are projected (`word_embed_proj_dim != hidden_size`, OPT-350m) are not supported for
embedding-channel pruning.
"""
from .base import Anatomy, Family


class OPT(Family):
    name = "OPT"
    model_types = ("opt",)
    anatomy = Anatomy(
        blocks="model.decoder.layers", attention="self_attn", qkv=("q_proj", "k_proj", "v_proj"),
        qkv_layout="separate", out_proj="out_proj", head_dim_attr="head_dim", mlp="", mlp_in=("fc1",),
        mlp_down="fc2", block_norms=("self_attn_layer_norm", "final_layer_norm"),
        final_norm="model.decoder.final_layer_norm", token_embedding="model.decoder.embed_tokens",
        position_embedding="model.decoder.embed_positions", intermediate="ffn_dim", n_kv_head="", head_dim="")

    def after_heads_removed(self, attention, n_q: int, n_kv: int) -> None:
        attention.num_heads = n_q

    def set_hidden_size(self, config, hidden: int, head_dim: int, intermediate: int) -> None:
        if config.word_embed_proj_dim != config.hidden_size:
            raise ValueError(f"OPT with projected word embeddings (word_embed_proj_dim {config.word_embed_proj_dim} != "
                             f"hidden_size {config.hidden_size}) is not supported for embedding-channel pruning")
        super().set_hidden_size(config, hidden, head_dim, intermediate)
        config.word_embed_proj_dim = hidden

    def config_for_attention_width(self, config, width: int) -> None:
        config.hidden_size = config.word_embed_proj_dim = width
