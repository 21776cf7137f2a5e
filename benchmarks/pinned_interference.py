"""Issue 25: does a timed pass of a pinned process count only what others take of its own CPUs?

`make test` runs two pytest workers, each pinned to its own CPU while the smoke study measures
(tests/conftest.py), and `measure.timed_pass` counts the busy time of the CPUs its process may run on
(`measure.measured_cpus`). This checks that on the real counters: this process pinned to one CPU,
a busy loop (`while True: pass`) pinned to another CPU, then to the same one, and the tiny test
baseline measured (`measure.evaluate_many`, `ROUNDS` rounds of 20,000 WikiText-2 test tokens) each
time. Expected: `interference` near 0 with the loop elsewhere, near 0.5 with it on the same CPU.
It is a benchmark, not a test: the suite's other worker would use the other CPU.

    python benchmarks/pinned_interference.py

Run it with nothing else running. Writes `benchmarks/results/pinned_interference.json` and prints
one line per placement of the loop.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from compstudy import measure, provenance
from compstudy.baseline import BaselineConfig, get_baseline

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "pinned_interference.json"
ROUNDS = 4
# the tests' tiny GPT-2 (tests/conftest.py TINY)
TINY = dict(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=512, train_tokens=40_000,
            batch_size=16, seq_len=64, lr=3e-3)


def main() -> None:
    if not hasattr(os, "sched_setaffinity"):
        sys.exit("no CPU affinity on this platform")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("one CPU: nothing to pin apart")
    art = get_baseline(BaselineConfig(**TINY), progress=False)
    mine, other = cpus[0], cpus[1]
    os.sched_setaffinity(0, {mine})
    torch.set_num_threads(1)  # one CPU: a second torch thread would only wait for it (as the test workers: OMP_NUM_THREADS=1)
    cfg = measure.EvalConfig(eval_max_tokens=20_000, repeats=ROUNDS, eval_batch_size=4, device="cpu", max_retries=0)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    placements = []
    try:
        for where, cpu in [("none", None), ("another CPU", other), ("the same CPU", mine)]:
            if cpu is None:
                hog.send_signal(19)  # SIGSTOP: the loop paused, nothing else running
            else:
                hog.send_signal(18)  # SIGCONT
                os.sched_setaffinity(hog.pid, {cpu})
            time.sleep(0.5)
            rows = pd.DataFrame(measure.evaluate_many({"Base": (art.model, art.tokenizer)}, ["wikitext-2:test"], cfg,
                                                      study="pinned"))
            placements.append({"busy_loop_on": where, "cpu_s_median": float(rows["cpu_s"].median()),
                               "others_cpu_s_median": float(rows["others_cpu_s"].median()), "n_cpus": sorted(set(rows["n_cpus"].astype(int))),
                               "interference_median": float(rows["interference"].median()),
                               "interference_max": float(rows["interference"].max()),
                               "runtime_s_median": float(rows["runtime_s"].median())})
            p = placements[-1]
            print(f"busy loop on {where:13s}: interference median {p['interference_median']:.3f} "
                  f"(max {p['interference_max']:.3f}), pass {p['runtime_s_median']:.3f} s, n_cpus {p['n_cpus']}")
    finally:
        hog.kill()
        hog.wait()
    OUT.write_text(json.dumps({"cpu": provenance._cpu_model(), "cpus": len(cpus), "measuring_cpu": mine,
                               "other_cpu": other, "rounds": ROUNDS, "placements": placements,
                               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
