"""The figures' promises: labels that do not overlap, error bars that are the intervals given,
no panel that cannot show anything, and clear errors for bad arguments."""
import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from compstudy import paths, plots  # noqa: E402


@pytest.fixture(autouse=True)
def figures_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "figures_dir", lambda study: tmp_path)


def _boxes(texts):
    renderer = texts[0].figure.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts]


@pytest.mark.slow
def test_tradeoff_labels_a_crowded_cluster_without_overlaps():
    rng = np.random.default_rng(0)
    names = [f"Distil+{k}+4b" for k in range(12)]  # long labels, points almost on top of each other
    table = pd.DataFrame({"variant": names, "x": -33 + rng.normal(0, 0.4, 12), "y": 5 + rng.normal(0, 0.1, 12)})
    fig, path = plots.tradeoff(table, "x", "y", "s", "crowded", hue=None)
    texts = [t for t in fig.axes[0].texts if t.get_text() in names]
    assert sorted(t.get_text() for t in texts) == sorted(names) and path.exists()
    overlaps = [(a.get_text(), b.get_text()) for (a, ba), (b, bb) in itertools.combinations(zip(texts, _boxes(texts)), 2)
                if ba.overlaps(bb)]
    assert overlaps == []


def test_change_dots_draws_the_given_intervals_and_names_missing_columns():
    table = pd.DataFrame({"variant": ["A", "B", "A", "B"], "src": ["ours", "ours", "paper", "paper"],
                          "d": [10.0, -5.0, 20.0, 1.0], "d_lo": [8.0, -9.0, np.nan, np.nan], "d_hi": [13.0, -4.0, np.nan, np.nan]})
    fig, _ = plots.change_dots(table, {"d": "change (%)"}, "s", "dots", hue="src", intervals={"d": ("d_lo", "d_hi")})
    ax = fig.axes[0]
    ours = ax.containers[0]  # ErrorbarContainer of the first hue level
    segments = ours.lines[2][0].get_segments()
    assert [(s[0][0], s[1][0]) for s in segments] == [(8.0, 13.0), (-9.0, -4.0)]
    paper = ax.containers[1].lines[2][0].get_segments()
    assert all(s[0][0] == s[1][0] for s in paper)  # no interval given: zero-length whiskers
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A", "B"]
    with pytest.raises(ValueError, match=r"lack.*\['e_hi'\]"):
        plots.change_dots(table.assign(e_lo=0.0), {"d": "x"}, "s", "dots", intervals={"d": ("e_lo", "e_hi")})


def _sensitivity(alpha_matters: bool):
    rows = []
    for gamma in (0.5, 1.5, 3.0):
        for alpha in (0.0, 0.5, 1.0):
            for v, (p, t, e) in {"A": (1.0, 0.6, 0.9), "B": (1.2, 0.8, 0.5), "C": (1.0, 1.0, 1.0)}.items():
                e = e if alpha_matters else t  # estimated energy repeats runtime
                score_ = p ** gamma * (alpha * t + (1 - alpha) * e)
                rows.append({"gamma": gamma, "alpha": alpha, "variant": v, "opt": score_})
    t = pd.DataFrame(rows)
    t["rank"] = t.groupby(["gamma", "alpha"])["opt"].rank(method="min").astype(int)
    return t


@pytest.mark.slow
def test_sensitivity_leaves_out_the_alpha_panel_only_when_no_rank_moves():
    fig, _ = plots.sensitivity(_sensitivity(alpha_matters=False), "s", top=3)
    assert len(fig.axes) == 1 and "alpha moves none of these ranks" in fig._suptitle.get_text()
    fig, _ = plots.sensitivity(_sensitivity(alpha_matters=True), "s", top=3)
    assert len(fig.axes) == 2 and "alpha moves none" not in fig._suptitle.get_text()
    with pytest.raises(ValueError, match=r"alpha=0.5, gamma=2.0: the sensitivity table holds"):
        plots.sensitivity(_sensitivity(alpha_matters=True), "s", gamma=2.0)


def test_break_even_counts_the_never_and_arrows_an_open_interval():
    table = pd.DataFrame({"variant": ["P", "Q", "R", "S"], "break_even_tokens": [1e5, 1e6, np.inf, np.inf],
                          "break_even_lo": [5e4, 5e5, np.inf, np.inf], "break_even_hi": [2e5, np.inf, np.inf, np.inf],
                          "control": [False, False, False, True]})
    fig, _ = plots.break_even(table, "s")
    ax = fig.axes[0]
    assert "1 more never pay back" in ax.get_title()  # R; S is a control, left out
    arrows = [line for line in ax.lines if line.get_marker() == ">"]
    assert len(arrows) == 1 and arrows[0].get_ydata()[0] == 1  # Q's open upper bound
