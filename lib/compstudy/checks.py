"""What the runner checks before the first notebook starts, beyond the parameter schema: the
device, the model a user brings, the variant every ratio is taken against, and whether the
corpora are large enough for what each notebook does with them. Each check raises `CheckError`
(a `configs.ConfigError`) naming the parameter, the value and what is allowed, within seconds.

| check | fails for |
|---|---|
| `check_device` | `device` cuda / cuda:N on a machine without CUDA or without GPU N |
| `check_model` | `model` a folder that does not exist, has no config.json or no safetensors weights (only a pickle `pytorch_model.bin`), needs custom code (`auto_map`), or a hub name while offline; a family without adapter (`compstudy.families`) when a notebook that needs one is selected |
| `check_base_variant` | `base_variant` (notebook 05) not among the variants the study produces |
| `check_sizes` | an evaluation corpus with fewer than `MIN_EVAL_TOKENS` tokens, a training text too short for the training and validation streams, the calibration windows or the training sequences (counted with the study's own tokenizer: built here, or the checkpoint's) |

Corpus labels that collide (two folders of the same name) are refused by
`runner.check_corpora` (`data.label_collisions`).
"""
from __future__ import annotations

import json
from pathlib import Path

from .configs import ConfigError

MIN_EVAL_TOKENS = 128  # an evaluation corpus shorter than this is refused: too few windows to mean anything
NEEDS_ADAPTER = ("02_distillation", "03_pruning", "04_hybrid")  # notebooks that cut a model's structure
# 02's half-depth student works without an adapter too (its generic path copies every other block), but its
# controls and the study's other structural notebooks do not: 02 is listed so that the message is conservative


class CheckError(ConfigError):
    """A value the schema accepts that cannot work on this machine or with these inputs."""


def check_device(device: str) -> None:
    """Raises CheckError when `device` names a GPU this machine does not have."""
    import torch

    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise CheckError(f"device = {device!r}: this machine has no CUDA GPU (torch {torch.__version__} "
                         f"{'was built without CUDA' if not torch.backends.cuda.is_built() else 'sees no GPU'}); "
                         f"allowed here: 'cpu' or 'auto'")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise CheckError(f"device = {device!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


def check_model(model: str | None, notebooks: list[str], offline: bool) -> str | None:
    """Check the `model` parameter before anything loads it; returns its model type (None when
    `model` is None: the study trains its own). `notebooks`: the file names that will run.

    Raises CheckError for a folder that does not exist, lacks config.json or safetensors weights,
    or needs custom code; for a hub name while the hub is unreachable; and for a model type without
    a family adapter when a notebook that needs one (`NEEDS_ADAPTER`) is selected.
    """
    from . import families

    if model is None:
        return None
    folder = Path(model).expanduser()
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.exists():
            raise CheckError(f"model = {model!r}: the folder has no config.json; a checkpoint folder holds config.json, "
                             f"*.safetensors and the tokenizer's files (as save_pretrained writes them)")
        weights = list(folder.glob("*.safetensors")) or list(folder.glob("*.safetensors.index.json"))
        if not weights:
            pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
            raise CheckError(f"model = {model!r}: no safetensors weights in the folder"
                             + (f" (only {', '.join(pickles)}: pickle files, which can run code when loaded and are "
                                f"refused; convert them once with `model.save_pretrained(folder, safe_serialization=True)`)"
                                if pickles else "") + "; allowed: a folder with *.safetensors")
        config = json.loads(config_file.read_text())
        if config.get("auto_map"):
            raise CheckError(f"model = {model!r}: its config asks for custom code (auto_map: {sorted(config['auto_map'])}); "
                             f"the study loads models with trust_remote_code=False; allowed: architectures that "
                             f"transformers implements")
        model_type = str(config.get("model_type", "unknown"))
    elif looks_like_path(model):
        raise CheckError(f"model = {model!r}: the folder does not exist; allowed: an existing checkpoint folder, "
                         f"or a hub name such as 'gpt2' when online")
    elif offline:
        raise CheckError(f"model = {model!r}: not a local folder, and the hub is unreachable (offline: HF_HUB_OFFLINE or "
                         f"no network); allowed offline: a checkpoint folder")
    else:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(model, trust_remote_code=False).model_type
    needing = [n for n in notebooks if Path(n).stem in NEEDS_ADAPTER]
    if not families.supported(model_type) and needing:
        raise CheckError(f"model = {model!r} is a {model_type!r} model: {families.UnsupportedFamily(model_type)} "
                         f"(selected notebooks that need it: {', '.join(needing)})")
    return model_type


def study_variant_names(parameters: dict) -> set[str]:
    """The variant names the study's notebooks produce that do not depend on the model's shape
    (the Minitron width names do): Base, 01's quantized variants, 02's students and controls,
    03's pruned variants, 04's grid and target shape, and every equal-training control.
    `parameters`: {notebook file: its resolved parameters (the shared ones under "shared")}."""
    from . import pipeline
    from .surgery import percent_text

    names = {"Base"}
    for nb, p in parameters.items():
        own = {**p.get("shared", {}), **p}
        stem = Path(nb).stem
        if stem == "01_quantization":
            names |= {f"Base{v}" for v in own.get("variants", [])}
        elif stem == "02_distillation":
            names |= {"Distil", "Distil-noKD", "Distil-rand", "Distil-rand-noKD", "Distil-pretrained",
                      f"Base+ft{pipeline.tokens_text(own.get('distill_tokens', 1))}"}
        elif stem == "03_pruning":
            base = [f"AH{percent_text(k)}" for k in own.get("head_keep", [])]
            base += [f"MLP{percent_text(own['mlp_keep'])}" if own.get("mlp_keep") else "",
                     f"Depth{percent_text(own['depth_keep'])}" if own.get("depth_keep") else "",
                     f"Emb{percent_text(own['embedding_keep'])}" if own.get("embedding_keep") else ""]
            base = [b for b in base if b]
            names |= set(base) | {f"{b}+ft" for b in base}
            for s in own.get("sparsities", []):
                pct = percent_text(s)
                names |= {f"Mag{pct}", f"GMag{pct}", f"Wanda{pct}", f"Mag{pct}+ft", f"GMag{pct}+ft", f"Wanda{pct}+ft"}
            if own.get("finetune_tokens"):
                names.add(f"Base+ft{pipeline.tokens_text(own['finetune_tokens'])}")
        elif stem == "04_hybrid":
            grid = pipeline.paper_grid(own.get("grid_bases", ["Base", "Distil"]), own.get("grid_heads", [None, 90, 80]),
                                       own.get("grid_quants", [None, "8b", "4b"]))
            names |= set(grid) | ({own["target_shape"]} if own.get("target_shape") else set())
            with_controls = set()
            for n in names:
                try:
                    with_controls |= set(pipeline.with_controls([n]))
                except ValueError:
                    pass
            names |= with_controls
    return names


def check_base_variant(base_variant: str, parameters: dict) -> None:
    """Raises CheckError when `base_variant` is not a variant the study produces (before any
    notebook: a typo found after 00-04 ran wastes the run)."""
    if base_variant == "Base":
        return
    names = study_variant_names(parameters)
    if base_variant not in names:
        close = sorted(n for n in names if n.lower()[:3] == base_variant.lower()[:3])[:8] or sorted(names)[:8]
        raise CheckError(f"base_variant = {base_variant!r} (05_comparison): not a variant this study produces; "
                         f"allowed: Base or one of its variants, e.g. {close}")


def check_sizes(shared: dict, notebooks: list[str]) -> dict:
    """Count, with the study's own tokenizer (built or loaded here, cached for the notebooks), the
    tokens of every evaluation corpus and of the training streams, and check them against what
    the notebooks need. Returns {spec: tokens}.

    Raises CheckError for an evaluation corpus under `MIN_EVAL_TOKENS` tokens, or training text too
    short for the training and validation streams (each must exceed `seq_len` tokens) or the
    calibration windows (128 tokens). Notes a corpus shorter than `eval_max_tokens` (the rows then
    record the tokens asked and scored) in the returned dict under "notes".
    """
    from . import baseline, data

    config = baseline.BaselineConfig.from_params(shared)
    tokenizer, _ = baseline.get_tokenizer(config)
    counts, notes, problems = {}, [], []
    for spec in shared.get("eval_datasets", []):
        n = len(data.encode(tokenizer, data.load_text(spec)))
        counts[spec] = n
        if n < MIN_EVAL_TOKENS:
            problems.append(f"eval_datasets: {spec!r} has {n:,} tokens with this study's tokenizer; at least "
                            f"{MIN_EVAL_TOKENS} are needed (compstudy.checks.MIN_EVAL_TOKENS)")
        elif shared.get("eval_max_tokens") and n < shared["eval_max_tokens"]:
            notes.append(f"{spec} has {n:,} tokens, fewer than eval_max_tokens = {shared['eval_max_tokens']:,}: all of "
                         f"them are scored, and the rows record both numbers")
    train, val = data.training_streams(tokenizer, config.train_corpora, config.val_fraction)
    counts["training stream"], counts["validation stream"] = len(train), len(val)
    need = max(config.seq_len, 128) + 1
    if len(train) < need or len(val) < config.seq_len + 1:
        problems.append(f"train_corpora: {config.train_corpora} give {len(train):,} training and {len(val):,} validation "
                        f"tokens (the last {config.val_fraction:.0%} of each corpus); training needs more than seq_len = "
                        f"{config.seq_len} in each and calibration more than 128: give more text")
    if problems:
        raise CheckError(f"{len(problems)} corpus size problem(s), found before running anything:\n- " + "\n- ".join(problems))
    counts["notes"] = notes
    return counts
