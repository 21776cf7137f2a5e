"""Content-addressed artifact cache.

Every artifact (tokenizer, baseline, compressed variant) lives in `artifacts/<kind>-<hash>/`,
where the hash is the SHA-256 of the canonical JSON of every parameter that produced it
(including the keys of its parents and the fingerprints of its training text). Same parameters:
reused; any change: rebuilt. A build writes into a temporary folder that is renamed into place
only when complete, with `recipe.json` (the parameters and the build's cost), so an interrupted
build never leaves a half artifact behind.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

from . import paths

CACHE_VERSION = 2  # bump when a change to the code makes old artifacts wrong


def key(kind: str, params: dict) -> str:
    """`<kind>-<12 hex>`: the cache key of an artifact of `kind` built from `params`."""
    blob = json.dumps({"v": CACHE_VERSION, "kind": kind, **params}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def path_of(artifact_key: str) -> Path:
    return paths.artifacts_dir() / artifact_key


def exists(artifact_key: str) -> bool:
    """True when the artifact was built completely."""
    return (path_of(artifact_key) / "recipe.json").exists()


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
        yield tmp, recipe
        (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True, default=str))
        try:
            tmp.rename(final)
        except OSError:  # built meanwhile by another process: keep theirs
            if not exists(artifact_key):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def as_params(config) -> dict:
    """A dataclass config as a plain dict for `key` (tuples become lists)."""
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
