"""Energy and memory meters: codecarbon around a block of work, and peak memory.

Energy is *measured* where codecarbon reads a hardware counter (Intel RAPL, NVIDIA NVML, Apple
powermetrics) and *estimated* where it models power from a TDP, the CPU load or a constant per GB
of RAM: every reading says which (`EnergyReading.method`, `energy_note`).
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
    """Energy of one measured block, in kWh, with how each part was obtained."""

    seconds: float = 0.0
    energy_kwh: float = float("nan")
    cpu_kwh: float = float("nan")
    gpu_kwh: float = float("nan")
    ram_kwh: float = float("nan")
    emissions_kg: float = float("nan")
    method: str = "unavailable"
    detail: str = ""

    def as_cost(self) -> dict:
        """The reading as an artifact recipe's `cost`: seconds, energy_kwh, method, detail."""
        return {"seconds": self.seconds, "energy_kwh": self.energy_kwh, "method": self.method, "detail": self.detail}


class EnergyMeter:
    """codecarbon `OfflineEmissionsTracker` wrapper: `with meter.task(): ...` gives a reading.

    No network access, no files written (output to `output_dir`, default a temp folder, and
    no output methods). Start it once (`with EnergyMeter() as meter:`), then time each block
    with `meter.task()`; the tracker's start/stop overhead falls outside the blocks.
    If codecarbon fails to start, readings carry `method="unavailable"` and NaN energy.
    """

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
