"""Compare two runs of the study: do their ratios and ranks reproduce?

    python -m compstudy compare default@-2 default@latest     # the two latest runs of a study
    python -m compstudy compare default@20261121-140000-abc123 other_study
    python -m compstudy compare a/results/default/measurements.csv b/results/default/measurements.csv
    python -m compstudy compare path/ranking_a.csv path/ranking_b.csv

A run is named STUDY[@RUN] or MEASUREMENTS.csv[@RUN], RUN being a run id, `latest` (the default) or
`-2` (the run before the latest; `compstudy.runs.select_run`): its rows are ranked with notebook 05's
defaults (`ranking.ranking`). A study without measurements falls back to its committed
`results/<study>/ranking.csv`, and a CSV with an `opt` column is read as a ranking.

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

from . import paths, results, runs
from .ranking import ranking as rank_rows
from .ranking import tiers


def load_ranking(spec: str | Path) -> pd.DataFrame:
    """The ranking of one run (see the module docstring for the forms of `spec`).

    Raises FileNotFoundError naming where it looked, ValueError for an unknown run.
    """
    text = str(spec)
    name, _, run = text.partition("@") if "@" in text else (text, "", "latest")
    path = Path(name)
    if path.suffix == ".csv":
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        head = pd.read_csv(path, nrows=1)
        if "opt" in head.columns:
            return pd.read_csv(path)
        need = {"variant", "notebook", "dataset", "repeat", "perplexity", "runtime_s"}
        if not need <= set(head.columns):
            raise ValueError(f"{path} is neither a ranking (no 'opt' column) nor a measurements table of the study "
                             f"(missing columns {sorted(need - set(head.columns))}); give results/<study>/measurements.csv "
                             f"or a ranking.csv")
        table = results.load(str(path))
    else:
        measurements = paths.results_dir(name) / "measurements.csv"
        ranking_file = paths.results_dir(name) / "ranking.csv"
        if not measurements.exists():
            if ranking_file.exists() and run == "latest":
                return pd.read_csv(ranking_file)
            raise FileNotFoundError(f"no measurements for {spec!r}: looked for {measurements} and {ranking_file}; run "
                                    f"the study, or give a measurements.csv or ranking.csv path")
        table = results.load(name)
    rows, run_id, note = runs.select_run(table, run, None if path.suffix == ".csv" else name)
    print(f"{spec}: {note}")
    return rank_rows(rows)


def top_group(rank: pd.DataFrame) -> set[str]:
    """The top tier (`ranking.tiers`): variants whose opt interval overlaps the best variant's (the
    order among them is not established); just the best one when intervals are missing."""
    r = rank.dropna(subset=["opt"])
    if "ranked" in r.columns:
        r = r[r["ranked"].astype(bool)]
    r = r.sort_values("opt")
    if r.empty:
        return set()
    if pd.isna(r.iloc[0].get("opt_hi", np.nan)):
        return {r.iloc[0]["variant"]}
    return {v for v, t in zip(r["variant"], tiers(r["opt_lo"], r["opt_hi"])) if t == 1}


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
    cols = [c for c in ("variant", "rank", "rank_range", "tier", "P_c", "T_c", "T_c_lo", "T_c_hi", "opt")
            if c in a.columns and c in b.columns]
    m = a[cols].merge(b[cols], on="variant", suffixes=(f"_{na}", f"_{nb}"))
    if m.empty:
        raise ValueError(f"the two rankings share no variant ({len(a)} and {len(b)} variants)")
    for n in (na, nb):
        m[f"rank_{n}"] = pd.to_numeric(m[f"rank_{n}"], errors="coerce").astype(float)
    m["ranked_in_both"] = m[f"rank_{na}"].notna() & m[f"rank_{nb}"].notna()
    lo_a, hi_a, lo_b, hi_b = (m.get(f"T_c_{s}_{n}") for n in (na, nb) for s in ("lo", "hi"))
    has = lo_a.notna() & hi_a.notna() & lo_b.notna() & hi_b.notna() if lo_a is not None else pd.Series(False, m.index)
    m["T_c_overlap"] = np.where(has, (lo_a <= hi_b) & (lo_b <= hi_a), np.nan)
    m["abs_delta_T_c"] = (m[f"T_c_{na}"] - m[f"T_c_{nb}"]).abs()
    m["abs_delta_P_c"] = (m[f"P_c_{na}"] - m[f"P_c_{nb}"]).abs()
    m["rank_move"] = (m[f"rank_{na}"] - m[f"rank_{nb}"]).abs()
    ranked = m[m["ranked_in_both"]]  # the figures below are over the variants both runs rank
    with_intervals = ranked[has[m["ranked_in_both"]]]
    ra, rb = ranked[f"opt_{na}"].rank(), ranked[f"opt_{nb}"].rank()
    tops = top_group(a), top_group(b)
    summary = {
        "variants_in_both": len(m),
        "ranked_in_both": len(ranked),
        "with_intervals_in_both": len(with_intervals),
        "T_c_overlap_share": float(with_intervals["T_c_overlap"].mean()) if len(with_intervals) else float("nan"),
        "median_abs_delta_T_c": float(ranked["abs_delta_T_c"].median()),
        "max_abs_delta_T_c": float(ranked["abs_delta_T_c"].max()),
        "max_abs_delta_P_c": float(m["abs_delta_P_c"].max()),
        "spearman_rank_correlation": float(ra.corr(rb)) if len(ranked) > 2 else float("nan"),
        "median_rank_move": float(ranked["rank_move"].median()),
        "max_rank_move": float(ranked["rank_move"].max()),
        f"top_group_{na}": sorted(tops[0]), f"top_group_{nb}": sorted(tops[1]),
        "top_group_identical": tops[0] == tops[1],
    }
    return Comparison(m.sort_values(f"rank_{na}").reset_index(drop=True), summary)


def report(cmp: Comparison) -> str:
    """The comparison as text: the table, then the summary figures."""
    s = cmp.summary
    lines = [cmp.table.round(4).to_string(index=False), "",
             f"variants in both: {s['variants_in_both']}; ranked in both: {s['ranked_in_both']} "
             f"({s['with_intervals_in_both']} with T_c intervals in both); the figures below are over these",
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
    names = tuple(_short(x) for x in (a, b))
    if names[0] == names[1]:
        names = (f"{names[0]}_1", f"{names[1]}_2")
    cmp = compare(ra, rb, names)
    print(report(cmp))
    fig, path = plots.compare_runs(cmp.table, names, name=figure or f"compare-{names[0]}-{names[1]}")
    print(f"figure: {path}")
    return 0


def _short(spec: str) -> str:
    """A column-name-safe label for a run spec: `results/default/measurements.csv@-2` -> `default-2`."""
    name, _, run = spec.partition("@")
    p = Path(name)
    label = p.parent.name if p.suffix == ".csv" and p.parent.name else p.stem if p.suffix == ".csv" else name
    return "".join(ch if ch.isalnum() else "_" for ch in f"{label}{run}")
