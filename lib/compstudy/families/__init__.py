"""One adapter per model family: everything the study's techniques need to know about an
architecture, and nothing about an architecture anywhere else (`families/base.py` says what an
adapter holds). `adapter_for(model)` finds a model's adapter by its `config.model_type`.

| family | model types | file |
|---|---|---|
| GPT-2 | gpt2 | `gpt2.py` |
| Llama (SmolLM, TinyLlama) | llama | `llama.py` |
| Mistral | mistral | `mistral.py` |
| Qwen2 / Qwen2.5 | qwen2 | `qwen2.py` |
| Qwen3 | qwen3 | `qwen3.py` |
| Gemma | gemma | `gemma.py` |
| Phi-3 | phi3 | `phi3.py` |
| GPT-NeoX / Pythia | gpt_neox | `gpt_neox.py` |
| OPT | opt | `opt.py` |

A new family is one file (an `Anatomy` and the hooks where it differs) plus its line in `ADAPTERS`
and its entry in the tests' family list (`tests/model_cases.py`).
"""
from __future__ import annotations

from .base import Anatomy, Family, get_path, in_features, is_conv1d, out_features, slice_layer
from .gemma import Gemma
from .gpt2 import GPT2
from .gpt_neox import GPTNeoX
from .llama import Llama
from .mistral import Mistral
from .opt import OPT
from .phi3 import Phi3
from .qwen2 import Qwen2
from .qwen3 import Qwen3

ADAPTERS: dict[str, Family] = {t: f for f in (GPT2(), Llama(), Mistral(), Qwen2(), Qwen3(), Gemma(), Phi3(),
                                               GPTNeoX(), OPT()) for t in f.model_types}

# techniques that work on any causal LM, with or without an adapter (they go through
# from_pretrained / the whole model), and those that need one
WITHOUT_ADAPTER = ("quantization (8b, 4b, 4bfp4, bf16, dq8)", "distillation into a pretrained student")
NEEDS_ADAPTER = ("head, MLP, embedding-channel and depth pruning", "magnitude and Wanda pruning",
                 "the half-depth student", "every hybrid")


class UnsupportedFamily(ValueError):
    """A model's family has no adapter: the message names the model type, the supported families,
    the techniques that would still run, and how to run only those."""

    def __init__(self, model_type: str):
        self.model_type = model_type
        super().__init__(
            f"model type {model_type!r} has no family adapter (compstudy.families); supported: "
            f"{', '.join(sorted(ADAPTERS))}. Without one, {' and '.join(WITHOUT_ADAPTER)} still run; "
            f"{', '.join(NEEDS_ADAPTER)} need an adapter. Run only the notebooks that need none with "
            f"--only 00 --only 01 --only 05, or add lib/compstudy/families/<family>.py")


def model_type_of(model_or_config) -> str:
    config = getattr(model_or_config, "config", model_or_config)
    return str(getattr(config, "model_type", "unknown"))


def adapter_for(model_or_config) -> Family:
    """The adapter of a model (or config, or model type string). Raises UnsupportedFamily."""
    model_type = model_or_config if isinstance(model_or_config, str) else model_type_of(model_or_config)
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise UnsupportedFamily(model_type) from None


def supported(model_type: str) -> bool:
    return model_type in ADAPTERS


__all__ = ["ADAPTERS", "Anatomy", "Family", "UnsupportedFamily", "adapter_for", "supported", "model_type_of",
           "get_path", "in_features", "out_features", "is_conv1d", "slice_layer"]
