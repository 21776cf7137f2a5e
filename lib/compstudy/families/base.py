"""What every model family's adapter says, and the operations built on it.

A `Family` is an `Anatomy` (where a family keeps its blocks, attention projections, MLP, norms,
embeddings, and which config fields describe them) plus a few hooks for what a family does
differently (module attributes to update after heads are removed, config fields that change
when the hidden size shrinks). Everything the techniques need about an architecture goes through
a family's methods (`compstudy.surgery`, `compstudy.prune`, `compstudy.distill`,
`compstudy.quantize` and `compstudy.models` never look at a model's class or `model_type`):

- anatomy: `blocks`, `attention`, `head_dim`, `heads` (query and key-value heads of a block, read
  from its weights), `mlp_width`, `residual_stream_layers`, `residual_norms`, `block_linear_layers`;
- slicing: `remove_kv_groups` (attention), `prune_mlp` (MLP neurons), `set_blocks` (depth),
  `slice_residual_stream` (embedding channels);
- counting: `params_per_kv_group`, `params_per_mlp_neuron`, `embedding_channel_multiple`;
- configs: `config_heads`, `student_config`, `attention_width_is_derived`.

**Grouped-query attention.** The unit that head pruning removes is a key-value group: one key and
one value head with the query heads that attend through them (`n_q / n_kv` of them; one query
head under multi-head attention). Removing whole groups keeps every layer's
`num_key_value_groups` (the query heads per key-value head that transformers' `repeat_kv` and SDPA
assume) unchanged, so the architecture stays valid whatever the per-layer counts. This is the rule
of Torch-Pruning's LLM pruning (Fang et al. 2023, DepGraph: query heads and their key-value head
are one dependency group, pruned together) and LLM-Pruner's grouped structures (Ma et al. 2023);
removing query heads inside each group instead would need the same number removed from every group
of a layer. Head importance (Michel et al. 2019) is computed per removed unit: one mask per
key-value group multiplies the outputs of all its query heads.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LAYOUTS = ("separate", "concat", "interleaved")


@dataclass(frozen=True)
class Anatomy:
    """Where a family keeps its parts (dotted attribute paths) and which config fields describe them.

    Attributes:
        blocks: path of the transformer blocks from the model, e.g. "model.layers".
        attention: the attention module inside a block, e.g. "self_attn".
        qkv: the query, key and value projections inside the attention module: three names
            (layout "separate") or one fused projection (layouts "concat": rows [q | k | v];
            "interleaved": per head [q_h | k_h | v_h], GPT-NeoX).
        out_proj: the output projection (its input is the concatenated head outputs).
        head_dim_attr: the attention module's attribute holding the head size.
        mlp: the MLP container inside a block ("" when the block holds the MLP layers itself, OPT).
        mlp_in: the MLP's input projections: ("gate_proj", "up_proj") (gated), ("gate_up_proj",)
            with `mlp_fused_gate_up` (rows [gate | up], Phi-3), or one plain projection.
        mlp_down: the MLP's output projection (its input is the MLP neurons).
        block_norms: the norms of a block that normalise the residual stream.
        final_norm: path of the final norm from the model.
        token_embedding: path of the token embedding; position_embedding: of a learned position
            table, "" when positions are rotary.
        n_layer, hidden, intermediate, n_head: config fields; n_kv_head: "" without grouped-query
            attention; head_dim: the config field of an explicit head size, "" when the head size is
            derived from the hidden size (GPT-2, GPT-NeoX, OPT).
    """

    blocks: str
    attention: str
    qkv: tuple[str, ...]
    qkv_layout: str
    out_proj: str
    head_dim_attr: str
    mlp: str
    mlp_in: tuple[str, ...]
    mlp_down: str
    block_norms: tuple[str, ...]
    final_norm: str
    token_embedding: str
    position_embedding: str = ""
    mlp_fused_gate_up: bool = False
    n_layer: str = "num_hidden_layers"
    hidden: str = "hidden_size"
    intermediate: str = "intermediate_size"
    n_head: str = "num_attention_heads"
    n_kv_head: str = "num_key_value_heads"
    head_dim: str = "head_dim"

    def __post_init__(self):
        if self.qkv_layout not in LAYOUTS:
            raise ValueError(f"qkv_layout must be one of {LAYOUTS}, got {self.qkv_layout!r}")
        if (self.qkv_layout == "separate") != (len(self.qkv) == 3):
            raise ValueError("layout 'separate' names three projections (q, k, v); the fused layouts name one")


def get_path(root, path: str):
    """`root.a.b.c` for path "a.b.c" (root itself for "")."""
    for part in filter(None, path.split(".")):
        root = getattr(root, part)
    return root


def is_conv1d(layer) -> bool:
    """GPT-2's `transformers.pytorch_utils.Conv1D`: weight [in, out], the transpose of nn.Linear's."""
    return type(layer).__name__ == "Conv1D"


def in_features(layer) -> int:
    return layer.weight.shape[0] if is_conv1d(layer) else layer.in_features


def out_features(layer) -> int:
    return layer.weight.shape[1] if is_conv1d(layer) else layer.out_features


def slice_layer(layer, out_idx: torch.Tensor | None = None, in_idx: torch.Tensor | None = None) -> None:
    """Keep output features `out_idx` (with their bias) and input features `in_idx` of a linear
    layer (nn.Linear, weight [out, in], or GPT-2 Conv1D, weight [in, out]), in place."""
    conv = is_conv1d(layer)
    with torch.no_grad():
        w = layer.weight
        if out_idx is not None:
            w = w[:, out_idx] if conv else w[out_idx, :]
            if layer.bias is not None:
                layer.bias = torch.nn.Parameter(layer.bias[out_idx].clone())
            if conv:
                layer.nf = len(out_idx)
            else:
                layer.out_features = len(out_idx)
        if in_idx is not None:
            w = w[in_idx, :] if conv else w[:, in_idx]
            if conv:
                layer.nx = len(in_idx)
            else:
                layer.in_features = len(in_idx)
        layer.weight = torch.nn.Parameter(w.clone())


def _ranges(units, size: int) -> torch.Tensor:
    return torch.cat([torch.arange(u * size, (u + 1) * size) for u in units]) if len(units) else torch.zeros(0, dtype=torch.long)


class Family:
    """A model family's adapter: an `Anatomy` and the operations the techniques need (module
    docstring). Subclasses set `name`, `model_types`, `anatomy` and override hooks where the family
    differs. One instance per family lives in `compstudy.families.ADAPTERS`."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    anatomy: Anatomy

    # ---- anatomy -----------------------------------------------------------------------------

    def blocks(self, model) -> torch.nn.ModuleList:
        """The transformer blocks, in order."""
        return get_path(model, self.anatomy.blocks)

    def attention(self, block):
        return get_path(block, self.anatomy.attention)

    def out_proj(self, block):
        """The attention output projection: its input is the heads' outputs, head after head."""
        return getattr(self.attention(block), self.anatomy.out_proj)

    def qkv_layers(self, block) -> list:
        a = self.attention(block)
        return [getattr(a, n) for n in self.anatomy.qkv]

    def head_dim(self, model) -> int:
        return int(getattr(self.attention(self.blocks(model)[0]), self.anatomy.head_dim_attr))

    def heads(self, block, d: int) -> tuple[int, int]:
        """(query heads, key-value heads) of a block, read from its weights (so pruned layers report
        their real counts)."""
        n_q = in_features(self.out_proj(block)) // d
        layout, qkv = self.anatomy.qkv_layout, self.qkv_layers(block)
        if layout == "separate":
            return n_q, out_features(qkv[1]) // d
        if layout == "concat":
            return n_q, (out_features(qkv[0]) - n_q * d) // (2 * d)
        return n_q, n_q

    def config_heads(self, config) -> tuple[int, int]:
        """(query heads, key-value heads) the config describes (of an unpruned layer)."""
        n_q = int(getattr(config, self.anatomy.n_head))
        n_kv = getattr(config, self.anatomy.n_kv_head, None) if self.anatomy.n_kv_head else None
        return n_q, int(n_kv or n_q)

    def mlp(self, block):
        return get_path(block, self.anatomy.mlp)

    def mlp_down(self, block):
        """The MLP's output projection: its input features are the MLP neurons."""
        return getattr(self.mlp(block), self.anatomy.mlp_down)

    def mlp_in(self, block) -> list:
        return [getattr(self.mlp(block), n) for n in self.anatomy.mlp_in]

    def mlp_width(self, block) -> int:
        return in_features(self.mlp_down(block))

    def residual_norms(self, model) -> list:
        """Every norm that normalises the residual stream: those of each block, then the final one
        (not per-head norms such as Qwen3's q_norm / k_norm)."""
        out = [getattr(b, n) for b in self.blocks(model) for n in self.anatomy.block_norms]
        final = get_path(model, self.anatomy.final_norm) if self.anatomy.final_norm else None
        return out + ([final] if final is not None else [])

    def residual_stream_layers(self, model) -> list[tuple[str, torch.nn.Module]]:
        """Every module whose weights touch the residual stream, with its role: `embedding` (token
        and learned position tables, weight [rows, hidden]), `norm`, `reads` (a linear layer whose
        input is the residual stream: q/k/v, the MLP's input projections, an untied LM head) and
        `writes` (its output is added to the residual stream: attention output, MLP down). Pruning an
        embedding channel removes one column / entry / input column / output row of each."""
        a = self.anatomy
        out = [("embedding", get_path(model, a.token_embedding))]
        if a.position_embedding:
            out.append(("embedding", get_path(model, a.position_embedding)))
        for block in self.blocks(model):
            out += [("norm", getattr(block, n)) for n in a.block_norms]
            out += [("reads", layer) for layer in self.qkv_layers(block)]
            out.append(("writes", self.out_proj(block)))
            out += [("reads", layer) for layer in self.mlp_in(block)]
            out.append(("writes", self.mlp_down(block)))
        if a.final_norm and get_path(model, a.final_norm) is not None:
            out.append(("norm", get_path(model, a.final_norm)))
        head = model.get_output_embeddings()
        if head.weight is not model.get_input_embeddings().weight:
            out.append(("reads", head))
        return out

    def block_linear_layers(self, model) -> list[tuple[str, torch.nn.Module]]:
        """(name, module) of every linear layer (nn.Linear, GPT-2 Conv1D or a quantized linear)
        inside the blocks: what unstructured pruning and quantization act on."""
        out = []
        for i, block in enumerate(self.blocks(model)):
            for name, m in block.named_modules():
                if type(m).__name__ in ("Linear", "Conv1D", "Linear8bitLt", "Linear4bit"):
                    out.append((f"block{i}.{name}", m))
        return out

    def block_prefix(self) -> str:
        """The name prefix of the blocks' modules in `model.named_modules()` (e.g. "model.layers.")."""
        return self.anatomy.blocks + "."

    # ---- attention heads ---------------------------------------------------------------------

    def remove_kv_groups(self, block, keep: list[int], d: int) -> None:
        """Keep key-value groups `keep` (sorted indices) of a block's attention, each with its query
        heads, in place: the rows of their q / k / v outputs and the columns of the output
        projection that read their heads. The caller validates `keep`."""
        n_q, n_kv = self.heads(block, d)
        g = n_q // n_kv
        keep_q = [kv * g + r for kv in keep for r in range(g)]
        q_idx, kv_idx = _ranges(keep_q, d), _ranges(keep, d)
        layout, qkv = self.anatomy.qkv_layout, self.qkv_layers(block)
        if layout == "separate":
            slice_layer(qkv[0], out_idx=q_idx)
            slice_layer(qkv[1], out_idx=kv_idx)
            slice_layer(qkv[2], out_idx=kv_idx)
        elif layout == "concat":
            slice_layer(qkv[0], out_idx=torch.cat([q_idx, n_q * d + kv_idx, n_q * d + n_kv * d + kv_idx]))
        else:
            slice_layer(qkv[0], out_idx=_ranges(keep_q, 3 * d))
        slice_layer(self.out_proj(block), in_idx=q_idx)
        self.after_heads_removed(self.attention(block), len(keep_q), len(keep))

    def after_heads_removed(self, attention, n_q: int, n_kv: int) -> None:
        """Update what the attention module's forward reads besides its weights (a hook: most
        families infer head counts from the weights' shapes)."""

    def kv_group_weights(self, block, d: int) -> torch.Tensor:
        """L1 norm of every key-value group's weights (its query heads' q rows and output-projection
        columns, its key and value rows): [n_kv], the magnitude head importance."""
        n_q, n_kv = self.heads(block, d)
        g = n_q // n_kv
        w = lambda layer: layer.weight.detach().abs().float()  # noqa: E731

        def rows(layer, idx):  # output features idx of a layer, as [len(idx), in]
            return w(layer)[:, idx].T if is_conv1d(layer) else w(layer)[idx, :]

        o = self.out_proj(block)
        o_cols = (lambda idx: w(o)[idx, :]) if is_conv1d(o) else (lambda idx: w(o)[:, idx])
        layout, qkv = self.anatomy.qkv_layout, self.qkv_layers(block)
        scores = torch.zeros(n_kv)
        for kv in range(n_kv):
            q_idx, kv_idx = _ranges(range(kv * g, (kv + 1) * g), d), _ranges([kv], d)
            if layout == "separate":
                parts = [rows(qkv[0], q_idx), rows(qkv[1], kv_idx), rows(qkv[2], kv_idx)]
            elif layout == "concat":
                parts = [rows(qkv[0], torch.cat([q_idx, n_q * d + kv_idx, n_q * d + n_kv * d + kv_idx]))]
            else:
                parts = [rows(qkv[0], _ranges(range(kv * g, (kv + 1) * g), 3 * d))]
            scores[kv] = sum(float(p.sum()) for p in parts) + float(o_cols(q_idx).sum())
        return scores

    def params_per_kv_group(self, model) -> int:
        """Parameters removed with one key-value group (its query heads and its key and value head):
        q / k / v rows with their biases, and the output projection's columns. The same in every
        layer (the widths of q, k, v and o do not depend on the layer)."""
        block, d = self.blocks(model)[0], self.head_dim(model)
        n_q, n_kv = self.heads(block, d)
        g = n_q // n_kv
        qkv = self.qkv_layers(block)
        hidden_in = in_features(qkv[0])
        bias = qkv[0].bias is not None
        o = self.out_proj(block)
        return (g + 2) * d * (hidden_in + bias) + g * d * out_features(o)

    # ---- MLP ---------------------------------------------------------------------------------

    def prune_mlp(self, block, idx: torch.Tensor) -> None:
        """Keep MLP neurons `idx` (sorted) of a block, in place."""
        inputs = self.mlp_in(block)
        if self.anatomy.mlp_fused_gate_up:
            width = self.mlp_width(block)
            slice_layer(inputs[0], out_idx=torch.cat([idx, width + idx]))
        else:
            for layer in inputs:
                slice_layer(layer, out_idx=idx)
        slice_layer(self.mlp_down(block), in_idx=idx)

    def params_per_mlp_neuron(self, model, hidden: int | None = None) -> int:
        """Parameters removed with one MLP neuron in one block: a row (and bias) of every input
        projection and a column of the down projection. `hidden` (default the model's residual
        width) counts for a narrower residual stream, after embedding-channel pruning."""
        block = self.blocks(model)[0]
        hidden = self.hidden_size(model) if hidden is None else hidden
        inputs = self.mlp_in(block)
        rows = 2 if self.anatomy.mlp_fused_gate_up else len(inputs)
        biases = sum((layer.bias is not None) * (2 if self.anatomy.mlp_fused_gate_up else 1) for layer in inputs)
        return rows * hidden + biases + hidden

    # ---- depth -------------------------------------------------------------------------------

    def set_blocks(self, model, keep: list[int]) -> None:
        """Keep blocks `keep` (sorted indices) in their order, in place: the module list, every
        `layer_idx` (the KV cache's index) and the config's layer count and per-layer lists."""
        kept = torch.nn.ModuleList([self.blocks(model)[i] for i in keep])
        for new_i, block in enumerate(kept):
            for m in block.modules():
                if hasattr(m, "layer_idx"):
                    m.layer_idx = new_i
        parent_path, _, attr = self.anatomy.blocks.rpartition(".")
        setattr(get_path(model, parent_path), attr, kept)
        c = model.config
        setattr(c, self.anatomy.n_layer, len(keep))
        if getattr(c, "layer_types", None):
            c.layer_types = [c.layer_types[i] for i in keep]

    # ---- the residual stream (embedding channels) ---------------------------------------------

    def hidden_size(self, model) -> int:
        return int(getattr(model.config, self.anatomy.hidden))

    def embedding_channel_multiple(self, model) -> int:
        """Embedding-channel counts the family accepts are multiples of this: 1, or the number of
        attention heads where transformers validates `hidden_size % num_attention_heads == 0`."""
        return 1

    def attention_width_is_derived(self) -> bool:
        """True when the family derives its head size from the hidden size (no `head_dim` field):
        after embedding-channel pruning its config cannot describe the attention width, which is
        then recorded in `pruned_shape.json` (`surgery.shape_record`)."""
        return not self.anatomy.head_dim

    def slice_residual_stream(self, model, idx: torch.Tensor) -> None:
        """Keep embedding channels `idx` (sorted) of the residual stream, in place: a column of every
        embedding table, an entry of every norm, an input column of every layer reading the stream
        and an output row of every layer writing it; then the config (`set_hidden_size`)."""
        tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        d = self.head_dim(model)
        with torch.no_grad():
            for role, m in self.residual_stream_layers(model):
                if role == "embedding":
                    m.weight = torch.nn.Parameter(m.weight[:, idx].clone())
                    m.embedding_dim = len(idx)
                elif role == "norm":
                    if getattr(m, "weight", None) is not None:
                        m.weight = torch.nn.Parameter(m.weight[idx].clone())
                    if getattr(m, "bias", None) is not None:
                        m.bias = torch.nn.Parameter(m.bias[idx].clone())
                    if hasattr(m, "normalized_shape"):
                        m.normalized_shape = (len(idx),)
                    if hasattr(m, "hidden_size"):
                        m.hidden_size = len(idx)
                elif role == "reads":
                    slice_layer(m, in_idx=idx)
                else:
                    slice_layer(m, out_idx=idx)
        if tied:
            model.get_output_embeddings().weight = model.get_input_embeddings().weight
            model.get_output_embeddings().in_features = len(idx)
        self.set_hidden_size(model.config, len(idx), d, self.mlp_width(self.blocks(model)[0]))
        self.after_residual_sliced(model)

    def after_residual_sliced(self, model) -> None:
        """Update what the model computed from the hidden size at construction, so that the
        narrowed model computes what `from_pretrained` rebuilds from its config (a hook)."""

    def set_hidden_size(self, config, hidden: int, head_dim: int, intermediate: int) -> None:
        """Write a new residual width into `config`, keeping the head size and MLP width explicit
        where the family has fields for them (a hook)."""
        setattr(config, self.anatomy.hidden, hidden)
        if self.anatomy.head_dim:
            setattr(config, self.anatomy.head_dim, head_dim)
        setattr(config, self.anatomy.intermediate, intermediate)

    def params_per_embedding_channel(self, model) -> int:
        """Parameters removed with one embedding channel (see `slice_residual_stream`)."""
        n = 0
        for role, m in self.residual_stream_layers(model):
            if role == "embedding":
                n += m.weight.shape[0]
            elif role == "norm":
                n += (getattr(m, "weight", None) is not None) + (getattr(m, "bias", None) is not None)
            elif role == "reads":
                n += out_features(m)
            else:
                n += in_features(m) + (m.bias is not None)
        return n

    # ---- configs -----------------------------------------------------------------------------

    def config_for_attention_width(self, config, width: int) -> None:
        """Set `config` so that a model built from it has attention of `width` (= heads x head
        size) where the family derives the head size from the hidden size: the residual stream is
        built that wide and narrowed afterwards (`surgery.build_pruned_shape`)."""
        setattr(config, self.anatomy.hidden, width)

    def student_config(self, config, n_layer: int, n_embd: int | None = None):
        """A copy of `config` with `n_layer` blocks (the per-layer lists cut to match) and, with
        `n_embd`, that residual width, the head size kept at `n_embd / heads` and the MLP width
        scaled with it (rounded to a multiple of 32)."""
        cfg = config.__class__.from_dict(config.to_dict())
        setattr(cfg, self.anatomy.n_layer, n_layer)
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = cfg.layer_types[:n_layer]
        if n_embd is not None:
            ratio = getattr(cfg, self.anatomy.intermediate) / getattr(cfg, self.anatomy.hidden)
            n_q, _ = self.config_heads(cfg)
            self.set_hidden_size(cfg, n_embd, n_embd // n_q, 32 * max(1, round(ratio * n_embd / 32)))
        return cfg

    def layer_pattern(self) -> str:
        """Regex of a block's state-dict prefix, capturing the block index."""
        return rf"^({self.anatomy.blocks.replace('.', chr(92) + '.')}\.)(\d+)(\..*)$"

    def describe(self) -> str:
        return f"{self.name} ({', '.join(self.model_types)})"


