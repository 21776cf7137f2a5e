"""One call, one model, one dataset, one record per repeat: the study's measurement protocol.

Perplexity: Hugging Face's strided sliding-window protocol ("Perplexity of fixed-length models",
transformers docs). The text is tokenized once; windows of `context` tokens end every `stride`
tokens (the last at the end of the text); in each window only the tokens after the previous
window's end are targets, the rest is context. Every token but the first is scored exactly once,
with at least `context - stride` tokens of left context (`stride` is capped at `context - 1`).
We sum the exact per-token negative log-likelihoods (HF's example approximates the sum by
`mean loss * target length`).

- perplexity = exp(total NLL / scored tokens), NLL in nats.
- bits per byte = total NLL / ln 2 / UTF-8 bytes of the evaluated text: tokenizer-independent,
  so models with different tokenizers can be compared.

Runtime: wall seconds of one whole evaluation pass (what the paper reports), after one warm-up
batch that is not counted. A notebook's variants and their base are measured together, interleaved:
`repeats` rounds, each timing one pass of every variant in a rotating order (`evaluate_many`), so
that a ratio to the base is taken within a round (paired) and drift hits all variants alike. This
is the method of pyperf and Google Benchmark's interleaved repetitions applied to whole passes;
`benchmarks/timing_protocol.py` measured the choice of rounds and pass length. Every pass records
its process CPU time and the CPU time others used meanwhile (other processes and hypervisor steal)
on the CPUs the process may run on (`measured_cpus`: the whole machine unless it is pinned), the
signals `noise.timing_noise` uses to flag unreliable ratios.

Energy: codecarbon's `OfflineEmissionsTracker` around the same pass (one task per repeat; the
tracker's ~1.4 s start/stop lies outside the timed work). Each part (CPU, GPU, RAM) is
`measured` when codecarbon read a hardware counter (Intel RAPL, NVIDIA NVML) and `estimated`
when it modelled power from a TDP, CPU load or a constant. On a machine without RAPL and GPU
every part is estimated and energy is a function of runtime.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from dataclasses import dataclass

import torch

from pydantic import Field, model_validator

from . import data, metrics
from .energy import EnergyMeter, EnergyReading, PeakMemory, open_meter
from .models import compute_signature, context_length, model_dtype, model_size, resolve_device
from .provenance import environment
from .schema import DEVICE, Group

os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")


class EvalConfig(Group):
    """How a model is measured (the schema group of notebooks 00-04).

    The names are the YAML's and the command line's. Raises pydantic's ValidationError (a ValueError) on
    construction when a field is out of range."""

    eval_datasets: list[str] = Field(["wikitext-2:test", "tinyshakespeare:test"], min_length=1,
                                     description="corpus specs the perplexity, runtime and energy are measured on")
    eval_context: int | None = Field(256, ge=2, description="tokens per window (<= n_positions); None: the "
                                     "model's context")
    eval_stride: int | None = Field(256, ge=1, description="tokens between windows, capped at context - 1 so "
                                    "that every token has context; None: half the context")
    eval_batch_size: int = Field(8, ge=1, description="windows per forward pass")
    eval_max_tokens: int | None = Field(32768, ge=2, description="evaluate the first N tokens of each dataset; "
                                        "None: all of it")
    repeats: int = Field(6, ge=1, description="interleaved rounds: each times one pass of every variant beside Base "
                         "(the paper uses 30 repeats)")
    device: str = DEVICE
    country_iso_code: str = Field("CAN", description="electricity mix for codecarbon's emissions (energy does not "
                                  "depend on it)")
    share_timing: bool = Field(True, description="variants with the same models.compute_signature (same computation, "
                               "other weights) share the timed passes of the first of them; False times each itself")
    max_pass_interference: float = Field(0.10, ge=0, le=1, description="a pass during which other processes (and the "
                                         "hypervisor) took more than this share of its CPUs (measured_cpus), and more than the CPU counters' "
                                         "resolution (Pass.beyond_counter_resolution), is set aside and its "
                                         "round timed again (benchmarks/results/noise_limits.json)")
    max_retries: int = Field(3, ge=0, description="rounds timed again per condition (dataset) at most; when they run "
                             "out, the condition is unreliable and says which passes were disturbed")

    @model_validator(mode="after")
    def _stride_within_context(self):
        if self.eval_stride is not None and self.eval_context and self.eval_stride > self.eval_context:
            raise ValueError(f"eval_stride must be in [1, eval_context], got {self.eval_stride} "
                             f"(eval_context {self.eval_context})")
        return self


# --------------------------------------------------------------------------------------------
# Perplexity


def windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows over `n_tokens` tokens as (begin, end, n_targets) triples.

    The first window is `ids[0:context]` and scores its tokens 1..context-1. Each next window
    ends `stride` tokens later (the last one at the end of the text), spans `context` tokens,
    and scores only the tokens after the previous window's end, so every token but the first is
    a target exactly once with at least `context - stride` tokens of left context. The stride
    is capped at `context - 1`: a window's first token has no context inside the window.
    """
    stride = min(stride, context - 1)
    out = []
    end = min(context, n_tokens)
    if end > 1:
        out.append((0, end, end - 1))
    while end < n_tokens:
        new_end = min(end + stride, n_tokens)
        out.append((max(0, new_end - context), new_end, new_end - end))
        end = new_end
    return out


@torch.inference_mode()
def sliding_window_nll(model, ids: torch.Tensor, context: int, stride: int, batch_size: int = 8,
                       device: str = "cpu", warmup: bool = False) -> tuple[float, int]:
    """Sum of token NLLs (nats) and number of scored tokens under the sliding-window protocol.

    Args:
        model: causal LM returning `.logits` of shape [batch, seq, vocab].
        ids: token ids, shape [n_tokens].
        context, stride: window length and step in tokens.
        batch_size: windows of equal length per forward pass.
        warmup: run only the first batch and return (nan, 0): used to warm caches untimed.

    Returns (total_nll_nats, n_scored) with n_scored == n_tokens - 1.
    """
    spans = windows(len(ids), context, stride)
    total, count = 0.0, 0
    i = 0
    while i < len(spans):
        length = spans[i][1] - spans[i][0]
        group = [spans[i]]
        while (len(group) < batch_size and i + len(group) < len(spans)
               and spans[i + len(group)][1] - spans[i + len(group)][0] == length):
            group.append(spans[i + len(group)])
        i += len(group)
        batch = torch.stack([ids[b:e] for b, e, _ in group]).to(device)
        labels = batch.clone()
        for row, (_, _, n_t) in enumerate(group):
            labels[row, : length - n_t] = -100
        logits = model(input_ids=batch).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
            ignore_index=-100, reduction="sum",
        )
        if warmup:
            return float("nan"), 0
        total += float(nll)
        count += int((labels[:, 1:] != -100).sum())
    return total, count


# --------------------------------------------------------------------------------------------
# Energy


# --------------------------------------------------------------------------------------------
# Size and environment


# --------------------------------------------------------------------------------------------
# The protocol


_IDS_CACHE: dict = {}


def dataset_ids(tokenizer, spec: str, max_tokens: int | None = None) -> tuple[torch.Tensor, int]:
    """Token ids of a corpus split (first `max_tokens`) and the UTF-8 bytes of the text they cover."""
    text = data.load_text(spec)
    key = (id(tokenizer), spec, data.fingerprint(text))
    if key not in _IDS_CACHE:
        _IDS_CACHE[key] = data.encode(tokenizer, text)
    ids = _IDS_CACHE[key]
    if max_tokens is not None and len(ids) > max_tokens:
        ids = ids[:max_tokens]
        n_bytes = len(tokenizer.decode(ids.tolist()).encode("utf-8"))
    else:
        n_bytes = len(text.encode("utf-8"))
    if len(ids) < 2:
        raise ValueError(f"dataset {spec} has fewer than 2 tokens")
    return ids, n_bytes


# the resolution of the CPU busy counters `_cpu_times` reads (psutil: /proc/stat's clock ticks)
CLOCK_TICK_S = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") and "SC_CLK_TCK" in os.sysconf_names else 100)


def measured_cpus() -> list[int]:
    """The logical CPUs this process may run on, whose time `timed_pass` counts: every CPU unless
    the process is pinned (its affinity: `taskset`, a cgroup cpuset, a batch scheduler's allocation,
    or the test suite's workers). A process elsewhere on the machine does not take these CPUs'
    time. Where the platform has no affinity call (macOS, Windows): every CPU."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def _cpu_times() -> tuple[float, float, float]:
    """(busy CPU seconds, steal seconds, both summed over `measured_cpus`, and this process's CPU
    seconds) now. Over the whole machine where the CPU numbers do not index psutil's per-CPU list."""
    import psutil

    per_cpu, cpus = psutil.cpu_times(percpu=True), measured_cpus()
    times = [per_cpu[c] for c in cpus] if cpus and max(cpus) < len(per_cpu) else per_cpu
    busy = sum(getattr(t, f, 0.0) for t in times for f in ("user", "nice", "system", "irq", "softirq"))
    return busy, sum(getattr(t, "steal", 0.0) for t in times), time.process_time()


@dataclass
class Pass:
    """One timed evaluation pass: wall seconds, CPU seconds of this process (all its threads), CPU
    seconds other processes used meanwhile on the CPUs this process may run on (`measured_cpus`:
    the whole machine unless it is pinned), and seconds the hypervisor took from those CPUs (steal;
    0 on bare metal), each per pass when the meter's window held
    `passes` repetitions of it (a counter's shortest window, `energy.CounterMeter.min_window_s`)."""

    nll: float
    n_scored: int
    wall_s: float
    cpu_s: float
    others_cpu_s: float
    steal_s: float
    energy: EnergyReading
    passes: int = 1

    def beyond_counter_resolution(self, n_cpus: int) -> bool:
        """Whether what others took (`others_cpu_s + steal_s`) exceeds what the CPU counters can
        resolve: the busy time of each CPU moves in clock ticks (1 / SC_CLK_TCK s, 10 ms on Linux),
        so over `n_cpus` CPUs a reading of up to `n_cpus` ticks is within their error. On a pass of
        tens of milliseconds one tick is already more than a 10 % share; such a pass is not called
        disturbed on that reading alone (a pass of a second or more is judged by its share only)."""
        return self.others_cpu_s + self.steal_s > n_cpus * CLOCK_TICK_S

    def interference(self, n_cpus: int) -> float:
        """(others_cpu_s + steal_s) / (n_cpus * wall_s): the share of this process's CPUs
        (`measured_cpus`, `n_cpus` of them) that others took."""
        return (self.others_cpu_s + self.steal_s) / (n_cpus * self.wall_s)


def timed_pass(model, ids, context: int, stride: int, batch_size: int, device: str, meter,
               name: str = "pass") -> Pass:
    """Run `sliding_window_nll`, timed (wall and CPU) and metered in one window of `meter`
    (`energy.open_meter`); also records what others used meanwhile of the CPUs this process may
    run on (`measured_cpus`), the study's noise signal. The pass is repeated inside the window until it lasts the meter's `min_window_s`
    (0 for codecarbon: one pass); every time and energy is then per pass. On CUDA the device is
    synchronised before the window opens and before it closes, so the window holds the pass's
    kernels and nothing else.

    Nothing else of the study runs during the pass: Python's garbage collector is paused (as
    `timeit` does) and peak memory is sampled in the untimed warm-up instead: a sampling thread
    waking every 5 ms made the passes 8-12 % slower on 2 cores and their noise no smaller
    (`benchmarks/results/pass_noise.json`).
    """
    from .energy import _sync

    min_window = float(getattr(meter, "min_window_s", 0.0) or 0.0)
    gc.disable()  # no collection inside the timed pass (as timeit); no gc.collect() first: ~0.3 s with 40 models alive
    try:
        _sync()
        busy0, steal0, own0 = _cpu_times()
        t0, n = time.perf_counter(), 0
        with meter.task(name) as energy:
            while True:
                nll, n_scored = sliding_window_nll(model, ids, context, stride, batch_size, device)
                n += 1
                if time.perf_counter() - t0 >= min_window:
                    break
            _sync()
        busy1, steal1, own1 = _cpu_times()
    finally:
        gc.enable()
    own = own1 - own0
    if n > 1:  # per pass
        for f in ("seconds", "energy_kwh", "cpu_kwh", "gpu_kwh", "ram_kwh", "emissions_kg", "net_kwh"):
            setattr(energy, f, getattr(energy, f) / n)
    others, steal = max(0.0, (busy1 - busy0) - own), max(0.0, steal1 - steal0)
    return Pass(nll, n_scored, energy.seconds, own / n, others / n, steal / n, energy, n)


def warm_up(model, ids, context: int, stride: int, batch_size: int, device: str, max_passes: int = 5,
            tolerance: float = 0.05) -> int:
    """Untimed warm-up before the rounds. On CPU one batch (`sliding_window_nll(warmup=True)`); on
    CUDA whole passes until a pass is no more than `tolerance` faster than the one before (kernels
    selected, memory allocated, clocks settled), at most `max_passes`. Returns the passes run
    (0 for the CPU's single batch)."""
    from .energy import _sync

    if not device.startswith("cuda"):
        sliding_window_nll(model, ids, context, stride, batch_size, device, warmup=True)
        return 0
    previous = None
    for n in range(1, max_passes + 1):
        _sync()
        t0 = time.perf_counter()
        sliding_window_nll(model, ids, context, stride, batch_size, device)
        _sync()
        t = time.perf_counter() - t0
        if previous is not None and t >= previous * (1 - tolerance):
            return n
        previous = t
    return max_passes


def interleaved_order(names: list[str], round_index: int) -> list[str]:
    """The order of round `round_index` (0-based): `names` rotated left by `round_index`, so that
    every variant is measured right after each other one across rounds and none is always first.
    Each round measures every variant once (B, V1, V2, ...; then V1, V2, ..., B; ...)."""
    k = round_index % len(names) if names else 0
    return list(names[k:]) + list(names[:k])


def shared_timing(signatures: dict) -> dict:
    """Which variant's timed passes each variant uses: variant name -> the first variant (in the
    given order) with an equal signature, itself when it is the first. `signatures`: variant name
    -> anything comparable, in practice (`models.compute_signature`, window geometry). The base,
    given first, is always timed itself."""
    first = {}
    return {n: first.setdefault(sig, n) for n, sig in signatures.items()}


def evaluate_many(models: dict, datasets: list[str] | str, config: EvalConfig = EvalConfig(), *, study: str,
                  extra: dict | None = None, sizes: dict | None = None,
                  meter: EnergyMeter | None = None, on_dataset=None) -> list[dict]:
    """Measure several models with the study's interleaved, paired protocol; one record per
    (model, dataset, round).

    For each dataset: one untimed warm-up batch per model, then `config.repeats` rounds; each
    round times one whole pass of every model, in the order `interleaved_order` gives. Drift of
    the machine's speed (thermal, frequency, other tenants) then hits every model of a round
    alike, and the ratio of a variant to its base is taken per round (`ratios.paired_ratios`).
    Every pass also records its CPU time and what others used meanwhile of its CPUs (`cpu_s`,
    `others_cpu_s`, `steal_s`, `n_cpus`: `measured_cpus`; `load_avg_1m`), from which `noise.timing_noise` flags
    unreliable conditions.

    Args:
        models: variant name -> (model, tokenizer), all already on their device.
        datasets: corpus specs such as `"wikitext-2:test"`; all are loaded before measuring.
        config: `EvalConfig` (`repeats` = rounds).
        study: study name, stored in every record.
        extra: variant name -> more columns for its records (cost, notebook, ...).
        sizes: variant name -> its `model_size`, computed before the first forward (see there).
        meter: an open `EnergyMeter` to reuse; by default one is opened for this call.
        on_dataset: called with the records of each dataset as soon as its rounds are done (the
            caller writes them, so a failure later loses nothing measured).

    Returns the records, with the columns of `compstudy.results.COLUMNS` but the run's (`run_id`,
    `params_hash`), which the layer that stores them adds (`experiments.measure_variants`).

    Raises ValueError / CorpusUnavailable for bad datasets or an empty `models`, before any
    model work.
    """
    if not models:
        raise ValueError("models is empty: give at least one variant name -> (model, tokenizer)")
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    device = resolve_device(config.device)
    names = list(models)
    loaded = {(n, spec): dataset_ids(models[n][1], spec, config.eval_max_tokens) for n in names for spec in datasets}
    geometry = {}
    for n in names:
        context = min(config.eval_context or 10**9, context_length(models[n][0]))
        geometry[n] = (context, min(config.eval_stride or max(1, context // 2), context - 1))  # as `windows` uses it
    timed_as = shared_timing({n: (compute_signature(models[n][0]), geometry[n]) for n in names}) \
        if config.share_timing else {n: n for n in names}
    timed = [n for n in names if timed_as[n] == n]
    sharers = {t: [n for n in names if timed_as[n] == t] for t in timed}
    sizes = {n: (sizes or {}).get(n) or model_size(models[n][0]) for n in names}
    env = environment(device)
    dtypes = {n: model_dtype(models[n][0]) for n in names}
    n_cpus = len(measured_cpus())  # the CPUs whose time the passes count (all, unless the process is pinned)
    records = []
    own_meter = meter is None
    meter = meter or open_meter(device, config.country_iso_code)  # counters (Zeus) where readable, else codecarbon
    with (meter if own_meter else contextlib.nullcontext(meter)):
        for spec in datasets:
            label = data.corpus_label(spec)
            scored = len(loaded[(names[0], spec)][0])
            if config.eval_max_tokens is not None and scored < config.eval_max_tokens:
                print(f"{label}: {scored:,} tokens scored, fewer than the {config.eval_max_tokens:,} asked (eval_max_tokens): "
                      f"the corpus is shorter; its rows record both numbers")
            peak = {}
            for n in names:  # untimed warm-up, which is also where peak memory is sampled
                ids, _ = loaded[(n, spec)]
                with PeakMemory(device) as mem:
                    warm_up(models[n][0], ids, *geometry[n], config.eval_batch_size, device)
                peak[n] = (mem.peak_bytes, mem.method)
            own_nll = {}  # perplexity of each variant that shares another's timed passes: one untimed pass
            for n in names:
                if timed_as[n] != n:
                    (ids, _), (context, stride) = loaded[(n, spec)], geometry[n]
                    own_nll[n] = sliding_window_nll(models[n][0], ids, context, stride, config.eval_batch_size, device)
            scored_by_model = {n: metrics.from_model(models[n][0], models[n][1], spec, device) for n in names}
            done, retries = [], 0
            for r in range(config.repeats):
                attempt = 0
                while True:  # a round with a disturbed pass is set aside and timed again (max_retries per condition)
                    rows, disturbed = [], []
                    for n in interleaved_order(timed, r):
                        (ids, n_bytes), (context, stride) = loaded[(n, spec)], geometry[n]
                        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                        p = timed_pass(models[n][0], ids, context, stride, config.eval_batch_size, device, meter,
                                       f"{n}/{spec}/{r}/{attempt}")
                        interference = p.interference(n_cpus)
                        mark = ""
                        if interference > config.max_pass_interference and p.beyond_counter_resolution(n_cpus):
                            disturbed.append(f"{n} ({interference:.0%})")
                            mark = (f"others took {interference:.0%} of the measured CPUs during this pass (limit "
                                    f"{config.max_pass_interference:.0%}); round {r}, attempt {attempt}")
                        e = p.energy
                        for v in sharers[n]:
                            nll, n_scored = own_nll.get(v, (p.nll, p.n_scored))
                            rows.append({
                                "study": study, "variant": v, "dataset": label, "repeat": r, "attempt": attempt,
                                **metrics.from_pass(nll, n_scored, n_bytes), **scored_by_model[v], "tokens_scored": n_scored,
                                "bytes_evaluated": n_bytes, "context": context, "stride": stride,
                                "batch_size": config.eval_batch_size, "runtime_s": p.wall_s,
                                "tokens_per_s": p.n_scored / p.wall_s, "cpu_s": p.cpu_s, "others_cpu_s": p.others_cpu_s,
                                "steal_s": p.steal_s, "load_avg_1m": load, "n_cpus": n_cpus,
                                "interference": interference, "passes_per_window": p.passes,
                                "energy_kwh": e.energy_kwh, "energy_net_kwh": e.net_kwh, "idle_power_w": e.idle_power_w,
                                "energy_cpu_kwh": e.cpu_kwh, "energy_gpu_kwh": e.gpu_kwh,
                                "energy_ram_kwh": e.ram_kwh, "emissions_kg": e.emissions_kg,
                                "energy_method": e.method, "energy_detail": e.detail,
                                "peak_mem_bytes": peak[v][0], "peak_mem_method": peak[v][1],
                                "dtype": dtypes[v], **sizes[v], **env, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "eval_max_tokens": config.eval_max_tokens if config.eval_max_tokens is not None else "",
                                "split_rule": data.split_rule(spec),
                                "dataset_sha256": data.loaded_checksums().get(label, ""),
                                "corpora_sha256": "; ".join(f"{k}={h[:16]}" for k, h in sorted(data.loaded_checksums().items())),
                                "protocol": f"interleaved x{len(timed)}", "set_aside": "", "disturbed": mark,
                                "timed_as": n, **((extra or {}).get(v) or {}),
                            })
                    if disturbed and retries < config.max_retries:  # set aside, recorded, and the round timed again
                        why = (f"round {r}, attempt {attempt}: others took more than {config.max_pass_interference:.0%} "
                               f"of the measured CPUs during the pass of {', '.join(disturbed)}; the round was timed again")
                        for row in rows:
                            row["set_aside"] = why
                        done += rows
                        retries, attempt = retries + 1, attempt + 1
                        continue
                    done += rows  # undisturbed, or retries ran out: used, its disturbed passes marked (noise.timing_noise)
                    break
            _check_finite(done)
            if on_dataset is not None:
                on_dataset(done)
            records += done
    return records


def _check_finite(records: list[dict]) -> None:
    """A NaN or infinite perplexity is a broken model or artifact, never a row: raise ValueError
    naming the variants."""
    bad = sorted({r["variant"] for r in records if not math.isfinite(r["perplexity"])})
    if bad:
        raise ValueError(f"non-finite perplexity for {bad} on {records[0]['dataset']}: the model produces NaN or "
                         f"infinite losses (a corrupted artifact or a failed transform); nothing was written")


def evaluate(model, tokenizer, datasets: list[str] | str, config: EvalConfig = EvalConfig(), *,
             variant: str, study: str, extra: dict | None = None, meter: EnergyMeter | None = None,
             size: dict | None = None) -> list[dict]:
    """Measure one model on each dataset with the study's protocol; one record per repeat
    (`evaluate_many` with a single model: no base to pair with in the same rounds).

    Args:
        model, tokenizer: the variant to measure (already on its device / quantized).
        datasets: corpus specs such as `"wikitext-2:test"`; all are loaded before measuring.
        config: `EvalConfig`.
        variant: variant name used in tables (e.g. `"Base"`, `"Base4b"`).
        study: study name, stored in every record.
        extra: more columns for every record (e.g. the variant's compression cost).
        meter: an open `EnergyMeter` to reuse; by default one is opened for this call.
        size: the model's `model_size`, computed before its first forward (see there); None =
            compute it now.

    Returns a list of dicts with the columns of `compstudy.results.COLUMNS`.

    Raises ValueError / CorpusUnavailable for bad datasets before any model work.
    """
    return evaluate_many({variant: (model, tokenizer)}, datasets, config, study=study, extra={variant: extra or {}},
                         sizes={variant: size} if size else None, meter=meter)


@torch.inference_mode()
def time_generation(model, tokenizer, variant: str, study: str, *, new_tokens: int = 32,
                    prompt_tokens: int = 32, batch_size: int = 1, repeats: int = 3,
                    prompt_spec: str, device: str = "auto", notebook: str = "") -> list[dict]:
    """Time greedy generation of exactly `new_tokens` tokens (KV cache on) after a prompt of
    `prompt_tokens` tokens taken from `prompt_spec` (the study's first evaluation corpus, recorded as
    `prompt_corpus`), `batch_size` prompts at once.

    One untimed warm-up generation, then `repeats` timed ones, each metered by codecarbon.
    Returns one record per repeat (runtime_s, new tokens per second, energy, method) and appends
    them to `results/<study>/generation.csv`.

    Raises ValueError if a count is < 1 or prompt + new tokens exceed the model's context.
    """
    for name, value in (("new_tokens", new_tokens), ("prompt_tokens", prompt_tokens),
                        ("batch_size", batch_size), ("repeats", repeats)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    ids, _ = dataset_ids(tokenizer, prompt_spec)
    if len(ids) < batch_size * prompt_tokens:
        raise ValueError(f"prompt corpus {prompt_spec} has {len(ids)} tokens, fewer than batch_size x prompt_tokens = "
                         f"{batch_size * prompt_tokens}")
    if prompt_tokens + new_tokens > context_length(model):
        raise ValueError(f"prompt_tokens + new_tokens = {prompt_tokens + new_tokens} exceeds the "
                         f"model's context {context_length(model)}")
    device = resolve_device(device)
    prompts = torch.stack([ids[i * prompt_tokens:(i + 1) * prompt_tokens] for i in range(batch_size)]).to(device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                  pad_token_id=tokenizer.eos_token_id, attention_mask=torch.ones_like(prompts))
    model.generate(prompts, **kwargs)  # warm-up
    records = []
    with EnergyMeter() as meter:
        for repeat in range(repeats):
            with meter.task(f"generate/{variant}/{repeat}") as e:
                out = model.generate(prompts, **kwargs)
            assert out.shape[1] == prompt_tokens + new_tokens
            records.append({
                "study": study, "notebook": notebook, "variant": variant, "batch_size": batch_size,
                "prompt_tokens": prompt_tokens, "prompt_corpus": data.corpus_label(prompt_spec),
                "new_tokens": new_tokens, "repeat": repeat,
                "runtime_s": e.seconds, "tokens_per_s": batch_size * new_tokens / e.seconds,
                "energy_kwh": e.energy_kwh, "energy_method": e.method, "dtype": model_dtype(model),
                "device": device, "git_commit": environment(device)["git_commit"],
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            })
    return records


def summarize(records: list[dict] | "pandas.DataFrame"):
    """Median and spread over repeats per (variant, dataset, and batch_size when recorded) as a
    DataFrame (runtime, energy, ...).

    Columns: perplexity, bits_per_byte (identical across repeats), runtime_s and energy_kwh
    medians with their min/max, n_params, weight_bytes, and (when recorded) training_tokens and
    control.
    """
    import pandas as pd

    df = pd.DataFrame(records)
    g = df.groupby(["variant", "dataset", *(["batch_size"] if "batch_size" in df.columns else [])], sort=False)
    out = g.agg(
        perplexity=("perplexity", "median"), bits_per_byte=("bits_per_byte", "median"),
        runtime_s=("runtime_s", "median"), runtime_min_s=("runtime_s", "min"),
        runtime_max_s=("runtime_s", "max"), energy_kwh=("energy_kwh", "median"),
        energy_method=("energy_method", "first"), energy_detail=("energy_detail", "first"),
        n_params=("n_params", "first"),
        weight_bytes=("weight_bytes", "first"), repeats=("repeat", "count"),
        **({"training_tokens": ("training_tokens", "first"), "control": ("control", "first")}
           if "control" in df.columns else {}),
    )
    return out.reset_index()


__all__ = [
    "EvalConfig", "evaluate", "sliding_window_nll", "windows", "summarize", "dataset_ids",
    "evaluate_many", "interleaved_order", "timed_pass", "Pass", "time_generation",
]
