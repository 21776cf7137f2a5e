"""Issue 12: how much do two identical passes of the same model differ on this machine, and does
sampling memory during a timed pass add to it?

The default baseline is timed `ROUNDS` x 4 times in a row on 32,768 tokens of WikiText-2 test
(`measure.evaluate_many` with four names for the same model, so every pass follows another pass
of the same model), once with the study's protocol and once with a `PeakMemory` sampling thread
(every 5 ms) around each timed pass, as the protocol had before; each twice. Reported: the standard
deviation of the log-ratio of consecutive passes (wall time) and the spread (max / min - 1) of the
wall and of the process CPU time.

    python benchmarks/pass_noise.py

Writes `benchmarks/results/pass_noise.json` and prints one line per repetition.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from compstudy import baseline, energy, measure, provenance

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "pass_noise.json"
ROUNDS = 8


def sampled_pass(original):
    """`measure.timed_pass` with the former 5 ms memory-sampling thread around the timed pass."""
    def timed_pass(*args, **kwargs):
        with energy.PeakMemory("cpu"):
            return original(*args, **kwargs)
    return timed_pass


def main() -> None:
    params = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())["parameters"]
    base = baseline.get_baseline(baseline.BaselineConfig.from_params({**params, "device": "cpu"}), progress=False)
    models = {f"Base{i}": (base.model, base.tokenizer) for i in range(4)}
    cfg = measure.EvalConfig(eval_context=256, eval_stride=256, eval_batch_size=8, eval_max_tokens=32768, repeats=ROUNDS, device="cpu")
    original, rows = measure.timed_pass, []
    for repetition in range(2):
        for mode in ("protocol", "with 5 ms memory sampler"):
            measure.timed_pass = sampled_pass(original) if mode != "protocol" else original
            try:
                df = pd.DataFrame(measure.evaluate_many(models, "wikitext-2:test", cfg, study="pass-noise"))
            finally:
                measure.timed_pass = original
            wall, cpu = df["runtime_s"].to_numpy(), df["cpu_s"].to_numpy()
            rows.append({"mode": mode, "repetition": repetition, "passes": len(wall),
                         "median_pass_s": float(np.median(wall)),
                         "sd_log_ratio_consecutive": float(np.diff(np.log(wall)).std()),
                         "wall_spread": float(wall.max() / wall.min() - 1), "cpu_spread": float(cpu.max() / cpu.min() - 1),
                         "median_interference": float(df["interference"].median())})
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    OUT.write_text(json.dumps({"git_commit": provenance.git_commit(), "cpu": provenance._cpu_model(), "rows": rows}, indent=1))
    print(f"written {OUT}")


if __name__ == "__main__":
    main()
