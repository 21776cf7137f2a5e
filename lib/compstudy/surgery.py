"""Model surgery: the structural slicing that removes attention heads (key-value groups), MLP
neurons, blocks and embedding channels physically, the valid pruned shapes (how many units a keep
ratio keeps, and the parameters that leaves), and the saving and reloading of shapes a config
cannot describe. What an architecture looks like comes from its family adapter
(`compstudy.families`); no importance criterion lives here (see `compstudy.prune`).

Why this is written here rather than with Torch-Pruning: `benchmarks/torch_pruning_coverage.py`
(results in `benchmarks/results/torch_pruning_coverage.json`) ran Torch-Pruning 1.6 on a tiny
checkpoint of every supported family. Pruning MLP channels through its dependency graph works on
8 of the 10 cases (not GPT-2, whose `Conv1D` layers it does not know, nor Phi-3, whose fused
`gate_up_proj` lost both halves' rows); its head pruning (`MetaPruner`, `prune_num_heads`, as its
LLM example) works on 6 (Llama with and without grouped-query attention, Mistral, Qwen2, Gemma,
OPT), not on GPT-2, Qwen3, Phi-3's fused or GPT-NeoX's interleaved query-key-value projections.
Using it for the covered families would leave two code paths for the same operation, and the
other families (among them GPT-2, the seed paper's architecture) need the hand-written one anyway;
the study's criteria (head importance per key-value group, Minitron's activation scores) decide
which units go, and the slicing they need is a few index ranges per projection layout
(`families.base`). So one path, driven by each family's `Anatomy`, covers every family, checked by
`tests/test_shapes_property.py` and `tests/test_families.py`; the benchmark stays, to look again
after an upgrade. A head-pruned layer also needs per-layer head counts that a transformers 5 config
cannot express (`pruned_shape.json` below), which Torch-Pruning does not provide.

Saving: width-, depth- and magnitude-pruned models have a uniform shape that `from_pretrained`
rebuilds from their config. Shapes a config cannot express are saved as their weights plus
`pruned_shape.json` (`shape_record`) and reloaded by `load_pruned` (which
`compstudy.models.load_artifact` calls), never by `from_pretrained` alone: head-pruned models
(different heads per layer; transformers 5 removed `prune_heads` and ignores
`config.pruned_heads`) and, in families whose head size is derived from the hidden size (GPT-2,
GPT-NeoX, OPT), models whose embedding channels were pruned.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .families import adapter_for

SHAPE_FILE = "pruned_shape.json"
STRUCTURES = ("heads", "mlp", "embedding", "depth", "magnitude", "wanda")  # what `predicted_parameters` counts


def blocks(model) -> torch.nn.ModuleList:
    """The transformer blocks (`families.Family.blocks`). Raises UnsupportedFamily."""
    return adapter_for(model).blocks(model)


def head_dim(model) -> int:
    return adapter_for(model).head_dim(model)


def head_counts(model) -> list[int]:
    """Query heads per layer, read from the weights (so pruned layers report their real count)."""
    fam, d = adapter_for(model), head_dim(model)
    return [fam.heads(b, d)[0] for b in fam.blocks(model)]


def kv_head_counts(model) -> list[int]:
    """Key-value heads per layer (= query heads without grouped-query attention): the units head
    pruning removes (`families.base`), read from the weights."""
    fam, d = adapter_for(model), head_dim(model)
    return [fam.heads(b, d)[1] for b in fam.blocks(model)]


def attention_output(model, block):
    """The attention output projection of `block`: its input is the heads' outputs, head after head."""
    return adapter_for(model).out_proj(block)


def mlp_down(model, block):
    """The MLP's output projection of `block`: its input features are the MLP neurons."""
    return adapter_for(model).mlp_down(block)


def residual_norms(model) -> list[torch.nn.Module]:
    """Every norm of the residual stream: two per block (one in GPT-NeoX's parallel blocks too) and
    the final one."""
    return adapter_for(model).residual_norms(model)


def block_linear_layers(model) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every linear layer (nn.Linear or GPT-2 Conv1D) inside the blocks."""
    return adapter_for(model).block_linear_layers(model)


def prune_heads(model, heads_to_remove: dict[int, list[int]]):
    """Physically remove attention heads, in place: {layer: [key-value group, ...]}. A group is one
    key and one value head with the query heads that read them (one query head under multi-head
    attention, where groups are heads); its q / k / v output rows and output-projection input
    columns are sliced out (`families.Family.remove_kv_groups`). Returns the model.

    Raises ValueError before changing anything if a layer or group index does not exist or a layer
    would lose all its heads; UnsupportedFamily for a family without an adapter.
    """
    fam, d = adapter_for(model), head_dim(model)
    counts = kv_head_counts(model)
    heads_to_remove = {int(k): sorted(set(int(h) for h in v)) for k, v in heads_to_remove.items()}
    for layer, heads in heads_to_remove.items():
        if not 0 <= layer < len(counts):
            raise ValueError(f"layer {layer} does not exist (the model has {len(counts)} layers)")
        bad = [h for h in heads if not 0 <= h < counts[layer]]
        if bad:
            raise ValueError(f"layer {layer} has {counts[layer]} key-value groups; no group {bad}")
        if len(heads) >= counts[layer]:
            raise ValueError(f"removing every head of layer {layer} ({counts[layer]} key-value groups) is not allowed")
    for layer, heads in heads_to_remove.items():
        if heads:
            fam.remove_kv_groups(fam.blocks(model)[layer], [h for h in range(counts[layer]) if h not in heads], d)
    return model


def prune_mlp(model, keep: float, importance: torch.Tensor):
    """Keep the `kept_count(n_inner, keep)` most important MLP neurons in every block (the same
    number everywhere, so the config describes the result), in place. `importance`: [n_layer,
    n_inner]. Returns the model.

    Raises ValueError if `keep` is not in (0, 1].
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep}")
    fam = adapter_for(model)
    n_inner = importance.shape[1]
    n_keep = kept_count(n_inner, keep)
    for i, block in enumerate(fam.blocks(model)):
        fam.prune_mlp(block, importance[i].argsort(descending=True)[:n_keep].sort().values)
    setattr(model.config, fam.anatomy.intermediate, n_keep)
    return model


def prune_layers(model, n_keep: int, importance: torch.Tensor) -> list[int]:
    """Keep the `n_keep` blocks of highest importance ([n_layer]), in their order, in place.
    Returns the kept blocks' original indices.

    Raises ValueError if `n_keep` is not in [1, n_layer].
    """
    fam = adapter_for(model)
    n = len(fam.blocks(model))
    if not 1 <= n_keep <= n:
        raise ValueError(f"n_keep must be in [1, {n}], got {n_keep}")
    keep = sorted(importance.argsort(descending=True)[:n_keep].tolist())
    fam.set_blocks(model, keep)
    return keep


def residual_stream_layers(model) -> list[tuple[str, torch.nn.Module]]:
    """Every module whose weights touch the residual stream, with its role (`embedding`, `norm`,
    `reads`, `writes`; `families.Family.residual_stream_layers`)."""
    return adapter_for(model).residual_stream_layers(model)


def params_per_embedding_channel(model) -> int:
    """Parameters removed with each embedding channel: a row of every embedding table, the
    channel's weight (and bias) in every norm, one input column of every layer reading the
    residual stream, one output row (and bias) of every layer writing it."""
    return adapter_for(model).params_per_embedding_channel(model)


def prune_embedding_channels(model, keep: float, importance: torch.Tensor):
    """Keep the `kept_count(hidden, keep, embedding_channel_multiple(model))` most important
    embedding channels, in place (a shape the architecture accepts): the residual stream, every
    embedding table, norm, and the matching column / row of every layer that reads or writes it
    shrink (`residual_stream_layers`); attention heads and MLP neurons keep their sizes. The norms
    then normalise over the kept channels only, so outputs change even for the kept ones:
    Minitron distils afterwards (`KD`). Returns the model.

    The config's hidden size becomes the kept width. Families with an explicit head size (Llama,
    Mistral, Qwen, Gemma, Phi-3) are still described by their config; in the others (GPT-2,
    GPT-NeoX, OPT) the attention width is recorded in `pruned_shape.json` by `models.save_model`.

    Raises ValueError if `keep` is not in (0, 1] or `importance` does not have one score per channel.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep}")
    fam = adapter_for(model)
    hidden = fam.hidden_size(model)
    if tuple(importance.shape) != (hidden,):
        raise ValueError(f"importance must have shape ({hidden},), got {tuple(importance.shape)}")
    n_keep = kept_count(hidden, keep, embedding_channel_multiple(model))
    fam.slice_residual_stream(model, importance.argsort(descending=True)[:n_keep].sort().values)
    return model


def kept_count(total: int, keep: float, multiple: int = 1, minimum: int = 1) -> int:
    """Units kept when a fraction `keep` of `total` units (heads, MLP neurons, channels, blocks)
    is kept: `keep * total` rounded to the nearest multiple of `multiple` (halves up), at least
    the smallest multiple >= `minimum`, at most `total`. Every pruning kind counts through this
    one function, so a name's percentage always maps to the same shape.

    Raises ValueError if `keep` is not in (0, 1], `total` < 1 or `multiple` < 1.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep}")
    if total < 1 or multiple < 1:
        raise ValueError(f"total and multiple must be >= 1, got total={total}, multiple={multiple}")
    n = math.floor(keep * total / multiple + 0.5) * multiple
    smallest = multiple * math.ceil(max(minimum, 1) / multiple)
    return min(total, max(n, smallest))


def percent_text(fraction: float) -> str:
    """`100 * fraction` as it appears in a variant name: a whole number when it is one (`75`),
    else with up to three decimals and no trailing zeros (`81.25`)."""
    text = f"{round(100 * fraction, 3):.3f}".rstrip("0").rstrip(".")
    return text


def percent_for(kept: int, total: int, multiple: int = 1, minimum: int = 1) -> str:
    """The shortest percentage text (0 to 3 decimals) whose fraction gives back exactly `kept`
    units through `kept_count`: what a name records after rounding to a valid shape.

    Raises ValueError if no percentage with 3 decimals reaches `kept` (not a reachable count).
    """
    for digits in range(4):
        pct = round(100 * kept / total, digits)
        if 0 < pct <= 100 and kept_count(total, pct / 100, multiple, minimum) == kept:
            return percent_text(pct / 100)
    raise ValueError(f"{kept} of {total} units (multiple {multiple}) cannot be reached by a keep fraction")


def embedding_channel_multiple(model) -> int:
    """Embedding-channel counts the architecture accepts are multiples of this
    (`families.Family.embedding_channel_multiple`): the number of attention heads where the config
    validates `hidden_size % num_attention_heads == 0` (Llama, GPT-NeoX), else 1."""
    return adapter_for(model).embedding_channel_multiple(model)


def params_per_head(model) -> int:
    """Parameters removed with one unit of head pruning: a key-value group (its query heads' q rows,
    its key and value rows, with biases, and the query heads' columns of the output projection;
    one head's q, k, v rows and o columns under multi-head attention). The same in every layer."""
    return adapter_for(model).params_per_kv_group(model)


def params_per_mlp_neuron(model, hidden: int | None = None) -> int:
    """Parameters removed with one MLP neuron (in every block: multiply by the layers): a row
    (and bias) of each MLP input projection (GPT-2 `c_fc`; Llama gate and up; Phi-3's fused
    gate_up twice) and a column of the down projection. `hidden` defaults to the model's residual
    width (give it to count for a narrower residual stream, after embedding-channel pruning)."""
    return adapter_for(model).params_per_mlp_neuron(model, hidden)


def _n_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _mlp_width(model) -> int:
    fam = adapter_for(model)
    return fam.mlp_width(fam.blocks(model)[0])


def predicted_parameters(model, kind: str, keep_ratio: float | None, head_allocation: str = "global") -> int:
    """Parameters `model` will have after pruning by `kind` with `keep_ratio` (ignored, and may be
    None, for the unstructured kinds, which zero weights and remove none), computed from the shape
    alone (the importance decides which units go, not how many): the check that pruning produced
    the shape it reports. Head pruning counts key-value groups (`kv_head_counts`).

    Raises ValueError for an unknown kind, or for depth pruning of blocks of different sizes.
    """
    n = _n_params(model)
    if kind in ("magnitude", "wanda"):  # unstructured: weights are zeroed, none removed
        return n
    if kind == "heads":
        counts = kv_head_counts(model)
        if head_allocation == "layer":
            kept = sum(kept_count(c, keep_ratio) for c in counts)
        else:
            kept = kept_count(sum(counts), keep_ratio, minimum=len(counts))
        return n - (sum(counts) - kept) * params_per_head(model)
    if kind == "mlp":
        n_inner = _mlp_width(model)
        removed = n_inner - kept_count(n_inner, keep_ratio)
        return n - removed * len(blocks(model)) * params_per_mlp_neuron(model)
    if kind == "embedding":
        hidden = adapter_for(model).hidden_size(model)
        removed = hidden - kept_count(hidden, keep_ratio, embedding_channel_multiple(model))
        return n - removed * params_per_embedding_channel(model)
    if kind == "depth":
        sizes = {sum(p.numel() for p in b.parameters()) for b in blocks(model)}
        if len(sizes) != 1:
            raise ValueError("depth pruning of blocks of different sizes: the count depends on which blocks go")
        return n - (len(blocks(model)) - kept_count(len(blocks(model)), keep_ratio)) * sizes.pop()
    raise ValueError(f"pruning kind must be one of {STRUCTURES}, got {kind!r}")


WIDTH_RECIPES = ("MLP", "Emb", "Emb+MLP")


@dataclass(frozen=True)
class WidthPlan:
    """A Minitron width pruning sized to remove a given number of parameters.

    Attributes:
        recipe: one of `WIDTH_RECIPES`.
        name: its pipeline name with the percentages actually reached, e.g. `Emb81.25+MLP55.37`.
        steps: ((kind, keep ratio), ...) in the order they are applied (kinds "embedding", "mlp").
        n_params: the parameter count after pruning (exact: computed from the valid shape).
        target_n_params: the count that was asked for.
    """

    recipe: str
    name: str
    steps: tuple
    n_params: int
    target_n_params: int

    @property
    def residual(self) -> int:
        """n_params - target_n_params: what valid shapes could not match, in parameters."""
        return self.n_params - self.target_n_params


def _mlp_neurons_for(model, n_params_removed: int, hidden: int) -> int:
    """MLP neurons kept per block to remove closest to `n_params_removed` (at least one kept)."""
    n_inner, n_layer = _mlp_width(model), len(blocks(model))
    per = n_layer * params_per_mlp_neuron(model, hidden)
    removed = min(n_inner - 1, max(0, math.floor(n_params_removed / per + 0.5)))
    return n_inner - removed


def _channels_for(model, n_params_removed: int) -> int:
    """Embedding channels kept (a valid multiple) to remove closest to `n_params_removed`."""
    hidden, m = adapter_for(model).hidden_size(model), embedding_channel_multiple(model)
    per = params_per_embedding_channel(model)
    return kept_count(hidden, max(1e-9, min(1.0, (hidden - n_params_removed / per) / hidden)), m)


def width_plan(model, n_params_removed: int, recipe: str) -> WidthPlan:
    """The width pruning of `model` that removes as close to `n_params_removed` parameters as
    valid shapes allow, to compare width with depth at equal parameter count (Minitron,
    Muralidharan et al. 2024, compares both axes at a fixed budget):

    - `MLP`: MLP neurons only, the same number in every block;
    - `Emb`: embedding channels only (a multiple of `embedding_channel_multiple`);
    - `Emb+MLP`: about half through embedding channels, the rest through the MLP neurons of
      the narrowed model.

    Computed from the shape alone (nothing is built). The name records the percentages reached
    (`percent_for`), so parsing it gives back exactly this shape.

    Raises ValueError for an unknown recipe or a count outside [0, parameters of the model).
    """
    if recipe not in WIDTH_RECIPES:
        raise ValueError(f"width recipe {recipe!r} unknown; allowed: {WIDTH_RECIPES}")
    n = _n_params(model)
    if not 0 <= n_params_removed < n:
        raise ValueError(f"n_params_removed must be in [0, {n}) for this model, got {n_params_removed}")
    hidden, m = adapter_for(model).hidden_size(model), embedding_channel_multiple(model)
    n_inner, n_layer = _mlp_width(model), len(blocks(model))
    steps, tokens, removed = [], [], 0
    if recipe in ("Emb", "Emb+MLP"):
        share = n_params_removed if recipe == "Emb" else n_params_removed // 2
        kept_e = _channels_for(model, share)
        if kept_e < hidden:
            steps.append(("embedding", kept_e / hidden))
            tokens.append(f"Emb{percent_for(kept_e, hidden, m)}")
            removed += (hidden - kept_e) * params_per_embedding_channel(model)
        hidden = kept_e
    if recipe in ("MLP", "Emb+MLP"):
        kept_m = _mlp_neurons_for(model, n_params_removed - removed, hidden)
        if kept_m < n_inner:
            steps.append(("mlp", kept_m / n_inner))
            tokens.append(f"MLP{percent_for(kept_m, n_inner)}")
            removed += (n_inner - kept_m) * n_layer * params_per_mlp_neuron(model, hidden)
    name = "+".join(tokens) or "Base"
    return WidthPlan(recipe, name, tuple(steps), n - removed, n - n_params_removed)


def shape_record(model) -> dict | None:
    """What a pruned model's config cannot describe, or None when `from_pretrained` rebuilds it
    from the config alone: `heads_per_layer` and `kv_heads_per_layer` (heads differ per layer after
    head pruning: transformers 5 removed `prune_heads` and ignores `config.pruned_heads`) and, in a
    family whose head size is derived from the hidden size, `attention_width` when it differs
    from the hidden size (after embedding-channel pruning). Raises UnsupportedFamily."""
    fam = adapter_for(model)
    n_q_config, n_kv_config = fam.config_heads(model.config)
    counts, kv = head_counts(model), kv_head_counts(model)
    attention_width = n_q_config * head_dim(model)
    width_differs = fam.attention_width_is_derived() and attention_width != fam.hidden_size(model)
    if all(k == n_q_config for k in counts) and all(k == n_kv_config for k in kv) and not width_differs:
        return None
    record = {"heads_per_layer": counts, "kv_heads_per_layer": kv}
    if width_differs:
        record["attention_width"] = attention_width
    return record


def build_pruned_shape(config, record: dict):
    """A randomly initialised model of a pruned shape: the architecture `config` describes (built
    with the recorded attention width where the family derives it from the hidden size), cut to
    `record["kv_heads_per_layer"]` key-value groups (older records: `heads_per_layer`, multi-head
    attention) and to the config's hidden size. Used to reload pruned checkpoints (`load_pruned`)
    and to train a pruned shape from scratch (`pipeline.scratch_like`).

    Raises ValueError if the record asks for more heads than the config has."""
    from transformers import AutoModelForCausalLM

    fam = adapter_for(config)
    full = config.__class__.from_dict(config.to_dict())
    hidden = int(getattr(config, fam.anatomy.hidden))
    if record.get("attention_width"):
        fam.config_for_attention_width(full, int(record["attention_width"]))
    model = AutoModelForCausalLM.from_config(full)
    counts = kv_head_counts(model)
    kept = record.get("kv_heads_per_layer", record.get("heads_per_layer", counts))
    if len(kept) != len(counts) or any(k > n for k, n in zip(kept, counts)):
        raise ValueError(f"kv_heads_per_layer {kept} does not fit the config ({counts} key-value heads per layer)")
    prune_heads(model, {i: list(range(k, n)) for i, (k, n) in enumerate(zip(kept, counts)) if k < n})
    if fam.hidden_size(model) != hidden:
        fam.slice_residual_stream(model, torch.arange(hidden))
    return model


def load_pruned(folder: str | Path, device: str = "cpu", dtype: torch.dtype | None = None):
    """Reload a model saved with a `pruned_shape.json` (see `shape_record`): build its shape
    (`build_pruned_shape`; only the shapes matter, the weights come next), then load the saved
    weights (strict, except the LM head tied to the input embedding), in `dtype` (default the
    saved weights' own).

    Raises RuntimeError naming the missing, unexpected and mismatched tensors if the saved weights
    do not match the recorded shape."""
    from safetensors.torch import load_model as load_safetensors
    from transformers import AutoConfig

    folder = Path(folder)
    config = AutoConfig.from_pretrained(str(folder))
    model = build_pruned_shape(config, json.loads((folder / SHAPE_FILE).read_text()))
    try:
        missing, unexpected = load_safetensors(model, str(folder / "model.safetensors"), strict=False)
    except RuntimeError as exc:  # a tensor of another shape than the recorded one
        raise RuntimeError(f"pruned checkpoint {folder} does not match its recorded shape: {exc}") from None
    if missing or unexpected:
        raise RuntimeError(f"pruned checkpoint {folder} does not match: missing {sorted(missing)}, "
                           f"unexpected {sorted(unexpected)}")
    model.tie_weights()
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval()
