"""Provenance of a study's committed results: which commit, hardware, software, corpora and config
produced them (the paper itself is built by `compstudy.paper`)."""
from __future__ import annotations

import os

import time
from pathlib import Path

from . import data, paths
from .provenance import environment


def write_provenance(study: str, config_path: str | Path | None, wall_s: float) -> Path:
    """`results/<study>/PROVENANCE.md`: the commit, hardware, software, config and wall time that
    produced the study's results and figures (committed with them for the default study)."""
    import platform

    env = environment("cuda" if _cuda() else "cpu")
    folder = paths.results_dir(study)
    folder.mkdir(parents=True, exist_ok=True)
    figures = sorted(p.name for p in paths.figures_dir(study).glob("*.png"))
    lines = [
        f"# Provenance of `results/{study}/` and `figures/{study}/`", "",
        f"- produced: {time.strftime('%Y-%m-%d %H:%M %Z')} by `python -m compstudy run {config_path}`",
        f"- commit: `{env['git_commit']}` (a `-dirty` suffix means uncommitted changes were present)",
        f"- study wall time: {wall_s:.0f} s",
        f"- run: `{os.environ.get('COMPSTUDY_RUN_ID', '')}`, parameters hash `{os.environ.get('COMPSTUDY_PARAMS_HASH', '')}` "
        f"(the `run_id` / `params_hash` of its rows in measurements.csv; `results/{study}/runs.json` lists the runs)",
        f"- hardware: CPU {env['cpu']} ({env['cpu_threads']} torch threads), GPU {env['gpu'] or 'none'}, "
        f"{platform.system()} {platform.machine()}",
        f"- software: Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
        f"bitsandbytes {env['bitsandbytes']}, codecarbon {env['codecarbon']}",
        "- energy: see the `energy_method` column of measurements.csv and notebook 05's note",
        "", "Corpora (verified against the checksums in `compstudy.data.SOURCES` when read):", "",
        *corpus_lines(),
        "", "Figures:", *[f"- `figures/{study}/{f}`" for f in figures],
    ]
    if config_path and Path(config_path).exists():
        lines += ["", "Config:", "", "```yaml", Path(config_path).read_text().strip(), "```"]
    out = folder / "PROVENANCE.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def corpus_lines() -> list[str]:
    """One Markdown line per corpus file present in the data dir: its path, size and SHA-256
    (and whether that matches the recorded reference)."""
    lines = []
    for source in data.SOURCES.values():
        path = paths.data_dir() / source.corpus / source.filename
        if not path.exists():
            continue
        found = data.file_checksums(path)
        ok = found["sha256"] == source.sha256 if source.sha256 else found["git_blob"] == source.git_blob
        lines.append(f"- `{source.corpus}/{source.filename}`: {found['size']:,} bytes, sha256 `{found['sha256']}` "
                     f"({'matches' if ok else 'DOES NOT MATCH'} {source.checksum.split(':')[0]} reference)")
    return lines or ["- none of the registered corpora is in the data dir"]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def note_partial_run(study: str, notebooks: list[str], wall_s: float) -> Path | None:
    """Append to an existing `results/<study>/PROVENANCE.md` that some notebooks were re-run
    (`--only`) at the current commit, so that their outputs keep a provenance; returns its path."""
    out = paths.results_dir(study) / "PROVENANCE.md"
    if not out.exists():
        return None
    with open(out, "a") as fh:
        fh.write(f"\n- {time.strftime('%Y-%m-%d %H:%M %Z')}: re-ran {', '.join(notebooks)} alone at commit "
                 f"`{environment()['git_commit']}` ({wall_s:.0f} s); their outputs replace the earlier ones.\n")
    return out
