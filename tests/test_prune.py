import types

import pytest

from compstudy import experiments
import torch

from compstudy import data, prune, surgery
from compstudy.models import load_artifact
from compstudy.prune import PruneConfig

CORPORA = ["tinyshakespeare:train"]
IDS = torch.randint(0, 500, (2, 24), generator=torch.Generator().manual_seed(0))


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _fresh(art):
    return load_artifact(art.key, device="cpu").model


@pytest.fixture(scope="module")
def batches(tiny_baseline):
    return data.calibration_batches(tiny_baseline.tokenizer, CORPORA, n_batches=2, batch_size=4, seq_len=32)


@pytest.mark.parametrize("fixture", ["tiny_baseline", "tiny_llama"])
def test_pruning_nothing_leaves_outputs_unchanged(fixture, request, batches):
    art = request.getfixturevalue(fixture)
    ref = _logits(art.model)
    for cfg in [PruneConfig("heads", 1.0), PruneConfig.unstructured("magnitude", 0.0), PruneConfig("mlp", 1.0),
                PruneConfig("depth", 1.0), PruneConfig("embedding", 1.0)]:
        model = _fresh(art)
        prune.apply(model, cfg, batches)
        prune.make_permanent(model)
        assert torch.allclose(_logits(model), ref, atol=1e-5), cfg


@pytest.mark.parametrize("fixture", ["tiny_baseline", "tiny_llama"])
def test_head_pruning_shapes_and_parameter_count(fixture, request):
    model = _fresh(request.getfixturevalue(fixture))
    d, e = surgery.head_dim(model), model.config.hidden_size
    before = sum(p.numel() for p in model.parameters())
    assert surgery.head_counts(model) == [2, 2]
    surgery.prune_heads(model, {0: [1]})
    assert surgery.head_counts(model) == [1, 2]
    has_bias = fixture == "tiny_baseline"  # GPT-2's q/k/v have biases, Llama's do not
    assert before - sum(p.numel() for p in model.parameters()) == 4 * d * e + (3 * d if has_bias else 0)
    assert _logits(model).shape == (2, 24, 512)
    with pytest.raises(ValueError, match="removing every head of layer 1 \\(2 key-value groups\\)"):
        surgery.prune_heads(model, {1: [0, 1]})


def _mlp_width(model) -> int:
    from compstudy import families

    return families.adapter_for(model).mlp_width(surgery.blocks(model)[0])


def test_removing_a_head_equals_masking_it(tiny_baseline):
    """Physically removing head h gives the same outputs as zeroing its output."""
    model = _fresh(tiny_baseline)
    block = surgery.blocks(model)[0]
    d = surgery.head_dim(model)
    hook = surgery.attention_output(model, block).register_forward_pre_hook(
        lambda m, a: (torch.cat([a[0][..., :d], torch.zeros_like(a[0][..., d:])], -1),))
    masked = _logits(model)
    hook.remove()
    surgery.prune_heads(model, {0: [1]})
    assert torch.allclose(_logits(model), masked, atol=1e-5)


def test_head_importance_and_selection(tiny_baseline, batches):
    model = _fresh(tiny_baseline)
    for method in ("gradient", "magnitude"):
        scores = prune.head_importance(model, batches, method)
        assert scores.shape == (2, 2) and (scores >= 0).all() and scores.sum() > 0
    assert all(p.grad is None for p in model.parameters())
    imp = torch.tensor([[0.9, 0.1, 0.5, 0.4], [0.8, 0.7, 0.6, 0.05]])
    assert prune.select_heads(imp, 0.5, "layer") == {0: [1, 3], 1: [2, 3]}
    assert prune.select_heads(imp, 0.75, "global") == {0: [1], 1: [3]}
    # global allocation never empties a layer
    assert prune.select_heads(torch.tensor([[1.0, 0.9], [0.01, 0.02]]), 0.5, "global") == {0: [1], 1: [0]}


@pytest.mark.parametrize("sparsity", [0.1, 0.37, 0.5, 0.9])
def test_layerwise_sparsity_is_reached_within_one_weight(tiny_baseline, sparsity):
    model = _fresh(tiny_baseline)
    prune.magnitude_prune(model, sparsity, "layer")
    prune.make_permanent(model)
    for _, m in surgery.block_linear_layers(model):
        assert abs(int((m.weight == 0).sum()) - sparsity * m.weight.numel()) <= 1


def test_global_sparsity_and_sparse_bytes(tiny_baseline):
    model = _fresh(tiny_baseline)
    prune.magnitude_prune(model, 0.8, "global")
    prune.make_permanent(model)
    report = prune.sparsity_report(model)
    assert abs(report["zeros"] - 0.8 * report["weights"]) <= 1
    assert len(set(round(v, 3) for v in report["per_layer"].values())) > 1  # layers differ under global
    b = prune.sparse_storage_bytes(model)
    assert b["block_weights_csr_bytes"] < b["block_weights_dense_bytes"]


def test_masks_are_permanent_and_round_trip_is_exact(tiny_baseline, tmp_path):
    from compstudy.models import load_model, save_model

    model = _fresh(tiny_baseline)
    prune.magnitude_prune(model, 0.5, "layer")
    assert prune.make_permanent(model) == 8
    assert not any(n.endswith("_orig") or n.endswith("_mask") for n, _ in model.named_parameters())
    save_model(model, None, tmp_path)
    again = load_model(tmp_path)
    assert torch.equal(_logits(again), _logits(model))
    assert prune.sparsity_report(again)["sparsity"] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("fixture", ["tiny_baseline", "tiny_llama"])
@pytest.mark.parametrize("cfg", [PruneConfig("heads", 0.75), PruneConfig.unstructured("magnitude", 0.6),
                                 PruneConfig("mlp", 0.5), PruneConfig("depth", 0.5), PruneConfig("embedding", 0.75)],
                         ids=["heads", "magnitude", "mlp", "depth", "embedding"])
def test_pruned_artifacts_save_and_reload_with_identical_logits(fixture, request, cfg):
    art = request.getfixturevalue(fixture)
    small = PruneConfig(**{**cfg.__dict__, "calibration_batches": 2, "calibration_batch_size": 4,
                           "calibration_seq_len": 32})
    pruned = prune.get_pruned(art, small, CORPORA, device="cpu", progress=False)
    assert pruned.recipe["size"]["n_params_nonzero"] < art.recipe["size"]["n_params_nonzero"]
    again = load_artifact(pruned.key, device="cpu")
    assert torch.equal(_logits(again.model), _logits(pruned.model))
    if cfg.kind == "heads":
        assert sum(surgery.head_counts(again.model)) == 3
    if cfg.kind == "depth":
        assert again.model.config.num_hidden_layers == 1
    if cfg.kind == "embedding":
        assert again.model.config.hidden_size == 48 and again.model.get_input_embeddings().weight.shape == (512, 48)
        # GPT-2 derives its attention width from n_embd, so its config alone cannot rebuild the model
        assert (pruned.path / surgery.SHAPE_FILE).exists() == (fixture == "tiny_baseline")


@pytest.mark.parametrize("fixture", ["tiny_baseline", "tiny_llama"])
def test_embedding_channel_pruning_shapes_parameters_and_selection(fixture, request, batches):
    model = _fresh(request.getfixturevalue(fixture))
    scores = prune.embedding_channel_importance(model, batches)
    assert scores.shape == (64,) and (scores >= 0).all()
    per_channel = surgery.params_per_embedding_channel(model)
    before = sum(p.numel() for p in model.parameters())
    heads_before, inner_before = surgery.head_counts(model), _mlp_width(model)
    # the 16 channels of lowest importance go; the kept ones keep their order
    importance = torch.arange(64.0).flip(0)
    embeddings = model.get_input_embeddings().weight.detach().clone()
    surgery.prune_embedding_channels(model, 0.75, importance)
    assert torch.equal(model.get_input_embeddings().weight, embeddings[:, :48])
    assert before - sum(p.numel() for p in model.parameters()) == 16 * per_channel
    assert surgery.head_counts(model) == heads_before  # heads and MLP neurons keep their sizes
    assert _mlp_width(model) == inner_before
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    assert _logits(model).shape == (2, 24, 512)
    plan = surgery.width_plan(_fresh(request.getfixturevalue(fixture)), 16 * per_channel, "Emb")
    assert plan.name == "Emb75" and plan.residual == 0 and plan.n_params == before - 16 * per_channel
    with pytest.raises(ValueError, match="importance must have shape \\(48,\\)"):
        surgery.prune_embedding_channels(model, 0.5, importance)
    with pytest.raises(ValueError, match="n_params_removed must be in"):
        surgery.width_plan(model, 10**9, "Emb")


def test_head_and_embedding_pruning_combine_and_reload(tiny_baseline, tmp_path):
    from compstudy.models import save_model

    model = _fresh(tiny_baseline)
    surgery.prune_heads(model, {1: [0]})
    surgery.prune_embedding_channels(model, 0.5, torch.rand(64))
    save_model(model, None, tmp_path)
    assert surgery.shape_record(model) == {"heads_per_layer": [2, 1], "kv_heads_per_layer": [2, 1], "attention_width": 64}
    again = surgery.load_pruned(tmp_path)
    assert torch.equal(_logits(again), _logits(model))
    with pytest.raises(ValueError, match="does not fit the config"):
        surgery.build_pruned_shape(again.config, {"heads_per_layer": [3, 1], "attention_width": 64})


def test_fine_tuning_keeps_pruned_weights_zero(tiny_baseline):
    cfg = PruneConfig.unstructured("magnitude", 0.7, magnitude_scope="layer", finetune_tokens=2048, calibration_batch_size=4,
                      calibration_seq_len=32)
    art = prune.get_pruned(tiny_baseline, cfg, CORPORA, device="cpu", progress=False)
    assert art.history is not None and art.cost["seconds"] > 0
    assert prune.sparsity_report(art.model)["sparsity"] == pytest.approx(0.7, abs=1e-3)


def test_impossible_requests_fail_early():
    for bad, match in [(dict(kind="heads", keep_ratio=0), "keep_ratio must be in \\(0, 1\\]"),
                       (dict(kind="heads", keep_ratio=1.2), "keep_ratio"),
                       (dict(kind="magnitude", keep_ratio=None, sparsity=1.0), "sparsity must be in \\[0, 1\\)"),
                       (dict(kind="magnitude", keep_ratio=None, sparsity=-0.1), "sparsity"),
                       (dict(kind="magnitude", sparsity=0.5), "sized by sparsity .* not keep_ratio"),
                       (dict(kind="heads", sparsity=0.5), "sized by keep_ratio .* not sparsity"),
                       (dict(kind="mlp", keep_ratio=0), "keep_ratio"), (dict(kind="rows"), "kind must be one of"),
                       (dict(kind="width"), "kind must be one of"),
                       (dict(kind="embedding", keep_ratio=1.5), "embedding pruning: keep_ratio"),
                       (dict(head_importance="taylor"), "head_importance must be one of"),
                       (dict(head_allocation="block"), "head_allocation must be one of"),
                       (dict(magnitude_scope="row"), "magnitude_scope must be one of")]:
        with pytest.raises(ValueError, match=match):
            PruneConfig(**bad)
    with pytest.raises(ValueError, match="sparsity must be in \\[0, 1\\)"):
        prune.magnitude_prune(torch.nn.Linear(2, 2), 1.0)


@pytest.mark.slow
def test_sparsity_sweep_includes_the_unpruned_model_and_the_fine_tuning_control(tiny_baseline):
    from compstudy import measure, results

    cfg = PruneConfig(calibration_batches=2, calibration_batch_size=4, calibration_seq_len=32)
    sweep = experiments.sparsity_sweep(tiny_baseline, [0.5], ["layer"], 1024, CORPORA, study="sweep-test",
                                 datasets=["tinyshakespeare:test"], notebook="t", device="cpu", base_config=cfg,
                                 eval_config=measure.EvalConfig(eval_max_tokens=512, repeats=1, device="cpu"))
    assert list(sweep["variant"]) == ["Base", "Mag0+ft", "Mag50", "Mag50+ft"]
    assert sweep.set_index("variant").loc["Base", "reached_sparsity"] == 0
    recorded = results.load("sweep-test")
    assert set(recorded["variant"]) == set(sweep["variant"]) and recorded["tokens_scored"].nunique() == 1
    with pytest.raises(ValueError, match="sparsity must be in \\[0, 1\\), got 1.5"):
        experiments.sparsity_sweep(tiny_baseline, [1.5], ["layer"], 0, CORPORA, study="x", datasets=[], eval_config=None)


@pytest.mark.parametrize("fixture", ["tiny_baseline", "tiny_llama"])
def test_wanda_prunes_the_lowest_weight_times_input_norm_within_each_output(fixture, request, batches):
    """Wanda (Sun et al. 2023): score |W_ij| * ||X_j||_2, the norms taken here with hooks of our own;
    each output keeps its highest-scoring weights, exactly round(sparsity * in_features) are zero."""
    import copy

    model = copy.deepcopy(request.getfixturevalue(fixture).model)
    layers = dict(surgery.block_linear_layers(model))
    norms, hooks = {}, []
    for name, layer in layers.items():
        hooks.append(layer.register_forward_pre_hook(
            lambda m, args, name=name: norms.__setitem__(name, norms.get(name, 0) + args[0].reshape(
                -1, args[0].shape[-1]).float().pow(2).sum(0))))
    with torch.no_grad():
        for b in batches:
            model(input_ids=b)
    for h in hooks:
        h.remove()
    before = {name: layer.weight.detach().clone() for name, layer in layers.items()}
    prune.wanda_prune(model, 0.5, batches)
    prune.make_permanent(model)
    for name, layer in layers.items():
        w0, w = before[name], layer.weight.detach()
        conv1d = type(layer).__name__ == "Conv1D"
        score = w0.abs() * (norms[name].sqrt()[:, None] if conv1d else norms[name].sqrt()[None, :])
        if conv1d:  # outputs are columns
            score, w, w0 = score.T, w.T, w0.T
        k = round(0.5 * w.shape[1])
        assert ((w == 0).sum(1) >= k).all(), name  # per output, at least k zeros (exactly, but for exact zeros)
        kept_min = torch.where(w != 0, score, torch.inf).min(1).values
        pruned_max = torch.where(w == 0, score, -torch.inf).max(1).values
        assert (pruned_max <= kept_min + 1e-6).all(), name  # nothing pruned scores above anything kept
        assert torch.equal(w[w != 0], w0[w != 0])  # kept weights untouched


def test_wanda_differs_from_magnitude_where_inputs_differ():
    """One layer, two inputs: feature 0 carries large activations, feature 1 none. Magnitude keeps
    the larger weight (on feature 1); Wanda keeps the one that matters (on feature 0)."""
    torch.manual_seed(0)

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = torch.nn.Module()
            self.transformer.h = torch.nn.ModuleList([torch.nn.Module()])
            self.transformer.h[0].fc = torch.nn.Linear(2, 1, bias=False)
            self.config = types.SimpleNamespace(model_type="gpt2")  # blocks where GPT-2 keeps them

        def forward(self, input_ids):
            return self.transformer.h[0].fc(input_ids.float())

    model = One()
    with torch.no_grad():
        model.transformer.h[0].fc.weight.copy_(torch.tensor([[0.1, 1.0]]))
    prune.wanda_prune(model, 0.5, [torch.tensor([[10.0, 0.0], [20.0, 0.0]])])
    assert (model.transformer.h[0].fc.weight != 0).tolist() == [[True, False]]
    magnitude = One()
    with torch.no_grad():
        magnitude.transformer.h[0].fc.weight.copy_(torch.tensor([[0.1, 1.0]]))
    prune.magnitude_prune(magnitude, 0.5)
    assert (magnitude.transformer.h[0].fc.weight != 0).tolist() == [[False, True]]


def test_wanda_in_the_sweep_and_the_naming_grammar(tiny_baseline):
    from compstudy import measure, pipeline

    cfg = PruneConfig(calibration_batches=2, calibration_batch_size=4, calibration_seq_len=32)
    sweep = experiments.sparsity_sweep(tiny_baseline, [0.5], ["layer"], 1024, CORPORA, study="wanda-sweep-test",
                                 datasets=["tinyshakespeare:test"], notebook="t", device="cpu", base_config=cfg,
                                 eval_config=measure.EvalConfig(eval_max_tokens=512, repeats=1, device="cpu"), wanda=True)
    assert list(sweep["variant"]) == ["Base", "Mag0+ft", "Mag50", "Mag50+ft", "Wanda50", "Wanda50+ft"]
    w = sweep.set_index("variant").loc["Wanda50"]
    assert w["scope"] == "wanda" and w["reached_sparsity"] == pytest.approx(0.5, abs=0.01)
    step = pipeline.Pipeline.from_name("Wanda50").steps[0]
    assert step.config.kind == "wanda" and step.config.sparsity == 0.5 and step.config.keep_ratio is None and step.config.name == "Wanda50"
    with pytest.raises(ValueError, match="wanda pruning: sparsity"):
        PruneConfig.unstructured("wanda", 1.0)
