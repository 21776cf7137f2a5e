"""Knowledge distillation: a shallower (optionally narrower) student trained from the baseline.

Loss (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network"):

    L = alpha * CE(student, labels) + (1 - alpha) * T^2 * D(teacher, student)

with `D` the KL divergence between temperature-softened next-token distributions
`p = softmax(z / T)`, averaged over token positions:
- forward KL, `KL(p_teacher || p_student)` (Hinton; DistilBERT / DistilGPT2), mass-covering;
- reverse KL, `KL(p_student || p_teacher)` (the direction MiniLLM, Gu et al. 2024, optimises),
  mode-seeking.
The `T^2` factor keeps the gradient scale of the soft term independent of T. `alpha = 1` trains
the same student on labels only: the study's no-teacher control.

Student initialisation: `teacher` copies the embeddings, final norm and every other
transformer block of the teacher (the DistilBERT / DistilGPT2 recipe: layers
`round(i * L_teacher / L_student)`), or `random`.

The student is trained with the study's one loop (`compstudy.train.train`), so the token budget,
schedule, progress bar and cost accounting are those of the baseline; the cost includes the
teacher's forward passes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import Field

import torch
import torch.nn.functional as F

from . import cache, data
from .data import training_streams
from .models import Artifact, load_artifact, load_model, resolve_device
from .families import adapter_for, supported
from .registry import Technique, register
from .schema import Group
from .surgery import shape_record
from .step import cached_step, is_planning, trained
from .train import TrainConfig, lm_loss, train

DIVERGENCES = ("forward", "reverse")
INITS = ("teacher", "random")


class Distillation(Group):
    """Knowledge distillation (Hinton et al. 2015): the schema group of notebooks 02 and 04 (which
    builds the same student, cached once)."""

    temperature: float = Field(2.0, gt=0, description="softmax temperature of teacher and student")
    hard_label_weight: float = Field(0.5, ge=0, le=1, description="weight of the next-token (hard-label) loss; "
                                     "1 - this weighs the KL to the teacher (1: no teacher)")
    divergence: Literal["forward", "reverse"] = Field("forward", description="forward KL(teacher||student) or "
                                                      "reverse KL(student||teacher) (MiniLLM)")
    distill_tokens: int = Field(100_000, ge=1, description="token budget of every distilled student")
    distill_lr: float = Field(2e-3, gt=0, description="peak learning rate of distillation")


_STUDY = Distillation()


@dataclass(frozen=True)
class DistillConfig:
    """A distillation step's recipe: the `Distil` student (budget `distill_tokens`, rate
    `distill_lr`) and Minitron's `KD` after pruning (`kd_tokens`, `kd_lr`) share the loss settings of
    `Distillation` and differ in their budget, rate and student.

    Attributes:
        n_layer: student depth; None = half the teacher's (rounded up).
        n_embd: student width; None = the teacher's (a narrower student needs `init="random"`).
        init: "teacher" (copy every other teacher block) or "random".
        temperature, hard_label_weight, divergence: as in `Distillation` (its defaults);
            hard_label_weight = 1 trains on labels alone (no teacher: the control).
        tokens, lr: the step's budget and peak learning rate (default `Distillation`'s distill_*).
        batch_size, seq_len, seed: training settings (`TrainConfig`), the baseline's by default.

    Raises ValueError on construction for values out of range; `check_against(teacher)` raises
    ValueError when the student would not be smaller than the teacher.
    """

    n_layer: int | None = None
    n_embd: int | None = None
    init: str = "teacher"
    temperature: float = _STUDY.temperature
    hard_label_weight: float = _STUDY.hard_label_weight
    divergence: str = _STUDY.divergence
    tokens: int = _STUDY.distill_tokens
    batch_size: int = 16
    seq_len: int = 128
    lr: float = _STUDY.distill_lr
    seed: int = 0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.hard_label_weight <= 1:
            raise ValueError(f"hard_label_weight must be in [0, 1], got {self.hard_label_weight}")
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {self.divergence!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.n_layer is not None and self.n_layer < 1:
            raise ValueError(f"n_layer must be >= 1 or None, got {self.n_layer}")
        if self.n_embd is not None and self.init == "teacher":
            raise ValueError("a narrower student (n_embd set) cannot copy the teacher's blocks: use init='random'")
        self.train_config  # validates the training settings

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig(tokens=self.tokens, batch_size=self.batch_size, seq_len=self.seq_len,
                           lr=self.lr, seed=self.seed)

    @classmethod
    def student(cls, params: dict, **changes) -> "DistillConfig":
        """The `Distil` step of a study: the `Distillation` group's settings, budget and rate, the
        student's shape (`student_layers`, `student_embd`; a narrower student gets random init), and
        the baseline's `batch_size`, `seq_len` and `seed`, all taken by name from `params`."""
        d = Distillation.from_params(params)
        shape = {"n_layer": params.get("student_layers"), "n_embd": params.get("student_embd")}
        if shape["n_embd"]:
            changes = {"init": "random", **changes}
        return cls(**shape, temperature=d.temperature, hard_label_weight=d.hard_label_weight, divergence=d.divergence,
                   tokens=d.distill_tokens, lr=d.distill_lr, **_training(params), **changes)

    @classmethod
    def after_pruning(cls, params: dict, tokens: int, lr: float, **changes) -> "DistillConfig":
        """The `KD` step (Minitron): the `Distillation` group's loss settings with its own budget and
        rate (notebook 04's `kd_tokens`, `kd_lr`); the student is the pruned model itself."""
        d = Distillation.from_params(params)
        return cls(temperature=d.temperature, hard_label_weight=d.hard_label_weight, divergence=d.divergence,
                   tokens=tokens, lr=lr, **_training(params), **changes)

    def check_against(self, teacher) -> None:
        """Raise ValueError if the student would be deeper or wider than `teacher`."""
        depth, width = _depth(teacher), _width(teacher)
        if self.n_layer is not None and self.n_layer > depth:
            raise ValueError(f"student n_layer={self.n_layer} is deeper than its teacher ({depth} layers)")
        if self.n_embd is not None and self.n_embd > width:
            raise ValueError(f"student n_embd={self.n_embd} is wider than its teacher ({width})")
        if self.n_embd is not None and self.n_embd % _heads(teacher):
            raise ValueError(f"student n_embd={self.n_embd} must be divisible by the teacher's {_heads(teacher)} heads")


def _training(params: dict) -> dict:
    return {k: params[k] for k in ("batch_size", "seq_len", "seed") if k in params}


def _depth(model) -> int:
    if supported(getattr(model.config, "model_type", "")):
        return len(adapter_for(model).blocks(model))
    c = model.config
    return int(getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer"))


def _width(model) -> int:
    if supported(getattr(model.config, "model_type", "")):
        return adapter_for(model).hidden_size(model)
    return int(getattr(model.config, "hidden_size", None) or getattr(model.config, "n_embd"))


def _heads(model) -> int:
    if supported(getattr(model.config, "model_type", "")):
        return adapter_for(model).config_heads(model.config)[0]
    return int(getattr(model.config, "num_attention_heads", None) or getattr(model.config, "n_head"))


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float = 2.0, alpha: float = 0.5, divergence: str = "forward") -> torch.Tensor:
    """The distillation loss `alpha * CE + (1 - alpha) * T^2 * KL` (module docstring).

    Args:
        student_logits, teacher_logits: [batch, seq, vocab].
        labels: token ids [batch, seq]; position t's logits are scored against labels[t + 1].
        temperature, alpha, divergence: as in `DistillConfig`.

    Returns a scalar: CE in nats/token, KL in nats per token position (mean over positions
    0..seq-2, the positions the CE scores).
    """
    vocab = student_logits.size(-1)
    s = student_logits[:, :-1].float()
    t = teacher_logits[:, :-1].float().detach()
    ce = F.cross_entropy(s.reshape(-1, vocab), labels[:, 1:].reshape(-1))
    if alpha == 1:
        return ce
    log_ps = F.log_softmax(s / temperature, dim=-1).reshape(-1, vocab)
    log_pt = F.log_softmax(t / temperature, dim=-1).reshape(-1, vocab)
    if divergence == "forward":   # KL(teacher || student)
        kl = F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean")
    else:                         # KL(student || teacher)
        kl = F.kl_div(log_pt, log_ps, log_target=True, reduction="batchmean")
    return alpha * ce + (1 - alpha) * temperature ** 2 * kl


def teacher_layer_indices(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher blocks a student copies: `round(i * L_t / L_s)`, e.g. 6 -> 3: [0, 2, 4]."""
    return [round(i * teacher_layers / student_layers) for i in range(student_layers)]


def make_student(teacher, config: DistillConfig) -> torch.nn.Module:
    """A student of the teacher's family: `config.n_layer` blocks (default half), width
    `config.n_embd` (default the teacher's), initialised from the teacher or randomly.

    Raises ValueError (via `check_against`) if the student would be deeper or wider, or if the
    teacher has a pruned shape its config does not describe (heads differing per layer, a GPT-2
    with pruned embedding channels): distil first, then prune (`Distil+90`, not `AH90+Distil`).
    """
    from transformers import AutoModelForCausalLM

    config.check_against(teacher)
    if supported(getattr(teacher.config, "model_type", "")) and shape_record(teacher) is not None:
        raise ValueError("cannot build a student from a head-pruned or embedding-pruned teacher (its config does "
                         "not describe its shape): distil before pruning, e.g. Distil+90 rather than AH90+Distil")
    depth = config.n_layer or (_depth(teacher) + 1) // 2
    if supported(getattr(teacher.config, "model_type", "")):
        fam = adapter_for(teacher)
        cfg, pattern = fam.student_config(teacher.config, depth, config.n_embd), fam.layer_pattern()
    else:  # a family without adapter: the usual config field and block names (no narrower student)
        if config.n_embd is not None:
            raise ValueError(f"a narrower student (student_embd) needs a family adapter; "
                             f"{teacher.config.model_type!r} has none (compstudy.families)")
        cfg = teacher.config.__class__.from_dict(teacher.config.to_dict())
        setattr(cfg, "n_layer" if hasattr(cfg, "n_layer") and not hasattr(cfg, "num_hidden_layers") else
                "num_hidden_layers", depth)
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = cfg.layer_types[:depth]
        pattern = r"^(.*\.(?:h|layers|layer|blocks)\.)(\d+)(\..*)$"
    torch.manual_seed(config.seed)
    student = AutoModelForCausalLM.from_config(cfg)
    if config.init == "teacher":
        keep = teacher_layer_indices(_depth(teacher), depth)
        layer = re.compile(pattern)
        state = {}
        for name, value in teacher.state_dict().items():
            m = layer.match(name)
            if m is None:
                state[name] = value
            elif int(m.group(2)) in keep:
                state[f"{m.group(1)}{keep.index(int(m.group(2)))}{m.group(3)}"] = value
        student.load_state_dict(state, strict=True)
    return student.to(next(teacher.parameters()).dtype)


def distill(teacher, student, train_ids, val_ids, config: DistillConfig, device: str = "auto",
            progress: bool = True, desc: str = "distill", meter=None):
    """Train `student` against `teacher` on the token streams; returns `compstudy.train.TrainResult`.

    The teacher is put in eval mode without gradients; with `alpha == 1` it is not run at all.
    `meter`: as in `train.train` (the cached step's meter).
    """
    device = resolve_device(device)
    teacher.eval().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(model, batch):
        if config.hard_label_weight == 1:
            return lm_loss(model, batch)
        with torch.no_grad():
            teacher_logits = teacher(input_ids=batch).logits
        return kd_loss(model(input_ids=batch).logits, teacher_logits, batch,
                       config.temperature, config.hard_label_weight, config.divergence)

    return train(student, train_ids, val_ids, replace(config.train_config, device=device), loss_fn=loss_fn,
                 desc=desc, progress=progress, meter=meter)


def get_distilled(teacher: Artifact, config: DistillConfig, train_corpora, val_fraction: float = 0.05,
                  device: str = "auto", progress: bool = True, student: Artifact | None = None) -> Artifact:
    """The student distilled from `teacher` with `config` on `train_corpora`, built once and cached.

    Args:
        student: an existing model to train as the student (e.g. a pruned copy of the teacher:
            the Minitron recipe, prune then distill from the unpruned teacher); its shape and
            weights are kept and `config`'s n_layer / n_embd / init are ignored. None = a new
            student from `make_student`.

    The recipe's `cost` is the time and energy of the whole distillation (teacher forwards
    included); its history is the training curve.
    """
    if student is None and not is_planning():  # planning (compstudy.plan) needs the key alone
        config.check_against(teacher.model)
    device = resolve_device(device)
    params = {"parent": teacher.key, **cache.as_params(config), "corpora": list(train_corpora),
              "val_fraction": val_fraction}
    if student is not None:
        params.update(student=student.key, n_layer=None, n_embd=None, init="given")

    def build(meter):
        if student is not None:
            if student.path is None:
                raise ValueError("the given student has no saved folder; save it with compstudy.models.save_model")
            student_model = load_artifact(student.key, device=device).model
        else:
            student_model = make_student(teacher.model, config)
        train_ids, val_ids = training_streams(teacher.tokenizer, train_corpora, val_fraction)
        result = distill(teacher.model, student_model, train_ids, val_ids, config, device, progress,
                         desc=f"distill a={config.hard_label_weight}", meter=meter)
        return trained(student_model, teacher.tokenizer, result)

    art = cached_step("distill", params, build, device)
    if not is_planning():
        teacher.model.to(device)
    return art


def pretrained_student(name_or_path: str, device: str = "auto") -> Artifact:
    """A student distilled elsewhere, loaded from the hub or a folder (e.g. `distilgpt2`, the
    paper's Distil model); cost 0 here since its distillation was not run by this study."""
    model = load_model(name_or_path, device=resolve_device(device))
    return Artifact(model, data.load_tokenizer(name_or_path), key=f"pretrained:{name_or_path}", path=None,
                    recipe={"cost": {"seconds": 0.0, "energy_kwh": 0.0, "method": "pretrained"}})


# ---- the registry's entries (compstudy.registry): the Distil student and Minitron's KD

_MODIFIERS = {"-rand": {"init": "random"}, "-noKD": {"hard_label_weight": 1.0}}


def _parse_student(m, defaults):
    config = defaults.distill if defaults is not None else DistillConfig()
    mods = m.group("mods") or ""
    if "-pretrained" in mods:
        raise ValueError("Distil-pretrained is a student distilled elsewhere (notebook 02's student_model), "
                         "loaded with distill.pretrained_student, not built by a pipeline")
    for text, change in _MODIFIERS.items():
        if text in mods:
            config = replace(config, **change)
    return config


def _student_token(c, first):
    return "Distil" + ("-rand" if c.init == "random" and c.n_embd is None else "") + ("-noKD" if c.hard_label_weight == 1 else "")


def _build_student(parent, c, ctx):
    return get_distilled(parent, c, ctx.corpora, device=ctx.device, progress=ctx.progress)


def _build_kd(parent, c, ctx):
    return get_distilled(ctx.base, c, ctx.corpora, device=ctx.device, progress=ctx.progress, student=parent)


register(Technique(
    key="distill", kind="distill", pattern=r"Distil(?P<mods>(?:-rand|-noKD|-pretrained)*)", config_type=DistillConfig,
    parse=_parse_student, token=_student_token, build=_build_student, needs_gradients=lambda c: True,
    training_tokens=lambda c: int(c.tokens),
    compresses=lambda c: True, description="distil a half-depth student (-rand: random init, -noKD: no teacher)"))
register(Technique(
    key="kd", kind="kd", pattern=r"KD", config_type=DistillConfig,
    parse=lambda m, defaults: defaults.kd if defaults is not None else DistillConfig(),
    token=lambda c, first: "KD", build=_build_kd, needs_gradients=lambda c: True,
    training_tokens=lambda c: int(c.tokens), compresses=lambda c: False,
    description="Minitron: retrain the pruned model as a student of the unpruned baseline"))
