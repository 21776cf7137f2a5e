"""Build, load and save causal language models.

Trained from scratch here (`build_model`), two families:

- `gpt2`: the paper's architecture (Radford et al. 2019), `transformers.GPT2LMHeadModel`.
- `llama`: the architecture of the modern hybrids (Minitron, Sheared-LLaMA),
  `transformers.LlamaForCausalLM` (RMSNorm, rotary positions, SwiGLU MLP).

Any causal LM loads by hub name or local path with `AutoModelForCausalLM` (`load_model`), in the
dtype the study measures in (float32 by default: a checkpoint saved in bf16 or fp16, as most hub
checkpoints are, is upcast, and the row's `dtype` says what was computed). What the techniques
need to know about an architecture is its family adapter's (`compstudy.families`).
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import cache, data
from .families import adapter_for, supported
from .surgery import SHAPE_FILE, load_pruned, shape_record

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
                seed: int = 0, dropout: float | None = None) -> torch.nn.Module:
    """A randomly initialised causal LM of `shape` with a vocabulary of `vocab_size` tokens.

    GPT-2 ties input and output embeddings (as GPT-2 does); Llama does too here, to keep the two
    families' parameter counts comparable at this size.

    `dropout` (probability in [0, 1)): GPT-2's embedding, residual and attention dropout, or
    Llama's attention dropout (Llama has no other); None keeps the family's default (GPT-2 0.1,
    Llama 0.0). Raises ValueError outside [0, 1).
    """
    if dropout is not None and not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1) or None, got {dropout}")
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if shape.family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size, n_positions=shape.n_positions, n_embd=shape.n_embd,
            n_layer=shape.n_layer, n_head=shape.n_head, n_inner=shape.mlp_ratio * shape.n_embd,
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=True,
            **({} if dropout is None else dict(resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)),
        )
        return GPT2LMHeadModel(config)
    # Llama's SwiGLU MLP has three matrices; 2/3 of the ratio keeps its size close to GPT-2's MLP.
    # Rounded up to a multiple of 32, as Llama rounds to `multiple_of` (bitsandbytes' CPU 4-bit
    # kernel also needs output features divisible by 32).
    intermediate = 32 * math.ceil(shape.mlp_ratio * shape.n_embd * 2 / 3 / 32)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=shape.n_embd, intermediate_size=intermediate,
        num_hidden_layers=shape.n_layer, num_attention_heads=shape.n_head,
        num_key_value_heads=shape.n_head, max_position_embeddings=shape.n_positions,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=True,
        **({} if dropout is None else dict(attention_dropout=dropout)),
    )
    return LlamaForCausalLM(config)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(RuntimeError):
    """A checkpoint cannot be loaded as it was saved: the message holds transformers' own loading
    report (missing, unexpected and mismatched tensors)."""


def load_model(name_or_path: str | Path, dtype: torch.dtype | str | None = torch.float32,
               device: str | None = None, **kwargs) -> torch.nn.Module:
    """Load any causal LM by hub name (online) or local folder.

    Uses `AutoModelForCausalLM.from_pretrained` with safetensors weights and
    `trust_remote_code=False`, in `dtype` (default float32: bf16 / fp16 checkpoints are upcast;
    None or "auto" keeps the checkpoint's). Extra keyword arguments go to `from_pretrained` (e.g.
    `quantization_config`). The model is returned in eval mode.

    Raises CheckpointError with transformers' loading report when a tensor the model needs is
    missing from the checkpoint or has another shape (transformers would initialise it randomly,
    or fails with "see the above report" while its report is silenced by `quiet_transformers`).
    """
    import logging

    from transformers import AutoModelForCausalLM

    dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger, handler = logging.getLogger("transformers"), Capture(level=logging.WARNING)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(min(level or logging.WARNING, logging.WARNING))
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            str(name_or_path), dtype=dtype, trust_remote_code=False, use_safetensors=True, output_loading_info=True,
            **kwargs)
    except RuntimeError as exc:
        report = _strip_ansi("\n".join(r for r in records if "LOAD REPORT" in r or "MISMATCH" in r or "MISSING" in r))
        raise CheckpointError(f"{name_or_path} could not be loaded: {exc}" + (f"\n{report}" if report else "")) from None
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    tied = {"lm_head.weight", "embed_out.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    missing = sorted(set(info.get("missing_keys") or ()) - tied)
    mismatched = sorted(str(m) for m in info.get("mismatched_keys") or ())
    if missing or mismatched:
        raise CheckpointError(f"{name_or_path} does not hold every tensor its config describes (transformers would "
                              f"initialise them randomly): missing {missing[:8]}, mismatched {mismatched[:8]}")
    if device is not None and "quantization_config" not in kwargs:
        model.to(device)
    guard_cpu_4bit(model)  # a saved 4-bit checkpoint, or one quantized while loading
    return model.eval()


def guard_cpu_4bit(model) -> list[str]:
    """Send the bitsandbytes 4-bit layers (`Linear4bit`) whose input width is not a multiple of their
    quantization block size (64) or whose output width is not a multiple of 32 to bitsandbytes'
    generic CPU path, in place; returns their names (empty on a CPU without AVX512-BF16, where every
    layer takes that path, and for a model without 4-bit layers).

    bitsandbytes 0.50.2 repacks 4-bit weights for its AVX512-BF16 CPU kernel at the first forward pass
    in eval mode without gradients, and that repacking fails (\"N must be divisible by block_n\") for
    such shapes: grouped-query attention's narrow key/value projections (2 KV heads x 8 dims = 16
    outputs), and layers left by head or width pruning (7 heads x 32 dims = 224 inputs). The generic
    path (dequantize, then matmul) uses the same 4-bit weights; the flag set is bitsandbytes' own
    `support_avx512bf16_for_cpu`. `load_model` applies it to every model it loads, so a saved 4-bit
    checkpoint reloads onto the same path it was measured on. Idempotent.
    """
    kernel = None
    names = []
    for name, m in model.named_modules():
        if type(m).__name__ != "Linear4bit":
            continue
        if kernel is None:
            from bitsandbytes.functional import has_avx512bf16

            kernel = bool(has_avx512bf16())
        if not (kernel or getattr(m, "support_avx512bf16_for_cpu", False)):
            continue
        blocksize = getattr(getattr(m.weight, "quant_state", None), "blocksize", 64)
        if m.in_features % blocksize or m.out_features % 32:
            m.support_avx512bf16_for_cpu = False
            names.append(name)
    return names


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", text)


def save_model(model, tokenizer, path: str | Path) -> Path:
    """Save model (safetensors), config and tokenizer together in `path`; returns `path`.

    A pruned model whose shape its config cannot describe (heads differing per layer, a GPT-2
    whose hidden size was pruned) also gets `pruned_shape.json` (`surgery.shape_record`), and
    `load_artifact` reloads it with `surgery.load_pruned`; `from_pretrained` alone fails on it
    with a size mismatch. A 4-bit model that has run on bitsandbytes' packed AVX512-BF16 CPU kernel is
    unpacked first (`unpack_cpu_4bit`).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    unpack_cpu_4bit(model)
    record = shape_record(model) if supported(family_of(model)) else None
    if record is None:
        model.save_pretrained(str(path), safe_serialization=True)
    else:
        # a shape the config cannot describe: the weights under the model's own state-dict names (no
        # hub renaming, e.g. GPT-NeoX's lm_head saved as embed_out), read back by surgery.load_pruned
        from safetensors.torch import save_model as save_safetensors

        model.config.save_pretrained(str(path))
        save_safetensors(model, str(path / "model.safetensors"))
        (path / SHAPE_FILE).write_text(json.dumps(record))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path


def unpack_cpu_4bit(model) -> list[str]:
    """Undo, in place, the repacking of 4-bit weights that bitsandbytes' AVX512-BF16 CPU kernel makes at
    a layer's first forward pass (`guard_cpu_4bit`), so that `save_model` writes bitsandbytes' standard
    4-bit layout; returns the names of the layers unpacked (none on a CPU without that kernel, or
    before any forward pass).

    bitsandbytes 0.50.2 undoes the packing itself when it saves a layer, but leaves the per-block
    scales (absmax) of a layer without double quantization in the packed layout (transposed, [K/64,
    N] in bf16) while restoring the weights' layout: the saved checkpoint, and the model once saved,
    then compute with scrambled scales (logits off by ~0.6 on a tiny GPT-2, against ~0.02 between
    the packed and the generic path). Here its inverse runs first and those scales are put back in
    their standard layout ([N x K/64] flattened, float32; they keep the bf16 rounding the packing
    gave them, which the packed kernel computes with). Double-quantized layers are restored by
    bitsandbytes' inverse itself.
    """
    names = []
    for name, m in model.named_modules():
        state = getattr(getattr(m, "weight", None), "quant_state", None)
        if type(m).__name__ != "Linear4bit" or not getattr(state, "packing_format_for_cpu", False):
            continue
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

        nested = state.original_nested
        m.weight.data, state = _convert_weight_packed_for_cpu_inverse(m.weight.data, state)
        if not nested:  # left as packed: [K/blocksize, N] bf16
            state.absmax = state.absmax.T.reshape(-1).to(torch.float32).contiguous()
        m.weight.quant_state = state
        names.append(name)
    return names


def family_of(model) -> str:
    """The model's `config.model_type` ("gpt2", "llama", "qwen2", ...)."""
    return getattr(model.config, "model_type", "unknown")


def shape_of(model) -> dict:
    """The shape fields of a loaded model's config, as a dict (layers, heads, key-value heads,
    width, context, vocabulary), read through its family adapter when it has one."""
    c = model.config
    if supported(family_of(model)):
        a = adapter_for(model).anatomy
        n_layer, n_head, n_embd = getattr(c, a.n_layer), getattr(c, a.n_head), getattr(c, a.hidden)
        n_kv = getattr(c, a.n_kv_head, None) if a.n_kv_head else None
    else:
        n_layer = getattr(c, "num_hidden_layers", getattr(c, "n_layer", None))
        n_head = getattr(c, "num_attention_heads", getattr(c, "n_head", None))
        n_embd = getattr(c, "hidden_size", getattr(c, "n_embd", None))
        n_kv = getattr(c, "num_key_value_heads", None)
    return {"family": family_of(model), "n_layer": n_layer, "n_head": n_head, "n_kv_head": n_kv or n_head,
            "n_embd": n_embd, "n_positions": context_length(model), "vocab_size": c.vocab_size}


def context_length(model) -> int:
    """Longest context the model accepts, in tokens."""
    c = getattr(model, "config", model)
    return int(getattr(c, "n_positions", None) or getattr(c, "max_position_embeddings"))


def shape_dict(shape: ModelShape) -> dict:
    return asdict(shape)


@dataclass
class Artifact:
    """A model of the study with its provenance: the baseline or a compressed variant.

    Attributes:
        model: the model, in eval mode.
        tokenizer: its tokenizer.
        key: cache key (`compstudy.cache`), or `pretrained:<name>` for hub models.
        path: the cached folder, or None.
        recipe: the cached `recipe.json` (parameters, `cost`, ...).
        history: training history (DataFrame) when the artifact was trained here.
    """

    model: torch.nn.Module
    tokenizer: object
    key: str
    path: Path | None
    recipe: dict = field(default_factory=dict)
    history: "pandas.DataFrame | None" = None

    @property
    def cost(self) -> dict:
        """Cost of producing this artifact from its parent: seconds, energy_kwh, method."""
        return self.recipe.get("cost", {"seconds": 0.0, "energy_kwh": 0.0, "method": "none"})


def load_folder(path: str | Path, device: str = "cpu", **load_kwargs) -> torch.nn.Module:
    """Load a model saved by `save_model`, in the dtype it was saved in: with `surgery.load_pruned`
    when the folder has a `pruned_shape.json` (a shape its config cannot describe), else
    `from_pretrained` (`load_model`; `load_kwargs` go there). Returns the model in eval mode on
    `device`. Raises CheckpointError (or RuntimeError from `load_pruned`) naming the tensors that
    do not match."""
    path = Path(path)
    if (path / SHAPE_FILE).exists():
        return load_pruned(path, device=device)
    return load_model(path, device=device, **{"dtype": None, **load_kwargs})


def load_artifact(key: str, device: str = "cpu", **load_kwargs) -> Artifact:
    """Load a cached model artifact (model, tokenizer, recipe, history) by cache key."""
    import pandas as pd

    folder = cache.path_of(key)
    history = pd.read_csv(folder / "history.csv") if (folder / "history.csv").exists() else None
    model = load_folder(folder, device=device, **load_kwargs)
    recipe = cache.read_recipe(key)
    if "size" not in recipe:  # before any forward pass: see model_size
        recipe["size"] = model_size(model)
    return Artifact(model, data.load_tokenizer(folder), key=key, path=folder, recipe=recipe, history=history)


def conv1d_to_linear(model) -> int:
    """Replace every GPT-2 `Conv1D` (weight [in, out]) by an equivalent `nn.Linear` (weight
    [out, in], the transpose), in place; returns how many were replaced.

    Needed by libraries that only know `nn.Linear` (PyTorch dynamic quantization). Outputs are unchanged up to float rounding.
    """
    from transformers.pytorch_utils import Conv1D

    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                n_in, n_out = child.weight.shape
                linear = torch.nn.Linear(n_in, n_out, bias=child.bias is not None,
                                         device=child.weight.device, dtype=child.weight.dtype)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    if child.bias is not None:
                        linear.bias.copy_(child.bias)
                setattr(parent, name, linear)
                replaced += 1
    return replaced


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is available, else 'cpu'; other values unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def count_parameters(model) -> tuple[int, int]:
    """(parameters, non-zero parameters) of a model, counting logical weights.

    bitsandbytes 4-bit weights are stored packed two per byte, HQQ's codes packed into bytes or
    int32 words; both are counted by their logical shape and their non-zeros by dequantizing.
    """
    total = nonzero = 0
    seen = set()
    for module in model.modules():  # HQQLinear: its packed codes W_q are a parameter
        if type(module).__name__ == "HQQLinear" and module.meta is not None:
            seen.add(id(module.W_q))
            w = module.dequantize()
            total += w.numel()
            nonzero += int(torch.count_nonzero(w))
            if module.bias is not None and not isinstance(module.bias, torch.nn.Parameter):  # a plain tensor there
                total += module.bias.numel()
                nonzero += int(torch.count_nonzero(module.bias))
    for p in model.parameters():
        if id(p) in seen:  # tied weights count once
            continue
        seen.add(id(p))
        quant_state = getattr(p, "quant_state", None)
        if quant_state is not None and type(p).__name__ == "Params4bit":
            import bitsandbytes.functional as bnbf

            w = bnbf.dequantize_4bit(p.data, quant_state)
            total += w.numel()
            nonzero += int(torch.count_nonzero(w))
        else:
            total += p.numel()
            nonzero += int(torch.count_nonzero(p.data))
    extra_total, extra_nonzero = _packed_int8_counts(model)
    return total + extra_total, nonzero + extra_nonzero


def _packed_int8_counts(model) -> tuple[int, int]:
    total = nonzero = 0
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    for module in model.modules():
        if tied and module is head:  # a tied LM head quantized apart is still the token table: counted once
            continue
        if type(module).__module__.startswith("torch.ao.nn.quantized") and hasattr(module, "weight"):
            w = module.weight()
            w = w.dequantize() if w.is_quantized else w
            total += w.numel()
            nonzero += int(torch.count_nonzero(w))
            bias = module.bias() if callable(getattr(module, "bias", None)) else None
            if bias is not None:
                total += bias.numel()
                nonzero += int(torch.count_nonzero(bias))
    return total, nonzero


def weight_bytes(model) -> int:
    """Bytes of the model's weights as saved on disk.

    Saved with `save_pretrained` (safetensors, tied weights once) to a temporary folder and the
    weight files summed; models that `save_pretrained` cannot write (torch dynamic int8) are saved
    with `torch.save(state_dict)`. `get_memory_footprint()` is not used: it is wrong for several
    quantization backends.
    """
    with tempfile.TemporaryDirectory(prefix="weights-") as tmp:
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            files = [p for p in Path(tmp).iterdir() if p.suffix in (".safetensors", ".bin")]
            if files:
                return sum(p.stat().st_size for p in files)
        except Exception:
            pass
        target = Path(tmp) / "state_dict.pt"
        torch.save(model.state_dict(), target)
        return target.stat().st_size


def model_size(model) -> dict:
    """{"n_params", "n_params_nonzero", "weight_bytes"} of a model (see `count_parameters`,
    `weight_bytes`).

    Call it before the model's first forward pass: bitsandbytes 0.50.2 on CPUs with AVX512-BF16
    repacks 4-bit weights at the first forward, and a later `state_dict()` (which `weight_bytes`
    needs) undoes the packing in a way that changes every later output. The study therefore
    computes sizes when an artifact is built and stores them in its recipe.
    """
    n_params, n_nonzero = count_parameters(model)
    return {"n_params": n_params, "n_params_nonzero": n_nonzero, "weight_bytes": weight_bytes(model)}


def model_dtype(model) -> str:
    """The dtype the model computes in, plus its quantization method if any (e.g. 'float32+nf4')."""
    dtype = str(getattr(model, "dtype", next(model.parameters()).dtype)).replace("torch.", "")
    q = getattr(model.config, "quantization_config", None)
    if q is not None:
        q = q.to_dict() if hasattr(q, "to_dict") else dict(q)
        if q.get("load_in_4bit"):
            return f"{dtype}+{q.get('bnb_4bit_quant_type', '4bit')}"
        if q.get("load_in_8bit"):
            return f"{dtype}+int8"
    for m in model.modules():  # quantized in memory (quantize.quantize_in_memory): read from the layers
        name, where = type(m).__name__, type(m).__module__
        if where.startswith("torch.ao.nn.quantized.dynamic"):
            return "float32+dynamic-int8"
        if name == "Linear4bit":
            return f"{dtype}+{m.weight.quant_type}"
        if name == "Linear8bitLt":
            return f"{dtype}+int8"
        if name == "HQQLinear":
            return f"{m.compute_dtype}+hqq{m.meta['nbits']}".replace("torch.", "")
    dequantized = getattr(model.config, "compstudy_dequantized", None)  # GPTQ weights in a dense model (lowbit)
    return f"{dtype}+{dequantized}-dequantized" if dequantized else dtype


# config entries that name or describe a model without changing what its forward pass computes
_SIGNATURE_IGNORED_CONFIG = {"_name_or_path", "name_or_path", "architectures", "transformers_version", "compstudy",
                             "_commit_hash", "output_attentions", "output_hidden_states", "return_dict"}


def compute_signature(model) -> str:
    """A fingerprint (16 hex of SHA-256) of the computation a model's forward pass performs.

    Two models with the same signature run the same operations on tensors of the same shapes,
    dtypes, layouts and devices; they differ at most in the weights' values. On dense kernels
    (CPU and GPU matmuls do not skip zeros) their pass times differ only by the machine's noise,
    so the study times one of them and lets the others share its passes (`measure.evaluate_many`,
    column `timed_as`): a fine-tuned copy of Base, a distilled student and its equal-shape
    controls are then never ranked apart by noise alone.

    Includes: every module's class; every parameter's and buffer's name, shape, dtype, layout and
    device, with bitsandbytes' quantization type and blocksize; the number of forward hooks and
    pre-hooks (masks of `torch.nn.utils.prune` and the study's head masks run in them); the
    model's config without its naming entries (`_SIGNATURE_IGNORED_CONFIG`); a dynamic-int8 or
    other non-Hugging-Face dtype tag (`model_dtype`). Conservative: anything that differs makes
    the signatures differ.
    """
    import hashlib

    parts = [model_dtype(model)]
    for name, module in model.named_modules():
        parts.append(f"m {name} {type(module).__module__}.{type(module).__qualname__} "
                     f"{len(module._forward_pre_hooks)} {len(module._forward_hooks)}")
        tensors = sorted([*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)],
                         key=lambda item: item[0])  # by name: torch.nn.utils.prune.remove re-registers `weight` last
        for pname, t in tensors:
            quant = getattr(t, "quant_type", None), getattr(t, "blocksize", None), getattr(module, "compute_dtype", None)
            parts.append(f"t {name}.{pname} {tuple(t.shape)} {t.dtype} {t.layout} {t.device.type} {quant}")
    config = getattr(model, "config", None)
    if config is not None:
        d = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
        parts.append(json.dumps({k: v for k, v in d.items() if k not in _SIGNATURE_IGNORED_CONFIG},
                                sort_keys=True, default=str))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
