"""Compressed variants as pipelines of steps applied to the baseline, named as in the paper.

A pipeline is a sequence of steps, e.g. distill -> prune heads (keep 0.9) -> quantize (nf4),
and its name is the paper's: `Distil+90+4b`. The grammar (tokens joined by `+`):

| token | step |
|---|---|
| `Base` | nothing (the baseline) |
| `Distil` | distill a half-depth student from the current model (`distill.DistillConfig`) |
| `AH90`, `AH80` (first) or `90`, `80` (later) | keep 90 % / 80 % of attention heads (`prune`, kind heads) |
| `MLP75`, `Emb75`, `Depth50`, `Mag50`, `GMag50`, `Wanda50` | MLP-neuron / embedding-channel / depth / magnitude (layer-wise, global) / Wanda pruning (`prune.PruneConfig.name`) |
| `ft` | fine-tune the previous pruning step (its `finetune_tokens`) |
| `KD` | Minitron: retrain the current (pruned) model as a student of the unpruned baseline |
| `ft<N>` (e.g. `Base+ft10k`) | continue training the current model on labels for N tokens (`FinetuneConfig`): the equal-training control |
| `8b`, `4b`, `4bfp4`, `bf16`, `dq8`, ... | quantize (`quantize.QuantConfig.from_name`); glued to `Base`/`Distil` (`Base8b`, `Distil4b`), after `+` otherwise (`AH90+4b`) |

Only the structure is in the name; budgets and settings (token counts, temperature, head
importance, ...) come from `StepDefaults`, so that a whole grid shares them. Each step's artifact
is cached under a key that includes its parent's key, so every prefix of a pipeline is built once
and reused (`Distil+90+4b` reuses `Distil+90`, which reuses `Distil`). Quantization must be the
last step: no step that needs gradients can follow it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from . import cache, distill, prune, quantize, surgery
from .data import training_streams
from .distill import DistillConfig
from .models import Artifact, load_artifact, resolve_device
from .prune import PruneConfig
from .quantize import QuantConfig
from .step import cached_step, trained
from .train import TrainConfig, train

STEP_KINDS = ("distill", "prune", "kd", "finetune", "quantize")


@dataclass(frozen=True)
class FinetuneConfig:
    """Plain further training (next-token loss) of the current model: the step of the
    equal-training controls `Base+ft<N>` (`control_name`).

    Attributes:
        tokens: token budget (>= 1); lr: peak learning rate (cosine schedule of `train.train`);
        batch_size, seq_len: as the pruning fine-tuning uses them; seed: batch order.

    Raises ValueError on construction for a budget < 1 or lr <= 0.
    """

    tokens: int = 10_000
    lr: float = 5e-4
    batch_size: int = 16
    seq_len: int = 128
    seed: int = 0

    def __post_init__(self):
        if int(self.tokens) < 1:
            raise ValueError(f"finetune tokens must be >= 1, got {self.tokens}")
        if not self.lr > 0:
            raise ValueError(f"finetune lr must be > 0, got {self.lr}")

    @classmethod
    def from_params(cls, params: dict, **changes) -> "FinetuneConfig":
        """From notebook parameters `finetune_lr` and `seed` (the settings of post-pruning
        fine-tuning, so that a control trains exactly as a pruned model's `ft` does)."""
        return cache.from_params(cls, params, {"finetune_lr": "lr", "seed": "seed"}, **changes)


def tokens_text(n: int) -> str:
    """A token budget as names write it: 10000 -> `10k`, 1500000 -> `1500k`, 12345 -> `12345`."""
    n = int(n)
    return f"{n // 1000}k" if n % 1000 == 0 and n else str(n)


_FT_TOKEN = re.compile(r"^ft(\d+)(k?)$")


@dataclass(frozen=True)
class StepDefaults:
    """Settings shared by every step of every pipeline of a grid.

    Attributes:
        distill: the `DistillConfig` of `Distil` steps.
        kd: the `DistillConfig` of `KD` steps (its n_layer / n_embd / init are ignored: the
            student is the current model).
        prune: the base `PruneConfig` of pruning steps (importance, head allocation, calibration,
            fine-tuning budget used by `ft`); kind and keep ratio or sparsity come from the token.
    """

    distill: DistillConfig = field(default_factory=DistillConfig)
    kd: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


@dataclass(frozen=True)
class Step:
    """One step: kind in `STEP_KINDS` and its config."""

    kind: str
    config: object

    def __post_init__(self):
        if self.kind not in STEP_KINDS:
            raise ValueError(f"step kind {self.kind!r} unknown; allowed: {STEP_KINDS}")
        expected = {"distill": DistillConfig, "kd": DistillConfig, "prune": PruneConfig, "quantize": QuantConfig,
                    "finetune": FinetuneConfig}[self.kind]
        if not isinstance(self.config, expected):
            raise ValueError(f"step {self.kind!r} takes a {expected.__name__}, got {type(self.config).__name__}")

    @property
    def needs_gradients(self) -> bool:
        """True for steps that train or rank by gradients (they cannot follow quantization)."""
        if self.kind in ("distill", "kd", "finetune"):
            return True
        if self.kind == "prune":
            c = self.config
            return bool(c.finetune_tokens) or (c.kind == "heads" and c.importance == "gradient")
        return False


_PERCENT = r"\d+(?:\.\d{1,3})?"  # a percentage as names write it: 75, 81.25 (see surgery.percent_text)
_PRUNE_TOKEN = re.compile(rf"^(AH|MLP|Emb|Depth|GMag|Mag|Wanda)({_PERCENT})$")
_HEADS_TOKEN = re.compile(rf"^{_PERCENT}$")


@dataclass(frozen=True)
class Pipeline:
    """An ordered tuple of steps applied to the baseline. Validated on construction.

    Raises ValueError if a step follows quantization (quantized weights cannot be trained or
    differentiated here), or a pipeline quantizes twice.
    """

    steps: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(self.steps))
        for i, step in enumerate(self.steps):
            if not isinstance(step, Step):
                raise ValueError(f"pipeline steps must be Step objects, got {type(step).__name__}")
            if step.kind == "quantize" and i != len(self.steps) - 1:
                after = self.steps[i + 1]
                raise ValueError(f"step {i + 2} ({after.kind}) follows quantization: quantization must be the "
                                 f"last step (a quantized model cannot be trained, pruned by gradients or "
                                 f"quantized again)")

    @property
    def name(self) -> str:
        """The paper-style name (see the module docstring); `Base` for no steps."""
        head, parts = "Base", []
        for step in self.steps:
            c = step.config
            if step.kind == "distill":
                if head == "Base" and not parts:
                    head = "Distil"
                else:
                    parts.append("Distil")
            elif step.kind == "kd":
                parts.append("KD")
            elif step.kind == "finetune":
                parts.append(f"ft{tokens_text(c.tokens)}")
            elif step.kind == "prune":
                pct = c.percent
                token = f"AH{pct}" if c.kind == "heads" else replace(c, finetune_tokens=0).name
                if head == "Base" and not parts:
                    head = token
                else:
                    parts.append(str(pct) if c.kind == "heads" else token)
                if c.finetune_tokens:
                    parts.append("ft")
            else:
                if not parts and head in ("Base", "Distil"):
                    head += c.suffix
                else:
                    parts.append(c.suffix)
        return "+".join([head, *parts])

    @classmethod
    def from_name(cls, name: str, defaults: StepDefaults = StepDefaults()) -> "Pipeline":
        """Parse a paper-style name into a pipeline, with settings from `defaults`.

        Raises ValueError naming the token that is not understood and the grammar.
        """
        tokens = name.split("+")
        steps: list[Step] = []
        first = tokens[0]
        m = re.match(r"^(Base|Distil)(.*)$", first)
        if m:
            if m.group(1) == "Distil":
                steps.append(Step("distill", defaults.distill))
            if m.group(2):
                steps.append(Step("quantize", _quant(m.group(2), name)))
        else:
            steps.append(_prune_step(first, defaults, name, first=True))
        for token in tokens[1:]:
            if token == "ft":
                if not steps or steps[-1].kind != "prune":
                    raise ValueError(f"{name!r}: 'ft' must follow a pruning step")
                prev = steps.pop()
                budget = defaults.prune.finetune_tokens or 20_000
                steps.append(Step("prune", replace(prev.config, finetune_tokens=budget)))
            elif token == "KD":
                steps.append(Step("kd", defaults.kd))
            elif _FT_TOKEN.match(token):
                digits, k = _FT_TOKEN.match(token).groups()
                steps.append(Step("finetune", replace(defaults.finetune, tokens=int(digits) * (1000 if k else 1))))
            elif token == "Distil":
                steps.append(Step("distill", defaults.distill))
            elif _HEADS_TOKEN.match(token) or _PRUNE_TOKEN.match(token):
                steps.append(_prune_step(token, defaults, name, first=False))
            else:
                steps.append(Step("quantize", _quant(token, name)))
        pipeline = cls(tuple(steps))
        return pipeline


def _quant(token: str, name: str) -> QuantConfig:
    try:
        return QuantConfig.from_name(token)
    except ValueError as exc:
        raise ValueError(f"{name!r}: token {token!r} is not a step. Grammar: Base|Distil[quant], AH<pct>, "
                         f"<pct> (heads), MLP<pct>, Emb<pct>, Depth<pct>, Mag<pct>, GMag<pct>, Wanda<pct>, ft, KD, Distil, and a "
                         f"final quantization ({exc})") from None


def _prune_step(token: str, defaults: StepDefaults, name: str, first: bool) -> Step:
    if _HEADS_TOKEN.match(token) and not first:
        return Step("prune", PruneConfig.structured("heads", float(token) / 100, defaults.prune, finetune_tokens=0))
    m = _PRUNE_TOKEN.match(token)
    if not m:
        raise ValueError(f"{name!r}: first token {token!r} must be Base, Distil (each optionally with a "
                         f"quantization suffix, e.g. Base4b), AH<pct>, MLP<pct>, Emb<pct>, Depth<pct>, Mag<pct>, GMag<pct> or Wanda<pct>")
    kind = {"AH": "heads", "MLP": "mlp", "Emb": "embedding", "Depth": "depth", "Mag": "magnitude", "GMag": "magnitude",
            "Wanda": "wanda"}[m.group(1)]
    fraction = float(m.group(2)) / 100
    if kind in prune.UNSTRUCTURED:
        scope = "global" if m.group(1) == "GMag" else "layer"
        return Step("prune", PruneConfig.unstructured(kind, fraction, defaults.prune, magnitude_scope=scope, finetune_tokens=0))
    return Step("prune", PruneConfig.structured(kind, fraction, defaults.prune, finetune_tokens=0))


def build(base: Artifact, pipeline: Pipeline, train_corpora, device: str = "auto",
          progress: bool = True) -> Artifact:
    """Apply the pipeline's steps to `base`, reusing every cached prefix; returns the final
    artifact with `recipe["cost"]` replaced by the total cost of all steps from the baseline
    (seconds and kWh summed; method the least certain of the steps') and `recipe["steps"]` the
    cost of each step."""
    art, costs = base, []
    for step in pipeline.steps:
        if step.kind == "distill":
            art = distill.get_distilled(art, step.config, train_corpora, device=device, progress=progress)
        elif step.kind == "kd":
            art = distill.get_distilled(base, step.config, train_corpora, device=device, progress=progress,
                                        student=art)
        elif step.kind == "prune":
            art = prune.get_pruned(art, step.config, train_corpora, device=device, progress=progress)
        elif step.kind == "finetune":
            art = get_finetuned(art, step.config, train_corpora, device=device, progress=progress)
        else:
            art = quantize.get_quantized(art, step.config, device=device)
        costs.append({"step": step.kind, **art.cost})
    if not costs:
        return base
    order = ["measured", "partly measured", "estimated", "unavailable"]
    methods = [c.get("method", "estimated") for c in costs if c.get("method") in order]
    total = {"seconds": sum(c.get("seconds", 0.0) for c in costs),
             "energy_kwh": sum(c.get("energy_kwh", 0.0) for c in costs),
             "method": max(methods, key=order.index) if methods else "estimated"}
    return Artifact(art.model, art.tokenizer, art.key, art.path, {**art.recipe, "cost": total, "steps": costs},
                    art.history)


def training_tokens(pipeline: Pipeline) -> int:
    """Tokens of training the pipeline adds to the baseline: distillation, KD, post-pruning
    fine-tuning and `ft<N>` budgets summed (0 for quantization and pruning without fine-tuning)."""
    total = 0
    for step in pipeline.steps:
        if step.kind in ("distill", "kd", "finetune"):
            total += int(step.config.tokens)
        elif step.kind == "prune":
            total += int(step.config.finetune_tokens)
    return total


def control_name(name: str, defaults: StepDefaults = StepDefaults()) -> str | None:
    """The equal-training control of a variant: `Base+ft<N>`, the unpruned, unquantized baseline
    trained further on labels for the same N tokens the variant's pipeline trains
    (`training_tokens`), with the fine-tuning settings of `defaults.finetune`. None when the
    pipeline does not train (its differences to Base are compression alone) or is itself a
    control. A variant that beats Base but not its control gained through training, not
    compression (issue 11).

    Raises ValueError for a name the grammar does not parse.
    """
    spec = Pipeline.from_name(name, defaults)
    if any(s.kind == "finetune" for s in spec.steps):
        return None
    n = training_tokens(spec)
    return f"Base+ft{tokens_text(n)}" if n else None


def control_kwargs(name: str, defaults: StepDefaults = StepDefaults()) -> dict:
    """`training_tokens` and `control` of a variant, as `measure.measure_variants` records them (its `trained`).

    Raises ValueError for a name the grammar does not parse."""
    spec = Pipeline.from_name(name, defaults)
    return {"training_tokens": training_tokens(spec), "control": control_name(name, defaults) or ""}


def with_controls(names, defaults: StepDefaults = StepDefaults()) -> list[str]:
    """`names` followed by the equal-training control of every one that trains (each once, in
    order of first need)."""
    names = list(names)
    controls = [c for c in (control_name(n, defaults) for n in names) if c and c not in names]
    return names + list(dict.fromkeys(controls))


def get_finetuned(parent: Artifact, config: FinetuneConfig, train_corpora, val_fraction: float = 0.05,
                  device: str = "auto", progress: bool = True) -> Artifact:
    """`parent` trained further on the next-token loss for `config.tokens` tokens (a `ft<N>`
    step), built once and cached under a key of the parent's key and `config`. The recipe's cost
    is the training's wall time (seconds) and energy (kWh)."""
    device = resolve_device(device)
    params = {"parent": parent.key, **cache.as_params(config), "corpora": list(train_corpora),
              "val_fraction": val_fraction}

    def build(meter):
        model = load_artifact(parent.key, device=device).model if parent.path else parent.model
        train_ids, val_ids = training_streams(parent.tokenizer, train_corpora, val_fraction)
        result = train(model, train_ids, val_ids,
                       TrainConfig(tokens=config.tokens, lr=config.lr, batch_size=config.batch_size,
                                   seq_len=config.seq_len, seed=config.seed, device=device),
                       desc=f"fine-tune {tokens_text(config.tokens)}", progress=progress, meter=meter)
        return trained(model, parent.tokenizer, result)

    return cached_step("finetune", params, build, device)


def paper_grid(bases=("Base", "Distil"), heads=(None, 90, 80), quants=(None, "8b", "4b")) -> list[str]:
    """The paper's combination grid as names: {Base, Distil} x {none, AH90, AH80} x {none, 8b, 4b}
    (18 variants by default), e.g. Base, Base8b, AH90+4b, Distil+80+8b."""
    names = []
    for b in bases:
        for h in heads:
            for q in quants:
                if h is None:
                    names.append(f"{b}{q or ''}")
                else:
                    head = f"AH{h}" if b == "Base" else f"{b}+{h}"
                    names.append(f"{head}+{q}" if q else head)
    return names


WIDTH_AXES = surgery.WIDTH_RECIPES


def check_width_axes(axes) -> tuple:
    """Validate a list of width-pruning recipes (each one of `WIDTH_AXES`); returns them as a tuple.

    Raises ValueError naming the bad entry and the allowed values."""
    for a in axes:
        if a not in WIDTH_AXES:
            raise ValueError(f"width recipe {a!r} unknown; allowed: {WIDTH_AXES}")
    return tuple(axes)


def width_plan_for_params(base: Artifact, n_params_removed: int, axes: str) -> "surgery.WidthPlan":
    """The width pruning of `base` (a `surgery.WidthPlan`: pipeline name, steps, exact parameter
    count) that removes as close to `n_params_removed` parameters as valid shapes allow, to
    compare width against depth at equal parameter count (Minitron, Muralidharan et al. 2024):
    `MLP` (e.g. `MLP25`), `Emb` (e.g. `Emb66.41`), `Emb+MLP` (e.g. `Emb82.81+MLP54.69`). The
    name records the percentages actually reached; `plan.residual` is the parameter difference
    that valid shapes leave (shown by notebook 04).

    Raises ValueError for unknown `axes` or more parameters than the model holds, before any pruning.
    """
    check_width_axes([axes])
    return surgery.width_plan(base.model, n_params_removed, axes)


def scratch_like(shape_of: Artifact, tokens: int, train_corpora, lr: float = 2e-3, seed: int = 0,
                 batch_size: int = 16, seq_len: int = 128, device: str = "auto", progress: bool = True) -> Artifact:
    """A model with the same architecture (config) as `shape_of`, randomly initialised and trained
    from scratch on labels with the study's loop for `tokens` tokens: the control that tells
    whether pruning + distillation beat simply training the small shape. Cached.

    Shapes their config cannot describe (head-pruned, GPT-2 with pruned embedding channels) are
    built by `surgery.build_pruned_shape` from the pruned model's `surgery.shape_record`.
    """
    device = resolve_device(device)
    config = shape_of.model.config
    record = surgery.shape_record(shape_of.model)
    params = {"config": config.to_json_string(), "shape": record, "tokens": tokens, "corpora": list(train_corpora), "lr": lr,
              "seed": seed, "batch_size": batch_size, "seq_len": seq_len}

    def build(meter):
        from transformers import AutoModelForCausalLM
        import torch

        torch.manual_seed(seed)
        fresh = config.__class__.from_dict(config.to_dict())
        model = surgery.build_pruned_shape(fresh, record) if record else AutoModelForCausalLM.from_config(fresh)
        train_ids, val_ids = training_streams(shape_of.tokenizer, train_corpora, 0.05)
        result = train(model, train_ids, val_ids, TrainConfig(tokens=tokens, lr=lr, seed=seed, batch_size=batch_size,
                                                              seq_len=seq_len, device=device),
                       desc="from scratch", progress=progress, meter=meter)
        return trained(model, shape_of.tokenizer, result)

    return cached_step("scratch", params, build, device)
