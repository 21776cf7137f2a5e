"""Corpora by name, where they come from, how they are verified, and tokenizers.

A corpus is asked for with a spec `"name:split"`:

| name            | splits              | file (under the data dir)                    | online source |
|-----------------|---------------------|----------------------------------------------|---------------|
| wikitext-2      | train, valid, test  | `wikitext-2/{split}.txt` (word-level v1)     | the raw files of pytorch/examples (`SOURCES`) |
| tinyshakespeare | train, test         | `tinyshakespeare/input.txt`, first 90 % / last 10 % (by characters) | char-rnn's `input.txt` (`SOURCES`) |
| c4              | validation          | `c4/validation.txt`                          | `load_dataset("allenai/c4", "en", split="validation", streaming=True)`, first `C4_DOCUMENTS` documents |
| lambada         | test                | `lambada/test.txt`                           | `load_dataset("EleutherAI/lambada_openai", "en", split="test")` |
| a folder path   | any `<split>.txt`, else train/test = 90 %/10 % of all `*.txt` | the folder | none |

**Verified text.** Every file of `SOURCES` has a recorded checksum of the exact bytes the study
uses: a SHA-256, or for WikiText-2's train split (not available offline, so its SHA-256 could not be
computed here) the git blob id that its source repository records for it. A file is verified
whenever it is read (`ensure_file`, memoized by size and modification time); a mismatch raises
`CorpusChecksumError` naming the file, both checksums and what to do. A missing file is downloaded
from its URL once, into the data dir, verified before it is moved into place, and reused after
that; `COMPSTUDY_CORPUS_MIRROR=<url>` fetches `<url>/<corpus>/<file>` instead, and
`COMPSTUDY_OFFLINE=1` forbids any download. No source reachable: `CorpusUnavailable`, within
seconds, with the file, its checksum and where to put it by hand. c4 and LAMBADA come through
`datasets` and are saved with `save_text`; they have no reference checksum (the study never had
their text offline), so `CHECKSUMS_FILE` records theirs when they are first saved and later reads
are verified against it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from . import paths

TRAIN_FRACTION = 0.9  # tinyshakespeare and plain folders: first 90 % train, last 10 % test
C4_DOCUMENTS = 2000   # c4 validation: the first N English documents (the paper does not say how many)
DOWNLOAD_TIMEOUT_S = 10  # one file's download gives up after this long without an answer
DOWNLOAD_BUDGET_S = 15   # ... and all downloads of one check together (`download_budget`)
CHECKSUMS_FILE = "CHECKSUMS.json"  # per corpus folder: SHA-256 recorded on first save (c4, lambada)

KNOWN_CORPORA = {
    "wikitext-2": ("train", "valid", "test"),
    "tinyshakespeare": ("train", "test"),
    "c4": ("validation",),
    "lambada": ("test",),
}


@dataclass(frozen=True)
class SourceFile:
    """One corpus file: where it lives under the data dir, where it comes from, and its checksum.

    Attributes:
        corpus, filename: `<data dir>/<corpus>/<filename>`.
        url: where it is downloaded from.
        size: its length in bytes (None where not known offline).
        sha256: SHA-256 of its exact bytes, or None where it could not be computed offline.
        git_blob: the git blob id (SHA-1 of "blob <size>\\0" + bytes) its source repository
            records for it: the reference when `sha256` is None.
    """

    corpus: str
    filename: str
    url: str
    size: int | None
    sha256: str | None = None
    git_blob: str | None = None

    @property
    def checksum(self) -> str:
        return f"sha256:{self.sha256}" if self.sha256 else f"git-blob-sha1:{self.git_blob}"


_WIKITEXT = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2"
# Checksums computed from the files themselves (identical in ../shared/data and in the source
# repositories at char-rnn 6f9487a, pytorch/examples 77f55b9); train.txt's blob id is that
# repository's record of it (its 10.8 MB were not available to compute a SHA-256 here).
SOURCES: dict[tuple[str, str], SourceFile] = {(s.corpus, s.filename): s for s in (
    SourceFile("tinyshakespeare", "input.txt",
               "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
               1115394, sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    SourceFile("wikitext-2", "valid.txt", f"{_WIKITEXT}/valid.txt", 1121681,
               sha256="f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
    SourceFile("wikitext-2", "test.txt", f"{_WIKITEXT}/test.txt", 1256449,
               sha256="d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"),
    SourceFile("wikitext-2", "train.txt", f"{_WIKITEXT}/train.txt", None,
               git_blob="2d84b35af79e411d73ea7cae83c73964c6ac83b4"),
)}


class CorpusUnavailable(FileNotFoundError):
    """A corpus split is not on disk and cannot be downloaded here."""


class CorpusChecksumError(ValueError):
    """A corpus file on disk is not the text the study expects (altered, truncated, other release)."""


@dataclass(frozen=True)
class CorpusSpec:
    """A parsed `"name:split"` spec."""

    name: str
    split: str

    @property
    def label(self) -> str:
        """How tables and figures name the split: `name:split`, a folder by its own name
        (`mynovel:test`, not the absolute path)."""
        name = self.name if self.name in KNOWN_CORPORA else Path(self.name).expanduser().name
        return f"{name}:{self.split}"


def corpus_label(spec: str) -> str:
    """The label of a corpus spec in tables and figures (`CorpusSpec.label`): a folder corpus
    is named by its folder's name, never by its absolute path."""
    return parse_spec(spec).label


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


# --------------------------------------------------------------------------------------------
# Verified corpus files: checksums, downloads


def file_checksums(path: str | Path) -> dict:
    """{"sha256": ..., "git_blob": ..., "size": ...} of a file's exact bytes."""
    blob = Path(path).read_bytes()
    git = hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()
    return {"sha256": hashlib.sha256(blob).hexdigest(), "git_blob": git, "size": len(blob)}


def source_files(spec: str | CorpusSpec) -> list[SourceFile]:
    """The registered files a corpus spec reads (empty for c4, lambada and folders)."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.name == "wikitext-2":
        return [SOURCES[("wikitext-2", f"{spec.split}.txt")]]
    if spec.name == "tinyshakespeare":
        return [SOURCES[("tinyshakespeare", "input.txt")]]
    return []


def _instructions(source: SourceFile, path: Path) -> str:
    size = f"{source.size:,} bytes, " if source.size else ""
    return (f"Put the exact file at {path} by hand ({size}{source.checksum}; from {source.url}), "
            f"copy it from a checkout of the study's shared data (`python -m compstudy data --from DIR`), or "
            f"set COMPSTUDY_DATA_DIR to a folder that has {source.corpus}/{source.filename}.")


_VERIFIED: dict = {}


def verify_file(path: str | Path, source: SourceFile) -> dict:
    """Check that `path` holds exactly `source`'s bytes; returns its checksums (memoized by path,
    size and modification time).

    Raises CorpusChecksumError naming the file, the expected and the found checksum, and what to do.
    """
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo in _VERIFIED:
        return _VERIFIED[memo]
    found = file_checksums(path)
    ok = (found["sha256"] == source.sha256) if source.sha256 else (found["git_blob"] == source.git_blob)
    if not ok:
        got = f"sha256:{found['sha256']}" if source.sha256 else f"git-blob-sha1:{found['git_blob']}"
        raise CorpusChecksumError(
            f"{path} is not the text the study expects: {got} ({found['size']:,} bytes), expected "
            f"{source.checksum}{f' ({source.size:,} bytes)' if source.size else ''}. It was altered or truncated, "
            f"or is another release. "
            f"Delete it to download it again, or: " + _instructions(source, path))
    _VERIFIED[memo] = found
    return found


def _download_url(source: SourceFile) -> str:
    mirror = os.environ.get("COMPSTUDY_CORPUS_MIRROR")
    return f"{mirror.rstrip('/')}/{source.corpus}/{source.filename}" if mirror else source.url


def download(url: str, dest: str | Path, source: SourceFile, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download `url` to `dest`, verified against `source` before it is moved into place (an
    interrupted or wrong download never leaves a file behind). `file://` URLs work too.

    Raises CorpusUnavailable if the URL cannot be read within `timeout` seconds, and
    CorpusChecksumError if what arrived is not the expected text.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remaining = _DEADLINE[0] - time.monotonic() if _DEADLINE else None
    if remaining is not None and remaining <= 0:
        raise CorpusUnavailable(f"{dest} is missing and was not fetched from {url}: the {_DEADLINE[1]:.0f} s allowed for "
                                f"downloads are spent (an earlier source did not answer). " + _instructions(source, dest))
    timeout = min(timeout, remaining) if remaining is not None else timeout
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}-", dir=dest.parent)
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CorpusUnavailable(f"{dest} is missing and {url} could not be read ({exc}). "
                                    + _instructions(source, dest)) from None
        try:
            verify_file(tmp, source)
        except CorpusChecksumError:  # name the source and the destination, not the temporary file
            found = file_checksums(tmp)
            raise CorpusChecksumError(
                f"{url} is not the text the study expects for {dest}: sha256:{found['sha256']} ({found['size']:,} "
                f"bytes), expected {source.checksum}{f' ({source.size:,} bytes)' if source.size else ''}. It was "
                f"altered or truncated, or is another release; nothing was copied. " + _instructions(source, dest)) from None
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


_DEADLINE: list = []  # [monotonic deadline, budget seconds] while a `download_budget` is open


@contextlib.contextmanager
def download_budget(seconds: float = DOWNLOAD_BUDGET_S):
    """Within the block, all downloads together get `seconds`: a mirror that accepts connections but
    never answers costs at most that long, however many files are missing (each download's timeout
    is cut to what is left; once it is spent, the rest fail at once with CorpusUnavailable)."""
    outer = list(_DEADLINE)
    _DEADLINE[:] = [time.monotonic() + seconds, seconds]
    try:
        yield
    finally:
        _DEADLINE[:] = outer


def ensure_file(source: SourceFile, data_dir: str | Path | None = None) -> Path:
    """The verified path of a registered corpus file: checked if present, else downloaded once
    from its URL (or `COMPSTUDY_CORPUS_MIRROR`) into the data dir.

    Raises CorpusChecksumError (a file on disk that is not the expected text) or
    CorpusUnavailable (missing, and no download allowed or possible), each naming the file, its
    expected checksum and where to put it by hand.
    """
    root = Path(data_dir) if data_dir else paths.data_dir()
    path = root / source.corpus / source.filename
    if path.exists():
        verify_file(path, source)
        return path
    if os.environ.get("COMPSTUDY_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise CorpusUnavailable(f"{path} is missing and downloads are off (COMPSTUDY_OFFLINE). "
                                + _instructions(source, path))
    return download(_download_url(source), path, source)


def copy_from(folder: str | Path, data_dir: str | Path | None = None) -> list[Path]:
    """Copy every registered file that `folder` has (as `<corpus>/<file>`) and the data dir lacks,
    verified like a download; returns the copied paths. Files already present are verified where
    they are read."""
    root, copied = Path(data_dir) if data_dir else paths.data_dir(), []
    for source in SOURCES.values():
        src, dest = Path(folder) / source.corpus / source.filename, root / source.corpus / source.filename
        if src.exists() and not dest.exists():
            copied.append(download(src.resolve().as_uri(), dest, source))
    return copied


def ensure_available(spec: str) -> list[Path]:
    """Make sure a corpus spec can be read, without tokenizing anything: registered files are
    verified or downloaded (`ensure_file`), a folder must hold a non-empty UTF-8 text for the
    split, c4 / lambada need their saved file or the hub. Returns the files it will read.

    Raises ValueError (bad spec, undecodable folder text), CorpusUnavailable, CorpusChecksumError.
    """
    parsed = parse_spec(spec)
    if parsed.name in KNOWN_CORPORA:
        if parsed.name in ("c4", "lambada"):
            path = paths.data_dir() / parsed.name / ("validation.txt" if parsed.name == "c4" else "test.txt")
            if not path.exists() and is_offline():
                raise CorpusUnavailable(f"{parsed.name} is online-only and the hub is unreachable: looked for {path}. "
                                        f"Run once with network access, or put the text at {path}.")
            return [path] if path.exists() else []
        return [ensure_file(s) for s in source_files(parsed)]
    text = _folder(Path(parsed.name).expanduser(), parsed.split)
    if not text.strip():
        raise ValueError(f"folder corpus {parsed.name}: split {parsed.split!r} is empty")
    return sorted(Path(parsed.name).expanduser().glob("*.txt"))


_LOADED: dict[str, str] = {}


def loaded_checksums() -> dict[str, str]:
    """label -> SHA-256 of the text of every corpus split this process has read (`load_text`):
    what each results row records as the corpora behind it."""
    return dict(_LOADED)


def load_text(spec: str | CorpusSpec, data_dir: str | Path | None = None) -> str:
    """Return the text of one corpus split as a single string (verified, see the module docstring).

    Args:
        spec: `"name:split"`, see the module table.
        data_dir: folder with the corpora; default `compstudy.paths.data_dir()`.

    Raises:
        ValueError: malformed spec (see `parse_spec`), or a folder text that is not UTF-8.
        CorpusUnavailable: the split is not on disk and cannot be downloaded.
        CorpusChecksumError: the file on disk is not the expected text.
    """
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    root = Path(data_dir) if data_dir else paths.data_dir()
    if spec.name == "wikitext-2":
        text = ensure_file(SOURCES[("wikitext-2", f"{spec.split}.txt")], root).read_text(encoding="utf-8")
    elif spec.name == "tinyshakespeare":
        path = ensure_file(SOURCES[("tinyshakespeare", "input.txt")], root)
        text = _split_fraction(path.read_text(encoding="utf-8"), spec.split)
    elif spec.name == "c4":
        text = _online_or_file(root / "c4" / "validation.txt", "c4", _download_c4)
    elif spec.name == "lambada":
        text = _online_or_file(root / "lambada" / "test.txt", "lambada", _download_lambada)
    else:
        text = _folder(Path(spec.name).expanduser(), spec.split)
    _LOADED[spec.label] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return text


def _split_fraction(text: str, split: str) -> str:
    cut = int(len(text) * TRAIN_FRACTION)
    return text[:cut] if split == "train" else text[cut:]


def _read_utf8(path: Path) -> str:
    """A text file as UTF-8 with its byte-order mark, if any, removed (`utf-8-sig`); line endings
    (CR, CRLF) become `\\n`. Raises ValueError naming the file when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); convert it, e.g. "
                         f"`iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8.txt`") from None


HELD_OUT_FILES = ("test", "valid", "validation")  # a folder's files of these names are held-out splits as they are


def folder_split_rule(folder: Path, split: str) -> str:
    """How a folder corpus's split is made (recorded in every row, column `split_rule`): a named
    held-out file (`test.txt`, `valid.txt`), or the first 90 % / last 10 % of the folder's other
    text. The training text never includes a held-out file or a derived test split."""
    if (folder / f"{split}.txt").exists() and split in HELD_OUT_FILES:
        return f"file {split}.txt"
    if split == "train":
        return ("every .txt but the held-out files" if (folder / "test.txt").exists()
                else "first 90 % of every .txt but the held-out files")
    return "last 10 % of every .txt but the held-out files"


def _folder(folder: Path, split: str) -> str:
    """A folder corpus's split, disjoint from the training text by construction, whatever files the
    folder holds: `test.txt` / `valid.txt` / `validation.txt` are held out and used as they are; the
    other `*.txt` files (a `train.txt` among them) form the rest R. Without a `test.txt`, `:test` is
    the last 10 % of R and `:train` its first 90 %; with one, `:train` is all of R."""
    named = folder / f"{split}.txt"
    if split in HELD_OUT_FILES and named.exists():
        return _read_utf8(named)
    rest = sorted(f for f in folder.glob("*.txt") if f.stem not in HELD_OUT_FILES)
    if split not in ("train", "test") or not rest:
        raise CorpusUnavailable(
            f"folder corpus {folder}: no {named.name}, and split {split!r} can only be made "
            f"(train = first 90 %, test = last 10 % of the folder's other .txt files) from *.txt files; found "
            f"{sorted(f.name for f in folder.glob('*.txt'))}"
        )
    text = "\n".join(_read_utf8(f) for f in rest)
    if split == "train" and (folder / "test.txt").exists():
        return text
    return _split_fraction(text, split)


def split_rule(spec: str) -> str:
    """How `spec`'s text is made (rows' `split_rule`): the file, or the fraction of which file."""
    parsed = parse_spec(spec)
    if parsed.name == "tinyshakespeare":
        return f"{'first 90 %' if parsed.split == 'train' else 'last 10 %'} of input.txt"
    if parsed.name in KNOWN_CORPORA:
        return f"file {parsed.name}/{parsed.split}"
    return folder_split_rule(Path(parsed.name).expanduser(), parsed.split)


def label_collisions(specs) -> dict[str, list[str]]:
    """{label: specs} for labels that two different corpora would share (two folders of the same
    name, e.g. `a/mine:test` and `b/mine:test`): their rows could not be told apart."""
    by_label: dict[str, set[str]] = {}
    for spec in specs:
        parsed = parse_spec(spec)
        where = parsed.name if parsed.name in KNOWN_CORPORA else str(Path(parsed.name).expanduser().resolve())
        by_label.setdefault(parsed.label, set()).add(f"{where}:{parsed.split}")
    return {label: sorted(s) for label, s in by_label.items() if len(s) > 1}


def _recorded_checksums(folder: Path) -> dict:
    f = folder / CHECKSUMS_FILE
    return json.loads(f.read_text()) if f.exists() else {}


def _online_or_file(path: Path, name: str, download) -> str:
    if path.exists():
        recorded = _recorded_checksums(path.parent).get(path.name)
        if recorded and file_checksums(path)["sha256"] != recorded:
            raise CorpusChecksumError(f"{path} changed since it was saved: its SHA-256 is not the {recorded} recorded "
                                      f"in {path.parent / CHECKSUMS_FILE}; delete both to fetch it again")
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
    """Write a corpus split to a text file (e.g. to keep c4 for later offline runs) and record its
    SHA-256 in the folder's `CHECKSUMS_FILE`, against which later reads are verified."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(load_text(spec, data_dir), encoding="utf-8")
    recorded = _recorded_checksums(path.parent)
    recorded[path.name] = file_checksums(path)["sha256"]
    (path.parent / CHECKSUMS_FILE).write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
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


_ENCODED: dict = {}  # (tokenizer fingerprint, text fingerprint) -> ids; a few corpora per process
ENCODED_DIR = ".encoded"  # under the artifact cache: token ids on disk, shared by every process of a study


def tokenizer_fingerprint(tokenizer) -> str:
    """Short SHA-256 of a tokenizer's full definition (vocabulary, merges, normalisation), so that
    two loads of the same tokenizer share encodings; falls back to its name or path."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else f"{type(tokenizer).__name__}:{tokenizer.name_or_path}"
    return hashlib.sha256(spec.encode("utf-8")).hexdigest()[:16]


def encode(tokenizer, text: str):
    """Token ids of `text` as a 1-D LongTensor, shape [n_tokens] (no special tokens added).

    Tokenizing a megabyte takes about a second here, and every notebook kernel, build worker and
    variant of a study reads the same corpora with the same tokenizer. So the ids are memoised by
    (tokenizer, text) fingerprints (`tokenizer_fingerprint`, `fingerprint`): in this process, and on
    disk under the artifact cache (`ENCODED_DIR`: `<tokenizer>-<text>-<sha256 of the ids>.npy`,
    int32), written atomically and verified against its checksum when read. A file that fails
    the check is deleted and the text encoded again; a cache that cannot be written is skipped.
    Only a fast tokenizer goes to disk: its fingerprint hashes its whole definition, where a slow
    one's is only its class and path. The returned tensor is shared: do not modify it in place."""
    key = (tokenizer_fingerprint(tokenizer), fingerprint(text))
    if key not in _ENCODED:
        if len(_ENCODED) >= 16:
            _ENCODED.pop(next(iter(_ENCODED)))
        on_disk = getattr(tokenizer, "backend_tokenizer", None) is not None
        ids = _read_encoded(key) if on_disk else None
        if ids is None:
            ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
            if on_disk:
                _write_encoded(key, ids)
        _ENCODED[key] = ids
    return _ENCODED[key]


def _read_encoded(key: tuple[str, str]):
    """The ids `encode` saved for `key`, or None (absent, or deleted for failing its checksum)."""
    import numpy as np

    folder = paths.artifacts_dir() / ENCODED_DIR
    for path in sorted(folder.glob(f"{key[0]}-{key[1]}-*.npy")) if folder.is_dir() else []:
        try:
            arr = np.load(path, allow_pickle=False)
            ok = arr.ndim == 1 and _ids_checksum(arr) == path.stem.rsplit("-", 1)[1]
        except (OSError, ValueError, EOFError):
            ok = False
        if ok:
            return torch.from_numpy(arr.astype(np.int64))
        print(f"warning: cached token ids {path.name} failed their check and were deleted; encoding the text again",
              flush=True)
        with contextlib.suppress(OSError):
            path.unlink()
    return None


def _ids_checksum(arr) -> str:
    return hashlib.sha256(arr.astype("<i4").tobytes()).hexdigest()[:16]


def _write_encoded(key: tuple[str, str], ids) -> None:
    import numpy as np

    arr = ids.numpy().astype("<i4")
    folder, tmp = paths.artifacts_dir() / ENCODED_DIR, None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".tmp-{os.getpid()}-{key[0]}-{key[1]}.npy"
        with open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        os.replace(tmp, folder / f"{key[0]}-{key[1]}-{_ids_checksum(arr)}.npy")
    except OSError:  # a read-only or full disk: the ids stay memoised in this process only
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def training_streams(tokenizer, corpora, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Token streams (train, validation) from corpus specs: for each corpus the last
    `val_fraction` of its tokens goes to validation; corpora are joined with the EOS token."""
    eos = torch.tensor([tokenizer.eos_token_id], dtype=torch.long)
    train_parts, val_parts = [], []
    for spec in corpora:
        ids = encode(tokenizer, load_text(spec))
        cut = int(len(ids) * (1 - val_fraction))
        train_parts += [ids[:cut], eos]
        val_parts += [ids[cut:], eos]
    return torch.cat(train_parts), torch.cat(val_parts)


def calibration_batches(tokenizer, corpora, n_batches: int = 8, batch_size: int = 8, seq_len: int = 128,
                        seed: int = 0) -> list[torch.Tensor]:
    """`n_batches` batches [batch_size, seq_len] of random windows from the training streams of
    `corpora` (never the evaluation splits)."""
    train_ids, _ = training_streams(tokenizer, corpora, 0.05)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        starts = torch.randint(0, len(train_ids) - seq_len, (batch_size,), generator=g)
        out.append(torch.stack([train_ids[s: s + seq_len] for s in starts.tolist()]))
    return out
