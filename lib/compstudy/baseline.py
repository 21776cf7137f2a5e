"""The baseline every compressed variant is compared with, built or reused from the cache.

Offline (the default) the baseline is a small GPT-2- or Llama-architecture model trained from
scratch on real text with the study's training loop and a byte-level BPE tokenizer trained on
the same text. Online users set `model` to a hub name (e.g. `"gpt2"`, as the paper) or a local
checkpoint folder, and the baseline is loaded, not trained.

No notebook depends on another having run: each calls `get_baseline(config)`, which returns
the cached artifact when one with exactly these parameters exists and builds it otherwise.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

import torch

from . import cache, data, runs
from .paths import repo_root, results_dir
from .measure import sliding_window_nll
from .models import Artifact, ModelShape, build_model, context_length, load_model, resolve_device
from .schema import DEVICE, Group
from .step import Built, PendingArtifact, PlanPending, cached_folder, cached_step, is_planning, planned_and_missing, trained
from .train import TrainConfig, train


class BaselineConfig(Group):
    """The baseline model, pretrained or trained from scratch (the schema group of notebooks 00-04).

    The names are the YAML's and the command line's: pretrained (`model`), or trained from scratch
    with the shape and recipe below. Raises ValueError (pydantic's ValidationError) on construction
    for out-of-range values, a shape that does not divide, `seq_len` > `n_positions`, or a corpus spec
    that does not parse."""

    model: str | None = Field(None, description="hub name or local folder of a pretrained causal LM "
                              "(e.g. 'gpt2'); None trains a model from scratch with the shape below")
    family: Literal["gpt2", "llama"] = Field("gpt2", description="architecture of the model trained from scratch")
    n_layer: int = Field(2, ge=1, description="transformer blocks")
    n_head: int = Field(8, ge=1, description="attention heads per block (n_embd must be divisible by it)")
    n_embd: int = Field(128, ge=1, description="hidden size of the residual stream")
    n_positions: int = Field(256, ge=2, description="the model's context in tokens")
    tokenizer: str | None = Field(None, description="hub name or folder of a pretrained tokenizer; None trains "
                                  "a byte-level BPE on train_corpora")
    vocab_size: int = Field(2048, ge=260, description="BPE vocabulary size (256 byte symbols, the end-of-text token and "
                            "at least 3 merges: data.train_bpe_tokenizer needs 260)")
    dropout: float | None = Field(0.0, ge=0, lt=1, description="dropout probability; None keeps the family's "
                                  "default (GPT-2 0.1, Llama 0.0)")
    train_corpora: list[str] = Field(["wikitext-2:valid", "tinyshakespeare:train"], min_length=1,
                                     description="corpus specs name:split (or a folder) to train, distil, "
                                     "calibrate and fine-tune on")
    val_fraction: float = Field(0.05, gt=0, lt=0.5, description="last fraction of each training corpus held out for "
                                "the validation loss")
    train_tokens: int = Field(2_000_000, ge=1, description="training budget of the baseline, in tokens")
    batch_size: int = Field(16, ge=1, description="training batch size, in sequences")
    seq_len: int = Field(128, ge=2, description="training sequence length, in tokens (<= n_positions)")
    lr: float = Field(0.004, gt=0, description="peak learning rate of the baseline")
    seed: int = Field(0, ge=0, description="random seed of every training run and calibration draw")
    device: str = DEVICE

    @model_validator(mode="after")
    def _consistent(self):
        if self.model is None:
            self.shape  # validates the shape
            if self.seq_len > self.n_positions:
                raise ValueError(f"seq_len ({self.seq_len}) must be <= n_positions ({self.n_positions})")
            for spec in self.train_corpora:
                data.parse_spec(spec)
        TrainConfig(**self._train_kwargs())  # validates the training settings
        return self

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


def facts(config: BaselineConfig, art: Artifact) -> dict:
    """What the paper's methods say about this run's baseline, read from the loaded model and its
    config (never from the defaults): family (`config.model_type`), layers, attention and key-value
    heads, hidden size, parameters (tied weights once), vocabulary, context, dtype, whether it was
    trained here (corpora, tokens, tokenizer) or loaded (from where), and the device."""
    c, model = art.model.config, art.model
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    heads = getattr(c, "n_head", None) or getattr(c, "num_attention_heads", None)
    out = {
        "family": getattr(c, "model_type", "unknown"),
        "architecture": type(model).__name__,
        "n_layer": getattr(c, "n_layer", None) or getattr(c, "num_hidden_layers", None),
        "n_head": heads,
        "n_kv_head": getattr(c, "num_key_value_heads", None) or heads,
        "n_embd": getattr(c, "n_embd", None) or getattr(c, "hidden_size", None),
        "n_params": int(n_params), "vocab_size": int(c.vocab_size), "context": int(context_length(model)),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": resolve_device(config.device),
        "trained_here": config.model is None,
        "model": config.model,
    }
    if config.model is None:
        out.update(train_corpora=[data.corpus_label(s) for s in config.train_corpora],
                   train_tokens=int(config.train_tokens),
                   tokenizer="a byte-level BPE trained on the same text" if config.tokenizer is None
                   else f"the pretrained tokenizer {config.tokenizer}")
    return out


def save_facts(study: str, config: BaselineConfig, art: Artifact) -> dict:
    """Write `facts(config, art)` with the run's id to `results/<study>/baseline.json` (notebook
    00), for the paper's methods; returns the facts."""
    record = {**facts(config, art), "run_id": runs.current()[0]}
    runs.save_file(study, "baseline.json", json.dumps(record, indent=2))
    return record


def load_facts(study: str, run_id: str | None = None) -> dict | None:
    """The baseline facts notebook 00 saved for `study` (`save_facts`; run `run_id`'s own copy when
    given), or None if there are none."""
    path = runs.run_file(study, "baseline.json", run_id) if run_id else results_dir(study) / "baseline.json"
    return json.loads(path.read_text()) if path.exists() else None


def tokens_per_parameter(facts_: dict | None) -> float:
    """Training tokens per parameter of a baseline trained here (`facts`); NaN for a pretrained one
    (its training is not known here) or no facts."""
    if not facts_ or not facts_.get("train_tokens") or not facts_.get("n_params"):
        return math.nan
    return facts_["train_tokens"] / facts_["n_params"]


def cost_sentence(art: Artifact) -> str:
    """How much producing the baseline cost, as a sentence (seconds, kWh and how it was obtained)."""
    cost = art.cost
    method = cost.get("method", "none")
    if method.startswith("pretrained") or (not cost.get("seconds") and method in ("none", "")):
        return "Training cost: none here (a pretrained model, not trained by this study)."
    kwh = cost.get("energy_kwh", float("nan"))
    energy = f"{kwh * 3.6e6:,.0f} J ({kwh:.2g} kWh, {method})" if kwh == kwh else f"energy {method}"
    return f"Training cost: {cost.get('seconds', 0.0):,.0f} s of wall time and {energy}."


def get_tokenizer(config: BaselineConfig):
    """The baseline's tokenizer: pretrained (by name/path), or a BPE trained on the training
    corpora and cached under a key of (vocab_size, corpus fingerprints). Returns (tokenizer, key)."""
    if config.model is not None:  # keyed by the folder's content, not its path (a changed checkpoint is a new key)
        return data.load_tokenizer(config.model), cache.key("pretrained-tokenizer", cache.source_fingerprint(config.model))
    if config.tokenizer is not None:
        return data.load_tokenizer(config.tokenizer), cache.key("pretrained-tokenizer",
                                                                 cache.source_fingerprint(config.tokenizer))
    texts = [data.load_text(spec) for spec in config.train_corpora]
    params = {"vocab_size": config.vocab_size, "corpora": list(config.train_corpora),
              "fingerprints": [data.fingerprint(t) for t in texts]}

    def build(meter):
        train = lambda folder: data.train_bpe_tokenizer("\n".join(texts), config.vocab_size, save_dir=folder)  # noqa: E731
        return Built(files={"": train})  # the tokenizer's files fill the artifact's folder

    folder = cached_folder("tokenizer", params, build)
    if planned_and_missing(folder.name):  # compstudy.plan: its key is all the baseline's key needs
        return PendingArtifact(folder.name, "tokenizer"), folder.name
    return data.load_tokenizer(folder), folder.name


def baseline_key(config: BaselineConfig) -> str:
    """Cache key of the baseline for `config` (builds the tokenizer if needed)."""
    _, tok_key = get_tokenizer(config)
    return cache.key("baseline", _baseline_params(config, tok_key))


def _baseline_params(config: BaselineConfig, tok_key: str) -> dict:
    params = cache.as_params(config)
    params.pop("device")
    params["tokenizer_key"] = tok_key
    params["fingerprints"] = [data.fingerprint(data.load_text(s)) for s in config.train_corpora]
    params["saves_optimizer"] = True  # baselines built before optimizer.pt was saved are rebuilt
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
    device = resolve_device(config.device)
    if config.model is not None:
        # a local copy in the cache gives every later step (quantize, prune, distill) a folder
        # keyed by the checkpoint's content (every file's SHA-256), so new weights in the same folder are measured anew;
        # loaded in float32, the dtype the study measures in (bf16 / fp16 checkpoints are upcast)
        return cached_step("pretrained", {"model": cache.source_fingerprint(config.model), "dtype": "float32"},
                           lambda meter: Built(
                               load_model(config.model, dtype="float32", device="cpu"), data.load_tokenizer(config.model),
                               cost={"seconds": 0.0, "energy_kwh": 0.0, "method": "pretrained (not trained here)"}),
                           device)
    tokenizer, tok_key = get_tokenizer(config)
    params = _baseline_params(config, tok_key)

    def build(meter):
        train_ids, val_ids = data.training_streams(tokenizer, config.train_corpora, config.val_fraction)
        model = build_model(config.shape, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, seed=config.seed, dropout=config.dropout)
        result = train(model, train_ids, val_ids, config.train_config, desc="baseline", progress=progress, meter=meter)
        return trained(model, tokenizer, result, save_optimizer=True, train_tokens=int(len(train_ids)))

    return cached_step("baseline", params, build, device)


# --------------------------------------------------------------------------------------------
# Is the baseline trained to its plateau?


@dataclass(frozen=True)
class HeldOut:
    """A model's loss on a held-out token stream: `nll_nats` (nats per token), `perplexity`,
    `bits_per_byte` (tokenizer-independent: total NLL in bits over the UTF-8 bytes of the text
    the tokens decode to), `tokens` scored and `n_bytes`."""

    nll_nats: float
    perplexity: float
    bits_per_byte: float
    tokens: int
    n_bytes: int


def heldout(model, tokenizer, ids: torch.Tensor, context: int | None = None, batch_size: int = 8,
            device: str = "cpu") -> HeldOut:
    """Score the held-out stream `ids` [n_tokens] with the study's sliding-window protocol
    (`measure.sliding_window_nll`, stride = context - 1: each token once). `context` defaults to
    the model's longest context. Returns `HeldOut`."""
    context = min(context or 10**9, context_length(model))
    model.eval()
    nll, n = sliding_window_nll(model, ids, context, context - 1, batch_size, device)
    n_bytes = len(tokenizer.decode(ids.tolist(), skip_special_tokens=True).encode("utf-8"))
    return HeldOut(nll / n, math.exp(nll / n), nll / math.log(2) / n_bytes, n, n_bytes)


@dataclass(frozen=True)
class PlateauCheck:
    """Result of `plateau_check`.

    Attributes:
        before, after: `HeldOut` of the baseline and of its continuation.
        fraction: the continuation's share of the baseline's token budget.
        continuation_tokens: tokens the continuation trained on; continuation_lr: its constant
            learning rate (the schedule's final one); seconds: its wall time.
        improvement_pct: 100 * (1 - perplexity after / perplexity before); > 0 means the
            continuation still lowered held-out perplexity.
        threshold_pct: the largest improvement that counts as converged.
        resumed_optimizer: True when the continuation resumed the baseline's own AdamW state
            (saved with every baseline trained here); False for an older baseline without it
            (a fresh AdamW with 5 % warm-up instead).
    """

    before: HeldOut
    after: HeldOut
    fraction: float
    continuation_tokens: int
    continuation_lr: float
    seconds: float
    improvement_pct: float
    threshold_pct: float
    resumed_optimizer: bool = True

    @property
    def converged(self) -> bool:
        """True when the continuation improved held-out perplexity by at most `threshold_pct`."""
        return self.improvement_pct <= self.threshold_pct

    def sentence(self) -> str:
        """The check as one sentence (markdown; bold when the baseline is not converged)."""
        text = (f"Plateau check: {self.continuation_tokens:,} more training tokens ({100 * self.fraction:g} % of the budget) at the final "
                f"learning rate ({self.continuation_lr:.2g}) change held-out perplexity from {self.before.perplexity:.2f} "
                f"to {self.after.perplexity:.2f} ({-self.improvement_pct:+.2f} %; bits per byte "
                f"{self.before.bits_per_byte:.4f} -> {self.after.bits_per_byte:.4f}).")
        if not self.resumed_optimizer:
            text += " (This baseline was saved without its optimizer state: the continuation used a fresh AdamW with warm-up.)"
        if self.converged:
            return text + f" An improvement of at most {self.threshold_pct:g} % counts as converged: the baseline is at its plateau."
        return text + (f" **The baseline is not converged: a further {self.improvement_pct:.2f} % improvement exceeds "
                       f"the {self.threshold_pct:g} % threshold, so part of what follows measures an undertrained model.**")


def plateau_check(config: BaselineConfig, fraction: float = 0.25, threshold_pct: float = 1.0,
                  progress: bool = True) -> PlateauCheck | None:
    """Continue the baseline's training for `fraction` of its token budget at its final learning
    rate (`lr * TrainConfig.min_lr_ratio`, constant), with the baseline's own AdamW state
    (`optimizer.pt`), and measure held-out perplexity again, on the validation tail of the
    training corpora (never seen in training). The baseline itself is not changed: a copy is
    trained. Cached with the baseline's key.

    Returns `PlateauCheck` (`converged` when the improvement is <= `threshold_pct` %), or None
    for a pretrained baseline (`config.model` set: not trained here).

    Raises ValueError for `fraction` outside (0, 1] or a negative `threshold_pct`.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if threshold_pct < 0:
        raise ValueError(f"threshold_pct must be >= 0, got {threshold_pct}")
    if config.model is not None:
        return None
    art = get_baseline(config, progress=progress)
    train_cfg = config.train_config
    final_lr = train_cfg.lr * train_cfg.min_lr_ratio
    tokens = max(1, int(round(fraction * config.train_tokens)))
    state_path = cache.path_of(art.key) / "optimizer.pt"
    if planned_and_missing(art.key):  # the key says whether the baseline saved its optimizer
        raise PlanPending(art.key)
    params = {"baseline": art.key, "fraction": fraction, "tokens": tokens, "lr": final_lr,
              "resumes_optimizer": state_path.exists()}

    def build(meter):
        device = resolve_device(config.device)
        train_ids, val_ids = data.training_streams(art.tokenizer, config.train_corpora, config.val_fraction)
        model = copy.deepcopy(art.model).to(device)
        state = torch.load(state_path, map_location=device) if state_path.exists() else None
        before = heldout(model, art.tokenizer, val_ids, device=device)
        t0 = time.perf_counter()
        # the same optimizer continues (its AdamW moments); without a saved state, a fresh AdamW
        # warms up over 5 % of the steps, as the baseline's own schedule did
        cont = TrainConfig(**{**config._train_kwargs(), "tokens": tokens, "lr": final_lr, "min_lr_ratio": 1.0,
                              "warmup": 0.0 if state is not None else 0.05, "seed": config.seed + 1,
                              "eval_every": 10**9})
        train(model, train_ids, val_ids, cont, desc="plateau check", progress=progress, optimizer_state=state,
              meter=meter)
        seconds = time.perf_counter() - t0
        after = heldout(model, art.tokenizer, val_ids, device=device)
        result = json.dumps({"before": before.__dict__, "after": after.__dict__, "seconds": seconds}, indent=2)
        return Built(files={"plateau.json": lambda path: path.write_text(result)})

    folder = cached_folder("plateau", params, build)
    if is_planning():  # compstudy.plan: recorded, nothing read
        return None
    stored = json.loads((folder / "plateau.json").read_text())
    before, after = HeldOut(**stored["before"]), HeldOut(**stored["after"])
    return PlateauCheck(before, after, fraction, tokens, final_lr, stored["seconds"],
                        100 * (1 - after.perplexity / before.perplexity), threshold_pct,
                        params["resumes_optimizer"])


def save_plateau(check: PlateauCheck | None, study: str) -> None:
    """Write the plateau check to `results/<study>/plateau.json` (notebook 00), so that notebook
    05 can repeat a failed check next to the ranking without training anything. None (pretrained
    baseline) removes a stale file."""
    path = results_dir(study) / "plateau.json"
    if check is None:
        path.unlink(missing_ok=True)
        runs.run_file(study, "plateau.json").unlink(missing_ok=True)
        return
    out = {k: v for k, v in check.__dict__.items() if k not in ("before", "after")}
    out.update(before=check.before.__dict__, after=check.after.__dict__)
    runs.save_file(study, "plateau.json", json.dumps(out, indent=2))


def load_plateau(study: str, run_id: str | None = None) -> PlateauCheck | None:
    """The plateau check notebook 00 saved for `study` (for run `run_id` when given: its own copy,
    `runs.run_file`), or None if there is none."""
    path = runs.run_file(study, "plateau.json", run_id) if run_id else results_dir(study) / "plateau.json"
    if not path.exists():
        return None
    d = {k: v for k, v in json.loads(path.read_text()).items() if k != "run_id"}
    d["before"], d["after"] = HeldOut(**d["before"]), HeldOut(**d["after"])
    return PlateauCheck(**d)


def candidate_recipes(path=None) -> "pandas.DataFrame":
    """The candidate baseline recipes measured by `benchmarks/baseline_recipes.py` (held-out bits
    per byte against training wall time, and each one's plateau check), as a DataFrame whose
    `attrs["provenance"]` names the file, its commit and CPU. Empty when the file is missing.
    """
    import pandas as pd

    path = path or repo_root() / "benchmarks" / "results" / "baseline_recipes.json"
    if not path.exists():
        return pd.DataFrame()
    d = json.loads(path.read_text())
    common = {k: v for k, v in d.get("common", {}).items() if k in _RECIPE_FIELDS}
    df = pd.DataFrame([{**{"dropout": None, **common}, **c} for c in d["candidates"]])
    df.attrs["provenance"] = (f"{path.relative_to(repo_root()) if path.is_relative_to(repo_root()) else path}: "
                              f"measured at commit {d.get('git_commit', '?')} on {d.get('cpu', '?')}, "
                              f"{d.get('cpu_threads', '?')} threads")
    return df


_RECIPE_FIELDS = ("family", "vocab_size", "n_layer", "n_head", "n_embd", "train_tokens", "lr", "dropout",
                  "batch_size", "seq_len")


def describe_recipes(recipes: "pandas.DataFrame", config: BaselineConfig) -> list[str]:
    """Sentences computed from `candidate_recipes()`: which candidates passed their plateau check,
    the best held-out bits per byte among them and its training time, which did not, and which
    candidate (if any) is `config`, this run's baseline. Empty for an empty table."""
    if recipes.empty:
        return []
    ok = recipes[recipes["converged"]].sort_values("val_bits_per_byte")
    lines = [f"{len(ok)} of {len(recipes)} candidates pass the plateau check"
             + (f": {', '.join(ok['name'])}." if len(ok) else ".")]
    if len(ok):
        best = ok.iloc[0]
        lines.append(f"Lowest held-out bits per byte among them: {best['name']} ({best['val_bits_per_byte']:.4f} "
                     f"bits/byte, {best['train_seconds']:.0f} s of training).")
        behind = ok[ok["val_bits_per_byte"] > 1.01 * best["val_bits_per_byte"]]
        if len(behind):
            lines.append("Passing is not enough: " + ", ".join(
                f"{r.name} passes but is {r.val_bits_per_byte - best['val_bits_per_byte']:.4f} bits/byte "
                f"({100 * (r.val_bits_per_byte / best['val_bits_per_byte'] - 1):.1f} %) above the lowest"
                for r in behind.itertuples()) + ". The check asks only whether more training at the final learning "
                "rate still helps; a schedule that ended early, its learning rate already annealed, can pass it.")
    slow = recipes[~recipes["converged"]].sort_values("val_bits_per_byte")
    if len(slow):
        lines.append("Not at their plateau: " + ", ".join(
            f"{r.name} ({r.plateau_improvement_pct:+.1f} % further improvement, {r.val_bits_per_byte:.4f} bits/byte)"
            for r in slow.itertuples()) + ".")
    mine = {f: getattr(config, f) for f in _RECIPE_FIELDS}
    same = [r["name"] for _, r in recipes.iterrows()
            if all((None if f not in r or r[f] != r[f] else r[f]) == v for f, v in mine.items())]
    if not same or config.model is not None:
        return lines + ["This run's baseline is none of the candidates: the benchmark did not measure its recipe."]
    row = recipes[recipes["name"] == same[0]].iloc[0]
    text = f"This run's baseline is candidate {same[0]}"
    if len(ok):
        gap = row["val_bits_per_byte"] - ok.iloc[0]["val_bits_per_byte"]
        text += (f": {'it passes' if row['converged'] else 'it does NOT pass'} the plateau check, "
                 f"{gap:.4f} bits/byte above the lowest ({100 * gap / ok.iloc[0]['val_bits_per_byte']:.2f} %)")
    return lines + [text + "."]
