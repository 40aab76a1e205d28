"""The model a sweep uses when no ``-m`` is given: the ``small`` qwen3moe preset with Q8_0 everywhere (the main CPU
row of shared/reference/anchors.md, 2.3 GB), generated once into the user cache and reused from then on.

Cache directory: ``$SWEEPBENCH_CACHE``, else ``$XDG_CACHE_HOME/sweepbench``, else ``~/.cache/sweepbench``.
Two sweeps started together do not both write it: the writer holds an exclusive lock on ``<file>.lock`` (the
other waits, then finds the file), and the file appears under its name only when complete (``synth`` writes
``<file>.partial`` and renames it).
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from sweepbench.errors import SweepbenchError

BUILTIN = {"preset": "small", "arch": "qwen3moe", "expert_type": "Q8_0", "dense_type": "Q8_0", "seed": 0}


def cache_dir() -> Path:
    if os.environ.get("SWEEPBENCH_CACHE"):
        return Path(os.environ["SWEEPBENCH_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "sweepbench"


def builtin_model_path(spec: dict | None = None) -> Path:
    s = spec or BUILTIN
    return cache_dir() / f"{s['preset']}-{s['arch']}-{s['expert_type']}-{s['dense_type']}-seed{s['seed']}.gguf"


def _usable(path: Path) -> bool:
    """A complete, valid model (a damaged file in the cache is written again rather than failing every sweep)."""
    from sweepbench.models.tensors import open_model

    if not path.is_file():
        return False
    try:
        open_model(path)
    except SweepbenchError:
        return False
    return True


@contextmanager
def _locked(path: Path, console: Console) -> Iterator[None]:
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"sweepbench: waiting for another sweepbench that is writing {path.name}",
                          highlight=False, soft_wrap=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_builtin_model(console: Console, spec: dict | None = None) -> Path:
    """The built-in model's path, generating it first if the cache does not hold it yet."""
    from sweepbench.synth import write_synthetic_model

    spec = spec or BUILTIN
    path = builtin_model_path(spec)
    if _usable(path):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepbenchError(f"cannot create the cache directory {path.parent} ({e.strerror or e}); "
                              f"set SWEEPBENCH_CACHE to a writable directory or pass -m MODEL") from None
    with _locked(path, console):
        if _usable(path):  # written by the sweep we waited for
            return path
        what = f"{spec['preset']} {spec['arch']} with {spec['expert_type']} experts"
        console.print(f"sweepbench: no -m given: generating the built-in model ({what}) once, into {path}",
                      highlight=False, soft_wrap=True)
        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task(f"writing {path.name}", total=None)
            result = write_synthetic_model(
                path, spec["preset"], spec["arch"], spec["expert_type"], spec["dense_type"], seed=spec["seed"],
                on_start=lambda total: bar.update(task, total=total), progress=lambda n: bar.advance(task, n))
        console.print(f"sweepbench: wrote {path.name} ({result.n_bytes / 1e9:.2f} GB) in {result.seconds:.1f} s",
                      highlight=False, soft_wrap=True)
    return path
