"""Scale: how the cost of each technique moves with model size and training tokens (issue 29,
notebook 06, `configs/scale.yaml`).

The same recipe (the study's baseline recipe: corpora, batch, learning rate, schedule) trained at
several points: several model sizes at one token budget (series `size`) and the study's own size
at several token budgets (series `tokens`). At each point the same compressions are measured
beside that point's Base, once each, on the same evaluation tokens (perplexity is deterministic for
a given text): by default NF4 (`Base4b`), 3-bit HQQ and GPTQ (`Basehqq3`, `Basegptq3`), AH80 and
50 % magnitude sparsity (`Mag50`).

Kumar et al. 2024 ("Scaling Laws for Precision", arXiv:2411.04330) and Ouyang et al. 2025 ("Low-Bit
Quantization Favors Undertrained LLMs", ACL 2025) report that post-training quantization costs more
perplexity the more tokens per parameter a model was trained on: at a fixed size the cost grows
with the tokens, at fixed tokens it falls with the size. Both series vary tokens per parameter;
`compstudy.findings.finding_h` checks the claim on the points.

The offline text is about 0.7 M tokens of training text (WikiText-2 valid, 90 % of
tinyshakespeare, the study's 2,048-token BPE): a budget above it repeats the text (epochs), which
is not the unique-token budget the papers vary; `points_table` records `epochs`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pandas as pd

from . import baseline, data, experiments, pipeline, runs
from .measure import EvalConfig

TECHNIQUES = ("Base4b", "Basehqq3", "Basegptq3", "AH80", "Mag50")
POINTS_FILE = "scale_points.csv"


@dataclass(frozen=True)
class ScalePoint:
    """One trained baseline of the scale study.

    Attributes:
        key: short id used in notebook labels (`L2-H8-E128-T2000k`).
        series: "size", "tokens", or "size+tokens" for the point both series share.
        config: its `baseline.BaselineConfig`.
    """

    key: str
    series: str
    config: baseline.BaselineConfig

    @property
    def label(self) -> str:
        c = self.config
        return f"{c.n_layer}x{c.n_head}x{c.n_embd}, {c.train_tokens / 1e6:g} M tokens"


def plan(config: baseline.BaselineConfig, sizes, size_tokens: int, token_budgets) -> list[ScalePoint]:
    """The scale points: every shape of `sizes` ([n_layer, n_head, n_embd] triples) trained on
    `size_tokens` tokens, and `config`'s own shape trained on each of `token_budgets`; the point
    both series share appears once. Every other parameter is `config`'s (the same recipe).

    Raises ValueError, before anything is trained, for a shape whose heads do not divide its width,
    a token budget < 1, or no point at all.
    """
    points: dict[tuple, ScalePoint] = {}

    def add(n_layer, n_head, n_embd, tokens, series):
        if n_layer < 1 or n_head < 1 or n_embd % n_head:
            raise ValueError(f"sizes: [{n_layer}, {n_head}, {n_embd}] is not a shape (n_head must divide n_embd, all >= 1)")
        if tokens < 1:
            raise ValueError(f"token budgets must be >= 1, got {tokens}")
        k = (n_layer, n_head, n_embd, int(tokens))
        if k in points:
            points[k] = replace(points[k], series="size+tokens")
            return
        cfg = config.replace(n_layer=n_layer, n_head=n_head, n_embd=n_embd, train_tokens=int(tokens))
        points[k] = ScalePoint(f"L{n_layer}-H{n_head}-E{n_embd}-T{int(tokens) // 1000}k", series, cfg)

    for n_layer, n_head, n_embd in sizes:
        add(int(n_layer), int(n_head), int(n_embd), size_tokens, "size")
    for tokens in token_budgets:
        add(config.n_layer, config.n_head, config.n_embd, tokens, "tokens")
    if not points:
        raise ValueError("no scale point: give sizes or token_budgets")
    return list(points.values())


def measure_point(point: ScalePoint, techniques, *, study: str, datasets, eval_config: EvalConfig,
                  defaults=None, device: str = "auto", progress: bool = False) -> tuple[dict, pd.DataFrame]:
    """Train (or load) the point's baseline, build each of `techniques` from it, and measure them
    with it once each (`experiments.measure_variants`, group `06_scale:<key>`, rows appended).
    Returns (the point's facts: series, shape, parameters, tokens, tokens per parameter, epochs
    over the training text, training seconds; the measurement rows).

    Raises ValueError for a technique name the grammar does not know, before training.
    """
    names = [pipeline.Pipeline.from_name(t, defaults or pipeline.StepDefaults()).name for t in techniques]
    base = baseline.get_baseline(point.config, progress=progress)
    arts = {n: pipeline.build(base, pipeline.Pipeline.from_name(n, defaults or pipeline.StepDefaults()),
                              point.config.train_corpora, device=device, defaults=defaults, progress=False)
            for n in names}
    rows = experiments.measure_variants({"Base": base, **arts}, study, datasets, eval_config,
                                        notebook=f"06_scale:{point.key}", per_round=True)
    train_ids, _ = data.training_streams(base.tokenizer, point.config.train_corpora, point.config.val_fraction)
    n_params = int(base.recipe["size"]["n_params"])
    facts = {"point": point.key, "label": point.label, "series": point.series, "n_layer": point.config.n_layer,
             "n_head": point.config.n_head, "n_embd": point.config.n_embd, "n_params": n_params,
             "train_tokens": int(point.config.train_tokens),
             "tokens_per_param": point.config.train_tokens / n_params,
             "epochs": point.config.train_tokens / len(train_ids), "train_s": float(base.cost.get("seconds", math.nan)),
             "base_bits_per_byte": float(rows[rows["variant"] == "Base"]["bits_per_byte"].mean())}
    return facts, rows


def points_table(facts: list[dict], rows: pd.DataFrame, run_id: str = "") -> pd.DataFrame:
    """One row per (point, technique): the point's facts and the technique's perplexity change
    against the point's Base (%, mean over the evaluation corpora; `lo` / `hi` their range), its
    bytes on disk against Base's (`size_fraction`), and the run it was measured in."""
    out = []
    for f in facts:
        g = rows[rows["notebook"] == f"06_scale:{f['point']}"]
        if "set_aside" in g:
            g = g[g["set_aside"].fillna("").astype(str).eq("")]
        ppl = g.groupby(["variant", "dataset"])["perplexity"].median().unstack("dataset")
        size = g.groupby("variant")["weight_bytes"].median()
        if "Base" not in ppl.index:
            raise ValueError(f"scale point {f['point']}: no Base rows")
        for variant in ppl.index.drop("Base"):
            change = 100 * (ppl.loc[variant] / ppl.loc["Base"] - 1)
            out.append({**f, "technique": variant, "perplexity_change_pct": float(change.mean()),
                        "lo": float(change.min()), "hi": float(change.max()),
                        "size_fraction": float(size[variant] / size["Base"]), "run_id": run_id})
    return pd.DataFrame(out)


def load_points(study: str = "scale") -> tuple[pd.DataFrame | None, str]:
    """The committed scale points (`results/<study>/scale_points.csv`, written by notebook 06) and
    a sentence of where they come from (run id and commit, from the study's PROVENANCE.md when
    there); (None, why) when there are none."""
    from . import paths

    path = paths.results_dir(study) / POINTS_FILE
    if not path.exists():
        return None, (f"no scale points: {paths.shown(path)} does not exist "
                      f"(python -m compstudy run configs/scale.yaml writes it)")
    table = pd.read_csv(path)
    prov = paths.results_dir(study) / "PROVENANCE.md"
    commit = ""
    if prov.exists():
        for line in prov.read_text(encoding="utf-8").splitlines():
            if line.startswith("- commit:"):
                commit = line.removeprefix("- commit:").strip()
    runs_ = ", ".join(sorted(set(table["run_id"].dropna().astype(str)))) if "run_id" in table else "?"
    return table, (f"{len(table['point'].unique())} scale points from study {study!r} (run {runs_}"
                   + (f", commit {commit}" if commit else "") + f"; {paths.shown(path)})")


def save_points(study: str, table: pd.DataFrame):
    """Write the points table to `results/<study>/scale_points.csv` and the run's own folder."""
    return runs.save_file(study, POINTS_FILE, table.to_csv(index=False))
