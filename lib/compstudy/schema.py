"""The base of every parameter group: each parameter of the study is declared once, as a field of
the library config that uses it (`measure.EvalConfig`, `baseline.BaselineConfig`,
`distill.Distillation`, `prune.PruningCriteria`, `finetune.FinetuneConfig`, ...), with its type,
range, default and documentation; `compstudy.params` assembles those groups into each notebook's
schema. The name in a YAML config, on the command line, in the notebook and in the library is the
same name (no rename tables).

A `Group` refuses unknown names, validates on assignment too, never takes a boolean for a number
(`-p repeats true` is an error, not `repeats = 1`), and is built from a notebook's resolved
parameters by `from_params` (the fields it declares, by name).
"""
from __future__ import annotations

import typing

from pydantic import BaseModel, ConfigDict, Field, model_validator

# the one declaration of `device`, shared by the groups that need it (baseline building, measurement)
DEVICE = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="'auto' (cuda when available), 'cpu', 'cuda' "
               "or 'cuda:N'")


def base_types(annotation) -> set:
    """The plain types an annotation admits (`int | None` -> {int, NoneType}; `list[int]` -> {int})."""
    args = typing.get_args(annotation)
    if not args:
        return {annotation}
    out = set()
    for a in args:
        out |= base_types(a) if typing.get_args(a) else {a}
    return out


def allowed(group: type["Group"], name: str) -> str:
    """What a field allows, in words: its type, range and documentation."""
    info = group.model_fields[name]
    limits = []
    for meta in info.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >="),
                           ("pattern", "matching")):
            if getattr(meta, attr, None) is not None:
                limits.append(f"{sign} {getattr(meta, attr)}")
    kind = getattr(info.annotation, "__name__", None) if isinstance(info.annotation, type) else None
    kind = kind or str(info.annotation).replace("typing.", "")
    return f"{kind}{' ' + ', '.join(limits) if limits else ''} ({info.description})"


class Group(BaseModel):
    """A group of parameters (subclasses): see the module docstring."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, values):
        if not isinstance(values, dict):
            return values
        for name, value in values.items():
            info = cls.model_fields.get(name)
            if info is None:
                continue
            kinds = base_types(info.annotation)
            if bool not in kinds and (int in kinds or float in kinds):
                if isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value)):
                    raise ValueError(f"{name} = {value!r}: a boolean is not a number; allowed: {allowed(cls, name)}")
        return values

    @classmethod
    def from_params(cls, params: dict, **changes):
        """This group built from a notebook's resolved parameters (`params.resolve`): the fields it
        declares, taken by name (others ignored); `changes` override fields."""
        return cls(**{**{k: params[k] for k in cls.model_fields if k in params}, **changes})

    def replace(self, **changes):
        """A copy with `changes` applied (validated)."""
        return type(self)(**{**self.model_dump(), **changes})
