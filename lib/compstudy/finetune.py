"""The one fine-tuning step: plain further training on the next-token loss, after pruning
(`PruneConfig.finetune_tokens`, the `ft` of `AH80+ft`) and as the equal-training control
`Base+ft<N>` (the unpruned baseline trained on the same N tokens). Both call `finetune` with the
same settings (`FinetuneConfig`, the schema group `Finetuning`), the same corpora and the same
seed, so a fine-tuned variant and its control see the same tokens in the same batches
(`train.train` samples its batches from the seed; the history's `batch_sha1` column shows it).
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from .data import training_streams
from .models import Artifact, load_artifact, resolve_device
from .registry import Technique, register
from .schema import Group
from .step import cached_step, trained
from .train import TrainConfig, TrainResult, train


class FinetuneConfig(Group):
    """How every fine-tuning of the study trains (the schema group of notebooks 02-04): after
    pruning, and the equal-training controls Base+ft<N>. The budget is the caller's
    (`finetune_tokens`, `N`)."""

    finetune_lr: float = Field(5e-4, gt=0, description="peak learning rate of fine-tuning (cosine schedule)")
    finetune_batch_size: int = Field(16, ge=1, description="sequences per fine-tuning step")
    finetune_seq_len: int = Field(128, ge=2, description="tokens per fine-tuning sequence (<= the model's context)")


def train_config(tokens: int, config: FinetuneConfig, seed: int, device: str) -> TrainConfig:
    """The `TrainConfig` of a fine-tuning of `tokens` tokens."""
    return TrainConfig(tokens=int(tokens), lr=config.finetune_lr, batch_size=config.finetune_batch_size,
                       seq_len=config.finetune_seq_len, seed=seed, device=device)


def finetune(model, tokenizer, corpora, tokens: int, config: FinetuneConfig, *, seed: int = 0,
             val_fraction: float = 0.05, device: str = "auto", progress: bool = True, meter=None,
             desc: str = "fine-tune") -> TrainResult:
    """Train `model` in place on the training streams of `corpora` for `tokens` tokens with
    `config`'s settings (`train.train`; its masks, e.g. of magnitude pruning, stay attached, so
    pruned weights stay zero). Returns the `TrainResult` (history, cost)."""
    train_ids, val_ids = training_streams(tokenizer, corpora, val_fraction)
    return train(model, train_ids, val_ids, train_config(tokens, config, seed, resolve_device(device)), desc=desc,
                 progress=progress, meter=meter)


@dataclass(frozen=True)
class Finetune:
    """The `ft<N>` step of a pipeline (the equal-training control `Base+ft<N>`): `tokens` (>= 1)
    of fine-tuning with `settings`, batches drawn with `seed`.

    Raises ValueError on construction for a budget < 1."""

    tokens: int = 10_000
    settings: FinetuneConfig = FinetuneConfig()
    seed: int = 0

    def __post_init__(self):
        if int(self.tokens) < 1:
            raise ValueError(f"finetune tokens must be >= 1, got {self.tokens}")


def get_finetuned(parent: Artifact, step: Finetune, train_corpora, val_fraction: float = 0.05,
                  device: str = "auto", progress: bool = True) -> Artifact:
    """`parent` fine-tuned by `step` (`finetune`), built once and cached under a key of the parent's
    key and the step. The recipe's cost is the training's wall time (seconds) and energy (kWh)."""
    from .cache import as_params

    device = resolve_device(device)
    params = {"parent": parent.key, "tokens": int(step.tokens), **as_params(step.settings), "seed": step.seed,
              "corpora": list(train_corpora), "val_fraction": val_fraction}

    def build(meter):
        model = load_artifact(parent.key, device=device).model if parent.path else parent.model
        result = finetune(model, parent.tokenizer, train_corpora, step.tokens, step.settings, seed=step.seed,
                          val_fraction=val_fraction, device=device, progress=progress, meter=meter,
                          desc=f"fine-tune {step.tokens}")
        return trained(model, parent.tokenizer, result)

    return cached_step("finetune", params, build, device)


def tokens_text(n: int) -> str:
    """A token budget as names write it: 10000 -> `10k`, 1500000 -> `1500k`, 12345 -> `12345`."""
    n = int(n)
    return f"{n // 1000}k" if n % 1000 == 0 and n else str(n)


def _parse(m, defaults):
    tokens = int(m.group("n")) * (1000 if m.group("k") else 1)
    if defaults is None:
        return Finetune(tokens=tokens)
    return Finetune(tokens=tokens, settings=defaults.finetune, seed=defaults.seed)


register(Technique(
    key="finetune", kind="finetune", pattern=r"ft(?P<n>\d+)(?P<k>k?)", config_type=Finetune, parse=_parse,
    token=lambda c, first: f"ft{tokens_text(c.tokens)}",
    build=lambda parent, c, ctx: get_finetuned(parent, c, ctx.corpora, device=ctx.device, progress=ctx.progress),
    needs_gradients=lambda c: True, training_tokens=lambda c: int(c.tokens), compresses=lambda c: False,
    description="train further on labels for N tokens: the equal-training control Base+ft<N>"))
