"""Does the default study survive a busy machine? (issue 28)

    .venv/bin/python benchmarks/load_robustness.py

Runs `configs/default.yaml` twice from the same artifact cache: once on the quiet machine (study
`robust-quiet`, which also builds whatever the cache lacks), once with a CPU burner
(benchmarks/burner.py: one core busy for 20 s of every minute) switched on for the whole run (study
`robust-loaded`; every artifact is then loaded, so the run is measurement). Writes
benchmarks/results/load_robustness.json: each run's seconds, ranked and unranked candidates, the
disturbed and set-aside passes and retried rounds (from the rows), the share of the quiet run's ranked
candidates the loaded run ranks, whether every such candidate's rank range overlaps its quiet one,
and `python -m compstudy compare`'s summary of the two. Time nothing else meanwhile.
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


def main() -> dict:
    import pandas as pd

    from burner import burning
    from compstudy import compare, conclusions, noise, paths, provenance, results, runner, runs

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
    quiet, loaded = (conclusions.candidates(ranks[k]) for k in ("quiet", "loaded"))
    quiet_ranked = quiet[quiet["ranked"].astype(bool)].set_index("variant")
    loaded_ranked = loaded[loaded["ranked"].astype(bool)].set_index("variant")
    both = quiet_ranked.index.intersection(loaded_ranked.index)
    overlap = {v: not (_range(loaded_ranked.loc[v, "rank_range"])[0] > _range(quiet_ranked.loc[v, "rank_range"])[1]
                       or _range(quiet_ranked.loc[v, "rank_range"])[0] > _range(loaded_ranked.loc[v, "rank_range"])[1])
               for v in both}
    out["share_of_quiet_ranked_that_loaded_ranks"] = round(len(both) / max(1, len(quiet_ranked)), 4)
    out["rank_ranges_overlap"] = {"all": all(overlap.values()), "not_overlapping": sorted(v for v, ok in overlap.items() if not ok)}
    out["compare"] = compare.compare(ranks["quiet"], ranks["loaded"], ("quiet", "loaded")).summary
    (HERE / "results" / "load_robustness.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1, default=str))
    return out


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
