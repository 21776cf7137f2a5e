"""The seeds' qualitative findings, checked against this study's measurements (notebook 05).

One row per finding of Wallace et al. (ICPE 2025, arXiv:2502.00046; "A") and Gholami & Omar
(arXiv:2310.04573; "B"), plus Minitron's (Muralidharan et al. 2024). Each row gives our numbers
with their intervals, the paper's, and a verdict computed from the intervals, never written by
hand:

- `agrees`: the whole interval is on the side the finding claims;
- `disagrees`: the whole interval is on the other side;
- `cannot tell`: the interval straddles the threshold (or a variant the finding needs is missing).

Intervals: runtime and energy ratios (T_c, E_c) carry the 95 % bootstrap interval of
`score.ranking` (repeats resampled). Perplexity is deterministic for a given text, so its
interval is the range of the ratio over every condition the variant was measured in (the
evaluation corpora, and the notebooks that measured it): a claim about perplexity holds only if
it holds on every corpus.
"""
from __future__ import annotations

import math
import re

import pandas as pd

from .pipeline import paper_grid

VERDICTS = ("agrees", "disagrees", "cannot tell")


def claim_verdict(lo: float, hi: float, threshold: float, claim: str) -> str:
    """Verdict for the claim that a quantity lies `claim` ("above" or "below") `threshold`,
    given its interval [lo, hi]: `agrees` if the whole interval is on the claimed side,
    `disagrees` if it is wholly on the other side, `cannot tell` if it contains the threshold
    or is missing (NaN).

    Raises ValueError for a `claim` other than "above" / "below".
    """
    if claim not in ("above", "below"):
        raise ValueError(f"claim must be 'above' or 'below', got {claim!r}")
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "cannot tell"
    above, below = lo > threshold, hi < threshold
    if claim == "above":
        return "agrees" if above else "disagrees" if below else "cannot tell"
    return "agrees" if below else "disagrees" if above else "cannot tell"


def combine(verdicts) -> str:
    """One verdict for a finding made of several claims: `disagrees` if any part disagrees,
    `agrees` if all agree, `cannot tell` otherwise (also for no parts)."""
    verdicts = list(verdicts)
    if any(v == "disagrees" for v in verdicts):
        return "disagrees"
    if verdicts and all(v == "agrees" for v in verdicts):
        return "agrees"
    return "cannot tell"


def _p_range(ratios: pd.DataFrame, variant: str) -> tuple[float, float]:
    p = ratios.loc[ratios["variant"] == variant, "P_c"]
    return (float(p.min()), float(p.max())) if len(p) else (math.nan, math.nan)


def _interval(rank: pd.DataFrame, variant: str, col: str) -> tuple[float, float, float]:
    row = rank[rank["variant"] == variant]
    if row.empty:
        return math.nan, math.nan, math.nan
    r = row.iloc[0]
    return float(r[col]), float(r[f"{col}_lo"]), float(r[f"{col}_hi"])


def _fmt(lo: float, hi: float, point: float | None = None, pct: bool = True) -> str:
    if math.isnan(lo):
        return "not measured"
    f = (lambda x: f"{100 * (x - 1):+.1f} %") if pct else (lambda x: f"{x:.3f}")
    mid = "" if point is None or math.isnan(point) else f"{f(point)} "
    return f"{mid}[{f(lo)}, {f(hi)}]"


def _paper(paper: pd.DataFrame, variant: str, cols=("perplexity", "runtime_s", "energy_kwh")) -> str:
    row = paper[paper["variant"] == variant]
    if row.empty:
        return "not in the paper"
    r = row.iloc[0]
    names = {"perplexity": "P", "runtime_s": "T", "energy_kwh": "E"}
    return ", ".join(f"{names[c]} {r[f'{c}_change_pct']:+.1f} %" for c in cols)


def _cpu_note(measurements: pd.DataFrame) -> str:
    devices = set(measurements.get("device", pd.Series(dtype=str)).dropna())
    return ("measured on CPU: bitsandbytes' CPU path dequantizes weights on every call, while the paper timed "
            "CUDA kernels") if devices == {"cpu"} else ""


def _energy_note(measurements: pd.DataFrame) -> str:
    methods = set(measurements.get("energy_method", pd.Series(dtype=str)).dropna())
    return ("energy is estimated from time x TDP here (no RAPL/NVML counter), so E_c repeats T_c"
            if methods and methods <= {"estimated", "unavailable"} else "")


def _why(verdict: str, *notes: str) -> str:
    return "; ".join(n for n in notes if n) if verdict == "disagrees" else ""


def findings_table(measurements: pd.DataFrame, ratios: pd.DataFrame, rank: pd.DataFrame,
                   paper: pd.DataFrame, paper_rank: pd.DataFrame, *, little_pct: float = 5.0,
                   grid: list[str] | None = None) -> pd.DataFrame:
    """The seeds' findings (a)-(g) of issue 11, one row each, computed from the measurements.

    Args:
        measurements: every row of `results/<study>/measurements.csv` (for device and energy method).
        ratios: `score.ratio_table(measurements)` (P_c per condition).
        rank: `score.ranking(...)` (T_c, E_c with `_lo` / `_hi` bootstrap bounds; `opt_lo/hi`).
        paper: `score.paper_changes("gpt2")`; paper_rank: `score.paper_ranking("gpt2")`.
        little_pct: the largest perplexity increase (%) that counts as "costs little" in (a).
        grid: the variants finding (e) ranks among (default: the paper's 18-variant grid,
            `pipeline.paper_grid()`, as far as measured).

    Returns a DataFrame: finding, source, claim, ours, paper, verdict (one of `VERDICTS`), why
    (the known cause of a disagreement, empty otherwise).
    """
    cpu, energy = _cpu_note(measurements), _energy_note(measurements)
    rows = []

    # (a) 4-bit quantization costs little perplexity and cuts energy
    plo, phi = _p_range(ratios, "Base4b")
    e, elo, ehi = _interval(rank, "Base4b", "E_c")
    v = combine([claim_verdict(plo, phi, 1 + little_pct / 100, "below"), claim_verdict(elo, ehi, 1.0, "below")])
    rows.append(dict(finding="(a) 4-bit quantization costs little perplexity and cuts energy", source="A",
                     claim=f"Base4b: P_c <= 1 + {little_pct:g} %, E_c < 1",
                     ours=f"P {_fmt(plo, phi)}; E {_fmt(elo, ehi, e)}", paper=_paper(paper, "Base4b", ("perplexity", "energy_kwh")),
                     verdict=v, why=_why(v, cpu, energy)))

    # (b) 8-bit costs runtime (on GPU)
    t, tlo, thi = _interval(rank, "Base8b", "T_c")
    v = claim_verdict(tlo, thi, 1.0, "above")
    rows.append(dict(finding="(b) 8-bit quantization costs runtime", source="A", claim="Base8b: T_c > 1",
                     ours=f"T {_fmt(tlo, thi, t)}", paper=_paper(paper, "Base8b", ("runtime_s",)), verdict=v,
                     why=_why(v, cpu)))

    # (c) head pruning costs more perplexity than quantization
    heads = [h for h in ("AH90", "AH80") if (ratios["variant"] == h).any()]
    quants = [q for q in ("Base8b", "Base4b") if (ratios["variant"] == q).any()]
    if heads and quants:
        h_lo = min(_p_range(ratios, h)[0] for h in heads)
        q_hi = max(_p_range(ratios, q)[1] for q in quants)
        h_hi = max(_p_range(ratios, h)[1] for h in heads)
        q_lo = min(_p_range(ratios, q)[0] for q in quants)
        v = "agrees" if h_lo > q_hi else "disagrees" if h_hi < q_lo else "cannot tell"
        ours = (f"{'/'.join(heads)} P {_fmt(h_lo, h_hi)}; {'/'.join(quants)} P {_fmt(q_lo, q_hi)}")
    else:
        v, ours = "cannot tell", "not measured"
    rows.append(dict(finding="(c) head pruning costs more perplexity than quantization", source="A",
                     claim="every head-pruned P_c above every quantized P_c", ours=ours,
                     paper="; ".join(f"{x} {_paper(paper, x, ('perplexity',))}" for x in ("AH90", "AH80", "Base8b", "Base4b")),
                     verdict=v, why=""))

    # (d) the distilled model costs perplexity and saves runtime
    plo, phi = _p_range(ratios, "Distil")
    t, tlo, thi = _interval(rank, "Distil", "T_c")
    v = combine([claim_verdict(plo, phi, 1.0, "above"), claim_verdict(tlo, thi, 1.0, "below")])
    tokens = measurements.loc[measurements["variant"] == "Distil", "training_tokens"] if "training_tokens" in measurements else pd.Series(dtype=float)
    extra = (f"the student trained {int(tokens.max()):,} tokens more than the baseline (compare it with its "
             f"equal-training control)") if len(tokens.dropna()) and tokens.max() > 0 and plo < 1 else ""
    rows.append(dict(finding="(d) the distilled model costs perplexity and saves runtime", source="A",
                     claim="Distil: P_c > 1, T_c < 1", ours=f"P {_fmt(plo, phi)}; T {_fmt(tlo, thi, t)}",
                     paper=_paper(paper, "Distil", ("perplexity", "runtime_s")), verdict=v, why=_why(v, extra)))

    # (e) Distil4b and Base4b lead the equation (among the paper's grid)
    grid = grid or paper_grid()
    g = rank[rank["variant"].isin(grid) & rank["ranked"].astype(bool)].sort_values("opt")
    if {"Distil4b", "Base4b"} <= set(g["variant"]) and len(g) > 2:
        best_hi = float(g.iloc[0]["opt_hi"])
        tier = g[g["opt_lo"] <= best_hi]["variant"].tolist()
        pos = {n: int(i) + 1 for i, n in enumerate(g["variant"])}
        if len(tier) > len(g) / 2:
            v = "cannot tell"
        else:
            v = "agrees" if {"Distil4b", "Base4b"} <= set(tier) else "disagrees"
        ours = (f"positions among {len(g)} grid variants: Distil4b {pos['Distil4b']}, Base4b {pos['Base4b']}; "
                f"top tier (interval overlaps the best's): {', '.join(tier)}")
    else:
        v, ours = "cannot tell", "not measured (both must be ranked)"
    prank = {r.variant: int(r.rank) for r in paper_rank.itertuples()}
    rows.append(dict(finding="(e) Distil4b and Base4b lead the equation", source="A",
                     claim="both in the top tier of the grid's ranking", ours=ours,
                     paper=f"ranks Distil4b {prank.get('Distil4b', '?')}, Base4b {prank.get('Base4b', '?')} of {len(prank)}",
                     verdict=v, why=_why(v, cpu, energy)))

    # (f) fine-tuning recovers most of the perplexity lost to pruning, more so at high sparsity
    rows.append(_finding_f(ratios))

    # (g) Minitron: structured pruning + KD beats the same shape trained from scratch
    shapes = sorted({v[len("Scratch-"):] for v in ratios["variant"] if v.startswith("Scratch-")})
    parts, texts = [], []
    for s in shapes:
        if (ratios["variant"] == f"{s}+KD").any():
            klo, khi = _p_range(ratios, f"{s}+KD")
            slo, shi = _p_range(ratios, f"Scratch-{s}")
            parts.append("agrees" if khi < slo else "disagrees" if klo > shi else "cannot tell")
            texts.append(f"{s}+KD P {_fmt(klo, khi)} vs scratch {_fmt(slo, shi)}")
    v = combine(parts)
    rows.append(dict(finding="(g) structured pruning + KD beats the same shape trained from scratch", source="Minitron",
                     claim="P_c(pruned+KD) below P_c(scratch), every shape", ours="; ".join(texts) or "not measured",
                     paper="Minitron (Muralidharan et al. 2024): pruned + distilled beats training from scratch",
                     verdict=v, why=""))
    return pd.DataFrame(rows)


def _finding_f(ratios: pd.DataFrame) -> dict:
    """(f) Gholami & Omar: recovery = (P[Mag s] - P[Mag s+ft]) / (P[Mag s] - P[Mag0+ft]), the
    share of the perplexity lost to pruning that fine-tuning wins back, measured against the
    unpruned model given the same fine-tuning (so training alone is not counted as recovery)."""
    parts, texts = [], []
    sweep = ratios[ratios["variant"].str.match(r"^G?Mag\d")]
    for prefix in ("Mag", "GMag"):
        control = sweep[sweep["variant"] == "Mag0+ft"].set_index("dataset")["P_c"]  # sparsity 0: one model, any scope
        levels = sorted({float(m.group(1)) for v in sweep["variant"]
                         if (m := re.match(rf"^{prefix}(\d+(?:\.\d+)?)\+ft$", v)) and float(m.group(1)) > 0})
        if control.empty or len(levels) < 2:
            continue
        rec = {}
        for s in (levels[0], levels[-1]):
            name = f"{prefix}{s:g}"
            pruned = sweep[sweep["variant"] == name].set_index("dataset")["P_c"]
            tuned = sweep[sweep["variant"] == f"{name}+ft"].set_index("dataset")["P_c"]
            rec[s] = ((pruned - tuned) / (pruned - control)).dropna()
        lo, hi = rec[levels[-1]], rec[levels[0]]
        if lo.empty or hi.empty:
            continue
        most = claim_verdict(float(lo.min()), float(lo.max()), 0.5, "above")
        more = claim_verdict(float((lo - hi.reindex(lo.index)).min()), float((lo - hi.reindex(lo.index)).max()), 0.0, "above")
        parts += [most, more]
        texts.append(f"{prefix}: recovered {100 * lo.min():.0f}-{100 * lo.max():.0f} % at sparsity {levels[-1]:g} %, "
                     f"{100 * hi.min():.0f}-{100 * hi.max():.0f} % at {levels[0]:g} %")
    return dict(finding="(f) fine-tuning recovers most of the perplexity lost to pruning, more so at high sparsity",
                source="B", claim="recovery > 50 % at the highest sparsity, and higher there than at the lowest",
                ours="; ".join(texts) or "not measured (magnitude sweep with fine-tuning needed)",
                paper="Gholami & Omar: fine-tuning restores most accuracy, the gain growing with sparsity",
                verdict=combine(parts), why="")
