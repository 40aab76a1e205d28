"""Running out of GPU memory is one line and a non-zero exit, whether it happens while loading (before any row) or
inside a window (the rows before it stand). No GPU needed: the driver's error is imitated by name and text."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sweepbench.bench.loop import RowFailed
from sweepbench.bench.plan import Window
from sweepbench.errors import OUT_OF_GPU_MEMORY, is_gpu_out_of_memory


class CudaAPIError(Exception):
    """numba-cuda's driver error, as ``str()`` shows a refused cuMemAlloc."""


OOM = CudaAPIError("[CUresult.CUDA_ERROR_OUT_OF_MEMORY] Call to cuMemAlloc results in CUDA_ERROR_OUT_OF_MEMORY")


def test_only_the_drivers_out_of_memory_error_is_recognised():
    assert is_gpu_out_of_memory(OOM)
    assert not is_gpu_out_of_memory(CudaAPIError("[CUresult.CUDA_ERROR_ILLEGAL_ADDRESS] Call to cuMemcpyDtoH ..."))
    assert not is_gpu_out_of_memory(RuntimeError("CUDA_ERROR_OUT_OF_MEMORY"))


def test_a_window_that_runs_out_names_it_and_says_what_to_do():
    e = RowFailed("numba-cuda", Window(3, 6144, True), "PP", OOM)
    assert str(e) == f"engine 'numba-cuda' failed in the PP of the window at N_KV = 6144: {OUT_OF_GPU_MEMORY}"


class _Hungry:
    name = "numba-cuda"

    def load(self, model_path, options):
        raise OOM

    def close(self):
        pass


class _Broken(_Hungry):
    def load(self, model_path, options):
        raise CudaAPIError("[CUresult.CUDA_ERROR_ILLEGAL_ADDRESS] Call to cuMemcpyDtoH results in ILLEGAL_ADDRESS")


def test_running_out_while_loading_is_one_line_and_exit_1(tiny_model, monkeypatch, tmp_path):
    from sweepbench.bench import session
    from sweepbench.cli import app

    monkeypatch.setattr(session, "create_engine", lambda name: _Hungry())
    args = ["sweep-bench", "-m", str(tiny_model()), "-c", "64", "-ub", "16", "-o", str(tmp_path / "r.jsonl")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines()[-1] == f"sweepbench: error: {OUT_OF_GPU_MEMORY}"
    assert "Traceback" not in result.output
    # any other driver error is a bug of ours and keeps its traceback
    monkeypatch.setattr(session, "create_engine", lambda name: _Broken())
    with pytest.raises(CudaAPIError, match="ILLEGAL_ADDRESS"):
        CliRunner().invoke(app, args, catch_exceptions=False)


def test_the_fit_estimate_covers_what_a_dry_run_allocates():
    """benchmarks/gpu_memory_check.py runs the engine dry (NumPy arrays for device ones) on both architectures
    at four ubatch sizes: its pool and all its device arrays must lie within 1.0-1.5x (+0.5 MiB) of the
    estimates. It fails, for one, when the residual stream's adds keep their addends (the pool then grows with
    the layers)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "benchmarks/gpu_memory_check.py"], cwd=root, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert out.stdout.count("ok   ") == 16 and "0 estimates outside" in out.stdout, out.stdout


def test_the_engine_estimate_adds_weights_kv_and_scratch(tiny_model):
    """numba-cuda's fit estimate: every weight that runs (the tied head twice), the KV cache of -c cells in the
    chosen types, and the scratch; nothing of it in host RAM but the largest tensor's two copies."""
    from cuda_kernels.footprint import scratch_bytes
    from sweepbench.engines.base import EngineOptions
    from sweepbench.engines.numba_cuda import NumbaCudaEngine
    from sweepbench.models.tensors import open_model

    path = tiny_model("bailingmoe2", expert_type="Q4_K")
    model, cfg = open_model(path)
    weights = sum(t.n_bytes for t in model.tensors.values())
    for kv, per_value in (("f16", 2), ("q8_0", 34 / 32)):
        opts = EngineOptions(n_ctx=1000, n_ubatch=64, type_k=kv, type_v=kv)
        use = NumbaCudaEngine().estimate_memory(str(path), opts)
        kv_bytes = int(cfg.n_layer * cfg.n_embd_kv * 2 * per_value * 1000)
        assert use.vram_used_bytes == weights + kv_bytes + scratch_bytes(cfg, 64, 1000, kv, kv)
        assert use.kv_bytes == 0 and use.weights_bytes == 2 * max(t.n_bytes for t in model.tensors.values())
