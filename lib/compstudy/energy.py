"""Energy and memory meters, and peak memory.

Two meters with one interface (`with meter: ...`, `with meter.task(name) as reading: ...`), chosen by
`open_meter`:

- `CounterMeter` (Zeus, `zeus.monitor.ZeusMonitor`): the NVIDIA GPU's cumulative NVML energy counter
  (the devices `CUDA_VISIBLE_DEVICES` shows) and, where readable, Intel RAPL's CPU package and DRAM
  counters, each window opened and closed with the GPU synchronised. Energy is then *measured*. Zeus
  is the optional extra `pip install -e .[gpu]`.
- `EnergyMeter` (codecarbon's offline tracker): where no counter can be read (these 2-core CI
  machines have neither RAPL nor a GPU), codecarbon models CPU power from a TDP and the load and RAM
  power as a constant: energy is *estimated*, a function of runtime. codecarbon also gives the
  grid's emissions (`country_iso_code`), which the counters do not.

Every reading says which (`EnergyReading.method`, `energy_note`). A counter meter measures the
device's idle power before the first window (`idle_power_w`), so that every reading has its gross
energy and its energy above idle (`net_kwh`), and sets a shortest window (`min_window_s`, ten of the
counter's update periods) that `measure.timed_pass` fills by repeating the pass.
"""
from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from dataclasses import dataclass

import torch


@dataclass
class EnergyReading:
    """Energy of one measured block, in kWh, with how each part was obtained: gross (`energy_kwh`)
    and above the device's idle power (`net_kwh` = gross - idle_power_w x seconds; NaN where no idle
    power was measured)."""

    seconds: float = 0.0
    energy_kwh: float = float("nan")
    cpu_kwh: float = float("nan")
    gpu_kwh: float = float("nan")
    ram_kwh: float = float("nan")
    emissions_kg: float = float("nan")
    method: str = "unavailable"
    detail: str = ""
    net_kwh: float = float("nan")
    idle_power_w: float = float("nan")

    def as_cost(self) -> dict:
        """The reading as an artifact recipe's `cost`: seconds, energy_kwh, method, detail."""
        return {"seconds": self.seconds, "energy_kwh": self.energy_kwh, "method": self.method, "detail": self.detail}


class EnergyMeter:
    """codecarbon `OfflineEmissionsTracker` wrapper: `with meter.task(): ...` gives a reading
    (estimated energy where the machine has no counter; see the module docstring).

    No network access, no files written (output to `output_dir`, default a temp folder, and
    no output methods). Start it once (`with EnergyMeter() as meter:`), then time each block
    with `meter.task()`; the tracker's start/stop overhead falls outside the blocks.
    If codecarbon fails to start, readings carry `method="unavailable"` and NaN energy.
    """

    min_window_s = 0.0  # codecarbon integrates its samples over any window
    idle_power_w = float("nan")

    def __init__(self, country_iso_code: str = "CAN", measure_power_secs: float = 1.0):
        self.country_iso_code = country_iso_code
        self.measure_power_secs = measure_power_secs
        self._tracker = None
        self._tmp = None
        self.error = None

    def __enter__(self):
        try:
            from codecarbon import OfflineEmissionsTracker

            self._tmp = tempfile.TemporaryDirectory(prefix="codecarbon-")
            self._tracker = OfflineEmissionsTracker(
                country_iso_code=self.country_iso_code, output_methods=[], output_dir=self._tmp.name,
                log_level="error", measure_power_secs=self.measure_power_secs, tracking_mode="machine",
            )
            self._tracker.start()
        except Exception as exc:  # energy is optional: never lose a measurement for it
            self._tracker, self.error = None, f"{type(exc).__name__}: {exc}"
        return self

    def __exit__(self, *exc):
        if self._tracker is not None:
            with contextlib.suppress(Exception):
                self._tracker.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
        return False

    def method(self) -> tuple[str, str]:
        """('measured' | 'partly measured' | 'estimated' | 'unavailable', per-part detail)."""
        if self._tracker is None:
            return "unavailable", self.error or "codecarbon not started"
        parts = {}
        for hw in getattr(self._tracker, "_hardware", []):
            kind = type(hw).__name__
            mode = getattr(hw, "_mode", None)
            if kind == "GPU":
                parts["gpu"] = "measured (NVML)"
            elif kind == "CPU":
                parts["cpu"] = ("measured (RAPL)" if mode == "intel_rapl" else
                                f"estimated ({mode}, TDP {getattr(hw, '_tdp', '?')} W)")
            elif kind == "RAM":
                parts["ram"] = "estimated (constant W per GB)"
            elif kind == "AppleSiliconChip":
                parts[kind.lower()] = "measured (powermetrics)"
        measured = [k for k, v in parts.items() if v.startswith("measured")]
        overall = ("measured" if parts and len(measured) == len(parts) else
                   "partly measured" if measured else "estimated")
        return overall, "; ".join(f"{k}: {v}" for k, v in sorted(parts.items()))

    @contextlib.contextmanager
    def task(self, name: str = "block"):
        """Time and meter the enclosed block; yields an `EnergyReading` filled in on exit."""
        reading = EnergyReading()
        started = False
        if self._tracker is not None:
            try:
                self._tracker.start_task(name)
                started = True
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
        t0 = time.perf_counter()
        try:
            yield reading
        finally:
            _sync()
            reading.seconds = time.perf_counter() - t0
            if started:
                try:
                    d = self._tracker.stop_task()
                    reading.energy_kwh, reading.cpu_kwh = d.energy_consumed, d.cpu_energy
                    reading.gpu_kwh, reading.ram_kwh = d.gpu_energy, d.ram_energy
                    reading.emissions_kg = d.emissions
                except Exception as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
            reading.method, reading.detail = self.method()


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


NVML_UPDATE_PERIOD_S = 0.1  # NVML's energy counter is refreshed about every 100 ms or faster (gpu_check measures it)
RAPL_UPDATE_PERIOD_S = 0.001
WINDOW_PERIODS = 10  # a window lasts at least ten counter updates


class CounterMeter:
    """Energy read from hardware counters through Zeus (`zeus.monitor.ZeusMonitor`): the GPUs'
    NVML energy counters and, where readable, RAPL's CPU package and DRAM counters; `method` is
    "measured" for every part read from a counter. Windows are synchronised with the GPU (Zeus
    synchronises around `begin_window` / `end_window`).

    Args:
        monitor: a ZeusMonitor, or anything with its `begin_window(key)` / `end_window(key)`
            returning a measurement with `time` (s), `gpu_energy`, `cpu_energy`, `dram_energy`
            ({index: J}, the last two None when not read); None creates one for the visible GPUs
            and the readable CPU packages.
        idle_s: seconds of idle measured when the meter opens (`idle_power_w`); 0 skips it.
        update_period_s: the slowest counter's update period (default NVML's when GPUs are
            monitored, RAPL's otherwise); `min_window_s` is `WINDOW_PERIODS` of it.

    Raises RuntimeError when Zeus is not installed (`pip install -e .[gpu]`) and no monitor is given.
    """

    def __init__(self, monitor=None, idle_s: float = 2.0, update_period_s: float | None = None,
                 country_iso_code: str = "CAN"):
        if monitor is None:
            try:
                from zeus.monitor import ZeusMonitor
            except ImportError:
                raise RuntimeError("Zeus is not installed: pip install -e .[gpu] (zeus==0.16.0)") from None
            monitor = ZeusMonitor()
        self.monitor = monitor
        self.country_iso_code = country_iso_code
        gpus = list(getattr(monitor, "gpu_indices", []) or [])
        cpus = list(getattr(monitor, "cpu_indices", []) or [])
        self.parts = {"gpu": bool(gpus), "cpu": bool(cpus)}
        period = update_period_s or (NVML_UPDATE_PERIOD_S if gpus else RAPL_UPDATE_PERIOD_S)
        self.min_window_s = WINDOW_PERIODS * period
        self.idle_s = idle_s
        self.idle_power_w = float("nan")
        self._count = 0

    def __enter__(self):
        if self.idle_s > 0:  # the device's own power, with nothing of the study running
            self.monitor.begin_window("idle")
            time.sleep(self.idle_s)
            m = self.monitor.end_window("idle")
            self.idle_power_w = self._joules(m) / max(m.time, 1e-9)
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def _joules(m) -> float:
        return sum((m.gpu_energy or {}).values()) + sum((m.cpu_energy or {}).values()) + sum((m.dram_energy or {}).values())

    def method(self) -> tuple[str, str]:
        detail = []
        if self.parts["gpu"]:
            detail.append("gpu: measured (NVML energy counter, Zeus)")
        if self.parts["cpu"]:
            detail.append("cpu: measured (RAPL package and DRAM counters, Zeus)")
        return ("measured" if detail else "unavailable"), "; ".join(detail) or "no counter"

    @contextlib.contextmanager
    def task(self, name: str = "block"):
        """Meter the enclosed block with one counter window; yields an `EnergyReading` filled in on
        exit (kWh; `net_kwh` above the idle power measured when the meter opened)."""
        reading = EnergyReading()
        key = f"{name}#{self._count}"
        self._count += 1
        self.monitor.begin_window(key)
        t0 = time.perf_counter()
        try:
            yield reading
        finally:
            m = self.monitor.end_window(key)
            reading.seconds = getattr(m, "time", None) or (time.perf_counter() - t0)
            joules = self._joules(m)
            reading.gpu_kwh = sum((m.gpu_energy or {}).values()) / 3.6e6 if self.parts["gpu"] else float("nan")
            reading.cpu_kwh = sum((m.cpu_energy or {}).values()) / 3.6e6 if m.cpu_energy else float("nan")
            reading.ram_kwh = sum((m.dram_energy or {}).values()) / 3.6e6 if m.dram_energy else float("nan")
            reading.energy_kwh = joules / 3.6e6
            reading.idle_power_w = self.idle_power_w
            reading.net_kwh = (joules - self.idle_power_w * reading.seconds) / 3.6e6
            reading.method, reading.detail = self.method()


def counters_readable(device: str) -> bool:
    """Whether Zeus is installed and a counter can be read for `device`: a CUDA device (NVML), or
    RAPL on this machine (`/sys/class/powercap/intel-rapl` readable)."""
    import importlib.util
    import os

    if importlib.util.find_spec("zeus") is None:
        return False
    if device.startswith("cuda"):
        return torch.cuda.is_available()
    return os.access("/sys/class/powercap/intel-rapl:0/energy_uj", os.R_OK)


def open_meter(device: str, country_iso_code: str = "CAN", monitor=None):
    """The meter the study measures with on `device`: a `CounterMeter` (Zeus) where a counter can be
    read (`counters_readable`) or a `monitor` is given, else codecarbon's `EnergyMeter` (estimated)."""
    if monitor is not None or counters_readable(device):
        if monitor is None:
            from zeus.monitor import ZeusMonitor

            index = int(device.split(":")[1]) if device.startswith("cuda:") else 0
            monitor = ZeusMonitor(gpu_indices=[index] if device.startswith("cuda") else [],
                                  cpu_indices=None if not device.startswith("cuda") else [])
        return CounterMeter(monitor, country_iso_code=country_iso_code)
    return EnergyMeter(country_iso_code)


class PeakMemory:
    """Peak memory of a block in bytes: CUDA max allocated on GPU; on CPU, the peak increase of
    the process's resident set size over its value at the start (sampled every 5 ms)."""

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = 0
        self.method = "cuda_max_allocated" if device.startswith("cuda") else "rss_increase"

    def __enter__(self):
        if self.method == "cuda_max_allocated":
            torch.cuda.reset_peak_memory_stats()
            return self
        import psutil

        self._proc = psutil.Process()
        self._base = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss - self._base)
            self._stop.wait(0.005)

    def __exit__(self, *exc):
        if self.method == "cuda_max_allocated":
            self.peak_bytes = int(torch.cuda.max_memory_allocated())
        else:
            self._stop.set()
            self._thread.join()
        return False


def energy_note(records) -> str:
    """One sentence on how the energy in `records` was obtained and what that means."""
    import pandas as pd

    df = pd.DataFrame(records)
    methods = sorted(set(df["energy_method"]))
    detail = "; ".join(sorted(set(df["energy_detail"])))
    if methods == ["measured"]:
        return f"Energy was measured by hardware counters ({detail})."
    if "unavailable" in methods:
        return f"Energy could not be obtained for some rows ({detail})."
    if methods == ["estimated"]:
        return (f"Energy was ESTIMATED, not measured ({detail}): codecarbon found no RAPL or NVML "
                f"counter, so it multiplied modelled power by time. Energy here is a function of "
                f"runtime; energy ratios repeat runtime ratios and carry no independent information.")
    return f"Energy was partly measured ({detail}): the measured parts come from hardware counters."
