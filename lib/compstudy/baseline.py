"""The baseline every compressed variant is compared with, built or reused from the cache.

Offline (the default) the baseline is a small GPT-2- or Llama-architecture model trained from
scratch on real text with the study's training loop and a byte-level BPE tokenizer trained on
the same text. Online users set `model` to a hub name (e.g. `"gpt2"`, as the paper) or a local
checkpoint folder, and the baseline is loaded, not trained.

No notebook depends on another having run: each calls `get_baseline(config)`, which returns
the cached artifact when one with exactly these parameters exists and builds it otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import cache, data
from .models import Artifact, ModelShape, build_model, load_artifact, load_model, save_model
from .train import TrainConfig, save_trained, train


@dataclass(frozen=True)
class BaselineConfig:
    """Everything that defines the baseline (all fields are notebook parameters).

    Attributes:
        model: hub name or local folder of a pretrained causal LM; None = train from scratch.
        family, n_layer, n_head, n_embd, n_positions: shape of the model trained from scratch.
        tokenizer: hub name or folder of a pretrained tokenizer; None = train a byte-level BPE
            on `train_corpora` (ignored when `model` is set: the model's own tokenizer is used).
        vocab_size: BPE vocabulary size.
        train_corpora: corpus specs `name:split` to train on (offline: `wikitext-2:valid`, since
            WikiText-2's train split is not available; online: `wikitext-2:train`).
        val_fraction: last fraction of each training corpus held out for the validation loss.
        train_tokens, batch_size, seq_len, lr, seed: training budget and settings.
        device: "auto", "cpu" or "cuda[:N]".

    Raises ValueError on construction (shape, corpus specs, fractions).
    """

    model: str | None = None
    family: str = "gpt2"
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    n_positions: int = 256
    tokenizer: str | None = None
    vocab_size: int = 4096
    train_corpora: tuple = ("wikitext-2:valid", "tinyshakespeare:train")
    val_fraction: float = 0.05
    train_tokens: int = 300_000
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "train_corpora", tuple(self.train_corpora))
        if self.model is None:
            self.shape  # validates the shape
            if self.seq_len > self.n_positions:
                raise ValueError(f"seq_len ({self.seq_len}) must be <= n_positions ({self.n_positions})")
            if not self.train_corpora:
                raise ValueError("train_corpora must name at least one corpus, e.g. 'wikitext-2:valid'")
            for spec in self.train_corpora:
                data.parse_spec(spec)
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        TrainConfig(**self._train_kwargs())  # validates the training settings

    @classmethod
    def from_params(cls, params: dict) -> "BaselineConfig":
        """Pick this config's fields out of a notebook's parameters (other names ignored)."""
        return cache.from_params(cls, params)

    @property
    def shape(self) -> ModelShape:
        return ModelShape(self.family, self.n_layer, self.n_head, self.n_embd, self.n_positions)

    def _train_kwargs(self) -> dict:
        return dict(tokens=self.train_tokens, batch_size=self.batch_size, seq_len=self.seq_len,
                    lr=self.lr, seed=self.seed, device=self.device)

    @property
    def train_config(self) -> TrainConfig:
        return TrainConfig(**self._train_kwargs())


def describe(config: BaselineConfig, model=None) -> str:
    """One sentence naming the baseline's family and shape, printed first by notebook 00 so that
    every run says which model it is about. With `model` (the loaded baseline), the shape is read
    from its config and its parameters are counted."""
    if model is not None:
        c, n = model.config, sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        layers = getattr(c, "n_layer", None) or c.num_hidden_layers
        heads = getattr(c, "n_head", None) or c.num_attention_heads
        return (f"Baseline: {c.model_type} family, {layers} layers x {heads} heads x {c.hidden_size} dims, "
                f"vocabulary {c.vocab_size:,}, {n:,} parameters"
                + (f", loaded from {config.model}" if config.model else ", trained here") + ".")
    if config.model is not None:
        return f"Baseline: the pretrained model {config.model!r} (its family and shape are printed once it is loaded)."
    return (f"Baseline: {config.family} family, {config.n_layer} layers x {config.n_head} heads x {config.n_embd} dims, "
            f"context {config.n_positions} tokens, BPE vocabulary {config.vocab_size:,}, trained from scratch on "
            f"{', '.join(data.corpus_label(s) for s in config.train_corpora)} for {config.train_tokens:,} tokens.")


def training_streams(tokenizer, corpora, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Token streams (train, validation) from corpus specs: for each corpus the last
    `val_fraction` of its tokens goes to validation; corpora are joined with the EOS token."""
    eos = torch.tensor([tokenizer.eos_token_id], dtype=torch.long)
    train_parts, val_parts = [], []
    for spec in corpora:
        ids = data.encode(tokenizer, data.load_text(spec))
        cut = int(len(ids) * (1 - val_fraction))
        train_parts += [ids[:cut], eos]
        val_parts += [ids[cut:], eos]
    return torch.cat(train_parts), torch.cat(val_parts)


def get_tokenizer(config: BaselineConfig):
    """The baseline's tokenizer: pretrained (by name/path), or a BPE trained on the training
    corpora and cached under a key of (vocab_size, corpus fingerprints). Returns (tokenizer, key)."""
    if config.model is not None:
        return data.load_tokenizer(config.model), f"pretrained:{config.model}"
    if config.tokenizer is not None:
        return data.load_tokenizer(config.tokenizer), f"pretrained:{config.tokenizer}"
    texts = [data.load_text(spec) for spec in config.train_corpora]
    params = {"vocab_size": config.vocab_size, "corpora": list(config.train_corpora),
              "fingerprints": [data.fingerprint(t) for t in texts]}
    key = cache.key("tokenizer", params)
    if not cache.exists(key):
        with cache.build(key, params) as (folder, _):
            data.train_bpe_tokenizer("\n".join(texts), config.vocab_size, save_dir=folder)
    return data.load_tokenizer(cache.path_of(key)), key


def baseline_key(config: BaselineConfig) -> str:
    """Cache key of the baseline for `config` (builds the tokenizer if needed)."""
    _, tok_key = get_tokenizer(config)
    return cache.key("baseline", _baseline_params(config, tok_key))


def _baseline_params(config: BaselineConfig, tok_key: str) -> dict:
    params = cache.as_params(config)
    params.pop("device")
    params["tokenizer_key"] = tok_key
    params["fingerprints"] = [data.fingerprint(data.load_text(s)) for s in config.train_corpora]
    return params


def get_baseline(config: BaselineConfig, progress: bool = True) -> Artifact:
    """Build (train) or reuse the baseline described by `config`.

    Pretrained (`config.model` set): loaded with `from_pretrained` (hub name or folder), saved once
    into the cache so that later steps have a folder to load from; cost 0 (not trained here).
    From scratch: tokenizer then model are built, trained with `compstudy.train.train`, saved
    with their recipe (parameters, cost, final validation loss) and history; later calls with the
    same parameters load them.

    Raises CorpusUnavailable if a training corpus is missing (before any training).
    """
    from .measure import model_size, resolve_device

    device = resolve_device(config.device)
    if config.model is not None:
        # a local copy in the cache gives every later step (quantize, prune, distill) a folder
        key = cache.key("pretrained", {"model": str(config.model)})
        if not cache.exists(key):
            model = load_model(config.model, device="cpu")
            with cache.build(key, {"model": str(config.model)}) as (folder, recipe):
                save_model(model, data.load_tokenizer(config.model), folder)
                recipe["cost"] = {"seconds": 0.0, "energy_kwh": 0.0, "method": "pretrained (not trained here)"}
                recipe["size"] = model_size(model)
        return load_artifact(key, device)
    tokenizer, tok_key = get_tokenizer(config)
    params = _baseline_params(config, tok_key)
    key = cache.key("baseline", params)
    if not cache.exists(key):
        train_ids, val_ids = training_streams(tokenizer, config.train_corpora, config.val_fraction)
        model = build_model(config.shape, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, seed=config.seed)
        result = train(model, train_ids, val_ids, config.train_config, desc="baseline", progress=progress)
        with cache.build(key, params) as (folder, recipe):
            save_trained(folder, recipe, model, tokenizer, result)
            recipe["train_tokens"] = int(len(train_ids))
    return load_artifact(key, device)
