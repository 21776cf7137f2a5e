"""Model surgery: the anatomy of GPT-2 and Llama models, the structural slicing that removes
attention heads, MLP neurons, blocks and embedding channels physically, the valid pruned shapes
(how many units a keep ratio keeps, and the parameters that leaves), and the saving and reloading
of shapes a config cannot describe. No importance criterion lives here (see `compstudy.prune`).

Why this is written here rather than with Torch-Pruning (pinned, unused, until issue 14; removed
from the dependencies since): `benchmarks/torch_pruning_coverage.py` (results in
`benchmarks/results/torch_pruning_coverage.json`) built Torch-Pruning 1.6.1's dependency graph with
transformers 5.23 and pruned three MLP channels of block 0. On Llama it works; on GPT-2 the graph
fails (`TypeError` in `torch_pruning/dependency/index_mapping.py`: GPT-2's layers are transformers'
`Conv1D`, weight [in, out], which it does not know, and q, k, v share one `c_attn`). A head-pruned
layer also needs per-layer head counts that a transformers 5 config cannot express
(`pruned_shape.json` below). One hand-written path for both families, its shapes checked by
`tests/test_shapes_property.py`, is smaller than two.

Saving: width-, depth- and magnitude-pruned models have a uniform shape that `from_pretrained`
rebuilds from their config. Two shapes a config cannot express are saved as their weights plus
`pruned_shape.json` (`shape_record`) and reloaded by `load_pruned` (which
`compstudy.models.load_artifact` calls), never by `from_pretrained` alone: head-pruned models
(different heads per layer; transformers 5 removed `prune_heads` and ignores
`config.pruned_heads`) and GPT-2 models whose embedding channels were pruned (GPT-2 ties the
attention width to n_embd).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

SHAPE_FILE = "pruned_shape.json"
STRUCTURES = ("heads", "mlp", "embedding", "depth", "magnitude", "wanda")  # what `predicted_parameters` counts


def blocks(model) -> torch.nn.ModuleList:
    """The transformer blocks: `transformer.h` (GPT-2) or `model.layers` (Llama)."""
    if hasattr(model, "transformer"):
        return model.transformer.h
    if hasattr(model, "model") and hasattr(model.model, "layers"):
        return model.model.layers
    raise ValueError(f"pruning supports GPT-2 and Llama models, not {type(model).__name__}")


def _attn(block):
    return block.attn if hasattr(block, "attn") else block.self_attn


def _out_proj(block):
    a = _attn(block)
    return a.c_proj if hasattr(a, "c_proj") else a.o_proj


def _mlp_down(block):
    return block.mlp.c_proj if hasattr(block.mlp, "c_proj") else block.mlp.down_proj


def _mlp_up(block):
    return block.mlp.c_fc if hasattr(block.mlp, "c_fc") else block.mlp.up_proj


def head_dim(model) -> int:
    return getattr(_attn(blocks(model)[0]), "head_dim")


def head_counts(model) -> list[int]:
    """Heads per layer, read from the weights (so pruned layers report their real count)."""
    d = head_dim(model)
    return [_in_features(_out_proj(b)) // d for b in blocks(model)]


def _in_features(layer) -> int:
    if type(layer).__name__ == "Conv1D":  # weight [in, out]
        return layer.weight.shape[0]
    return layer.in_features  # nn.Linear and the bitsandbytes layers (their packed weights hide it)


def _out_features(layer) -> int:
    return layer.weight.shape[1] if type(layer).__name__ == "Conv1D" else layer.out_features


def block_linear_layers(model) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every linear layer (nn.Linear or GPT-2 Conv1D) inside the blocks."""
    out = []
    for i, block in enumerate(blocks(model)):
        for name, m in block.named_modules():
            if type(m).__name__ in ("Linear", "Conv1D"):
                out.append((f"block{i}.{name}", m))
    return out


def _check_family(model):
    blocks(model)
    c = model.config
    if getattr(c, "num_key_value_heads", None) not in (None, getattr(c, "num_attention_heads", None)):
        raise ValueError("head pruning of grouped-query attention (num_key_value_heads < num_attention_heads) "
                         "is not supported")


def prune_heads(model, heads_to_remove: dict[int, list[int]]):
    """Physically remove attention heads, in place: q/k/v output rows and output-projection
    input columns of each removed head are sliced out. Returns the model.

    Raises ValueError before changing anything if a layer or head index does not exist or a
    layer would lose all its heads.
    """
    _check_family(model)
    counts, d = head_counts(model), head_dim(model)
    heads_to_remove = {int(k): sorted(set(int(h) for h in v)) for k, v in heads_to_remove.items()}
    for layer, heads in heads_to_remove.items():
        if not 0 <= layer < len(counts):
            raise ValueError(f"layer {layer} does not exist (the model has {len(counts)} layers)")
        bad = [h for h in heads if not 0 <= h < counts[layer]]
        if bad:
            raise ValueError(f"layer {layer} has {counts[layer]} heads; no head {bad}")
        if len(heads) >= counts[layer]:
            raise ValueError(f"removing every head of layer {layer} ({counts[layer]} heads) is not allowed")
    for layer, heads in heads_to_remove.items():
        if not heads:
            continue
        block = blocks(model)[layer]
        keep_heads = [h for h in range(counts[layer]) if h not in heads]
        idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep_heads])
        a = _attn(block)
        if hasattr(a, "c_attn"):
            e = counts[layer] * d
            qkv_idx = torch.cat([idx, idx + e, idx + 2 * e])
            _slice_conv1d(a.c_attn, out_idx=qkv_idx)
            _slice_conv1d(a.c_proj, in_idx=idx)
            a.num_heads, a.split_size = len(keep_heads), len(keep_heads) * d
        else:
            for p in (a.q_proj, a.k_proj, a.v_proj):
                _slice_linear(p, out_idx=idx)
            _slice_linear(a.o_proj, in_idx=idx)
    return model


def _slice_conv1d(layer, out_idx=None, in_idx=None):
    """GPT-2 Conv1D (weight [in, out], bias [out])."""
    with torch.no_grad():
        w = layer.weight
        if out_idx is not None:
            w = w[:, out_idx]
            layer.bias = torch.nn.Parameter(layer.bias[out_idx].clone())
            layer.nf = len(out_idx)
        if in_idx is not None:
            w = w[in_idx, :]
            layer.nx = len(in_idx)
        layer.weight = torch.nn.Parameter(w.clone())


def _slice_linear(layer, out_idx=None, in_idx=None):
    """nn.Linear (weight [out, in], bias [out])."""
    with torch.no_grad():
        w = layer.weight
        if out_idx is not None:
            w = w[out_idx, :]
            if layer.bias is not None:
                layer.bias = torch.nn.Parameter(layer.bias[out_idx].clone())
            layer.out_features = len(out_idx)
        if in_idx is not None:
            w = w[:, in_idx]
            layer.in_features = len(in_idx)
        layer.weight = torch.nn.Parameter(w.clone())


def prune_mlp(model, keep: float, importance: torch.Tensor):
    """Keep the `kept_count(n_inner, keep)` most important MLP neurons in every block (the same
    number everywhere, so the config describes the result), in place. Returns the model.

    Raises ValueError if `keep` is not in (0, 1].
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep}")
    n_inner = importance.shape[1]
    n_keep = kept_count(n_inner, keep)
    for i, block in enumerate(blocks(model)):
        idx = importance[i].argsort(descending=True)[:n_keep].sort().values
        mlp = block.mlp
        if hasattr(mlp, "c_fc"):
            _slice_conv1d(mlp.c_fc, out_idx=idx)
            _slice_conv1d(mlp.c_proj, in_idx=idx)
        else:
            _slice_linear(mlp.gate_proj, out_idx=idx)
            _slice_linear(mlp.up_proj, out_idx=idx)
            _slice_linear(mlp.down_proj, in_idx=idx)
    if hasattr(model.config, "n_inner"):
        model.config.n_inner = n_keep
    else:
        model.config.intermediate_size = n_keep
    return model


def prune_layers(model, n_keep: int, importance: torch.Tensor):
    """Keep the `n_keep` blocks of highest importance (in their order), in place. Returns the model.

    Raises ValueError if `n_keep` is not in [1, n_layer].
    """
    n = len(blocks(model))
    if not 1 <= n_keep <= n:
        raise ValueError(f"n_keep must be in [1, {n}], got {n_keep}")
    keep = sorted(importance.argsort(descending=True)[:n_keep].tolist())
    kept = torch.nn.ModuleList([blocks(model)[i] for i in keep])
    for new_i, block in enumerate(kept):
        _attn(block).layer_idx = new_i
    if hasattr(model, "transformer"):
        model.transformer.h = kept
        model.config.n_layer = n_keep
    else:
        model.model.layers = kept
        model.config.num_hidden_layers = n_keep
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = [model.config.layer_types[i] for i in keep]
    model._compstudy_kept_layers = keep
    return model


def _norm_layers(model) -> list[torch.nn.Module]:
    """Every LayerNorm (GPT-2) or RMSNorm (Llama) of the model: two per block and the final one."""
    return [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm) or type(m).__name__.endswith("RMSNorm")]


def residual_stream_layers(model) -> list[tuple[str, torch.nn.Module]]:
    """Every module whose weights touch the residual stream, with its role, in model order:
    `embedding` (token and, for GPT-2, position tables: weight [rows, hidden]), `norm`
    (LayerNorm / RMSNorm), `reads` (a linear layer whose input is the residual stream: q/k/v,
    MLP up / gate, and an untied LM head) and `writes` (one whose output is added to it: the
    attention output projection and the MLP down projection). Pruning an embedding channel
    removes one column / row / entry of each. A tied LM head shares the token table and is not
    listed twice."""
    is_gpt2 = hasattr(model, "transformer")
    inner = model.transformer if is_gpt2 else model.model
    out = [("embedding", model.get_input_embeddings())]
    if is_gpt2:
        out.append(("embedding", inner.wpe))
    for block in blocks(model):
        a, mlp = _attn(block), block.mlp
        if is_gpt2:
            out += [("norm", block.ln_1), ("reads", a.c_attn), ("writes", a.c_proj),
                    ("norm", block.ln_2), ("reads", mlp.c_fc), ("writes", mlp.c_proj)]
        else:
            out += [("norm", block.input_layernorm), ("reads", a.q_proj), ("reads", a.k_proj), ("reads", a.v_proj),
                    ("writes", a.o_proj), ("norm", block.post_attention_layernorm), ("reads", mlp.gate_proj),
                    ("reads", mlp.up_proj), ("writes", mlp.down_proj)]
    out.append(("norm", inner.ln_f if is_gpt2 else inner.norm))
    head = model.get_output_embeddings()
    if head.weight is not model.get_input_embeddings().weight:
        out.append(("reads", head))
    return out


def params_per_embedding_channel(model) -> int:
    """Parameters removed with each embedding channel: a row of every embedding table, the
    channel's weight (and bias) in every norm, one input column of every layer reading the
    residual stream, one output row (and bias) of every layer writing it."""
    n = 0
    for role, m in residual_stream_layers(model):
        if role == "embedding":
            n += m.weight.shape[0]
        elif role == "norm":
            n += 1 + (getattr(m, "bias", None) is not None)
        elif role == "reads":
            n += _out_features(m)
        else:
            n += _in_features(m) + (m.bias is not None)
    return n


def prune_embedding_channels(model, keep: float, importance: torch.Tensor):
    """Keep the `kept_count(hidden, keep, embedding_channel_multiple(model))` most important
    embedding channels, in place (a shape the architecture accepts, see
    `embedding_channel_multiple`): the residual
    stream, every embedding table, norm, and the matching column / row of every layer that reads
    or writes it shrink (`residual_stream_layers`); attention heads and MLP neurons keep their
    sizes. The norms then normalise over the kept channels only, so outputs change even for the
    kept ones: Minitron distils afterwards (`KD`). Returns the model.

    The config's hidden size becomes the kept width. A Llama config then still describes the
    model (its head_dim is explicit); a GPT-2 config cannot (GPT-2 ties the attention width to
    n_embd), so `models.save_model` records the attention width in `pruned_shape.json`.

    Raises ValueError if `keep` is not in (0, 1] or `importance` does not have one score per channel.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep}")
    hidden = model.config.hidden_size
    if tuple(importance.shape) != (hidden,):
        raise ValueError(f"importance must have shape ({hidden},), got {tuple(importance.shape)}")
    n_keep = kept_count(hidden, keep, embedding_channel_multiple(model))
    idx = importance.argsort(descending=True)[:n_keep].sort().values
    _slice_residual_stream(model, idx)
    return model


def _slice_residual_stream(model, idx: torch.Tensor) -> None:
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    inner_size = _out_features(_mlp_up(blocks(model)[0]))
    head_dim_ = head_dim(model)
    with torch.no_grad():
        for role, m in residual_stream_layers(model):
            if role == "embedding":
                m.weight = torch.nn.Parameter(m.weight[:, idx].clone())
                m.embedding_dim = len(idx)
            elif role == "norm":
                m.weight = torch.nn.Parameter(m.weight[idx].clone())
                if getattr(m, "bias", None) is not None:
                    m.bias = torch.nn.Parameter(m.bias[idx].clone())
                if hasattr(m, "normalized_shape"):
                    m.normalized_shape = (len(idx),)
            else:
                slicer = _slice_conv1d if type(m).__name__ == "Conv1D" else _slice_linear
                slicer(m, in_idx=idx) if role == "reads" else slicer(m, out_idx=idx)
    if tied:
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
        model.get_output_embeddings().in_features = len(idx)
    c = model.config
    if hasattr(c, "n_inner"):
        c.n_embd, c.n_inner = len(idx), inner_size
    else:
        c.hidden_size, c.head_dim = len(idx), head_dim_


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
    """Embedding-channel counts the architecture accepts are multiples of this. Llama: the
    number of attention heads (transformers validates `hidden_size % num_attention_heads == 0`;
    `head_dim` stays explicit, so the attention width stays apart from the residual width, as in
    Minitron). GPT-2: 1 (its attention width is recorded in `pruned_shape.json`)."""
    if getattr(model.config, "model_type", None) == "gpt2":
        return 1
    return int(model.config.num_attention_heads)


def params_per_head(model) -> int:
    """Parameters removed with one attention head: its q, k, v rows (and biases) and its columns
    of the output projection. The same in every layer."""
    a, d = _attn(blocks(model)[0]), head_dim(model)
    if hasattr(a, "c_attn"):  # GPT-2: c_attn [hidden, 3 * width] + bias, c_proj [width, hidden]
        return 3 * d * (a.c_attn.weight.shape[0] + 1) + d * a.c_proj.weight.shape[1]
    n = 0
    for p in (a.q_proj, a.k_proj, a.v_proj):
        n += d * (p.in_features + (p.bias is not None))
    return n + d * a.o_proj.out_features


def params_per_mlp_neuron(model, hidden: int | None = None) -> int:
    """Parameters removed with one MLP neuron (in every block: multiply by the layers): GPT-2
    `2 * hidden + 1` (c_fc column and bias, c_proj row); Llama `3 * hidden` (gate, up, down; plus
    biases when the config has them). `hidden` defaults to the model's residual width (give it
    to count for a narrower residual stream, after embedding-channel pruning)."""
    hidden = model.config.hidden_size if hidden is None else hidden
    mlp = blocks(model)[0].mlp
    if hasattr(mlp, "c_fc"):
        return 2 * hidden + 1
    return 3 * hidden + (mlp.gate_proj.bias is not None) + (mlp.up_proj.bias is not None)


def _n_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def predicted_parameters(model, kind: str, keep_ratio: float | None, head_allocation: str = "global") -> int:
    """Parameters `model` will have after pruning by `kind` with `keep_ratio` (ignored, and may be
    None, for the unstructured kinds, which zero weights and remove none), computed from the shape
    alone (the importance decides which units go, not how many): the check that pruning produced
    the shape it reports.

    Raises ValueError for an unknown kind, or for depth pruning of blocks of different sizes.
    """
    n = _n_params(model)
    if kind in ("magnitude", "wanda"):  # unstructured: weights are zeroed, none removed
        return n
    if kind == "heads":
        counts = head_counts(model)
        if head_allocation == "layer":
            kept = sum(kept_count(c, keep_ratio) for c in counts)
        else:
            kept = kept_count(sum(counts), keep_ratio, minimum=len(counts))
        return n - (sum(counts) - kept) * params_per_head(model)
    if kind == "mlp":
        n_inner = _in_features(_mlp_down(blocks(model)[0]))
        removed = n_inner - kept_count(n_inner, keep_ratio)
        return n - removed * len(blocks(model)) * params_per_mlp_neuron(model)
    if kind == "embedding":
        hidden = model.config.hidden_size
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
    n_inner, n_layer = _in_features(_mlp_down(blocks(model)[0])), len(blocks(model))
    per = n_layer * params_per_mlp_neuron(model, hidden)
    removed = min(n_inner - 1, max(0, math.floor(n_params_removed / per + 0.5)))
    return n_inner - removed


def _channels_for(model, n_params_removed: int) -> int:
    """Embedding channels kept (a valid multiple) to remove closest to `n_params_removed`."""
    hidden, m = model.config.hidden_size, embedding_channel_multiple(model)
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
    hidden, m = model.config.hidden_size, embedding_channel_multiple(model)
    n_inner, n_layer = _in_features(_mlp_down(blocks(model)[0])), len(blocks(model))
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
    from the config alone: `heads_per_layer` (heads differ per layer after head pruning:
    transformers 5 removed `prune_heads` and ignores `config.pruned_heads`) and, for GPT-2 after
    embedding-channel pruning, `attention_width` (GPT-2 derives it from n_embd). Models of other
    families return None."""
    if getattr(model.config, "model_type", None) not in ("gpt2", "llama"):
        return None
    c = model.config
    counts, n_head = head_counts(model), c.num_attention_heads
    attention_width = n_head * head_dim(model)
    gpt2_width_differs = c.model_type == "gpt2" and attention_width != c.hidden_size
    if all(k == n_head for k in counts) and not gpt2_width_differs:
        return None
    record = {"heads_per_layer": counts}
    if gpt2_width_differs:
        record["attention_width"] = attention_width
    return record


def build_pruned_shape(config, record: dict):
    """A randomly initialised model of a pruned shape: the architecture `config` describes
    (with GPT-2's attention width from `record`), cut to `record["heads_per_layer"]` heads and to
    the config's hidden size. Used to reload pruned checkpoints (`load_pruned`) and to train a
    pruned shape from scratch (`pipeline.scratch_like`).

    Raises ValueError if the record asks for more heads than the config has."""
    from transformers import AutoModelForCausalLM

    full = config.__class__.from_dict(config.to_dict())
    hidden = config.hidden_size
    if record.get("attention_width"):
        full.n_embd = record["attention_width"]
    model = AutoModelForCausalLM.from_config(full)
    counts = head_counts(model)
    kept = record.get("heads_per_layer", counts)
    if len(kept) != len(counts) or any(k > n for k, n in zip(kept, counts)):
        raise ValueError(f"heads_per_layer {kept} does not fit the config ({counts} heads per layer)")
    prune_heads(model, {i: list(range(k, n)) for i, (k, n) in enumerate(zip(kept, counts)) if k < n})
    if model.config.hidden_size != hidden:
        _slice_residual_stream(model, torch.arange(hidden))
    return model


def load_pruned(folder: str | Path, device: str = "cpu"):
    """Reload a model saved with a `pruned_shape.json` (see `shape_record`): build its shape
    (`build_pruned_shape`; only the shapes matter, the weights come next), then load the saved
    weights (strict, except the LM head tied to the input embedding).

    Raises RuntimeError if the saved weights do not match the recorded shape."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    folder = Path(folder)
    config = AutoConfig.from_pretrained(str(folder))
    model = build_pruned_shape(config, json.loads((folder / SHAPE_FILE).read_text()))
    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"pruned checkpoint {folder} does not match: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.to(device).eval()
