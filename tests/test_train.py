import pytest
import torch

from compstudy.models import ModelShape, build_model
from compstudy.train import TrainConfig, train


def test_training_lowers_validation_loss_and_records_cost():
    gen = torch.Generator().manual_seed(0)
    pattern = torch.randint(0, 40, (17,), generator=gen)
    ids = pattern.repeat(200)  # a learnable periodic stream
    model = build_model(ModelShape("gpt2", 1, 2, 32, 64), vocab_size=40)
    cfg = TrainConfig(tokens=16 * 32 * 60, batch_size=16, seq_len=32, lr=3e-3, eval_every=20, device="cpu")
    result = train(model, ids, ids, cfg, progress=False)
    h = result.history
    assert list(h.columns) == ["step", "tokens", "lr", "train_loss", "val_loss", "batch_sha1", "elapsed_s"]
    assert h["batch_sha1"].str.len().eq(12).all() and h["batch_sha1"].nunique() == len(h)  # a digest of each batch
    assert len(h) == cfg.steps == 60
    vals = h["val_loss"].dropna()
    assert vals.iloc[-1] < vals.iloc[0] - 1.0
    assert result.cost.seconds > 0 and result.cost.energy_kwh > 0
    assert not model.training


def test_train_config_validation():
    for bad, match in [(dict(tokens=0), "tokens"), (dict(lr=0), "lr"), (dict(warmup=1.0), "warmup"),
                       (dict(bf16="maybe"), "bf16"), (dict(batch_size=0), "batch_size")]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_too_short_stream_fails_early():
    model = build_model(ModelShape("gpt2", 1, 2, 32, 64), vocab_size=40)
    with pytest.raises(ValueError, match="train_ids has 10 tokens"):
        train(model, torch.zeros(10, dtype=torch.long), torch.zeros(100, dtype=torch.long),
              TrainConfig(seq_len=32), progress=False)
