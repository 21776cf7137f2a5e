"""The optimization equation of Wallace et al. (ICPE 2025) on the study's ratios, the ranking with
intervals, rank ranges and tiers, and its sensitivity to the weights."""
from __future__ import annotations

import pandas as pd

from .noise import timing_noise
from .ratios import GROUP_KEYS, bootstrap_mean_of_medians, paired_ratios, ratio_table


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


CURVE_POINT = "curve point (measured once by design)"  # why_unranked of a dose-response or sweep point


def is_curve_group(notebook) -> bool:
    """Whether a measurement group measures curve points once each by design: a sweep
    (`<notebook>:sweep`), a dose-response (`<notebook>:dose`) or a scale point (`06_scale:<point>`)."""
    text = str(notebook)
    return text.endswith((":sweep", ":dose")) or text.startswith("06_scale:")


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
    `why_unranked` ("measured once"; `CURVE_POINT` for the points of sweeps and dose-responses,
    measured once by design; or the noise reason), and are listed after the ranked ones so
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
        by_design = "notebook" in use and len(use) and all(is_curve_group(nb) for nb in use["notebook"])
        row["why_unranked"] = ((CURVE_POINT if by_design else "measured once") if n_min < 2 else
                               f"timing unreliable: {'; '.join(reasons)}" if reasons else "")
        if n_min >= 2:
            groups = [per_cond[(variant, *(r[k] for k in keys))] for _, r in use.iterrows()]
            row["T_c_lo"], row["T_c_hi"] = bootstrap_mean_of_medians([x["T_ratio"] for x in groups], n_boot, seed)
            row["E_c_lo"], row["E_c_hi"] = bootstrap_mean_of_medians([x["E_ratio"] for x in groups], n_boot, seed)
            lo, hi = bootstrap_mean_of_medians([alpha * x["T_ratio"] + beta * x["E_ratio"] for x in groups], n_boot, seed)
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
