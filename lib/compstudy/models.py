"""Build, load and save causal language models of the two families the study covers.

- `gpt2`: the paper's architecture (Radford et al. 2019), `transformers.GPT2LMHeadModel`.
- `llama`: the architecture of the modern hybrids (Minitron, Sheared-LLaMA),
  `transformers.LlamaForCausalLM` (RMSNorm, rotary positions, SwiGLU MLP).

Any other causal LM loads by hub name or local path with `AutoModelForCausalLM`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

FAMILIES = ("gpt2", "llama")


def quiet_transformers() -> None:
    """Silence transformers' info logs and weight-loading progress bars (errors still show)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


quiet_transformers()


@dataclass(frozen=True)
class ModelShape:
    """Shape of a small model trained from scratch.

    Attributes:
        family: `"gpt2"` or `"llama"`.
        n_layer: transformer blocks (>= 1).
        n_head: attention heads per block (>= 1, divides `n_embd`).
        n_embd: hidden size.
        n_positions: longest context in tokens.
        mlp_ratio: MLP hidden size / `n_embd` (GPT-2 uses 4).

    Raises ValueError on construction when a field is out of range.
    """

    family: str = "gpt2"
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    n_positions: int = 256
    mlp_ratio: int = 4

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        for name in ("n_layer", "n_head", "n_embd", "n_positions", "mlp_ratio"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


def build_model(shape: ModelShape, vocab_size: int, bos_token_id: int = 0, eos_token_id: int = 0,
                seed: int = 0) -> torch.nn.Module:
    """A randomly initialised causal LM of `shape` with a vocabulary of `vocab_size` tokens.

    GPT-2 ties input and output embeddings (as GPT-2 does); Llama does too here, to keep the two
    families' parameter counts comparable at this size.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if shape.family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size, n_positions=shape.n_positions, n_embd=shape.n_embd,
            n_layer=shape.n_layer, n_head=shape.n_head, n_inner=shape.mlp_ratio * shape.n_embd,
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=True,
        )
        return GPT2LMHeadModel(config)
    # Llama's SwiGLU MLP has three matrices; 2/3 of the ratio keeps its size close to GPT-2's MLP
    intermediate = int(shape.mlp_ratio * shape.n_embd * 2 / 3)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=shape.n_embd, intermediate_size=intermediate,
        num_hidden_layers=shape.n_layer, num_attention_heads=shape.n_head,
        num_key_value_heads=shape.n_head, max_position_embeddings=shape.n_positions,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def load_model(name_or_path: str | Path, dtype: torch.dtype | str | None = None,
               device: str | None = None, **kwargs) -> torch.nn.Module:
    """Load any causal LM by hub name (online) or local folder.

    Uses `AutoModelForCausalLM.from_pretrained` with safetensors weights and
    `trust_remote_code=False`. Extra keyword arguments go to `from_pretrained`
    (e.g. `quantization_config`). The model is returned in eval mode.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(name_or_path), dtype=dtype, trust_remote_code=False, use_safetensors=True, **kwargs
    )
    if device is not None and "quantization_config" not in kwargs:
        model.to(device)
    return model.eval()


def save_model(model, tokenizer, path: str | Path) -> Path:
    """Save model (safetensors), config and tokenizer together in `path`; returns `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path


def family_of(model) -> str:
    """`"gpt2"`, `"llama"` or the model's `config.model_type` for other architectures."""
    return getattr(model.config, "model_type", "unknown")


def shape_of(model) -> dict:
    """The shape fields of a loaded model's config, as a dict (layers, heads, width, context)."""
    c = model.config
    return {
        "family": family_of(model),
        "n_layer": getattr(c, "n_layer", getattr(c, "num_hidden_layers", None)),
        "n_head": getattr(c, "n_head", getattr(c, "num_attention_heads", None)),
        "n_embd": getattr(c, "n_embd", getattr(c, "hidden_size", None)),
        "n_positions": context_length(model),
        "vocab_size": c.vocab_size,
    }


def context_length(model) -> int:
    """Longest context the model accepts, in tokens."""
    c = model.config
    return int(getattr(c, "n_positions", None) or getattr(c, "max_position_embeddings"))


def shape_dict(shape: ModelShape) -> dict:
    return asdict(shape)
