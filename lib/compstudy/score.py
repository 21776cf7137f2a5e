"""Compare variants with their base: changes, ratios, and the paper's own reference numbers.

Wallace et al. (ICPE 2025) report, per variant, the percentage change of perplexity, runtime
and energy against the uncompressed base, averaged over their three datasets (WikiText-2, C4,
LAMBADA). `changes` computes the same from our measurements; `paper_changes` from the paper's
supplementary tables (`data/reference/`).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import paths

METRICS = ("perplexity", "runtime_s", "energy_kwh", "weight_bytes")  # weight_bytes: ours only


def reference_path() -> Path:
    return paths.repo_root() / "data" / "reference" / "wallace2025_supplementary_tables.csv"


def load_paper(path: str | Path | None = None) -> pd.DataFrame:
    """The paper's supplementary tables: model, dataset, variant, perplexity, runtime_s, energy_kwh."""
    return pd.read_csv(path or reference_path())


def medians(df: pd.DataFrame, keys=("variant", "dataset", "batch_size")) -> pd.DataFrame:
    """Median over repeats of each metric per `keys` (keys missing from `df` are dropped)."""
    keys = [k for k in keys if k in df.columns]
    cols = [c for c in (*METRICS, "bits_per_byte", "n_params", "n_params_nonzero",
                        "tokens_per_s", "cost_s", "cost_kwh") if c in df.columns]
    return df.groupby(keys, sort=False)[cols].median().reset_index()


def changes(df: pd.DataFrame, base: str = "Base", keys=("dataset", "batch_size")) -> pd.DataFrame:
    """Percentage change of each metric against `base` measured under the same `keys`.

    Args:
        df: measurements (one row per repeat or already reduced); medians are taken per
            (variant, *keys).
        base: the variant every other is compared with.

    Returns one row per (variant, *keys) with each metric, its `<metric>_change_pct`
    (100 * (x / x_base - 1)) and `<metric>_ratio` (x / x_base).

    Raises ValueError naming the missing rows if `base` was not measured under some key.
    """
    keys = [k for k in keys if k in df.columns]
    med = medians(df, ("variant", *keys))
    base_rows = med[med["variant"] == base].set_index(keys) if keys else med[med["variant"] == base]
    if base_rows.empty:
        raise ValueError(f"no rows of base variant {base!r}; variants present: {sorted(med['variant'].unique())}")
    out = []
    for _, row in med.iterrows():
        k = tuple(row[c] for c in keys) if keys else None
        try:
            b = base_rows.loc[k if len(keys) > 1 else k[0]] if keys else base_rows.iloc[0]
        except KeyError:
            raise ValueError(f"base {base!r} has no measurement for {dict(zip(keys, k))}") from None
        new = row.to_dict()
        for m in METRICS:
            if m in med.columns:
                new[f"{m}_ratio"] = row[m] / b[m]
                new[f"{m}_change_pct"] = 100 * (row[m] / b[m] - 1)
        out.append(new)
    return pd.DataFrame(out)


def table1(df: pd.DataFrame, base: str = "Base", keys=("batch_size",)) -> pd.DataFrame:
    """The paper's Table 1 shape: per variant, mean over datasets of perplexity, runtime and
    energy and of their % changes against `base` (changes are computed per dataset first)."""
    ch = changes(df, base, ("dataset", *keys))
    keys = [k for k in keys if k in ch.columns]
    cols = [c for m in METRICS for c in (m, f"{m}_change_pct") if c in ch.columns]
    return ch.groupby(["variant", *keys], sort=False)[cols].mean().reset_index()


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


def _pct(x: float) -> str:
    return f"{x:+.1f} %"


def describe_changes(table: pd.DataFrame, what: str, base: str = "Base") -> list[str]:
    """Plain sentences, computed from a `changes`/`table1` result, one per variant and batch size:
    the measured % changes against `base`. Nothing in them is typed by hand."""
    lines = []
    for _, row in table[table["variant"] != base].iterrows():
        parts = []
        for m, label in (("perplexity", "perplexity"), ("runtime_s", "runtime"), ("energy_kwh", "energy"),
                         ("weight_bytes", "weights on disk")):
            col = f"{m}_change_pct"
            if col in row and pd.notna(row[col]):
                parts.append(f"{label} {_pct(row[col])}")
        where = f" at batch size {int(row['batch_size'])}" if "batch_size" in row and pd.notna(row["batch_size"]) else ""
        verdict = ""
        if "runtime_s_change_pct" in row and pd.notna(row["runtime_s_change_pct"]):
            verdict = " — faster than Base" if row["runtime_s_change_pct"] < 0 else " — slower than Base"
        lines.append(f"{row['variant']} ({what}{where}): " + ", ".join(parts) + verdict)
    return lines
