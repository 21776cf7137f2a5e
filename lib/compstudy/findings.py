"""The seeds' qualitative findings, checked against this study's measurements (notebook 05).

One row per finding of Wallace et al. (ICPE 2025, arXiv:2502.00046; "A") and Gholami & Omar
(arXiv:2310.04573; "B"), plus Minitron's (Muralidharan et al. 2024) and Kumar et al.'s (2024,
"Scaling Laws for Precision"; (h), decided on the scale study's points). Each row gives our numbers
with their intervals, the paper's, and a verdict computed from the intervals, never written by
hand:

- `agrees`: the whole interval is on the side the finding claims;
- `disagrees`: the whole interval is on the other side;
- `cannot tell`: the interval straddles the threshold (or a variant the finding needs is missing).

Intervals: runtime and energy ratios (T_c, E_c) carry the 95 % bootstrap interval of
`ranking.ranking` (repeats resampled). Perplexity is deterministic for a given text, so its
interval is the range of the ratio over every condition the variant was measured in (the
evaluation corpora, and the notebooks that measured it): a claim about perplexity holds only if
it holds on every corpus.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from . import dose
from .pipeline import Pipeline, paper_grid

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


def _why_not_agreed(verdict: str, *notes: str) -> str:
    """The notes, when the finding did not agree (disagrees or cannot tell): what the run measured
    that explains it."""
    return "; ".join(n for n in notes if n) if verdict != "agrees" else ""


@dataclass(frozen=True)
class Evidence:
    """What every finding reads: the run's rows (device, energy method), its ratios (P_c per
    condition), its ranking (T_c, E_c with `_lo` / `_hi`, opt intervals), the paper's changes and
    ranking, and the two thresholds of (a) and (e)."""

    measurements: pd.DataFrame
    ratios: pd.DataFrame
    rank: pd.DataFrame
    paper: pd.DataFrame
    paper_rank: pd.DataFrame
    little_pct: float = 5.0
    grid: tuple = ()
    curves: pd.DataFrame | None = None  # dose.curves of the run (None: no dose sweep)
    scale: pd.DataFrame | None = None  # scale.points_table (None: no scale points)
    scale_note: str = ""  # where the scale points come from (scale.load_points)
    tokens_per_param: float = math.nan  # the baseline's training tokens per parameter

    @classmethod
    def of(cls, **fields) -> "Evidence":
        """Evidence with only `fields` (the others empty): e.g. `Evidence.of(scale=points)` for (h)."""
        empty = pd.DataFrame()
        base = dict(measurements=empty, ratios=empty, rank=empty, paper=empty, paper_rank=empty)
        return cls(**{**base, **fields})

    @property
    def cpu(self) -> str:
        return _cpu_note(self.measurements)

    @property
    def energy(self) -> str:
        return _energy_note(self.measurements)

    @property
    def tokens(self) -> str:
        if math.isnan(self.tokens_per_param):
            return ""
        return (f"the baseline was trained on {self.tokens_per_param:.1f} tokens per parameter, and post-training "
                f"quantization costs less the fewer tokens per parameter (Kumar et al. 2024; finding (h))")

    def curve_note(self, axis: str, points) -> str:
        """'<what> costs <x> %' for each (label, method or None, dose) of `points` measured on `axis`."""
        if self.curves is None or self.curves.empty:
            return ""
        parts = []
        for label, method, d in points:
            c = dose.cost_at(self.curves, axis, d, method)
            if not math.isnan(c):
                parts.append(f"{label} {c:+.2f} %")
        return f"{axis} curve: " + ", ".join(parts) if parts else ""


def finding_a(x: Evidence) -> dict:
    """(a) 4-bit quantization costs little perplexity and cuts energy (Wallace et al.)."""
    plo, phi = _p_range(x.ratios, "Base4b")
    e, elo, ehi = _interval(x.rank, "Base4b", "E_c")
    v = combine([claim_verdict(plo, phi, 1 + x.little_pct / 100, "below"), claim_verdict(elo, ehi, 1.0, "below")])
    return dict(finding="(a) 4-bit quantization costs little perplexity and cuts energy", source="A",
                claim=f"Base4b: P_c <= 1 + {x.little_pct:g} %, E_c < 1",
                ours=f"P {_fmt(plo, phi)}; E {_fmt(elo, ehi, e)}",
                paper=_paper(x.paper, "Base4b", ("perplexity", "energy_kwh")), verdict=v,
                why=_why_not_agreed(v, x.cpu, x.energy, x.curve_note("weight bits", (
                    ("NF4", "bitsandbytes (LLM.int8(), NF4)", 4.0), ("3-bit HQQ", "HQQ", 3.0), ("3-bit GPTQ", "GPTQ (dequantized)", 3.0),
                    ("2-bit HQQ", "HQQ", 2.0))), x.tokens))


def finding_b(x: Evidence) -> dict:
    """(b) 8-bit quantization costs runtime (Wallace et al., on a GPU)."""
    t, tlo, thi = _interval(x.rank, "Base8b", "T_c")
    v = claim_verdict(tlo, thi, 1.0, "above")
    return dict(finding="(b) 8-bit quantization costs runtime", source="A", claim="Base8b: T_c > 1",
                ours=f"T {_fmt(tlo, thi, t)}", paper=_paper(x.paper, "Base8b", ("runtime_s",)), verdict=v,
                why=_why(v, x.cpu))


def finding_c(x: Evidence) -> dict:
    """(c) head pruning costs more perplexity than quantization (Wallace et al.): every head-pruned
    base variant (`AH<pct>`, alone) above every quantized base (`Base8b`, `Base4b`)."""
    names = set(x.ratios["variant"])
    heads = [h for h in ("AH90", "AH80") if h in names]  # the paper's doses (the rest of the curve: the why)
    quants = [q for q in ("Base8b", "Base4b") if q in names]
    if heads and quants:
        h_lo = min(_p_range(x.ratios, h)[0] for h in heads)
        q_hi = max(_p_range(x.ratios, q)[1] for q in quants)
        h_hi = max(_p_range(x.ratios, h)[1] for h in heads)
        q_lo = min(_p_range(x.ratios, q)[0] for q in quants)
        v = "agrees" if h_lo > q_hi else "disagrees" if h_hi < q_lo else "cannot tell"
        ours = f"{'/'.join(heads)} P {_fmt(h_lo, h_hi)}; {'/'.join(quants)} P {_fmt(q_lo, q_hi)}"
    else:
        v, ours = "cannot tell", "not measured"
    heads_curve = x.curve_note("heads kept", [(f"AH{round(100 * d)}", None, d) for d in (0.8, 0.6, 0.4, 0.2)])
    return dict(finding="(c) head pruning costs more perplexity than quantization", source="A",
                claim="AH90 / AH80 P_c above Base8b / Base4b P_c", ours=ours,
                paper="; ".join(f"{n} {_paper(x.paper, n, ('perplexity',))}" for n in ("AH90", "AH80", "Base8b", "Base4b")),
                verdict=v, why=_why_not_agreed(v, heads_curve, x.tokens if heads_curve else ""))


def finding_d(x: Evidence) -> dict:
    """(d) the distilled model costs perplexity and saves runtime (Wallace et al.)."""
    m = x.measurements
    plo, phi = _p_range(x.ratios, "Distil")
    t, tlo, thi = _interval(x.rank, "Distil", "T_c")
    v = combine([claim_verdict(plo, phi, 1.0, "above"), claim_verdict(tlo, thi, 1.0, "below")])
    tokens = m.loc[m["variant"] == "Distil", "training_tokens"] if "training_tokens" in m else pd.Series(dtype=float)
    extra = (f"the student trained {int(tokens.max()):,} tokens more than the baseline (compare it with its "
             f"equal-training control)") if len(tokens.dropna()) and tokens.max() > 0 and plo < 1 else ""
    return dict(finding="(d) the distilled model costs perplexity and saves runtime", source="A",
                claim="Distil: P_c > 1, T_c < 1", ours=f"P {_fmt(plo, phi)}; T {_fmt(tlo, thi, t)}",
                paper=_paper(x.paper, "Distil", ("perplexity", "runtime_s")), verdict=v, why=_why(v, extra))


def finding_e(x: Evidence) -> dict:
    """(e) Distil4b and Base4b lead the equation among the paper's grid (Wallace et al.)."""
    grid = list(x.grid) or paper_grid()
    rank = x.rank
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
    prank = {r.variant: int(r.rank) for r in x.paper_rank.itertuples()}
    return dict(finding="(e) Distil4b and Base4b lead the equation", source="A",
                claim="both in the top tier of the grid's ranking", ours=ours,
                paper=f"ranks Distil4b {prank.get('Distil4b', '?')}, Base4b {prank.get('Base4b', '?')} of {len(prank)}",
                verdict=v, why=_why(v, x.cpu, x.energy))


def finding_f(x: Evidence) -> dict:
    """(f) fine-tuning recovers most of the perplexity lost to pruning, more so at high sparsity
    (Gholami & Omar): see `_finding_f`; the why cites the sparsity curve."""
    row = _finding_f(x.ratios)
    curve = x.curve_note("weights kept", [(f"{100 * (1 - d):.0f} % sparsity", "magnitude (layer)", d) for d in (0.9, 0.5, 0.1)])
    row["why"] = _why_not_agreed(row["verdict"], curve and f"{curve} before fine-tuning: where pruning costs little, "
                                                          f"there is little to recover")
    return row


def finding_h(x: Evidence) -> dict:
    """(h) post-training quantization costs more perplexity the more tokens per parameter a model
    was trained on (Kumar et al. 2024; Ouyang et al. 2025), checked on the scale points
    (`scale.points_table`): `scale_verdict` for NF4 and each 3-bit method, combined."""
    claim = "PTQ cost rises with tokens per parameter (NF4, 3-bit HQQ, 3-bit GPTQ)"
    finding = "(h) post-training quantization costs more the more tokens per parameter a model saw"
    paper = "Kumar et al. 2024 (arXiv:2411.04330), Ouyang et al. 2025: degradation grows with training tokens"
    if x.scale is None or x.scale.empty:
        return dict(finding=finding, source="Kumar", claim=claim, ours=f"not measured ({x.scale_note or 'no scale points'})",
                    paper=paper, verdict="cannot tell", why="")
    parts, texts = [], []
    for technique in ("Base4b", "Basehqq3", "Basegptq3"):
        verdict, text = scale_verdict(x.scale, technique)
        if text:
            parts.append(verdict)
            texts.append(text)
    v = combine(parts)
    return dict(finding=finding, source="Kumar", claim=claim, ours="; ".join(texts) or "not measured", paper=paper,
                verdict=v, why=_why_not_agreed(v, _epochs_note(x.scale)))


def scale_verdict(points: pd.DataFrame, technique: str) -> tuple[str, str]:
    """(verdict, text) of finding (h) for one technique over the scale points: `agrees` when its
    cost rises with tokens per parameter (Spearman correlation > 0) and the point with the most
    tokens per parameter costs more than the one with the fewest on every corpus (its lowest cost
    above the other's highest); `disagrees` for the mirror case; `cannot tell` otherwise, or
    with fewer than 3 points. Text empty when the technique was not measured."""
    from scipy.stats import spearmanr

    t = points[points["technique"] == technique].sort_values("tokens_per_param")
    if t.empty:
        return "cannot tell", ""
    if len(t) < 3:
        return "cannot tell", f"{technique}: {len(t)} point(s), 3 needed"
    rho = float(spearmanr(t["tokens_per_param"], t["perplexity_change_pct"]).statistic)
    a, b = t.iloc[0], t.iloc[-1]
    if rho > 0 and b["lo"] > a["hi"]:
        v = "agrees"
    elif rho < 0 and b["hi"] < a["lo"]:
        v = "disagrees"
    else:
        v = "cannot tell"
    text = (f"{technique}: {a['perplexity_change_pct']:+.2f} % at {a['tokens_per_param']:.2g} tokens/parameter "
            f"({a['label']}) to {b['perplexity_change_pct']:+.2f} % at {b['tokens_per_param']:.2g} ({b['label']}), "
            f"Spearman {rho:+.2f} over {len(t)} points")
    return v, text


def _epochs_note(points: pd.DataFrame) -> str:
    if "epochs" not in points or points["epochs"].max() <= 1:
        return ""
    return (f"the largest budgets repeat the offline text ({points['epochs'].max():.1f} epochs): repeated tokens are "
            f"not the unique tokens the papers vary")


def finding_g(x: Evidence) -> dict:
    """(g) structured pruning + KD beats the same shape trained from scratch (Minitron): every
    shape with a `Scratch-<shape>` control and a `<shape>+KD` variant."""
    names = set(x.ratios["variant"])
    parts, texts = [], []
    for scratch in sorted(n for n in names if _parsed(n) is not None and _parsed(n).scratch):
        shape = _parsed(scratch).__class__(_parsed(scratch).steps).name  # the shape's own name
        kd = f"{shape}+KD"
        if kd in names:
            klo, khi = _p_range(x.ratios, kd)
            slo, shi = _p_range(x.ratios, scratch)
            parts.append("agrees" if khi < slo else "disagrees" if klo > shi else "cannot tell")
            texts.append(f"{kd} P {_fmt(klo, khi)} vs scratch {_fmt(slo, shi)}")
    return dict(finding="(g) structured pruning + KD beats the same shape trained from scratch", source="Minitron",
                claim="P_c(pruned+KD) below P_c(scratch), every shape", ours="; ".join(texts) or "not measured",
                paper="Minitron (Muralidharan et al. 2024): pruned + distilled beats training from scratch",
                verdict=combine(parts), why="")


FINDINGS = (finding_a, finding_b, finding_c, finding_d, finding_e, finding_f, finding_g, finding_h)


def findings_table(measurements: pd.DataFrame, ratios: pd.DataFrame, rank: pd.DataFrame,
                   paper: pd.DataFrame, paper_rank: pd.DataFrame, *, little_pct: float = 5.0,
                   grid: list[str] | None = None, curves: pd.DataFrame | None = None,
                   scale: pd.DataFrame | None = None, scale_note: str = "",
                   tokens_per_param: float = math.nan) -> pd.DataFrame:
    """The seeds' findings (`FINDINGS`, one function each), one row each, computed from the measurements.

    Args:
        measurements: every row of the run (for device and energy method).
        ratios: `ratios.ratio_table(measurements)` (P_c per condition).
        rank: `ranking.ranking(...)` (T_c, E_c with `_lo` / `_hi` bootstrap bounds; `opt_lo/hi`).
        paper: `reference.paper_changes("gpt2")`; paper_rank: `reference.paper_ranking("gpt2")`.
        little_pct: the largest perplexity increase (%) that counts as "costs little" in (a).
        grid: the variants finding (e) ranks among (default: the paper's 18-variant grid,
            `pipeline.paper_grid()`, as far as measured).
        curves: `dose.curves(measurements)`: the dose-response the whys of (a), (c), (f) cite.
        scale, scale_note: `scale.load_points()`: the points finding (h) is decided on.
        tokens_per_param: the baseline's training tokens per parameter (its facts).

    Returns a DataFrame: finding, source, claim, ours, paper, verdict (one of `VERDICTS`), why
    (the known cause of a disagreement, empty otherwise).
    """
    x = Evidence(measurements, ratios, rank, paper, paper_rank, little_pct, tuple(grid or ()), curves, scale, scale_note,
                 tokens_per_param)
    return pd.DataFrame([f(x) for f in FINDINGS])


def _parsed(name: str):
    """The parsed pipeline of a variant name (`pipeline.Pipeline`), or None when it does not parse."""
    try:
        return Pipeline.from_name(name)
    except ValueError:
        return None


def _only(name: str, key: str) -> bool:
    """Whether `name` is a single step of registry key `key` applied to the baseline."""
    p = _parsed(name)
    return p is not None and not p.scratch and p.kinds() == [key] and not getattr(p.steps[0].config, "finetune_tokens", 0)


def _finding_f(ratios: pd.DataFrame) -> dict:
    """(f) Gholami & Omar: recovery = (P[Mag s] - P[Mag s+ft]) / (P[Mag s] - P[Mag0+ft]), the
    share of the perplexity lost to pruning that fine-tuning wins back, measured against the
    unpruned model given the same fine-tuning (so training alone is not counted as recovery).
    The sweep's points are read from their parsed names: one magnitude step (`prune:magnitude` or
    `prune:global-magnitude`), with or without `ft`."""
    parts, texts = [], []
    names = set(ratios["variant"])
    control = ratios[ratios["variant"] == "Mag0+ft"].set_index("dataset")["P_c"]  # sparsity 0: one model, any scope
    for key, prefix in (("prune:magnitude", "Mag"), ("prune:global-magnitude", "GMag")):
        points = {}
        for n in names:
            p = _parsed(n)
            if p is not None and not p.scratch and p.kinds() == [key] and p.steps[0].config.sparsity > 0:
                c = p.steps[0].config
                points.setdefault(c.sparsity, {})[bool(c.finetune_tokens)] = n
        levels = sorted(s for s, v in points.items() if set(v) == {False, True})
        if control.empty or len(levels) < 2:
            continue
        rec = {}
        for s in (levels[0], levels[-1]):
            pruned = ratios[ratios["variant"] == points[s][False]].set_index("dataset")["P_c"]
            tuned = ratios[ratios["variant"] == points[s][True]].set_index("dataset")["P_c"]
            rec[s] = ((pruned - tuned) / (pruned - control)).dropna()
        lo, hi = rec[levels[-1]], rec[levels[0]]
        if lo.empty or hi.empty:
            continue
        most = claim_verdict(float(lo.min()), float(lo.max()), 0.5, "above")
        more = claim_verdict(float((lo - hi.reindex(lo.index)).min()), float((lo - hi.reindex(lo.index)).max()), 0.0, "above")
        parts += [most, more]
        texts.append(f"{prefix}: recovered {100 * lo.min():.0f}-{100 * lo.max():.0f} % at sparsity {100 * levels[-1]:g} %, "
                     f"{100 * hi.min():.0f}-{100 * hi.max():.0f} % at {100 * levels[0]:g} %")
    return dict(finding="(f) fine-tuning recovers most of the perplexity lost to pruning, more so at high sparsity",
                source="B", claim="recovery > 50 % at the highest sparsity, and higher there than at the lowest",
                ours="; ".join(texts) or "not measured (magnitude sweep with fine-tuning needed)",
                paper="Gholami & Omar: fine-tuning restores most accuracy, the gain growing with sparsity",
                verdict=combine(parts), why="")
