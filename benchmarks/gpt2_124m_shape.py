"""Benchmark: the hub path end to end on a GPT-2-124M-shaped checkpoint, without a hub.

    .venv/bin/python benchmarks/gpt2_124m_shape.py

Builds a GPT-2 with GPT-2 small's shape (12 layers x 12 heads x 768 dims, vocabulary 50,257,
1,024-token context, tied embeddings) and random weights, saves it with a byte-level BPE tokenizer
as a local folder (`artifacts/gpt2-124m-shaped/`), then runs `configs/gpt2-paper.yaml` on it
through every notebook with `-p model <folder>` (`benchmarks/run_study.py`: seconds and kernel
peak memory per notebook, written to `benchmarks/results/gpt2-124m-shaped.json`).

What differs from the paper's setting, and why (all given as `-p` overrides below):
- random weights and a tokenizer trained here: GPT-2's own weights and vocabulary need the hub.
  The BPE is trained towards 50,257 tokens on the offline text and stops where the text has no
  more merges; the model keeps 50,257 embedding rows either way.
- CPU, a reduced evaluation (the first 1,024 tokens of each dataset, one full-context window,
  2 repeats), token budgets of 512 to 1,024 tokens (one or two optimizer steps), one magnitude
  sparsity and scope, so that it fits a 2-core machine; no bf16 variant: on this CPU (AMD EPYC,
  2 threads) the 124M model in bf16 did not finish six 1,024-token passes in 9 minutes (fp32:
  2.7 s a pass), so it was left out of this run; WikiText-2 valid / test and tinyshakespeare
  instead of WikiText-2 train / C4 / LAMBADA, which are online-only; no DistilGPT2 (hub).
The perplexities of a random model mean nothing; what the run proves is that a hub-sized
checkpoint (tied 50,257 x 768 embedding, 1,024 context, 144 heads) goes through quantization,
head pruning, distillation, the hybrids and the comparison.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

OVERRIDES = {
    "device": "cpu", "train_corpora": '["wikitext-2:valid"]',
    "eval_datasets": '["wikitext-2:test", "tinyshakespeare:test"]', "eval_max_tokens": "1024", "repeats": "2",
    "eval_batch_size": "2", "batch_size": "2", "seq_len": "256", "distill_tokens": "1024", "student_model": "null",
    "variants": '["8b", "4b", "4bfp4"]', "generate_tokens": "8", "finetune_tokens": "512", "sparsities": "[0.5]", "magnitude_scopes": '["layer"]',
    "sweep_max_tokens": "1024",
    "calibration_batches": "2", "kd_tokens": "512", "target_finetune_tokens": "512", "n_boot": "100",
}


def build_checkpoint(folder: Path) -> Path:
    """GPT-2 small's shape with random weights and a local BPE tokenizer, saved to `folder`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from compstudy import data, models

    if (folder / "config.json").exists():
        return folder
    text = "\n".join(data.load_text(s) for s in ("wikitext-2:valid", "tinyshakespeare:train"))
    tokenizer = data.train_bpe_tokenizer(text, vocab_size=50257)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        tie_word_embeddings=True)
    model = GPT2LMHeadModel(config)
    models.save_model(model, tokenizer, folder)
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    print(f"built {folder}: {n:,} parameters, tokenizer of {len(tokenizer):,} tokens (model vocabulary 50,257)")
    return folder


def main() -> int:
    import run_study

    from compstudy import paths

    folder = build_checkpoint(paths.artifacts_dir() / "gpt2-124m-shaped")
    args = [str(paths.repo_root() / "configs" / "gpt2-paper.yaml"), "--name", "gpt2-124m-shaped",
            "-p", "model", str(folder), "-p", "study", "gpt2-124m-shaped"]
    for key, value in OVERRIDES.items():
        args += ["-p", key, value]
    return run_study.main(args)


if __name__ == "__main__":
    sys.exit(main())
