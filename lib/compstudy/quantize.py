"""Post-training quantization of a saved model: bitsandbytes (the paper's library) and two
CPU-native references.

| method   | what                                                         | name suffix |
|----------|--------------------------------------------------------------|-------------|
| `int8`   | LLM.int8() (Dettmers et al. 2022): int8 weights, fp16 outlier columns above `llm_int8_threshold` | `8b` |
| `nf4`    | 4-bit NormalFloat (Dettmers et al. 2023, QLoRA), blockwise absmax, optional double quantization | `4b` |
| `fp4`    | 4-bit float, same machinery as nf4 (transformers' default 4-bit type)                | `4bfp4` |
| `bf16`   | bfloat16 weights and compute (no integer quantization)      | `bf16` |
| `dynamic-int8` | PyTorch dynamic quantization: int8 weights, activations quantized per batch at run time; CPU only | `dq8` |

bitsandbytes 0.50 runs on CPU as well as CUDA; the same `from_pretrained(..., quantization_config=
BitsAndBytesConfig(...))` path is used on both. transformers keeps `lm_head` in full precision
(as it does for every bnb model); every linear layer inside the transformer blocks must be
quantized, and `check_quantized` fails loudly if one is not (some libraries silently skip GPT-2's
`Conv1D` layers). Variant names follow the paper: `Base8b`, `Base4b`, `Distil+90+4b`.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch

from . import cache
from .families import adapter_for, supported
from .registry import Technique, register
from .models import Artifact, conv1d_to_linear, guard_cpu_4bit, load_artifact, load_model, model_size, resolve_device
from .step import Built, cached_step
from .surgery import SHAPE_FILE

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # the 8-bit path logs a cast warning per call

METHODS = ("int8", "nf4", "fp4", "bf16", "dynamic-int8")
SUFFIX = {"int8": "8b", "nf4": "4b", "fp4": "4bfp4", "bf16": "bf16", "dynamic-int8": "dq8"}
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class QuantConfig:
    """A quantization recipe.

    Attributes:
        method: one of `METHODS`.
        llm_int8_threshold: LLM.int8() outlier threshold (int8 only; bitsandbytes default 6.0).
        double_quant: quantize the 4-bit quantization constants too (nf4 / fp4 only).
        compute_dtype: dtype of the matmuls of 4-bit layers (nf4 / fp4 only): float32,
            bfloat16 or float16.

    Raises ValueError on construction for an unknown method or an impossible combination
    (double_quant or compute_dtype without a 4-bit method, a threshold without int8).
    """

    method: str = "nf4"
    llm_int8_threshold: float = 6.0
    double_quant: bool = False
    compute_dtype: str = "float32"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"quantization method {self.method!r} unknown; allowed: {METHODS}")
        four_bit = self.method in ("nf4", "fp4")
        if self.double_quant and not four_bit:
            raise ValueError(f"double_quant applies to 4-bit methods ('nf4', 'fp4'), not {self.method!r}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")
        if self.compute_dtype != "float32" and not four_bit:
            raise ValueError(f"compute_dtype applies to 4-bit methods ('nf4', 'fp4'), not {self.method!r}")
        if self.llm_int8_threshold != 6.0 and self.method != "int8":
            raise ValueError(f"llm_int8_threshold applies to method 'int8', not {self.method!r}")
        if not self.llm_int8_threshold > 0:
            raise ValueError(f"llm_int8_threshold must be > 0, got {self.llm_int8_threshold}")

    @property
    def suffix(self) -> str:
        """Name suffix in the paper's style (`8b`, `4b`, ...), with `dq` for double quantization."""
        return SUFFIX[self.method] + ("dq" if self.double_quant else "")

    @classmethod
    def from_name(cls, name: str) -> "QuantConfig":
        """Parse a suffix (`8b`, `4b`, `4bdq`, `4bfp4`, `bf16`, `dq8`) back into a config.

        Raises ValueError listing the allowed names.
        """
        for method, suffix in SUFFIX.items():
            if name == suffix:
                return cls(method)
            if name == suffix + "dq" and method in ("nf4", "fp4"):
                return cls(method, double_quant=True)
        allowed = list(SUFFIX.values()) + ["4bdq", "4bfp4dq"]
        raise ValueError(f"unknown quantized variant {name!r}; allowed: {allowed}")

    def bnb_config(self):
        """The `transformers.BitsAndBytesConfig` for bitsandbytes methods (None otherwise)."""
        from transformers import BitsAndBytesConfig

        if self.method == "int8":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=self.llm_int8_threshold)
        if self.method in ("nf4", "fp4"):
            return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.method,
                                      bnb_4bit_use_double_quant=self.double_quant,
                                      bnb_4bit_compute_dtype=getattr(torch, self.compute_dtype))
        return None


def quantize_model(path, config: QuantConfig, device: str = "cpu") -> torch.nn.Module:
    """Load the model saved at `path` quantized by `config`; returns it in eval mode.

    Raises ValueError if `dynamic-int8` is asked on CUDA (PyTorch's dynamic quantization is
    CPU-only), and RuntimeError from `check_quantized` if a targeted layer was left unquantized.
    """
    device = resolve_device(device)
    if config.method == "dynamic-int8" and device != "cpu":
        raise ValueError("method 'dynamic-int8' runs on CPU only; use device='cpu' or a bitsandbytes method")
    bnb = config.bnb_config()
    if config.method == "bf16":  # loaded in bf16, as from_pretrained does it (float32 buffers such as rotary frequencies)
        model = load_model(path, dtype=torch.bfloat16, device=device)
        check_quantized(model, config)
        return model
    if bnb is None:  # dynamic-int8: a module swap of the loaded float model
        return quantize_in_memory(load_model(path, device="cpu"), config, device)
    kwargs = {"device_map": {"": device}} if device.startswith("cuda") else {}
    model = load_model(path, quantization_config=bnb, **kwargs)
    check_quantized(model, config)  # load_model has sent the layers the packed CPU kernel cannot take to the generic path
    return model.eval()


def quantize_in_memory(model, config: QuantConfig, device: str = "cpu") -> torch.nn.Module:
    """Quantize an already-loaded model by `config`: the path of bf16 and dynamic-int8 always, and
    of bitsandbytes methods for models `from_pretrained` cannot rebuild (head-pruned ones). bitsandbytes methods replace every linear layer of the transformer blocks
    by `bnb.nn.Linear8bitLt` / `bnb.nn.Linear4bit` (quantized when moved to `device`), keeping
    the LM head in full precision as transformers does; bf16 casts; dynamic-int8 as in
    `quantize_model`. Returns the model (possibly a new object), checked by `check_quantized`."""
    if config.method == "bf16":  # parameters only, as from_pretrained(dtype=bfloat16) leaves buffers in float32
        model = model.to(device)
        for p in model.parameters():
            p.data = p.data.to(torch.bfloat16)
    elif config.method == "dynamic-int8":
        conv1d_to_linear(model)
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao,
            warnings.simplefilter("ignore")  # whose PyPI wheel is a CUDA build; it still works in 2.13
            # dynamic int8 quantizes float32 weights and runs on float32 activations: a bf16 / fp16 model is upcast
            model = torch.ao.quantization.quantize_dynamic(model.to("cpu", torch.float32), {torch.nn.Linear},
                                                           dtype=torch.qint8)
    else:
        import bitsandbytes as bnb

        conv1d_to_linear(model)
        model.to(device)  # before replacing: moving a quantized bnb layer again would re-quantize it
        block_layers = set(block_layer_names(model))
        for parent_name, parent in list(model.named_modules()):
            for name, child in list(parent.named_children()):
                full = f"{parent_name}.{name}" if parent_name else name
                if type(child) is not torch.nn.Linear or full not in block_layers:
                    continue
                bias = child.bias is not None
                if config.method == "int8":
                    new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=bias,
                                              has_fp16_weights=False, threshold=config.llm_int8_threshold)
                    new.weight = bnb.nn.Int8Params(child.weight.data.clone(), requires_grad=False,
                                                   has_fp16_weights=False)
                else:
                    new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=bias,
                                            compute_dtype=getattr(torch, config.compute_dtype),
                                            compress_statistics=config.double_quant, quant_type=config.method)
                    new.weight = bnb.nn.Params4bit(child.weight.data.clone(), requires_grad=False,
                                                   compress_statistics=config.double_quant, quant_type=config.method)
                if bias:
                    new.bias = torch.nn.Parameter(child.bias.data.clone(), requires_grad=False)
                setattr(parent, name, new.to(device))
    check_quantized(model, config)
    guard_cpu_4bit(model)
    return model.eval()


def layer_kind(module) -> str:
    """Type of a linear-like layer: Linear8bitLt, Linear4bit, DynamicQuantizedLinear, Linear,
    Conv1D, or '' for other modules."""
    name, where = type(module).__name__, type(module).__module__
    if where.startswith("torch.ao.nn.quantized.dynamic") and name == "Linear":
        return "DynamicQuantizedLinear"
    return name if name in ("Linear", "Conv1D", "Linear8bitLt", "Linear4bit") else ""


def block_layer_names(model) -> list[str]:
    """Names of the linear-like layers quantization must convert: those inside the transformer
    blocks (`families.Family.block_prefix`); for a family without an adapter, every linear-like
    layer except the LM head."""
    head = model.get_output_embeddings()
    if supported(getattr(model.config, "model_type", "")):
        prefix = adapter_for(model).block_prefix()
        return [n for n, m in model.named_modules() if layer_kind(m) and n.startswith(prefix)]
    return [n for n, m in model.named_modules() if layer_kind(m) and m is not head]


def _block_layers(model) -> dict:
    """Linear-like layers inside the transformer blocks (and the LM head): name -> layer kind."""
    head = model.get_output_embeddings()
    out = {name: layer_kind(m) for name, m in model.named_modules() if name in set(block_layer_names(model))}
    for name, m in model.named_modules():
        if m is head and layer_kind(m):
            out[name + ":lm_head" if not name.endswith("lm_head") else name] = layer_kind(m)
    return out


def check_quantized(model, config: QuantConfig) -> dict:
    """Verify that every linear layer of the transformer blocks has the quantized type the
    method promises; returns {layer kind: count}, the LM head counted apart as `lm_head:<kind>`.

    Raises RuntimeError naming the layers left unquantized.
    """
    expected = {"int8": "Linear8bitLt", "nf4": "Linear4bit", "fp4": "Linear4bit",
                "dynamic-int8": "DynamicQuantizedLinear"}.get(config.method)
    layers = _block_layers(model)
    if expected is None:  # bf16: check the weights' dtype instead
        wrong = [n for n, p in model.named_parameters() if p.dtype != torch.bfloat16]
        if wrong:
            raise RuntimeError(f"bf16: parameters left in another dtype: {wrong[:5]}")
        return {"bfloat16 parameters": sum(1 for _ in model.parameters())}
    missing = sorted(n for n, t in layers.items() if t != expected and not n.endswith("lm_head"))
    if missing or not layers:
        raise RuntimeError(f"{config.method}: {len(missing)} block layer(s) not quantized to {expected}: "
                           f"{missing[:8]}{' ...' if len(missing) > 8 else ''}")
    counts: dict = {}
    for name, t in layers.items():
        t = f"lm_head:{t}" if name.endswith("lm_head") else t
        counts[t] = counts.get(t, 0) + 1
    return counts


def get_quantized(parent: Artifact, config: QuantConfig, device: str = "auto") -> Artifact:
    """The quantized variant of `parent`, built once and cached.

    The artifact's key derives from the parent's key and the config. bitsandbytes and bf16
    variants are saved in their quantized form (safetensors) and reloaded from it; a
    `dynamic-int8` variant cannot be serialised by `save_pretrained`, so its cache entry holds the
    recipe and the variant is re-derived from the parent (deterministic, ~1 s). The recipe's
    `cost` is the time and energy of quantizing (and, for bnb, of saving).

    Raises ValueError before any work if `parent` has no saved folder (e.g. a hub model that
    was not cached): save it first with `models.save_model`.
    """
    if parent.path is None:
        raise ValueError("parent has no saved folder to quantize from; save it with compstudy.models.save_model")
    device = resolve_device(device)
    params = {"parent": parent.key, **cache.as_params(config)}
    shape_pruned = (parent.path / SHAPE_FILE).exists()  # from_pretrained cannot rebuild the parent
    rederive = config.method == "dynamic-int8" or shape_pruned  # not serialisable by save_pretrained

    def build(meter):
        with meter.task("quantize"):
            if shape_pruned:
                model = quantize_in_memory(load_artifact(parent.key, device="cpu").model, config, device)
            else:
                model = quantize_model(parent.path, config, device)
        size = model_size(model)  # before any forward pass (see models.model_size)
        return Built(model, parent.tokenizer, size=size, stored=not rederive,
                     recipe={"layers": check_quantized(model, config), "cpu_generic_4bit_layers": guard_cpu_4bit(model),
                             **({} if rederive else {"stored": "quantized weights"})})

    def load(key, device):
        kwargs = {"device_map": {"": device}} if device.startswith("cuda") and config.bnb_config() else {}
        art = load_artifact(key, device="cpu" if kwargs else device, **kwargs)
        check_quantized(art.model, config)  # load_artifact guards the 4-bit layers (models.guard_cpu_4bit)
        return art

    return cached_step(f"quant-{config.suffix}", params, build, device, load=load)


# ---- the registry's entries (compstudy.registry): one per method, its name suffix and its build

def _register(method: str, pattern: str, description: str) -> None:
    register(Technique(
        key=f"quantize:{method}", kind="quantize", pattern=pattern, config_type=QuantConfig,
        matches=lambda c, method=method: c.method == method,
        parse=lambda m, defaults: QuantConfig.from_name(m.group(0)), token=lambda c, first: c.suffix,
        build=lambda parent, c, ctx: get_quantized(parent, c, device=ctx.device), description=description))


_register("int8", r"8b", "LLM.int8() 8-bit weights with 16-bit outliers (bitsandbytes)")
_register("nf4", r"4b(dq)?", "NF4 4-bit NormalFloat (bitsandbytes, QLoRA); dq: double quantization")
_register("fp4", r"4bfp4(dq)?", "FP4 4-bit float (bitsandbytes)")
_register("bf16", r"bf16", "bfloat16 weights and compute")
_register("dynamic-int8", r"dq8", "PyTorch dynamic int8 (CPU)")
