"""Low-bit weight quantization at 8, 4, 3 and 2 bits per weight: the dose-response of quantization.

Two methods beside bitsandbytes' 8-bit and 4-bit (`compstudy.quantize`), one calibration-free and
one calibrated, chosen because each runs on CPU with torch 2.13 (checked; see the README):

| method | library | what | name suffix |
|---|---|---|---|
| HQQ  | `hqq` 0.2.8 (Badri & Shaji 2023, "Half-Quadratic Quantization of Large Machine Learning Models") | calibration-free: per-group (64 weights) scale and zero point fitted by a half-quadratic solver that minimises a sparsity-promoting error of the weights; the layers stay `HQQLinear` (PyTorch backend: dequantize, then matmul) | `hqq8`, `hqq4`, `hqq3`, `hqq2` |
| GPTQ | `gptqmodel` 7.6 (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers") | calibrated: column by column, rounding error compensated through the inverse Hessian of the layer's inputs on calibration text from the training split | `gptq8`, `gptq4`, `gptq3`, `gptq2` |

llm-compressor 0.14 (the other GPTQ implementation) requires transformers <= 5.17; the study pins
5.23, so GPTQModel it is.

**What a GPTQ point measures.** GPTQModel 7.6's kernels compute in float16 / bfloat16 only
(`TorchLinear.SUPPORTS_DTYPES`), which CPUs without AVX512-BF16 emulate (a pass 20x slower). The
GPTQ variant is therefore its quantized weights dequantized (float16 scales, as GPTQ stores them)
into the parent's float32 model: its perplexity is that of GPTQ's weights; its `weight_bytes` is
GPTQModel's packed checkpoint on disk (`qweight`, `qzeros`, float16 `scales`, `g_idx`); its
runtime is a dense float32 pass (the row's `dtype` says `float32+gptq<b>-dequantized`), not a
GPTQ kernel's. HQQ variants run HQQ's own layers.

Bits per weight on disk (`nominal_bits_per_weight`): HQQ stores `bits` per weight (3-bit: ten
values per int32, 3.2 bits) plus a scale and a zero point per group in the compute dtype; GPTQ
stores `bits` per weight, per group a float16 scale and a `bits`-wide zero point, and one int32
group index per input feature. `tests/test_lowbit.py` checks the measured bytes against them.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from . import cache
from .models import Artifact, conv1d_to_linear, load_artifact, model_size, resolve_device
from .registry import NotApplicable, Technique, register
from .step import ArtifactError, Built, cached_step
from .surgery import SHAPE_FILE

BITS = (8, 4, 3, 2)
HQQ_FILE = "hqq.safetensors"
for _name in ("torchao", "torch.utils._pytree"):  # hqq and gptqmodel import torchao, whose CUDA-only
    logging.getLogger(_name).setLevel(logging.ERROR)  # extensions log load errors on a CPU machine


def _check(bits: int, group_size: int, method: str) -> None:
    if bits not in BITS:
        raise ValueError(f"{method}: bits must be one of {BITS}, got {bits!r}")
    if not isinstance(group_size, int) or group_size < 8 or group_size % 8:
        raise ValueError(f"{method}: group_size must be a multiple of 8 (>= 8), got {group_size!r}")


@dataclass(frozen=True)
class HQQConfig:
    """HQQ weight quantization of every linear layer in the transformer blocks.

    Attributes:
        bits: bits per weight, one of `BITS`.
        group_size: weights sharing one scale and zero point (along the input dimension).

    Raises ValueError on construction for other values.
    """

    bits: int = 4
    group_size: int = 64

    def __post_init__(self):
        _check(self.bits, self.group_size, "hqq")

    @property
    def suffix(self) -> str:
        return f"hqq{self.bits}"


@dataclass(frozen=True)
class GPTQConfig:
    """GPTQ weight quantization of every linear layer in the transformer blocks (GPTQModel).

    Attributes:
        bits: bits per weight, one of `BITS`.
        group_size: input features sharing one scale and zero point.
        calibration_batches: batches of 8 x 128 tokens of training text (`data.calibration_batches`)
            whose inputs give each layer's Hessian.
        seed: which windows of the training text.

    Raises ValueError on construction for other values.
    """

    bits: int = 4
    group_size: int = 64
    calibration_batches: int = 16
    seed: int = 0

    def __post_init__(self):
        _check(self.bits, self.group_size, "gptq")
        if self.calibration_batches < 1:
            raise ValueError(f"gptq: calibration_batches must be >= 1, got {self.calibration_batches!r}")

    @property
    def suffix(self) -> str:
        return f"gptq{self.bits}"


def nominal_bits_per_weight(config, in_features: int, out_features: int, compute_bits: int = 32) -> float:
    """Bits per weight a quantized [out_features x in_features] layer takes on disk by the
    method's format (module docstring): the packed codes plus the per-group metadata.

    HQQ: the codes, packed along the groups (8 bits: one a byte; 4: two a byte; 2: four a byte;
    3: ten an int32, so 3.2 bits), the last word padded, + 2 x `compute_bits` / group_size (scale
    and zero point).
    GPTQ: `bits` + (16 + `bits`) / group_size (float16 scale, packed zero point) + 32 / out_features
    (the int32 group index of each input feature).
    """
    if isinstance(config, HQQConfig):
        per_word, word_bits = {8: (1, 8), 4: (2, 8), 3: (10, 32), 2: (4, 8)}[config.bits]
        groups = in_features * out_features / config.group_size
        codes = word_bits * math.ceil(groups / per_word) / groups
        return codes + 2 * compute_bits / config.group_size
    if isinstance(config, GPTQConfig):
        return config.bits + (16 + config.bits) / config.group_size + 32 / out_features
    raise TypeError(f"not a low-bit config: {config!r}")


@contextlib.contextmanager
def _quiet():
    """Swallow what the libraries print (GPTQModel's banner and progress) so that it does not land
    in the notebooks; re-raised errors still carry their message."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _hqq():
    with _quiet():
        from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear
    HQQLinear.set_backend(HQQBackend.PYTORCH)  # pure PyTorch: dequantize, then matmul (CPU and CUDA)
    return BaseQuantizeConfig, HQQLinear


def _block_linears(model):
    """(parent module, attribute, full name, layer) of every nn.Linear inside the transformer blocks
    (after `conv1d_to_linear`)."""
    from .quantize import block_layer_names

    names = set(block_layer_names(model))
    out = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if type(child) is torch.nn.Linear and full in names:
                out.append((parent, name, full, child))
    return out


def hqq_quantize(model, config: HQQConfig, device: str = "cpu") -> torch.nn.Module:
    """Replace every linear layer of the transformer blocks of `model` (a float model, changed in
    place) by HQQ's `HQQLinear` at `config.bits`; the LM head and embeddings stay as they are.
    Returns the model in eval mode on `device`. Raises RuntimeError when no layer was quantized."""
    BaseQuantizeConfig, HQQLinear = _hqq()
    conv1d_to_linear(model)
    model.to(device)
    dtype = next(model.parameters()).dtype
    layers = _block_linears(model)
    if not layers:
        raise RuntimeError("hqq: no linear layer found inside the transformer blocks")
    for parent, name, _, child in layers:
        quant_config = BaseQuantizeConfig(nbits=config.bits, group_size=config.group_size, axis=1)
        setattr(parent, name, HQQLinear(child, quant_config=quant_config, compute_dtype=dtype, device=device,
                                        del_orig=True))
    return model.eval()


def hqq_skeleton(model, device: str = "cpu") -> torch.nn.Module:
    """`model` (the float parent) with every block linear replaced by an empty `HQQLinear`, ready
    for `safetensors.torch.load_model` of a saved HQQ model."""
    _, HQQLinear = _hqq()
    conv1d_to_linear(model)
    model.to(device)
    dtype = next(model.parameters()).dtype
    for parent, name, _, _ in _block_linears(model):
        setattr(parent, name, HQQLinear(None, None, compute_dtype=dtype, device=device, initialize=False))
    return model.eval()


def quantized_layer_bytes(model) -> tuple[int, int]:
    """(bytes, logical weights) of the quantized layers of an HQQ model: the tensors each
    `HQQLinear` saves except its bias (codes, scale, zero point, metadata)."""
    total = weights = 0
    for m in model.modules():
        if type(m).__name__ == "HQQLinear":
            for k, v in m.state_dict().items():
                if k != "bias" and isinstance(v, torch.Tensor):
                    total += v.numel() * v.element_size()
            out_f, in_f = (int(s) for s in m.meta["shape"])
            weights += out_f * in_f
    return total, weights


def get_hqq(parent: Artifact, config: HQQConfig, device: str = "auto") -> Artifact:
    """The HQQ-quantized variant of `parent`, built once and cached: the quantized model's state
    (codes, scales, zero points, the untouched tensors) in `hqq.safetensors`, reloaded into the
    parent's architecture and checked to compute the same logits before it is cached."""
    from safetensors.torch import load_model, save_model

    device = resolve_device(device)
    params = {"parent": parent.key, **cache.as_params(config)}
    probe = torch.arange(16).unsqueeze(0)

    def build(meter):
        with meter.task("quantize"):
            model = hqq_quantize(load_artifact(parent.key, device="cpu").model, config, "cpu")
        size = model_size(model)
        layer_bytes, weights = quantized_layer_bytes(model)
        with torch.no_grad():
            expected = model(input_ids=probe % model.config.vocab_size).logits

        def write(path: Path):
            save_model(model, str(path))
            again = hqq_skeleton(load_artifact(parent.key, device="cpu").model)
            load_model(again, str(path), strict=True)
            with torch.no_grad():
                got = again(input_ids=probe % again.config.vocab_size).logits
            if not torch.equal(expected, got):
                raise ArtifactError(f"hqq{config.bits}: the reloaded model computes other logits")

        return Built(None, parent.tokenizer, size=size, files={HQQ_FILE: write},
                     recipe={"bits_per_weight": 8 * layer_bytes / weights, "quantized_weights": weights,
                             "method": "HQQ (hqq 0.2.8, PyTorch backend)"})

    def load(key, device):
        from .data import load_tokenizer

        model = hqq_skeleton(load_artifact(parent.key, device=device).model, device=device)
        load_model(model, str(cache.path_of(key) / HQQ_FILE), strict=True, device=device)
        return Artifact(model, load_tokenizer(parent.path), key, cache.path_of(key), cache.read_recipe(key))

    return cached_step(f"quant-{config.suffix}", params, build, device, load=load)


def _gptqmodel():
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, torch.get_num_threads())))  # its default on 2 cores fails
    threads = torch.get_num_threads()
    with _quiet():
        from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
    torch.set_num_threads(threads)
    return GPTQModel, QuantizeConfig, BACKEND


def gptq_packable(out_features: int, bits: int) -> bool:
    """Whether GPTQModel 7.6 can pack a layer with `out_features` outputs at `bits`: its zero points
    are packed along the outputs into int32 words, so out_features x bits must fill whole words, and
    its 3-bit packing works in blocks of 32 outputs (a 16-output key projection of a grouped-query
    model fails inside its worker thread, which then ends the whole process: checked, gptqmodel 7.6)."""
    return out_features % 32 == 0 if bits == 3 else (out_features * bits) % 32 == 0


def gptq_quantize(folder: Path, batches, config: GPTQConfig, out: Path, device: str = "cpu",
                  keep_float: list[str] | tuple = ()) -> None:
    """Quantize the float model saved in `folder` with GPTQModel on `batches` (LongTensors
    [batch, seq] of calibration text) and save its packed checkpoint in `out`. Layers named in
    `keep_float` (full module names) are left unquantized (GPTQModel's negative `dynamic` rules)."""
    import re

    GPTQModel, QuantizeConfig, _ = _gptqmodel()
    calibration = [{"input_ids": row.tolist(), "attention_mask": [1] * len(row)} for b in batches for row in b]
    threads = torch.get_num_threads()
    dynamic = {"-:.*" + re.escape(".".join(name.split(".")[-4:])) + "$": {} for name in keep_float} or None
    with _quiet():
        model = GPTQModel.load(str(folder), QuantizeConfig(bits=config.bits, group_size=config.group_size,
                                                           dynamic=dynamic),
                               device=device, dtype=torch.float32)
        model.quantize(calibration, batch_size=8)
        model.save(str(out))
    torch.set_num_threads(threads)


def gptq_dequantized_weights(out: Path) -> dict[str, torch.Tensor]:
    """Each quantized layer's weight as GPTQ stores it, dequantized: layer name -> float32 tensor
    [in_features, out_features] (float16 scales, as in the checkpoint).

    Eager (`torch.compiler.set_stance("force_eager")`): GPTQModel's torch kernel wraps its
    `dequantize_weight` in `torch.compile`, which compiles once per layer shape and bit width (8 s
    on 2 CPU cores for four bit widths of a 2-layer model) for a function run once per layer here;
    the eager weights are bit-identical (checked for 8, 4, 3 and 2 bits, gptqmodel 7.6)."""
    GPTQModel, _, BACKEND = _gptqmodel()
    with _quiet():
        q = GPTQModel.load(str(out), device="cpu", dtype=torch.float16, backend=BACKEND.TORCH)
    with torch.compiler.set_stance("force_eager"):
        weights = {name: m.dequantize_weight().float().cpu() for name, m in q.model.named_modules()
                   if hasattr(m, "qweight")}
    del q
    return weights


def checkpoint_bytes(out: Path) -> tuple[int, int, int]:
    """(bytes of the weight files, bytes of the quantized layers' tensors, their logical weights)
    of a GPTQModel checkpoint folder."""
    from safetensors import safe_open

    files = sorted(Path(out).glob("*.safetensors"))
    total = sum(f.stat().st_size for f in files)
    layer_bytes = weights = 0
    for f in files:
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                if k.endswith((".qweight", ".qzeros", ".scales", ".g_idx")):
                    t = st.get_tensor(k)
                    layer_bytes += t.numel() * t.element_size()
                if k.endswith(".g_idx"):
                    in_f = st.get_slice(k).get_shape()[0]
                    out_f = st.get_slice(k[: -len(".g_idx")] + ".scales").get_shape()[1]
                    weights += in_f * out_f
    return total, layer_bytes, weights


def get_gptq(parent: Artifact, config: GPTQConfig, corpora, device: str = "auto") -> Artifact:
    """The GPTQ variant of `parent` (module docstring: GPTQ's weights dequantized into the
    parent's float32 model), built once and cached; its size is GPTQModel's packed checkpoint.

    Raises ValueError before any work when `parent` has no saved folder or has a shape its config
    cannot describe (head- or width-pruned: GPTQModel loads models with `from_pretrained`; use HQQ).
    """
    from .data import calibration_batches

    if parent.path is None or (parent.path / SHAPE_FILE).exists():
        raise ValueError("gptq: the parent must be a model from_pretrained can load (GPTQModel loads it so); "
                         "a head- or width-pruned model has shapes its config cannot describe: quantize it with hqq")
    device = resolve_device(device)
    params = {"parent": parent.key, **cache.as_params(config), "corpora": list(corpora)}

    def build(meter):
        batches = calibration_batches(parent.tokenizer, corpora, config.calibration_batches, seed=config.seed)
        model = load_artifact(parent.key, device="cpu").model
        modules = dict(model.named_modules())
        keep_float = [n for n in _quantizable(model)
                      if not gptq_packable(_out_features(modules[n]), config.bits)]
        model_type = getattr(model.config, "model_type", "?")
        with tempfile.TemporaryDirectory(prefix="gptq-", dir=cache.path_of(parent.key).parent) as tmp:
            with meter.task("quantize"):
                try:
                    gptq_quantize(parent.path, batches, config, Path(tmp), device="cpu", keep_float=keep_float)
                    weights = gptq_dequantized_weights(Path(tmp))
                except Exception as exc:  # GPTQModel's own model definitions do not cover every family
                    raise NotApplicable(f"gptq: GPTQModel 7.6 could not quantize this {model_type!r} model "
                                        f"({type(exc).__name__}: {str(exc)[:200]}); HQQ covers every family") from exc
            total, layer_bytes, n_weights = checkpoint_bytes(Path(tmp))
        missing = sorted(set(_quantizable(model)) - set(weights) - set(keep_float))
        if missing:
            raise NotApplicable(f"gptq: GPTQModel 7.6 left {len(missing)} block layer(s) of this {model_type!r} model "
                                f"unquantized ({', '.join(missing[:3])}); HQQ covers every family")
        with torch.no_grad():
            for name, w in weights.items():
                layer = modules[name]
                layer.weight.copy_(w if type(layer).__name__ == "Conv1D" else w.t())
        model.config.compstudy_dequantized = config.suffix  # a computation of its own (models.model_dtype)
        size = {**model_size(model), "weight_bytes": total}
        return Built(model, parent.tokenizer, size=size,
                     recipe={"bits_per_weight": 8 * layer_bytes / n_weights, "quantized_weights": n_weights,
                             "kept_float": keep_float,  # layers GPTQModel cannot pack at these bits (gptq_packable)
                             "method": "GPTQ (gptqmodel 7.6), weights dequantized to float32 for the evaluation",
                             "calibration_tokens": sum(b.numel() for b in batches)})

    return cached_step(f"quant-{config.suffix}", params, build, device)


def _out_features(layer) -> int:
    """Output features of a Linear or of GPT-2's Conv1D (weight [in, out])."""
    return int(layer.weight.shape[1] if type(layer).__name__ == "Conv1D" else layer.weight.shape[0])


def _quantizable(model) -> list[str]:
    from .quantize import block_layer_names

    return [n for n in block_layer_names(model) if not n.endswith("lm_head")]


# ---- the registry's entries (compstudy.registry)

register(Technique(
    key="quantize:hqq", kind="quantize", pattern=r"hqq([2348])", config_type=HQQConfig,
    parse=lambda m, defaults: HQQConfig(int(m.group(1))), token=lambda c, first: c.suffix,
    build=lambda parent, c, ctx: get_hqq(parent, c, device=ctx.device),
    description="HQQ at 8/4/3/2 bits per weight (calibration-free, hqq)"))
register(Technique(
    key="quantize:gptq", kind="quantize", pattern=r"gptq([2348])", config_type=GPTQConfig, needs_calibration=True,
    parse=lambda m, defaults: GPTQConfig(int(m.group(1))), token=lambda c, first: c.suffix,
    build=lambda parent, c, ctx: get_gptq(parent, c, ctx.corpora, device=ctx.device),
    description="GPTQ at 8/4/3/2 bits per weight (calibrated on training text, GPTQModel; evaluated dequantized)"))
