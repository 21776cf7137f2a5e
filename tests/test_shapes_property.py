"""Property-based tests (Hypothesis) of pruned shapes, both families.

For random shapes (layers, heads, head size, MLP width, vocabulary) and random keep ratios, every
pruning kind and every Minitron width recipe must give a model that the architecture accepts,
that runs forward, saves, reloads with identical logits, and has the parameter count the library
predicted for it (`surgery.predicted_parameters`, `surgery.width_plan`). This is the test that would
have caught a Llama hidden size (212) that is not a multiple of its 8 heads (issue 16).

Head counts 1..16 are each covered (parametrized); Hypothesis draws the rest. Each tried shape is
recorded, and `test_property_coverage` (last in this file) checks and reports the coverage.
"""
import json
import os
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compstudy import models, prune, surgery

KINDS = ("heads-global", "heads-layer", "magnitude-layer", "magnitude-global", "mlp", "depth", "embedding",
         "MLP", "Emb", "Emb+MLP", "Emb+heads+mlp")
TRIED: list[dict] = []
PROPERTY_SETTINGS = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                             suppress_health_check=[HealthCheck.too_slow])


def build(family: str, n_layer: int, n_head: int, head_size: int, n_inner: int, vocab: int, seed: int = 0):
    """A randomly initialised model of the given shape, built with transformers directly."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    hidden = n_head * head_size
    if family == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_positions=32, n_embd=hidden, n_layer=n_layer, n_head=n_head,
                            n_inner=n_inner, tie_word_embeddings=True)
        return GPT2LMHeadModel(config).eval()
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=n_inner, num_hidden_layers=n_layer,
                         num_attention_heads=n_head, num_key_value_heads=n_head, max_position_embeddings=32,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def prune_and_predict(model, kind: str, keep: float, batches) -> int:
    """Prune `model` in place by `kind`; returns the parameter count the library predicts."""
    if kind.startswith("heads-") or kind in ("mlp", "depth", "embedding"):
        base_kind, _, allocation = kind.partition("-")
        config = prune.PruneConfig(kind=base_kind, keep_ratio=keep, importance="gradient", head_allocation=allocation or "global")
        predicted = surgery.predicted_parameters(model, config.kind, keep, config.head_allocation)
        prune.apply(model, config, batches)
        return predicted
    if kind.startswith("magnitude-"):
        config = prune.PruneConfig.unstructured("magnitude", 1 - keep, magnitude_scope=kind.split("-")[1])
        predicted = surgery.predicted_parameters(model, "magnitude", None)
        prune.apply(model, config, batches)
        prune.make_permanent(model)
        return predicted
    if kind == "Emb+heads+mlp":  # a target shape over all three width axes, as Sheared-LLaMA / Minitron
        for sub in ("embedding", "heads-global", "mlp"):
            predicted = prune_and_predict(model, sub, keep, batches)
        return predicted
    # a Minitron width recipe sized to a depth-like budget: (1 - keep) of the blocks' parameters
    n_blocks = sum(p.numel() for b in surgery.blocks(model) for p in b.parameters())
    plan = surgery.width_plan(model, int((1 - keep) * n_blocks), kind)
    for step_kind, fraction in plan.steps:
        prune.apply(model, prune.PruneConfig.structured(step_kind, fraction), batches)
    assert plan.name == "Base" or all(tok.startswith(("Emb", "MLP")) for tok in plan.name.split("+"))
    return plan.n_params


def check_shape(family, n_layer, n_head, head_size, n_inner, vocab, kind, keep):
    model = build(family, n_layer, n_head, head_size, n_inner, vocab)
    batches = [torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(1))]
    predicted = prune_and_predict(model, kind, keep, batches)
    TRIED.append(dict(family=family, n_layer=n_layer, n_head=n_head, head_size=head_size, n_inner=n_inner,
                      vocab=vocab, kind=kind, keep=keep, hidden_after=model.config.hidden_size))
    # the shape the architecture accepts: Llama validates hidden % heads when saved
    if family == "llama":
        assert model.config.hidden_size % model.config.num_attention_heads == 0
    assert models.count_parameters(model)[0] == predicted, (kind, keep)
    ids = torch.randint(0, vocab, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, 12, vocab) and torch.isfinite(logits).all()
    with tempfile.TemporaryDirectory() as tmp:
        models.save_model(model, None, tmp)
        reloaded = models.load_folder(tmp)
        with torch.no_grad():
            again = reloaded(input_ids=ids).logits
    torch.testing.assert_close(again, logits, rtol=0, atol=0)
    assert models.count_parameters(reloaded)[0] == predicted


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("n_head", range(1, 17))
@PROPERTY_SETTINGS
@given(n_layer=st.integers(1, 3), head_size=st.sampled_from([2, 4, 6, 8]), inner_ratio=st.floats(0.5, 4.0),
       vocab=st.integers(16, 300), kind=st.sampled_from(KINDS),
       keep=st.one_of(st.just(0.1), st.just(0.95), st.floats(0.1, 0.95)))
def test_pruned_shapes_run_save_reload_and_count(family, n_head, n_layer, head_size, inner_ratio, vocab, kind, keep):
    n_inner = max(1, round(inner_ratio * n_head * head_size))
    check_shape(family, n_layer, n_head, head_size, n_inner, vocab, kind, keep)


def test_the_issue_16_shape_rounds_to_a_valid_llama():
    """The failing case of issue 16: 256 channels, 8 heads, 212 asked -> 216 (26.5 x 8 rounds up)."""
    model = build("llama", 2, 8, 32, 688, 300)
    assert surgery.embedding_channel_multiple(model) == 8
    assert surgery.kept_count(256, 212 / 256, 8) == 216
    per_channel = surgery.params_per_embedding_channel(model)
    plan = surgery.width_plan(model, 44 * per_channel, "Emb")
    assert plan.name == "Emb84" and plan.residual == 4 * per_channel  # 40 channels removed, not 44
    check_shape("llama", 2, 8, 32, 688, 300, "Emb", 0.83)


def test_width_plans_are_as_close_as_valid_shapes_allow():
    """The residual of an MLP or Emb plan is at most half a pruning unit when the target is reachable."""
    for family in ("gpt2", "llama"):
        model = build(family, 2, 4, 8, 80, 64)
        per_neuron = 2 * surgery.params_per_mlp_neuron(model)
        for target in (0, 1000, 5 * per_neuron + 3, 40 * per_neuron):
            plan = surgery.width_plan(model, target, "MLP")
            assert abs(plan.residual) <= per_neuron / 2, (family, target, plan)
        unit = surgery.embedding_channel_multiple(model) * surgery.params_per_embedding_channel(model)
        for target in (unit, 3 * unit + 7, 5 * unit):
            plan = surgery.width_plan(model, target, "Emb")
            assert abs(plan.residual) <= unit / 2, (family, target, plan)
    with pytest.raises(ValueError, match="width recipe 'Depth' unknown"):
        surgery.width_plan(model, 10, "Depth")


def test_percent_names_round_trip_to_the_same_count():
    for total in (7, 64, 212, 256, 3072, 14336):
        for multiple in (1, 8):
            for kept in range(multiple, total + 1, max(multiple, total // 37 or 1)):
                if kept % multiple:
                    continue
                text = surgery.percent_for(kept, total, multiple)
                assert surgery.kept_count(total, float(text) / 100, multiple) == kept, (total, multiple, kept, text)


def test_property_coverage():
    """Runs last: the property test covered head counts 1-16 in both families, every kind, and
    keep ratios from 0.1 to 0.95. Writes the tried shapes next to the test results."""
    if not TRIED:
        pytest.skip("run with the property test to check its coverage")
    for family in ("gpt2", "llama"):
        heads = {t["n_head"] for t in TRIED if t["family"] == family}
        assert heads == set(range(1, 17)), (family, sorted(heads))
    assert {t["kind"] for t in TRIED} == set(KINDS)
    keeps = [t["keep"] for t in TRIED]
    assert min(keeps) == 0.1 and max(keeps) == 0.95
    out = os.environ.get("COMPSTUDY_RESULTS_DIR")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "property_shapes.json"), "w") as fh:
            json.dump({"shapes_tried": len(TRIED), "shapes": TRIED}, fh)
    print(f"\nproperty tests tried {len(TRIED)} pruned shapes")
