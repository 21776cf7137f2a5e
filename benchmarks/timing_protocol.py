"""Issue 12: how many rounds, and how long a pass, make runtime ratios reproduce?

For a set of the default study's variants (quantized, head-pruned, depth-pruned, and the
equal-training control `Base+ft10k`, whose true T_c is 1: the noise floor), at each pass length
(tokens of WikiText-2 test per pass), the study's interleaved protocol (`measure.evaluate_many`) is
run twice, A and B, with `ROUNDS` rounds each, as two runs of the study would be; and once the old
way, each variant timed alone, one after the other (sequential). For the first k rounds of each:

- T_c per variant = median over rounds of the paired ratio to Base (`ranking.ranking`);
- |T_c(A) - T_c(B)|: what a second run would change (median and largest over the variants);
- the width of the 95 % bootstrap interval (median over the variants) and whether A's and B's
  intervals overlap;
- |T_c - 1| of `Base+ft10k` (same architecture as Base: any departure is noise).

    python benchmarks/timing_protocol.py [TOKENS ...]     # default: 8192 16384 32768

Writes `benchmarks/results/timing_protocol.json` and prints the table. One dataset here; the study
averages T_c over its two evaluation corpora (and over batch sizes in 01), which narrows it further.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from compstudy import baseline, measure, noise, pipeline, provenance, ranking

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "timing_protocol.json"
VARIANTS = ["Base8b", "Base4b", "AH80", "Depth50", "Base+ft10k"]
ROUNDS = 8
DATASET = "wikitext-2:test"


def figures(a: pd.DataFrame, b: pd.DataFrame, k: int) -> dict:
    """Reproducibility of T_c between runs a and b, using their first k rounds."""
    ra = ranking.ranking(a[a["repeat"] < k], n_boot=1000).set_index("variant")
    rb = ranking.ranking(b[b["repeat"] < k], n_boot=1000).set_index("variant")
    v = [x for x in ra.index if x != "Base" and x in rb.index]
    delta = (ra.loc[v, "T_c"] - rb.loc[v, "T_c"]).abs()
    width = pd.concat([ra.loc[v, "T_c_hi"] - ra.loc[v, "T_c_lo"], rb.loc[v, "T_c_hi"] - rb.loc[v, "T_c_lo"]])
    overlap = (ra.loc[v, "T_c_lo"] <= rb.loc[v, "T_c_hi"]) & (rb.loc[v, "T_c_lo"] <= ra.loc[v, "T_c_hi"])
    return {"rounds": k, "median_abs_delta_T_c": float(delta.median()), "max_abs_delta_T_c": float(delta.max()),
            "median_interval_width": float(width.median()), "intervals_overlap": f"{int(overlap.sum())}/{len(v)}",
            "control_abs_T_c_minus_1": float(max(abs(ra.loc["Base+ft10k", "T_c"] - 1), abs(rb.loc["Base+ft10k", "T_c"] - 1))),
            "T_c_A": {x: round(float(ra.loc[x, "T_c"]), 4) for x in v},
            "T_c_B": {x: round(float(rb.loc[x, "T_c"]), 4) for x in v}}


def main(lengths: list[int]) -> None:
    params = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())["parameters"]
    config = baseline.BaselineConfig.from_params({**params, "device": "cpu"})
    base = baseline.get_baseline(config, progress=False)
    defaults = pipeline.StepDefaults(finetune=pipeline.FinetuneConfig(tokens=10_000))
    arts = {"Base": base, **{n: pipeline.build(base, pipeline.Pipeline.from_name(n, defaults), config.train_corpora,
                                               device="cpu") for n in VARIANTS}}
    models = {n: (a.model, a.tokenizer) for n, a in arts.items()}
    sizes = {n: a.recipe.get("size") for n, a in arts.items()}
    out = {"git_commit": provenance.git_commit(), "cpu": provenance._cpu_model(), "rounds": ROUNDS, "dataset": DATASET,
           "variants": ["Base", *VARIANTS], "by_length": []}
    for tokens in lengths:
        cfg = measure.EvalConfig(eval_context=params["eval_context"], eval_stride=params["eval_stride"], eval_batch_size=8,
                                 eval_max_tokens=tokens, repeats=ROUNDS, device="cpu")
        runs, seconds = {}, {}
        for name in ("A", "B"):
            t0 = time.perf_counter()
            runs[name] = pd.DataFrame(measure.evaluate_many(models, DATASET, cfg, study="timing-protocol", sizes=sizes))
            seconds[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        seq = pd.DataFrame([r for n, (m, t) in models.items() for r in
                            measure.evaluate(m, t, DATASET, cfg, variant=n, study="timing-protocol", size=sizes[n])])
        seconds["sequential"] = time.perf_counter() - t0
        base_pass = float(runs["A"].loc[runs["A"]["variant"] == "Base", "runtime_s"].median())
        noise = noise.timing_noise(runs["A"]).iloc[0]
        entry = {"tokens": tokens, "base_pass_s": base_pass, "seconds_per_run": seconds,
                 "base_spread": float(noise["base_spread"]), "interference": float(noise["interference"]),
                 "interleaved_A_vs_B": [figures(runs["A"], runs["B"], k) for k in (3, 5, ROUNDS)],
                 "sequential_vs_A": [figures(seq, runs["A"], k) for k in (3, 5, ROUNDS)]}
        out["by_length"].append(entry)
        for kind in ("interleaved_A_vs_B", "sequential_vs_A"):
            for f in entry[kind]:
                print(f"{tokens:6d} tokens ({base_pass:.2f} s/pass)  {kind:18s} k={f['rounds']}: median |dT_c| "
                      f"{f['median_abs_delta_T_c']:.4f}, max {f['max_abs_delta_T_c']:.4f}, interval width "
                      f"{f['median_interval_width']:.4f}, overlap {f['intervals_overlap']}, control |T_c-1| "
                      f"{f['control_abs_T_c_minus_1']:.4f}", flush=True)
        OUT.write_text(json.dumps(out, indent=1))
    print(f"written {OUT}")


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [8192, 16384, 32768])
