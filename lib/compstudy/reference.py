"""The seed paper's own numbers (`data/reference/`: Wallace et al. 2025's supplementary tables):
its headline changes and its ranking recomputed with the study's equation. Shown beside ours,
never mixed with them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import paths
from .ranking import opt
from .ratios import table1


def reference_path() -> Path:
    return paths.repo_root() / "data" / "reference" / "wallace2025_supplementary_tables.csv"


def load_paper(path: str | Path | None = None) -> pd.DataFrame:
    """The paper's supplementary tables: model, dataset, variant, perplexity, runtime_s, energy_kwh."""
    return pd.read_csv(path or reference_path())


def paper_changes(model: str = "gpt2", variants=None, datasets=None) -> pd.DataFrame:
    """The paper's headline numbers: per variant of `model`, the mean over datasets of the %
    change of perplexity, runtime and energy against its Base (e.g. gpt2 Base4b: +3.79 %,
    +4.86 %, -50.21 %). Rows in the paper's order."""
    paper = load_paper()
    paper = paper[paper["model"] == model]
    if paper.empty:
        raise ValueError(f"model {model!r} not in the paper's tables; models: {sorted(load_paper()['model'].unique())}")
    if datasets is not None:
        paper = paper[paper["dataset"].isin(datasets)]
    out = table1(paper.assign(repeat=0), base="Base", keys=())
    out.insert(0, "model", model)
    if variants is not None:
        out = out[out["variant"].isin(variants)]
    return out.reset_index(drop=True)


def paper_ranking(model: str = "gpt2", alpha: float = 0.5, beta: float = 0.5, gamma: float = 1.5) -> pd.DataFrame:
    """The equation on the paper's own numbers: per variant, P_c, T_c, E_c as the mean over the
    paper's datasets of the ratio to its Base, then `opt`, ranked (no intervals: one number per
    cell in the paper's tables)."""
    paper = load_paper()
    paper = paper[paper["model"] == model]
    base = paper[paper["variant"] == "Base"].set_index("dataset")
    r = paper.assign(P_c=paper["perplexity"] / paper["dataset"].map(base["perplexity"]),
                     T_c=paper["runtime_s"] / paper["dataset"].map(base["runtime_s"]),
                     E_c=paper["energy_kwh"] / paper["dataset"].map(base["energy_kwh"]))
    g = r.groupby("variant", sort=False)[["P_c", "T_c", "E_c"]].mean().reset_index()
    g["opt"] = opt(g["P_c"], g["T_c"], g["E_c"], alpha, beta, gamma)
    g = g.sort_values("opt").reset_index(drop=True)
    g.insert(0, "rank", range(1, len(g) + 1))
    return g
