import pytest
import torch

from compstudy import distill, pipeline, quantize, reference, surgery
from compstudy.distill import DistillConfig
from compstudy.finetune import FinetuneConfig
from compstudy.pipeline import Pipeline, StepDefaults
from compstudy.prune import PruneConfig

CORPORA = ["tinyshakespeare:train"]
SMALL = dict(batch_size=8, seq_len=32)
DEFAULTS = StepDefaults(
    distill=DistillConfig(tokens=2048, n_layer=1, **SMALL),
    kd=DistillConfig(tokens=2048, **SMALL),
    prune=PruneConfig(calibration_batches=2, calibration_batch_size=4, calibration_seq_len=32, finetune_tokens=1024),
    finetune=FinetuneConfig(finetune_batch_size=8, finetune_seq_len=32))


def test_the_paper_grid_has_the_papers_names():
    grid = pipeline.paper_grid()
    assert len(grid) == 18 and grid[:3] == ["Base", "Base8b", "Base4b"]
    paper = set(reference.load_paper().query("model == 'gpt2'")["variant"])
    assert set(grid) == paper


@pytest.mark.parametrize("name", pipeline.paper_grid() + ["Depth50+KD", "MLP25+KD", "Depth50+75+MLP50+ft",
                                                          "GMag50+4b", "Mag30+ft+8b", "AH90+KD+4bdq", "Basedq8",
                                                          "Emb66+KD", "Emb75+90+MLP50+KD+4b"])
def test_names_round_trip(name):
    assert Pipeline.from_name(name, DEFAULTS).name == name


def test_steps_are_in_order():
    p = Pipeline.from_name("Distil+90+4b", DEFAULTS)
    assert [s.kind for s in p.steps] == ["distill", "prune", "quantize"]
    assert p.steps[1].config.kind == "heads" and p.steps[1].config.keep_ratio == 0.9
    assert p.steps[2].config.method == "nf4"


def test_invalid_specs_fail_before_running():
    with pytest.raises(ValueError, match="first token 'Foo'"):
        Pipeline.from_name("Foo+4b")
    with pytest.raises(ValueError, match="token 'zz' is unknown"):
        Pipeline.from_name("Distil+zz")
    with pytest.raises(ValueError, match="step 2 \\(distill\\) follows quantization"):
        Pipeline.from_name("Base4b+Distil")
    with pytest.raises(ValueError, match="follows quantization"):
        Pipeline.from_name("AH90+8b+KD")
    with pytest.raises(ValueError, match="'ft' must follow a pruning step"):
        Pipeline.from_name("Distil+ft")
    with pytest.raises(ValueError, match="step kind 'train' unknown"):
        pipeline.Step("train", DistillConfig())


def test_each_prefix_is_cached_and_reused(tiny_baseline, monkeypatch):
    full = pipeline.build(tiny_baseline, Pipeline.from_name("Distil+75+4b", DEFAULTS), CORPORA, device="cpu",
                          progress=False)
    assert [c["step"] for c in full.recipe["steps"]] == ["distill", "prune", "quantize"]
    assert full.cost["seconds"] == pytest.approx(sum(c["seconds"] for c in full.recipe["steps"]))
    assert quantize.check_quantized(full.model, quantize.QuantConfig("nf4"))["Linear4bit"] == 4  # 1 block x 4

    def no_training(*args, **kwargs):
        raise AssertionError("a cached prefix was rebuilt")

    monkeypatch.setattr(distill, "distill", no_training)
    prefix = pipeline.build(tiny_baseline, Pipeline.from_name("Distil+75", DEFAULTS), CORPORA, device="cpu", defaults=DEFAULTS)
    assert prefix.recipe["steps"][0]["seconds"] == full.recipe["steps"][0]["seconds"]
    again = pipeline.build(tiny_baseline, Pipeline.from_name("Distil+75+8b", DEFAULTS), CORPORA, device="cpu", defaults=DEFAULTS)
    assert again.model(input_ids=torch.randint(0, 500, (1, 8))).logits.shape == (1, 8, 512)


@pytest.mark.slow
def test_minitron_and_target_shape_students_have_the_target_shape(tiny_baseline):
    depth_kd = pipeline.build(tiny_baseline, Pipeline.from_name("Depth50+KD", DEFAULTS), CORPORA, device="cpu",
                              progress=False)
    assert depth_kd.model.config.n_layer == 1 and depth_kd.history is not None
    assert [c["step"] for c in depth_kd.recipe["steps"]] == ["prune", "kd"]
    target = pipeline.build(tiny_baseline, Pipeline.from_name("Depth50+50+MLP50+ft", DEFAULTS), CORPORA,
                            device="cpu", progress=False)
    assert surgery.head_counts(target.model) == [1]
    assert target.model.transformer.h[0].mlp.c_fc.weight.shape == (64, 128)  # n_inner 256 -> 128
    scratch = pipeline.scratch_like(depth_kd, 2048, CORPORA, device="cpu", progress=False, **SMALL)
    assert scratch.model.config.n_layer == 1 and scratch.recipe["size"]["n_params"] == depth_kd.recipe["size"]["n_params"]


@pytest.mark.slow
def test_minitron_embedding_and_head_width_students_keep_their_shape(tiny_baseline):
    """Width pruning over all of Minitron's axes: embedding channels, then heads and MLP neurons,
    then distillation from the unpruned teacher; the student, its from-scratch control and its
    quantized form all have that shape."""
    kd = pipeline.build(tiny_baseline, Pipeline.from_name("Emb75+50+MLP50+KD", DEFAULTS), CORPORA, device="cpu",
                        progress=False)
    assert [c["step"] for c in kd.recipe["steps"]] == ["prune", "prune", "prune", "kd"]
    assert kd.model.config.n_embd == 48 and surgery.head_counts(kd.model) == [1, 1]
    assert kd.model.transformer.h[0].mlp.c_fc.weight.shape == (48, 128) and kd.history is not None
    scratch = pipeline.scratch_like(kd, 2048, CORPORA, device="cpu", progress=False, **SMALL)
    assert scratch.recipe["size"]["n_params"] == kd.recipe["size"]["n_params"]
    assert surgery.shape_record(scratch.model) == surgery.shape_record(kd.model)
    quantized = pipeline.build(tiny_baseline, Pipeline.from_name("Emb75+50+MLP50+KD+8b", DEFAULTS), CORPORA,
                               device="cpu", progress=False)
    assert quantize.check_quantized(quantized.model, quantize.QuantConfig("int8"))["Linear8bitLt"] == 8
    with pytest.raises(ValueError, match="distil before pruning"):
        pipeline.build(tiny_baseline, Pipeline.from_name("Emb75+Distil", DEFAULTS), CORPORA, device="cpu",
                       progress=False)


def test_head_pruned_models_quantize_in_memory(tiny_baseline):
    for suffix, kind in (("8b", "Linear8bitLt"), ("4b", "Linear4bit")):
        art = pipeline.build(tiny_baseline, Pipeline.from_name(f"AH75+{suffix}", DEFAULTS), CORPORA, device="cpu", defaults=DEFAULTS)
        assert quantize.check_quantized(art.model, quantize.QuantConfig.from_name(suffix))[kind] == 8
        fp = pipeline.build(tiny_baseline, Pipeline.from_name("AH75", DEFAULTS), CORPORA, device="cpu", defaults=DEFAULTS)
        ids = torch.randint(0, 500, (1, 16))
        with torch.no_grad():
            a, b = art.model(input_ids=ids).logits, fp.model(input_ids=ids).logits
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


@pytest.mark.slow
def test_llama_goes_through_hybrid_pipelines(tiny_llama):
    minitron = pipeline.build(tiny_llama, Pipeline.from_name("MLP50+KD", DEFAULTS), CORPORA, device="cpu",
                              progress=False)
    assert minitron.model.config.intermediate_size == 96  # 192 -> 96
    narrow = pipeline.build(tiny_llama, Pipeline.from_name("Emb50+KD", DEFAULTS), CORPORA, device="cpu",
                            progress=False)
    assert narrow.model.config.hidden_size == 32 and narrow.model.model.layers[0].self_attn.q_proj.weight.shape == (64, 32)
    assert not (narrow.path / "pruned_shape.json").exists()  # Llama's config (explicit head_dim) describes it
    grid = pipeline.build(tiny_llama, Pipeline.from_name("Distil+75+4b", DEFAULTS), CORPORA, device="cpu",
                          progress=False)
    assert quantize.check_quantized(grid.model, quantize.QuantConfig("nf4"))["Linear4bit"] == 7  # 1 block x 7
    with torch.no_grad():
        assert grid.model(input_ids=torch.randint(0, 500, (1, 8))).logits.shape == (1, 8, 512)
