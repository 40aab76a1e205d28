"""System facts and the memory fit check (sweepbench.bench.system, sweepbench.bench.memory)."""
from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from sweepbench.bench import memory, system
from sweepbench.engines.base import EngineOptions, MemoryUse
from sweepbench.errors import SweepbenchError

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
physical id\t: 0
core id\t\t: 0

processor\t: 2
model name\t: AMD EPYC 7B13 64-Core Processor
physical id\t: 0
core id\t\t: 1
"""


def test_cpu_model_and_physical_cores_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert system.cpu_model(str(path)) == "AMD EPYC 7B13 64-Core Processor"
    assert system.physical_cores(str(path)) == 2  # three logical CPUs on two cores


def test_meminfo_values_in_bytes(tmp_path):
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       24683568 kB\nMemAvailable:   20000000 kB\n")
    assert memory.meminfo_bytes("MemAvailable", str(path)) == 20_000_000 * 1024
    assert memory.meminfo_bytes("SwapTotal", str(path)) is None
    assert memory.meminfo_bytes("MemTotal", str(tmp_path / "absent")) is None


def fake_nvidia_smi(tmp_path: Path, monkeypatch) -> None:
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\n"
                      'case "$1" in --query-gpu=*) echo "NVIDIA H200, 580.95.05, 143771, 140000, 9.0";;\n'
                      '*) echo "| NVIDIA-SMI 580.95.05   Driver Version: 580.95.05   CUDA Version: 13.0 |";; esac\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}")


def test_gpu_facts_from_nvidia_smi(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, monkeypatch)
    (gpu,) = system.gpus()
    assert gpu == {"name": "NVIDIA H200", "driver": "580.95.05", "memory_total_mib": 143771,
                   "memory_free_mib": 140000, "compute_capability": "9.0"}
    assert system.cuda_driver_version() == "13.0"
    assert system.gpu_free_bytes([gpu]) == 140000 * 2**20
    host = system.host_facts([gpu])
    assert host["gpu"] == "NVIDIA H200" and host["cuda_driver"] == "13.0"


def test_no_gpu_without_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert system.gpus() is None and system.cuda_driver_version() is None
    host = system.host_facts(None)
    assert host["gpu"] is None and host["gpus"] is None
    assert host["cores_logical"] >= 1 and host["ram_total_bytes"] > 0


def test_cuda_visible_devices_can_hide_the_gpu(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert system.cuda_gpu_present() is False


def test_software_and_git_facts():
    versions = system.software_facts()
    assert re.fullmatch(r"\d+\.\d+\.\d+", versions["python"]) and versions["numpy"]
    git = system.git_commit()
    if (Path(__file__).resolve().parents[1] / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", git["commit"]) and isinstance(git["dirty"], bool)
    assert system.git_commit(Path("/")) is None


class _Engine:
    name = "estimating"

    def estimate_memory(self, model_path: str, options: EngineOptions) -> MemoryUse:
        return MemoryUse(weights_bytes=4 * 10**9, kv_bytes=10**9, scratch_bytes=10**8, vram_used_bytes=6 * 10**9)


class _Plain:
    name = "plain"


def test_estimate_uses_the_engines_hook_or_file_plus_kv():
    options = EngineOptions()
    need = memory.estimate(_Engine(), Path("m.gguf"), 123, 456, options)
    assert (need.weights_bytes, need.kv_bytes, need.device_bytes) == (41 * 10**8, 10**9, 6 * 10**9)
    plain = memory.estimate(_Plain(), Path("m.gguf"), 2 * 10**9, 10**8, options)
    assert (plain.host_bytes, plain.device_bytes) == (21 * 10**8, None)


def test_fit_check_refuses_with_the_numbers():
    needs = [memory.Need("a", 2 * 10**9, 5 * 10**8), memory.Need("b", 2 * 10**9, 5 * 10**8)]
    memory.check_fit(needs, 6 * 10**9, None, "KV for -c 2048")  # 5 GB <= 6 GB: fine
    with pytest.raises(SweepbenchError) as e:
        memory.check_fit(needs, 4 * 10**9, None, "KV for -c 2048")
    assert "needs 5.00 GB of RAM (a: weights 2.00 GB, KV 0.50 GB + b: weights 2.00 GB, KV 0.50 GB; KV for -c 2048)" \
        in str(e.value) and "only 4.00 GB are available" in str(e.value)
    memory.check_fit(needs, None, None, "")  # unknown availability: nothing to refuse on


def test_fit_check_refuses_what_the_gpu_cannot_hold():
    needs = [memory.Need("gpu-engine", 10**9, 10**8, device_bytes=8 * 10**9)]
    memory.check_fit(needs, 10**12, 9 * 10**9, "KV")
    with pytest.raises(SweepbenchError, match=r"needs 8\.00 GB of GPU memory .* has 7\.00 GB free"):
        memory.check_fit(needs, 10**12, 7 * 10**9, "KV")
