"""Figures of the study (seaborn), each saved as PNG to `figures/<study>/` and returned.

Plotting details live here so that a notebook cell is one call.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg") if not matplotlib.get_backend().lower().startswith(("module://matplotlib_inline", "nbagg", "widget")) else None
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from . import paths  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def save(fig, study: str, name: str) -> Path:
    """Save `fig` as `figures/<study>/<name>.png` (150 dpi); returns the path."""
    path = paths.figures_dir(study) / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return path


def _label(ax, xs, ys, labels, fontsize: int = 7, avoid=None) -> list:
    """Write `labels` beside the points (xs, ys) of `ax`, moved apart by adjustText so that no label
    overlaps another label or a point, each joined to its point by a thin line. `avoid`: (x, y)
    sequences of further points the labels keep off (e.g. unlabelled points). Call it after
    everything that changes the axes' limits or size. Returns the matplotlib Text objects."""
    from adjustText import adjust_text

    xs, ys = list(map(float, xs)), list(map(float, ys))
    texts = [ax.text(x, y, str(text), fontsize=fontsize) for x, y, text in zip(xs, ys, labels)]
    ox, oy = (list(map(float, avoid[0])), list(map(float, avoid[1]))) if avoid is not None else ([], [])
    if texts:
        adjust_text(texts, x=xs + ox, y=ys + oy, ax=ax, expand=(1.1, 1.3),
                    arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
    return texts


def _xerr(table, x: str, interval: tuple[str, str] | None):
    """Asymmetric error-bar lengths [2, n] of column `x` from the (lower, upper) bound columns
    `interval`; 0 where a bound is missing (NaN) or `interval` is None."""
    import numpy as np

    if interval is None:
        return None
    v = table[x].to_numpy(float)
    lo, hi = (table[c].to_numpy(float) if c in table else np.full(len(table), np.nan) for c in interval)
    return np.nan_to_num(np.vstack([v - lo, hi - v]).clip(min=0), nan=0.0, posinf=0.0)


def training_curves(histories: dict, study: str, name: str = "training_curves", title: str = "Training"):
    """Validation (and training) loss against tokens seen, one line per run.

    Args:
        histories: run label -> history DataFrame (columns tokens, train_loss, val_loss).
    Returns (figure, saved path).
    """
    import pandas as pd

    rows = []
    for label, hist in histories.items():
        h = hist.copy()
        h["run"] = label
        rows.append(h)
    df = pd.concat(rows, ignore_index=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=df, x="tokens", y="train_loss", hue="run", alpha=0.3, legend=False, ax=ax)
    val = df.dropna(subset=["val_loss"])
    sns.lineplot(data=val, x="tokens", y="val_loss", hue="run", marker="o", ax=ax)
    ax.set(xlabel="training tokens", ylabel="cross-entropy (nats/token)",
           title=f"{title}: validation (markers) and training (faint) loss")
    fig.tight_layout()
    return fig, save(fig, study, name)


def tradeoff(table, x: str, y: str, study: str, name: str, hue: str = "variant", style: str | None = None,
             title: str = "", xlabel: str | None = None, ylabel: str | None = None, zero_lines: bool = True,
             label: str = "variant", controls=None, min_y_span: float | None = None,
             x_interval: tuple[str, str] | None = None):
    """Scatter of one change against another, one point per row of `table` labelled with its
    `label` column (labels placed by adjustText so that none overlap).

    Args:
        controls: rows (same columns) drawn apart as grey crosses, unlabelled; the y axis spans
            `table`, and controls above or below it are counted in the legend.
        min_y_span: the y axis covers at least [-min_y_span, +min_y_span] (e.g. 1 for +-1 %), so that
            changes far below what matters are not magnified into a trend.
        x_interval: (lower, upper) columns of `table` in the units of `x` (e.g. a 95 % bootstrap
            interval over rounds), drawn as horizontal error bars; NaN bounds draw none.
    Returns (figure, saved path)."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    if x_interval is not None:
        ax.errorbar(table[x], table[y], xerr=_xerr(table, x, x_interval), fmt="none", ecolor="grey",
                    elinewidth=0.8, capsize=2, zorder=1)
    sns.scatterplot(data=table, x=x, y=y, hue=hue, style=style, s=70, ax=ax, zorder=2)
    lo, hi = float(table[y].min()), float(table[y].max())
    if min_y_span is not None:
        lo, hi = min(lo, -min_y_span), max(hi, min_y_span)
    pad = 0.08 * (hi - lo) or 0.01
    ax.set_ylim(lo - pad, hi + pad)
    if controls is not None and len(controls):
        inside = controls[(controls[y] >= lo) & (controls[y] <= hi)]
        off = len(controls) - len(inside)
        ax.scatter(inside[x], inside[y], marker="x", color="grey", s=40,
                   label="controls" + (f"; {off} off the axis" if off else ""))
    if zero_lines:
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
    ax.set(xlabel=xlabel or x, ylabel=ylabel or y, title=title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    _label(ax, table[x], table[y], table[label])
    return fig, save(fig, study, name)


def change_dots(table, metrics: dict, study: str, name: str, hue: str | None = None, title: str = "",
                intervals: dict | None = None):
    """% changes per variant as dots with error bars, one row per variant and one panel per metric
    (a forest plot: every variant has its own row, so no label overlaps another).

    Args:
        table: rows per variant (and per `hue` level), with the columns named in `metrics`.
        metrics: column -> axis label, e.g. {"runtime_s_change_pct": "runtime change vs Base (%)"}.
        hue: column whose levels are drawn side by side in each variant's row (e.g. batch size,
            or ours against the paper's).
        intervals: column -> (lower, upper) columns in the same units, drawn as error bars (e.g.
            a 95 % bootstrap interval over rounds); NaN bounds draw none.
    Returns (figure, saved path).
    Raises ValueError naming a column of `metrics` or `intervals` that `table` lacks.
    """
    import numpy as np

    intervals = intervals or {}
    missing = [c for c in [*metrics, *(b for pair in intervals.values() for b in pair)] if c not in table]
    if missing:
        raise ValueError(f"metrics/intervals name columns the table lacks: {missing}; columns: {list(table.columns)}")
    variants = list(dict.fromkeys(table["variant"]))
    levels = list(dict.fromkeys(table[hue])) if hue else [None]
    step = 0.7 / max(len(levels), 1)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics) + 1.5, 0.32 * len(variants) + 1.6),
                             squeeze=False, sharey=True)
    for ax, (col, label) in zip(axes[0], metrics.items()):
        for i, level in enumerate(levels):
            rows = table if hue is None else table[table[hue] == level]
            ypos = np.array([variants.index(v) for v in rows["variant"]]) + (i - (len(levels) - 1) / 2) * step
            ax.errorbar(rows[col], ypos, xerr=_xerr(rows, col, intervals.get(col)), fmt="o", ms=5, capsize=2,
                        elinewidth=0.9, color=f"C{i}", label=None if hue is None else str(level))
        ax.axvline(0, color="grey", lw=0.8)
        ax.set(xlabel=label, yticks=range(len(variants)), ylim=(len(variants) - 0.5, -0.5))
    axes[0][0].set_yticklabels(variants)
    if hue is not None:
        axes[0][-1].legend(title=hue, bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig, save(fig, study, name)


def heatmap(matrix, study: str, name: str, title: str = "", xlabel: str = "head", ylabel: str = "layer",
            fmt: str = ".2f"):
    """Annotated heat map of a [rows, cols] matrix (e.g. head importance, layer x head).
    Returns (figure, saved path)."""
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * m.shape[1], 1 + 0.45 * m.shape[0]))
    sns.heatmap(m, annot=m.shape[1] <= 16, fmt=fmt, cmap="viridis", ax=ax, cbar_kws={"label": "importance"})
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    fig.tight_layout()
    return fig, save(fig, study, name)


def sweep(table, x: str, y: str, study: str, name: str, hue: str, style: str | None = None, title: str = "",
          xlabel: str | None = None, ylabel: str | None = None, logy: bool = False):
    """Line plot of `y` against `x` per `hue` (and `style`); where several rows share a point (one
    per evaluation corpus) the line is their mean and the band their range. Returns (figure, saved path)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # several rows per point (one per evaluation corpus): the line is their mean, the band their range
    sns.lineplot(data=table, x=x, y=y, hue=hue, style=style, markers=True, errorbar=("pi", 100), ax=ax)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel or x, ylabel=ylabel or y, title=title)
    fig.tight_layout()
    return fig, save(fig, study, name)


def pareto(table, x: str, y: str, front, study: str, name: str, title: str = "", xlabel: str | None = None,
           ylabel: str | None = None, logx: bool = False, controls=None, x_interval: tuple[str, str] | None = None):
    """Scatter of variants with the Pareto front (boolean Series `front`, both axes minimised)
    drawn as a step line and its points labelled (adjustText, no overlaps); `controls` (rows of the
    same columns), when given, are drawn apart as grey crosses, unlabelled and outside the front;
    the y axis spans the candidates (`table`), and controls above it are counted in the legend.
    `x_interval`: (lower, upper) columns in the units of `x`, drawn as horizontal error bars
    (e.g. T_c_lo, T_c_hi: 95 % bootstrap intervals over rounds). Returns (figure, saved path)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    t = table.assign(pareto=front.map({True: "on the front", False: "dominated"}))
    if x_interval is not None:
        ax.errorbar(t[x], t[y], xerr=_xerr(t, x, x_interval), fmt="none", ecolor="grey", elinewidth=0.7,
                    capsize=1.5, alpha=0.7, zorder=1)
    sns.scatterplot(data=t, x=x, y=y, hue="pareto", hue_order=["on the front", "dominated"], s=60, ax=ax, zorder=2)
    lo, hi = float(table[y].min()), float(table[y].max())
    ax.set_ylim(lo - 0.05 * (hi - lo) - 0.01, hi + 0.08 * (hi - lo) + 0.01)  # the candidates' range
    if controls is not None and len(controls):
        inside = controls[(controls[y] >= lo) & (controls[y] <= hi)]
        off = len(controls) - len(inside)
        ax.scatter(inside[x], inside[y], marker="x", color="grey", s=40,
                   label="controls (not candidates)" + (f"; {off} above the axis" if off else ""))
        ax.legend()
    f = t[front].sort_values(x)
    ax.step(f[x], f[y], where="post", color="C0", lw=1)
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel or x, ylabel=ylabel or y, title=title)
    fig.tight_layout()
    _label(ax, f[x], f[y], f["variant"], fontsize=8, avoid=(t.loc[~front, x], t.loc[~front, y]))
    return fig, save(fig, study, name)


def sensitivity(table, study: str, name: str = "sensitivity", top: int = 8, alpha: float = 0.5,
                gamma: float = 1.5):
    """How the ranking of the best `top` variants (at `alpha`, `gamma`) moves with the objective's
    weights (`ranking.sensitivity`'s rows: gamma, alpha, variant, rank). Left: rank against gamma at
    `alpha` (beta = 1 - alpha). Right: rank against alpha at `gamma`, drawn only when some of these
    ranks move with alpha; otherwise the title says that none does (with estimated energy E_c
    repeats T_c, so alpha cannot move a rank). Ranks on a log axis, rank 1 at the top, so that a
    variant falling far down does not squash the others.
    Returns (figure, saved path).
    Raises ValueError naming `alpha` / `gamma` and the values the table holds when it lacks them.
    """
    import numpy as np

    alphas, gammas = np.sort(table["alpha"].unique()), np.sort(table["gamma"].unique())
    if not np.isclose(alphas, alpha).any() or not np.isclose(gammas, gamma).any():
        raise ValueError(f"alpha={alpha}, gamma={gamma}: the sensitivity table holds alpha in {alphas.tolist()} "
                         f"and gamma in {gammas.tolist()}")
    at_alpha = table[np.isclose(table["alpha"], alpha)]
    at_gamma = table[np.isclose(table["gamma"], gamma)]
    keep = at_alpha[np.isclose(at_alpha["gamma"], gamma)].nsmallest(top, "opt")["variant"].tolist()
    at_alpha, at_gamma = at_alpha[at_alpha["variant"].isin(keep)], at_gamma[at_gamma["variant"].isin(keep)]
    alpha_moves = bool((at_gamma.groupby("variant")["rank"].nunique() > 1).any())
    fig, axes = plt.subplots(1, 2 if alpha_moves else 1, figsize=(11 if alpha_moves else 7.5, 4.2),
                             squeeze=False, sharey=True)
    panels = [(at_alpha, "gamma", f"exponent gamma of P_c (alpha = beta = {alpha:g})" if np.isclose(alpha, 0.5)
               else f"exponent gamma of P_c (alpha = {alpha:g}, beta = {1 - alpha:g})")]
    if alpha_moves:
        panels.append((at_gamma, "alpha", f"alpha, with beta = 1 - alpha (gamma = {gamma:g})"))
    for ax, (data, x, xlabel) in zip(axes[0], panels):
        sns.lineplot(data=data, x=x, y="rank", hue="variant", hue_order=keep, marker="o", ax=ax,
                     legend=ax is axes[0][-1])
        ax.set_yscale("log")
        ax.set(xlabel=xlabel, ylabel="rank (log scale, 1 = best)")
    top_rank = int(max(at_alpha["rank"].max(), at_gamma["rank"].max()))
    ticks = [r for r in (1, 2, 3, 5, 10, 20, 50, 100, 200) if r <= top_rank] + [top_rank]
    axes[0][0].set_yticks(sorted(set(ticks)), labels=[str(t) for t in sorted(set(ticks))])
    axes[0][0].minorticks_off()
    axes[0][0].set_ylim(top_rank * 1.15, 0.85)
    axes[0][-1].legend(title=f"best {len(keep)} at gamma = {gamma:g}", bbox_to_anchor=(1.02, 1), loc="upper left",
                       fontsize=8)
    fig.suptitle("Ranking sensitivity to the objective's weights" +
                 ("" if alpha_moves else f"\n(alpha moves none of these ranks at gamma = {gamma:g}: panel left out)"))
    fig.tight_layout()
    return fig, save(fig, study, name)


def break_even(table, study: str, name: str = "break_even"):
    """Bar chart of break-even tokens per variant (log scale), controls (column `control`) left
    out; variants that never pay back are counted in the title (the table lists them). Error bars: the columns
    `break_even_lo` / `break_even_hi` when present (`tradeoffs.break_even`: from the 95 % bootstrap
    interval of the energy saved per token); an upper bound of inf (the interval reaches no
    saving) is drawn as a whisker to the right edge ending in an arrowhead. Returns (figure, saved path)."""
    import numpy as np

    if "control" in table:  # controls are no compression options: they have nothing to pay back
        table = table[~table["control"].astype(bool)]
    finite = table[np.isfinite(table["break_even_tokens"])].reset_index(drop=True)
    never = table.loc[~np.isfinite(table["break_even_tokens"]), "variant"].tolist()
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * max(3, len(finite)) + 1))
    sns.barplot(data=finite, y="variant", x="break_even_tokens", ax=ax, color="C2")
    ax.set_xscale("log")
    if {"break_even_lo", "break_even_hi"} <= set(finite.columns) and len(finite):
        hi = finite["break_even_hi"].to_numpy(float)
        right = float(np.nanmax(np.r_[finite["break_even_tokens"], hi[np.isfinite(hi)]])) * 3
        shown = finite.assign(break_even_hi=np.where(np.isinf(hi), right, hi))
        ax.errorbar(shown["break_even_tokens"], range(len(shown)), xerr=_xerr(shown, "break_even_tokens",
                    ("break_even_lo", "break_even_hi")), fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
        for i in np.flatnonzero(np.isinf(hi)):
            ax.plot(right, i, marker=">", color="black", ms=5)
        ax.set_xlim(right=right * 1.3)
    ax.set(xlabel="inference tokens until the compression cost is paid back (log scale)", ylabel="",
           title="Break-even" + (f" ({len(never)} more never pay back: they save no energy per token)" if never else ""))
    fig.tight_layout()
    return fig, save(fig, study, name)


def compare_runs(table, names: tuple[str, str], name: str = "compare", study: str = "compare"):
    """T_c of run A against run B, one point per variant with both bootstrap intervals as error
    bars, and the diagonal where the two runs agree. Saved to `figures/<study>/<name>.png`.
    Returns (figure, saved path)."""
    a, b = names
    fig, ax = plt.subplots(figsize=(6, 6))
    x, y = table[f"T_c_{a}"], table[f"T_c_{b}"]
    ax.errorbar(x, y, xerr=_xerr(table, f"T_c_{a}", (f"T_c_lo_{a}", f"T_c_hi_{a}")),
                yerr=_xerr(table, f"T_c_{b}", (f"T_c_lo_{b}", f"T_c_hi_{b}")), fmt="o", ms=4, capsize=2, lw=0.8)
    lo, hi = float(min(x.min(), y.min())) * 0.95, float(max(x.max(), y.max())) * 1.05
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=f"T_c in {a}", ylabel=f"T_c in {b}",
           title="Runtime ratio to Base in two runs (bars: 95 % bootstrap intervals)")
    fig.tight_layout()
    return fig, save(fig, study, name)


_DOSE_XLABEL = {"weight bits": "bits per weight (log scale; Base at its own bits)",
                "heads kept": "fraction of attention heads kept", "depth / width kept": "fraction of blocks / MLP neurons / channels kept",
                "weights kept": "fraction of block weights kept (1 - sparsity)"}


def dose_response(curves, study: str, name: str = "dose_response", paper=None, axes=None, title: str = ""):
    """One panel per dose-response axis (`compstudy.dose.AXES`, those in `curves`): the perplexity
    change against Base (%, symmetric-log y: linear within +-1 %) against the dose, one line per
    method, error bars the range over the evaluation corpora; the paper's points (`paper`, from
    `dose.paper_points`) as black stars, labelled. Returns (figure, saved path).

    Raises ValueError when `curves` has no point on the axes asked for."""
    import numpy as np

    from .dose import AXES

    axes = [a for a in (axes or AXES) if (curves["axis"] == a).any()]
    if not axes:
        raise ValueError(f"no dose-response points on the axes {list(axes or AXES)}")
    fig, panels = plt.subplots(1, len(axes), figsize=(4.2 * len(axes), 5.0), squeeze=False)
    for ax, axis in zip(panels[0], axes):
        t = curves[curves["axis"] == axis]
        for k, (method, m) in enumerate(t.groupby("method", sort=False)):
            m = m.sort_values("dose")
            err = np.vstack([m["perplexity_change_pct"] - m["lo"], m["hi"] - m["perplexity_change_pct"]]).clip(min=0)
            ax.errorbar(m["dose"], m["perplexity_change_pct"], yerr=err, marker="os^Dv<>"[k % 7], ms=5, lw=1.3,
                        capsize=2, label=method, color=f"C{k}")
        if paper is not None and len(paper):
            p = paper[paper["axis"] == axis]
            if len(p):
                ax.scatter(p["dose"], p["perplexity_change_pct"], marker="*", s=140, color="black", zorder=5,
                           label="the paper (GPT-2 124M, GPU)")
                for r in p.itertuples():
                    ax.annotate(r.label.removeprefix("paper: "), (r.dose, r.perplexity_change_pct), fontsize=7,
                                xytext=(4, 4), textcoords="offset points")
        ys = [*t["lo"], *t["hi"], *(paper.loc[paper["axis"] == axis, "perplexity_change_pct"] if paper is not None and len(paper) else [])]
        _symlog_y(ax, min(ys), max(ys))
        if axis == "weight bits":
            ax.set_xscale("log", base=2)
            ticks = sorted(set(t["dose"].tolist()) | (set(paper.loc[paper["axis"] == axis, "dose"]) if paper is not None and len(paper) else set()))
            ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
            ax.minorticks_off()
        ax.set(xlabel=_DOSE_XLABEL.get(axis, axis), ylabel="perplexity change vs Base (%, symlog)", title=axis)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, save(fig, study, name)


def _symlog_y(ax, lo: float, hi: float) -> None:
    """A symmetric-log y axis (linear within +-1 %) spanning at least -1 to +1 and the data, with
    plain tick labels and a line at 0."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("symlog", linthresh=1.0)
    lo, hi = min(-1.0, 1.3 * lo if lo < 0 else -1.0), max(1.0, 1.5 * hi if hi > 0 else 1.0)
    ax.set_ylim(lo, hi)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.axhline(0, color="grey", lw=0.8)


def dose_vs_size(curves, study: str, name: str = "dose_vs_size", title: str = ""):
    """Every dense dose-response curve on one x: the bytes on disk against Base's
    (`size_fraction`), y the perplexity change (%, symlog). Unstructured sparsity is left off:
    dense storage does not shrink. Returns (figure, saved path)."""
    t = curves[curves["axis"] != "weights kept"]
    if t.empty:
        raise ValueError("no dense dose-response points to draw against size")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for k, ((axis, method), m) in enumerate(t.groupby(["axis", "method"], sort=False)):
        m = m.sort_values("size_fraction")
        ax.plot(m["size_fraction"], m["perplexity_change_pct"], marker="os^Dv<>p"[k % 8], ms=5, lw=1.2,
                label=f"{method}", color=f"C{k}")
    _symlog_y(ax, float(t["perplexity_change_pct"].min()), float(t["perplexity_change_pct"].max()))
    ax.set(xlabel="bytes on disk, fraction of Base's", ylabel="perplexity change vs Base (%, symlog)",
           title=title or "The same size on disk, by each technique")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig, save(fig, study, name)


def scale_costs(points, study: str, name: str = "scale_costs", title: str = ""):
    """The scale points (`scale.points_table`): each technique's perplexity change against its
    point's Base (%, symmetric-log y) against the point's training tokens per parameter (log x);
    left quantization, right pruning; filled markers the fixed-token series (model sizes), open
    markers the fixed-size series (token budgets); error bars span the evaluation corpora; each
    point labelled with its shape and budget once. Returns (figure, saved path)."""
    import numpy as np

    quant = [t for t in points["technique"].unique() if not str(t).startswith(("AH", "Mag", "GMag", "Wanda", "MLP", "Depth"))]
    groups = [("post-training quantization", quant),
              ("pruning", [t for t in points["technique"].unique() if t not in quant])]
    groups = [(g, ts) for g, ts in groups if ts]
    fig, panels = plt.subplots(1, len(groups), figsize=(6.2 * len(groups), 4.6), squeeze=False)
    for ax, (group, techniques) in zip(panels[0], groups):
        for k, technique in enumerate(techniques):
            t = points[points["technique"] == technique].sort_values("tokens_per_param")
            err = np.vstack([t["perplexity_change_pct"] - t["lo"], t["hi"] - t["perplexity_change_pct"]]).clip(min=0)
            ax.errorbar(t["tokens_per_param"], t["perplexity_change_pct"], yerr=err, fmt="none", ecolor=f"C{k}",
                        elinewidth=0.8, capsize=2)
            size_series = t["series"].astype(str).str.contains("size")
            ax.scatter(t.loc[size_series, "tokens_per_param"], t.loc[size_series, "perplexity_change_pct"], color=f"C{k}",
                       marker="os^Dv"[k % 5], s=40, label=f"{technique}")
            ax.scatter(t.loc[~size_series, "tokens_per_param"], t.loc[~size_series, "perplexity_change_pct"],
                       facecolors="none", edgecolors=f"C{k}", marker="os^Dv"[k % 5], s=40)
        first = points[points["technique"] == techniques[0]]
        for r in first.itertuples():
            ax.annotate(r.label, (r.tokens_per_param, r.perplexity_change_pct), fontsize=6, xytext=(3, -9),
                        textcoords="offset points", color="grey")
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter, NullFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        sub = points[points["technique"].isin(techniques)]
        _symlog_y(ax, float(sub["lo"].min()), float(sub["hi"].max()))
        ax.set(xlabel="training tokens per parameter (log scale)", ylabel="perplexity change vs its Base (%, symlog)",
               title=group)
        ax.legend(fontsize=7, title="filled: sizes at one budget; open: budgets at one size", title_fontsize=6,
                  loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False, ncol=3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, save(fig, study, name)
