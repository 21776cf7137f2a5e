"""Random unstructured pruning (`Rand<pct>`), a method added through the registry alone (issue 25):
its entry in compstudy.prune and its function, nothing else."""
import torch

from compstudy import pipeline, prune

import model_cases


def test_random_pruning_zeroes_the_asked_share_and_keeps_the_shape():
    model = model_cases.build("llama-gqa")
    before = [m.weight.shape for _, m in prune.block_linear_layers(model)]
    prune.random_prune(model, 0.5, seed=1)
    assert [m.weight.shape for _, m in prune.block_linear_layers(model)] == before
    assert abs(prune.sparsity_report(model)["sparsity"] - 0.5) < 0.01
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=model_cases.batches(1)[0]).logits).all()


def test_the_grammar_parses_names_and_builds_it_through_the_registry(tiny_baseline):
    spec = pipeline.Pipeline.from_name("Rand50+4b")
    assert spec.name == "Rand50+4b" and spec.kinds() == ["prune:random", "quantize:nf4"] and not spec.is_control
    assert pipeline.Pipeline.from_name("Rand0").is_control  # nothing removed: no compression
    art = pipeline.build(tiny_baseline, pipeline.Pipeline.from_name("Rand50"), ["tinyshakespeare:train"], device="cpu")
    assert abs(art.recipe["facts"]["sparsity"] - 0.5) < 0.01
    assert art.recipe["size"]["n_params_nonzero"] < tiny_baseline.recipe["size"]["n_params_nonzero"]
