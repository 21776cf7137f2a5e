"""The study's CUDA paths in one command, in at most 8 minutes on one GPU.

    .venv/bin/pip install -e .[gpu]          # Zeus, for NVML energy counters
    .venv/bin/python benchmarks/gpu_check.py [--device cuda] [--out benchmarks/results/gpu_check.json]

On a GPT-2-124M-shaped model with random weights (12 x 12 x 768, vocabulary 50,257, 1,024-token
context; as `benchmarks/gpt2_124m_shape.py`, no hub), it runs and times with the study's own code:

- precision and quantization: fp16 (the reference of every ratio), bf16, and bitsandbytes
  LLM.int8() (8b), NF4 (4b) and FP4 (4bfp4) with their CUDA kernels (`quantize.quantize_model`);
- pruning: attention heads (AH80, by gradient importance), 50 % magnitude sparsity, MLP width (MLP50)
  and depth (Depth50) (`pipeline` steps on the fp16 model);
- a short distillation (a half-depth student, 64 k tokens); HQQ 4-bit (`Basehqq4`, its PyTorch
  backend, computing in float32);
- energy from NVML through Zeus (`energy.CounterMeter`: synchronised windows of at least ten counter
  updates, the GPU's idle power measured first), peak memory (`torch.cuda.max_memory_allocated`),
  and the NVML energy counter's update period (measured here, not assumed).

For each step: whether it ran, its error if not, its seconds, and (for the evaluated variants) T_c
and E_c against fp16, from interleaved, paired rounds (`measure.evaluate_many`). Results go to
`benchmarks/results/gpu_check.json`; the README's GPU table is read from it. With `--device cpu
--small`, the same steps run on a tiny shape on the CPU (no Zeus, estimated energy): what the tests
do, to keep the script working where no GPU is lent.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def shape(small: bool) -> dict:
    if small:
        return dict(vocab_size=512, n_positions=128, n_embd=64, n_layer=2, n_head=4)
    return dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)


def counter_update_period(samples: int = 400) -> float | None:
    """Seconds between distinct values of the GPU's NVML total-energy counter (median), read in a
    tight loop while the GPU works; None without NVML."""
    try:
        import pynvml
        import torch
    except ImportError:
        return None
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    x = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    changes, last, t_last = [], None, None
    for _ in range(samples):
        x = x @ x
        x = x / x.norm()
        value = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        now = time.perf_counter()
        if value != last:
            if t_last is not None:
                changes.append(now - t_last)
            last, t_last = value, now
    torch.cuda.synchronize()
    changes.sort()
    return changes[len(changes) // 2] if changes else None


def step(results: dict, name: str, fn):
    """Run one check, recording whether it ran, its seconds and its error."""
    import torch

    t0 = time.perf_counter()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        out = fn()
        record = {"ran": True, "seconds": round(time.perf_counter() - t0, 2), **(out or {})}
    except Exception as exc:  # the finding is what fails
        record = {"ran": False, "seconds": round(time.perf_counter() - t0, 2), "error": f"{type(exc).__name__}: {exc}",
                  "where": traceback.extract_tb(exc.__traceback__)[-1].filename.split("site-packages/")[-1]}
    if torch.cuda.is_available():
        record["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
    results["steps"][name] = record
    print(f"{name:12s} {'ran' if record['ran'] else 'FAILED: ' + record['error'][:150]} ({record['seconds']} s)", flush=True)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="a tiny shape (what the tests run on the CPU)")
    parser.add_argument("--out", default=str(HERE / "results" / "gpu_check.json"))
    parser.add_argument("--eval-tokens", type=int, default=None)
    args = parser.parse_args(argv)

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from compstudy import baseline, data, energy, measure, models, pipeline, provenance, quantize, ranking

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu --small to check the script itself", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = {"device": device, "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else "",
               "commit": provenance.git_commit(), "torch": torch.__version__, "shape": shape(args.small), "steps": {}}
    eval_tokens = args.eval_tokens or (512 if args.small else 8192)
    import os

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        os.environ["COMPSTUDY_ARTIFACTS_DIR"] = str(Path(tmp) / "artifacts")  # a cache of its own, removed at the end
        folder = Path(tmp) / "gpt2-124m-shaped"
        text = data.load_text("wikitext-2:valid")
        tok = data.train_bpe_tokenizer(text, shape(args.small)["vocab_size"])
        torch.manual_seed(0)
        s = shape(args.small)
        model = GPT2LMHeadModel(GPT2Config(**s, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                           tie_word_embeddings=True))
        models.save_model(model.half() if device.startswith("cuda") else model, tok, folder)
        results["counter_update_period_s"] = counter_update_period() if device.startswith("cuda") else None
        dtype = "float16" if device.startswith("cuda") else "float32"
        config = baseline.BaselineConfig(model=str(folder), device=device, train_corpora=["wikitext-2:valid"],
                                         batch_size=4, seq_len=256 if not args.small else 64)
        base = baseline.get_baseline(config, progress=False)
        base.model.to(device=device, dtype=getattr(torch, dtype))
        variants = {"Base": base}

        built = {}

        def quantized(name, method):
            cfg = quantize.QuantConfig(method)
            q = quantize.quantize_model(base.path, cfg, device)
            built[f"Base{name}"] = models.Artifact(q, tok, f"Base{name}", None, {"size": models.model_size(q), "cost": {}})
            return {"layers": quantize.check_quantized(q, cfg)}

        for name, method in (("bf16", "bf16"), ("8b", "int8"), ("4b", "nf4"), ("4bfp4", "fp4")):
            step(results, name, lambda name=name, method=method: quantized(name, method))
        defaults = pipeline.StepDefaults(
            prune=pipeline.PruneConfig(calibration_batches=2, calibration_batch_size=2, calibration_seq_len=128),
            distill=pipeline.DistillConfig(tokens=4096 if args.small else 65536, batch_size=4,
                                           seq_len=64 if args.small else 256))

        def pruned(name):
            art = pipeline.build(base, pipeline.Pipeline.from_name(name, defaults), ["wikitext-2:valid"], device=device,
                                 progress=False, defaults=defaults)
            if "hqq" in name:  # HQQ's layers compute in the dtype they were quantized in (float32 here)
                art.model.to(device=device)
            else:
                art.model.to(device=device, dtype=getattr(torch, dtype))
            built[name] = art
            return {"n_params": art.recipe["size"]["n_params"]}

        for name in ("AH80", "Mag50", "MLP50", "Depth50", "Distil", "Basehqq4"):
            step(results, name.removeprefix("Base"), lambda name=name: pruned(name))
        variants.update(built)

        def evaluate():
            cfg = measure.EvalConfig(eval_context=s["n_positions"], eval_stride=s["n_positions"] - 1, eval_batch_size=4,
                                     eval_max_tokens=eval_tokens, repeats=4, device=device)
            meter = energy.open_meter(device)
            with meter:
                rows = measure.evaluate_many({n: (a.model, a.tokenizer) for n, a in variants.items()}, ["wikitext-2:test"],
                                             cfg, study="gpu-check", sizes={n: a.recipe.get("size") for n, a in variants.items()},
                                             meter=meter)
            import pandas as pd

            df = pd.DataFrame(rows).assign(notebook="gpu_check")
            rank = ranking.ranking(df, n_boot=200).set_index("variant")
            for n in variants:
                if n != "Base" and n in rank.index:
                    results["steps"].get(n.removeprefix("Base") if n.startswith("Base") else n, {}).update(
                        T_c=round(float(rank.loc[n, "T_c"]), 4), E_c=round(float(rank.loc[n, "E_c"]), 4),
                        perplexity=round(float(df[df.variant == n]["perplexity"].median()), 3))
            first = df.iloc[0]
            return {"energy_method": first["energy_method"], "energy_detail": first["energy_detail"],
                    "idle_power_w": None if first["idle_power_w"] != first["idle_power_w"] else float(first["idle_power_w"]),
                    "passes_per_window": int(df["passes_per_window"].max()), "reference": "Base in " + dtype}

        step(results, "evaluation", evaluate)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"written {args.out} ({results['total_seconds']} s)")
    return 0 if all(r["ran"] for r in results["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
