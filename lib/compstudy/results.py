"""The study's results table: `results/<study>/measurements.csv`, one row per
(variant, dataset, repeat).

Rows are appended under an exclusive file lock (`fcntl.flock`) and flushed to disk before the
lock is released, so a crash mid-run loses nothing already written and two notebooks writing at
once do not interleave rows. A row torn by a crash in the middle of a write (the file does not end
with a newline) is cut off, and reported, before the next append, and `load` reports and skips
rows that do not parse: neither is ever fatal or silently mixed in. The columns and their units
are `COLUMNS` (also in the README).
"""
from __future__ import annotations

import csv
import fcntl
import io
import os
from pathlib import Path

from . import metrics, paths

# name -> (unit, meaning). The README's column table is generated from this dict.
COLUMNS: dict[str, tuple[str, str]] = {
    "study": ("", "study name (results/<study>/)"),
    "notebook": ("", "notebook that produced the row"),
    "variant": ("", "variant name in the paper's notation (Base, Base8b, Distil+90+4b, ...)"),
    "family": ("", "model family (gpt2, llama, ...)"),
    "dataset": ("", "corpus name:split (a folder corpus by its folder's name)"),
    "repeat": ("", "repeat index (the round), 0-based"),
    "attempt": ("", "the round's attempt, 0-based: a round with a disturbed pass is timed again (measure.evaluate_many)"),
    "set_aside": ("", "why the row is set aside (a disturbed round's passes: recorded, never used, the round timed again); empty: used"),
    "disturbed": ("", "why the row's pass counts as disturbed (others took more than max_pass_interference of the measured CPUs); empty: undisturbed"),
    **metrics.columns(),  # what each row scores: compstudy.metrics (perplexity, nll_nats, bits_per_byte)
    "tokens_scored": ("tokens", "tokens scored (each once)"),
    "eval_max_tokens": ("tokens", "tokens asked for (eval_max_tokens; empty: all): fewer are scored when the corpus is shorter"),
    "split_rule": ("", "how the evaluated split was made from its files (compstudy.data.split_rule)"),
    "bytes_evaluated": ("bytes", "UTF-8 bytes of the evaluated text"),
    "context": ("tokens", "sliding-window length"),
    "stride": ("tokens", "sliding-window step"),
    "batch_size": ("windows", "windows per forward pass"),
    "runtime_s": ("s", "wall time of one whole evaluation pass (warm-up excluded)"),
    "tokens_per_s": ("tokens/s", "tokens_scored / runtime_s"),
    "cpu_s": ("s", "CPU time of the measuring process during the pass (all its threads)"),
    "others_cpu_s": ("s", "CPU time other processes used during the pass on the CPUs the measuring process may run on"),
    "steal_s": ("s", "CPU time the hypervisor took from those CPUs during the pass (0 on bare metal)"),
    "load_avg_1m": ("", "the machine's 1-minute load average just before the pass"),
    "n_cpus": ("CPUs", "logical CPUs the measuring process may run on (all of the machine's unless it is pinned: measure.measured_cpus)"),
    "interference": ("", "(others_cpu_s + steal_s) / (n_cpus * runtime_s): share of those CPUs taken by others during the pass"),
    "passes_per_window": ("passes", "repetitions of the pass in its energy window (a counter's shortest window); times and energies are per pass"),
    "energy_kwh": ("kWh", "energy of the pass (CPU + GPU + RAM): counters (Zeus) or codecarbon (energy_method)"),
    "energy_net_kwh": ("kWh", "energy of the pass above the device's idle power, measured before the passes (counters only)"),
    "idle_power_w": ("W", "the device's idle power, measured before the passes (counters only)"),
    "energy_cpu_kwh": ("kWh", "CPU part"),
    "energy_gpu_kwh": ("kWh", "GPU part"),
    "energy_ram_kwh": ("kWh", "RAM part"),
    "emissions_kg": ("kg CO2eq", "codecarbon emissions for country_iso_code's grid"),
    "energy_method": ("", "measured | partly measured | estimated | unavailable"),
    "energy_detail": ("", "how each part was obtained (RAPL, NVML, TDP, constant)"),
    "peak_mem_bytes": ("bytes", "peak memory of one batch forward, sampled in the untimed warm-up (see peak_mem_method)"),
    "peak_mem_method": ("", "cuda_max_allocated (GPU) or rss_increase (CPU, sampled every 5 ms)"),
    "n_params": ("parameters", "logical parameter count (tied weights once)"),
    "n_params_nonzero": ("parameters", "parameters that are not zero"),
    "weight_bytes": ("bytes", "bytes of the weights saved on disk (safetensors)"),
    "dtype": ("", "compute dtype, with quantization (float32+nf4, ...)"),
    "cost_s": ("s", "wall time spent producing this variant from the baseline, all pipeline steps (for Base: training it)"),
    "cost_kwh": ("kWh", "energy spent producing this variant from the baseline (for Base: training it)"),
    "cost_method": ("", "energy_method of the cost"),
    "artifact": ("", "cache key of the measured artifact"),
    "training_tokens": ("tokens", "training the variant's production added to the baseline (distillation, KD, fine-tuning); 0: compression alone"),
    "control": ("", "the variant's equal-training control, Base+ft<N> with N = training_tokens (empty: none needed)"),
    "dose_axis": ("", "a dose-response point's axis (weight bits, heads kept, depth / width kept, weights kept; compstudy.dose); empty: not a sweep point"),
    "dose_method": ("", "the dose-response curve the point belongs to (HQQ, GPTQ (dequantized), heads (gradient importance), magnitude (layer), ...)"),
    "dose": ("bits or fraction", "the point's dose: bits per weight (nominal) on the weight-bits axis, else the fraction kept"),
    "device": ("", "cpu | cuda"),
    "cpu": ("", "CPU model"),
    "cpu_threads": ("threads", "torch intra-op threads"),
    "gpu": ("", "GPU model and UUID (which physical GPU measured the row), empty on CPU"),
    "python": ("", "Python version"),
    "torch": ("", "torch version"),
    "transformers": ("", "transformers version"),
    "bitsandbytes": ("", "bitsandbytes version"),
    "codecarbon": ("", "codecarbon version"),
    "dataset_sha256": ("", "SHA-256 of the evaluated split's text (the whole split, before eval_max_tokens)"),
    "corpora_sha256": ("", "every corpus split the process read (training and evaluation): label=first 16 hex of its SHA-256"),
    "git_commit": ("", "commit of the study (-dirty if modified)"),
    "timestamp": ("", "ISO 8601 local time of the measurement"),
    "run_id": ("", "the run that wrote the row (compstudy.runs): ratios and rankings never mix runs"),
    "params_hash": ("", "SHA-256 (12 hex) of the parameters that produced the row (compstudy.runs)"),
    "protocol": ("", "how the pass was timed: 'interleaved xN' = in rounds with the N-1 other timed variants of its call"),
    "timed_as": ("", "the variant whose timed pass gave this row's runtime, CPU time and energy: itself, or one with the same computation (models.compute_signature; perplexity is always the row's own)"),
}


def measurements_path(study: str) -> Path:
    """`results/<study>/measurements.csv` (folder created)."""
    folder = paths.results_dir(study)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "measurements.csv"


WORKER_ENV = "COMPSTUDY_WORKER"  # set (to a name unique per process) by executors whose processes write at once


def write_path(study: str, filename: str = "measurements.csv") -> Path:
    """Where this process appends `filename`'s rows: `results/<study>/<filename>`, or, when
    `COMPSTUDY_WORKER` names a worker (several processes or nodes measuring at once, possibly on a
    network filesystem where file locks are unreliable), its own file
    `results/<study>/parts/<stem>.<worker>.csv`, written by that worker alone. `load` merges them."""
    base = measurements_path(study).with_name(filename)
    worker = os.environ.get(WORKER_ENV, "").strip()
    if not worker:
        return base
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in worker)
    folder = base.parent / "parts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{Path(filename).stem}.{safe}.csv"


def append(study: str, records: list[dict], filename: str = "measurements.csv") -> Path:
    """Append records to `results/<study>/<filename>` (or this worker's part of it: `write_path`)
    safely; returns the file's path.

    Raises ValueError (before writing anything) if a record has a column not in `COLUMNS`
    (for measurements.csv) or records disagree on their columns (other tables).
    """
    if not records:
        return write_path(study, filename)
    path = write_path(study, filename)
    if Path(filename).name == "measurements.csv":  # the columns of metrics registered after import come last
        columns = list(COLUMNS) + [c for c in metrics.columns() if c not in COLUMNS]
        unknown = sorted({k for r in records for k in r} - set(columns))
        if unknown:
            raise ValueError(f"unknown result columns {unknown}; allowed: {columns}")
    else:
        columns = list(records[0])
        for r in records:
            if set(r) - set(columns):
                raise ValueError(f"record columns {sorted(r)} differ from {columns}")
    with open(path, "a+", newline="", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            _cut_torn_row(fh, path)
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                csv.writer(fh).writerow(columns)
            else:
                fh.seek(0)
                header = next(csv.reader(fh))
                if header != columns and set(header) < set(columns):
                    _upgrade_header(fh, columns)  # a file from before columns were added: same rows, blanks
                elif header != columns:
                    raise ValueError(f"{path} has columns {header}, expected {columns}: "
                                     f"move the old file away or use another study name")
                fh.seek(0, os.SEEK_END)
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="raise")
            writer.writerows(records)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return path


def _cut_torn_row(fh, path: Path) -> None:
    """If the open (locked) table does not end with a newline, its last row was torn by a crash
    during a write: truncate the file back to the end of the last complete row, and say so."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size == 0:
        return
    with open(path, "rb") as raw:
        raw.seek(size - 1)
        if raw.read(1) == b"\n":
            return
        raw.seek(0)
        blob = raw.read(size)
    keep = blob.rfind(b"\n") + 1
    fh.truncate(keep)
    print(f"results: {path} ended in a torn row ({size - keep} bytes, from an interrupted write); it was cut off")


def _upgrade_header(fh, columns: list[str]) -> None:
    """Rewrite an open (locked) table whose columns are a subset of `columns` with the full
    header, in place (same file, so the lock still holds); the new columns are left empty."""
    fh.seek(0)
    rows = list(csv.DictReader(fh))
    fh.seek(0)
    fh.truncate()
    writer = csv.DictWriter(fh, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    fh.flush()


# columns of measurements.csv that hold numbers: a row with text in one of them is
# foreign (another program's, or a torn line glued to the next one) and is skipped
NUMERIC = ("repeat", "perplexity", "bits_per_byte", "tokens_scored", "batch_size", "runtime_s")


def load(study: str, filename: str = "measurements.csv"):
    """The study's table as a pandas DataFrame; `study` may also be the path of a CSV file. The
    parts other workers wrote (`write_path`: `results/<study>/parts/<stem>.<worker>.csv`) are
    merged in, each read on its own, so a worker's partial file loses only its own torn row.

    Rows that do not parse are reported and skipped, never fatal: a last row torn by a crash in
    the middle of a write (the file does not end with a newline), rows with the wrong number of
    fields, and (in measurements.csv) rows with text in a `NUMERIC` column.

    Raises FileNotFoundError naming the file and how to produce it if it does not exist.
    """
    import pandas as pd

    path = Path(study) if str(study).endswith(".csv") else paths.results_dir(study) / filename
    parts = sorted((path.parent / "parts").glob(f"{path.stem}.*.csv")) if not str(study).endswith(".csv") else []
    if not path.exists() and not parts:
        raise FileNotFoundError(f"no results for study {study!r}: {path} does not exist; run the "
                                f"study's notebooks first (python -m compstudy run configs/<study>.yaml)")
    frames = [_load_file(p, measurements=path.name == "measurements.csv") for p in ([path] if path.exists() else []) + parts]
    if len(frames) == 1:
        return frames[0]
    return pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else frames[0]


def _load_file(path: Path, measurements: bool):
    """One table file (the study's, or a worker's part), as `load` describes."""
    import pandas as pd

    blob = path.read_bytes().decode("utf-8", errors="replace")
    torn = bool(blob) and not blob.endswith("\n")
    if torn:  # the last line was cut by an interrupted write
        blob = blob[: blob.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(blob, newline="")))
    if not rows:
        return pd.DataFrame(columns=list(COLUMNS) if measurements else [])
    header, good, bad = rows[0], [], []
    for i, row in enumerate(rows[1:], start=2):
        (good if len(row) == len(header) else bad).append(row if len(row) == len(header) else i)
    if torn:
        print(f"results: {path} ends in a torn row (an interrupted write); it was skipped")
    if bad:
        print(f"results: skipped {len(bad)} row(s) of {path} that do not parse (torn or foreign; lines {bad[:5]})")
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(good)
    text.seek(0)
    df = pd.read_csv(text, low_memory=False)
    numeric = [c for c in NUMERIC if c in df.columns] if measurements else []
    if numeric and len(df):
        coerced = df[numeric].apply(pd.to_numeric, errors="coerce")
        foreign = (coerced.isna() & df[numeric].notna()).any(axis=1)  # text where a number belongs; blanks are allowed
        if foreign.any():
            print(f"results: skipped {int(foreign.sum())} row(s) of {path} whose {numeric} are not numbers "
                  f"(foreign rows)")
        df = df.loc[~foreign].copy()
        df[numeric] = coerced.loc[~foreign]
    return df


def columns_markdown() -> str:
    """The README's table of columns, from `COLUMNS`."""
    lines = ["| column | unit | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | {u} | {m} |" for k, (u, m) in COLUMNS.items()]
    return "\n".join(lines)
