"""The comparison's conclusions as sentences, computed from one run's tables (notebook 05 prints
them in one call; nothing in them is typed by hand).

A sentence whose number is undefined (NaN), or that would rest on timings the noise check set
aside, is not printed with that number: it says what is missing instead. A control
(`controls.is_control`: `Base+ft<N>`, `Scratch-*`, `-noKD`, `-rand`) is never named the best variant.
"""
from __future__ import annotations

import math

import pandas as pd

from .controls import is_control
from .tables import plural, sentence_list


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def equal_training_control(name: str) -> bool:
    """Whether a variant is an equal-training control `Base+ft<N>`: its parsed pipeline is one
    `finetune` step (`pipeline`)."""
    from .pipeline import Pipeline

    try:
        p = Pipeline.from_name(name)
    except ValueError:
        return False
    return not p.scratch and p.kinds() == ["finetune"]


def candidates(rank: pd.DataFrame, base: str = "Base") -> pd.DataFrame:
    """The ranking's compression candidates: every row but the base and the controls."""
    return rank[(rank["variant"] != base) & ~rank["variant"].map(is_control)]


def coverage(rank: pd.DataFrame, base: str = "Base") -> dict:
    """How many candidates were ranked and how many left out, and why: {"candidates", "ranked",
    "unranked", "reasons": {reason: [variants]}, "share_unranked", "curve_points"}. The points of
    sweeps and dose-responses (measured once by design, `ranking.CURVE_POINT`) are counted apart
    (`curve_points`), not as candidates left out."""
    from .ranking import CURVE_POINT

    c = candidates(rank, base)
    curve = c["why_unranked"].fillna("").astype(str).eq(CURVE_POINT) if "why_unranked" in c else pd.Series(False, c.index)
    n_curve = int(curve.sum())
    c = c[~curve]
    ranked = c[c["ranked"].astype(bool)]
    left = c[~c["ranked"].astype(bool)]
    reasons: dict[str, list[str]] = {}
    for _, r in left.iterrows():
        why = str(r.get("why_unranked") or "unknown")
        key = "measured once" if why == "measured once" else "timing unreliable" if why.startswith("timing") else why
        reasons.setdefault(key, []).append(r["variant"])
    return {"candidates": len(c), "ranked": len(ranked), "unranked": len(left), "reasons": reasons,
            "share_unranked": len(left) / len(c) if len(c) else 0.0, "curve_points": n_curve}


def coverage_sentence(rank: pd.DataFrame, base: str = "Base") -> str:
    """`N of M compression candidates are ranked; K left out (reasons).`"""
    cov = coverage(rank, base)
    text = f"{cov['ranked']} of {plural(cov['candidates'], 'compression candidate')} are ranked"
    if cov["unranked"]:
        text += "; " + "; ".join(f"{plural(len(v), 'candidate')} left out ({k})" for k, v in cov["reasons"].items())
    if cov["curve_points"]:
        text += (f"; {plural(cov['curve_points'], 'point')} of the dose-response curves and sweeps, measured once by "
                 f"design, are not ranked")
    return text + "."


def best_candidate(rank: pd.DataFrame, base: str = "Base"):
    """The best ranked compression candidate (a row), or None: never a control or the base."""
    c = candidates(rank, base)
    c = c[c["ranked"].astype(bool)].sort_values("opt")
    return c.iloc[0] if len(c) else None


def headline(rank: pd.DataFrame, base: str = "Base") -> str:
    """Notebook 05's first words on the ranking: the best compression candidate (never a control)
    and how many candidates were ranked and left out, and why."""
    best = best_candidate(rank, base)
    text = (f"Best compression candidate: {best.variant} (opt {best.opt:.3f}, interval {best.opt_lo:.3f}-{best.opt_hi:.3f}). "
            if best is not None else "No compression candidate is ranked. ")
    return text + coverage_sentence(rank, base)


def conclusions(*, rank: pd.DataFrame, controls: pd.DataFrame, findings: pd.DataFrame, break_even: pd.DataFrame,
                measurements: pd.DataFrame, noise: pd.DataFrame, both: pd.DataFrame, run_note: str,
                alpha: float, beta: float, gamma: float, base: str = "Base", plateau=None,
                energy_note: str = "") -> list[str]:
    """Notebook 05's conclusions, one sentence each (no bullet marks), from the run's tables:

    rank (`ranking.ranking`), controls (`controls.control_table`), findings (`findings.findings_table`),
    break_even (`tradeoffs.break_even`), measurements (the run's rows), noise (`noise.timing_noise`),
    both (our ranking merged with the paper's: columns variant, rank_ours, rank_paper), the run's
    note, the objective's weights, the plateau check (`baseline.PlateauCheck` or None) and the
    energy note (empty when energy was measured).
    """
    out = [f"Read from {run_note}."]
    ranked = rank[rank["ranked"].astype(bool)]
    out.append(coverage_sentence(rank, base))
    best = best_candidate(rank, base)
    if best is not None:
        out.append(f"At alpha = {alpha:g}, beta = {beta:g}, gamma = {gamma:g}, the lowest score among the compression "
                   f"candidates is {best.variant}'s (opt {best.opt:.3f}, interval {best.opt_lo:.3f}-{best.opt_hi:.3f}); "
                   f"the base scores {alpha + beta:.3f}.")
        cands = candidates(ranked, base)
        tier1 = cands[cands["tier"] == best["tier"]]
        out.append(f"Candidates that cannot be told apart from it (order not established): "
                   f"{sentence_list(tier1['variant'])}; ranks as the intervals allow: "
                   + ", ".join(f"{r.variant} {r.rank_range}" for r in tier1.itertuples()) + ".")
        better = cands[cands["opt"] < alpha + beta]["variant"].tolist()
        clearly = cands[cands["opt_hi"] < alpha + beta]["variant"].tolist()
        out.append(f"{len(better)} of {plural(len(cands), 'ranked candidate')} score below the base; for "
                   f"{len(clearly)} of them the whole interval lies below it"
                   + (f": {sentence_list(clearly)}." if clearly else "."))
    else:
        out.append("No compression candidate is ranked: every condition's timing was unreliable or measured once "
                   "(see the noise table).")
    bad = noise[~noise["reliable"]] if "reliable" in noise else noise.iloc[0:0]
    if len(bad):
        n_left = int(rank["why_unranked"].astype(str).str.startswith("timing").sum())
        out.append(f"Timing was unreliable in {plural(len(bad), 'condition')} (noise table); "
                   f"{plural(n_left, 'variant')} left unranked for it.")
    through_training = set(controls.loc[controls["verdict"] == "better than Base only through training", "variant"])
    credited = candidates(ranked, base)
    kept = credited[~credited["variant"].isin(through_training)]
    if len(kept) and len(credited):
        lowest_p, lowest_e = kept.nsmallest(1, "P_c").iloc[0], credited.nsmallest(1, "E_c").iloc[0]
        out.append(f"Smallest perplexity cost of a compression (variants better than Base only through their extra "
                   f"training left out): {lowest_p.variant} (P_c {lowest_p.P_c:.3f}); largest energy saving: "
                   f"{lowest_e.variant} (E_c {lowest_e.E_c:.3f}).")
    gained = sorted(through_training)
    out.append(f"{plural(len(gained), 'variant')} beat Base only through their extra training (not their "
               f"equal-training control)" + (f": {sentence_list(gained)}." if gained else "."))
    timed_as = measurements.groupby("variant")["timed_as"].first() if "timed_as" in measurements else pd.Series(dtype=str)
    own = ranked[ranked["variant"].map(timed_as).fillna(ranked["variant"]).eq(ranked["variant"])
                 & (ranked["variant"] != base)]
    half = ((own["T_c_hi"] - own["T_c_lo"]) / 2).median() if len(own) else float("nan")
    if _finite(half):
        out.append(f"Timing noise floor: the T_c intervals of the {plural(len(own), 'ranked variant')} timed "
                   f"themselves have a median half-width of {half:.3f} (95 % bootstrap over rounds); runtime "
                   f"differences smaller than that are not established by this run.")
    same = ranked[ranked["variant"].map(equal_training_control)]
    if len(same) and same["variant"].map(timed_as).eq(base).all():
        out.append(f"The equal-training controls ({sentence_list(same['variant'])}) do Base's computation with other "
                   f"weights, so they were timed as Base (column timed_as): their T_c of 1 is by construction, not a "
                   f"measurement.")
    counts = findings["verdict"].value_counts()
    out.append(f"The seeds' findings: {counts.get('agrees', 0)} agree, {counts.get('disagrees', 0)} disagree, "
               f"{counts.get('cannot tell', 0)} cannot tell (table above).")
    if plateau is not None:
        out.append(plateau.sentence().replace("**", ""))
    common = both.dropna(subset=["rank_ours", "rank_paper"]) if len(both) else both
    rho = common["rank_ours"].rank().corr(common["rank_paper"].rank()) if len(common) > 2 else float("nan")
    if _finite(rho):
        out.append(f"On the {len(common)} variants both studies rank, the rank correlation with the paper is "
                   f"{rho:+.2f} (Spearman).")
    else:
        out.append(f"No rank correlation with the paper: fewer than 3 of the paper's variants are ranked here "
                   f"({len(common)}), or their ranks do not vary.")
    reliable = break_even[break_even["variant"].isin(credited["variant"])] if len(break_even) else break_even
    if len(reliable):
        pays = reliable[reliable["pays_back"] != "never"]
        out.append(f"Of the {plural(len(reliable), 'ranked candidate')}, {len(pays)} pay back their compression energy "
                   f"within the measured savings and {len(reliable) - len(pays)} never do (they save no inference "
                   f"energy per token); candidates whose timing was left out are not counted.")
    else:
        out.append("No break-even is stated: no ranked candidate has reliable timing.")
    if energy_note:
        out.append(energy_note)
    return out
