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
             title: str = "", xlabel: str | None = None, ylabel: str | None = None, zero_lines: bool = True):
    """Scatter of one change against another, one labelled point per row of `table`.
    Returns (figure, saved path)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=table, x=x, y=y, hue=hue, style=style, s=90, ax=ax)
    for _, row in table.iterrows():
        ax.annotate(str(row[hue]), (row[x], row[y]), textcoords="offset points", xytext=(5, 4), fontsize=8)
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
    """Line plot of `y` against `x` per `hue` (and `style`); returns (figure, saved path)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=table, x=x, y=y, hue=hue, style=style, markers=True, ax=ax)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel or x, ylabel=ylabel or y, title=title)
    fig.tight_layout()
    return fig, save(fig, study, name)
