import pytest
import torch

from compstudy.baseline import BaselineConfig, get_baseline
from compstudy.models import ModelShape, build_model, load_model, save_model, shape_of


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_build_both_families(family):
    model = build_model(ModelShape(family, n_layer=2, n_head=2, n_embd=32, n_positions=64), vocab_size=100)
    logits = model(input_ids=torch.randint(0, 100, (3, 10))).logits
    assert logits.shape == (3, 10, 100)
    assert shape_of(model)["n_layer"] == 2 and shape_of(model)["family"] == family


def test_shape_validation():
    with pytest.raises(ValueError, match="family must be one of"):
        ModelShape("bert")
    with pytest.raises(ValueError, match="divisible by n_head"):
        ModelShape(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="n_layer must be >= 1"):
        ModelShape(n_layer=0)


def test_pretrained_loading_path_on_a_local_gpt2_checkpoint(tiny_baseline, tmp_path):
    """The gpt2-paper config loads `gpt2` with from_pretrained; offline we test the same code path
    on a GPT-2-shaped checkpoint saved locally."""
    folder = save_model(tiny_baseline.model, tiny_baseline.tokenizer, tmp_path / "gpt2-local")
    assert (folder / "model.safetensors").exists()
    base = get_baseline(BaselineConfig(model=str(folder), device="cpu"))
    ids = torch.randint(0, 500, (1, 20))
    with torch.no_grad():
        assert torch.equal(base.model(input_ids=ids).logits, tiny_baseline.model(input_ids=ids).logits)
    assert base.cost["seconds"] == 0.0 and base.key.startswith("pretrained-") and base.path.exists()
    from compstudy import quantize
    q = quantize.get_quantized(base, quantize.QuantConfig("nf4"), device="cpu")  # later steps need a folder
    assert quantize.check_quantized(q.model, quantize.QuantConfig("nf4"))["Linear4bit"] == 8
    assert type(load_model(folder)).__name__ == "GPT2LMHeadModel"
