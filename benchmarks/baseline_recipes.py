"""Candidate recipes for the offline baseline: held-out bits per byte against training wall time.

Issue 11 asks for a baseline trained to (near) its validation plateau within the study's
budget. This script trains each candidate recipe with the study's own loop
(`compstudy.baseline.get_baseline`, so a candidate the study later uses is already cached),
scores it on the held-out validation tail of the training corpora (never the test splits, which
the study reports), and runs the plateau check (`compstudy.baseline.plateau_check`: 25 % more
tokens at the final learning rate). Bits per byte are comparable across vocabulary sizes;
perplexity is not.

    python benchmarks/baseline_recipes.py                 # every candidate below
    python benchmarks/baseline_recipes.py B2048-4x4x128-1.5M   # some of them, by name

Writes `benchmarks/results/baseline_recipes.json` (one entry per candidate, updated after each
one, so an interrupted run keeps what it measured) and prints a markdown table.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from compstudy import baseline, data, provenance

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "baseline_recipes.json"
COMMON = dict(family="gpt2", n_positions=256, train_corpora=("wikitext-2:valid", "tinyshakespeare:train"),
              batch_size=16, seq_len=128, lr=2e-3, seed=0, device="cpu")

# name -> the fields that differ from COMMON. The first is the baseline before issue 11.
CANDIDATES = {
    "V8192-6x8x256-0.3M": dict(vocab_size=8192, n_layer=6, n_head=8, n_embd=256, train_tokens=300_000),
    "V2048-4x4x128-1M": dict(vocab_size=2048, n_layer=4, n_head=4, n_embd=128, train_tokens=1_000_000),
    "V2048-3x4x128-1.5M": dict(vocab_size=2048, n_layer=3, n_head=4, n_embd=128, train_tokens=1_500_000),
    "V2048-4x4x128-2M": dict(vocab_size=2048, n_layer=4, n_head=4, n_embd=128, train_tokens=2_000_000),
    "V4096-4x4x128-1.5M": dict(vocab_size=4096, n_layer=4, n_head=4, n_embd=128, train_tokens=1_500_000),
    "V2048-4x4x128-2M-drop0": dict(vocab_size=2048, n_layer=4, n_head=4, n_embd=128, train_tokens=2_000_000,
                                   dropout=0.0),
    "V2048-4x4x128-1.5M-drop0-lr4e-3": dict(vocab_size=2048, n_layer=4, n_head=4, n_embd=128, train_tokens=1_500_000,
                                            dropout=0.0, lr=4e-3),
    "V2048-4x4x128-2M-drop0-lr4e-3": dict(vocab_size=2048, n_layer=4, n_head=4, n_embd=128, train_tokens=2_000_000,
                                          dropout=0.0, lr=4e-3),
    "V2048-2x4x128-2M-drop0-lr4e-3": dict(vocab_size=2048, n_layer=2, n_head=4, n_embd=128, train_tokens=2_000_000,
                                          dropout=0.0, lr=4e-3),
    "V2048-4x4x128-3M-drop0-lr4e-3": dict(vocab_size=2048, n_layer=4, n_head=4, n_embd=128, train_tokens=3_000_000,
                                          dropout=0.0, lr=4e-3),
    "V2048-2x8x128-2M-drop0-lr4e-3": dict(vocab_size=2048, n_layer=2, n_head=8, n_embd=128, train_tokens=2_000_000,
                                          dropout=0.0, lr=4e-3),
    "V2048-3x4x128-2M-drop0-lr4e-3": dict(vocab_size=2048, n_layer=3, n_head=4, n_embd=128, train_tokens=2_000_000,
                                          dropout=0.0, lr=4e-3),
}


def run(name: str, fields: dict) -> dict:
    config = baseline.BaselineConfig(**{**COMMON, **fields})
    t0 = time.perf_counter()
    art = baseline.get_baseline(config, progress=False)
    built_s = time.perf_counter() - t0
    train_ids, val_ids = data.training_streams(art.tokenizer, config.train_corpora, config.val_fraction)
    held = baseline.heldout(art.model, art.tokenizer, val_ids)
    check = baseline.plateau_check(config, progress=False)
    return {"name": name, **fields,
            "n_params": art.recipe["size"]["n_params"],
            "train_stream_tokens": int(len(train_ids)), "epochs": round(config.train_tokens / len(train_ids), 2),
            "train_seconds": round(art.cost["seconds"], 1), "reused_from_cache": built_s < 0.5 * art.cost["seconds"],
            "val_perplexity": round(held.perplexity, 3), "val_bits_per_byte": round(held.bits_per_byte, 4),
            "plateau_improvement_pct": round(check.improvement_pct, 3),
            "plateau_bits_per_byte_after": round(check.after.bits_per_byte, 4),
            "plateau_check_seconds": round(check.seconds, 1), "converged": check.converged}


def table(rows: list[dict]) -> str:
    head = ("| candidate | params | epochs | train s | val bits/byte | val ppl | plateau: further improvement % |\n"
            "|---|---:|---:|---:|---:|---:|---:|")
    return "\n".join([head] + [f"| {r['name']} | {r['n_params']:,} | {r['epochs']} | {r['train_seconds']} | "
                               f"{r['val_bits_per_byte']} | {r['val_perplexity']} | {r['plateau_improvement_pct']} |"
                               for r in rows])


def main(names: list[str]) -> None:
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate(s) {unknown}; allowed: {list(CANDIDATES)}")
    torch.set_num_threads(torch.get_num_threads())
    done = json.loads(OUT.read_text())["candidates"] if OUT.exists() else []
    for name in names or list(CANDIDATES):
        row = run(name, CANDIDATES[name])
        done = [r for r in done if r["name"] != name] + [row]
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps({"cpu": provenance._cpu_model(), "cpu_threads": torch.get_num_threads(),
                                   "python": platform.python_version(), "torch": torch.__version__,
                                   "git_commit": provenance.git_commit(), "common": {**COMMON, "train_corpora": list(COMMON["train_corpora"])},
                                   "candidates": done}, indent=2))
        print(json.dumps(row), flush=True)
    print(table(done))


if __name__ == "__main__":
    main(sys.argv[1:])
