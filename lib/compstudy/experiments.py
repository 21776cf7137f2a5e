"""Experiments: what a notebook runs, measures and records, built on the techniques
(`pipeline`, `prune`, `distill`, `quantize`) and the measurement protocol (`measure`), which
neither store nor register anything themselves.

- `measure_variants`: a notebook's variants measured together with their base (`measure.evaluate_many`),
  stamped with the run (`runs.current`) and appended to `results/<study>/measurements.csv` dataset by dataset;
- `time_generation`: timed generation (`measure.time_generation`) appended to `generation.csv`;
- `sparsity_sweep`: notebook 03's unstructured pruning sweep (magnitude per layer and global, Wanda),
  before and after fine-tuning, with the unpruned control `Mag0+ft`;
- `dose_sweep`: a dose-response sweep (issue 29): variants of one technique at several doses (bits
  per weight, fractions kept), measured together with Base, each row carrying its dose
  (`dose_point`; read back by `compstudy.dose`);
- `minitron`: notebook 04's prune-then-distil set: depth against width recipes at equal parameters,
  each pruned and `+KD`, with its from-scratch control, the target shape and the equal-training controls.
"""
from __future__ import annotations

from . import results, runs
from .finetune import FinetuneConfig
from .prune import PruneConfig
from .measure import EvalConfig, evaluate_many, summarize
from .models import Artifact, context_length, resolve_device


def comparable(datasets, context: int, stride: int, device: str, base_key: str) -> dict:
    """What decides whether two measurements outside the runner can share a run (`runs.current`'s
    interactive run): the datasets, window geometry, device and the baseline's artifact."""
    return {"datasets": list(datasets), "context": context, "stride": stride, "device": device, "base": base_key}


def _variant_extra(artifact, notebook: str, training_tokens: int = 0, control: str | None = None,
                   dose: tuple | None = None) -> dict:
    cost = artifact.cost
    axis, method, value = dose if dose else ("", "", float("nan"))
    return {"notebook": notebook, "family": getattr(artifact.model.config, "model_type", ""), "artifact": artifact.key,
            "cost_s": cost.get("seconds", 0.0), "cost_kwh": cost.get("energy_kwh", 0.0),
            "cost_method": cost.get("method", ""), "training_tokens": int(training_tokens), "control": control or "",
            "dose_axis": axis, "dose_method": method, "dose": value}


def measure_variants(artifacts: dict, study: str, datasets, config: EvalConfig, *, notebook: str = "",
                     trained: dict | None = None, base: str = "Base", per_round: bool = False,
                     doses: dict | None = None):
    """Measure a notebook's variants together, interleaved and paired with their base
    (`evaluate_many`), append the records to `results/<study>/measurements.csv` dataset by dataset,
    and return their per-(variant, dataset) summary (`summarize`), or with `per_round=True` every
    pass as a DataFrame (one row per variant, dataset and round: what paired ratios and their
    bootstrap intervals need, `ratios.ratio_intervals`).

    Args:
        artifacts: variant name -> `compstudy.models.Artifact`; must include `base` (measured in
            the same rounds, so that every ratio is paired). Their recipes give each variant's
            production cost (`cost_*` columns), size (computed at build time) and cache key.
        study: results/<study>/; notebook: provenance column.
        datasets, config: as for `evaluate_many`.
        trained: variant name -> {"training_tokens": N, "control": "Base+ft<N>"} for variants
            whose production added training (`pipeline.control_kwargs`), recorded so that
            notebook 05 can put each beside its equal-training control.
        base: the reference variant's name.
        doses: variant name -> (axis, method, dose) for the points of a dose-response sweep
            (`dose_point`), recorded in the columns dose_axis, dose_method, dose.

    Raises ValueError naming the variants given when `base` is missing.
    """
    if base not in artifacts:
        raise ValueError(f"artifacts must include the base variant {base!r} (measured in the same rounds as the "
                         f"others, for paired ratios); got {list(artifacts)}")
    trained = trained or {}
    artifacts = {base: artifacts[base], **{n: a for n, a in artifacts.items() if n != base}}  # base first: timed itself
    doses = doses or {}
    extra = {n: _variant_extra(a, notebook, **trained.get(n, {}), dose=doses.get(n)) for n, a in artifacts.items()}
    first = artifacts[base].model
    context = min(config.eval_context or 10**9, context_length(first))
    stride = min(config.eval_stride or max(1, context // 2), context - 1)
    run_id, phash = runs.current(comparable(datasets, context, stride, resolve_device(config.device), artifacts[base].key))

    def write(rows):  # stamped with the run, then written dataset by dataset: a later failure loses nothing
        for r in rows:
            r.update(run_id=run_id, params_hash=phash)
        results.append(study, rows)

    records = evaluate_many({n: (a.model, a.tokenizer) for n, a in artifacts.items()}, datasets, config, study=study,
                            extra=extra, sizes={n: a.recipe.get("size") for n, a in artifacts.items()},
                            on_dataset=write)
    if per_round:
        import pandas as pd

        return pd.DataFrame(records)
    return summarize(records)


def time_generation(model, tokenizer, variant: str, study: str, **kwargs) -> list[dict]:
    """`measure.time_generation`, its records appended to `results/<study>/generation.csv`."""
    from .measure import time_generation as timed

    records = timed(model, tokenizer, variant, study, **kwargs)
    results.append(study, records, filename="generation.csv")
    return records


def _sweep_name(cfg: PruneConfig) -> str:
    """A sweep point's variant name. Sparsity 0 is the unpruned model whatever the scope: `Base`,
    and fine-tuned `Mag0+ft` (the same model under every scope, so built and named once)."""
    if cfg.sparsity == 0:
        return "Mag0+ft" if cfg.finetune_tokens else "Base"
    return cfg.name


def _sweep_configs(sparsities, scopes, finetune_tokens: int, base_config: PruneConfig, wanda: bool) -> list:
    """Every configuration of the sweep, sparsity 0 (the unpruned model) included, validated.

    Raises ValueError for a sparsity outside [0, 1) or an unknown scope."""
    from .prune import ALLOCATIONS

    for s in sparsities:
        if not 0 <= s < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {s}")
    for scope in scopes:
        if scope not in ALLOCATIONS:
            raise ValueError(f"scope must be one of {ALLOCATIONS}, got {scope!r}")
    levels = sorted({0.0, *map(float, sparsities)})
    budgets = sorted({0, int(finetune_tokens)})
    configs = [PruneConfig.unstructured("magnitude", s, base_config, magnitude_scope=scope, finetune_tokens=ft)
               for scope in scopes for s in levels for ft in budgets]
    if wanda:  # sparsity 0 is the unpruned model again: Base and the Mag0+ft control stand for it
        configs += [PruneConfig.unstructured("wanda", s, base_config, finetune_tokens=ft)
                    for s in levels if s > 0 for ft in budgets]
    return configs


def sweep_points(sparsities, scopes, finetune_tokens: int, base_config: PruneConfig | None = None,
                 wanda: bool = False) -> dict:
    """The sweep's variants, each once: name -> its `PruneConfig` (`Base`: sparsity 0, the unpruned
    model as the sweep's own artifact; `Mag0+ft`: the unpruned model fine-tuned, one model for every scope).

    Raises ValueError for a sparsity outside [0, 1) or an unknown scope."""
    out = {}
    for cfg in _sweep_configs(sparsities, scopes, finetune_tokens, base_config or PruneConfig(), wanda):
        name = _sweep_name(cfg)
        out.setdefault(name, cfg)
    return out


def sweep_artifact(parent: Artifact, cfg: PruneConfig, train_corpora, device: str = "auto",
                   finetuning: FinetuneConfig = FinetuneConfig()) -> Artifact:
    """One point of the sweep: `parent` pruned by `cfg` (and fine-tuned by its budget), cached."""
    from .prune import get_pruned

    return get_pruned(parent, cfg, train_corpora, device=device, progress=False, finetuning=finetuning)


def sparsity_sweep(parent: Artifact, sparsities, scopes, finetune_tokens: int, train_corpora, *, study: str,
                   datasets, eval_config, notebook: str = "", device: str = "auto",
                   base_config: PruneConfig | None = None, wanda: bool = False,
                   finetuning: FinetuneConfig = FinetuneConfig()):
    """Magnitude-prune `parent` at every sparsity and scope (and, with `wanda`, prune it by Wanda,
    `wanda_prune`, at the same sparsities: its rows have scope "wanda"), before and (if `finetune_tokens`)
    after fine-tuning; measure each variant with the study's protocol (records appended) and
    return one row per (scope, sparsity, fine-tuned, dataset): perplexity, reached sparsity,
    non-zero parameters, bytes dense and as CSR, runtime, cost. All points are measured together,
    in interleaved rounds with the unpruned `Base` (`measure_variants`).

    Sparsity 0 is always included: the unpruned parent, measured with the sweep's settings as
    `Base` (the reference of the sweep's ratios), and, fine-tuned with the same budget, `Mag0+ft`
    (one model for every scope, named once): the control that shows how much of a fine-tuned model's perplexity comes from the
    extra training rather than from the pruning.

    Raises ValueError for a sparsity outside [0, 1) or an unknown scope, before any pruning.
    """
    import pandas as pd

    from .prune import sparse_storage_bytes

    base_config = base_config or PruneConfig()
    points = sweep_points(sparsities, scopes, finetune_tokens, base_config, wanda)
    built = {name: (cfg, sweep_artifact(parent, cfg, train_corpora, device=device, finetuning=finetuning))
             for name, cfg in points.items()}
    configs = _sweep_configs(sparsities, scopes, finetune_tokens, base_config, wanda)
    # every point of the sweep with its Base, in interleaved rounds (all held in memory at once)
    # recorded under notebook "<notebook>:sweep": a measurement group of its own, with its own Base rounds
    # fine-tuned points trained on finetune_tokens more; their equal-training control is Mag0+ft, the
    # unpruned model fine-tuned alike (itself a control)
    trained = {name: {"training_tokens": cfg.finetune_tokens, "control": "" if name == "Mag0+ft" else "Mag0+ft"}
               for name, (cfg, _) in built.items() if cfg.finetune_tokens}
    doses = {name: _unstructured_dose(cfg) for name, (cfg, _) in built.items() if cfg.sparsity}
    summary = measure_variants({name: art for name, (_, art) in built.items()}, study, datasets, eval_config,
                               notebook=f"{notebook}:sweep" if notebook else "sweep", trained=trained, doses=doses)
    rows = []
    for cfg in configs:
        name = _sweep_name(cfg)
        art = built[name][1]
        storage = sparse_storage_bytes(art.model)
        for _, r in summary[summary["variant"] == name].iterrows():
            rows.append({"variant": name, "scope": "wanda" if cfg.kind == "wanda" else cfg.magnitude_scope,
                         "sparsity": cfg.sparsity,
                         "fine_tuned": bool(cfg.finetune_tokens), "dataset": r["dataset"],
                         "perplexity": r["perplexity"], "reached_sparsity": art.recipe["facts"]["sparsity"],
                         "n_params_nonzero": art.recipe["size"]["n_params_nonzero"],
                         "weight_bytes": art.recipe["size"]["weight_bytes"],
                         "csr_model_bytes": storage["model_with_csr_bytes"], "runtime_s": r["runtime_s"],
                         "cost_s": art.cost["seconds"]})
    return pd.DataFrame(rows)




def _unstructured_dose(cfg) -> tuple[str, str, float]:
    method = {"magnitude": f"magnitude ({cfg.magnitude_scope})", "wanda": "Wanda"}.get(cfg.kind, cfg.kind)
    return ("weights kept", method, round(1.0 - float(cfg.sparsity), 6))


def dose_point(pipeline, artifact: Artifact, base: Artifact) -> tuple[str, str, float] | None:
    """The (axis, method, dose) of a variant on the dose-response axes of `compstudy.dose`, from its
    last step: bits per weight for quantization (the method's nominal bits); for structured
    pruning the fraction of heads / blocks / MLP neurons / embedding channels the built model
    really kept against `base` (a keep ratio that rounds to the same count is the same point);
    1 - sparsity for unstructured pruning. None for a step with no dose (bf16, dynamic int8,
    distillation, fine-tuning)."""
    from . import surgery
    from .families import adapter_for

    if not pipeline.steps:
        return None
    step = pipeline.steps[-1]
    key, config = step.technique.key, step.config
    quant = {"quantize:int8": ("bitsandbytes (LLM.int8(), NF4)", 8.0), "quantize:nf4": ("bitsandbytes (LLM.int8(), NF4)", 4.0),
             "quantize:fp4": ("bitsandbytes FP4", 4.0)}
    if key in quant:
        return ("weight bits", *quant[key])
    if key in ("quantize:hqq", "quantize:gptq"):
        return ("weight bits", "HQQ" if key == "quantize:hqq" else "GPTQ (dequantized)", float(config.bits))
    if key == "prune:heads":
        kept = sum(surgery.head_counts(artifact.model)) / sum(surgery.head_counts(base.model))
        return ("heads kept", f"heads ({config.head_importance} importance)", round(kept, 6))
    if key == "prune:depth":
        return ("depth / width kept", "depth (Block Importance)",
                round(len(surgery.blocks(artifact.model)) / len(surgery.blocks(base.model)), 6))
    if key == "prune:mlp":
        width = adapter_for(artifact.model).mlp_width
        kept = width(surgery.blocks(artifact.model)[0]) / width(surgery.blocks(base.model)[0])
        return ("depth / width kept", "MLP width (mean activation)", round(kept, 6))
    if key == "prune:embedding":
        fam = adapter_for(artifact.model)
        return ("depth / width kept", "embedding channels", round(fam.hidden_size(artifact.model) / fam.hidden_size(base.model), 6))
    if key in ("prune:magnitude", "prune:wanda"):
        return _unstructured_dose(config)
    return None


def dose_sweep(base: Artifact, names, defaults, train_corpora, *, study: str, datasets, eval_config: EvalConfig,
               notebook: str, device: str = "auto"):
    """A dose-response sweep: build every variant of `names` (e.g. AH90 ... AH20, Basehqq8 ...
    Basehqq2), measure them together with `base` in their own group (`<notebook>:dose`), each row
    carrying its dose (`dose_point`). A name whose built model is the same point as an earlier one
    (a keep ratio that rounds to the same shape) or as Base (nothing removed) is left out, with
    the reason; so is a name whose technique does not apply to this model (`registry.NotApplicable`:
    GPTQModel on a family it does not define). Returns (the measurement rows, with their dose
    columns: `dose.curves` reads them, {left-out name: reason}).

    Raises ValueError, before building anything, for a name the grammar does not know or a name
    with no dose (bf16, dynamic int8, distillation).
    """
    from . import pipeline

    parsed = {name: pipeline.Pipeline.from_name(name, defaults) for name in names}
    for name, p in parsed.items():
        if not p.steps or p.steps[-1].technique.key.startswith(("distill", "kd", "finetune")) or \
                p.steps[-1].technique.key in ("quantize:bf16", "quantize:dynamic-int8"):
            raise ValueError(f"dose sweep: {name!r} has no dose (bits per weight or fraction kept); "
                             f"allowed: quantization to 8/4/3/2 bits, head / depth / MLP / embedding / magnitude pruning")
    from .registry import NotApplicable

    built, doses, skipped = {}, {}, {}
    for name, p in parsed.items():
        try:
            art = pipeline.build(base, p, train_corpora, device=device, defaults=defaults, progress=False)
        except NotApplicable as exc:  # e.g. GPTQModel on a family it does not define: the curve goes on without it
            skipped[name] = str(exc)
            continue
        point = dose_point(p, art, base)
        same = [n for n, d in doses.items() if d == point]
        if point[0] != "weight bits" and point[2] >= 1.0:
            skipped[name] = "keeps everything at this size (the same model as Base)"
        elif same:
            skipped[name] = f"the same shape as {same[0]} at this size ({point[2]:g} kept)"
        else:
            built[p.name], doses[p.name] = art, point
    rows = measure_variants({"Base": base, **built}, study, datasets, eval_config, notebook=f"{notebook}:dose",
                            doses=doses, per_round=True)
    return rows, skipped


def minitron_names(base: Artifact, defaults, train_corpora, *, depth_keep: float, widths, target_shape: str | None = None,
                   device: str = "auto", get=None) -> tuple[list[str], list, str, int]:
    """The names of notebook 04's Minitron set (see `minitron`), in build order, with the width
    plans, the depth variant's name and the parameters it removes. The depth variant is built
    (or, while planning, keyed) first: the width recipes are sized to remove as many parameters."""
    from . import pipeline
    from .surgery import percent_text

    get = get or (lambda name: pipeline.build(base, pipeline.Pipeline.from_name(name, defaults), train_corpora,
                                              device=device, defaults=defaults))
    depth_name = pipeline.Pipeline.from_name(f"Depth{percent_text(depth_keep)}", defaults).name
    depth = get(depth_name)
    removed = base.recipe["size"]["n_params"] - depth.recipe["size"]["n_params"]
    plans = [pipeline.width_plan_for_params(base, removed, axes) for axes in widths]
    names = []
    for name in [depth_name, *[plan.name for plan in plans]]:
        names += [name, f"{name}+KD", f"Scratch-{name}"]
    names += ([target_shape] if target_shape else []) + ["Distil"]
    names += sorted({pipeline.control_name(n, defaults) for n in names} - {None})
    return names, plans, depth_name, removed


def minitron(base: Artifact, defaults, train_corpora, *, depth_keep: float, widths, target_shape: str | None = None,
             device: str = "auto", grid: dict | None = None):
    """Notebook 04's Minitron set (Muralidharan et al. 2024): the depth pruning keeping `depth_keep`
    of the blocks, and each width recipe of `widths` (`surgery.WIDTH_RECIPES`) sized to remove as
    many parameters (`pipeline.width_plan_for_params`); each pruned shape alone and `+KD` (distilled
    from the unpruned baseline), each against the same shape trained from scratch (`Scratch-`, on
    the KD budget); the target shape (Sheared-LLaMA's idea) when given; `Distil`; and the
    equal-training control of every variant that trains. Artifacts already in `grid` are reused.

    Returns (variants: {name: Artifact}, plans: a DataFrame of each recipe's parameters and its
    difference to the depth variant's, depth_name, removed parameters).
    """
    import pandas as pd

    from . import pipeline

    grid = grid or {}

    def get(name):
        return grid.get(name) or pipeline.build(base, pipeline.Pipeline.from_name(name, defaults), train_corpora,
                                                device=device, defaults=defaults)

    names, plans, depth_name, removed = minitron_names(base, defaults, train_corpora, depth_keep=depth_keep,
                                                       widths=widths, target_shape=target_shape, device=device, get=get)
    variants = {name: get(name) for name in names}
    n_depth = variants[depth_name].recipe["size"]["n_params"]
    table = pd.DataFrame([{"recipe": "depth", "variant": depth_name, "parameters": n_depth, "difference to depth": 0,
                           "difference (%)": 0.0}]
                         + [{"recipe": plan.recipe, "variant": plan.name,
                             "parameters": variants[plan.name].recipe["size"]["n_params"],
                             "difference to depth": variants[plan.name].recipe["size"]["n_params"] - n_depth,
                             "difference (%)": 100 * (variants[plan.name].recipe["size"]["n_params"] / n_depth - 1)}
                            for plan in plans])
    return variants, table, depth_name, removed
