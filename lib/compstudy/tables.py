"""Tables as a reader sees them: no positional index, units in the headers, numbers rounded to the
digits the measurement supports.

    from compstudy import tables
    tables.show(results)            # a pandas Styler: the last expression of a notebook cell

`show` is what every notebook displays instead of a raw DataFrame, so that the executed notebooks
and the paper built from them (`compstudy.paper`) show `runtime (s)` rounded to 3 significant
digits rather than `runtime_s` to 9, and never a bare 0..N column.

Formats (`format_for`), by column name:

| column | shown as |
|---|---|
| counts: `n_params*`, `*_bytes`, `tokens*`, `*_tokens`, `parameters`, `bytes`, ... | `1,234,567` |
| `perplexity`, `*perplexity*` | 2 decimals |
| `bits_per_byte`, `*bits_per_byte*` | 4 decimals |
| `*_change_pct`, `*_pct` | signed, 2 decimals (`+0.37`) |
| ratios `P_c`, `T_c`, `E_c`, `opt` and their `_lo` / `_hi`, `*_ratio`, `P_vs_control` | 3 decimals |
| seconds, kWh, joules, everything else that is a float | 3 significant digits |
"""
from __future__ import annotations

import contextlib
import math
import re

# header shown for a column (units in parentheses); other columns keep their name, underscores as spaces
HEADERS = {
    "runtime_s": "runtime (s)", "runtime_min_s": "runtime min (s)", "runtime_max_s": "runtime max (s)",
    "energy_kwh": "energy (kWh)", "energy_J": "energy (J)", "cost_s": "cost (s)", "cost_kwh": "cost (kWh)",
    "weight_bytes": "weights on disk (bytes)", "csr_model_bytes": "model as CSR (bytes)", "n_params": "parameters",
    "n_params_nonzero": "non-zero parameters", "bits_per_byte": "bits/byte", "tokens_per_s": "tokens/s",
    "tokens_scored": "tokens scored", "training_tokens": "training tokens", "peak_mem_bytes": "peak memory (bytes)",
    "train_seconds": "training (s)", "val_bits_per_byte": "held-out bits/byte", "val_perplexity": "held-out perplexity",
    "train_stream_tokens": "training text (tokens)", "plateau_improvement_pct": "plateau check: further gain (%)",
    "perplexity_change_pct": "perplexity change (%)", "runtime_s_change_pct": "runtime change (%)",
    "energy_kwh_change_pct": "energy change (%)", "energy_J_change_pct": "energy change (%)",
    "weight_bytes_change_pct": "weights change (%)", "saved_kwh_per_token": "saved (kWh/token)",
    "break_even_tokens": "break-even (tokens)", "base_spread": "base spread", "interference": "interference",
    "cpu_per_wall": "CPU s per wall s", "runtime_change_pct": "runtime change (%)",
    "energy_change_pct": "energy change (%)",
}

_COUNT = re.compile(r"^(n_params.*|.*_bytes|bytes.*|tokens.*|.*_tokens|parameters|repeats|rounds|n_rounds|"
                    r"n_conditions|min_repeats|layers|batch_size|heads?|.*difference to depth|epochs_?)$")
_RATIO = re.compile(r"^((P|T|E)_c|opt|P_c_control|P_vs_control)(_lo|_hi)?$|.*_ratio$")


def format_for(column: str, values=None) -> str:
    """The format string (`str.format` style) for a column, by its name (module docstring); for a
    column not named by a rule, integers keep their digits and other floats get 3 significant digits."""
    c = str(column)
    if _COUNT.match(c):
        return "{:,.0f}"
    if "perplexity" in c and not c.endswith("_pct"):
        return "{:.2f}"
    if "bits_per_byte" in c:
        return "{:.4f}"
    if c.endswith("_pct") or c.endswith("(%)"):
        return "{:+.2f}"
    if _RATIO.match(c):
        return "{:.3f}"
    if c == "sparsity" or c.endswith("sparsity") or c == "epochs":
        return "{:.2f}"
    return "{:.3g}"


def _formatter(fmt: str):
    def f(x):
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return ""
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            return str(x)
        if isinstance(x, float) and math.isinf(x):
            return "∞" if x > 0 else "-∞"
        return fmt.format(x)
    return f


def header(column: str) -> str:
    """The header shown for a column: `HEADERS`, else the name with underscores as spaces."""
    return HEADERS.get(str(column), str(column).replace("_", " "))


def show(df, index: bool | str = False, caption: str | None = None):
    """`df` as a reader should see it: a pandas Styler without the positional index, headers with
    units (`header`), every numeric column rounded by `format_for` and aligned right.

    Args:
        index: keep a meaningful index (e.g. variant names) as the first column: True, or the
            header to give it (e.g. "variant"); False drops it.
        caption: a caption above the table.

    Object columns that hold only numbers (a transposed table of mixed rows) are shown as numbers.
    Returns the Styler (display it as a cell's last expression)."""
    import pandas as pd

    frame = df.copy()
    if index is not False and not isinstance(frame.index, pd.RangeIndex):
        if isinstance(index, str):
            frame.index = frame.index.rename(index)
        elif frame.index.name is None:
            frame.index = frame.index.rename("name")
        frame = frame.reset_index()
    formats, numeric = {}, []
    for col in frame.columns:
        if frame[col].dtype == object:
            with contextlib.suppress(ValueError, TypeError):
                if frame[col].map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
                    frame[col] = pd.to_numeric(frame[col])
        if pd.api.types.is_bool_dtype(frame[col]) or not pd.api.types.is_numeric_dtype(frame[col]):
            continue
        formats[col] = _formatter(format_for(col))
        numeric.append(col)
    styler = frame.style.format(formats, na_rep="").hide(axis="index")
    if numeric:
        styler = styler.set_properties(subset=numeric, **{"text-align": "right"})
    styler = styler.relabel_index([header(c) for c in frame.columns], axis="columns")
    if caption:
        styler = styler.set_caption(caption)
    return styler


def sentence_list(items, conjunction: str = "and") -> str:
    """`a`, `a and b`, `a, b and c`: items (strings) joined for a sentence; '' for none."""
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    """`1 variant`, `2 variants`, `0 variants` (`plural_form` for irregular words)."""
    word = singular if n == 1 else (plural_form or singular + "s")
    return f"{n:,} {word}"
