"""Issue 29: the low-bit quantization methods of the weight-bits dose-response (compstudy.lowbit).

For HQQ and GPTQ: the bits per weight on disk match the method's format (`nominal_bits_per_weight`:
the codes plus their scales); the weight error of quantize-then-dequantize falls as the bits rise,
on the fixed random weights of a seeded checkpoint; a cached variant reloads with identical logits;
the names round-trip through the naming grammar; GPTQ refuses a parent it cannot load, early."""
import pytest
import torch

from compstudy import baseline, lowbit, models, pipeline

import model_cases as fam_cases

LAYER = "transformer.h.0.mlp.c_fc"  # a [64 -> 128] layer of the seeded GPT-2 case


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A seeded random-init GPT-2 checkpoint as a user would bring it, as a study artifact."""
    folder = fam_cases.save("gpt2", tmp_path_factory.mktemp("ckpt") / "gpt2")
    return baseline.get_baseline(baseline.BaselineConfig(model=str(folder), device="cpu"), progress=False)


def _weight(model, name=LAYER) -> torch.Tensor:
    """The layer's weight as [out, in], dequantized where the layer is quantized."""
    m = dict(model.named_modules())[name]
    if type(m).__name__ == "HQQLinear":
        return m.dequantize().float()
    return m.weight.detach().t() if type(m).__name__ == "Conv1D" else m.weight.detach()


def _variants(base, method):
    return {bits: pipeline.build(base, pipeline.Pipeline.from_name(f"Base{method}{bits}"),
                                 ["wikitext-2:valid"], device="cpu", progress=False) for bits in lowbit.BITS}


@pytest.mark.parametrize("method", ["hqq", pytest.param("gptq", marks=pytest.mark.slow)])
def test_error_falls_as_bits_rise_and_bits_on_disk_match_the_format(checkpoint, method):
    reference = _weight(checkpoint.model)
    variants = _variants(checkpoint, method)
    errors = {bits: float((_weight(a.model) - reference).norm() / reference.norm()) for bits, a in variants.items()}
    assert errors[8] < errors[4] < errors[3] < errors[2], errors
    assert errors[8] < 0.01 and errors[2] > 0.1, errors  # 8 bits is nearly exact; 2 bits is not
    layers = [tuple(m.weight.shape) for n, m in checkpoint.model.named_modules()  # Conv1D: [in, out]
              if n.startswith("transformer.h.") and type(m).__name__ == "Conv1D"]
    for bits, art in variants.items():
        config = pipeline.Pipeline.from_name(f"Base{method}{bits}").steps[-1].config
        weights = sum(i * o for i, o in layers)
        nominal = sum(i * o * lowbit.nominal_bits_per_weight(config, i, o) for i, o in layers) / weights
        assert art.recipe["quantized_weights"] == weights
        # HQQ also saves a few scalars of metadata per layer (its bit width, shape, packing): < 0.1 bit per weight here
        assert nominal <= art.recipe["bits_per_weight"] <= nominal + 0.1, (bits, art.recipe["bits_per_weight"], nominal)
        assert art.recipe["size"]["weight_bytes"] < checkpoint.recipe["size"]["weight_bytes"]
        assert art.recipe["size"]["n_params"] == checkpoint.recipe["size"]["n_params"]  # logical weights, not packed codes
    sizes = [variants[b].recipe["size"]["weight_bytes"] for b in lowbit.BITS]
    assert sizes == sorted(sizes, reverse=True)  # fewer bits, fewer bytes


@pytest.mark.parametrize("name", ["Basehqq3", pytest.param("Basegptq4", marks=pytest.mark.slow)])
def test_a_cached_variant_reloads_with_identical_logits(checkpoint, name):
    batch = fam_cases.batches(1)[0]
    built = pipeline.build(checkpoint, pipeline.Pipeline.from_name(name), ["wikitext-2:valid"], device="cpu", progress=False)
    again = pipeline.build(checkpoint, pipeline.Pipeline.from_name(name), ["wikitext-2:valid"], device="cpu", progress=False)
    assert built.key == again.key
    with torch.no_grad():
        a, b = built.model(input_ids=batch).logits, again.model(input_ids=batch).logits
        base = checkpoint.model(input_ids=batch).logits
    assert torch.equal(a, b)
    assert not torch.equal(a, base)  # and it is quantized
    assert models.model_dtype(built.model) in ("float32+hqq3", "float32+gptq4-dequantized")
    assert models.compute_signature(built.model) != models.compute_signature(checkpoint.model)  # never timed as Base


@pytest.mark.parametrize("name", ["Basehqq8", "Basehqq2", "Basegptq3", "AH80+hqq4", "Distil+90+hqq3", "Mag50+ft+gptq2",
                                  "Depth50+KD+hqq4"])
def test_dose_response_names_round_trip_through_the_grammar(name):
    parsed = pipeline.Pipeline.from_name(name)
    assert parsed.name == name
    assert parsed.kinds()[-1].startswith("quantize:") and parsed.compresses


@pytest.mark.parametrize("bad", ["Basehqq5", "Basegptq1", "Basehqq16"])
def test_unsupported_bit_widths_are_refused_with_the_allowed_tokens(bad):
    with pytest.raises(ValueError, match="hqq"):
        pipeline.Pipeline.from_name(bad)
    with pytest.raises(ValueError, match=r"bits must be one of \(8, 4, 3, 2\)"):
        lowbit.HQQConfig(5)


@pytest.mark.slow
def test_gptq_refuses_a_head_pruned_parent_before_any_work(checkpoint):
    pruned = pipeline.build(checkpoint, pipeline.Pipeline.from_name("AH80"), ["wikitext-2:valid"], device="cpu",
                            progress=False)
    with pytest.raises(ValueError, match="quantize it with hqq"):
        lowbit.get_gptq(pruned, lowbit.GPTQConfig(4), ["wikitext-2:valid"], device="cpu")


@pytest.mark.parametrize("out_features, bits, packable", [(16, 3, False), (32, 3, True), (96, 3, True), (16, 4, True),
                                                          (16, 2, True), (4, 8, True), (6, 4, False), (8, 2, False)])
def test_gptq_packable_follows_gptqmodels_int32_packing(out_features, bits, packable):
    assert lowbit.gptq_packable(out_features, bits) is packable


@pytest.mark.slow
def test_gptq3_on_grouped_query_attention_keeps_the_unpackable_projections_in_float(tmp_path):
    """GPTQModel 7.6 cannot pack 3-bit zero points of a layer with 16 outputs (the key / value
    projections of 2 key-value heads x 8 dims) and ends the whole process from its worker thread
    (seen as a dead notebook kernel in benchmarks/families.py): those layers stay float32, are named
    in the recipe, and every other block layer is GPTQ's."""
    folder = fam_cases.save("llama-gqa", tmp_path / "llama-gqa")
    base = baseline.get_baseline(baseline.BaselineConfig(model=str(folder), device="cpu"), progress=False)
    art = pipeline.build(base, pipeline.Pipeline.from_name("Basegptq3"), ["wikitext-2:valid"], device="cpu",
                         progress=False)
    kept = art.recipe["kept_float"]
    assert kept and all(n.endswith(("k_proj", "v_proj")) for n in kept), kept
    before, after = dict(base.model.named_modules()), dict(art.model.named_modules())
    for name in kept:
        assert torch.equal(before[name].weight, after[name].weight)
    quantized = [n for n in lowbit._quantizable(base.model) if n not in kept]
    assert quantized and all(not torch.equal(before[n].weight, after[n].weight) for n in quantized)
