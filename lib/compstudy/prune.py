"""Pruning: attention heads, MLP neurons, embedding channels, depth, and unstructured magnitude and Wanda,
with optional post-pruning fine-tuning. Every family with an adapter (`compstudy.families`).

| kind        | what is removed | importance | reference |
|-------------|-----------------|------------|-----------|
| `heads`     | whole attention heads, physically (weights sliced) | gradient of the loss w.r.t. a head mask, `|dL/dm_h|`, summed over a calibration set and normalised per layer (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"); or the L1 norm of the head's weights | the paper's AH90 / AH80 (keep 90 % / 80 % of heads) |
| `magnitude` | individual weights (set to zero, masks made permanent) | |w|, per layer (`torch.nn.utils.prune.l1_unstructured`) or across all block layers (`global_unstructured`) | Gholami & Omar 2023; the paper's magnitude pruning |
| `wanda`     | individual weights (set to zero, masks made permanent) | |W_ij| * ||X_j||_2, the weight times the L2 norm of its input feature over the calibration tokens, compared within each output (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"); masks applied with `torch.nn.utils.prune.custom_from_mask` | an activation-aware alternative to magnitude in the sweep |
| `mlp`       | MLP neurons, the same number in every block | mean |activation| of the neuron on a calibration set (Minitron, Muralidharan et al. 2024) | |
| `depth`     | whole transformer blocks | Block Importance, 1 - cos(block input, block output), on a calibration set (used by Minitron for depth; Men et al. 2024) | |
| `embedding` | embedding channels: the hidden size of the residual stream, in every embedding, norm and projection | mean |LayerNorm output| of the channel, summed over the norms (Minitron) | |

Pruning is applied to the linear layers of the transformer blocks; embeddings and the LM head
are kept, except by `embedding`, which narrows them. Fine-tuning after pruning uses the study's
training loop; for magnitude pruning the masks stay attached during fine-tuning, so pruned
weights stay zero.

This module holds the criteria (which units matter) and the recipes; the structural slicing, the
valid pruned shapes and the saving of shapes a config cannot describe are `compstudy.surgery`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.utils.prune as torch_prune
from pydantic import Field

from . import cache
from .data import calibration_batches
from .models import Artifact, load_artifact, resolve_device
from .step import Built, cached_step
from .families import adapter_for
from .surgery import (attention_output, block_linear_layers, blocks, head_counts, head_dim, kept_count, kv_head_counts, mlp_down,
                      percent_text, prune_embedding_channels, prune_heads, prune_layers, prune_mlp, residual_norms)
from .finetune import FinetuneConfig, finetune
from .registry import Technique, register
from .schema import Group

KINDS = ("heads", "mlp", "embedding", "depth", "magnitude", "wanda")
UNSTRUCTURED = ("magnitude", "wanda")  # kinds sized by a sparsity (fraction removed); the rest by a keep_ratio
HEAD_IMPORTANCE = ("gradient", "magnitude")
ALLOCATIONS = ("global", "layer")


# --------------------------------------------------------------------------------------------
# Attention heads


def head_importance(model, batches, method: str = "gradient") -> torch.Tensor:
    """Importance of every unit of head pruning, a key-value group (one head under multi-head
    attention; `compstudy.families.base`), shape [n_layer, most groups of a layer].

    `gradient` (Michel et al. 2019): a mask m (ones) multiplies the outputs of each group's query
    heads before the output projection; importance = sum over batches of |dL/dm_g|, then each
    layer's scores are divided by their L2 norm (their normalisation for global ranking).
    `magnitude`: L1 norm of the group's query, key, value and output-projection weights.

    Raises ValueError for an unknown method; UnsupportedFamily for a family without an adapter.
    """
    if method not in HEAD_IMPORTANCE:
        raise ValueError(f"head importance method must be one of {HEAD_IMPORTANCE}, got {method!r}")
    fam, d = adapter_for(model), head_dim(model)
    units = kv_head_counts(model)
    if method == "magnitude":
        scores = torch.zeros(len(units), max(units))
        for i, block in enumerate(blocks(model)):
            scores[i, : units[i]] = fam.kv_group_weights(block, d)
        return scores
    mask = torch.ones(len(units), max(units), requires_grad=True)
    hooks = []
    for i, block in enumerate(blocks(model)):
        n_q = fam.heads(block, d)[0]

        def pre_hook(module, args, i=i, g=n_q // units[i]):
            x = args[0]
            shape = x.shape
            x = x.view(*shape[:-1], units[i], g, d) * mask[i, : units[i]].view(1, 1, -1, 1, 1).to(x.dtype)
            return (x.view(shape),)
        hooks.append(attention_output(model, block).register_forward_pre_hook(pre_hook))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in batches:
            batch = batch.to(device)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
        scores = mask.grad.abs().detach().clone()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    norm = scores.norm(p=2, dim=-1, keepdim=True).clamp_min(1e-20)
    return scores / norm


def select_heads(importance: torch.Tensor, keep: float, allocation: str = "global",
                 counts: list[int] | None = None) -> dict[int, list[int]]:
    """Heads to remove, {layer: [head, ...]}, keeping a fraction `keep` of them.

    `layer`: each layer keeps `kept_count(its heads, keep)`, at least 1. `global`: the
    `kept_count(all heads, keep)` most important heads are kept across layers, but each layer keeps at
    least its most important head (a layer without heads is not a pruned layer, it is a
    different architecture: use depth pruning for that).

    Raises ValueError if `keep` is not in (0, 1] or the allocation is unknown.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep}")
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
    n_layer = importance.shape[0]
    counts = counts or [importance.shape[1]] * n_layer
    remove: dict[int, list[int]] = {}
    if allocation == "layer":
        for i in range(n_layer):
            n_keep = kept_count(counts[i], keep)
            order = importance[i, : counts[i]].argsort(descending=True).tolist()
            if order[n_keep:]:
                remove[i] = sorted(order[n_keep:])
        return remove
    total = sum(counts)
    n_keep = kept_count(total, keep, minimum=n_layer)
    best = {i: int(importance[i, : counts[i]].argmax()) for i in range(n_layer)}
    ranked = sorted(((float(importance[i, h]), i, h) for i in range(n_layer) for h in range(counts[i])
                     if h != best[i]), reverse=True)
    kept = set(best.items()) | {(i, h) for _, i, h in ranked[: n_keep - n_layer]}
    for i in range(n_layer):
        gone = [h for h in range(counts[i]) if (i, h) not in kept]
        if gone:
            remove[i] = gone
    return remove


# --------------------------------------------------------------------------------------------
# Unstructured magnitude pruning


def magnitude_prune(model, sparsity: float, scope: str = "layer") -> list[tuple[str, torch.nn.Module]]:
    """Zero the smallest-|w| weights of the block linear layers with `torch.nn.utils.prune`;
    masks stay attached (call `make_permanent` before saving). Returns the pruned layers.

    `layer`: each layer loses round(sparsity * its weights) (l1_unstructured). `global`: the
    smallest weights across all block layers (global_unstructured), so layers end up with
    different sparsities. Biases are not pruned.

    Raises ValueError if `sparsity` is not in [0, 1) or `scope` is unknown.
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in ALLOCATIONS:
        raise ValueError(f"scope must be one of {ALLOCATIONS}, got {scope!r}")
    layers = block_linear_layers(model)
    if scope == "layer":
        for _, m in layers:
            torch_prune.l1_unstructured(m, "weight", amount=float(sparsity))
    else:
        torch_prune.global_unstructured([(m, "weight") for _, m in layers], torch_prune.L1Unstructured,
                                        amount=float(sparsity))
    return layers


def wanda_prune(model, sparsity: float, batches) -> list[tuple[str, torch.nn.Module]]:
    """Wanda (Sun et al. 2023): zero, in every output of every block linear layer, the fraction
    `sparsity` of its weights with the smallest score |W_ij| * ||X_j||_2, where ||X_j||_2 is the L2
    norm of input feature j over all calibration tokens (`batches`: LongTensors [batch, seq]).
    Weights are compared within one output (a row of `nn.Linear`'s weight [out, in], a column of
    GPT-2's `Conv1D` weight [in, out]), as the paper does; each output loses
    round(sparsity * in_features) weights. Masks are attached with
    `torch.nn.utils.prune.custom_from_mask` (call `make_permanent` before saving), so fine-tuning
    keeps pruned weights at zero. Biases are not pruned. Returns the pruned layers.

    Raises ValueError if `sparsity` is not in [0, 1).
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    layers = block_linear_layers(model)
    sq_norms: dict = {}
    hooks = []
    for name, layer in layers:
        def pre_hook(module, args, name=name):
            x = args[0].detach().float()
            sq_norms[name] = sq_norms.get(name, 0) + x.reshape(-1, x.shape[-1]).pow(2).sum(0)
        hooks.append(layer.register_forward_pre_hook(pre_hook))
    _calibration_pass(model, batches, hooks)
    for name, layer in layers:
        w = layer.weight.detach()
        norm = sq_norms[name].sqrt().to(w.device)
        conv1d = type(layer).__name__ == "Conv1D"  # weight [in, out]: inputs along dim 0
        inputs_dim = 0 if conv1d else 1
        score = w.abs().float() * (norm[:, None] if conv1d else norm[None, :])
        k = int(round(sparsity * w.shape[inputs_dim]))
        mask = torch.ones_like(w)
        if k:
            lowest = torch.topk(score, k, dim=inputs_dim, largest=False).indices
            mask.scatter_(inputs_dim, lowest, 0.0)
        torch_prune.custom_from_mask(layer, "weight", mask)
    return layers


def make_permanent(model) -> int:
    """Remove pruning re-parametrisations (weight_orig * weight_mask -> weight), in place.

    Saving with masks attached reloads with `weight` missing and randomly re-initialised; this
    makes the zeros part of the plain weight. Returns how many were made permanent.
    """
    n = 0
    for m in model.modules():
        if torch_prune.is_pruned(m):
            for hook in list(m._forward_pre_hooks.values()):
                if isinstance(hook, torch_prune.BasePruningMethod):
                    torch_prune.remove(m, hook._tensor_name)
                    n += 1
    return n


def sparsity_report(model) -> dict:
    """Zeros in the block linear weights: {"weights", "zeros", "sparsity", "per_layer": {name: sparsity}}."""
    per, total, zeros = {}, 0, 0
    for name, m in block_linear_layers(model):
        w = m.weight
        z = int((w == 0).sum())
        per[name] = z / w.numel()
        total += w.numel()
        zeros += z
    return {"weights": total, "zeros": zeros, "sparsity": zeros / max(1, total), "per_layer": per}


def sparse_storage_bytes(model) -> dict:
    """Bytes of the block linear weights stored dense against stored as CSR
    (`torch.Tensor.to_sparse_csr`: values + column indices + row pointers), and of the whole model
    if those weights were CSR and everything else dense. Unstructured sparsity saves memory only
    in such a format, and only above about two-thirds sparsity (a 64-bit column index per 32-bit value)."""
    dense = csr = 0
    for _, m in block_linear_layers(model):
        w = m.weight.detach()
        dense += w.numel() * w.element_size()
        with warnings.catch_warnings():  # "sparse CSR support is in beta": only its storage is used here
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            s = w.to_sparse_csr()
        csr += sum(t.numel() * t.element_size() for t in (s.values(), s.col_indices(), s.crow_indices()))
    other = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values()) - dense
    return {"block_weights_dense_bytes": dense, "block_weights_csr_bytes": csr,
            "model_dense_bytes": dense + other, "model_with_csr_bytes": csr + other}


# --------------------------------------------------------------------------------------------
# Width (MLP neurons) and depth (blocks)


def _calibration_pass(model, batches, hooks) -> int:
    """Run `model` without gradients on every calibration batch (the `hooks` already registered
    collect what they need), then remove the hooks, also on error. Returns the tokens seen."""
    device = next(model.parameters()).device
    n_tokens = 0
    try:
        with torch.no_grad():
            for batch in batches:
                model(input_ids=batch.to(device))
                n_tokens += batch.numel()
    finally:
        for h in hooks:
            h.remove()
    return n_tokens


def mlp_neuron_importance(model, batches) -> torch.Tensor:
    """Mean |activation| of every MLP neuron (input of the down projection), [n_layer, n_inner]."""
    sums = {}
    hooks = []
    for i, block in enumerate(blocks(model)):
        def pre_hook(module, args, i=i):
            x = args[0].detach().abs().float()
            sums[i] = sums.get(i, 0) + x.reshape(-1, x.shape[-1]).sum(0)
        hooks.append(mlp_down(model, block).register_forward_pre_hook(pre_hook))
    n_tokens = _calibration_pass(model, batches, hooks)
    return torch.stack([sums[i] / n_tokens for i in range(len(blocks(model)))]).cpu()


def block_importance(model, batches) -> torch.Tensor:
    """Block Importance of every block, [n_layer]: 1 - mean cosine similarity between the
    hidden state entering and leaving the block, over the calibration tokens (higher = the block
    changes its input more)."""
    sims: dict = {}
    hooks = []
    for i, block in enumerate(blocks(model)):
        def hook(module, args, kwargs, output, i=i):
            x_in = args[0] if args else kwargs["hidden_states"]
            x_out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(x_in.float(), x_out.float(), dim=-1)
            sims.setdefault(i, []).append(cos.reshape(-1))
        hooks.append(block.register_forward_hook(hook, with_kwargs=True))
    _calibration_pass(model, batches, hooks)
    return torch.tensor([1 - float(torch.cat(sims[i]).mean()) for i in range(len(blocks(model)))])


# --------------------------------------------------------------------------------------------
# Embedding channels (the hidden size of the residual stream)


def embedding_channel_importance(model, batches) -> torch.Tensor:
    """Importance of every embedding channel, [hidden]: the mean |output| of the channel in
    each LayerNorm / RMSNorm over the calibration tokens, summed over the norms (Minitron,
    Muralidharan et al. 2024: embedding channels are scored by their LayerNorm activations)."""
    sums = []
    hooks = []
    for norm in residual_norms(model):
        def hook(module, args, output):
            sums.append(output.detach().abs().float().reshape(-1, output.shape[-1]).sum(0))
        hooks.append(norm.register_forward_hook(hook))
    n_tokens = _calibration_pass(model, batches, hooks)
    return (torch.stack(sums).sum(0) / n_tokens).cpu()


# --------------------------------------------------------------------------------------------
# Valid pruned shapes: how many units each kind keeps, and the parameters that leaves


# --------------------------------------------------------------------------------------------
# Recipes, caching, save/reload


class PruningCriteria(Group):
    """How structures are ranked for pruning (the schema group of notebooks 03 and 04)."""

    head_importance: Literal["gradient", "magnitude"] = Field("gradient", description="head importance: "
                                                              "gradient (Michel et al. 2019) or weight magnitude")
    head_allocation: Literal["global", "layer"] = Field("global", description="heads removed by one global "
                                                        "ranking, or the same number in every layer")
    calibration_batches: int = Field(8, ge=1, description="batches of training text for importance scores")


_CRITERIA = PruningCriteria()


@dataclass(frozen=True)
class PruneConfig:
    """A pruning recipe. A structured kind removes units and is sized by `keep_ratio` (the fraction
    kept); an unstructured kind zeroes weights and is sized by `sparsity` (the fraction removed).
    Exactly the one that applies is set; the other is None.

    Attributes:
        kind: "heads", "mlp" (MLP neurons), "embedding" (embedding channels: the hidden size),
            "depth" (blocks) (structured); "magnitude", "wanda" (unstructured).
        keep_ratio: structured kinds: fraction of heads / MLP neurons / channels / blocks kept, in (0, 1].
        sparsity: unstructured kinds: fraction of block weights set to zero, in [0, 1).
        head_importance, head_allocation, calibration_batches: the `PruningCriteria` (their defaults).
        magnitude_scope: magnitude only: "layer" (each layer loses the same share, l1_unstructured)
            or "global" (one threshold, global_unstructured).
        calibration_batch_size, calibration_seq_len: calibration set size.
        finetune_tokens: token budget of post-pruning fine-tuning (0 = none); how it trains is the
            `finetune.FinetuneConfig` given to `get_pruned`.
        seed: calibration sampling and fine-tuning seed.

    Raises ValueError on construction for an unknown kind, a missing or out-of-range keep_ratio /
    sparsity, or the one of them that does not apply to the kind.
    """

    kind: str = "heads"
    keep_ratio: float | None = 0.9
    sparsity: float | None = None
    head_importance: str = _CRITERIA.head_importance
    head_allocation: str = _CRITERIA.head_allocation
    magnitude_scope: str = "layer"
    calibration_batches: int = _CRITERIA.calibration_batches
    calibration_batch_size: int = 8
    calibration_seq_len: int = 128
    finetune_tokens: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"pruning kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in UNSTRUCTURED:
            if self.keep_ratio is not None:
                raise ValueError(f"{self.kind} pruning is sized by sparsity (the fraction removed), not keep_ratio "
                                 f"(got keep_ratio={self.keep_ratio}); set keep_ratio=None")
            if self.sparsity is None or not 0 <= self.sparsity < 1:
                raise ValueError(f"{self.kind} pruning: sparsity must be in [0, 1), got {self.sparsity}")
        else:
            if self.sparsity is not None:
                raise ValueError(f"{self.kind} pruning is sized by keep_ratio (the fraction kept), not sparsity "
                                 f"(got sparsity={self.sparsity}); set sparsity=None")
            if self.keep_ratio is None or not 0 < self.keep_ratio <= 1:
                raise ValueError(f"{self.kind} pruning: keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if self.head_importance not in HEAD_IMPORTANCE:
            raise ValueError(f"head_importance must be one of {HEAD_IMPORTANCE}, got {self.head_importance!r}")
        for name in ("head_allocation", "magnitude_scope"):
            if getattr(self, name) not in ALLOCATIONS:
                raise ValueError(f"{name} must be one of {ALLOCATIONS}, got {getattr(self, name)!r}")
        if self.finetune_tokens < 0:
            raise ValueError(f"finetune_tokens must be >= 0, got {self.finetune_tokens}")
        for name in ("calibration_batches", "calibration_batch_size", "calibration_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_params(cls, params: dict, **changes) -> "PruneConfig":
        """From a notebook's resolved parameters: the `PruningCriteria` and `seed`, by their names;
        `changes` set the rest (kind, keep_ratio or sparsity, magnitude_scope, finetune_tokens)."""
        criteria = PruningCriteria.from_params(params).model_dump()
        return cls(**criteria, **({"seed": params["seed"]} if "seed" in params else {}), **changes)

    @classmethod
    def structured(cls, kind: str, keep_ratio: float, base: "PruneConfig | None" = None, **changes) -> "PruneConfig":
        """`base` (default settings when None) made a structured recipe: `kind` at `keep_ratio`."""
        return replace(base or cls(), kind=kind, keep_ratio=keep_ratio, sparsity=None, **changes)

    @classmethod
    def unstructured(cls, kind: str, sparsity: float, base: "PruneConfig | None" = None, **changes) -> "PruneConfig":
        """`base` (default settings when None) made an unstructured recipe: `kind` at `sparsity`."""
        return replace(base or cls(), kind=kind, keep_ratio=None, sparsity=sparsity, **changes)

    @property
    def percent(self) -> str:
        """The size as a name writes it: the keep ratio or the sparsity in percent (`percent_text`)."""
        return percent_text(self.sparsity if self.kind in UNSTRUCTURED else self.keep_ratio)

    @property
    def name(self) -> str:
        """Variant name: AH90 / AH80 (the paper's, keep ratios), MLP75, Depth67, Emb75 (keep ratios),
        Mag50 / GMag50 / Wanda50 (sparsities); +ft if fine-tuned."""
        pct = self.percent
        base = {"heads": f"AH{pct}", "magnitude": f"{'G' if self.magnitude_scope == 'global' else ''}Mag{pct}",
                "wanda": f"Wanda{pct}", "mlp": f"MLP{pct}", "depth": f"Depth{pct}", "embedding": f"Emb{pct}"}[self.kind]
        return base + ("+ft" if self.finetune_tokens else "")


def apply(model, config: PruneConfig, batches) -> dict:
    """Prune `model` in place by `config` using calibration `batches`; returns facts about the
    result (removed heads, importance scores, kept layers, reached sparsity). Magnitude masks are
    left attached (see `make_permanent`)."""
    facts: dict = {}
    if config.kind == "heads":
        scores = head_importance(model, batches, config.head_importance)
        remove = select_heads(scores, config.keep_ratio, config.head_allocation, kv_head_counts(model))
        units_before = sum(kv_head_counts(model))
        prune_heads(model, remove)
        facts.update(importance=scores.tolist(), removed_heads={str(k): v for k, v in remove.items()},
                     heads_per_layer=head_counts(model), kv_heads_per_layer=kv_head_counts(model),
                     kept_units=sum(kv_head_counts(model)), total_units=units_before)
    elif config.kind == "magnitude":
        magnitude_prune(model, config.sparsity, config.magnitude_scope)
        facts["sparsity"] = sparsity_report(model)["sparsity"]
    elif config.kind == "wanda":
        wanda_prune(model, config.sparsity, batches)
        facts["sparsity"] = sparsity_report(model)["sparsity"]
    elif config.kind == "mlp":
        scores = mlp_neuron_importance(model, batches)
        prune_mlp(model, config.keep_ratio, scores)
    elif config.kind == "embedding":
        scores = embedding_channel_importance(model, batches)
        prune_embedding_channels(model, config.keep_ratio, scores)
        facts.update(importance=scores.tolist(), hidden_size=adapter_for(model).hidden_size(model))
    else:
        scores = block_importance(model, batches)
        kept = prune_layers(model, kept_count(len(blocks(model)), config.keep_ratio), scores)
        facts.update(importance=scores.tolist(), kept_layers=kept)
    return facts


def get_pruned(parent: Artifact, config: PruneConfig, train_corpora, val_fraction: float = 0.05,
               device: str = "auto", progress: bool = True, finetuning: FinetuneConfig = FinetuneConfig()) -> Artifact:
    """The pruned (and optionally fine-tuned, by `finetune.finetune` with `finetuning`) variant of
    `parent`, built once and cached.

    The recipe's `cost` adds the calibration (importance) pass and the fine-tuning; `facts` holds
    the importance scores, removed heads / kept layers and the reached sparsity.
    """
    device = resolve_device(device)
    params = {"parent": parent.key, **{k: v for k, v in cache.as_params(config).items()},
              "corpora": list(train_corpora), "val_fraction": val_fraction,
              **({"finetuning": cache.as_params(finetuning)} if config.finetune_tokens else {})}

    def build(meter):
        model = load_artifact(parent.key, device=device).model if parent.path else parent.model
        batches = calibration_batches(parent.tokenizer, train_corpora, config.calibration_batches,
                                      config.calibration_batch_size, config.calibration_seq_len, config.seed)
        with meter.task("prune"):
            facts = apply(model, config, batches)
        history = None
        if config.finetune_tokens:  # the study's one fine-tuning step, as the control Base+ft<N> trains
            history = finetune(model, parent.tokenizer, train_corpora, config.finetune_tokens, finetuning,
                               seed=config.seed, val_fraction=val_fraction, device=device, progress=progress,
                               meter=meter, desc=f"fine-tune {config.name}").history
        make_permanent(model)
        if config.kind in UNSTRUCTURED:
            facts["sparsity"] = sparsity_report(model)["sparsity"]
        # saved with pruned_shape.json where the config cannot describe the shape (models.save_model)
        return Built(model.to("cpu"), parent.tokenizer, history=history, recipe={"facts": facts})

    return cached_step(f"prune-{config.kind}", params, build, device)


# ---- the registry's entries (compstudy.registry): one per pruning kind, its name token and its build

_PCT = r"(?P<pct>\d+(?:\.\d{1,3})?)"  # a percentage as names write it: 75, 81.25 (surgery.percent_text)


def _register(key: str, token_prefix: str, kind: str, scope: str = "layer", first_only: bool = False,
              description: str = "") -> None:
    structured = kind not in UNSTRUCTURED

    def parse(m, defaults):
        fraction = float(m.group("pct")) / 100
        base = defaults.prune if defaults is not None else PruneConfig()
        if structured:
            return PruneConfig.structured(kind, fraction, base, finetune_tokens=0)
        return PruneConfig.unstructured(kind, fraction, base, magnitude_scope=scope, finetune_tokens=0)

    def token(c, first):
        if kind == "heads" and not first:
            return c.percent
        return f"{token_prefix}{c.percent}"

    register(Technique(
        key=key, kind="prune", pattern=rf"{token_prefix}{_PCT}" if kind != "heads" else _PCT,
        first_pattern=rf"{token_prefix}{_PCT}" if kind == "heads" else None, config_type=PruneConfig,
        matches=lambda c: c.kind == kind and (kind != "magnitude" or c.magnitude_scope == scope),
        parse=parse, token=token,
        build=lambda parent, c, ctx: get_pruned(parent, c, ctx.corpora, device=ctx.device, progress=ctx.progress,
                                                finetuning=ctx.defaults.finetune),
        needs_gradients=lambda c: bool(c.finetune_tokens) or (c.kind == "heads" and c.head_importance == "gradient"),
        needs_calibration=kind != "magnitude", training_tokens=lambda c: int(c.finetune_tokens),
        compresses=lambda c: (c.keep_ratio < 1) if c.kind not in UNSTRUCTURED else (c.sparsity > 0),
        description=description))


_register("prune:heads", "AH", "heads", description="keep a share of the attention heads (key-value groups): AH90 first, 90 after another step")
_register("prune:mlp", "MLP", "mlp", description="keep a share of the MLP neurons (Minitron's activation importance)")
_register("prune:embedding", "Emb", "embedding", description="keep a share of the embedding channels")
_register("prune:depth", "Depth", "depth", description="keep a share of the blocks (Block Importance)")
_register("prune:magnitude", "Mag", "magnitude", "layer", description="zero a share of each layer's weights by |w|")
_register("prune:global-magnitude", "GMag", "magnitude", "global", description="zero a share of all block weights by |w|, one threshold")
_register("prune:wanda", "Wanda", "wanda", description="zero a share of each output's weights by |W| x ||X|| (Sun et al. 2023)")


# ---- random unstructured pruning: the control of every pruning criterion, added through the registry alone

@dataclass(frozen=True)
class RandomPruneConfig:
    """Random unstructured pruning (`Rand<pct>`): zero a random `sparsity` share of every block linear
    layer's weights (`torch.nn.utils.prune.random_unstructured`, seeded by `seed`). The baseline a
    pruning criterion must beat: the lottery-ticket and Wanda papers compare magnitude and Wanda with
    it (Frankle & Carbin 2019; Sun et al. 2023). Raises ValueError for a sparsity outside [0, 1)."""

    sparsity: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"random pruning: sparsity must be in [0, 1), got {self.sparsity}")


def random_prune(model, sparsity: float, seed: int = 0) -> list[tuple[str, torch.nn.Module]]:
    """Zero a random `sparsity` share of the weights of every block linear layer, masks made
    permanent; returns the pruned layers. Raises ValueError for a sparsity outside [0, 1)."""
    RandomPruneConfig(sparsity, seed)
    torch.manual_seed(seed)
    layers = block_linear_layers(model)
    for _, m in layers:
        torch_prune.random_unstructured(m, "weight", amount=float(sparsity))
    make_permanent(model)
    return layers


def get_random_pruned(parent: Artifact, config: RandomPruneConfig, device: str = "auto") -> Artifact:
    """The randomly pruned variant of `parent` (`random_prune`), built once and cached."""
    device = resolve_device(device)

    def build(meter):
        model = load_artifact(parent.key, device=device).model if parent.path else parent.model
        with meter.task("prune"):
            random_prune(model, config.sparsity, config.seed)
        return Built(model.to("cpu"), parent.tokenizer, recipe={"facts": {"sparsity": sparsity_report(model)["sparsity"]}})

    return cached_step("prune-random", {"parent": parent.key, **cache.as_params(config)}, build, device)


register(Technique(
    key="prune:random", kind="prune", pattern=rf"Rand{_PCT}", config_type=RandomPruneConfig,
    parse=lambda m, defaults: RandomPruneConfig(float(m.group("pct")) / 100, defaults.seed if defaults else 0),
    token=lambda c, first: f"Rand{percent_text(c.sparsity)}",
    build=lambda parent, c, ctx: get_random_pruned(parent, c, device=ctx.device),
    compresses=lambda c: c.sparsity > 0, description="zero a random share of each layer's weights: the criteria's control"))
