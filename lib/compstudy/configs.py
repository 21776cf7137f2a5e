"""Study configs (YAML) read from disk, `extends` resolved: shared by the runner and by
`params.interactive_config` (a notebook run in Jupyter), so that both read a config alike."""
from __future__ import annotations

from pathlib import Path

import yaml

from . import paths


class ConfigError(ValueError):
    """A study config or its parameters are invalid."""


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key (PyYAML keeps the last silently)."""


def _no_duplicates(loader, node, deep=False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"key {key!r} appears twice in one mapping: lines {seen[key] + 1} and "
                              f"{key_node.start_mark.line + 1} ({key_node.start_mark.name}); keep one")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_yaml(text: str, name: str = "<config>"):
    """Parse YAML text with the safe loader, refusing duplicate keys (ConfigError naming the key and
    both lines)."""
    loader = _StrictLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _resolve(path: str | Path, base: Path) -> Path:
    p = Path(path)
    if p.is_absolute():
        return p
    for root in (base, paths.repo_root()):
        if (root / p).exists():
            return (root / p).resolve()
    return (paths.repo_root() / p).resolve()


def read_config(config_path: str | Path, _seen: tuple = ()) -> dict:
    """A study config as a dict, with `extends` resolved: the extended config's parameters are
    updated by this one's, its notebooks are used unless this one lists its own, and notebook
    paths are made absolute relative to the file that names them.

    Raises ConfigError for a missing file, malformed YAML, a top level that is not a mapping,
    unknown keys, or an `extends` cycle.
    """
    config_path = Path(config_path).resolve()
    if not config_path.exists():
        raise ConfigError(f"config {config_path} does not exist")
    if config_path in _seen:
        raise ConfigError(f"config {config_path} extends itself (through {[p.name for p in _seen]})")
    try:
        cfg = load_yaml(config_path.read_text(), str(config_path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path} is not valid YAML: {exc}") from None
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise ConfigError(f"{config_path}: the top level must be a mapping (study, parameters, notebooks), "
                          f"got a {type(cfg).__name__}")
    unknown_top = set(cfg) - {"study", "description", "extends", "parameters", "notebooks"}
    if unknown_top:
        raise ConfigError(f"{config_path}: unknown top-level keys {sorted(unknown_top)}; "
                          f"allowed: study, description, extends, parameters, notebooks")
    for key, kind in (("parameters", dict), ("notebooks", list)):
        if cfg.get(key) is not None and not isinstance(cfg[key], kind):
            raise ConfigError(f"{config_path}: '{key}' must be a {'mapping' if kind is dict else 'list'}, "
                              f"got {type(cfg[key]).__name__}")
    entries = []
    for entry in cfg.get("notebooks") or []:
        entry = {"path": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict):
            raise ConfigError(f"{config_path}: a notebook entry must be a path or a mapping, got {entry!r}")
        entry = dict(entry)
        if "path" in entry:
            entry["path"] = str(_resolve(entry["path"], config_path.parent))
        entries.append(entry)
    cfg["notebooks"] = entries
    if cfg.get("extends"):
        parent = read_config(_resolve(cfg["extends"], config_path.parent), (*_seen, config_path))
        merged = {**parent, **{k: v for k, v in cfg.items() if k not in ("parameters", "notebooks", "extends")}}
        merged["parameters"] = {**(parent.get("parameters") or {}), **(cfg.get("parameters") or {})}
        merged["notebooks"] = entries or parent["notebooks"]
        cfg = merged
    return cfg
