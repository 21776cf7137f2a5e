import math

import numpy as np
import pandas as pd
import pytest

from compstudy import controls, noise, ranking, ratios, reference, tradeoffs


def _rows(variant, ppl, runtimes, energies, dataset="d", notebook="n", cost=0.0, tokens=1000):
    return [{"variant": variant, "dataset": dataset, "notebook": notebook, "batch_size": 8, "tokens_scored": tokens,
             "repeat": i, "perplexity": ppl, "runtime_s": t, "energy_kwh": e, "cost_kwh": cost, "cost_s": 10 * cost,
             "energy_method": "estimated"} for i, (t, e) in enumerate(zip(runtimes, energies))]


@pytest.fixture
def study():
    rows = (_rows("Base", 10.0, [2.0, 2.0, 2.2], [4.0, 4.0, 4.4]) +
            _rows("Q", 11.0, [1.0, 1.0, 1.1], [1.0, 1.0, 1.1], cost=1e-3) +
            _rows("Slow", 10.0, [4.0, 4.0, 4.0], [8.0, 8.0, 8.0], cost=2e-3) +
            _rows("Base", 20.0, [1.0, 1.0, 1.0], [2.0, 2.0, 2.0], dataset="e") +
            _rows("Q", 30.0, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], dataset="e", cost=1e-3))
    return pd.DataFrame(rows)


def test_equation_against_hand_computation():
    assert ranking.opt(1.0, 1.0, 1.0) == 1.0
    assert ranking.opt(1.1, 0.5, 0.25, 0.5, 0.5, 1.5) == pytest.approx(1.1 ** 1.5 * 0.375)
    assert ranking.opt(0.9, 2.0, 1.0, 1.0, 0.0, 2.0) == pytest.approx(0.81 * 2.0)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        ranking.opt(1, 1, 1, gamma=0)
    with pytest.raises(ValueError, match="alpha and beta must be >= 0"):
        ranking.opt(1, 1, 1, alpha=-1)


def test_ratios_and_ranking_against_hand_computation(study):
    r = ratios.ratio_table(study).set_index(["variant", "dataset"])
    assert r.loc[("Q", "d"), "P_c"] == pytest.approx(1.1)
    assert r.loc[("Q", "d"), "T_c"] == pytest.approx(0.5)       # medians 1.0 / 2.0
    assert r.loc[("Q", "e"), "E_c"] == pytest.approx(0.25)
    rank = ranking.ranking(study, n_boot=200).set_index("variant")
    P, T, E = (1.1 + 1.5) / 2, 0.5, (0.25 + 0.25) / 2
    assert rank.loc["Q", "opt"] == pytest.approx(P ** 1.5 * (0.5 * T + 0.5 * E))
    assert rank.loc["Base", "opt"] == pytest.approx(1.0)
    assert rank.loc["Slow", "opt"] == pytest.approx(2.0)
    assert list(rank.sort_values("rank").index) == ["Q", "Base", "Slow"]
    assert rank.loc["Q", "opt_lo"] <= rank.loc["Q", "opt"] <= rank.loc["Q", "opt_hi"]


def test_variants_inside_the_noise_share_a_tier_and_a_rank_range():
    base = [1.0, 1.05, 0.98, 1.02]
    rows = (_rows("Base", 10.0, base, base) +
            _rows("A", 10.0, [b * r for b, r in zip(base, [0.97, 1.04, 1.0, 0.99])],
                  [b * r for b, r in zip(base, [0.97, 1.04, 1.0, 0.99])]) +
            _rows("Far", 10.0, [0.1 * b for b in base], [0.1 * b for b in base]))
    rank = ranking.ranking(pd.DataFrame(rows), n_boot=300).set_index("variant")
    assert rank.loc["Far", "tier"] == 1 and rank.loc["Far", "rank_range"] == "1"
    assert rank.loc["A", "tier"] == rank.loc["Base", "tier"] == 2
    assert rank.loc["A", "rank_range"] == "2-3" and rank.loc["Base", "rank_range"] == "2-3"
    assert rank.loc["Far", "T_c"] == pytest.approx(0.1) and rank.loc["Far", "T_c_lo"] == pytest.approx(0.1)


def test_ratios_are_paired_by_round_so_drift_cancels():
    # the machine slows down 3x over the rounds; the variant is always half as slow as the base in
    # the same round: paired ratios say 0.5 exactly, ratios of medians over unpaired rounds would not
    drift = [1.0, 2.0, 3.0]
    rows = _rows("Base", 10.0, drift, drift) + _rows("Half", 10.0, [0.5 * d for d in drift], [0.5 * d for d in drift])
    df = pd.DataFrame(rows)
    rank = ranking.ranking(df, n_boot=200).set_index("variant")
    assert rank.loc["Half", "T_c"] == pytest.approx(0.5)
    assert rank.loc["Half", "T_c_lo"] == pytest.approx(0.5) and rank.loc["Half", "T_c_hi"] == pytest.approx(0.5)
    # the same rows with the variant's rounds shuffled against the base's: no longer 0.5 in every round
    shuffled = df.copy()
    shuffled.loc[shuffled["variant"] == "Half", "repeat"] = [2, 0, 1]
    assert ranking.ranking(shuffled, n_boot=200).set_index("variant").loc["Half", "T_c_hi"] > 0.6


def test_noisy_conditions_are_flagged_and_not_ranked():
    rows = pd.DataFrame(_rows("Base", 10.0, [1.0, 1.02, 0.99], [1.0, 1.02, 0.99]) +
                        _rows("V", 11.0, [0.5, 0.52, 0.49], [0.5, 0.52, 0.49]) +
                        _rows("Base", 10.0, [1.0, 1.02, 0.99], [1.0, 1.02, 0.99], notebook="m") +
                        _rows("W", 11.0, [0.6, 0.61, 0.6], [0.6, 0.61, 0.6], notebook="m"))
    rows["interference"] = np.where(rows["notebook"] == "m", 0.45, 0.01)
    timing = noise.timing_noise(rows).set_index("notebook")
    assert timing.loc["n", "reliable"] and not timing.loc["m", "reliable"]
    assert "other processes took 45%" in timing.loc["m", "reason"]
    rank = ranking.ranking(rows, n_boot=100).set_index("variant")
    assert rank.loc["V", "ranked"] and not rank.loc["W", "ranked"] and pd.isna(rank.loc["W", "rank"])
    assert rank.loc["W", "why_unranked"].startswith("timing unreliable: other processes took 45%")
    # the base's own spread over rounds is the other signal
    # (a robust spread: one outlier among quiet passes does not count; passes that all wander do)
    wander = [1.0, 1.8, 0.6, 1.5, 0.7]
    spread = pd.DataFrame(_rows("Base", 10.0, wander, wander) + _rows("V", 9.0, [t / 2 for t in wander], [t / 2 for t in wander]))
    assert "spread by 60%" in noise.timing_noise(spread)["reason"].iloc[0]
    rank = ranking.ranking(spread, n_boot=100).set_index("variant")
    assert not rank.loc["V", "ranked"] and rank.loc["Base", "ranked"]  # Base's ratio is 1 by construction


def test_paper_validation_headline_changes():
    ch = reference.paper_changes("gpt2").set_index("variant")
    assert ch.loc["Base4b", ["perplexity_change_pct", "runtime_s_change_pct", "energy_kwh_change_pct"]].round(2).tolist() == [3.79, 4.86, -50.21]
    assert ch.loc["Base8b", ["perplexity_change_pct", "runtime_s_change_pct", "energy_kwh_change_pct"]].round(2).tolist() == [0.31, 203.78, -56.28]
    large = reference.paper_changes("gpt2-large").set_index("variant")
    assert large.loc["Base8b", ["perplexity_change_pct", "runtime_s_change_pct", "energy_kwh_change_pct"]].round(2).tolist() == [-0.04, 83.59, -69.17]


def test_paper_validation_ranking():
    r = reference.paper_ranking("gpt2", 0.5, 0.5, 1.5).set_index("variant")
    assert round(r.loc["Distil4b", "opt"], 3) == 0.811 and round(r.loc["Base4b", "opt"], 3) == 0.818
    assert r.loc["Distil4b", "rank"] == 1 and r.loc["Base4b", "rank"] == 2
    assert round(r.loc["Base", "opt"], 3) == 1.0 and round(r.loc["Base8b", "opt"], 3) == 1.746
    assert r.loc["Base", "rank"] < r.loc["Base8b", "rank"]


def test_pareto_front_on_a_hand_made_set():
    df = pd.DataFrame({"v": list("ABCDE"), "ppl": [1, 2, 3, 2, 1], "energy": [5, 3, 1, 4, 6]})
    front = tradeoffs.pareto_front(df, "ppl", "energy")
    assert df.loc[front, "v"].tolist() == ["A", "B", "C"]  # D dominated by B, E by A


def test_break_even_including_never(study):
    be = tradeoffs.break_even(study).set_index("variant")
    saved_d = (4.0 - 1.0) / 1000
    saved_e = (2.0 - 0.5) / 1000
    assert be.loc["Q", "break_even_tokens"] == pytest.approx(1e-3 / ((saved_d + saved_e) / 2))
    assert be.loc["Slow", "pays_back"] == "never" and math.isinf(be.loc["Slow", "break_even_tokens"])


def test_missing_base_fails_with_a_clear_message(study):
    with pytest.raises(ValueError, match="no measurement of the base variant 'Base'.*variants present: \\['Q', 'Slow'\\]"):
        ranking.ranking(study[study["variant"] != "Base"])
    unmatched = pd.concat([study, pd.DataFrame(_rows("Lonely", 5.0, [1.0], [1.0], notebook="other"))])
    assert ranking.ranking(unmatched, n_boot=10).attrs["unmatched"] == ["Lonely"]


def test_sensitivity_and_estimated_note(study):
    s = ranking.sensitivity(study, alphas=np.array([0.0, 1.0]), gammas=(1.0,))
    assert set(s["variant"]) == {"Base", "Q", "Slow"} and len(s) == 6
    assert "ESTIMATED" in tradeoffs.estimated_energy_note(study)
    assert tradeoffs.estimated_energy_note(study.assign(energy_method="measured")) == ""


def test_a_single_repeat_gives_no_interval_and_no_established_rank():
    rows = (_rows("Base", 10.0, [1.0], [1.0]) + _rows("One", 10.0, [0.5], [0.5]) +
            _rows("Base", 10.0, [1.0, 1.1, 0.9], [1.0, 1.1, 0.9], notebook="m") +
            _rows("Many", 10.0, [0.1, 0.11, 0.09], [0.1, 0.11, 0.09], notebook="m"))
    rank = ranking.ranking(pd.DataFrame(rows), n_boot=100).set_index("variant")
    assert math.isnan(rank.loc["One", "opt_lo"]) and rank.loc["One", "why_unranked"] == "measured once"
    assert rank.loc["One", "min_repeats"] == 1 and rank.loc["Many", "min_repeats"] == 3
    assert not math.isnan(rank.loc["Many", "opt_lo"])
    # measured once: not ranked, listed after the ranked variants, although its opt is the lowest but one
    assert not rank.loc["One", "ranked"] and pd.isna(rank.loc["One", "rank"])
    assert rank.loc["Many", "rank"] == 1 and rank.loc["Base", "rank"] == 2 and list(rank.index)[-1] == "One"
    # Base was measured once in notebook n and thrice in m: only m counts for it
    assert rank.loc["Base", "min_repeats"] == 3 and rank.loc["Base", "n_conditions"] == 1


def test_rank_ranges_and_tiers_on_hand_made_intervals():
    # scores sorted: A [1.0, 1.2], B [1.1, 1.3], C [1.25, 1.4], D [2.0, 2.1]
    lo, hi = [1.0, 1.1, 1.25, 2.0], [1.2, 1.3, 1.4, 2.1]
    assert ranking.rank_ranges(lo, hi) == ["1-2", "1-3", "2-3", "4"]
    # C overlaps B but not A (the tier's leader): C opens tier 2; D is alone in tier 3
    assert ranking.tiers(lo, hi) == [1, 1, 2, 3]
    assert ranking.tiers([0.5], [0.6]) == [1] and ranking.rank_ranges([0.5], [0.6]) == ["1"]


def test_controls_are_told_from_compression_candidates():
    names = ["Base+ft100k", "Base+ft10k", "Scratch-Depth50", "Scratch-Emb86+MLP55.3", "Distil-noKD", "Distil-rand",
                "Distil-rand-noKD"]
    candidates = ["Base", "Base4b", "Distil", "Distil+90+4b", "AH80+ft", "Depth50+KD", "Mag50+ft", "GMag90",
                  "Depth50+75+MLP50+ft", "Emb86+MLP55.3+KD", "Basedq8"]
    assert all(controls.is_control(v) for v in names)
    assert not any(controls.is_control(v) for v in candidates)


def test_ratio_intervals_are_the_rankings_estimate_with_its_interval(study):
    r = ratios.ratio_intervals(study, n_boot=200).set_index("variant")
    assert r.loc["Q", "T_c"] == pytest.approx(0.5) and r.loc["Q", "E_c"] == pytest.approx(0.25)
    assert r.loc["Slow", "T_c"] == pytest.approx(2.0) and r.loc["Q", "n_rounds"] == 3
    rank = ranking.ranking(study, n_boot=200).set_index("variant")
    for v in ("Q", "Slow"):
        assert r.loc[v, "T_c"] == pytest.approx(rank.loc[v, "T_c"])
        assert r.loc[v, "T_c_lo"] <= r.loc[v, "T_c"] <= r.loc[v, "T_c_hi"]
    noisy = pd.DataFrame(_rows("Base", 10.0, [1.0, 1.2, 0.9, 1.1], [1.0] * 4) + _rows("V", 10.0, [0.5, 0.7, 0.4, 0.6], [1.0] * 4))
    v = ratios.ratio_intervals(noisy, n_boot=500).set_index("variant").loc["V"]
    assert v["T_c_lo"] < v["T_c"] < v["T_c_hi"]  # the rounds disagree: a real interval
    by = ratios.ratio_intervals(study, by=("dataset",), n_boot=50)
    assert len(by[by["variant"] == "Q"]) == 2
    with pytest.raises(ValueError, match=r"by=\['colour'\]: allowed are"):
        ratios.ratio_intervals(study, by=("colour",))


def test_break_even_interval_brackets_the_estimate():
    rows = (_rows("Base", 10.0, [1.0] * 4, [4.0, 4.4, 3.8, 4.2]) +
            _rows("V", 10.0, [1.0] * 4, [2.0, 2.6, 1.6, 2.4], cost=1e-3) +
            _rows("W", 10.0, [1.0] * 4, [4.0, 4.6, 3.6, 4.3], cost=1e-3))
    be = tradeoffs.break_even(pd.DataFrame(rows), n_boot=500).set_index("variant")
    assert be.loc["V", "break_even_lo"] < be.loc["V", "break_even_tokens"] < be.loc["V", "break_even_hi"]
    assert math.isinf(be.loc["W", "break_even_hi"])  # W's savings straddle zero: it may never pay back
