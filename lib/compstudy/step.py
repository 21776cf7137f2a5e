"""The one cached step: every artifact of the study (tokenizer, baseline, quantized, pruned,
distilled, fine-tuned and from-scratch models, the plateau check) is built or loaded here.

A technique is a plain transform that builds something; `cached_step` does the rest, once for all:

- keying: `cache.key(kind, params)`, the SHA-256 of every parameter that produced the artifact
  (the parent's key included), so the same parameters load and any change rebuilds;
- metering: one codecarbon meter (`energy.EnergyMeter`) for the whole build, handed to the
  transform as a `StepMeter`; the phases the transform times with `meter.task(...)` (quantizing,
  the pruning pass, training) add up to the artifact's `cost` (seconds, kWh, and whether the
  energy was measured or estimated);
- sizing: parameters, non-zero parameters and bytes on disk (`models.model_size`), taken right
  after the build, before any forward pass of a loaded copy;
- saving: weights and tokenizer (`models.save_model`), training history, extra files, and the
  recipe, written atomically with the SHA-256 of every file (`cache.build`);
- loading: `models.load_artifact`, after the checksums are verified (`cache.exists`: a
  corrupted artifact is reported, moved aside and rebuilt).

    art = cached_step("quant-4b", {"parent": base.key, ...}, lambda meter: Built(model, tokenizer))
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import cache
from .energy import EnergyMeter, EnergyReading
from .models import Artifact, load_artifact, model_size, save_model


# ---- planning (`compstudy.plan`): the artifact graph of a study, known before anything is built

PARENT_FIELDS = ("parent", "baseline", "student", "teacher", "tokenizer_key")  # params entries naming a parent artifact's key
_PLAN: contextvars.ContextVar = contextvars.ContextVar("compstudy_plan", default=None)


class PlanPending(Exception):
    """Raised while planning when a step needs more of an artifact than its key (its model, its
    recipe) and the artifact is not built yet: what depends on it is planned once it is built."""

    def __init__(self, key: str):
        super().__init__(f"artifact {key} is not built yet")
        self.key = key


class PendingArtifact:
    """What `cached_step` returns while planning for an artifact not in the cache: its `key` and
    would-be `path`; any other attribute raises `PlanPending`."""

    def __init__(self, key: str, kind: str):
        self.key, self.kind, self.path = key, kind, cache.path_of(key)
        self.cost = {"seconds": math.nan, "energy_kwh": math.nan, "method": "not built"}

    def __getattr__(self, name):
        raise PlanPending(self.key)


@dataclass
class PlanNode:
    """One artifact of a plan: its cache `key`, `kind`, the keys of its `parents` (from its
    parameters), whether it is `cached`, and its parameters."""

    key: str
    kind: str
    parents: list
    cached: bool
    params: dict


@contextlib.contextmanager
def planning():
    """While active, `cached_step` and `cached_folder` build nothing: each records a `PlanNode`
    (yielded list, in call order, each key once) and returns the cached artifact when there is one
    (loaded only when used) or a `PendingArtifact`."""
    nodes: dict[str, PlanNode] = {}
    token = _PLAN.set(nodes)
    try:
        yield nodes
    finally:
        _PLAN.reset(token)


def is_planning() -> bool:
    """Whether `planning()` is active (techniques that read files before their cached step check it)."""
    return _PLAN.get() is not None


def planned_and_missing(key: str) -> bool:
    """Whether `planning()` is active and artifact `key` is not in the cache (what it needs is then
    known by key alone)."""
    return is_planning() and not cache.exists(key)


def _plan(kind: str, params: dict, key: str) -> bool:
    """Record the node while planning; returns whether it is cached. Not planning: returns None."""
    nodes = _PLAN.get()
    if nodes is None:
        return None
    cached = cache.exists(key)
    if key not in nodes:
        parents = [v for k, v in params.items() if k in PARENT_FIELDS and isinstance(v, str)]
        nodes[key] = PlanNode(key, kind, parents, cached, params)
    return cached


class _LazyArtifact(Artifact):
    """A cached artifact while planning: its recipe read at once, its model loaded on first use."""

    def __init__(self, key: str, device: str, load):
        object.__setattr__(self, "_loaded", None)
        object.__setattr__(self, "_load", lambda: (load or load_artifact)(key, device))
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "path", cache.path_of(key))
        object.__setattr__(self, "recipe", cache.read_recipe(key))

    def __getattr__(self, name):  # model, tokenizer, history: not set until loaded
        if name.startswith("_"):
            raise AttributeError(name)
        if self._loaded is None:
            object.__setattr__(self, "_loaded", self._load())
        return getattr(self._loaded, name)


class StepMeter:
    """The meter a transform times its phases with: `with meter.task("prune"): ...`. Every
    reading is kept; `cost()` adds them up."""

    def __init__(self, meter: EnergyMeter):
        self.meter = meter
        self.readings: list[EnergyReading] = []

    @contextlib.contextmanager
    def task(self, name: str = "block"):
        """Time and meter the enclosed block (as `EnergyMeter.task`); yields its `EnergyReading`."""
        with self.meter.task(name) as reading:
            yield reading
        self.readings.append(reading)

    def cost(self) -> dict:
        """The sum of the readings as a recipe's `cost`: seconds (wall, s), energy_kwh (kWh, NaN
        if any phase has none), method and detail of the first phase (one meter: the same for all)."""
        if not self.readings:
            return {"seconds": 0.0, "energy_kwh": 0.0, "method": "none", "detail": "nothing metered"}
        kwh = [r.energy_kwh for r in self.readings]
        return {"seconds": sum(r.seconds for r in self.readings),
                "energy_kwh": float("nan") if any(math.isnan(k) for k in kwh) else sum(kwh),
                "method": self.readings[0].method, "detail": self.readings[0].detail}


@dataclass
class Built:
    """What a transform returns to `cached_step`.

    Attributes:
        model: the built model (None for an artifact that is only files, e.g. a tokenizer).
        tokenizer: its tokenizer, saved with it.
        history: training history (DataFrame), saved as `history.csv`.
        recipe: facts to record beside the parameters (e.g. `facts`, `final_val_loss`).
        files: extra files, name -> writer(path), e.g. an optimizer state; the name "" hands the
            writer the artifact's folder itself (a tokenizer writes its files there).
        cost: a cost to record instead of the metered one (a pretrained model: not produced here).
        stored: False for a model that `save_pretrained` cannot write (torch dynamic int8): only
            the recipe is stored and the transform runs again at every call (deterministic).
        size: the model's size when it must be taken inside the transform (else taken here).
    """

    model: torch.nn.Module | None = None
    tokenizer: object = None
    history: object = None
    recipe: dict = field(default_factory=dict)
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    cost: dict | None = None
    stored: bool = True
    size: dict | None = None


def trained(model, tokenizer, result, save_optimizer: bool = False, **recipe) -> Built:
    """`Built` of a model trained by `train.train`: its history and final validation loss, and
    (`save_optimizer`) the AdamW state as `optimizer.pt` (2 x the weights' bytes) so that training
    can resume (the plateau check does)."""
    files = {}
    if save_optimizer and result.optimizer_state is not None:
        files["optimizer.pt"] = lambda path, state=result.optimizer_state: torch.save(state, path)
    return Built(model, tokenizer, history=result.history, files=files,
                 recipe={"final_val_loss": result.final_val_loss, **recipe})


REDERIVED = "recipe only, re-derived from the parent"  # the recipe's `stored` for a `Built` with stored=False


CLAIM_STALE_S = 300.0  # a claim whose heartbeat is older than this is stale: its builder died
CLAIM_HEARTBEAT_S = 20.0
CLAIM_POLL_S = 1.0


def claims_dir() -> Path:
    """`<artifacts>/.claims/`: one file per cache key being built (`claim`)."""
    from . import paths

    return paths.artifacts_dir() / ".claims"


def _claim_stale(path: Path) -> bool:
    """A claim is stale when its process is gone (same host) or its heartbeat stopped."""
    import json
    import os
    import socket
    import time

    try:
        info = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return False  # being written, or just removed: look again
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError):
            pass
    return age > CLAIM_STALE_S


@contextlib.contextmanager
def claim(key: str):
    """Claim cache key `key` before building it, so that two workers (processes, nodes sharing the
    artifacts folder) never build the same artifact at once. Yields True when this process holds
    the claim; False when another built the artifact meanwhile (it now exists). While another
    holds a live claim, waits; a stale claim (its process gone, or no heartbeat for
    `CLAIM_STALE_S`) is taken over. The claim is a file created with O_EXCL under `claims_dir()`,
    its mtime refreshed every `CLAIM_HEARTBEAT_S` by a thread, removed on exit."""
    import json
    import os
    import socket
    import threading
    import time

    folder = claims_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.claim"
    me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if cache.exists(key):
                yield False
                return
            if _claim_stale(path):
                try:  # one taker wins the rename; the others look again
                    os.rename(path, folder / f".{key}.stale-{os.getpid()}-{time.time_ns()}")
                except FileNotFoundError:
                    pass
                continue
            time.sleep(CLAIM_POLL_S)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    stop = threading.Event()

    def beat():
        while not stop.wait(CLAIM_HEARTBEAT_S):
            try:
                os.utime(path)
            except OSError:
                return

    threading.Thread(target=beat, daemon=True, name=f"claim-{key}").start()
    try:
        yield True
    finally:
        stop.set()
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _ensure(key: str, params: dict, build: Callable[[StepMeter], Built]) -> Built | None:
    """Build and write the artifact `key` unless the cache holds an intact copy; returns the
    `Built` when it was built now, else None (also when another worker built it while this one
    waited for its claim: `claim`)."""
    if cache.exists(key):
        return None
    with claim(key) as mine:
        if not mine or cache.exists(key):
            return None
        t0 = time.perf_counter()
        with EnergyMeter() as energy:
            meter = StepMeter(energy)
            built = build(meter)
        _write(key, params, built, meter)
        _log_build(key, time.perf_counter() - t0)
        return built


def build_log_path() -> Path:
    """`<artifacts>/.build-log.jsonl`: one line per artifact built (key, seconds, pid, host, time),
    appended by whichever process built it (what `benchmarks/scale_out.py` and the tests read)."""
    from . import paths

    return paths.artifacts_dir() / ".build-log.jsonl"


def _log_build(key: str, seconds: float) -> None:
    import json
    import os
    import socket

    line = json.dumps({"key": key, "seconds": round(seconds, 3), "pid": os.getpid(), "host": socket.gethostname(),
                       "time": time.time()}) + "\n"
    with open(build_log_path(), "a", encoding="utf-8") as fh:  # one short O_APPEND write: whole lines
        fh.write(line)


def cached_folder(kind: str, params: dict, build: Callable[[StepMeter], Built]) -> Path:
    """The folder of the artifact of `kind` built from `params`, building it first when the cache
    has no intact copy: `build(meter)` runs under one energy meter and returns a `Built`, which is
    sized, saved and recorded (see the module docstring). Returns the cached folder.

    Raises whatever `build` raises; nothing is left in the cache then.
    """
    key = cache.key(kind, params)
    if _plan(kind, params, key) is not None:  # planning: nothing built
        return cache.path_of(key)
    _ensure(key, params, build)
    return cache.path_of(key)


def cached_step(kind: str, params: dict, build: Callable[[StepMeter], Built], device: str = "cpu",
                load: Callable[[str, str], Artifact] | None = None) -> Artifact:
    """The model artifact of `kind` built from `params`: loaded from the cache, or built by
    `build(meter)` (a `Built` with a model), saved, and loaded (`cached_folder`).

    Args:
        device: where the loaded model goes.
        load: `load(key, device) -> Artifact` when loading needs more than `models.load_artifact`
            (e.g. bitsandbytes on CUDA); default `load_artifact`.

    A `Built` with `stored=False` is rebuilt at every call and returned from memory with the
    recorded recipe (which is written the first time).

    Raises whatever `build` raises; nothing is left in the cache then.
    """
    key = cache.key(kind, params)
    planned = _plan(kind, params, key)
    if planned is not None:  # planning: nothing built
        return _LazyArtifact(key, device, load) if planned else PendingArtifact(key, kind)
    built = _ensure(key, params, build)
    recipe = cache.read_recipe(key)
    if recipe.get("stored") == REDERIVED:
        if built is None:
            with EnergyMeter() as energy:
                built = build(StepMeter(energy))
        return Artifact(built.model, built.tokenizer, key, cache.path_of(key), {**recipe, "size": _size(built)})
    return (load or load_artifact)(key, device)


class ArtifactError(RuntimeError):
    """A built model does not reload from its saved folder as it was: nothing is cached."""


def verify_saved(model, folder: Path) -> None:
    """Reload the model just saved in `folder` (`models.load_folder`) and check that it is the same
    model: the same parameter count and, for unquantized models, the same logits on a fixed input
    (exactly). Raises ArtifactError with the load error (transformers' report of the mismatched
    tensors, `models.CheckpointError`) or the difference; the caller's build then leaves nothing in
    the cache, so a rerun builds again instead of failing the same way."""
    from .models import count_parameters, load_folder

    try:
        again = load_folder(folder)
    except Exception as exc:  # whatever a load raises: the artifact is unusable
        raise ArtifactError(f"the built model does not reload from its saved folder: {type(exc).__name__}: {exc}") from None
    if count_parameters(again)[0] != count_parameters(model)[0]:
        raise ArtifactError(f"the reloaded model has {count_parameters(again)[0]:,} parameters, the built one "
                            f"{count_parameters(model)[0]:,}")
    quantized = any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in model.modules())
    if quantized:  # bitsandbytes repacks 4-bit weights at the first forward (models.model_size): no forward here
        return
    vocab = int(model.config.vocab_size)
    ids = torch.arange(8).remainder(vocab).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            a = model(input_ids=ids.to(device)).logits.float().cpu()
            b = again(input_ids=ids).logits.float().cpu()
    finally:
        model.train(was_training)
    if not torch.equal(a, b):
        raise ArtifactError(f"the reloaded model computes other logits (largest difference {float((a - b).abs().max()):.3g})")


def _size(built: Built) -> dict | None:
    if built.size is not None or built.model is None:
        return built.size
    return model_size(built.model)


def _write(key: str, params: dict, built: Built, meter: StepMeter) -> None:
    size = _size(built)  # before anything else touches the model (see models.model_size)
    with cache.build(key, params) as (folder, recipe):
        if built.model is not None and built.stored:
            save_model(built.model.to("cpu"), built.tokenizer, folder)
            verify_saved(built.model, folder)  # a model that does not reload as it was is never cached
        if built.history is not None:
            built.history.to_csv(folder / "history.csv", index=False)
        for name, write in built.files.items():
            write(folder / name)
        recipe["cost"] = built.cost if built.cost is not None else meter.cost()
        if size is not None:
            recipe["size"] = size
        if not built.stored:
            recipe["stored"] = REDERIVED
        recipe.update(built.recipe)
