"""Every kernel starts with the grid-dependency wait (cuda_kernels/lint.py), which programmatic edges in the
decode graphs rely on; the PDL switch's values."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from cuda_kernels import lint

ROOT = Path(__file__).parents[1]


def test_every_kernel_definition_waits_first():
    assert lint.kernels_without_wait(ROOT / "cuda_kernels") == []
    # the scan does see the kernels: at least the module-level ones and the factories' jit(name) targets
    n = sum(len(lint._jit_targets(ast.parse(p.read_text()))) for p in (ROOT / "cuda_kernels").glob("*.py"))
    assert n >= 15


def test_every_kernel_the_engine_launches_waits_first():
    """The compile check's dry run records every kernel the engine launches (factory-built ones included) on
    seven model mixes; --waits-only checks their sources without compiling."""
    out = subprocess.run([sys.executable, "benchmarks/gpu_compile_check.py", "--waits-only"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert ", 0 without the wait first" in out.stdout


def _with_wait(x):
    """doc"""
    grid_dep_wait()  # noqa: F821
    x[0] = 1


def _wait_second(x):
    x[0] = 1
    grid_dep_wait()  # noqa: F821


def _other_call_first(x):
    sync()  # noqa: F821
    grid_dep_wait()  # noqa: F821


def _prefetch_then_wait(x):
    if flag:  # noqa: F821
        prefetch_rows(x, 0, 1, 1)  # noqa: F821
    grid_dep_wait()  # noqa: F821


def _load_under_prefetch_guard(x):
    if flag:  # noqa: F821
        prefetch_rows(x, 0, 1, 1)  # noqa: F821
        y = x[0]  # noqa: F841
    grid_dep_wait()  # noqa: F821


def test_the_rule_wants_the_wait_as_first_statement(tmp_path):
    assert lint.waits_first(_prefetch_then_wait)
    assert not lint.waits_first(_load_under_prefetch_guard)
    assert lint.waits_first(_with_wait)
    assert not lint.waits_first(_wait_second)
    assert not lint.waits_first(_other_call_first)
    (tmp_path / "k.py").write_text(
        "@jit\ndef a(x):\n    grid_dep_wait()\n\n\n@jit\ndef b(x):\n    x[0] = 1\n\n\n"
        "def f():\n    def c(x):\n        '''doc'''\n        x[0] = 2\n    return jit(c)\n")
    assert lint.kernels_without_wait(tmp_path) == ["k:b", "k:c"]


@pytest.mark.parametrize(("value", "want"), [("", "order"), ("off", "off"), (" ORDER ", "order"), ("exit", "exit")])
def test_pdl_setting(monkeypatch, value, want):
    from cuda_kernels import env, ops_table

    monkeypatch.setenv("SWEEPBENCH_CUDA_PDL", value)
    monkeypatch.setattr(env, "GRID_DEP", True)
    assert ops_table.pdl_setting() == want
    monkeypatch.setattr(env, "GRID_DEP", False)  # a GPU before sm_90: the kernels carry no wait
    assert ops_table.pdl_setting() == "off"


def test_pdl_setting_rejects_other_values(monkeypatch):
    from cuda_kernels import ops_table
    from sweepbench.errors import UsageError

    monkeypatch.setenv("SWEEPBENCH_CUDA_PDL", "on")
    with pytest.raises(UsageError, match="SWEEPBENCH_CUDA_PDL=on: choose off, order or exit"):
        ops_table.pdl_setting()


def test_pdl_deep_cells(monkeypatch):
    """512 cells unless the architecture has its own default (Ling: 128); the variable overrides both."""
    from cuda_kernels import ops_table
    from sweepbench.errors import UsageError

    monkeypatch.delenv("SWEEPBENCH_CUDA_PDL_DEEP", raising=False)
    assert ops_table.pdl_deep_cells() == 512
    assert ops_table.pdl_deep_cells("qwen3moe") == 512
    assert ops_table.pdl_deep_cells("bailingmoe2") == 128
    monkeypatch.setenv("SWEEPBENCH_CUDA_PDL_DEEP", "0")
    assert ops_table.pdl_deep_cells() == 0
    assert ops_table.pdl_deep_cells("bailingmoe2") == 0
    monkeypatch.setenv("SWEEPBENCH_CUDA_PDL_DEEP", "-5")
    with pytest.raises(UsageError, match="a number of cells"):
        ops_table.pdl_deep_cells()


@pytest.mark.parametrize(("func", "name", "on", "off", "bad", "choices"), [
    ("prefetch_setting", "SWEEPBENCH_CUDA_PREFETCH", " ON ", "off", "yes", "on or off"),
    ("tails_setting", "SWEEPBENCH_CUDA_TAILS", "on", "OFF", "1", "on or off"),
])
def test_two_way_switches(monkeypatch, func, name, on, off, bad, choices):
    """Each on/off decode-step switch: off when unset, case and blanks ignored, anything else a usage error that
    names the choices."""
    from cuda_kernels import ops_table
    from sweepbench.errors import UsageError

    setting = getattr(ops_table, func)
    monkeypatch.delenv(name, raising=False)
    assert setting() is False
    monkeypatch.setenv(name, on)
    assert setting() is True
    monkeypatch.setenv(name, off)
    assert setting() is False
    monkeypatch.setenv(name, bad)
    with pytest.raises(UsageError, match=f"{name}={bad.lower()}: choose {choices}"):
        setting()


@pytest.mark.parametrize(("func", "name", "default", "other", "bad"), [
    ("q8_prefill_setting", "SWEEPBENCH_CUDA_Q8_PREFILL", "f16", "stage", "fp16"),
    ("q8_decode_setting", "SWEEPBENCH_CUDA_Q8_DECODE", "hoist", "inline", "early")])
def test_q8_cache_settings(monkeypatch, func, name, default, other, bad):
    """How attention reads a q8_0 cache: SWEEPBENCH_CUDA_Q8_PREFILL f16 when unset, stage on request;
    SWEEPBENCH_CUDA_Q8_DECODE hoist when unset (faster on the H100 at every depth), inline on request;
    anything else a usage error naming both."""
    from cuda_kernels import ops_table
    from sweepbench.errors import UsageError

    setting = getattr(ops_table, func)
    monkeypatch.delenv(name, raising=False)
    assert setting() == default
    monkeypatch.setenv(name, f" {other.upper()} ")
    assert setting() == other
    monkeypatch.setenv(name, bad)
    with pytest.raises(UsageError, match=f"{name}={bad}: choose ") as err:
        setting()
    assert sorted(str(err.value).split(": choose ")[1].split(" or ")) == sorted([default, other])


def test_att_tpw_setting(monkeypatch):
    """SWEEPBENCH_CUDA_ATT_TPW: attention.TPW when unset, a power of two up to 8 on request, else a usage error."""
    from cuda_kernels import attention, ops_table
    from sweepbench.errors import UsageError

    monkeypatch.delenv("SWEEPBENCH_CUDA_ATT_TPW", raising=False)
    assert ops_table.att_tpw_setting() == attention.TPW
    monkeypatch.setenv("SWEEPBENCH_CUDA_ATT_TPW", " 1 ")
    assert ops_table.att_tpw_setting() == 1
    monkeypatch.setenv("SWEEPBENCH_CUDA_ATT_TPW", "3")
    with pytest.raises(UsageError, match="SWEEPBENCH_CUDA_ATT_TPW=3: choose 1, 2, 4 or 8"):
        ops_table.att_tpw_setting()



def test_flash_setting(monkeypatch):
    """The prefill attention's variant: SWEEPBENCH_CUDA_FLASH ex2-wide-trans when unset (the fastest on the H100),
    any of the variants on request, anything else a usage error naming them all."""
    from cuda_kernels import flash
    from cuda_kernels.ops_table import flash_setting
    from sweepbench.errors import UsageError

    monkeypatch.delenv("SWEEPBENCH_CUDA_FLASH", raising=False)
    assert flash_setting() == "ex2-wide-trans"
    for variant in flash.VARIANTS:
        monkeypatch.setenv("SWEEPBENCH_CUDA_FLASH", f" {variant.upper()} ")
        assert flash_setting() == variant
    monkeypatch.setenv("SWEEPBENCH_CUDA_FLASH", "fast")
    choices = "ex2 or ex2-wide-trans"
    with pytest.raises(UsageError, match=f"SWEEPBENCH_CUDA_FLASH=fast: choose {choices}"):
        flash_setting()


def test_gemm_settings(monkeypatch):
    """The prefill GEMMs: SWEEPBENCH_CUDA_GEMM late-swz (measured fastest on the H100) and SWEEPBENCH_CUDA_GEMM_REGS 0
    (no cap) when unset, the other choices on request, anything else a usage error naming the choices."""
    from cuda_kernels.ops_table import gemm_regs_setting, gemm_setting
    from sweepbench.errors import UsageError

    monkeypatch.delenv("SWEEPBENCH_CUDA_GEMM", raising=False)
    monkeypatch.delenv("SWEEPBENCH_CUDA_GEMM_REGS", raising=False)
    assert (gemm_setting(), gemm_regs_setting()) == ("late-swz", 0)
    monkeypatch.setenv("SWEEPBENCH_CUDA_GEMM", " Late ")
    monkeypatch.setenv("SWEEPBENCH_CUDA_GEMM_REGS", "128")
    assert (gemm_setting(), gemm_regs_setting()) == ("late", 128)
    monkeypatch.setenv("SWEEPBENCH_CUDA_GEMM_REGS", "96")
    with pytest.raises(UsageError, match="SWEEPBENCH_CUDA_GEMM_REGS=96: choose 0 or 128"):
        gemm_regs_setting()


def test_gemm_activations_and_flash_split_settings(monkeypatch):
    """SWEEPBENCH_CUDA_GEMM_X f16 and SWEEPBENCH_CUDA_FLASH_SPLIT auto when unset (measured faster, H100); the
    split's ``auto`` rule: from N_KV 1024, as many parts (at most 4) as the SMs hold blocks of query tiles x
    heads, else one."""
    from types import SimpleNamespace

    from cuda_kernels.ops_table import CudaOps, flash_split_setting, gemm_x_setting
    from sweepbench.errors import UsageError

    monkeypatch.delenv("SWEEPBENCH_CUDA_GEMM_X", raising=False)
    monkeypatch.delenv("SWEEPBENCH_CUDA_FLASH_SPLIT", raising=False)
    assert (gemm_x_setting(), flash_split_setting()) == ("f16", "auto")
    monkeypatch.setenv("SWEEPBENCH_CUDA_GEMM_X", "F32")
    assert gemm_x_setting() == "f32"
    monkeypatch.setenv("SWEEPBENCH_CUDA_FLASH_SPLIT", "5")
    with pytest.raises(UsageError, match="SWEEPBENCH_CUDA_FLASH_SPLIT=5: choose off, auto, 2, 3 or 4"):
        flash_split_setting()
    parts = CudaOps._flash_parts
    auto = SimpleNamespace(flash_split="auto", n_sm=132)
    # ling-mini-2.0 (16 heads): -ub 512 is 64 blocks, -ub 2048 256; one 128-row tile of 16 heads
    assert [parts(auto, b, 4096) for b in (64, 256, 16, 128)] == [2, 1, 4, 1]
    assert parts(auto, 64, 1023) == 1 and parts(auto, 64, 1024) == 2
    assert parts(SimpleNamespace(flash_split="3", n_sm=132), 256, 0) == 3
    assert parts(SimpleNamespace(flash_split="off", n_sm=132), 16, 8192) == 1
