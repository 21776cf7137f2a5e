"""Property-based tests (Hypothesis) of pruned shapes, every family.

For random shapes (layers, heads, head size, MLP width, vocabulary) and random keep ratios, every
pruning kind and every Minitron width recipe must give a model that the architecture accepts,
that runs forward, saves, reloads with identical logits, and has the parameter count the library
predicted for it (`surgery.predicted_parameters`, `surgery.width_plan`). This is the test that would
have caught a Llama hidden size (212) that is not a multiple of its 8 heads (issue 16).

Head counts 1..16 are each covered (parametrized) for GPT-2 and Llama; every other family (Mistral,
Qwen2, Qwen3, Gemma, Phi-3, GPT-NeoX, OPT) is drawn at grouped-query ratios 1, 2, 4 and 8 where it
has grouped-query attention (`test_every_family_at_every_grouped_query_ratio`). Hypothesis draws the
rest. Each tried shape is recorded, and `test_property_coverage` (last in this file) checks and
reports the coverage.
"""
import json
import os
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformers import AutoModelForCausalLM

from compstudy import families, models, prune, surgery

KINDS = ("heads-global", "heads-layer", "magnitude-layer", "magnitude-global", "mlp", "depth", "embedding",
         "MLP", "Emb", "Emb+MLP", "Emb+heads+mlp")
TRIED: list[dict] = []
# one worker runs this whole module, in order (tests/conftest.py, ONE_WORKER_MODULES), so that
# `test_property_coverage` sees every shape the others tried
PROPERTY_SETTINGS = settings(max_examples=10, deadline=None, derandomize=True, database=None,
                             suppress_health_check=[HealthCheck.too_slow])


GQA_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3")  # num_key_value_heads < num_attention_heads allowed
MHA_FAMILIES = ("gpt2", "gpt_neox", "opt")


def build(family: str, n_layer: int, n_head: int, head_size: int, n_inner: int, vocab: int, seed: int = 0,
          kv_ratio: int = 1):
    """A randomly initialised model of the given shape, built with transformers directly;
    `kv_ratio` query heads per key-value head (grouped-query attention) where the family has it."""
    import transformers as T

    torch.manual_seed(seed)
    hidden = n_head * head_size
    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0)
    if family == "gpt2":
        config = T.GPT2Config(n_positions=32, n_embd=hidden, n_layer=n_layer, n_head=n_head, n_inner=n_inner,
                              tie_word_embeddings=True, **common)
    elif family == "gpt_neox":
        config = T.GPTNeoXConfig(hidden_size=hidden, intermediate_size=n_inner, num_hidden_layers=n_layer,
                                 num_attention_heads=n_head, max_position_embeddings=32, **common)
    elif family == "opt":
        config = T.OPTConfig(hidden_size=hidden, ffn_dim=n_inner, num_hidden_layers=n_layer, num_attention_heads=n_head,
                             max_position_embeddings=32, word_embed_proj_dim=hidden, pad_token_id=1, **common)
    else:
        cls = {"llama": T.LlamaConfig, "mistral": T.MistralConfig, "qwen2": T.Qwen2Config, "qwen3": T.Qwen3Config,
               "gemma": T.GemmaConfig, "phi3": T.Phi3Config}[family]
        extra = {"head_dim": head_size} if family in ("qwen3", "gemma") else {}
        config = cls(hidden_size=hidden, intermediate_size=n_inner, num_hidden_layers=n_layer, num_attention_heads=n_head,
                     num_key_value_heads=n_head // kv_ratio, max_position_embeddings=32, tie_word_embeddings=True,
                     pad_token_id=0, **extra, **common)
    return AutoModelForCausalLM.from_config(config).eval()


def prune_and_predict(model, kind: str, keep: float, batches) -> int:
    """Prune `model` in place by `kind`; returns the parameter count the library predicts."""
    if kind.startswith("heads-") or kind in ("mlp", "depth", "embedding"):
        base_kind, _, allocation = kind.partition("-")
        config = prune.PruneConfig(kind=base_kind, keep_ratio=keep, head_importance="gradient", head_allocation=allocation or "global")
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


def check_shape(family, n_layer, n_head, head_size, n_inner, vocab, kind, keep, kv_ratio=1):
    model = build(family, n_layer, n_head, head_size, n_inner, vocab, kv_ratio=kv_ratio)
    batches = [torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(1))]
    predicted = prune_and_predict(model, kind, keep, batches)
    hidden_after = families.adapter_for(model).hidden_size(model)
    TRIED.append(dict(family=family, n_layer=n_layer, n_head=n_head, head_size=head_size, n_inner=n_inner,
                      vocab=vocab, kind=kind, keep=keep, kv_ratio=kv_ratio, hidden_after=hidden_after))
    # the shape the architecture accepts: Llama and GPT-NeoX validate hidden % heads when saved
    if family in ("llama", "gpt_neox"):
        assert hidden_after % model.config.num_attention_heads == 0
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
@pytest.mark.slow
def test_pruned_shapes_run_save_reload_and_count(family, n_head, n_layer, head_size, inner_ratio, vocab, kind, keep):
    n_inner = max(1, round(inner_ratio * n_head * head_size))
    check_shape(family, n_layer, n_head, head_size, n_inner, vocab, kind, keep)


@pytest.mark.slow
@pytest.mark.parametrize("family,kv_ratio", [(f, r) for f in GQA_FAMILIES for r in (1, 2, 4, 8)]
                         + [(f, 1) for f in MHA_FAMILIES if f != "gpt2"])
@settings(max_examples=5, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_layer=st.integers(1, 3), n_kv=st.integers(1, 3), head_size=st.sampled_from([2, 4, 8]),
       inner_ratio=st.floats(0.5, 4.0), vocab=st.integers(16, 300), kind=st.sampled_from(KINDS),
       keep=st.one_of(st.just(0.1), st.just(0.95), st.floats(0.1, 0.95)))
def test_every_family_at_every_grouped_query_ratio(family, kv_ratio, n_layer, n_kv, head_size, inner_ratio, vocab,
                                                   kind, keep):
    """Issue 26: every family, and grouped-query attention at 1, 2, 4 and 8 query heads per
    key-value head: head pruning removes whole key-value groups and the shape stays valid."""
    n_head = n_kv * kv_ratio
    n_inner = max(1, round(inner_ratio * n_head * head_size))
    check_shape(family, n_layer, n_head, head_size, n_inner, vocab, kind, keep, kv_ratio=kv_ratio)


def _masked_logits(model, ids, fn_hook):
    hooks = [fn_hook(i, b) for i, b in enumerate(surgery.blocks(model))]
    try:
        with torch.no_grad():
            return model(input_ids=ids).logits
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("family,kv_ratio", [(f, r) for f in GQA_FAMILIES for r in (1, 2, 4)]
                         + [(f, 1) for f in MHA_FAMILIES])
@settings(max_examples=4, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_kv=st.integers(2, 3), head_size=st.sampled_from([4, 8]), seed=st.integers(0, 100))
def test_removing_heads_and_neurons_computes_what_masking_them_computes(family, kv_ratio, n_kv, head_size, seed):
    """The oracle for the slicing: physically removing key-value groups (with their query heads)
    gives the logits of the unpruned model whose removed query heads' outputs are zeroed before the
    output projection; removing MLP neurons gives those of the model whose removed neurons are
    zeroed before the down projection. A slicing bug (rows of another head kept) breaks this."""
    n_head = n_kv * kv_ratio
    model = build(family, 2, n_head, head_size, 24, 64, seed=seed, kv_ratio=kv_ratio)
    fam, d = families.adapter_for(model), surgery.head_dim(model)
    g = torch.Generator().manual_seed(seed)
    gone = {i: sorted(torch.randperm(n_kv, generator=g)[: 1 + seed % (n_kv - 1)].tolist()) for i in range(2)}
    ids = torch.randint(0, 64, (1, 10), generator=g)

    def mask_heads(i, block):
        def pre(module, args):
            x = args[0].view(*args[0].shape[:-1], n_kv, kv_ratio, d).clone()
            x[..., gone[i], :, :] = 0
            return (x.view(args[0].shape),)
        return fam.out_proj(block).register_forward_pre_hook(pre)

    expected = _masked_logits(model, ids, mask_heads)
    surgery.prune_heads(model, gone)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-5)
    keep = torch.sort(torch.randperm(24, generator=g)[:13]).values

    def mask_neurons(i, block):
        def pre(module, args):
            x = torch.zeros_like(args[0])
            x[..., keep] = args[0][..., keep]
            return (x,)
        return fam.mlp_down(block).register_forward_pre_hook(pre)

    expected = _masked_logits(model, ids, mask_neurons)
    for block in surgery.blocks(model):
        fam.prune_mlp(block, keep)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-5)


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


@pytest.mark.slow
def test_property_coverage():
    """Runs last: the property test covered head counts 1-16 in both families, every kind, and
    keep ratios from 0.1 to 0.95. Writes the tried shapes next to the test results."""
    if not TRIED:
        pytest.skip("run with the property test to check its coverage")
    for family in ("gpt2", "llama"):
        heads = {t["n_head"] for t in TRIED if t["family"] == family}
        assert heads >= set(range(1, 17)), (family, sorted(heads))
    if any(t["kv_ratio"] > 1 for t in TRIED):  # the grouped-query test ran too
        for family in GQA_FAMILIES:
            assert {t["kv_ratio"] for t in TRIED if t["family"] == family} == {1, 2, 4, 8}, family
    assert {t["kind"] for t in TRIED} == set(KINDS)
    keeps = [t["keep"] for t in TRIED]
    assert min(keeps) == 0.1 and max(keeps) == 0.95
    out = os.environ.get("COMPSTUDY_RESULTS_DIR")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "property_shapes.json"), "w") as fh:
            json.dump({"shapes_tried": len(TRIED), "shapes": TRIED}, fh)
    print(f"\nproperty tests tried {len(TRIED)} pruned shapes")
