"""The technique registry: one entry per name token of the variant grammar (`compstudy.pipeline`).

An entry says everything the pipeline needs about a technique: the token's pattern, how a token
becomes a step config (`parse`) and a config becomes a token (`token`), how the step is built
(`build`: a cached step of the technique's module), whether it needs gradients (it cannot follow
quantization) or calibration text, and how many training tokens it adds (for the equal-training
control). Each technique module registers its own entries at import (`quantize`, `prune`,
`distill`, `finetune`); `pipeline` parses, names and builds through them and holds no
technique of its own. Adding a method (a quantization like HQQ, a pruning criterion) is one
`register(Technique(...))` beside its function.

    register(Technique(key="quantize:int8", kind="quantize", pattern=r"8b", config_type=QuantConfig,
                       parse=lambda m, d: QuantConfig("int8"), token=lambda c, first: "8b",
                       build=lambda parent, c, ctx: get_quantized(parent, c, ctx.device)))
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

KINDS = ("distill", "kd", "prune", "finetune", "quantize")  # what a step does; quantization comes last


class NotApplicable(RuntimeError):
    """A registered technique cannot be applied to this model (its library does not support the
    architecture, say). A sweep leaves the point out with this message as the reason; elsewhere it
    is an error like any other."""


@dataclass(frozen=True)
class BuildContext:
    """What every step's build receives besides its parent and config: the baseline (the teacher of
    `KD`), the training corpora, the device, whether to show progress, and the grid's defaults
    (`pipeline.StepDefaults`)."""

    base: object
    corpora: tuple
    device: str = "auto"
    progress: bool = True
    defaults: object = None


@dataclass(frozen=True)
class Technique:
    """One registry entry (module docstring).

    Attributes:
        key: unique id, "<kind>:<method>" (e.g. "prune:wanda").
        kind: one of `KINDS`.
        pattern: regex a name token must match in full (a later token: after `+`).
        first_pattern: regex of the token as a name's first token, when it differs (`AH90` first,
            `90` later); None = `pattern`. Quantization suffixes are glued to `Base` / `Distil`.
        config_type: the step config's class; `matches(config)` tells this entry's configs apart.
        parse: (re.Match, defaults) -> config.
        token: (config, first) -> the token's text.
        build: (parent artifact, config, BuildContext) -> artifact.
        needs_gradients: config -> bool (steps that train or rank by gradients cannot follow
            quantization).
        needs_calibration: whether the step reads calibration batches of training text.
        training_tokens: config -> tokens of training the step adds to the baseline.
        compresses: config -> bool, whether the step makes the model cheaper (a step that only
            trains, or prunes nothing, does not: pipelines of such steps are controls).
        description: one line for the glossary and error messages.
    """

    key: str
    kind: str
    pattern: str
    config_type: type
    parse: Callable
    token: Callable
    build: Callable
    first_pattern: str | None = None
    matches: Callable = lambda config: True
    needs_gradients: Callable = lambda config: False
    needs_calibration: bool = False
    training_tokens: Callable = lambda config: 0
    compresses: Callable = lambda config: True
    description: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"technique {self.key!r}: kind must be one of {KINDS}, got {self.kind!r}")
        re.compile(self.pattern)


TECHNIQUES: dict[str, Technique] = {}


def register(entry: Technique) -> Technique:
    """Add `entry` (its key must be new). Returns it. Raises ValueError for a duplicate key."""
    if entry.key in TECHNIQUES:
        raise ValueError(f"technique {entry.key!r} is registered already")
    TECHNIQUES[entry.key] = entry
    return entry


def parse_token(token: str, first: bool, kinds=KINDS) -> tuple[Technique, re.Match] | None:
    """The entry (of `kinds`) whose pattern matches `token` in full, with the match; None when none."""
    for entry in TECHNIQUES.values():
        if entry.kind not in kinds:
            continue
        pattern = entry.first_pattern if first and entry.first_pattern else entry.pattern
        m = re.fullmatch(pattern, token)
        if m:
            return entry, m
    return None


def entry_for(kind: str, config) -> Technique:
    """The entry of `kind` that made `config`. Raises ValueError when none is registered."""
    for entry in TECHNIQUES.values():
        if entry.kind == kind and isinstance(config, entry.config_type) and entry.matches(config):
            return entry
    raise ValueError(f"no registered technique of kind {kind!r} for {type(config).__name__} {config!r}")


def grammar() -> str:
    """Every registered token pattern, for error messages: `<key>: <pattern>`."""
    return "; ".join(f"{e.key}: {e.first_pattern + ' (first) / ' if e.first_pattern else ''}{e.pattern}"
                     for e in TECHNIQUES.values())
