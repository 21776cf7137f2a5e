"""Does Torch-Pruning cover the study's two families? Builds Torch-Pruning's dependency graph on a
tiny GPT-2 and a tiny Llama (transformers as pinned) and prunes three MLP channels of block 0
through it. Prints one line per family and writes benchmarks/results/torch_pruning_coverage.json.

Why it exists: `compstudy.surgery` slices heads, neurons, blocks and embedding channels by hand;
issue 14 asked to use Torch-Pruning where it covers GPT-2 and Llama. Run it again after upgrading
either library (Torch-Pruning is not a dependency of the study: `pip install torch-pruning==1.6.1`).

    .venv/bin/python benchmarks/torch_pruning_coverage.py
"""
import json
import traceback
from importlib.metadata import version
from pathlib import Path

import torch
import torch_pruning as tp
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM


def try_family(model, layer_of) -> dict:
    example = torch.randint(0, 300, (1, 16))
    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, output_transform=lambda o: o.logits)
        group = graph.get_pruning_group(layer_of(model), tp.prune_linear_out_channels, idxs=[0, 1, 2])
        group.prune()
        logits = model(example).logits
        return {"covered": True, "after": str(tuple(layer_of(model).weight.shape)), "logits": str(tuple(logits.shape))}
    except Exception as exc:  # what fails is the finding
        return {"covered": False, "error": f"{type(exc).__name__}: {exc}",
                "where": traceback.extract_tb(exc.__traceback__)[-1].filename.split("site-packages/")[-1]}


def main():
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=300, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)).eval()
    llama = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                         hidden_size=64, intermediate_size=128, vocab_size=300)).eval()
    out = {"torch_pruning": version("torch-pruning"), "transformers": version("transformers"), "torch": torch.__version__,
           "gpt2 (MLP c_fc, Conv1D)": try_family(gpt2, lambda m: m.transformer.h[0].mlp.c_fc),
           "llama (MLP up_proj, Linear)": try_family(llama, lambda m: m.model.layers[0].mlp.up_proj)}
    for k, v in out.items():
        print(f"{k}: {v}")
    path = Path(__file__).parent / "results" / "torch_pruning_coverage.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("written", path)


if __name__ == "__main__":
    main()
