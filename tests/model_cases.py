"""Tiny random-init checkpoints of every supported family, built from transformers configs (no hub,
no files committed): the models a user brings, at a size the tests can afford.

`CASES` maps a case name to (model type, config builder); `build(case, dtype)` returns a model and
`save(case, folder, dtype)` writes a checkpoint folder with a byte-level BPE tokenizer, as a hub
checkpoint would be laid out (safetensors, config.json, tokenizer files), in float32 or bf16.
"""
from __future__ import annotations

import torch

VOCAB, HIDDEN, LAYERS, HEADS, CONTEXT = 512, 64, 2, 8, 128


def _config(class_name, **fields):
    """A builder of the transformers config `class_name` with `fields` (the class is looked up when the
    builder is called: collecting the tests imports no model family)."""
    def make():
        import transformers

        return getattr(transformers, class_name)(bos_token_id=0, eos_token_id=0, **fields)
    return make


def _llama_like(class_name, kv, **extra):
    return _config(class_name, vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128,
                   num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=kv,
                   max_position_embeddings=CONTEXT, pad_token_id=0, **extra)


def _cases():
    return {
        "gpt2": ("gpt2", _config("GPT2Config", vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                                 n_inner=128, n_positions=CONTEXT)),
        "llama": ("llama", _llama_like("LlamaConfig", HEADS, tie_word_embeddings=True)),
        "llama-gqa": ("llama", _llama_like("LlamaConfig", 2)),
        "mistral": ("mistral", _llama_like("MistralConfig", 2)),
        "qwen2": ("qwen2", _llama_like("Qwen2Config", 2)),
        "qwen3": ("qwen3", _llama_like("Qwen3Config", 2, head_dim=HIDDEN // HEADS)),
        "gemma": ("gemma", _llama_like("GemmaConfig", 2, head_dim=HIDDEN // HEADS)),
        "phi3": ("phi3", _llama_like("Phi3Config", 2)),
        "gpt_neox": ("gpt_neox", _config("GPTNeoXConfig", vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128,
                                         num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                         max_position_embeddings=CONTEXT)),
        "opt": ("opt", _config("OPTConfig", vocab_size=VOCAB, hidden_size=HIDDEN, ffn_dim=128, num_hidden_layers=LAYERS,
                               num_attention_heads=HEADS, max_position_embeddings=CONTEXT,
                               word_embed_proj_dim=HIDDEN, pad_token_id=1)),
    }


CASES = list(_cases())


def build(case: str, dtype=torch.float32, seed: int = 0):
    """A randomly initialised model of `case` (weights drawn with `seed`), in eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_cases()[case][1]())
    with torch.no_grad():  # random init is small: scale up so that pruning and quantization change the logits
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(4.0)
    return model.to(dtype).eval()


def model_type(case: str) -> str:
    return _cases()[case][0]


def save(case: str, folder, dtype=torch.float32, text: str | None = None):
    """Save `case` as a checkpoint folder (safetensors + config + a byte-level BPE tokenizer trained on
    `text`, default a few lines of the repository's README), in `dtype`; returns the folder."""
    from pathlib import Path

    from compstudy import data

    folder = Path(folder)
    build(case, dtype).save_pretrained(folder, safe_serialization=True)
    if text is None:
        from compstudy import paths

        text = (paths.repo_root() / "README.md").read_text(encoding="utf-8")
    data.train_bpe_tokenizer(text, VOCAB, save_dir=folder)
    return folder


def batches(n: int = 2, batch: int = 2, seq: int = 16, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (batch, seq), generator=g) for _ in range(n)]
