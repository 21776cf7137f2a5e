"""What a measurement row scores, as registered functions: the seam where a new metric goes.

A *pass metric* turns one evaluation pass's totals (the summed negative log-likelihood in nats,
the tokens scored, the UTF-8 bytes of the text) into row columns; every registered one fills
every row (`from_pass`). Perplexity, NLL per token and bits per byte are the study's. A metric
that needs its own evaluation (a zero-shot accuracy task, say) registers a *model metric*: a
function `(model, tokenizer, spec, device) -> {column: value}` run once per variant and dataset,
outside the timed rounds, so the timing protocol is untouched (`measure.evaluate_many` calls
`from_model`). Each metric declares its columns with their units and meanings, which the results
table (`results.COLUMNS`) takes in.

    register_model_metric("lambada_accuracy", my_accuracy, {"lambada_accuracy": ("", "share of last words predicted")})
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Metric:
    """A registered metric: `name`, `compute` (pass metrics: (nll_nats_total, n_scored, n_bytes) ->
    columns; model metrics: (model, tokenizer, spec, device) -> columns) and `columns` ({column:
    (unit, meaning)})."""

    name: str
    compute: Callable
    columns: dict
    per_pass: bool = True


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add a metric (its name and columns must be new). Raises ValueError otherwise."""
    taken = {c for m in METRICS.values() for c in m.columns}
    if metric.name in METRICS or taken & set(metric.columns):
        raise ValueError(f"metric {metric.name!r} or one of its columns {sorted(metric.columns)} is registered already")
    METRICS[metric.name] = metric
    return metric


def register_model_metric(name: str, compute: Callable, columns: dict) -> Metric:
    """Register a metric that runs its own (untimed) evaluation: `compute(model, tokenizer, spec,
    device) -> {column: value}` (see the module docstring)."""
    return register(Metric(name, compute, columns, per_pass=False))


def _language_modelling(nll: float, n_scored: int, n_bytes: int) -> dict:
    return {"perplexity": math.exp(nll / n_scored), "nll_nats": nll / n_scored,
            "bits_per_byte": nll / math.log(2) / n_bytes}


register(Metric("language_modelling", _language_modelling, {
    "perplexity": ("", "token-level perplexity, exp(nll_nats)"),
    "nll_nats": ("nats/token", "mean negative log-likelihood per scored token"),
    "bits_per_byte": ("bits/byte", "total NLL / ln 2 / UTF-8 bytes evaluated (tokenizer-independent)"),
}))


def from_pass(nll: float, n_scored: int, n_bytes: int) -> dict:
    """Every pass metric's columns for one pass (`nll`: total nats over `n_scored` tokens of a text
    of `n_bytes` UTF-8 bytes)."""
    out = {}
    for m in METRICS.values():
        if m.per_pass:
            out.update(m.compute(nll, n_scored, n_bytes))
    return out


def from_model(model, tokenizer, spec: str, device: str) -> dict:
    """Every model metric's columns for one variant on one dataset ({} when none is registered)."""
    out = {}
    for m in METRICS.values():
        if not m.per_pass:
            out.update(m.compute(model, tokenizer, spec, device))
    return out


def columns() -> dict:
    """{column: (unit, meaning)} of every registered metric, in registration order."""
    return {c: v for m in METRICS.values() for c, v in m.columns.items()}
