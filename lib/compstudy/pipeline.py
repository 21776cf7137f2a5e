"""Compressed variants as pipelines of steps applied to the baseline, named as in the paper.

A pipeline is a sequence of steps, e.g. distill -> prune heads (keep 0.9) -> quantize (nf4),
and its name is the paper's: `Distil+90+4b`. Every token of a name is a technique of the registry
(`compstudy.registry`, filled by the technique modules), which says how the token parses, names
and builds; this module holds the grammar that joins them and nothing of any technique:

| token | step (registry entry) |
|---|---|
| `Base` | nothing (the baseline) |
| `Distil` (`-rand`, `-noKD`) | distill a half-depth student from the current model (`distill`; random init / no teacher: the distillation controls) |
| `AH90` (first) or `90` (later) | keep 90 % of the attention heads (`prune:heads`) |
| `MLP75`, `Emb75`, `Depth50`, `Mag50`, `GMag50`, `Wanda50` | MLP-neuron / embedding-channel / depth / magnitude (layer-wise, global) / Wanda pruning (`prune:*`) |
| `ft` | fine-tune the previous pruning step (its `finetune_tokens`, with `finetune.FinetuneConfig`) |
| `KD` | Minitron: retrain the current (pruned) model as a student of the unpruned baseline (`kd`) |
| `ft<N>` (e.g. `Base+ft10k`) | continue training the current model on labels for N tokens (`finetune`): the equal-training control |
| `8b`, `4b`, `4bfp4`, `bf16`, `dq8`, `hqq3`, `gptq4`, ... | quantize (`quantize:*`, `compstudy.lowbit` for HQQ / GPTQ at 8/4/3/2 bits); glued to `Base`/`Distil` (`Base8b`, `Distil4b`), after `+` otherwise (`AH90+4b`) |
| `Scratch-<name>` | the shape `<name>` builds, randomly initialised and trained from scratch (`kd` budget): the from-scratch control |

Only the structure is in the name; budgets and settings (token counts, temperature, head
importance, ...) come from `StepDefaults`, so that a whole grid shares them. Each step's artifact
is cached under a key that includes its parent's key, so every prefix of a pipeline is built once
and reused (`Distil+90+4b` reuses `Distil+90`, which reuses `Distil`). Quantization must be the
last step: no step that needs gradients can follow it.

Everything else in the study that needs to know what a name means (controls, the paper's grid,
the findings' groups) asks the parsed `Pipeline`: `is_control`, `training_tokens`, `control`,
`steps_of`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from . import surgery
from . import distill as _distill, finetune as _finetune, lowbit as _lowbit, prune as _prune, quantize as _quantize  # noqa: F401 (each registers its techniques)
from .distill import DistillConfig
from .finetune import Finetune, FinetuneConfig, tokens_text
from .models import Artifact, resolve_device
from .prune import PruneConfig
from .registry import KINDS as STEP_KINDS
from .registry import BuildContext, entry_for, grammar, parse_token
from .step import cached_step, is_planning, trained
from .train import TrainConfig, train

__all__ = ["Pipeline", "Step", "StepDefaults", "build", "control_name", "control_kwargs", "with_controls", "is_control",
           "training_tokens", "paper_grid", "tokens_text", "step_defaults", "scratch_like", "FinetuneConfig"]


@dataclass(frozen=True)
class StepDefaults:
    """Settings shared by every step of every pipeline of a grid.

    Attributes:
        distill: the `DistillConfig` of `Distil` steps.
        kd: the `DistillConfig` of `KD` steps (its n_layer / n_embd / init are ignored: the
            student is the current model); its budget and rate also train the from-scratch controls.
        prune: the base `PruneConfig` of pruning steps (importance, head allocation, calibration,
            fine-tuning budget used by `ft`); kind and keep ratio or sparsity come from the token.
        finetune: how every fine-tuning trains (`finetune.FinetuneConfig`): the `ft` of a pruning
            step and the controls `ft<N>`, alike.
        seed: the seed of the `ft<N>` controls' batches (the pruning steps carry theirs).
    """

    distill: DistillConfig = field(default_factory=DistillConfig)
    kd: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    seed: int = 0


def step_defaults(params: dict, *, kd_tokens: int | None = None, kd_lr: float | None = None,
                  finetune_tokens: int | None = None) -> StepDefaults:
    """The `StepDefaults` of a study, from a notebook's resolved parameters (`params.resolve`), each
    taken by its own name: the `Distillation` group and the student's shape for `Distil`, the
    `PruningCriteria` for pruning, the `Finetuning` group for every fine-tuning, the baseline's
    batch size, sequence length and seed. `kd_tokens` / `kd_lr` (notebook 04) size `KD` and the
    scratch controls; `finetune_tokens` is the budget of a pruning step's `ft` (notebook 03's
    `finetune_tokens`, notebook 04's `target_finetune_tokens`)."""
    student = DistillConfig.student(params)
    kd = DistillConfig.after_pruning(params, tokens=kd_tokens or student.tokens, lr=kd_lr or student.lr)
    pruning = PruneConfig.from_params(params, finetune_tokens=int(finetune_tokens or 0))
    return StepDefaults(distill=student, kd=kd, prune=pruning, finetune=FinetuneConfig.from_params(params),
                        seed=int(params.get("seed", 0)))


@dataclass(frozen=True)
class Step:
    """One step: kind in `STEP_KINDS` and its config (a registered technique's config type)."""

    kind: str
    config: object

    def __post_init__(self):
        if self.kind not in STEP_KINDS:
            raise ValueError(f"step kind {self.kind!r} unknown; allowed: {STEP_KINDS}")
        entry_for(self.kind, self.config)  # raises ValueError for a config no technique of this kind made

    @property
    def technique(self):
        """The registry entry of this step (`registry.Technique`)."""
        return entry_for(self.kind, self.config)

    @property
    def needs_gradients(self) -> bool:
        """True for steps that train or rank by gradients (they cannot follow quantization)."""
        return bool(self.technique.needs_gradients(self.config))


@dataclass(frozen=True)
class Pipeline:
    """An ordered tuple of steps applied to the baseline, or (`scratch`) the shape those steps build,
    trained from scratch instead. Validated on construction.

    Raises ValueError if a step follows quantization (quantized weights cannot be trained or
    differentiated here), or a pipeline quantizes twice.
    """

    steps: tuple = ()
    scratch: bool = False

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
            c, entry = step.config, step.technique
            first = head == "Base" and not parts
            if step.kind == "quantize" and not parts and (head == "Base" or head.startswith("Distil")):
                head += entry.token(c, False)  # glued: Base4b, Distil8b
            elif step.kind == "prune":
                token = entry.token(c, first)
                if first:
                    head = token
                else:
                    parts.append(token)
                if getattr(c, "finetune_tokens", 0):
                    parts.append("ft")
            elif step.kind == "distill" and first:
                head = entry.token(c, True)
            else:
                parts.append(entry.token(c, False))
        name = "+".join([head, *parts])
        return f"Scratch-{name}" if self.scratch else name

    @property
    def training_tokens(self) -> int:
        """Tokens of training the pipeline adds to the baseline (registry entries' `training_tokens`:
        distillation, KD, post-pruning fine-tuning and `ft<N>` budgets; 0 for compression alone)."""
        return sum(int(s.technique.training_tokens(s.config)) for s in self.steps)

    @property
    def compresses(self) -> bool:
        """True when some step makes the model cheaper (quantizes, prunes something, distils)."""
        return any(s.technique.compresses(s.config) for s in self.steps)

    @property
    def is_control(self) -> bool:
        """The study's controls, which are no compression options: from-scratch controls
        (`Scratch-*`), the distillation controls (a student without teacher `-noKD` or from random
        weights `-rand`), and pipelines that only train (`Base+ft<N>`, `Mag0+ft`: nothing removed)."""
        if self.scratch or not self.steps:
            return self.scratch
        if any(s.kind == "distill" and (s.config.hard_label_weight == 1 or s.config.init == "random")
               for s in self.steps):
            return True
        return not self.compresses

    def control(self, defaults: "StepDefaults" = None) -> "Pipeline | None":
        """The equal-training control: the baseline trained on labels for the same N tokens this
        pipeline trains (`training_tokens`), with the study's fine-tuning settings; None when the
        pipeline does not train, or is a control itself."""
        defaults = defaults or StepDefaults()
        n = self.training_tokens
        if not n or self.is_control:
            return None
        return Pipeline((Step("finetune", Finetune(tokens=n, settings=defaults.finetune, seed=defaults.seed)),))

    def kinds(self) -> list[str]:
        """The registry keys of the steps, in order (e.g. ["distill", "prune:heads", "quantize:nf4"])."""
        return [s.technique.key for s in self.steps]

    @classmethod
    def from_name(cls, name: str, defaults: StepDefaults = StepDefaults()) -> "Pipeline":
        """Parse a paper-style name into a pipeline, with settings from `defaults`.

        Raises ValueError naming the token that is not understood and the grammar.
        """
        if name.startswith("Scratch-"):
            return replace(cls.from_name(name[len("Scratch-"):], defaults), scratch=True)
        tokens = name.split("+")
        steps: list[Step] = []
        first = tokens[0]
        m = re.match(r"^(Base|Distil(?:-rand|-noKD|-pretrained)*)(.*)$", first)
        if m:
            if m.group(1) != "Base":
                steps.append(_step(m.group(1), defaults, name, first=True, kinds=("distill",)))
            if m.group(2):
                steps.append(_step(m.group(2), defaults, name, first=False, kinds=("quantize",)))
        else:
            steps.append(_step(first, defaults, name, first=True, kinds=("prune",)))
        for token in tokens[1:]:
            if token == "ft":
                if not steps or steps[-1].kind != "prune" or not hasattr(steps[-1].config, "finetune_tokens"):
                    raise ValueError(f"{name!r}: 'ft' must follow a pruning step that can be fine-tuned")
                prev = steps.pop()
                budget = defaults.prune.finetune_tokens or 20_000
                steps.append(Step("prune", replace(prev.config, finetune_tokens=budget)))
            else:
                steps.append(_step(token, defaults, name, first=False))
        return cls(tuple(steps))


def _step(token: str, defaults: StepDefaults, name: str, first: bool, kinds=STEP_KINDS) -> Step:
    found = parse_token(token, first, kinds)
    if found is None:
        where = "first token" if first else "token"
        raise ValueError(f"{name!r}: {where} {token!r} is unknown (not a step). Grammar: Base|Distil[-rand][-noKD][quant], "
                         f"then tokens joined by '+', 'ft' after a pruning step, a final quantization; registered "
                         f"techniques: {grammar()}")
    entry, m = found
    return Step(entry.kind, entry.parse(m, defaults))


def parse(name: str, defaults: StepDefaults = StepDefaults()) -> Pipeline:
    """`Pipeline.from_name`. Raises ValueError for a name the grammar does not parse."""
    return Pipeline.from_name(name, defaults)


def build(base: Artifact, pipeline: Pipeline, train_corpora, device: str = "auto",
          progress: bool = True, defaults: StepDefaults | None = None) -> Artifact:
    """Apply the pipeline's steps to `base` through their registry entries, reusing every cached
    prefix; returns the final artifact with `recipe["cost"]` replaced by the total cost of all steps
    from the baseline (seconds and kWh summed; method the least certain of the steps') and
    `recipe["steps"]` the cost of each step. A `Scratch-` pipeline builds its shape, then the same
    shape from random weights trained on the `KD` budget (`scratch_like`)."""
    defaults = defaults or StepDefaults()
    ctx = BuildContext(base=base, corpora=tuple(train_corpora), device=device, progress=progress, defaults=defaults)
    if pipeline.scratch:
        shape = build(base, replace(pipeline, scratch=False), train_corpora, device, progress, defaults)
        return scratch_like(shape, defaults.kd.tokens, train_corpora, lr=defaults.distill.lr, seed=defaults.kd.seed,
                            batch_size=defaults.kd.batch_size, seq_len=defaults.kd.seq_len, device=device,
                            progress=progress)
    art, costs = base, []
    for step in pipeline.steps:
        art = step.technique.build(art, step.config, ctx)
        costs.append({"step": step.kind, **art.cost})
    if not costs:
        return base
    if is_planning():  # compstudy.plan: the last step's artifact (cached or pending), nothing loaded
        return art
    order = ["measured", "partly measured", "estimated", "unavailable"]
    methods = [c.get("method", "estimated") for c in costs if c.get("method") in order]
    total = {"seconds": sum(c.get("seconds", 0.0) for c in costs),
             "energy_kwh": sum(c.get("energy_kwh", 0.0) for c in costs),
             "method": max(methods, key=order.index) if methods else "estimated"}
    return Artifact(art.model, art.tokenizer, art.key, art.path, {**art.recipe, "cost": total, "steps": costs},
                    art.history)


def training_tokens(pipeline: Pipeline) -> int:
    """`Pipeline.training_tokens`."""
    return pipeline.training_tokens


def is_control(name: str) -> bool:
    """Whether a variant name is one of the study's controls (`Pipeline.is_control`); a name the
    grammar does not parse is not."""
    try:
        return Pipeline.from_name(name).is_control
    except ValueError:
        return False


def control_name(name: str, defaults: StepDefaults = StepDefaults()) -> str | None:
    """The name of a variant's equal-training control, `Base+ft<N>` (`Pipeline.control`), or None
    when the variant does not train or is a control itself. A variant that beats Base but not its
    control gained through training, not compression (issue 11).

    Raises ValueError for a name the grammar does not parse.
    """
    control = Pipeline.from_name(name, defaults).control(defaults)
    return control.name if control is not None else None


def control_kwargs(name: str, defaults: StepDefaults = StepDefaults()) -> dict:
    """`training_tokens` and `control` of a variant, as `experiments.measure_variants` records them (its `trained`).

    Raises ValueError for a name the grammar does not parse."""
    spec = Pipeline.from_name(name, defaults)
    return {"training_tokens": spec.training_tokens, "control": control_name(name, defaults) or ""}


def with_controls(names, defaults: StepDefaults = StepDefaults()) -> list[str]:
    """`names` followed by the equal-training control of every one that trains (each once, in
    order of first need)."""
    names = list(names)
    controls = [c for c in (control_name(n, defaults) for n in names) if c and c not in names]
    return names + list(dict.fromkeys(controls))


def steps_of(name: str, kind: str) -> list:
    """The configs of a variant's steps of one registry key or kind (e.g. "prune:magnitude" or
    "prune"): what the findings and the paper read from names instead of regexes. [] for a name
    the grammar does not parse."""
    try:
        spec = Pipeline.from_name(name)
    except ValueError:
        return []
    return [s.config for s in spec.steps if s.kind == kind or s.technique.key == kind]


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
    from .data import training_streams

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
