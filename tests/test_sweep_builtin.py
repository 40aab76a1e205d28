"""The built-in model used without -m (sweepbench.bench.builtin_model): cached, locked, regenerated if damaged."""
from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sweepbench import synth
from sweepbench.bench import builtin_model
from sweepbench.cli import app

TINY = {"preset": "tiny", "arch": "qwen3moe", "expert_type": "Q8_0", "dense_type": "Q8_0", "seed": 0}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(builtin_model, "BUILTIN", TINY)
    return tmp_path / "cache"


@pytest.fixture
def writes(monkeypatch):
    """Counts (and slows down a little, so that racers overlap) the model generations."""
    calls = []
    real = synth.write_synthetic_model

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        time.sleep(0.2)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(synth, "write_synthetic_model", counting)
    return calls


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_cache_directory_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SWEEPBENCH_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert builtin_model.cache_dir() == tmp_path / "home" / ".cache" / "sweepbench"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert builtin_model.cache_dir() == tmp_path / "xdg" / "sweepbench"
    monkeypatch.setenv("SWEEPBENCH_CACHE", str(tmp_path / "mine"))
    assert builtin_model.cache_dir() == tmp_path / "mine"


def test_default_is_the_small_qwen3moe_q8_0_preset():
    assert builtin_model.BUILTIN == {"preset": "small", "arch": "qwen3moe", "expert_type": "Q8_0",
                                     "dense_type": "Q8_0", "seed": 0}


def test_generated_once_then_reused(cache, writes):
    console = quiet()
    path = builtin_model.ensure_builtin_model(console)
    assert path == cache / "tiny-qwen3moe-Q8_0-Q8_0-seed0.gguf" and path.is_file()
    mtime = path.stat().st_mtime_ns
    assert builtin_model.ensure_builtin_model(console) == path
    assert writes == [path] and path.stat().st_mtime_ns == mtime
    assert "generating the built-in model (tiny qwen3moe with Q8_0 experts) once" in console.file.getvalue()
    assert not list(cache.glob("*.partial"))


def test_a_damaged_cached_file_is_written_again(cache, writes):
    path = builtin_model.ensure_builtin_model(quiet())
    path.write_bytes(path.read_bytes()[:1000])
    assert builtin_model.ensure_builtin_model(quiet()) == path
    assert len(writes) == 2 and path.stat().st_size > 1000


def test_two_sweeps_starting_together_write_it_once(cache, writes):
    consoles, results = [quiet(), quiet()], []
    threads = [threading.Thread(target=lambda c=c: results.append(builtin_model.ensure_builtin_model(c)))
               for c in consoles]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and results[0] == results[1] and len(writes) == 1
    assert any("waiting for another sweepbench" in c.file.getvalue() for c in consoles)


def test_an_unwritable_cache_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SWEEPBENCH_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(builtin_model, "BUILTIN", TINY)
    result = CliRunner().invoke(app, ["sweep-bench", "-c", "64", "-ub", "16", "--engine", "ik"])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "cannot create the cache directory" in line and "SWEEPBENCH_CACHE" in line


def test_sweep_without_a_model_uses_the_builtin_one(cache, tmp_path):
    out = tmp_path / "run.jsonl"
    first = CliRunner().invoke(app, ["sweep-bench", "-c", "64", "-ub", "16", "--engine", "ik", "-o", str(out)])
    assert first.exit_code == 0, first.stderr
    assert "no -m given: generating the built-in model" in first.stderr
    assert first.stdout.count("\n|    16 |") == 4
    system = json.loads(out.read_text().splitlines()[0])
    assert system["model"]["builtin"] is True and system["model"]["path"].startswith(str(cache))
    again = CliRunner().invoke(app, ["sweep-bench", "-c", "64", "-ub", "16", "--engine", "ik"])
    assert again.exit_code == 0 and "generating" not in again.stderr
