"""Issue 11's before/after: the former default baseline (GPT-2 6 x 8 x 256, BPE 8,192, 300 k
tokens, dropout 0.1, lr 2e-3) and the current one (`configs/default.yaml`), both trained here with
the study's loop and measured with the study's protocol (`measure.evaluate`, one repeat: perplexity
and bits per byte are deterministic) on the default's evaluation splits.

    python benchmarks/baseline_before_after.py

Writes `benchmarks/results/baseline_before_after.json` and prints one line per baseline and split.
Bits per byte compare across the two vocabularies; perplexities do not.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from compstudy import baseline, measure, provenance

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "baseline_before_after.json"
FORMER = dict(vocab_size=8192, n_layer=6, n_head=8, n_embd=256, train_tokens=300_000, lr=0.002, dropout=None)


def main() -> None:
    params = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())["parameters"]
    eval_config = measure.EvalConfig.from_params({**params, "device": "cpu", "repeats": 1})
    rows = []
    for name, changes in (("before", FORMER), ("after", {})):
        config = baseline.BaselineConfig.from_params({**params, **changes, "device": "cpu"})
        art = baseline.get_baseline(config, progress=False)
        for r in measure.evaluate(art.model, art.tokenizer, params["eval_datasets"], eval_config,
                                  variant=name, study="before-after"):
            rows.append({"baseline": name, "artifact": art.key, "n_params": art.recipe["size"]["n_params"],
                         "train_seconds": round(art.cost["seconds"], 1), "dataset": r["dataset"],
                         "perplexity": round(r["perplexity"], 3), "bits_per_byte": round(r["bits_per_byte"], 4),
                         "tokens_scored": r["tokens_scored"]})
            print(rows[-1], flush=True)
    OUT.write_text(json.dumps({"git_commit": provenance.git_commit(), "cpu": provenance._cpu_model(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
