"""numba-cpu as an engine: what it reports, that batching does not change its answers, and one-line errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from sweepbench.engines import create_engine
from sweepbench.engines.base import EngineOptions
from sweepbench.errors import SweepbenchError, UsageError


def _engine(path, **kw):
    engine = create_engine("numba-cpu")
    engine.load(str(path), EngineOptions(**{"n_ctx": 64, "n_threads": 2, **kw}))
    engine.warmup()
    return engine


def test_describe_reports_layer_simd_layout_and_compile_time(tiny_model):
    d = _engine(tiny_model("qwen3moe", expert_type="Q4_K")).describe()
    assert d["engine"] == "numba-cpu" and d["n_threads"] == 2
    assert d["threading_layer"] in ("tbb", "omp", "workqueue")
    assert d["simd"] in ("vnni", "avx2", "generic")
    assert d["layouts"]["R8"] > 0 and d["compile_seconds"] is not None and d["repack_seconds"] >= 0
    assert set(d["ignored"]) >= {"flash_attn", "fused_moe"}


def test_one_batch_equals_prefill_then_decodes(tiny_model):
    """The 4-token tiles (prefill) and the decode tiles compute the same rows: logits agree to float noise."""
    path = tiny_model("bailingmoe2", expert_type="Q8_0")
    tokens = np.random.default_rng(4).integers(0, 512, 11)
    e = _engine(path, grouped_routing=True)
    batch = e.prefill(tokens, 0, all_logits=True)
    e.truncate(0)
    steps = np.stack([e.decode(int(t), i) for i, t in enumerate(tokens)])
    assert np.abs(batch - steps).max() < 1e-3 * np.abs(batch).max()
    e.truncate(5)  # a rolled-back cache recomputes the same suffix
    again = np.stack([e.decode(int(t), 5 + i) for i, t in enumerate(tokens[5:])])
    assert np.array_equal(again, steps[5:])


@pytest.mark.parametrize("arch", ["qwen3moe", "bailingmoe2"])
@pytest.mark.parametrize("kv", ["f16", "q8_0"])
def test_small_batch_takes_the_deferred_path_and_gives_the_decodes_bits(tiny_model, arch, kv):
    """Up to SMALL_ROWS tokens run the decode path (serial twins, deferred norm/RoPE/KV store, fused residuals)
    and the single-row product tiles: a 3-token batch must give exactly the logits of 3 decodes."""
    e = _engine(tiny_model(arch, expert_type="Q8_0"), type_k=kv, type_v=kv, grouped_routing=arch == "bailingmoe2")
    tokens = np.random.default_rng(1).integers(0, 512, 7)
    e.prefill(tokens[:4], 0)
    batch = e.prefill(tokens[4:], 4, all_logits=True)
    e.truncate(4)
    steps = np.stack([e.decode(int(t), 4 + i) for i, t in enumerate(tokens[4:])])
    assert np.array_equal(batch, steps)


def test_repack_and_plain_layouts_agree(tiny_model):
    path = tiny_model("qwen3moe", expert_type="Q6_K")
    tokens = np.random.default_rng(6).integers(0, 512, 9)
    a = _engine(path).prefill(tokens, 0, all_logits=True)
    b = _engine(path, repack=False).prefill(tokens, 0, all_logits=True)
    assert np.abs(a - b).max() < 1e-3 * np.abs(a).max()


def test_bad_requests_are_one_line_errors(tiny_model):
    path = tiny_model()
    with pytest.raises(UsageError, match="q4_1"):
        _engine(path, type_k="q4_1")
    e = _engine(path)
    with pytest.raises(SweepbenchError, match="outside the vocabulary"):
        e.decode(99999, 0)
    with pytest.raises(SweepbenchError, match="leave a hole"):
        e.decode(1, 7)
    with pytest.raises(SweepbenchError, match="do not fit"):
        e.prefill(np.ones(65, np.int64), 0)


def test_logits_command_runs_numba_cpu(tiny_model, tmp_path):
    from sweepbench.cli import app

    out = tmp_path / "l.npy"
    result = CliRunner().invoke(app, ["logits", "-m", str(tiny_model()), "--tokens", "1,5,9,2", "--engine",
                                      "numba-cpu", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (4, 512)


def test_sweep_says_what_the_warm_up_does_before_it(tiny_model, tmp_path):
    """The first run on a machine compiles for minutes before the first row: the sweep says so, then how long."""
    cmd = [sys.executable, "-m", "sweepbench.cli", "sweep-bench", "-m", str(tiny_model()), "--engine", "numba-cpu",
           "-c", "32", "-ub", "16", "-n", "4", "-t", "2", "-o", str(tmp_path / "r.jsonl")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    warming = [i for i, ln in enumerate(lines) if "engine 'numba-cpu': warming up: the first run" in ln]
    warmed = [i for i, ln in enumerate(lines) if "engine 'numba-cpu': loaded in" in ln]
    assert len(warming) == 1 and len(warmed) == 1 and warming[0] < warmed[0], proc.stderr


def _compiled_signatures() -> int:
    """How many (kernel, signature) pairs Numba has compiled or loaded in the CPU kernel modules."""
    from numba.core.registry import CPUDispatcher

    from sweepbench.cpu_kernels import attention, decode_step, dense, moe, qmm, qtiles, quant_act, rowmajor, spin

    n = 0
    for mod in (attention, decode_step, dense, moe, qmm, qtiles, quant_act, rowmajor, spin):
        for obj in vars(mod).values():
            for d in (obj, getattr(obj, "serial", None)):
                if isinstance(d, CPUDispatcher):
                    n += len(d.signatures)
    return n


@pytest.mark.parametrize("arch, kv", [("qwen3moe", "f16"), ("bailingmoe2", "q8_0")])
def test_warmup_compiles_every_kernel_a_measured_window_runs(tiny_model, arch, kv):
    """Compile time is never inside a measured row: after warmup, a decode window and a full ubatch (what
    sweep-bench times) compile nothing more."""
    e = _engine(tiny_model(arch, expert_type="Q4_K"), n_ubatch=16, type_k=kv, type_v=kv,
                grouped_routing=arch == "bailingmoe2")
    before = _compiled_signatures()
    assert before > 0
    tokens = np.random.default_rng(2).integers(0, 512, 20)
    for i, t in enumerate(tokens[:4]):
        e.decode(int(t), i)
    e.truncate(0)
    e.prefill(tokens[:16], 0)
    e.decode(int(tokens[16]), 16)
    assert _compiled_signatures() == before
