"""Three consecutive quiet fresh runs of the default study (issue 28).

    .venv/bin/python benchmarks/quiet_runs.py [--runs 3]

Runs `configs/default.yaml` N times in a row, each as study `fresh-<i>` from an empty artifact cache
of its own (a temporary folder: the tokenizer, the baseline and every variant are built again, as on
a fresh clone), with nothing else on the machine. Then, for every pair of runs, `python -m compstudy
compare`'s summary (the share of ranked variants whose T_c intervals overlap, |delta T_c|, |delta P_c|,
Spearman of opt), and the compression candidates in tier 1 of every run: the stable core of tier 1
that the README names. Writes benchmarks/results/quiet_runs.json. Time nothing else meanwhile.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def tier_one(rank) -> list[str]:
    """The compression candidates (no base, no control) in tier 1 of a ranking table."""
    from compstudy import conclusions

    c = conclusions.candidates(rank)
    c = c[c["ranked"].astype(bool)]
    return sorted(c.loc[c["tier"] == 1, "variant"])


def main(n_runs: int = 3) -> dict:
    import pandas as pd

    from compstudy import compare, conclusions, paths, provenance, runner

    env = provenance.environment()
    out = {"config": "configs/default.yaml", "commit": env["git_commit"], "cpu": env["cpu"], "runs": {}, "pairs": {}}
    ranks = {}
    for i in range(1, n_runs + 1):
        name = f"fresh-{i}"
        cache = Path(tempfile.mkdtemp(prefix=f"compstudy-{name}-artifacts-"))
        os.environ["COMPSTUDY_ARTIFACTS_DIR"] = str(cache)  # the notebook kernels inherit it
        study = runner.load_study(ROOT / "configs" / "default.yaml", {"study": name})
        t0 = time.perf_counter()
        runner.run_study(study, progress=False)  # a failed notebook raises: no half comparison is written
        rank = pd.read_csv(paths.results_dir(name) / "ranking.csv")
        cov = conclusions.coverage(rank)
        ranks[name] = rank
        out["runs"][name] = {"run_id": study.run.get("run_id"), "seconds": round(time.perf_counter() - t0, 1),
                             "notebook_seconds": {k: round(v, 1) for k, v in study.timings.items()},
                             "candidates": cov["candidates"], "ranked": cov["ranked"], "tier_1": tier_one(rank)}
        print(name, out["runs"][name], flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    for a, b in itertools.combinations(ranks, 2):
        out["pairs"][f"{a} vs {b}"] = compare.compare(ranks[a], ranks[b], (a, b)).summary
    core = set.intersection(*(set(r["tier_1"]) for r in out["runs"].values()))
    out["stable_core_of_tier_1"] = sorted(core)
    out["every_pair_T_c_overlap_at_least_90pct"] = all(p["T_c_overlap_share"] >= 0.9 for p in out["pairs"].values())
    (HERE / "results" / "quiet_runs.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1, default=str))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    main(parser.parse_args().runs)
