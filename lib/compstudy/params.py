"""The study's parameter schema: every parameter of every notebook, declared once, with its type,
range, default and documentation (pydantic models).

Parameters come in groups. A *shared* group (the baseline, the measurement, distillation,
fine-tuning, pruning criteria) is used by several notebooks and must mean the same in each: its
values reach a notebook through the single `shared` dict of the notebook's parameters cell. A
notebook's *own* group holds its technique's parameters, written in its parameters cell. Every
name is unique across the whole schema, so a config's shared `parameters` cannot mean two things.

The defaults are those of the default study (`configs/default.yaml`): a notebook run on its own
(Run All in JupyterLab) builds and measures the report's model.

    from compstudy import params
    P = params.resolve("03_pruning", shared, globals())   # validated; P.n_layer, P.sparsities, ...

The runner (`compstudy.runner`) calls `check` on the merged config and command line before any
notebook starts, so that a bad value fails within seconds, naming the parameter, the value given
and what is allowed. `python -m compstudy params [NOTEBOOK]` prints this schema.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from .baseline import BaselineConfig
from .distill import Distillation as _Distillation
from .finetune import FinetuneConfig
from .measure import EvalConfig
from .prune import PruningCriteria as _PruningCriteria
from .schema import Group, allowed as _allowed


class ParameterError(ValueError):
    """One or more parameter values are invalid; the message names each parameter, the value
    given and what is allowed. `problems` lists them one per entry, `notebook` says where."""

    def __init__(self, notebook: str, problems: list[str]):
        self.notebook, self.problems = notebook, list(problems)
        super().__init__(f"{len(problems)} parameter problem(s) in {notebook}:\n- " + "\n- ".join(problems))


# the shared groups that are library configs themselves: one declaration of each parameter
Baseline = BaselineConfig  # compstudy.baseline: the model, pretrained or trained from scratch (notebooks 00-04)
Evaluation = EvalConfig    # compstudy.measure: the measurement protocol (notebooks 00-04)


Distillation = _Distillation  # compstudy.distill: knowledge distillation (notebooks 02 and 04)
Finetuning = FinetuneConfig    # compstudy.finetune: every fine-tuning and the controls Base+ft<N> (notebooks 02-04)
PruningCriteria = _PruningCriteria  # compstudy.prune: how structures are ranked (notebooks 03 and 04)


# ---- each notebook's own group -------------------------------------------------------------------

class PlateauCheck(Group):
    """00_baseline: is the baseline trained to its plateau?"""

    plateau_fraction: float = Field(0.25, gt=0, le=1, description="the check trains this share of "
                                    "train_tokens more")
    plateau_threshold_pct: float = Field(1.0, ge=0, description="... and calls the baseline converged if "
                                         "perplexity improves by at most this (%)")


class Quantization(Group):
    """01_quantization (`compstudy.quantize.QuantConfig.from_name`)."""

    variants: list[str] = Field(["8b", "4b", "4bfp4", "bf16", "dq8"], min_length=1,
                                description="suffixes: 8b (LLM.int8()), 4b (NF4), 4bfp4 (FP4), bf16, "
                                "dq8 (PyTorch dynamic int8)")
    batch_sizes: list[int] = Field([8], min_length=1, description="evaluation batch sizes, each a condition")
    generate_tokens: int = Field(32, ge=0, description="new tokens per timed generation (0: none)")
    generate_batch_sizes: list[int] = Field([1], description="batch sizes of the timed generation")
    skip_emulated_bf16: bool = Field(True, description="leave bf16 out on CPUs that only emulate it")
    bits_sweep: list[str] = Field(["8b", "4b", "4bfp4", "hqq8", "hqq4", "hqq3", "hqq2", "gptq8", "gptq4", "gptq3",
                                   "gptq2"], description="the weight-bits dose-response: quantization suffixes "
                                  "measured once each beside Base ([]: none; compstudy.lowbit)")


class DistillationStudents(Group):
    """02_distillation's students and controls."""

    student_layers: int | None = Field(None, ge=1, description="student blocks; None: half the teacher's")
    student_embd: int | None = Field(None, ge=1, description="student width; None: the teacher's (a narrower "
                                     "student starts from random weights)")
    controls: bool = Field(True, description="also train the no-teacher and random-init controls")
    student_model: str | None = Field(None, description="hub name or folder of a student distilled elsewhere "
                                      "(e.g. distilgpt2)")


class Pruning(Group):
    """03_pruning. Keep ratios (fractions kept) and sparsities (fractions removed) are distinct
    parameters."""

    head_keep: list[float] = Field([0.9, 0.8], description="keep ratios of attention heads (AH90, AH80)")
    sparsities: list[float] = Field([0.1, 0.3, 0.5, 0.7, 0.9], description="magnitude pruning: fractions "
                                    "of block weights set to zero")
    magnitude_scopes: list[Literal["layer", "global"]] = Field(["layer", "global"], description="magnitude "
                                                               "threshold per layer or one global threshold")
    wanda_sweep: bool = Field(True, description="the sweep also prunes by Wanda (|W| x ||X||, per output; Sun et "
                              "al. 2023) at the same sparsities")
    mlp_keep: float = Field(0.75, gt=0, le=1, description="width pruning: keep ratio of MLP neurons")
    embedding_keep: float | None = Field(0.75, gt=0, le=1, description="width pruning: keep ratio of embedding "
                                         "channels (None: skip)")
    depth_keep: float = Field(0.5, gt=0, le=1, description="depth pruning: keep ratio of blocks")
    finetune_tokens: int = Field(10_000, ge=0, description="fine-tuning budget after pruning (0: none)")
    sweep_max_tokens: int | None = Field(4096, ge=2, description="tokens the magnitude sweep is measured on")
    dose_heads: list[float] = Field([0.9, 0.8, 0.6, 0.4, 0.2], description="dose-response: keep ratios of "
                                    "attention heads, measured once each beside Base ([]: none)")
    dose_depth: list[float] = Field([0.75, 0.5, 0.25], description="dose-response: keep ratios of blocks")
    dose_mlp: list[float] = Field([0.75, 0.5, 0.25], description="dose-response: keep ratios of MLP neurons")


class Hybrid(Group):
    """04_hybrid: the paper's combination grid and Minitron-style pruning + distillation."""

    grid_bases: list[Literal["Base", "Distil"]] = Field(["Base", "Distil"], min_length=1,
                                                        description="models the grid compresses")
    grid_heads: list[int | None] = Field([None, 90, 80], min_length=1, description="head keep percentages "
                                         "(None: no head pruning)")
    grid_quants: list[str | None] = Field([None, "8b", "4b"], min_length=1, description="quantization "
                                          "suffixes (None: fp32)")
    minitron_depth_keep: float = Field(0.5, gt=0, le=1, description="keep ratio of blocks of the depth variant")
    minitron_widths: list[str] = Field(["MLP", "Emb", "Emb+MLP"], description="width recipes pruned to the "
                                       "depth variant's parameter count")
    kd_tokens: int = Field(30_000, ge=1, description="distillation budget after pruning, and of the scratch controls")
    kd_lr: float = Field(5e-4, gt=0, description="peak learning rate of KD after pruning")
    target_shape: str | None = Field("Depth50+75+MLP50+ft", description="pipeline name of the target-shape "
                                     "variant (None: skip)")
    target_finetune_tokens: int = Field(40_000, ge=0, description="fine-tuning budget of the target-shape variant")


class Scale(Group):
    """06_scale (`compstudy.scale`, `configs/scale.yaml`): the same recipe at several model sizes and
    token budgets, and the cost of a few compressions at each."""

    sizes: list[list[int]] = Field([[2, 4, 64], [2, 8, 128], [4, 8, 256]], min_length=1,
                                   description="[n_layer, n_head, n_embd] of each size, trained on size_tokens")
    size_tokens: int = Field(2_000_000, ge=1, description="training tokens of every size")
    token_budgets: list[int] = Field([500_000, 2_000_000, 6_000_000], description="training tokens of the "
                                     "baseline's own size (n_layer, n_head, n_embd)")
    techniques: list[str] = Field(["Base4b", "Basehqq3", "Basegptq3", "AH80", "Mag50"], min_length=1,
                                  description="variant names measured at every point (compstudy.pipeline grammar)")


class Comparison(Group):
    """05_comparison: the optimization equation opt = P_c^gamma * (alpha*T_c + beta*E_c) (Wallace
    et al. 2025, with gamma = 1.5)."""

    alpha: float = Field(0.5, ge=0, description="weight of the runtime ratio T_c")
    beta: float = Field(0.5, ge=0, description="weight of the energy ratio E_c")
    gamma: float = Field(1.5, gt=0, description="exponent of the perplexity ratio P_c")
    base_variant: str = Field("Base", description="the variant every ratio is taken against")
    run: str = Field("latest", description="which run of the study: a run id, 'latest', or '-2' for the one before")
    n_boot: int = Field(2000, ge=10, description="bootstrap resamples of the intervals (scipy.stats.bootstrap)")
    scale_study: str = Field("scale", description="the study whose scale points (notebook 06, results/<study>/"
                             "scale_points.csv) decide finding (h) when this run has none of its own")
    top: int = Field(12, ge=1, description="variants shown in the ranking and the sensitivity figure")


SHARED: tuple[type[Group], ...] = (Baseline, Evaluation, Distillation, Finetuning, PruningCriteria)

# notebook (file stem) -> (its shared groups, its own group)
NOTEBOOKS: dict[str, tuple[tuple[type[Group], ...], type[Group]]] = {
    "00_baseline": ((Baseline, Evaluation), PlateauCheck),
    "01_quantization": ((Baseline, Evaluation), Quantization),
    "02_distillation": ((Baseline, Evaluation, Distillation, Finetuning), DistillationStudents),
    "03_pruning": ((Baseline, Evaluation, Finetuning, PruningCriteria), Pruning),
    "04_hybrid": ((Baseline, Evaluation, Distillation, Finetuning, PruningCriteria), Hybrid),
    "05_comparison": ((), Comparison),
    "06_scale": ((Baseline, Evaluation, Finetuning, PruningCriteria), Scale),
}


def names(group: type[Group]) -> list[str]:
    """The parameter names of a group, in declaration order."""
    return list(group.model_fields)


def shared_names(notebook: str | None = None) -> list[str]:
    """Names of the shared parameters `notebook` uses (every shared name when None), each once (a
    name in two groups, `device`, is one declaration: `schema.DEVICE`)."""
    groups = SHARED if notebook is None else NOTEBOOKS[_stem(notebook)][0]
    return list(dict.fromkeys(n for g in groups for n in names(g)))


def own_names(notebook: str) -> list[str]:
    """Names of `notebook`'s own parameters (its parameters cell, besides `study` and `shared`)."""
    return names(NOTEBOOKS[_stem(notebook)][1])


def known(notebook: str) -> bool:
    """Whether `notebook` (a path or stem) is one of the study's notebooks described here."""
    return _stem(notebook) in NOTEBOOKS


def _stem(notebook) -> str:
    stem = str(notebook).replace("\\", "/").rsplit("/", 1)[-1]
    return stem[:-len(".ipynb")] if stem.endswith(".ipynb") else stem


def _describe(errors: list, group: type[Group], given: dict, label: str) -> list[str]:
    lines = []
    for err in errors:
        loc = err["loc"]
        if not loc:  # a rule over the whole group (`Group._no_booleans_for_numbers`): its message says it all
            lines.append(f"{err['msg'].removeprefix('Value error, ')} ({label})")
            continue
        name = str(loc[0])
        if err["type"] == "extra_forbidden":
            continue  # unknown names are reported by the caller, with the allowed names
        value = given.get(name, err.get("input"))
        where = name + "".join(f"[{i}]" for i in loc[1:] if isinstance(i, int))
        lines.append(f"{where} = {value!r} ({label}): {err['msg']}; allowed: {_allowed(group, name)}")
    return lines


def check(notebook: str, shared: dict | None = None, own: dict | None = None) -> dict:
    """Validate one notebook's parameters against the schema and return them all, resolved
    (defaults filled in, values coerced to their declared types), as a plain dict.

    Args:
        notebook: a notebook's file name or stem, e.g. "03_pruning" (a key of `NOTEBOOKS`).
        shared: values of shared parameters (names of `shared_names(notebook)`).
        own: values of the notebook's own parameters (names of `own_names(notebook)`).

    Beyond each field's type and range, checks the cheap cross-field rules (no model is built):
    the baseline's shape (`baseline.BaselineConfig`), the protocol (`measure.EvalConfig`),
    eval_context and seq_len within n_positions, every quantization suffix, distillation and
    pruning configs, the hybrid grid's names.

    Raises:
        ParameterError listing every bad parameter with the value given and what is allowed,
            and every unknown name with the names allowed.
        KeyError if `notebook` is not one of `NOTEBOOKS`.
    """
    stem = _stem(notebook)
    shared_groups, own_group = NOTEBOOKS[stem]
    shared, own = dict(shared or {}), dict(own or {})
    problems = []
    unknown_shared = sorted(set(shared) - set(shared_names(stem)))
    if unknown_shared:
        problems.append(f"{stem} uses no shared parameter(s) {unknown_shared}; its shared parameters: "
                        f"{shared_names(stem) or 'none'}")
    unknown_own = sorted(set(own) - set(names(own_group)))
    if unknown_own:
        problems.append(f"{stem} has no parameter(s) {unknown_own}; its own parameters: {names(own_group)}")
    resolved = {}
    for group, given in [(g, shared) for g in shared_groups] + [(own_group, own)]:
        values = {k: v for k, v in given.items() if k in group.model_fields}
        try:
            resolved.update(group(**values).model_dump())
        except ValidationError as exc:
            problems += _describe(exc.errors(), group, values, group.__name__)
    if not problems:
        problems += _cross_check(stem, resolved)
    if problems:
        raise ParameterError(stem, problems)
    return resolved


def _cross_check(stem: str, p: dict) -> list[str]:
    """Rules that span fields, checked by building the library's (cheap) config objects."""
    from . import pipeline  # the naming grammar (cheap: no model is built)

    problems = []

    def attempt(label, build):
        try:
            build()
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{label}: {exc}")

    if "n_layer" in p:
        if p["model"] is None and p["eval_context"] is not None and p["eval_context"] > p["n_positions"]:
            problems.append(f"eval_context = {p['eval_context']!r}: must be <= n_positions ({p['n_positions']}), "
                            f"the context of the model trained from scratch; None uses the model's context")
    if stem == "01_quantization":
        from . import quantize

        for v in p["variants"]:
            attempt(f"variants: {v!r}", lambda v=v: quantize.QuantConfig.from_name(v))
        for v in p["bits_sweep"]:
            attempt(f"bits_sweep: {v!r}", lambda v=v: pipeline.Pipeline.from_name(f"Base{v}"))
        if any(b < 1 for b in p["batch_sizes"] + p["generate_batch_sizes"]):
            problems.append(f"batch_sizes = {p['batch_sizes']!r}, generate_batch_sizes = {p['generate_batch_sizes']!r}:"
                            f" every batch size must be >= 1")
    if stem in ("02_distillation", "04_hybrid"):
        from . import distill

        attempt("distillation", lambda: distill.DistillConfig.student(p))
    if stem == "03_pruning":
        for name, values in (("head_keep", p["head_keep"]), ("sparsities", p["sparsities"]),
                             *((k, p[k]) for k in ("dose_heads", "dose_depth", "dose_mlp"))):
            lo_ok = (lambda x: 0 <= x < 1) if name == "sparsities" else (lambda x: 0 < x <= 1)
            bad = [x for x in values if not lo_ok(x)]
            if bad:
                allowed = "sparsities in [0, 1)" if name == "sparsities" else "keep ratios in (0, 1]"
                problems.append(f"{name} = {values!r}: {bad} out of range; allowed: {allowed}")
    if stem == "06_scale":
        for name in p["techniques"]:
            attempt(f"techniques: {name!r}", lambda name=name: pipeline.Pipeline.from_name(name))
        for shape in p["sizes"]:
            if len(shape) != 3 or any(v < 1 for v in shape) or shape[2] % shape[1]:
                problems.append(f"sizes: {shape!r} is not [n_layer, n_head, n_embd] (all >= 1, n_head dividing n_embd)")
        if any(t < 1 for t in p["token_budgets"]):
            problems.append(f"token_budgets = {p['token_budgets']!r}: every budget must be >= 1")
    if stem == "04_hybrid":
        grid = pipeline.paper_grid(p["grid_bases"], p["grid_heads"], p["grid_quants"])
        for name in grid + ([p["target_shape"]] if p["target_shape"] else []):
            attempt(f"variant {name!r} (grid_bases, grid_heads, grid_quants, target_shape)",
                    lambda name=name: pipeline.Pipeline.from_name(name, pipeline.StepDefaults()))
        attempt("minitron_widths", lambda: pipeline.check_width_axes(p["minitron_widths"]))
    return problems


class Resolved(dict):
    """A notebook's resolved parameters: a dict (for the configs' `from_params`) whose entries
    also read as attributes (`P.n_layer`)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}; parameters: {sorted(self)}") from None


def resolve(notebook: str, shared: dict | None, scope: dict) -> Resolved:
    """A notebook's parameters, validated: `shared` (the parameters cell's dict, filled by the
    runner) plus the notebook's own parameters read from `scope` (its `globals()`), with the
    schema's defaults for the rest, and `study` from `scope`. A shared parameter that `scope`
    holds by name (injected by papermill directly, `-p n_layer 4`) wins over `shared`.

    Raises ParameterError (see `check`).
    """
    own = {k: scope[k] for k in own_names(notebook) if k in scope}
    # a shared parameter injected by name (papermill -p n_layer 4, outside the runner) is used, not ignored
    by_name = {k: scope[k] for k in shared_names(notebook) if k in scope}
    study = scope.get("study", INTERACTIVE)
    if not shared and study == INTERACTIVE:  # opened in Jupyter and run top to bottom: the interactive config
        # the config gives the shared parameters (the study's model, corpora, budgets); the notebook's own
        # parameters are what its parameters cell says: a value written there always wins, the default included
        study, config_shared, _ = interactive_config(notebook)
        shared = config_shared
    resolved = Resolved(check(notebook, {**(shared or {}), **by_name}, own))
    resolved["study"] = study
    return resolved


INTERACTIVE = "interactive"  # the placeholder study name of the notebooks' parameters cells
CONFIG_ENV = "COMPSTUDY_CONFIG"  # the config a notebook opened in Jupyter runs (default configs/class.yaml)


def interactive_config(notebook: str) -> tuple[str, dict, dict]:
    """The study a notebook runs when opened in Jupyter and run top to bottom (no runner): the
    config named by the environment variable COMPSTUDY_CONFIG, else `configs/class.yaml` (the
    whole study in minutes). Returns (its study name, its shared parameters that `notebook` uses,
    the notebook's own parameters from its entry). `resolve` uses the shared ones: in Jupyter the
    notebook's own parameters are those of its parameters cell. Raises ParameterError naming the file if it is
    missing or not a study config."""
    import os

    from . import paths
    from .configs import ConfigError, read_config

    path = Path(os.environ.get(CONFIG_ENV) or paths.repo_root() / "configs" / "class.yaml")
    stem = _stem(notebook)
    try:
        cfg = read_config(path)  # as the runner reads it: `extends` resolved
        study = str(cfg["study"])
    except (ConfigError, KeyError) as exc:
        raise ParameterError(notebook, [f"{CONFIG_ENV} = {str(path)!r}: not a usable study config "
                                        f"({type(exc).__name__}: {exc}); allowed: a YAML file like configs/class.yaml"])
    entry = next((e.get("parameters") or {} for e in cfg["notebooks"] if Path(str(e.get("path", ""))).stem == stem), {})
    parameters = cfg.get("parameters") or {}
    shared = {k: v for k, v in {**parameters, **entry}.items() if k in shared_names(notebook)}
    own = {k: v for k, v in entry.items() if k in own_names(notebook)}
    return study, shared, own


def defaults(notebook: str | None = None) -> dict:
    """Every parameter's default (of `notebook` only when given)."""
    groups = list(SHARED) + [own for _, own in NOTEBOOKS.values()] if notebook is None else \
        [*NOTEBOOKS[_stem(notebook)][0], NOTEBOOKS[_stem(notebook)][1]]
    return {k: v for g in groups for k, v in g().model_dump().items()}


def describe(notebook: str | None = None) -> str:
    """The schema as text: each group with its parameters' defaults, types, ranges and
    documentation (every group, or those `notebook` uses)."""
    if notebook is None:
        groups = [(g, "shared: " + ", ".join(s for s, (sh, _) in NOTEBOOKS.items() if g in sh)) for g in SHARED]
        groups += [(own, f"own parameters of {s}") for s, (_, own) in NOTEBOOKS.items()]
    else:
        shared_groups, own = NOTEBOOKS[_stem(notebook)]
        groups = [(g, "shared") for g in shared_groups] + [(own, "this notebook's own")]
    lines = []
    for group, role in groups:
        lines.append(f"# {group.__name__} ({role}): {(group.__doc__ or '').strip().splitlines()[0]}")
        for name in names(group):
            default = group.model_fields[name].default
            lines.append(f"{name} = {default!r}    # {_allowed(group, name)}")
        lines.append("")
    return "\n".join(lines)


def recipes_table(configs: dict):
    """The recipes a notebook builds, as a table for its reader: one row per variant name, one
    column per field of its config dataclass (`QuantConfig`, `DistillConfig`, `PruneConfig`, ...).
    `configs`: variant name -> dataclass instance. Returns a pandas DataFrame."""
    import dataclasses

    import pandas as pd

    return pd.DataFrame.from_dict({name: dataclasses.asdict(c) for name, c in configs.items()}, orient="index")
