"""Dose-response: each technique's perplexity cost as a curve over how much of the model remains
(issue 29), read from the measurement rows the dose sweeps wrote (`experiments.dose_sweep`,
`experiments.sparsity_sweep`: columns `dose_axis`, `dose_method`, `dose`).

Four axes, one panel each, with the x a reader can lay side by side:

| axis | x | methods |
|---|---|---|
| `weight bits` | bits per weight of the quantized layers (nominal; the scales come on top, see `lowbit`) | bitsandbytes (LLM.int8(), NF4, FP4), HQQ, GPTQ |
| `heads kept` | fraction of the attention heads kept (whole key-value groups) | head importance (Michel et al. 2019) |
| `depth / width kept` | fraction of the blocks, MLP neurons or embedding channels kept | depth (Block Importance), MLP width, embedding channels |
| `weights kept` | fraction of the block weights left non-zero (1 - sparsity) | magnitude (layer, global), Wanda |

A point's cost is its perplexity change against the Base measured in the same sweep, on the same
tokens, per evaluation corpus (`perplexity_change_pct`); the curve is the mean over corpora and
the interval their range (perplexity is deterministic for a given text: the corpora are its only
repeats). Base itself is every curve's origin: 0 % at the full dose (its bits, or 1.0 kept).
`size_fraction` is the point's bytes on disk over Base's: what each technique costs for the same
size on disk (dense storage; unstructured sparsity does not shrink it and is left off that view).
"""
from __future__ import annotations

import math

import pandas as pd

AXES = ("weight bits", "heads kept", "depth / width kept", "weights kept")
# the paper's GPT-2 rows placed on the curves (Wallace et al. 2025): variant -> (axis, label, dose)
PAPER_POINTS = {"Base8b": ("weight bits", "paper: 8-bit (bitsandbytes)", 8.0),
                "Base4b": ("weight bits", "paper: 4-bit (bitsandbytes)", 4.0),
                "AH90": ("heads kept", "paper: AH90", 0.9), "AH80": ("heads kept", "paper: AH80", 0.8),
                "Distil": ("depth / width kept", "paper: DistilGPT2 (6 of 12 blocks, distilled)", 0.5)}


def curves(measurements: pd.DataFrame, base: str = "Base") -> pd.DataFrame:
    """One row per (axis, method, dose, variant): the perplexity change against the sweep's own
    Base (mean over corpora, `lo` / `hi` their range, %), the size on disk against Base
    (`size_fraction`), and the notebook (sweep) it was measured in; Base's origin point added to
    every (axis, method). Fine-tuned points (training_tokens > 0) are left out: a curve is the
    technique alone. Rows set aside by the timing protocol are not read. Empty when no dose rows.

    Raises ValueError naming the sweeps whose Base is missing.
    """
    cols = ["axis", "method", "dose", "variant", "notebook", "perplexity_change_pct", "lo", "hi", "size_fraction",
            "n_datasets"]
    m = measurements
    if "dose_axis" not in m or not m["dose_axis"].fillna("").astype(str).ne("").any():
        return pd.DataFrame(columns=cols)
    if "set_aside" in m:
        m = m[m["set_aside"].fillna("").astype(str).eq("")]
    out = []
    for notebook, group in m.groupby("notebook", sort=False):
        points = group[group["dose_axis"].fillna("").astype(str).ne("")]
        if points.empty:
            continue
        ref = group[group["variant"] == base]
        if ref.empty:
            raise ValueError(f"dose sweep {notebook!r} has no {base!r} rows to measure its points against")
        ppl = ref.groupby("dataset")["perplexity"].median()
        base_bytes = float(ref["weight_bytes"].median())
        if "training_tokens" in points:
            points = points[pd.to_numeric(points["training_tokens"], errors="coerce").fillna(0) == 0]
        for (axis, method, variant), rows in points.groupby(["dose_axis", "dose_method", "variant"], sort=False):
            per = rows.groupby("dataset")["perplexity"].median()
            change = 100 * (per / ppl.reindex(per.index) - 1)
            out.append({"axis": axis, "method": method, "dose": float(rows["dose"].iloc[0]), "variant": variant,
                        "notebook": notebook, "perplexity_change_pct": float(change.mean()), "lo": float(change.min()),
                        "hi": float(change.max()),
                        "size_fraction": float(rows["weight_bytes"].median()) / base_bytes, "n_datasets": len(change)})
        for axis, method in points.groupby(["dose_axis", "dose_method"], sort=False).groups:
            full = _full_dose(axis, ref)
            out.append({"axis": axis, "method": method, "dose": full, "variant": base, "notebook": notebook,
                        "perplexity_change_pct": 0.0, "lo": 0.0, "hi": 0.0, "size_fraction": 1.0,
                        "n_datasets": ref["dataset"].nunique()})
    table = pd.DataFrame(out, columns=cols)
    return table.sort_values(["axis", "method", "dose"], ascending=[True, True, False]).reset_index(drop=True)


def _full_dose(axis: str, base_rows: pd.DataFrame) -> float:
    """Base's dose on `axis`: the bits of its weights (from its dtype) or 1.0 kept."""
    if axis != "weight bits":
        return 1.0
    dtype = str(base_rows["dtype"].iloc[0]) if "dtype" in base_rows else "float32"
    return {"float16": 16.0, "bfloat16": 16.0, "float64": 64.0}.get(dtype.split("+")[0], 32.0)


def paper_points(paper_changes: pd.DataFrame) -> pd.DataFrame:
    """The paper's GPT-2 rows that sit on a curve (`PAPER_POINTS`): axis, label, dose and its
    perplexity change (%, mean over WikiText-2, C4, LAMBADA)."""
    rows = []
    for variant, (axis, label, dose) in PAPER_POINTS.items():
        hit = paper_changes[paper_changes["variant"] == variant]
        if len(hit):
            rows.append({"axis": axis, "label": label, "dose": dose, "variant": variant,
                         "perplexity_change_pct": float(hit["perplexity_change_pct"].iloc[0])})
    return pd.DataFrame(rows, columns=["axis", "label", "dose", "variant", "perplexity_change_pct"])


def cost_at(table: pd.DataFrame, axis: str, dose: float, method: str | None = None) -> float:
    """The perplexity change (%) of the point at `dose` on `axis` (of `method` when given; the
    mean over methods otherwise); NaN when not measured."""
    t = table[(table["axis"] == axis) & ((table["dose"] - dose).abs() < 1e-9)]
    if method is not None:
        t = t[t["method"] == method]
    return float(t["perplexity_change_pct"].mean()) if len(t) else math.nan


def headline(table: pd.DataFrame) -> list[str]:
    """One sentence per axis: where the curve stays within 1 % of Base and what its lowest dose
    costs, every number read from `table` (`curves`)."""
    lines = []
    for axis in AXES:
        t = table[(table["axis"] == axis) & (table["variant"] != "Base")]
        if t.empty:
            continue
        parts = []
        for method, m in t.groupby("method", sort=False):
            m = m.sort_values("dose", ascending=False)
            within = (m["perplexity_change_pct"].abs() <= 1.0).cummin()  # from the full dose down, until the first miss
            low = m.iloc[-1]
            cheap_text = (f"within 1 % of Base down to {_dose_text(axis, m.loc[within, 'dose'].min())}" if within.any()
                          else "more than 1 % at every dose")
            parts.append(f"{method}: {cheap_text}; {_dose_text(axis, low['dose'])} costs "
                         f"{low['perplexity_change_pct']:+.1f} % ({low['lo']:+.1f} to {low['hi']:+.1f} over the corpora)")
        lines.append(f"{axis}: " + "; ".join(parts))
    return lines


def _dose_text(axis: str, dose: float) -> str:
    return f"{dose:g} bits" if axis == "weight bits" else f"{100 * dose:.0f} % kept"
