"""Content-addressed artifact cache.

Every artifact (tokenizer, baseline, compressed variant) lives in `artifacts/<kind>-<hash>/`,
where the hash is the SHA-256 of the canonical JSON of every parameter that produced it
(including the keys of its parents and the fingerprints of its training text). Same parameters:
reused; any change: rebuilt. A build writes into a temporary folder that is renamed into place
only when complete, with `recipe.json` (the parameters and the build's cost), so an interrupted
build never leaves a half artifact behind.

The recipe also records the SHA-256 of every file of the artifact (`files_sha256`) and of its own
content (`recipe_sha256`: the sizes, costs and facts that results rows are read from), verified
each time the cache is asked whether the artifact exists: an artifact whose files were altered on disk
(a zeroed block, random bytes, a truncated file) is reported, moved aside to
`artifacts/.corrupt-<key>-<time>/`, and treated as absent, so the caller rebuilds it. Artifacts
built before checksums were recorded are accepted unverified.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

from . import paths

CACHE_VERSION = 3  # bump when a change to the code makes old artifacts wrong (3: family adapters, content keys)


def key(kind: str, params: dict) -> str:
    """`<kind>-<12 hex>`: the cache key of an artifact of `kind` built from `params`."""
    blob = json.dumps({"v": CACHE_VERSION, "kind": kind, **params}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def source_fingerprint(name_or_path) -> dict:
    """What stands for a model or tokenizer *source* in a cache key: for a local folder, the SHA-256
    of every file in it (a changed weight, a new file: a new key), for a hub name the name itself
    (online users pin a revision by downloading it to a folder). Hashes are memoised in
    `artifacts/.source-hashes.json` by path, size and modification time, so a large checkpoint is
    read once."""
    folder = Path(str(name_or_path)).expanduser()
    if not folder.is_dir():
        return {"hub": str(name_or_path)}
    memo_path = paths.artifacts_dir() / ".source-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, json.JSONDecodeError):
        memo = {}
    files, changed = {}, False
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = f.stat()
        memo_key = f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if memo_key not in memo:
            digest = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            memo[memo_key], changed = digest.hexdigest(), True
        files[str(f.relative_to(folder))] = memo[memo_key]
    if changed:
        with contextlib.suppress(OSError):
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_name(f".source-hashes-{os.getpid()}.json")
            tmp.write_text(json.dumps(memo))
            os.replace(tmp, memo_path)
    return {"folder": str(folder.resolve()), "files_sha256": files}


def path_of(artifact_key: str) -> Path:
    return paths.artifacts_dir() / artifact_key


def file_checksums(folder: Path) -> dict[str, str]:
    """{relative path: SHA-256 hex} of every file under `folder` except `recipe.json`."""
    out = {}
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file() and f.name != "recipe.json":
            digest = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            out[str(f.relative_to(folder))] = digest.hexdigest()
    return out


def verify(artifact_key: str) -> list[str]:
    """Files of a built artifact that differ from the checksums its recipe recorded (missing,
    changed, or unexpected); [] when intact or when the recipe predates checksums."""
    recipe = read_recipe(artifact_key)
    expected = recipe.get("files_sha256")
    if expected is None:
        return []
    found = file_checksums(path_of(artifact_key))
    bad = sorted(f for f in set(expected) | set(found) if expected.get(f) != found.get(f))
    if recipe.get("recipe_sha256") not in (None, recipe_checksum(recipe)):
        bad.append("recipe.json (its facts changed: sizes, costs, shape)")
    return bad


def recipe_checksum(recipe: dict) -> str:
    """SHA-256 of a recipe's canonical JSON without its own `recipe_sha256`: every fact read from the
    cache (sizes, costs, the pruned shape's facts) is covered, not only the files."""
    blob = json.dumps({k: v for k, v in recipe.items() if k != "recipe_sha256"}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def exists(artifact_key: str) -> bool:
    """True when the artifact was built completely and its files match their recorded checksums.

    A built artifact whose files do not match is reported, moved aside to
    `artifacts/.corrupt-<key>-<time>/` (kept for inspection) and reported absent, so that the
    caller rebuilds it.
    """
    if not (path_of(artifact_key) / "recipe.json").exists():
        return False
    try:
        bad = verify(artifact_key)
    except (OSError, json.JSONDecodeError) as exc:
        bad = [f"recipe.json ({type(exc).__name__})"]
    if not bad:
        return True
    aside = path_of(artifact_key).with_name(f".corrupt-{artifact_key}-{time.strftime('%Y%m%d-%H%M%S')}")
    with contextlib.suppress(OSError):
        path_of(artifact_key).rename(aside)
    print(f"cache: artifact {artifact_key} does not match its recorded checksums ({', '.join(bad[:5])}); "
          f"moved aside to {aside.name} and rebuilt")
    return False


def read_recipe(artifact_key: str) -> dict:
    """The `recipe.json` of a built artifact (parameters, cost, ...)."""
    return json.loads((path_of(artifact_key) / "recipe.json").read_text())


@contextlib.contextmanager
def build(artifact_key: str, params: dict):
    """Build an artifact: yields `(folder, recipe)`; write files into `folder` and extra facts
    (cost, ...) into the `recipe` dict. On success the folder is moved into place atomically."""
    final = path_of(artifact_key)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{artifact_key}-", dir=final.parent))
    recipe = {"key": artifact_key, "params": params}
    try:
        try:
            yield tmp, recipe
        except (OSError, RuntimeError) as exc:
            if is_disk_full(exc):
                raise DiskFull(f"no space left on {final.parent} while writing artifact {artifact_key} ({exc}); "
                               f"free some space, or set COMPSTUDY_ARTIFACTS_DIR to a folder on a larger disk") from None
            raise
        recipe["files_sha256"] = file_checksums(tmp)
        recipe = json.loads(json.dumps(recipe, default=str))  # as it will be read back
        recipe["recipe_sha256"] = recipe_checksum(recipe)
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True, default=str))
        try:
            tmp.rename(final)
        except OSError:  # built meanwhile by another process: keep theirs
            if not exists(artifact_key):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class DiskFull(OSError):
    """The artifact cache's disk is full: the message names the folder."""


def is_disk_full(exc: BaseException) -> bool:
    """True for the errors a full disk raises: OSError ENOSPC, and torch's serialiser's
    "[enforce fail at inline_container.cc] ... unexpected pos" (what `torch.save` and safetensors
    writers report when a write comes up short)."""
    import errno

    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "No space left on device" in text or ("inline_container" in text and "unexpected pos" in text)


def as_params(config) -> dict:
    """A config (a dataclass, a `schema.Group` or a dict) as a plain dict for `key` (tuples become lists)."""
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    return json.loads(json.dumps(asdict(config) if is_dataclass(config) else dict(config), default=str))


def from_params(cls, params: dict, names: dict | None = None, **changes):
    """Build dataclass `cls` from the entries of a notebook's `params`.

    Args:
        names: notebook parameter name -> field name; None = every field of `cls` under its own
            name. Entries of `params` not named are ignored.
        changes: field values that override what `params` gives.

    Used by notebooks, e.g. `BaselineConfig.from_params(globals())`. Lists become tuples.
    """
    names = names or {f.name: f.name for f in fields(cls)}
    picked = {field: (tuple(params[name]) if isinstance(params[name], list) else params[name])
              for name, field in names.items() if name in params}
    picked.update(changes)
    return cls(**picked)
