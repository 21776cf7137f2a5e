"""The study's one training loop: baseline training, distillation and post-pruning fine-tuning
all run through `train`.

AdamW, linear warm-up then cosine decay to `min_lr_ratio * lr`, gradient clipping, bf16
autocast where the device supports it, seeded batch sampling (random windows of the token
stream, as nanoGPT), periodic validation loss, a tqdm progress bar, and a token budget.
The wall time and energy of the whole run are measured (codecarbon) and returned: they are the
cost of producing the trained artifact.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .energy import EnergyMeter, EnergyReading
from .models import resolve_device


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    Attributes:
        tokens: token budget (steps = tokens // (batch_size * seq_len), at least 1).
        batch_size: sequences per step.
        seq_len: tokens per sequence.
        lr: peak learning rate; min_lr_ratio: final lr / peak lr (cosine).
        warmup: fraction of steps with linear warm-up, in [0, 1).
        weight_decay: AdamW decoupled weight decay; grad_clip: max global grad norm (0 = off).
        bf16: "auto" (bf16 autocast if the device supports it), True or False.
        eval_every: steps between validation losses (the last step is always evaluated).
        eval_batches: batches of the validation stream per validation loss.
        seed: seeds initial batches and dropout.
        device: "auto", "cpu" or "cuda[:N]".
        country_iso_code: for codecarbon.

    Raises ValueError on construction for out-of-range values.
    """

    tokens: int = 200_000
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: float = 0.05
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bf16: bool | str = "auto"
    eval_every: int = 50
    eval_batches: int = 4
    seed: int = 0
    device: str = "auto"
    country_iso_code: str = "CAN"

    def __post_init__(self):
        for name in ("tokens", "batch_size", "seq_len", "eval_every", "eval_batches"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.bf16 not in ("auto", True, False):
            raise ValueError(f"bf16 must be 'auto', True or False, got {self.bf16!r}")

    @property
    def steps(self) -> int:
        return max(1, self.tokens // (self.batch_size * self.seq_len))


@dataclass
class TrainResult:
    """What `train` returns: the history (DataFrame with step, tokens, lr, train_loss, val_loss,
    elapsed_s, and batch_sha1: 12 hex of the SHA-1 of the step's token batch, which shows that two
    trainings with the same data, settings and seed saw the same batches), the cost of the run (`EnergyReading`: seconds, kWh, method), the final
    validation loss in nats/token, and the AdamW state at the end (`optimizer_state`, to resume
    training exactly: see `baseline.plateau_check`)."""

    history: "pandas.DataFrame"
    cost: EnergyReading
    final_val_loss: float
    optimizer_state: dict | None = None


def supports_bf16(device: str) -> bool:
    """bf16 autocast pays off: CUDA with bf16 support, or a CPU with AVX512-BF16 or AMX."""
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def lm_loss(model, batch: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy (nats/token) of a causal LM on `batch` [B, T]."""
    return model(input_ids=batch, labels=batch).loss


def _batch(ids: torch.Tensor, batch_size: int, seq_len: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(ids) - seq_len, (batch_size,), generator=gen)
    return torch.stack([ids[s: s + seq_len] for s in starts.tolist()])


def train(model, train_ids: torch.Tensor, val_ids: torch.Tensor, config: TrainConfig = TrainConfig(),
          loss_fn: Callable | None = None, desc: str = "train", progress: bool = True,
          optimizer_state: dict | None = None, meter=None) -> TrainResult:
    """Train `model` in place on the token stream `train_ids` [n] within the token budget.

    Args:
        model: causal LM (its trainable parameters are those with requires_grad).
        train_ids, val_ids: 1-D LongTensors of token ids; both need > seq_len tokens.
        config: `TrainConfig`.
        loss_fn: `loss_fn(model, batch [B, T]) -> scalar loss` to minimise; default `lm_loss`.
            Distillation passes its KD loss here; the validation loss is always `lm_loss`.
        desc: label of the progress bar.
        progress: show a progress bar; never in a study run by the runner (`COMPSTUDY_NO_PROGRESS`
            is set there), where a frozen bar would be stored in the executed notebook.
        optimizer_state: an AdamW state dict from an earlier `TrainResult` of the same model, to
            continue that training with its moment estimates (a fresh AdamW's first steps move
            every weight by about the learning rate, whatever the gradient's size).
        meter: an open meter to time the training with (`step.StepMeter` or `energy.EnergyMeter`,
            anything with `task(name)`); None opens one for the training alone.

    Returns `TrainResult`. The model is left in eval mode on the training device.

    Raises ValueError if a token stream is shorter than seq_len + 1.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    for name, ids in (("train_ids", train_ids), ("val_ids", val_ids)):
        if len(ids) <= config.seq_len:
            raise ValueError(f"{name} has {len(ids)} tokens, need more than seq_len={config.seq_len}")
    device = resolve_device(config.device)
    use_bf16 = supports_bf16(device) if config.bf16 == "auto" else bool(config.bf16)
    loss_fn = loss_fn or lm_loss
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    val_gen = torch.Generator().manual_seed(config.seed + 1)
    val_batches = [_batch(val_ids, config.batch_size, config.seq_len, val_gen) for _ in range(config.eval_batches)]

    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    steps = config.steps
    warm = int(config.warmup * steps)

    def lr_at(step: int) -> float:
        if step < warm:
            return config.lr * (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=use_bf16)

    def val_loss() -> float:
        model.eval()
        with torch.inference_mode(), autocast:
            losses = [float(lm_loss(model, b.to(device))) for b in val_batches]
        model.train()
        return sum(losses) / len(losses)

    history = []
    own = EnergyMeter(config.country_iso_code) if meter is None else contextlib.nullcontext(meter)
    with own as meter, meter.task(desc) as cost:
        t0 = time.perf_counter()
        show = progress and not os.environ.get("COMPSTUDY_NO_PROGRESS")
        bar = tqdm(range(steps), desc=desc, disable=not show, mininterval=2.0)
        for step in bar:
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step)
            batch = _batch(train_ids, config.batch_size, config.seq_len, gen).to(device)
            with autocast:
                loss = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            row = {"step": step + 1, "tokens": (step + 1) * config.batch_size * config.seq_len,
                   "lr": lr_at(step), "train_loss": loss.item(), "val_loss": float("nan"),
                   "batch_sha1": hashlib.sha1(batch.cpu().numpy().tobytes()).hexdigest()[:12]}
            if (step + 1) % config.eval_every == 0 or step + 1 == steps or step == 0:
                row["val_loss"] = val_loss()
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{row['val_loss']:.3f}")
            row["elapsed_s"] = time.perf_counter() - t0
            history.append(row)
    model.eval()
    df = pd.DataFrame(history)
    return TrainResult(history=df, cost=cost, final_val_loss=float(df["val_loss"].dropna().iloc[-1]),
                       optimizer_state=optimizer.state_dict())
