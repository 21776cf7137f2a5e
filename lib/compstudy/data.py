"""Corpora by name, and tokenizers.

A corpus is asked for with a spec `"name:split"`:

| name            | splits              | offline source (under the data dir)          | online source |
|-----------------|---------------------|----------------------------------------------|---------------|
| wikitext-2      | train, valid, test  | `wikitext-2/{split}.txt` (word-level v1)     | `load_dataset("wikitext", "wikitext-2-v1")` |
| tinyshakespeare | train, test         | `tinyshakespeare/input.txt`, first 90 % / last 10 % (by characters) | none |
| c4              | validation          | `c4/validation.txt`                          | `load_dataset("allenai/c4", "en", split="validation", streaming=True)`, first `C4_DOCUMENTS` documents |
| lambada         | test                | `lambada/test.txt`                           | `load_dataset("EleutherAI/lambada_openai", "en", split="test")` |
| a folder path   | any `<split>.txt`, else train/test = 90 %/10 % of all `*.txt` | the folder | none |

There is no silent fallback: a split that cannot be found raises `CorpusUnavailable` naming
the files looked for and how to provide them.
"""
from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from . import paths

TRAIN_FRACTION = 0.9  # tinyshakespeare and plain folders: first 90 % train, last 10 % test
C4_DOCUMENTS = 2000   # c4 validation: the first N English documents (the paper does not say how many)

KNOWN_CORPORA = {
    "wikitext-2": ("train", "valid", "test"),
    "tinyshakespeare": ("train", "test"),
    "c4": ("validation",),
    "lambada": ("test",),
}


class CorpusUnavailable(FileNotFoundError):
    """A corpus split is not on disk and cannot be downloaded here."""


@dataclass(frozen=True)
class CorpusSpec:
    """A parsed `"name:split"` spec."""

    name: str
    split: str

    @property
    def label(self) -> str:
        return f"{self.name}:{self.split}"


def parse_spec(spec: str) -> CorpusSpec:
    """Parse `"name:split"` (e.g. `"wikitext-2:test"`).

    Raises ValueError naming the known corpora and their splits if the spec is malformed, the
    corpus is unknown (and not an existing folder), or the split is not one of the corpus's splits.
    """
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(
            f"corpus spec {spec!r} must look like 'name:split'; known: "
            + ", ".join(f"{n}:{{{','.join(s)}}}" for n, s in KNOWN_CORPORA.items())
            + ", or '<folder>:<split>'"
        )
    name, split = spec.split(":")
    if name in KNOWN_CORPORA:
        if split not in KNOWN_CORPORA[name]:
            raise ValueError(f"corpus {name!r} has splits {KNOWN_CORPORA[name]}, not {split!r}")
    elif not Path(name).expanduser().is_dir():
        raise ValueError(
            f"unknown corpus {name!r}: use one of {sorted(KNOWN_CORPORA)} or a folder of .txt files"
        )
    return CorpusSpec(name, split)


def is_offline() -> bool:
    """True if the Hugging Face offline switches are set or huggingface.co cannot be reached (3 s)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "COMPSTUDY_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes"):
            return True
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return False
    except OSError:
        return True


def load_text(spec: str | CorpusSpec, data_dir: str | Path | None = None) -> str:
    """Return the text of one corpus split as a single string.

    Args:
        spec: `"name:split"`, see the module table.
        data_dir: folder with the corpora; default `compstudy.paths.data_dir()`.

    Raises:
        ValueError: malformed spec (see `parse_spec`).
        CorpusUnavailable: the split is not on disk and cannot be downloaded (offline).
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    root = Path(data_dir) if data_dir else paths.data_dir()
    if spec.name == "wikitext-2":
        return _wikitext2(root, spec.split)
    if spec.name == "tinyshakespeare":
        path = root / "tinyshakespeare" / "input.txt"
        if not path.exists():
            raise CorpusUnavailable(
                f"tinyshakespeare not found: looked for {path}. Copy input.txt (char-rnn's "
                f"tinyshakespeare) there, or set COMPSTUDY_DATA_DIR to a folder that has it."
            )
        return _split_fraction(path.read_text(encoding="utf-8"), spec.split)
    if spec.name == "c4":
        return _online_or_file(root / "c4" / "validation.txt", "c4", _download_c4)
    if spec.name == "lambada":
        return _online_or_file(root / "lambada" / "test.txt", "lambada", _download_lambada)
    return _folder(Path(spec.name).expanduser(), spec.split)


def _wikitext2(root: Path, split: str) -> str:
    path = root / "wikitext-2" / f"{split}.txt"
    if path.exists():
        return path.read_text(encoding="utf-8")
    if is_offline():
        present = sorted(p.name for p in (root / "wikitext-2").glob("*.txt")) if (root / "wikitext-2").is_dir() else []
        raise CorpusUnavailable(
            f"wikitext-2 split {split!r} not found: looked for {path} (present: {present or 'none'}) "
            f"and the hub is unreachable. Offline, train on a split that is present "
            f"(the offline configs use 'wikitext-2:valid' for training), or put {split}.txt there."
        )
    import datasets

    hub_split = {"valid": "validation"}.get(split, split)
    rows = datasets.load_dataset("wikitext", "wikitext-2-v1", split=hub_split)
    return "".join(rows["text"])


def _split_fraction(text: str, split: str) -> str:
    cut = int(len(text) * TRAIN_FRACTION)
    return text[:cut] if split == "train" else text[cut:]


def _folder(folder: Path, split: str) -> str:
    named = folder / f"{split}.txt"
    if named.exists():
        return named.read_text(encoding="utf-8")
    files = sorted(folder.glob("*.txt"))
    if not files or split not in ("train", "test"):
        raise CorpusUnavailable(
            f"folder corpus {folder}: no {named.name}, and split {split!r} can only be made "
            f"(train = first 90 %, test = last 10 %) from *.txt files; found {[f.name for f in files]}"
        )
    text = "\n".join(f.read_text(encoding="utf-8") for f in files)
    return _split_fraction(text, split)


def _online_or_file(path: Path, name: str, download) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8")
    if is_offline():
        raise CorpusUnavailable(
            f"{name} is online-only and the hub is unreachable: looked for {path}. Run once with "
            f"network access (the study downloads it with datasets.load_dataset and you can save "
            f"it with compstudy.data.save_text), or put the text at {path}."
        )
    return download()


def _download_c4() -> str:
    import datasets

    stream = datasets.load_dataset("allenai/c4", "en", split="validation", streaming=True)
    docs = [row["text"] for _, row in zip(range(C4_DOCUMENTS), stream)]
    return "\n\n".join(docs)


def _download_lambada() -> str:
    import datasets

    rows = datasets.load_dataset("EleutherAI/lambada_openai", "en", split="test")
    return "\n\n".join(rows["text"])


def save_text(spec: str, path: str | Path, data_dir: str | Path | None = None) -> Path:
    """Write a corpus split to a text file (e.g. to keep c4 for later offline runs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(load_text(spec, data_dir), encoding="utf-8")
    return path


def fingerprint(text: str) -> str:
    """Short SHA-256 of a text: part of every cache key built from it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Tokenizers


def train_bpe_tokenizer(text: str, vocab_size: int = 8192, save_dir: str | Path | None = None):
    """Train a byte-level BPE tokenizer (GPT-2's scheme) with `tokenizers` on `text`.

    Returns a `transformers.PreTrainedTokenizerFast` with `<|endoftext|>` as BOS/EOS/PAD; saved to
    `save_dir` (reloadable with `load_tokenizer`) when given.

    Raises ValueError if `vocab_size` < 260 (256 byte symbols plus specials).
    """
    if int(vocab_size) < 260:
        raise ValueError(f"vocab_size must be >= 260 (256 bytes + specials), got {vocab_size}")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # train on lines so that very long texts are handled in chunks
    tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>", unk_token=None,
    )
    fast.model_max_length = 10**9  # the model, not the tokenizer, limits the context
    if save_dir is not None:
        fast.save_pretrained(str(save_dir))
    return fast


def load_tokenizer(name_or_path: str | Path):
    """Load a tokenizer by hub name (online) or local folder with `AutoTokenizer`."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(name_or_path))
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    tok.model_max_length = 10**9
    return tok


def encode(tokenizer, text: str):
    """Token ids of `text` as a 1-D LongTensor, shape [n_tokens] (no special tokens added)."""
    import torch

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)
