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
             label: str = "variant", controls=None, min_y_span: float | None = None):
    """Scatter of one change against another, one point per row of `table` annotated with its
    `label` column (labels staggered so that neighbours do not overlap).

    Args:
        controls: rows (same columns) drawn apart as grey crosses, unlabelled; the y axis spans
            `table`, and controls above or below it are counted in the legend.
        min_y_span: the y axis covers at least [-min_y_span, +min_y_span] (e.g. 1 for +-1 %), so that
            changes far below what matters are not magnified into a trend.
    Returns (figure, saved path)."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    sns.scatterplot(data=table, x=x, y=y, hue=hue, style=style, s=70, ax=ax)
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
    ordered = table.sort_values([x, y])
    for i, (_, row) in enumerate(ordered.iterrows()):
        ax.annotate(str(row[label]), (row[x], row[y]), textcoords="offset points", xytext=(4, 3 + 9 * (i % 3)),
                    fontsize=7, arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.4})
    if zero_lines:
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(0, color="grey", lw=0.8)
    ax.set(xlabel=xlabel or x, ylabel=ylabel or y, title=title)
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig, save(fig, study, name)


def change_bars(table, metrics: dict, study: str, name: str, hue: str | None = None, title: str = ""):
    """Bar charts of % changes per variant, one panel per metric.

    Args:
        table: rows per variant (and `hue`), with the columns named in `metrics`.
        metrics: column -> panel title, e.g. {"runtime_s_change_pct": "runtime change (%)"}.
    Returns (figure, saved path).
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, (col, label) in zip(axes[0], metrics.items()):
        sns.barplot(data=table, x="variant", y=col, hue=hue, ax=ax)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xlabel="", ylabel=label, title=label)
        ax.tick_params(axis="x", rotation=30)
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
           ylabel: str | None = None, logx: bool = False, controls=None):
    """Scatter of variants with the Pareto front (boolean Series `front`, both axes minimised)
    drawn as a step line and its points labelled; `controls` (rows of the same columns), when
    given, are drawn apart as grey crosses, unlabelled and outside the front; the y axis spans the
    candidates (`table`), and controls above it are counted in the legend. Returns (figure,
    saved path)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    t = table.assign(pareto=front.map({True: "on the front", False: "dominated"}))
    sns.scatterplot(data=t, x=x, y=y, hue="pareto", hue_order=["on the front", "dominated"], s=70, ax=ax)
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
    for i, (_, row) in enumerate(f.iterrows()):  # staggered, so that neighbouring labels do not overlap
        ax.annotate(row["variant"], (row[x], row[y]), textcoords="offset points", xytext=(4, 4 + 10 * (i % 3)),
                    fontsize=8, arrowprops={"arrowstyle": "-", "color": "grey", "lw": 0.5})
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel or x, ylabel=ylabel or y, title=title)
    fig.tight_layout()
    return fig, save(fig, study, name)


def sensitivity(table, study: str, name: str = "sensitivity", top: int = 8):
    """Rank of the best `top` variants (at alpha = 0.5) as alpha goes 0 -> 1 (beta = 1 - alpha),
    one panel per gamma. Returns (figure, saved path)."""
    gammas = sorted(table["gamma"].unique())
    mid = table[(table["alpha"].sub(0.5).abs() < 1e-9) & (table["gamma"] == gammas[len(gammas) // 2])]
    keep = mid.nsmallest(top, "opt")["variant"].tolist()
    t = table[table["variant"].isin(keep)]
    g = sns.relplot(data=t, x="alpha", y="rank", hue="variant", col="gamma", kind="line", marker="o",
                    height=3.2, aspect=0.9, facet_kws={"sharey": True})
    for ax in g.axes.flat:
        ax.invert_yaxis()
        ax.set_xlabel("alpha (beta = 1 - alpha)")
    g.figure.suptitle("Ranking sensitivity to the objective's weights", y=1.03)
    return g.figure, save(g.figure, study, name)


def break_even(table, study: str, name: str = "break_even"):
    """Bar chart of break-even tokens per variant (log scale), controls (column `control`) left
    out; variants that never pay back are listed in the title. Returns (figure, saved path)."""
    import numpy as np

    if "control" in table:  # controls are no compression options: they have nothing to pay back
        table = table[~table["control"].astype(bool)]
    finite = table[np.isfinite(table["break_even_tokens"])]
    never = table.loc[~np.isfinite(table["break_even_tokens"]), "variant"].tolist()
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * max(3, len(finite)) + 1))
    sns.barplot(data=finite, y="variant", x="break_even_tokens", ax=ax, color="C2")
    ax.set_xscale("log")
    ax.set(xlabel="inference tokens until the compression cost is paid back (log scale)", ylabel="",
           title="Break-even" + (f"; never pays back: {', '.join(never)}" if never else ""))
    fig.tight_layout()
    return fig, save(fig, study, name)


def compare_runs(table, names: tuple[str, str], name: str = "compare", study: str = "compare"):
    """T_c of run A against run B, one point per variant with both bootstrap intervals as error
    bars, and the diagonal where the two runs agree. Saved to `figures/<study>/<name>.png`.
    Returns (figure, saved path)."""
    import numpy as np

    a, b = names
    fig, ax = plt.subplots(figsize=(6, 6))
    x, y = table[f"T_c_{a}"], table[f"T_c_{b}"]
    xerr = np.abs(np.vstack([x - table.get(f"T_c_lo_{a}", x), table.get(f"T_c_hi_{a}", x) - x])).astype(float)
    yerr = np.abs(np.vstack([y - table.get(f"T_c_lo_{b}", y), table.get(f"T_c_hi_{b}", y) - y])).astype(float)
    ax.errorbar(x, y, xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr), fmt="o", ms=4, capsize=2, lw=0.8)
    lo, hi = float(min(x.min(), y.min())) * 0.95, float(max(x.max(), y.max())) * 1.05
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=f"T_c in {a}", ylabel=f"T_c in {b}",
           title="Runtime ratio to Base in two runs (bars: 95 % bootstrap intervals)")
    fig.tight_layout()
    return fig, save(fig, study, name)
