"""Does Torch-Pruning cover the study's families? For a tiny random-init checkpoint of every family
the study supports (`tests/model_cases.py`: GPT-2, Llama with and without grouped-query attention,
Mistral, Qwen2, Qwen3, Gemma, Phi-3, GPT-NeoX, OPT), two probes through Torch-Pruning:

- **MLP**: build the dependency graph (`use_cache=False`, `output_transform=lambda o: o.logits`,
  as its LLM examples do) and prune 3 output channels of block 0's first MLP input projection
  (`c_fc`, `gate_proj`, `gate_up_proj`, `dense_h_to_4h`, `fc1`); covered when the graph builds, the
  coupled layers follow (the forward runs) and the projection lost exactly 3 rows.
- **heads**: `MetaPruner` with `num_heads` (query projections: query heads; key / value: key-value
  heads), `prune_num_heads=True`, `prune_head_dims=False`, `head_pruning_ratio=0.25` (and MLP channels at
  the same ratio), as its `prune_llm.py` example does for Llama / Qwen2 / Phi-3; covered when the forward runs after the
  attention modules' head counts are updated the way that example does, and a head is gone.

Prints one line per family and probe and writes benchmarks/results/torch_pruning_coverage.json.
`compstudy.surgery`'s docstring says what the study does with the result. Torch-Pruning is not a
dependency of the study:

    .venv/bin/pip install torch-pruning==1.6.1 && .venv/bin/python benchmarks/torch_pruning_coverage.py
"""
import json
import sys
import traceback
from importlib.metadata import version
from pathlib import Path

import torch
import torch_pruning as tp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import model_cases  # noqa: E402

from compstudy import families  # noqa: E402


def _failure(exc) -> dict:
    return {"covered": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}",
            "where": traceback.extract_tb(exc.__traceback__)[-1].filename.split("site-packages/")[-1]}


def probe_mlp(case: str) -> dict:
    model = model_cases.build(case)
    model.config.use_cache = False
    fam = families.adapter_for(model)
    layer = fam.mlp_in(fam.blocks(model)[0])[0]
    before = tuple(layer.weight.shape)
    example = model_cases.batches(1, 1, 16)[0]
    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, output_transform=lambda o: o.logits)
        fn = tp.prune_conv_out_channels if type(layer).__name__ == "Conv1D" else tp.prune_linear_out_channels
        graph.get_pruning_group(layer, fn, idxs=[0, 1, 2]).prune()
        with torch.no_grad():
            model(example)
        after = tuple(layer.weight.shape)
        rows = 0 if type(layer).__name__ == "Conv1D" else 0
        lost = before[rows] - after[rows] if type(layer).__name__ != "Conv1D" else before[1] - after[1]
        ok = lost == 3
        return {"covered": ok, "before": str(before), "after": str(after),
                **({} if ok else {"error": f"the projection lost {lost} rows, not 3"})}
    except Exception as exc:  # what fails is the finding
        return _failure(exc)


def probe_heads(case: str) -> dict:
    model = model_cases.build(case)
    model.config.use_cache = False
    fam = families.adapter_for(model)
    d = fam.head_dim(model)
    block = fam.blocks(model)[0]
    n_q, n_kv = fam.heads(block, d)
    num_heads = {}
    for b in fam.blocks(model):
        qkv = fam.qkv_layers(b)
        if len(qkv) == 3:
            num_heads.update({qkv[0]: n_q, qkv[1]: n_kv, qkv[2]: n_kv})
        else:
            num_heads[qkv[0]] = n_q
    example = model_cases.batches(1, 1, 16)[0]
    try:
        pruner = tp.pruner.MetaPruner(model, example_inputs=example, importance=tp.importance.MagnitudeImportance(),
                                      pruning_ratio=0.25, num_heads=num_heads, prune_num_heads=True,
                                      prune_head_dims=False, head_pruning_ratio=0.25,
                                      ignored_layers=[model.get_output_embeddings()],
                                      output_transform=lambda o: o.logits)
        pruner.step()
        for b in fam.blocks(model):  # as Torch-Pruning's prune_llm.py: update the modules' head counts
            a = fam.attention(b)
            q = fam.qkv_layers(b)[0]
            new_q = (q.weight.shape[1] if type(q).__name__ == "Conv1D" else q.out_features) // d
            for attr in ("num_heads", "num_attention_heads"):
                if hasattr(a, attr):
                    setattr(a, attr, pruner.num_heads.get(q, new_q))
            if hasattr(a, "num_key_value_heads"):
                a.num_key_value_heads = pruner.num_heads.get(fam.qkv_layers(b)[-1], n_kv)
        with torch.no_grad():
            model(example)
        after = fam.heads(fam.blocks(model)[0], d)
        ok = after[0] < n_q
        return {"covered": ok, "heads_before": [n_q, n_kv], "heads_after": list(after),
                **({} if ok else {"error": "no head was removed"})}
    except Exception as exc:
        return _failure(exc)


def main():
    out = {"torch_pruning": version("torch-pruning"), "transformers": version("transformers"), "torch": torch.__version__,
           "families": {}}
    for case in model_cases.CASES:
        out["families"][case] = {"mlp": probe_mlp(case), "heads": probe_heads(case)}
        for probe, r in out["families"][case].items():
            print(f"{case:10s} {probe:5s} {'covered' if r['covered'] else 'NOT covered: ' + r['error'][:120]}")
    out["summary"] = {probe: sorted(c for c, r in out["families"].items() if r[probe]["covered"]) for probe in ("mlp", "heads")}
    path = Path(__file__).parent / "results" / "torch_pruning_coverage.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("covered:", out["summary"])
    print("written", path)


if __name__ == "__main__":
    main()
