"""Benchmark: run a study config end to end and record its wall time, per notebook and in all.

    .venv/bin/python benchmarks/run_study.py configs/llama.yaml [-p KEY VALUE ...]

Prints the timings and the top of the ranking, and writes `benchmarks/results/<study>.json`
(commit, CPU, torch threads, seconds and peak memory per notebook, total, the ranking's top five,
and the failing notebook if one failed). Peak memory is the largest resident set size of the
notebook's kernel process (all processes below this one, sampled every 0.5 s), in bytes. Time nothing else on the machine meanwhile: on 2 cores a second job
slows a run far more than twice.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import psutil

from compstudy import paths, provenance, runner


class KernelMemory:
    """Samples the resident set size of every process below this one (the notebook kernels)
    every `interval` seconds; `peaks[i]` is the largest sum seen while notebook i ran (the
    notebook running is the number of notebooks the study has timed so far)."""

    def __init__(self, study, interval: float = 0.5):
        self.study, self.interval, self.peaks = study, interval, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            rss = 0
            for child in me.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                except psutil.Error:
                    pass
            i = len(self.study.timings)
            self.peaks[i] = max(self.peaks.get(i, 0), rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    parser.add_argument("--name", help="name of the results file (default: the study name)")
    args = parser.parse_args(argv)
    overrides = {k: runner._parse_value(k, v) for k, v in args.parameter}
    study = runner.load_study(args.config, overrides)
    env = provenance.environment()
    record = {"config": args.config, "overrides": overrides, "study": study.name, "git_commit": env["git_commit"],
              "cpu": env["cpu"], "cpu_threads": env["cpu_threads"], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    t0 = time.perf_counter()
    with KernelMemory(study) as memory:
        try:
            runner.run_study(study, progress=False)
            record["status"] = "completed"
        except (runner.NotebookFailed, runner.ConfigError) as exc:
            record["status"] = f"failed: {exc}"
    record["notebook_seconds"] = {k: round(v, 1) for k, v in study.timings.items()}
    record["notebook_peak_rss_bytes"] = {run.path.name: memory.peaks.get(i, 0)
                                         for i, run in enumerate(study.notebooks) if i in memory.peaks}
    record["total_seconds"] = round(time.perf_counter() - t0, 1)
    ranking = paths.results_dir(study.name) / "ranking.csv"
    if ranking.exists() and record["status"] == "completed":
        import pandas as pd

        table = pd.read_csv(ranking)
        cols = [c for c in ("rank", "variant", "P_c", "T_c", "T_c_lo", "T_c_hi", "opt") if c in table]
        record["ranking_top5"] = table.head(5)[cols].round(4).to_dict(orient="records")
        # every variant, so that what a README or a teacher quotes of this run can be read here
        record["ranking"] = table[cols].round(4).to_dict(orient="records")
    plateau = paths.results_dir(study.name) / "plateau.json"
    if plateau.exists():  # notebook 00's plateau check of the baseline (compstudy.baseline.plateau_check)
        record["plateau_check"] = json.loads(plateau.read_text())
    out = Path(__file__).resolve().parent / "results" / f"{args.name or study.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print(f"written {out}")
    return 0 if record["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
