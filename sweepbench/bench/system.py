"""Facts about the machine and the software for the system record (what makes two runs comparable or not).

GPU facts come from ``nvidia-smi`` when it is on the PATH (no CUDA library is imported for them); everything
else from /proc, ``platform`` and package metadata. Each probe is bounded in time and returns None when it
cannot tell, so a missing tool never stops a sweep.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from sweepbench import __version__
from sweepbench.bench.memory import meminfo_bytes

PACKAGES = ("numpy", "numba", "numba-cuda", "gguf", "ik-llama-cpp-python", "typer", "rich", "pandas")
GPU_QUERY = "name,driver_version,memory.total,memory.free,compute_cap"
PROBE_SECONDS = 10


def _run(cmd: list[str]) -> str | None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_SECONDS, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return platform.processor() or None
    m = re.search(r"^(?:model name|Model|cpu model)\s*:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else platform.processor() or None


def physical_cores(cpuinfo: str = "/proc/cpuinfo") -> int | None:
    """Distinct (physical id, core id) pairs; None where /proc/cpuinfo does not say."""
    try:
        blocks = Path(cpuinfo).read_text(errors="replace").split("\n\n")
    except OSError:
        return None
    cores = set()
    for block in blocks:
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores) or None


def gpus() -> list[dict] | None:
    """One dict per NVIDIA GPU (name, driver, memory in MiB, compute capability), None without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = _run(["nvidia-smi", f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"])
    if out is None:
        return None
    found = []
    for line in out.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 5:
            continue
        name, driver, total, free, cc = cells
        found.append({"name": name, "driver": driver, "memory_total_mib": _int(total),
                      "memory_free_mib": _int(free), "compute_capability": cc})
    return found or None


def cuda_driver_version() -> str | None:
    out = _run(["nvidia-smi"]) if shutil.which("nvidia-smi") else None
    m = re.search(r"CUDA Version:\s*([\d.]+)", out or "")
    return m.group(1) if m else None


def cuda_gpu_present() -> bool:
    """Whether a CUDA GPU is usable here (for the default engine); cheap checks first."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir() and any(proc.iterdir()):
        return True
    return bool(gpus())


def gpu_free_bytes(devices: list[dict] | None) -> int | None:
    if not devices or devices[0].get("memory_free_mib") is None:
        return None
    return devices[0]["memory_free_mib"] * 2**20  # engines use the first visible device


def _int(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None


def git_commit(directory: Path | None = None) -> dict | None:
    """The commit sweepbench runs from and whether its tree has changes, if it runs from a git checkout."""
    directory = directory or Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (directory / ".git").exists():
        return None
    commit = _run(["git", "-C", str(directory), "rev-parse", "HEAD"])
    if commit is None:
        return None
    status = _run(["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}


def host_facts(devices: list[dict] | None) -> dict:
    uname = platform.uname()
    return {
        "hostname": uname.node,
        "os": f"{uname.system} {uname.release}",
        "machine": uname.machine,
        "cpu": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": physical_cores(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_total_bytes": meminfo_bytes("MemTotal"),
        "ram_available_bytes": meminfo_bytes("MemAvailable"),
        "gpu": devices[0]["name"] if devices else None,  # what compare matches hosts on
        "gpus": devices,
        "cuda_driver": cuda_driver_version() if devices else None,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def software_facts() -> dict:
    versions = {"python": platform.python_version(), "python_implementation": platform.python_implementation()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def tool_facts(argv: list[str] | None = None) -> dict:
    return {"tool": "sweepbench", "version": __version__, "git": git_commit(),
            "argv": list(sys.argv if argv is None else argv)}
