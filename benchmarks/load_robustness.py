"""Does the default study survive a busy machine? (issue 28)

    .venv/bin/python benchmarks/load_robustness.py

Runs `configs/default.yaml` twice from the same artifact cache: once on the quiet machine (study
`robust-quiet`, which also builds whatever the cache lacks), once with a CPU burner
(benchmarks/burner.py: one core busy for 20 s of every minute) switched on for the whole run (study
`robust-loaded`; every artifact is then loaded, so the run is measurement). Writes
benchmarks/results/load_robustness.json: each run's seconds, ranked and unranked candidates, the
disturbed and set-aside passes and retried rounds (from the rows), the share of the quiet run's ranked
candidates the loaded run ranks, whether every such candidate's rank range overlaps its quiet one,
and `python -m compstudy compare`'s summary of the two (`rank_overlap` says how the ranges are
compared). Time nothing else meanwhile.

    .venv/bin/python benchmarks/load_robustness.py --from-results

recomputes the comparison from the two runs' tables already in results/, running nothing.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))


def _range(text) -> tuple[int, int]:
    a, _, b = str(text).partition("-")
    return int(a), int(b or a)


def _overlaps(a: str, b: str) -> bool:
    (a_lo, a_hi), (b_lo, b_hi) = _range(a), _range(b)
    return not (a_lo > b_hi or b_lo > a_hi)


def rank_overlap(quiet: "pd.DataFrame", loaded: "pd.DataFrame") -> dict:
    """Issue 28's criteria on two runs' ranking tables (`ranking.csv`): the share of the quiet run's
    ranked candidates that the loaded run ranks, and whether every such candidate's rank range
    (`ranking.rank_ranges`: the ranks its opt interval allows) overlaps its quiet one, read two ways.

    - `rank_ranges_overlap`: each run's ranges as published, among everything that run ranks. A
      variant ranked in one run only (left out of the other for its timing) moves every range below
      it by one, so this reading mixes the load's effect on the measurements with a change of the
      ranked set.
    - `rank_ranges_overlap_common_set`: the ranges recomputed from each run's own opt intervals
      (`opt_lo`, `opt_hi`) among the variants both runs rank, the same set on both sides: the
      load's effect on the measurements alone.

    Candidates are every ranked row but the base and the controls (`conclusions.candidates`)."""
    from compstudy import conclusions, ranking

    ranked = {k: t[t["ranked"].astype(bool)].set_index("variant") for k, t in (("quiet", quiet), ("loaded", loaded))}
    cands = {k: set(conclusions.candidates(t.reset_index()).variant) for k, t in ranked.items()}
    both = sorted(cands["quiet"] & cands["loaded"], key=lambda v: ranked["quiet"].loc[v, "opt"])
    published = {v: _overlaps(ranked["quiet"].loc[v, "rank_range"], ranked["loaded"].loc[v, "rank_range"]) for v in both}
    common = ranked["quiet"].index.intersection(ranked["loaded"].index)  # base and controls included, as ranked
    recomputed = {}
    for k, t in ranked.items():
        sub = t.loc[common]
        recomputed[k] = dict(zip(sub.index, ranking.rank_ranges(sub["opt_lo"], sub["opt_hi"])))
    on_common = {v: _overlaps(recomputed["quiet"][v], recomputed["loaded"][v]) for v in both}

    def reading(ok, quiet_ranges, loaded_ranges):
        return {"all": all(ok.values()), "overlapping": sum(ok.values()), "of": len(ok),
                "not_overlapping": {v: {"quiet": quiet_ranges[v], "loaded": loaded_ranges[v]}
                                    for v, fine in ok.items() if not fine}}

    return {
        "share_of_quiet_ranked_that_loaded_ranks": round(len(both) / max(1, len(cands["quiet"])), 4),
        "ranked_in_one_run_only": {"quiet": sorted(set(ranked["quiet"].index) - set(common)),
                                   "loaded": sorted(set(ranked["loaded"].index) - set(common))},
        "rank_ranges_overlap": reading(published, ranked["quiet"]["rank_range"], ranked["loaded"]["rank_range"]),
        "rank_ranges_overlap_common_set": {**reading(on_common, recomputed["quiet"], recomputed["loaded"]),
                                           "ranked_in_both": len(common)},
    }


def from_results() -> dict:
    """Recompute the comparison of benchmarks/results/load_robustness.json from the two runs'
    tables already in results/robust-quiet and results/robust-loaded (no study is run): the
    `runs` section is kept as measured, the comparison is written with this commit."""
    import pandas as pd

    from compstudy import paths, provenance

    path = HERE / "results" / "load_robustness.json"
    out = json.loads(path.read_text())
    ranks = {k: pd.read_csv(paths.results_dir(f"robust-{k}") / "ranking.csv") for k in ("quiet", "loaded")}
    for k in ("quiet", "loaded"):  # the tables must be the runs the file describes
        rows = pd.read_csv(paths.results_dir(f"robust-{k}") / "measurements.csv", usecols=["run_id"])
        if out["runs"][k]["run_id"] not in set(rows["run_id"]):
            raise SystemExit(f"results/robust-{k} does not hold run {out['runs'][k]['run_id']}: run the benchmark again")
    out["comparison_commit"] = provenance.environment()["git_commit"]
    return _compare_and_write(out, ranks)


def _compare_and_write(out: dict, ranks: dict) -> dict:
    """Add the two runs' comparison (`rank_overlap`, `compare`'s summary) to `out`, write
    benchmarks/results/load_robustness.json and print it."""
    from compstudy import compare

    out.update(rank_overlap(ranks["quiet"], ranks["loaded"]))
    out["compare"] = compare.compare(ranks["quiet"], ranks["loaded"], ("quiet", "loaded")).summary
    (HERE / "results" / "load_robustness.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1, default=str))
    return out


def main() -> dict:
    import pandas as pd

    from burner import burning
    from compstudy import conclusions, noise, paths, provenance, results, runner, runs

    env = provenance.environment()
    out = {"config": "configs/default.yaml", "commit": env["git_commit"], "cpu": env["cpu"], "runs": {}}
    ranks = {}
    for label in ("quiet", "loaded"):
        study = runner.load_study(ROOT / "configs" / "default.yaml", {"study": f"robust-{label}"})
        t0 = time.perf_counter()
        with (burning(20, 60, 4 * 3600) if label == "loaded" else _Nothing()):
            try:
                runner.run_study(study, progress=False)
                status = "completed"
            except (runner.NotebookFailed, runner.ConfigError) as exc:
                status = f"failed: {exc}"
        rank = pd.read_csv(paths.results_dir(study.name) / "ranking.csv")
        rows, run_id, _ = runs.select_run(results.load(study.name), None, study.name)
        timing = noise.timing_noise(rows[rows["notebook"].astype(str).str.match(r"^0[0-4]_")])
        cov = conclusions.coverage(rank)
        out["runs"][label] = {
            "status": status, "run_id": run_id, "seconds": round(time.perf_counter() - t0, 1),
            "notebook_seconds": {k: round(v, 1) for k, v in study.timings.items()},
            "candidates": cov["candidates"], "ranked": cov["ranked"], "unranked": cov["unranked"],
            "unranked_reasons": {k: v for k, v in cov["reasons"].items()},
            "disturbed_passes": int(timing["disturbed_passes"].sum()), "set_aside_passes": int(timing["set_aside_passes"].sum()),
            "retried_rounds": int(timing["retried_rounds"].sum()),
            "unreliable_conditions": timing.loc[~timing["reliable"], ["notebook", "dataset", "reason"]].to_dict("records"),
            "interference_median": float(rows["interference"].median()), "interference_max": float(rows["interference"].max()),
        }
        ranks[label] = rank
        print(label, {k: v for k, v in out["runs"][label].items() if k not in ("unranked_reasons",)}, flush=True)
    return _compare_and_write(out, ranks)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    from_results() if "--from-results" in sys.argv[1:] else main()
