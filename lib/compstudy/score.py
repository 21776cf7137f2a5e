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
    """The paper's Table 1 shape: per variant, mean over datasets of perplexity, runtime (s) and
    energy and of their % changes against `base` (changes are computed per dataset first).
    Energy is given in joules (`energy_J` = kWh x 3.6e6), not kWh: one evaluation pass is a few
    joules, which a kWh column rounded for display shows as 0.0."""
    ch = changes(df, base, ("dataset", *keys))
    keys = [k for k in keys if k in ch.columns]
    cols = [c for m in METRICS for c in (m, f"{m}_change_pct") if c in ch.columns]
    table = ch.groupby(["variant", *keys], sort=False)[cols].mean().reset_index()
    if "energy_kwh" in table.columns:
        table.insert(table.columns.get_loc("energy_kwh"), "energy_J", table.pop("energy_kwh") * 3.6e6)
    return table


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


# --------------------------------------------------------------------------------------------
# The optimization equation (Wallace et al. 2025) and the ranking

EQUATION_NOTE = (
    "opt = P_c^gamma * (alpha * T_c + beta * E_c), lower is better (Wallace et al., ICPE 2025; gamma = 1.5 "
    "there). The paper's text defining P_c, T_c and E_c is not available to this study; we read them as ratios "
    "to the base measured under the same conditions (P_c = ppl / ppl_base, T_c = runtime / runtime_base, "
    "E_c = energy / energy_base; medians over repeats, averaged over datasets as the paper averages its changes). "
    "This reading is a reconstruction. It stays defined when a change is negative, and on the paper's own "
    "tables it reproduces the paper's conclusions (alpha = beta = 0.5: Distil4b 0.811 and Base4b 0.818 lead, "
    "Base 1.000, Base8b 1.746).")


def opt(P, T, E, alpha: float = 0.5, beta: float = 0.5, gamma: float = 1.5):
    """The paper's objective `P^gamma * (alpha * T + beta * E)` on ratios to the base (see
    `EQUATION_NOTE`); works on floats, arrays and Series. Lower is better; the base scores
    alpha + beta.

    Raises ValueError if a weight is negative or gamma is not positive.
    """
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got {alpha}, {beta}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    return P ** gamma * (alpha * T + beta * E)


GROUP_KEYS = ("notebook", "batch_size", "dataset", "tokens_scored")

# Noise thresholds (`timing_noise`). Measured on the study's 2-core VM with nothing else running
# (benchmarks/timing_protocol.py and a fresh default run): interference 0.00-0.03 per condition (the
# runner's own process included) and a base spread (max / min - 1 over 3 rounds of 32,768-token
# passes) of 0.03-0.38, 0.49 over 8 rounds of 8,192-token passes; a busy process on one of the two
# cores takes about half of the machine (interference near 0.5).
MAX_INTERFERENCE = 0.10   # median share of the machine other processes (and steal) took during the passes
MAX_BASE_SPREAD = 0.60    # (max / min - 1) of the base's own pass times over the rounds of a condition


def paired_ratios(df: pd.DataFrame, base: str = "Base", keys=GROUP_KEYS) -> pd.DataFrame:
    """Per (variant, *keys, repeat): the variant's runtime and energy divided by those of its base's
    pass in the same round (`T_ratio`, `E_ratio`). Rounds are those of the interleaved protocol
    (`measure.evaluate_many`): a variant and its base measured in one call share round indices.
    Rows without the base's pass of the same round are dropped."""
    keys = [k for k in keys if k in df.columns]
    cols = ["variant", *keys, "repeat", "runtime_s", "energy_kwh"]
    v = df[cols]
    b = v[v["variant"] == base].drop(columns="variant")
    m = v.merge(b, on=[*keys, "repeat"], suffixes=("", "_base"))
    m["T_ratio"] = m["runtime_s"] / m["runtime_s_base"]
    m["E_ratio"] = m["energy_kwh"] / m["energy_kwh_base"]
    return m


def ratio_table(df: pd.DataFrame, base: str = "Base", keys=GROUP_KEYS) -> pd.DataFrame:
    """Per (variant, *keys): P_c = median perplexity / median perplexity of `base` measured under the
    same keys (same notebook, batch size, dataset and number of tokens); T_c and E_c = the median
    over rounds of the paired per-round ratios (`paired_ratios`); `n_rounds` = paired rounds.
    Rows without a matching base are dropped; the dropped variants are listed in `attrs["unmatched"]`.
    Give one run's rows (`runs.select_run`): ratios never mix runs.

    Raises ValueError naming the keys if `base` was never measured.
    """
    keys = [k for k in keys if k in df.columns]
    med = df.groupby(["variant", *keys], dropna=False)[["perplexity", "runtime_s", "energy_kwh"]].median().reset_index()
    b = med[med["variant"] == base]
    if b.empty:
        raise ValueError(f"no measurement of the base variant {base!r}: every ratio needs it (variants present: "
                         f"{sorted(med['variant'].unique())}); measure {base!r} under the same {keys}")
    merged = med.merge(b.drop(columns="variant"), on=keys, suffixes=("", "_base"), how="left")
    unmatched = sorted(merged.loc[merged["perplexity_base"].isna(), "variant"].unique())
    merged = merged.dropna(subset=["perplexity_base"]).copy()
    pairs = paired_ratios(df, base, keys).groupby(["variant", *keys], dropna=False).agg(
        T_c=("T_ratio", "median"), E_c=("E_ratio", "median"), n_rounds=("T_ratio", "size")).reset_index()
    merged = merged.merge(pairs, on=["variant", *keys], how="left")
    merged["P_c"] = merged["perplexity"] / merged["perplexity_base"]
    merged["n_rounds"] = merged["n_rounds"].fillna(0).astype(int)
    merged.attrs["unmatched"] = unmatched
    return merged


def timing_noise(df: pd.DataFrame, base: str = "Base", keys=GROUP_KEYS, max_interference: float = MAX_INTERFERENCE,
                 max_base_spread: float = MAX_BASE_SPREAD) -> pd.DataFrame:
    """How noisy the timing of each condition (*keys) was, and whether its ratios are reliable.

    Per condition: `rounds`, `base_spread` = max / min - 1 of the base's pass times over the
    rounds (the machine's own noise: the same work timed again), `interference` = median over
    the condition's passes of the share of the machine that other processes and the hypervisor
    took (`measure.timed_pass`; NaN for rows recorded before it existed), `cpu_per_wall` = median
    process CPU seconds per wall second (about the thread count when the process ran unhindered),
    and `reliable` = interference <= `max_interference` and base_spread <= `max_base_spread`,
    with `reason` saying which limit was passed.
    """
    import numpy as np

    keys = [k for k in keys if k in df.columns]
    rows = []
    for cond, g in df.groupby(keys, dropna=False, sort=False):
        cond = cond if isinstance(cond, tuple) else (cond,)
        bt = g.loc[g["variant"] == base, "runtime_s"].to_numpy(float)
        spread = float(bt.max() / bt.min() - 1) if len(bt) >= 2 else float("nan")
        inter = float(np.nanmedian(g["interference"])) if "interference" in g and g["interference"].notna().any() else float("nan")
        cpu = float(np.nanmedian(g["cpu_s"] / g["runtime_s"])) if "cpu_s" in g and g["cpu_s"].notna().any() else float("nan")
        reasons = []
        if inter > max_interference:
            reasons.append(f"other processes took {inter:.0%} of the machine (limit {max_interference:.0%})")
        if spread > max_base_spread:
            reasons.append(f"the base's own pass times spread by {spread:.0%} (limit {max_base_spread:.0%})")
        rows.append({**dict(zip(keys, cond)), "rounds": len(bt), "base_spread": spread, "interference": inter,
                     "cpu_per_wall": cpu, "reliable": not reasons, "reason": "; ".join(reasons)})
    return pd.DataFrame(rows)


def _bootstrap_mean_of_medians(samples: list, n_boot: int, seed: int) -> tuple[float, float]:
    """95 % percentile bootstrap interval (scipy.stats.bootstrap) of the mean over conditions of the
    median over rounds; each condition's rounds are resampled independently."""
    import numpy as np
    from scipy import stats

    def statistic(*xs, axis=-1):
        return np.mean([np.median(x, axis=axis) for x in xs], axis=0)

    if all(np.ptp(x) == 0 for x in samples):  # nothing varies: the interval is the point
        v = float(statistic(*[np.asarray(x)[None] for x in samples])[0])
        return v, v
    res = stats.bootstrap(tuple(np.asarray(x, float) for x in samples), statistic, n_resamples=n_boot,
                          method="percentile", vectorized=True, random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def ratio_intervals(df: pd.DataFrame, base: str = "Base", by=(), keys=GROUP_KEYS, n_boot: int = 2000,
                    seed: int = 0) -> pd.DataFrame:
    """T_c and E_c per (variant, *by) as `ranking` computes them, with their 95 % intervals, for
    error bars: the mean over the conditions (`keys`) of the median over rounds of the paired
    per-round ratio to `base` (`paired_ratios`), and a percentile bootstrap over rounds
    (`scipy.stats.bootstrap`; each condition resampled apart).

    Args:
        by: columns of `keys` kept apart (e.g. ("batch_size",)); the other keys are averaged over.
    Returns one row per (variant, *by): T_c, T_c_lo, T_c_hi, E_c, E_c_lo, E_c_hi (ratios, 1 = the
    base), the same as % changes (`runtime_change_pct`, `runtime_change_pct_lo`, ...,
    `energy_change_pct_hi` = 100 * (ratio - 1)) and n_rounds (fewest paired rounds over its
    conditions); the intervals are NaN where a condition has fewer than 2 paired rounds.
    Raises ValueError naming `by` and the allowed columns if `by` is not among the measured keys.
    """
    import numpy as np

    keys = [k for k in keys if k in df.columns]
    if not set(by) <= set(keys):
        raise ValueError(f"by={list(by)}: allowed are the measured condition keys {keys}")
    pairs = paired_ratios(df, base, keys)
    out = []
    for group, g in pairs.groupby(["variant", *by], dropna=False, sort=False):
        group = group if isinstance(group, tuple) else (group,)
        conds = [c for _, c in g.groupby(keys, dropna=False, sort=False)]
        row = {**dict(zip(["variant", *by], group)), "n_rounds": min(len(c) for c in conds)}
        for m, col in (("T_c", "T_ratio"), ("E_c", "E_ratio")):
            row[m] = float(np.mean([c[col].median() for c in conds]))
            row[f"{m}_lo"], row[f"{m}_hi"] = (_bootstrap_mean_of_medians([c[col] for c in conds], n_boot, seed)
                                              if row["n_rounds"] >= 2 else (np.nan, np.nan))
        for m, name in (("T_c", "runtime"), ("E_c", "energy")):
            for end in ("", "_lo", "_hi"):
                row[f"{name}_change_pct{end}"] = 100 * (row[m + end] - 1)
        out.append(row)
    return pd.DataFrame(out)


def ranking(df: pd.DataFrame, alpha: float = 0.5, beta: float = 0.5, gamma: float = 1.5, base: str = "Base",
            keys=GROUP_KEYS, n_boot: int = 2000, seed: int = 0, ratios: pd.DataFrame | None = None,
            noise: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rank variants by `opt`, lower first, with bootstrap intervals over paired rounds.

    Give one run's rows (`runs.select_run`). P_c, T_c, E_c are the mean over every (notebook, batch
    size, dataset) where the variant was measured of its ratio to the base measured there
    (`ratio_table`: T_c and E_c are medians of per-round paired ratios). Intervals: 95 % percentile
    bootstrap (`scipy.stats.bootstrap`) of the mean over conditions of the median over rounds,
    resampling rounds; `opt_lo` / `opt_hi` come from the per-round cost alpha*T + beta*E, scaled by
    P_c^gamma (perplexity is deterministic).

    Ranked are the variants measured in at least 2 paired rounds whose conditions all have
    reliable timing (`timing_noise`). The others get no rank (`rank` NaN, `ranked` False) and a
    `why_unranked` ("measured once", or the noise reason), and are listed after the ranked ones so
    that notebook 05 can show them apart. `rank_range` gives the ranks the intervals allow (e.g.
    "2-5", `rank_ranges`) and `tier` groups variants whose intervals overlap the tier leader's
    (`tiers`); tier 1 cannot be told apart from the best.

    Returns one row per variant: rank, rank_range, tier, P_c, T_c, E_c (and intervals), opt,
    opt_lo, opt_hi, n_conditions, min_repeats (paired rounds, fewest over its conditions), ranked,
    why_unranked, energy_method.
    """
    import numpy as np

    ratios = ratio_table(df, base, keys) if ratios is None else ratios
    keys = [k for k in keys if k in df.columns]
    noise = timing_noise(df, base, keys) if noise is None else noise
    pairs = paired_ratios(df, base, keys)
    per_cond = {k: g for k, g in pairs.groupby(["variant", *keys], dropna=False)}
    unreliable = {tuple(r[k] for k in keys): r["reason"] for _, r in noise.iterrows() if not r["reliable"]}
    out = []
    for variant, g in ratios.groupby("variant", sort=False):
        repeated = g[g["n_rounds"] >= 2]
        use = repeated if len(repeated) else g  # a condition measured once is left out when others are repeated
        P, T, E = use["P_c"].mean(), use["T_c"].mean(), use["E_c"].mean()
        n_min = int(use["n_rounds"].min()) if len(use) else 0
        row = {"variant": variant, "P_c": P, "T_c": T, "E_c": E, "opt": opt(P, T, E, alpha, beta, gamma),
               "n_conditions": len(use), "min_repeats": n_min, "T_c_lo": np.nan, "T_c_hi": np.nan,
               "E_c_lo": np.nan, "E_c_hi": np.nan, "opt_lo": np.nan, "opt_hi": np.nan}
        # the base's own ratio is 1 by construction: noise cannot make it unreliable
        reasons = [] if variant == base else sorted(
            {unreliable[c] for c in (tuple(r[k] for k in keys) for _, r in use.iterrows()) if c in unreliable})
        row["why_unranked"] = ("measured once" if n_min < 2 else
                               f"timing unreliable: {'; '.join(reasons)}" if reasons else "")
        if n_min >= 2:
            groups = [per_cond[(variant, *(r[k] for k in keys))] for _, r in use.iterrows()]
            row["T_c_lo"], row["T_c_hi"] = _bootstrap_mean_of_medians([x["T_ratio"] for x in groups], n_boot, seed)
            row["E_c_lo"], row["E_c_hi"] = _bootstrap_mean_of_medians([x["E_ratio"] for x in groups], n_boot, seed)
            lo, hi = _bootstrap_mean_of_medians([alpha * x["T_ratio"] + beta * x["E_ratio"] for x in groups], n_boot, seed)
            row["opt_lo"], row["opt_hi"] = P ** gamma * lo, P ** gamma * hi
        out.append(row)
    table = pd.DataFrame(out)
    if table.empty:
        table = pd.DataFrame(columns=["variant", "P_c", "T_c", "E_c", "opt", "n_conditions", "min_repeats",
                                      "why_unranked", "opt_lo", "opt_hi"])
    ok = table["why_unranked"] == ""
    rank = table[ok].sort_values("opt").reset_index(drop=True)
    rank.insert(0, "rank", pd.array(range(1, len(rank) + 1), dtype="Int64"))
    rank["rank_range"], rank["tier"] = rank_ranges(rank["opt_lo"], rank["opt_hi"]), tiers(rank["opt_lo"], rank["opt_hi"])
    rank["ranked"] = True
    rest = table[~ok].sort_values("opt").reset_index(drop=True)
    rest.insert(0, "rank", pd.array([None] * len(rest), dtype="Int64"))
    rank = pd.concat([rank, rest.assign(ranked=False, rank_range="", tier=pd.NA)], ignore_index=True)
    rank["tier"] = rank["tier"].astype("Int64")
    if "energy_method" in df.columns:
        methods = df.groupby("variant")["energy_method"].agg(lambda s: ", ".join(sorted(set(map(str, s)))))
        rank["energy_method"] = rank["variant"].map(methods)
    rank.attrs["unmatched"] = ratios.attrs.get("unmatched", [])
    return rank


def rank_ranges(lo, hi) -> list[str]:
    """The ranks each variant can take given the intervals [lo, hi] of its score (lower is
    better): best = 1 + the number of variants whose whole interval lies below its own, worst = the
    number whose interval starts at or below its upper end (itself included). "3" when both agree,
    "2-5" otherwise. Inputs: equal-length sequences, in any order."""
    import numpy as np

    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    out = []
    for a, b in zip(lo, hi):
        best, worst = 1 + int((hi < a).sum()), int((lo <= b).sum())
        out.append(str(best) if best == worst else f"{best}-{worst}")
    return out


def tiers(lo, hi) -> list[int]:
    """Tiers of variants sorted by score: a variant joins the current tier when its interval
    starts at or below the upper end of the tier's first (best) member, and opens the next tier
    otherwise. Tier 1 is the set of variants that cannot be told apart from the best. Inputs:
    interval bounds in ranking order."""
    out, tier, leader_hi = [], 0, None
    for a, b in zip(lo, hi):
        if leader_hi is None or a > leader_hi:
            tier, leader_hi = tier + 1, b
        out.append(tier)
    return out


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


def energy_is_estimated(df: pd.DataFrame) -> bool:
    """True when no row's energy was measured by a hardware counter."""
    return not df["energy_method"].isin(["measured", "partly measured"]).any()


def estimated_energy_note(df: pd.DataFrame) -> str:
    """The sentence the comparison prints about E_c; empty when energy was measured."""
    if not energy_is_estimated(df):
        return ""
    return ("Energy in these measurements was ESTIMATED by codecarbon (no RAPL or NVML counter): power was "
            "modelled, not read, so E_c is T_c scaled by a nearly constant factor, and the objective's energy "
            "term repeats its time term. Rankings here weigh runtime twice; they say nothing independent about "
            "energy. Rerun on a machine with RAPL or an NVIDIA GPU for measured energy.")


def is_control(variant: str) -> bool:
    """True for the study's controls, which are not compression options: the equal-training
    controls `Base+ft<N>` (`pipeline.control_name`), the from-scratch controls `Scratch-<shape>`,
    and the distillation controls `...-noKD` / `...-rand...` (notebook 02)."""
    import re

    return bool(re.match(r"^Base\+ft\d", variant) or variant.startswith("Scratch-") or variant == "Mag0+ft"
                or re.search(r"-noKD$|-rand(\b|-)", variant))


def pareto_front(df: pd.DataFrame, x: str, y: str) -> pd.Series:
    """Boolean Series: rows not dominated when both `x` and `y` are minimised (another row is at
    least as good on both and strictly better on one)."""
    xs, ys = df[x].to_numpy(), df[y].to_numpy()
    keep = []
    for i in range(len(df)):
        dominated = ((xs <= xs[i]) & (ys <= ys[i]) & ((xs < xs[i]) | (ys < ys[i]))).any()
        keep.append(not dominated)
    return pd.Series(keep, index=df.index)


def sensitivity(df: pd.DataFrame, alphas=None, gammas=(0.5, 1.0, 1.5, 2.0, 3.0), base: str = "Base",
                ratios: pd.DataFrame | None = None, alpha: float | None = None,
                gamma: float | None = None) -> pd.DataFrame:
    """Rank of every variant as the weights move: alpha from 0 to 1 with beta = 1 - alpha (at each
    gamma). `alpha` / `gamma`, the study's chosen weights, are added to the grids when given, so
    that `plots.sensitivity` can start from them. Returns rows (gamma, alpha, variant, opt, rank)."""
    import numpy as np

    alphas = np.linspace(0, 1, 11) if alphas is None else alphas
    if alpha is not None:
        alphas = np.union1d(np.round(np.asarray(alphas, float), 12), [alpha])
    if gamma is not None:
        gammas = sorted({*map(float, gammas), float(gamma)})
    ratios = ratio_table(df, base) if ratios is None else ratios
    g = ratios.groupby("variant", sort=False)[["P_c", "T_c", "E_c"]].mean().reset_index()
    rows = []
    for gamma in gammas:
        for a in alphas:
            scores = opt(g["P_c"], g["T_c"], g["E_c"], float(a), 1 - float(a), gamma)
            ranks = scores.rank(method="min")
            rows += [{"gamma": gamma, "alpha": float(a), "variant": v, "opt": s, "rank": int(r)}
                     for v, s, r in zip(g["variant"], scores, ranks)]
    return pd.DataFrame(rows)


def break_even(df: pd.DataFrame, base: str = "Base", keys=GROUP_KEYS, n_boot: int = 2000,
               seed: int = 0) -> pd.DataFrame:
    """Tokens of inference after which a variant's compression cost is paid back by its energy
    savings: `cost_kwh / saved_kwh_per_token`, per variant. The saving per token is the mean over
    conditions (`keys`) of the median over rounds of the paired per-round saving
    (E_base - E_variant) / tokens scored (`paired_ratios`); `never` when it is not positive.

    `cost_kwh` is the energy spent producing the variant from the baseline (distillation,
    fine-tuning, calibration, quantization); the baseline's own training is not charged to it.
    `break_even_lo` / `break_even_hi` (tokens) come from the 95 % percentile bootstrap interval of
    the saving over rounds (`scipy.stats.bootstrap`); `break_even_hi` is inf when the interval
    reaches no saving. NaN where a condition has fewer than 2 paired rounds.
    Column `control` marks the study's controls (`is_control`), which are no compression options.
    Raises ValueError (`paired_ratios` / `ratio_table`) if `base` was never measured.
    """
    import numpy as np

    keys = [k for k in keys if k in df.columns]
    ratio_table(df, base, keys)  # raises the clear error when the base is missing
    pairs = paired_ratios(df, base, keys)
    tokens = df.groupby(["variant", *keys], dropna=False)["tokens_scored"].median().rename("tokens")
    pairs = pairs.join(tokens, on=["variant", *keys])
    pairs["saved"] = (pairs["energy_kwh_base"] - pairs["energy_kwh"]) / pairs["tokens"]
    cost = df.groupby(["variant", *keys], dropna=False)[["cost_kwh", "cost_s"]].median().groupby("variant").max()

    def tokens_for(saved, cost_kwh):
        return cost_kwh / saved if saved > 0 else np.inf

    rows = []
    for variant, g in pairs[pairs["variant"] != base].groupby("variant", sort=False):
        conds = [c["saved"] for _, c in g.groupby(keys, dropna=False, sort=False)]
        saved = float(np.mean([c.median() for c in conds]))
        lo, hi = (_bootstrap_mean_of_medians(conds, n_boot, seed) if min(map(len, conds)) >= 2
                  else (np.nan, np.nan))
        c_kwh = float(cost.loc[variant, "cost_kwh"])
        rows.append({"variant": variant, "cost_kwh": c_kwh, "cost_s": float(cost.loc[variant, "cost_s"]),
                     "saved_kwh_per_token": saved, "saved_kwh_per_token_lo": lo, "saved_kwh_per_token_hi": hi,
                     "break_even_tokens": tokens_for(saved, c_kwh),
                     "break_even_lo": tokens_for(hi, c_kwh) if np.isfinite(hi) else np.nan,
                     "break_even_hi": tokens_for(lo, c_kwh) if np.isfinite(lo) else np.nan})
    g = pd.DataFrame(rows)
    g["control"] = g["variant"].map(is_control)
    g["pays_back"] = np.where(np.isfinite(g["break_even_tokens"]), "after " +
                              g["break_even_tokens"].map(lambda t: f"{t:,.0f}" if np.isfinite(t) else "") + " tokens",
                              "never")
    return g.sort_values("break_even_tokens").reset_index(drop=True)


def control_table(measurements: pd.DataFrame, ratios: pd.DataFrame | None = None, base: str = "Base",
                  keys=GROUP_KEYS) -> pd.DataFrame:
    """Each variant whose production trained (column `control` of the measurements names its
    equal-training control `Base+ft<N>`, issue 11) beside that control.

    Per variant: `P_c` (against Base), `P_c_control` (the control's own P_c), `P_vs_control`
    (perplexity of the variant / perplexity of its control, measured under the same keys:
    same notebook run, dataset, tokens), all averaged over the conditions both were measured in,
    and `verdict`:
    - `better than its control`: P_vs_control < 1 on every condition;
    - `better than Base only through training`: P_c < 1 but not better than its control;
    - `worse than its control`: otherwise.

    Returns one row per variant with a control; the columns above plus `control`,
    `training_tokens`, `n_conditions`. Empty when no measurement names a control.
    """
    cols = ["variant", "control", "training_tokens", "P_c", "P_c_control", "P_vs_control", "n_conditions", "verdict"]
    if "control" not in measurements.columns:
        return pd.DataFrame(columns=cols)
    ratios = ratio_table(measurements, base, keys) if ratios is None else ratios
    keys = [k for k in keys if k in ratios.columns]
    named = (measurements.dropna(subset=["control"]).astype({"control": str})
             .query("control != ''").groupby("variant", sort=False)
             .agg(control=("control", "first"), training_tokens=("training_tokens", "max")))
    rows = []
    for variant, r in named.iterrows():
        v = ratios[ratios["variant"] == variant][[*keys, "P_c"]]
        c = ratios[ratios["variant"] == r["control"]][[*keys, "P_c"]]
        both = v.merge(c, on=keys, suffixes=("", "_control"))
        if both.empty:
            rows.append({"variant": variant, "control": r["control"], "training_tokens": r["training_tokens"],
                         "P_c": v["P_c"].mean(), "P_c_control": float("nan"), "P_vs_control": float("nan"),
                         "n_conditions": 0, "verdict": "control not measured"})
            continue
        rel = both["P_c"] / both["P_c_control"]
        verdict = ("better than its control" if (rel < 1).all() else
                   "better than Base only through training" if both["P_c"].mean() < 1 else "worse than its control")
        rows.append({"variant": variant, "control": r["control"], "training_tokens": int(r["training_tokens"]),
                     "P_c": both["P_c"].mean(), "P_c_control": both["P_c_control"].mean(), "P_vs_control": rel.mean(),
                     "n_conditions": len(both), "verdict": verdict})
    return pd.DataFrame(rows, columns=cols)
