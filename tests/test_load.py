"""Issue 28: measurements that survive a busy machine (disturbed rounds set aside and timed again, a
robust spread), a summary that tells the truth about what is missing, and energy from counters
(Zeus behind `energy.CounterMeter`, tested with a fake monitor at its API boundary)."""
import types

import pandas as pd
import pytest

from compstudy import conclusions, energy, measure, noise, ranking, runner
from test_measure import _VirtualMachine, _VirtualModel


class _Load:
    """Stands in for `measure._cpu_times`: the machine's other processes are busy during the
    passes listed in `busy` (0-based pass indices), idle otherwise."""

    def __init__(self, busy, machine, amount=10.0):
        self.busy, self.machine, self.calls, self.other, self.amount = set(busy), machine, 0, 0.0, amount

    def __call__(self):
        pass_index, end = divmod(self.calls, 2)
        self.calls += 1
        if end and pass_index in self.busy:
            self.other += self.amount  # others' CPU seconds during this pass (10 by default: far above any limit)
        return self.other + self.machine.now, 0.0, self.machine.now  # the CPUs' busy time holds this process's too


def _measure(monkeypatch, tiny_baseline, busy, repeats=4, max_retries=3, amount=10.0):
    machine = _VirtualMachine()
    monkeypatch.setattr(energy, "time", machine)
    monkeypatch.setattr(measure, "_cpu_times", _Load(busy, machine, amount))
    base, half = _VirtualModel(0.04, machine), _VirtualModel(0.02, machine)
    cfg = measure.EvalConfig(eval_context=64, eval_stride=63, eval_batch_size=1, eval_max_tokens=127, repeats=repeats,
                             device="cpu", share_timing=False, max_retries=max_retries)
    size = {"n_params": 1, "n_params_nonzero": 0, "weight_bytes": 4}
    rows = measure.evaluate_many({"Base": (base, tiny_baseline.tokenizer), "Half": (half, tiny_baseline.tokenizer)},
                                 ["wikitext-2:test"], cfg, study="t", sizes={"Base": size, "Half": size})
    return pd.DataFrame(rows).assign(notebook="n")


def test_a_disturbed_round_is_set_aside_and_timed_again_and_the_ratio_stays_right(tiny_baseline, monkeypatch):
    rows = _measure(monkeypatch, tiny_baseline, busy=[3])  # pass 3: the second pass of round 1
    aside = rows[rows["set_aside"] != ""]
    assert set(aside["repeat"]) == {1} and set(aside["attempt"]) == {0} and len(aside) == 2  # the whole round
    assert "the round was timed again" in aside["set_aside"].iloc[0]
    used = rows[rows["set_aside"] == ""]
    assert sorted(set(used["repeat"])) == [0, 1, 2, 3] and set(used[used["repeat"] == 1]["attempt"]) == {1}
    t = noise.timing_noise(rows).iloc[0]
    assert t["reliable"] and t["disturbed_passes"] == 1 and t["set_aside_passes"] == 2 and t["retried_rounds"] == 1
    assert t["rounds"] == 4
    r = ranking.ranking(rows, n_boot=100).set_index("variant")
    assert r.loc["Half", "ranked"] and r.loc["Half", "T_c"] == pytest.approx(0.5)


@pytest.mark.parametrize("others_s,disturbed", [(0.009, False), (0.015, True)])
def test_a_pass_is_disturbed_only_when_others_took_more_than_the_counters_resolve(tiny_baseline, monkeypatch,
                                                                                   others_s, disturbed):
    """The CPU counters move in clock ticks of 10 ms. On a pass of 40-80 ms a tick of others' time is
    already more than the 10 % limit, so a reading within one tick per CPU counted (one CPU here) sets
    no round aside; a reading beyond it does (both are shares above the limit)."""
    monkeypatch.setattr(measure, "measured_cpus", lambda: [0])
    monkeypatch.setattr(measure, "CLOCK_TICK_S", 0.01)
    rows = _measure(monkeypatch, tiny_baseline, busy=[3], amount=others_s)
    assert rows["interference"].max() > 0.1  # above the share limit either way
    assert (rows["set_aside"] != "").any() == disturbed


def test_when_retries_run_out_the_condition_is_unreliable_and_says_how_many_passes(tiny_baseline, monkeypatch):
    rows = _measure(monkeypatch, tiny_baseline, busy=range(100), repeats=2, max_retries=2)
    t = noise.timing_noise(rows).iloc[0]
    assert not t["reliable"] and "the retries ran out" in t["reason"] and t["retried_rounds"] == 2
    assert f"{t['disturbed_passes']} passes disturbed (in rounds 0, 1" in t["reason"]
    r = ranking.ranking(rows, n_boot=100).set_index("variant")
    assert not r.loc["Half", "ranked"] and r.loc["Half", "why_unranked"].startswith("timing unreliable")


def test_one_outlier_pass_does_not_flag_a_condition_that_quiet_passes_would_pass():
    quiet = [1.00, 1.03, 0.98, 1.02, 0.99, 1.01]
    assert noise.robust_spread(quiet) < noise.MAX_BASE_SPREAD
    outlier = quiet + [2.6]  # one pass 2.6x slower: max / min - 1 = 165 %, the old rule's 60 % limit broken
    assert max(outlier) / min(outlier) - 1 > 0.6
    assert noise.robust_spread(outlier) < noise.MAX_BASE_SPREAD
    rows = pd.DataFrame([{"variant": v, "notebook": "n", "dataset": "d", "batch_size": 8, "tokens_scored": 1, "repeat": i,
                          "perplexity": 1.0, "runtime_s": t * f, "energy_kwh": t * f, "interference": 0.01}
                         for i, t in enumerate(outlier) for v, f in (("Base", 1.0), ("V", 0.5))])
    assert noise.timing_noise(rows).iloc[0]["reliable"]


def _ranking(rows):
    return pd.DataFrame([{"variant": v, "ranked": ok, "opt": o, "opt_lo": o - 0.01, "opt_hi": o + 0.01, "tier": t,
                          "rank_range": "1", "P_c": 1.0, "T_c": o, "E_c": o, "rank": i + 1 if ok else None,
                          "why_unranked": "" if ok else why}
                         for i, (v, ok, o, t, why) in enumerate(rows)])


def test_the_summary_never_names_a_control_best_and_counts_the_unranked(tmp_path, monkeypatch, capsys):
    rank = _ranking([("Distil-noKD", True, 0.5, 1, ""), ("Base+ft10k", True, 0.55, 1, ""), ("Scratch-Depth50", True, 0.6, 1, ""),
                     ("Distil", True, 0.7, 2, ""), ("Base", True, 1.0, 3, ""),
                     ("Base4b", False, 0.8, None, "timing unreliable: x"), ("AH90", False, 0.9, None, "timing unreliable: x"),
                     ("Depth50", False, 0.9, None, "measured once")])
    assert conclusions.best_candidate(rank)["variant"] == "Distil"
    cov = conclusions.coverage(rank)
    assert cov["candidates"] == 4 and cov["ranked"] == 1 and cov["unranked"] == 3
    assert cov["reasons"] == {"timing unreliable": ["Base4b", "AH90"], "measured once": ["Depth50"]}
    assert conclusions.coverage_sentence(rank) == ("1 of 4 compression candidates are ranked; 2 candidates left out "
                                                   "(timing unreliable); 1 candidate left out (measured once).")
    # the runner's closing summary: candidates only, and a warning with the command when > 25 % are unranked
    monkeypatch.setenv("COMPSTUDY_RESULTS_DIR", str(tmp_path))
    (tmp_path / "s").mkdir()
    rank.to_csv(tmp_path / "s" / "ranking.csv", index=False)
    pd.DataFrame([{"run_id": "r", "variant": "Base4b", "notebook": "01_quantization"}]).to_csv(
        tmp_path / "s" / "measurements.csv", index=False)
    study = types.SimpleNamespace(name="s", config_path="configs/default.yaml",
                                  notebooks=[types.SimpleNamespace(path=types.SimpleNamespace(stem="01_quantization"))])
    runner._print_outcome(study, {"run_id": "r"})
    out = capsys.readouterr().out
    table = out.split("left out):", 1)[1].split("WARNING", 1)[0]
    assert "Distil" in table and "Distil-noKD" not in table and "Base+ft10k" not in table and "Scratch" not in table
    assert "WARNING: 3 of 4 candidates (75%) are not ranked" in out
    assert "python -m compstudy run configs/default.yaml --only 01_quantization --continue r --only 05" in out


class _FakeMonitor:
    """ZeusMonitor's API boundary: begin_window / end_window returning a measurement with `time` and
    `gpu_energy` / `cpu_energy` / `dram_energy` (J): a GPU drawing `idle_w` idle and `busy_w` in windows."""

    def __init__(self, idle_w=50.0, busy_w=300.0):
        self.gpu_indices, self.cpu_indices = [0], []
        self.idle_w, self.busy_w, self.open = idle_w, busy_w, {}

    def begin_window(self, key, sync_execution=True):
        import time

        self.open[key] = time.perf_counter()

    def end_window(self, key, sync_execution=True, cancel=False):
        import time

        t = time.perf_counter() - self.open.pop(key)
        power = self.idle_w if key == "idle" else self.busy_w
        return types.SimpleNamespace(time=t, gpu_energy={0: power * t}, cpu_energy=None, dram_energy=None)


def test_counter_energy_is_measured_with_idle_power_subtracted_and_windows_long_enough(tiny_baseline):
    meter = energy.CounterMeter(_FakeMonitor(), idle_s=0.05, update_period_s=0.02)
    assert meter.min_window_s == pytest.approx(0.2)  # ten update periods
    with meter:
        assert meter.idle_power_w == pytest.approx(50.0)
        ids = measure.dataset_ids(tiny_baseline.tokenizer, "wikitext-2:test", 128)[0]
        p = measure.timed_pass(tiny_baseline.model, ids, 64, 63, 2, "cpu", meter)
    assert p.passes >= 1 and p.passes * p.wall_s >= 0.2 * 0.99  # the window held enough passes
    e = p.energy
    assert e.method == "measured" and "NVML" in e.detail
    assert e.energy_kwh == pytest.approx(300.0 * p.wall_s / 3.6e6, rel=0.05)  # per pass
    assert e.net_kwh == pytest.approx((300.0 - 50.0) * p.wall_s / 3.6e6, rel=0.05)
    assert energy.open_meter("cpu", monitor=_FakeMonitor()).__class__ is energy.CounterMeter
    assert energy.open_meter("cpu").__class__ is energy.EnergyMeter  # no RAPL, no GPU here: estimated


def test_cuda_warm_up_runs_passes_until_they_stop_getting_faster(monkeypatch):
    times = iter([5.0, 2.0, 1.5, 1.48, 1.47, 1.46])
    clock = types.SimpleNamespace(now=0.0)

    def fake_nll(*args, **kwargs):
        clock.now += next(times)
        return 0.0, 1

    monkeypatch.setattr(measure, "sliding_window_nll", fake_nll)
    monkeypatch.setattr(measure, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    assert measure.warm_up(None, None, 64, 63, 1, "cuda") == 4  # 5.0, 2.0, 1.5: faster; 1.48: within 5 %
    assert measure.warm_up(None, None, 64, 63, 1, "cpu") == 0


@pytest.mark.slow
def test_the_gpu_check_runs_its_steps_on_the_cpu_and_writes_its_results(tmp_path, monkeypatch):
    """benchmarks/gpu_check.py on a tiny shape on the CPU (what a machine without a GPU can check):
    every step runs, and the evaluated ones get T_c and E_c against the base. Its `main` runs in
    this process (the script's `__main__` only calls it), which has the library imported already;
    the artifact folder it points the study at is this test's."""
    import importlib.util
    import json

    from compstudy import paths

    monkeypatch.setenv("COMPSTUDY_ARTIFACTS_DIR", str(tmp_path / "artifacts"))  # restored after: main() changes it
    spec = importlib.util.spec_from_file_location("gpu_check", paths.repo_root() / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--device", "cpu", "--small", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    steps = result["steps"]
    assert {"8b", "4b", "4bfp4", "AH80", "Mag50", "MLP50", "Depth50", "Distil", "hqq4", "evaluation"} <= set(steps)
    assert all(s["ran"] for s in steps.values()), {k: s.get("error") for k, s in steps.items() if not s["ran"]}
    assert all("T_c" in steps[k] and "E_c" in steps[k] for k in ("8b", "4b", "AH80", "Depth50", "hqq4"))
    assert steps["evaluation"]["energy_method"] == "estimated"  # no counter on these machines: said so


def test_concurrent_measurement_needs_two_gpus_and_says_how_to_parallelise_instead():
    with pytest.raises(runner.ConfigError, match="timing is never shared"):
        runner.gpus_for_concurrent_measurement()


def _hand_ranking(rows):
    """A hand-made ranking table: (variant, opt_lo, opt_hi, ranked), ranges and ranks from `ranking`."""
    t = pd.DataFrame(rows, columns=["variant", "opt_lo", "opt_hi", "ranked"])
    t["opt"] = (t["opt_lo"] + t["opt_hi"]) / 2
    ranked = t[t["ranked"]].sort_values("opt").reset_index(drop=True)
    ranked["rank_range"] = ranking.rank_ranges(ranked["opt_lo"], ranked["opt_hi"])
    return pd.concat([ranked, t[~t["ranked"]].assign(rank_range="")], ignore_index=True)


def test_rank_ranges_are_compared_as_published_and_over_the_set_both_runs_rank():
    import importlib.util

    from compstudy import paths

    spec = importlib.util.spec_from_file_location("load_robustness", paths.repo_root() / "benchmarks" / "load_robustness.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # narrow, separate intervals; the quiet run could not rank A (its timing), the loaded run ranks it first
    quiet = _hand_ranking([("Base", 0.99, 1.01, True), ("A", 0.10, 0.12, False), ("B", 0.50, 0.52, True),
                      ("C", 0.60, 0.62, True), ("Base+ft1k", 0.70, 0.72, True)])
    loaded = _hand_ranking([("Base", 0.98, 1.02, True), ("A", 0.10, 0.12, True), ("B", 0.50, 0.53, True),
                       ("C", 0.61, 0.63, True), ("Base+ft1k", 0.70, 0.73, True)])
    out = bench.rank_overlap(quiet, loaded)
    assert out["share_of_quiet_ranked_that_loaded_ranks"] == 1.0  # B and C (Base and the control are no candidates)
    assert out["ranked_in_one_run_only"] == {"quiet": [], "loaded": ["A"]}
    # as published, A's rank 1 pushes B from 1 to 2 and C from 2 to 3: no overlap, a change of the set only
    assert out["rank_ranges_overlap"]["not_overlapping"] == {"B": {"quiet": "1", "loaded": "2"},
                                                              "C": {"quiet": "2", "loaded": "3"}}
    assert out["rank_ranges_overlap_common_set"]["all"] and out["rank_ranges_overlap_common_set"]["of"] == 2
    # a real move of the measurements fails both readings: C now scores below B under load
    moved = _hand_ranking([("Base", 0.98, 1.02, True), ("B", 0.50, 0.53, True), ("C", 0.40, 0.42, True),
                      ("Base+ft1k", 0.70, 0.73, True)])
    out = bench.rank_overlap(quiet, moved)
    assert set(out["rank_ranges_overlap_common_set"]["not_overlapping"]) == {"B", "C"}
    assert not out["rank_ranges_overlap"]["all"]
