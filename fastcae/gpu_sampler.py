"""GPU readings for the throughput report (``fastcae.profiling``): NVML, read on a daemon thread.

``GPUSampler`` reads utilisation, memory, power, SM clock and temperature of one or several GPUs through
nvidia-ml-py at ~10 Hz. Without NVML (no driver, CI, CPU runs) nothing raises: the sampler says in plain words
why it has no samples, and the report keeps the loop's own throughput numbers.
"""

from __future__ import annotations

import threading
import time

UNAVAILABLE_PREFIX = "GPU metrics unavailable: "  # how every ``GPUSampler.reason`` begins


class GPUSampler:
    """Reads utilisation, memory, power, SM clock and temperature every ``interval`` seconds on a daemon thread.

    Never raises for a missing library or driver: ``available`` becomes False and ``reason`` explains why, so
    the same code profiles a GPU run and a CPU-only CI run. Samples are dicts with keys ``t``
    (perf_counter seconds), ``util_pct``, ``mem_mib``, ``power_w``, ``sm_mhz``, ``temp_c``; a reading the
    device does not support is None. ``device_index`` may list several GPUs (a torchrun job's rank 0 samples
    every GPU of its node): each tick then reads each of them, and each sample carries its ``gpu`` index.
    """

    def __init__(self, device_index: int | list[int] | tuple[int, ...] = 0, interval: float = 0.1):
        self.device_indices = [device_index] if isinstance(device_index, int) else list(device_index)
        if not self.device_indices:
            raise ValueError("GPUSampler needs at least one device index")
        self.interval = interval
        self.available = False
        self.reason: str | None = None
        self.device_name: str | None = None
        self.driver_version: str | None = None
        self._samples: list[dict] = []
        self._nvml = None
        self._handles: list = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def samples(self) -> list[dict]:
        return list(self._samples)

    def start(self) -> "GPUSampler":
        """Initialise NVML and start the thread; on any NVML failure, record why and return quietly."""
        if self._thread is not None:
            return self
        try:
            import pynvml
        except ImportError as exc:
            self.reason = f"{UNAVAILABLE_PREFIX}the nvidia-ml-py package (pynvml) is not installed ({exc})"
            return self
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self.reason = (f"{UNAVAILABLE_PREFIX}NVML could not be initialised ({exc}); no NVIDIA driver, "
                           f"or no NVIDIA GPU on this machine")
            return self
        handles = []
        for index in self.device_indices:
            try:
                handles.append(pynvml.nvmlDeviceGetHandleByIndex(index))
            except pynvml.NVMLError as exc:
                pynvml.nvmlShutdown()
                self.reason = f"{UNAVAILABLE_PREFIX}NVML has no GPU at index {index} ({exc})"
                return self
        self._nvml, self._handles = pynvml, handles
        self.available, self.reason = True, None
        names = [_text(self._read(pynvml.nvmlDeviceGetName, h)) for h in handles]
        self.device_name = (names[0] if len(names) == 1 else f"{len(names)} x {names[0]}" if len(set(names)) == 1
                            else ", ".join(str(n) for n in names))
        self.driver_version = _text(self._read(pynvml.nvmlSystemGetDriverVersion))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fastcae-gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> "GPUSampler":
        """Stop the thread and shut NVML down (only if this sampler initialised it). Safe to call twice."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None
        return self

    def __enter__(self) -> "GPUSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _read(self, fn, *args):
        """One reading, or None when this device does not support it (e.g. power on some boards)."""
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001  (NVMLError_NotSupported, or a function missing from an older pynvml)
            return None

    def sample_once(self) -> dict:
        """Take one reading of every sampled GPU now and append them (the thread calls this; tests may too);
        returns the first GPU's."""
        readings = [self._reading(h) for h in self._handles]
        if len(readings) > 1:
            for index, reading in zip(self.device_indices, readings):
                reading["gpu"] = index
        self._samples.extend(readings)
        return readings[0]

    def _reading(self, h) -> dict:
        nv = self._nvml
        util = self._read(nv.nvmlDeviceGetUtilizationRates, h)
        mem = self._read(nv.nvmlDeviceGetMemoryInfo, h)
        power_mw = self._read(nv.nvmlDeviceGetPowerUsage, h)
        sample = {
            "t": time.perf_counter(),
            "util_pct": float(util.gpu) if util is not None else None,
            "mem_mib": mem.used / 2**20 if mem is not None else None,
            "power_w": power_mw / 1000.0 if power_mw is not None else None,
            "sm_mhz": _num(self._read(nv.nvmlDeviceGetClockInfo, h, getattr(nv, "NVML_CLOCK_SM", 1))),
            "temp_c": _num(self._read(nv.nvmlDeviceGetTemperature, h, getattr(nv, "NVML_TEMPERATURE_GPU", 0))),
        }
        return sample

    def _run(self) -> None:
        self.sample_once()
        while not self._stop.wait(self.interval):
            self.sample_once()


def _num(value):
    return float(value) if value is not None else None


def _text(value):
    if isinstance(value, bytes):  # older pynvml returns bytes
        return value.decode(errors="replace")
    return value
