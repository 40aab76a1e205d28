"""Will the sweep fit, checked before anything is loaded; and the RSS high-water mark for ``--memory``.

Per engine the need is its own estimate when it has one (an optional ``estimate_memory(model_path, options)``
returning ``MemoryUse``, see ``engines.base``), else the whole file (every engine reads or maps every weight)
plus the KV cache for ``-c`` cells of the chosen K/V types. With ``--vs`` both engines are loaded at once, so
their needs add up. Host bytes are compared with MemAvailable, device bytes with the GPU's free memory.
"""
from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

from sweepbench.engines.base import EngineOptions, MemoryUse
from sweepbench.errors import SweepbenchError

GB = 1e9


def meminfo_bytes(key: str, path: str = "/proc/meminfo") -> int | None:
    """A /proc/meminfo entry in bytes (``MemAvailable``, ``MemTotal``), None where there is none."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name == key:
                    return int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_hwm_bytes() -> int:
    """Peak resident set of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True)
class Need:
    engine: str
    weights_bytes: int
    kv_bytes: int
    device_bytes: int | None = None  # for engines that place weights on a GPU

    @property
    def host_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes


def estimate(engine, model_path: Path, file_bytes: int, kv_bytes: int, options: EngineOptions) -> Need:
    """What ``engine`` (created, not loaded) will hold for this model and options."""
    hook = getattr(engine, "estimate_memory", None)
    if callable(hook):
        use: MemoryUse = hook(str(model_path), options)
        return Need(engine.name, use.weights_bytes + use.scratch_bytes, use.kv_bytes, use.vram_used_bytes)
    return Need(engine.name, file_bytes, kv_bytes)


def check_fit(needs: list[Need], available: int | None, gpu_free: int | None, detail: str) -> None:
    """Refuse, with the numbers, a sweep that cannot fit. ``detail`` says what the KV figure is made of."""
    host = sum(n.host_bytes for n in needs)
    if available is not None and host > available:
        parts = " + ".join(f"{n.engine}: weights {n.weights_bytes / GB:.2f} GB, KV {n.kv_bytes / GB:.2f} GB"
                           for n in needs)
        raise SweepbenchError(
            f"the sweep needs {host / GB:.2f} GB of RAM ({parts}; {detail}) but only {available / GB:.2f} GB are "
            f"available (MemAvailable); lower -c, use -ctk/-ctv q8_0, free memory, or pass --no-fit-check to try")
    device = sum(n.device_bytes or 0 for n in needs)
    if device and gpu_free is not None and device > gpu_free:
        raise SweepbenchError(
            f"the sweep needs {device / GB:.2f} GB of GPU memory ({detail}) but the GPU has {gpu_free / GB:.2f} GB "
            f"free; lower -c, use -ctk/-ctv q8_0, or pass --no-fit-check to try")
