import pytest

from compstudy import measure, models, quantize
from compstudy.quantize import QuantConfig

EVAL = measure.EvalConfig(eval_max_tokens=4096, repeats=1, eval_batch_size=8, device="cpu")
VARIANTS = ["8b", "4b", "4bfp4", "4bdq", "bf16", "dq8"]


def _ppl(art, spec="wikitext-2:test"):
    rec = measure.evaluate(art.model, art.tokenizer, [spec], EVAL, variant="x", study="t", size=art.recipe.get("size"))
    return rec[0]["perplexity"]


@pytest.fixture(scope="module")
def base_ppl(tiny_baseline):
    return _ppl(tiny_baseline)


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_loads_runs_is_smaller_and_fully_quantized(tiny_baseline, base_ppl, name):
    cfg = QuantConfig.from_name(name)
    art = quantize.get_quantized(tiny_baseline, cfg, device="cpu")
    assert art.recipe["size"]["weight_bytes"] < tiny_baseline.recipe["size"]["weight_bytes"]
    counts = quantize.check_quantized(art.model, cfg)
    if cfg.method in ("int8", "nf4", "fp4"):  # 2 blocks x (c_attn, c_proj, c_fc, mlp.c_proj)
        kind = "Linear8bitLt" if cfg.method == "int8" else "Linear4bit"
        assert counts == {kind: 8, "lm_head:Linear": 1}
    if cfg.method == "dynamic-int8":  # the 8 block layers and the LM head
        assert counts == {"DynamicQuantizedLinear": 8, "lm_head:DynamicQuantizedLinear": 1}
    ppl = _ppl(art)
    tolerance = 0.02 if cfg.method in ("int8", "bf16", "dynamic-int8") else 0.15
    assert abs(ppl / base_ppl - 1) < tolerance, (name, ppl, base_ppl)


def test_four_bit_results_do_not_drift_between_measurements(tiny_baseline):
    """Regression: bitsandbytes repacks 4-bit weights for AVX512-BF16 CPUs at the first forward,
    and a state_dict() afterwards changes later outputs; sizes are therefore taken at build time."""
    art = quantize.get_quantized(tiny_baseline, QuantConfig("nf4"), device="cpu")
    first, second = _ppl(art), _ppl(art)
    assert first == second


def test_llama_family_quantizes_every_block_layer(tiny_llama):
    art = quantize.get_quantized(tiny_llama, QuantConfig("nf4"), device="cpu")
    assert quantize.check_quantized(art.model, QuantConfig("nf4")) == {"Linear4bit": 14, "lm_head:Linear": 1}  # 2 x 7
    assert _ppl(art) > 1


def test_check_quantized_fails_loudly_on_a_float_model(tiny_baseline):
    with pytest.raises(RuntimeError, match="8 block layer\\(s\\) not quantized to Linear4bit"):
        quantize.check_quantized(tiny_baseline.model, QuantConfig("nf4"))


def test_bad_configs_fail_before_loading():
    with pytest.raises(ValueError, match="allowed: \\('int8', 'nf4', 'fp4', 'bf16', 'dynamic-int8'\\)"):
        QuantConfig("int4")
    with pytest.raises(ValueError, match="double_quant applies to 4-bit"):
        QuantConfig("int8", double_quant=True)
    with pytest.raises(ValueError, match="compute_dtype applies to 4-bit"):
        QuantConfig("bf16", compute_dtype="bfloat16")
    with pytest.raises(ValueError, match="llm_int8_threshold applies to method 'int8'"):
        QuantConfig("nf4", llm_int8_threshold=3.0)
    with pytest.raises(ValueError, match="unknown quantized variant '3b'; allowed"):
        QuantConfig.from_name("3b")
    with pytest.raises(ValueError, match="CPU only"):
        quantize.quantize_model("/nonexistent", QuantConfig("dynamic-int8"), device="cuda")


def test_names_round_trip():
    for name in VARIANTS + ["4bfp4dq"]:
        assert QuantConfig.from_name(name).suffix == name


def test_a_4bit_model_saved_after_the_packed_cpu_kernel_ran_reloads_with_its_own_weights(tmp_path):
    """bitsandbytes 0.50.2 repacks 4-bit weights at the first forward pass on an AVX512-BF16 CPU and, when
    it saves them, restores the weights' layout but not their scales' (absmax): the checkpoint computes
    with scrambled scales. The packing is simulated here with bitsandbytes' own function, so the check
    runs on any CPU; `models.save_model` unpacks first (models.unpack_cpu_4bit)."""
    import torch
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    from compstudy.models import ModelShape, build_model

    folder = models.save_model(build_model(ModelShape("gpt2", 1, 2, 64, 32), vocab_size=64), None, tmp_path / "base")
    q = quantize.quantize_model(folder, QuantConfig("nf4"))
    layers = {n: m for n, m in q.named_modules() if type(m).__name__ == "Linear4bit"}
    codes = {n: m.weight.data.clone() for n, m in layers.items()}
    scales = {n: m.weight.quant_state.absmax.clone() for n, m in layers.items()}
    for m in layers.values():  # what the kernel's first forward pass does (Linear4bit.forward)
        m.weight.data, m.weight.quant_state = _convert_weight_packed_for_cpu(m.weight.data, m.weight.quant_state)
    assert not any(torch.equal(m.weight.data, codes[n]) for n, m in layers.items())
    again = models.load_folder(models.save_model(q, None, tmp_path / "q"))
    for name, m in again.named_modules():
        if name in layers:
            assert torch.equal(m.weight.data, codes[name]), name
            # the scales keep the bf16 rounding the packed kernel computes with, in their own layout
            assert torch.equal(m.weight.quant_state.absmax, scales[name].to(torch.bfloat16).float()), name
    assert set(n for n, m in again.named_modules() if type(m).__name__ == "Linear4bit") == set(layers)


def test_shapes_the_packed_cpu_kernel_cannot_take_still_run():
    """bitsandbytes' AVX512-BF16 4-bit kernel needs in_features % 64 == 0 and out_features % 32 == 0;
    other layers go to its generic path (guard_cpu_4bit) instead of crashing."""
    import torch

    from compstudy.models import ModelShape, build_model

    model = build_model(ModelShape("gpt2", 1, 3, 48, 32), vocab_size=64)  # c_attn: 48 -> 144
    q = quantize.quantize_in_memory(model, QuantConfig("nf4"))
    four_bit = {n: m for n, m in q.named_modules() if type(m).__name__ == "Linear4bit"}
    assert "transformer.h.0.attn.c_attn" in four_bit
    # none of these shapes is left on the packed kernel, whether or not this CPU has it
    assert not any(m.support_avx512bf16_for_cpu for m in four_bit.values())
    # where bitsandbytes enables it (CPUs with AVX512-BF16; simulated here, so the check runs on any
    # CPU), the guard switches every layer it cannot take (here all four) to the generic path
    for m in four_bit.values():
        m.support_avx512bf16_for_cpu = True
    switched = models.guard_cpu_4bit(q)
    assert set(switched) == set(four_bit) and "transformer.h.0.attn.c_attn" in switched
    assert not any(m.support_avx512bf16_for_cpu for m in four_bit.values())
    with torch.no_grad():
        assert q(input_ids=torch.randint(0, 64, (2, 9))).logits.shape == (2, 9, 64)
