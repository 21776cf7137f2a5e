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
