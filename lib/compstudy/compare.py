"""Compare two runs of the study: do their ratios and ranks reproduce?

    python -m compstudy compare STUDY_A STUDY_B      # study names, results/<study>/ranking.csv
    python -m compstudy compare path/a.csv path/b.csv

For every variant ranked in both: P_c and T_c of each, whether the two T_c intervals (bootstrap,
notebook 05) overlap, |delta T_c|, and the ranks; then the share of variants whose T_c intervals
overlap, the median |delta T_c|, the Spearman rank correlation of the opt ranks, and whether the
best variants (those whose opt interval overlaps the best one's) are the same. A figure plots T_c
of one run against the other with their intervals.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import paths


def load_ranking(study_or_path: str | Path) -> pd.DataFrame:
    """A ranking table: `results/<study>/ranking.csv` for a study name, or a CSV path.

    Raises FileNotFoundError naming where it looked.
    """
    path = Path(study_or_path)
    if not (path.suffix == ".csv" and path.exists()):
        path = paths.results_dir(str(study_or_path)) / "ranking.csv"
    if not path.exists():
        raise FileNotFoundError(f"no ranking for {study_or_path!r}: looked for {study_or_path} and {path}; "
                                f"run the study (notebook 05 writes it) or give a ranking.csv path")
    return pd.read_csv(path)


def top_group(rank: pd.DataFrame) -> set[str]:
    """Variants whose opt interval overlaps the best variant's (the order among them is not
    established); just the best one when intervals are missing."""
    r = rank.dropna(subset=["opt"]).sort_values("opt")
    if r.empty:
        return set()
    best = r.iloc[0]
    if pd.isna(best.get("opt_hi", np.nan)):
        return {best["variant"]}
    return set(r.loc[r["opt_lo"] <= best["opt_hi"], "variant"])


@dataclass
class Comparison:
    """`table`: one row per common variant; `summary`: the reproducibility figures."""

    table: pd.DataFrame
    summary: dict


def compare(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str] = ("A", "B")) -> Comparison:
    """Compare two ranking tables (columns variant, rank, P_c, T_c, T_c_lo, T_c_hi, opt, ...).

    Returns a `Comparison`. Raises ValueError if the two share no variant.
    """
    na, nb = names
    cols = [c for c in ("variant", "rank", "P_c", "T_c", "T_c_lo", "T_c_hi", "opt") if c in a.columns and c in b.columns]
    m = a[cols].merge(b[cols], on="variant", suffixes=(f"_{na}", f"_{nb}"))
    if m.empty:
        raise ValueError(f"the two rankings share no variant ({len(a)} and {len(b)} variants)")
    lo_a, hi_a, lo_b, hi_b = (m.get(f"T_c_{s}_{n}") for n in (na, nb) for s in ("lo", "hi"))
    has = lo_a.notna() & hi_a.notna() & lo_b.notna() & hi_b.notna() if lo_a is not None else pd.Series(False, m.index)
    m["T_c_overlap"] = np.where(has, (lo_a <= hi_b) & (lo_b <= hi_a), np.nan)
    m["abs_delta_T_c"] = (m[f"T_c_{na}"] - m[f"T_c_{nb}"]).abs()
    m["abs_delta_P_c"] = (m[f"P_c_{na}"] - m[f"P_c_{nb}"]).abs()
    m["rank_move"] = (m[f"rank_{na}"] - m[f"rank_{nb}"]).abs()
    with_intervals = m[has]
    ra, rb = m[f"opt_{na}"].rank(), m[f"opt_{nb}"].rank()
    tops = top_group(a), top_group(b)
    summary = {
        "variants_in_both": len(m),
        "with_intervals_in_both": int(has.sum()),
        "T_c_overlap_share": float(with_intervals["T_c_overlap"].mean()) if len(with_intervals) else float("nan"),
        "median_abs_delta_T_c": float(m["abs_delta_T_c"].median()),
        "max_abs_delta_T_c": float(m["abs_delta_T_c"].max()),
        "max_abs_delta_P_c": float(m["abs_delta_P_c"].max()),
        "spearman_rank_correlation": float(ra.corr(rb)) if len(m) > 2 else float("nan"),
        "median_rank_move": float(m["rank_move"].median()),
        "max_rank_move": float(m["rank_move"].max()),
        f"top_group_{na}": sorted(tops[0]), f"top_group_{nb}": sorted(tops[1]),
        "top_group_identical": tops[0] == tops[1],
    }
    return Comparison(m.sort_values(f"rank_{na}").reset_index(drop=True), summary)


def report(cmp: Comparison) -> str:
    """The comparison as text: the table, then the summary figures."""
    s = cmp.summary
    lines = [cmp.table.round(4).to_string(index=False), "",
             f"variants in both: {s['variants_in_both']} ({s['with_intervals_in_both']} with T_c intervals in both)",
             f"T_c intervals overlap: {s['T_c_overlap_share']:.1%} of those",
             f"|delta T_c|: median {s['median_abs_delta_T_c']:.4f}, largest {s['max_abs_delta_T_c']:.4f}; "
             f"largest |delta P_c| {s['max_abs_delta_P_c']:.4g}",
             f"Spearman rank correlation of opt: {s['spearman_rank_correlation']:+.3f}; rank moves: median "
             f"{s['median_rank_move']:.0f}, largest {s['max_rank_move']:.0f}",
             f"top group identical: {s['top_group_identical']}"]
    return "\n".join(lines)


def main(a: str, b: str, figure: str | None = None) -> int:
    """`python -m compstudy compare A B`: print the comparison, save its figure; returns 0."""
    from . import plots

    ra, rb = load_ranking(a), load_ranking(b)
    names = (Path(a).stem if a.endswith(".csv") else a, Path(b).stem if b.endswith(".csv") else b)
    if names[0] == names[1]:
        names = (f"{names[0]}_1", f"{names[1]}_2")
    cmp = compare(ra, rb, names)
    print(report(cmp))
    fig, path = plots.compare_runs(cmp.table, names, name=figure or f"compare-{names[0]}-{names[1]}")
    print(f"figure: {path}")
    return 0
