import pandas as pd
import pytest

from compstudy import compare, paths, runner


def _ranking(rows):
    df = pd.DataFrame(rows, columns=["variant", "P_c", "T_c", "T_c_lo", "T_c_hi", "opt", "opt_lo", "opt_hi"])
    df = df.sort_values("opt").reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


A = _ranking([("Base", 1.0, 1.0, 0.98, 1.02, 1.0, 0.98, 1.02), ("Base4b", 1.01, 0.80, 0.78, 0.82, 0.81, 0.79, 0.83),
              ("Distil", 1.20, 0.50, 0.48, 0.52, 0.66, 0.64, 0.68), ("AH80", 1.05, 0.95, 0.93, 0.97, 1.02, 1.0, 1.04)])
B = _ranking([("Base", 1.0, 1.0, 0.97, 1.03, 1.0, 0.97, 1.03), ("Base4b", 1.01, 0.90, 0.89, 0.91, 0.91, 0.90, 0.92),
              ("Distil", 1.20, 0.51, 0.49, 0.53, 0.67, 0.65, 0.69), ("Extra", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)])


def test_comparison_figures_on_hand_made_rankings():
    cmp = compare.compare(A, B, ("a", "b"))
    s = cmp.summary
    assert s["variants_in_both"] == 3 and s["with_intervals_in_both"] == 3
    assert cmp.table.set_index("variant")["T_c_overlap"].to_dict() == {"Base": 1.0, "Distil": 1.0, "Base4b": 0.0}
    assert s["T_c_overlap_share"] == pytest.approx(2 / 3)
    assert s["median_abs_delta_T_c"] == pytest.approx(0.01) and s["max_abs_delta_T_c"] == pytest.approx(0.10)
    assert s["spearman_rank_correlation"] == pytest.approx(1.0)
    assert s["top_group_a"] == ["Distil"] and s["top_group_identical"]
    with pytest.raises(ValueError, match="share no variant"):
        compare.compare(A, B[B["variant"] == "Extra"])


def test_compare_command_on_two_small_studies(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("COMPSTUDY_FIGURES_DIR", str(tmp_path / "figures"))
    for name, table in (("one", A), ("two", B)):
        paths.results_dir(name).mkdir(parents=True)
        table.to_csv(paths.results_dir(name) / "ranking.csv", index=False)
    assert runner.main(["compare", "one", "two"]) == 0
    out = capsys.readouterr().out
    assert "T_c intervals overlap: 66.7% of those" in out and "top group identical: True" in out
    assert (tmp_path / "figures" / "compare" / "compare-one-two.png").exists()
    assert runner.main(["compare", "one", "missing"]) == 2
    assert "no measurements for 'missing'" in capsys.readouterr().err


def _measurements(run_id, t_half, rounds=4):
    rows = []
    for r in range(rounds):
        drift = 1 + 0.3 * r  # the machine slows down; paired ratios do not see it
        for variant, ppl, t in (("Base", 10.0, 1.0), ("Half", 11.0, t_half), ("Same", 10.0, 1.0)):
            rows.append({"study": "s", "notebook": "n", "variant": variant, "dataset": "d", "batch_size": 8,
                         "tokens_scored": 100, "repeat": r, "perplexity": ppl, "bits_per_byte": 1.0,
                         "runtime_s": t * drift * (1 + 0.01 * (r % 2)), "energy_kwh": t * drift * 1e-6,
                         "run_id": run_id, "timestamp": f"2026-11-21T10:0{r}:00{run_id[-1]}"})
    return rows


@pytest.mark.slow
def test_compare_two_runs_of_one_study(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("COMPSTUDY_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.delenv("COMPSTUDY_RUN_ID", raising=False)
    from compstudy import results

    results.append("s", _measurements("run-1", 0.5))
    results.append("s", _measurements("run-2", 0.8))
    assert runner.main(["compare", "s@-2", "s@latest"]) == 0
    out = capsys.readouterr().out
    assert "run run-1 (12 rows; 2 run(s) in the table" in out and "run run-2 (12 rows" in out
    a, b = compare.load_ranking("s@run-1").set_index("variant"), compare.load_ranking("s@run-2").set_index("variant")
    assert a.loc["Half", "T_c"] == pytest.approx(0.5, rel=0.02) and b.loc["Half", "T_c"] == pytest.approx(0.8, rel=0.02)
    # the same comparison from the CSV path of the measurements
    path = str(paths.results_dir("s") / "measurements.csv")
    assert compare.load_ranking(f"{path}@-2").set_index("variant").loc["Half", "T_c"] == pytest.approx(0.5, rel=0.02)
    with pytest.raises(ValueError, match="run 'nope' is not in the table"):
        compare.load_ranking("s@nope")
