"""One ``sweepbench sweep-bench`` invocation: choose engines, check the fit, load, warm up, sweep, write, and end
cleanly however the run stops.

How a run ends (the JSONL's end record says which; every finished row is already flushed to every output):
  0   all rows measured                       status "complete"
  1   an engine failed in a row               status "error", the message names engine, N_KV and phase
  130 SIGINT (Ctrl-C)                         status "interrupted"
  141 stdout closed (``| head``)              status "interrupted"
  143 SIGTERM                                 status "interrupted"
"""
from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from rich.console import Console

from sweepbench.bench import memory, system
from sweepbench.bench.builtin_model import ensure_builtin_model
from sweepbench.bench.loop import sweep, warm_up
from sweepbench.bench.plan import SweepPlan
from sweepbench.bench.records import end_record, model_facts, sweep_options, system_record
from sweepbench.bench.rows import EngineFacts, Roofline, ratio_record, row_record
from sweepbench.bench.view import SweepView
from sweepbench.engines import ENGINES, create_engine
from sweepbench.engines.base import KV_TYPES, EngineOptions
from sweepbench.errors import SweepbenchError, UsageError
from sweepbench.model_stats import kv_bytes_per_token, model_stats
from sweepbench.models.tensors import open_model
from sweepbench.results.writers import OUTPUT_FORMATS, JsonlFile, stdout_sink

EXIT_OK, EXIT_ERROR, EXIT_SIGINT, EXIT_PIPE, EXIT_SIGTERM = 0, 1, 130, 141, 143
FLASH_ATTN = ("on", "off", "auto")
# EngineOptions field -> the flag that sets it (for "engine X ignores FLAG" notes; seed drives our token stream)
FLAGS = {"repack": "-rtr", "fused_moe": "-fmoe/-no-fmoe", "flash_attn": "-fa", "grouped_routing": "-ger",
         "n_threads": "-t", "type_k": "-ctk", "type_v": "-ctv", "n_batch": "-b", "n_ubatch": "-ub"}
# -rtr when neither -rtr nor --no-repack is given: numba-cpu's kernels are built for its R8 layouts (on; --no-repack
# runs its plain row-major path to compare); every other engine follows llama-sweep-bench (off)
REPACK_DEFAULT = {"numba-cpu": True}
IK_WHEEL_NOTE = ("engine 'ik' is the ik-llama-cpp-python wheel, a generic AVX2 build slower than a native "
                 "ik_llama.cpp build of the same commit (2-core Zen 3, small qwen3moe Q8_0: PP512 0.88x, TG 0.78x), "
                 "so ratios against it flatter us by 10-25%")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt is for SIGINT."""


@dataclass(frozen=True)
class SweepRequest:
    plan: SweepPlan = field(default_factory=SweepPlan)
    model: Path | None = None  # None: the built-in synthetic model
    engine: str | None = None  # None: default_engine()
    vs: str | None = None
    n_threads: int = 0
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: str = "on"
    grouped_routing: bool = False
    repack: bool | None = None  # None: each engine's REPACK_DEFAULT
    fused_moe: bool = True
    output: Path | None = None
    output_format: str = "md"
    label: str | None = None
    fit_check: bool = True
    explicit: frozenset[str] = frozenset()  # EngineOptions fields given on the command line
    argv: tuple[str, ...] | None = None

    def engine_options(self, engine: str | None = None) -> EngineOptions:
        """The options ``engine`` loads with (-rtr resolved to its default when not given)."""
        p = self.plan
        repack = self.repack if self.repack is not None else REPACK_DEFAULT.get(engine or "", False)
        return EngineOptions(n_ctx=p.n_ctx, n_batch=p.n_batch, n_ubatch=p.n_ubatch, n_threads=self.n_threads,
                             type_k=self.type_k, type_v=self.type_v, flash_attn=self.flash_attn != "off",
                             grouped_routing=self.grouped_routing, repack=repack, fused_moe=self.fused_moe,
                             seed=p.seed)


def default_engine(registry: dict | None = None, gpu_present=system.cuda_gpu_present) -> str:
    """numba-cuda where it is registered and a CUDA GPU is present, else numba-cpu where registered, else reference."""
    registry = ENGINES if registry is None else registry
    if "numba-cuda" in registry and gpu_present():
        return "numba-cuda"
    return "numba-cpu" if "numba-cpu" in registry else "reference"


def _check(req: SweepRequest, names: list[str]) -> None:
    for name in names:
        if name not in ENGINES:
            raise UsageError(f"unknown engine '{name}' (available: {', '.join(ENGINES)})")
    if len(names) == 2 and names[0] == names[1]:
        raise UsageError(f"--vs {names[1]}: name an engine other than --engine {names[0]}")
    for flag, value in (("-ctk", req.type_k), ("-ctv", req.type_v)):
        if value not in KV_TYPES:
            raise UsageError(f"{flag} {value}: not a supported KV-cache type (choose from: {', '.join(KV_TYPES)})")
    if req.flash_attn not in FLASH_ATTN:
        raise UsageError(f"-fa {req.flash_attn}: expected on, off or auto")
    if "ik" in names and req.type_v != "f16" and req.flash_attn == "off":
        raise UsageError(f"-ctv {req.type_v} with -fa off: ik_llama.cpp quantizes the V cache only with flash "
                         f"attention")
    if req.output_format not in OUTPUT_FORMATS:
        raise UsageError(f"--output-format {req.output_format}: expected one of {', '.join(OUTPUT_FORMATS)}")
    if req.output is not None:
        JsonlFile.check(req.output)


@contextmanager
def _handled(handler, signals=(signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """``signals`` go to ``handler`` inside the block, to their own handlers again after it (outside the main
    thread signals are left alone). Installed one at a time, so a signal landing in between still finds its
    handler restored."""
    previous: dict = {}
    try:
        try:
            for s in signals:
                previous[s] = signal.signal(s, handler)
        except ValueError:  # not the main thread
            pass
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _raise_terminated(signum, frame):
    raise Terminated()


def _sigterm_raises():
    """SIGTERM raised as ``Terminated`` in the main thread, as SIGINT is as KeyboardInterrupt."""
    return _handled(_raise_terminated, (signal.SIGTERM,))


def _signals_held():
    """While the end of the run is written: a second Ctrl-C must not cut the end record in half."""
    return _handled(signal.SIG_IGN)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """While one row goes to the file, stdout and the count: a signal waits for the end of the block, then acts.

    Raised mid-block it left a row in the file that the end record's count and the stdout table missed (CI saw
    "rows": 2 with 3 rows in the file). Python handlers run in the main thread whichever thread the kernel picks,
    so swapping them works where blocking the signal in this thread (pthread_sigmask) would not.
    """
    caught: list[int] = []
    with _handled(lambda signum, frame: caught.append(signum)):
        yield
    if caught:  # the restored handler raises KeyboardInterrupt / Terminated here, between two rows
        signal.raise_signal(caught[0])


def _facts(name: str, info: dict, req: SweepRequest) -> EngineFacts:
    honoured, p = info.get("options", {}), req.plan
    threads = honoured.get("n_threads") or req.n_threads or os.cpu_count() or 1
    return EngineFacts(name, p.n_ctx, p.n_batch, p.n_ubatch, int(honoured.get("flash_attn", req.flash_attn != "off")),
                       int(info.get("n_gpu_layers", 0)), int(threads), int(honoured.get("n_threads_batch", threads)))


class _Run:
    """The state of one invocation; ``run`` is its only entry."""

    def __init__(self, req: SweepRequest, console: Console, stdout):
        self.req, self.console, self.stdout = req, console, stdout
        self.names = [req.engine or default_engine()] + ([req.vs] if req.vs else [])
        self.engines: list = []
        self.view = SweepView(console, len(req.plan.measured_windows()), self.names, stdout)
        self.started = time.perf_counter()

    def note(self, text: str) -> None:
        self.view.note(text)

    def prepare(self):
        req = self.req
        path = req.model or ensure_builtin_model(self.console)
        model, cfg = open_model(path)
        stats = model_stats(cfg, model)
        devices = system.gpus()
        self.engines = [create_engine(n) for n in self.names]
        self.names = [e.name for e in self.engines]  # what rows are keyed by (a registry alias may differ)
        if len(set(self.names)) < len(self.names):
            raise UsageError(f"--engine and --vs are both engine '{self.names[0]}'")
        kv = req.plan.n_ctx * kv_bytes_per_token(stats, req.type_k, req.type_v)
        if req.fit_check:
            needs = [memory.estimate(e, path, model.size_bytes, int(kv), req.engine_options(e.name))
                     for e in self.engines]
            memory.check_fit(needs, memory.meminfo_bytes("MemAvailable"), system.gpu_free_bytes(devices),
                             f"KV for -c {req.plan.n_ctx} at {req.type_k}/{req.type_v}")
        if req.plan.n_ctx > cfg.n_ctx_train:
            self.note(f"-c {req.plan.n_ctx} exceeds the model's training context ({cfg.n_ctx_train})")
        info = {}
        for engine in self.engines:
            self.note(f"loading {Path(path).name} into engine '{engine.name}'")
            t0 = time.perf_counter()
            engine.load(str(path), req.engine_options(engine.name))
            load_s = time.perf_counter() - t0
            if getattr(engine, "warmup_note", ""):  # what the silence until the first row is (it compiles)
                self.note(f"engine '{engine.name}': warming up: {engine.warmup_note}")
            warm_s = warm_up(engine, req.plan, cfg.n_vocab)
            info[engine.name] = {**engine.describe(), "load_s": round(load_s, 3), "warmup_s": round(warm_s, 3)}
            self.note(f"engine '{engine.name}': loaded in {load_s:.2f} s, warmed up in {warm_s:.2f} s "
                      f"(neither is part of any row)")
        notes = self._option_notes(info)
        model_record = model_facts(path, req.model is None, model, cfg, stats, req.type_k, req.type_v)
        chosen = {"engine": self.names[0], "n_threads": req.n_threads, "type_k": req.type_k, "type_v": req.type_v,
                  "flash_attn": req.flash_attn, "grouped_routing": req.grouped_routing, "repack": req.repack,
                  "fused_moe": req.fused_moe, "label": req.label, "output_format": req.output_format}
        system_rec = system_record(
            argv=list(req.argv) if req.argv is not None else None, label=req.label, engines=self.names,
            engine_info=info, notes=notes, devices=devices, model=model_record,
            options=sweep_options(req.plan, chosen, req.vs))
        facts = {name: _facts(name, info[name], req) for name in self.names}
        return cfg, system_rec, facts, Roofline(stats, req.type_k, req.type_v)

    def _option_notes(self, info: dict) -> list[str]:
        """Say once what an engine does not act on, for flags the user gave; everything is recorded anyway."""
        notes = []
        for name, desc in info.items():
            for option, why in desc.get("ignored", {}).items():
                if option in self.req.explicit and option in FLAGS:
                    notes.append(f"engine '{name}' ignores {FLAGS[option]}: {why}")
        if "ik" in self.names:
            notes.append(IK_WHEEL_NOTE)
        for text in notes:
            if text != IK_WHEEL_NOTE or len(self.names) > 1:
                self.note(text)
        return notes

    def measure(self, cfg, system_rec: dict, facts: dict, roofline: Roofline) -> int:
        req, plan = self.req, self.req.plan
        primary = facts[self.names[0]]
        sinks = [JsonlFile(req.output)] if req.output else []
        peer = self.names[1] if len(self.names) > 1 else None
        sinks.append(stdout_sink(req.output_format, self.view.data, primary.params(), plan.memory, peer))
        status, message, code, done = "complete", "", EXIT_OK, 0
        try:
            for sink in sinks:
                sink.start(system_rec)
            self.view.start()
            for result in sweep(self.engines, plan, cfg.n_vocab, on_phase=self.view.phase):
                rows = [row_record(m, facts[m.engine], roofline, plan.memory) for m in result.measurements]
                ratio = ratio_record(rows[0], rows[1]) if len(rows) > 1 else None
                with _signals_deferred():  # a signal cannot land between the file, the count and stdout
                    sinks[0].rows(rows, ratio)  # the -o file (if any) first: a row on stdout is in it too
                    done += 1  # the end record counts the file's rows, even if stdout breaks next
                    for sink in sinks[1:]:
                        sink.rows(rows, ratio)
                    self.view.row(result.row, rows, ratio)
        except KeyboardInterrupt:
            status, message, code = "interrupted", "interrupted by SIGINT (Ctrl-C)", EXIT_SIGINT
        except Terminated:
            status, message, code = "interrupted", "terminated by SIGTERM", EXIT_SIGTERM
        except BrokenPipeError:
            status, message, code = "interrupted", "stdout was closed", EXIT_PIPE
            _silence_stdout()
            sinks = sinks[:-1]
        except SweepbenchError as e:
            status, message, code = "error", str(e), e.exit_code
        with _signals_held():
            self.view.close()
            self._finish(sinks, status, message, done)
        return code

    def _finish(self, sinks: list, status: str, message: str, done: int) -> None:
        planned = len(self.req.plan.measured_windows())
        end = end_record(status, message, done, planned, self.started)
        for sink in sinks:
            try:
                sink.end(end)
            except BrokenPipeError:
                _silence_stdout()
            except SweepbenchError as e:  # the file cannot take the end record: say so, finish the others
                self.note(str(e))
            finally:
                if isinstance(sink, JsonlFile):
                    sink.close()
        output = self.req.output
        if status == "complete":
            self.note(f"done: {done} rows in {end['elapsed_s']:.1f} s" + (f", written to {output}" if output else ""))
            return
        self.console.print(f"sweepbench: error: {message}" if status == "error" else f"sweepbench: {message}",
                           highlight=False, markup=False, soft_wrap=True)
        self.note(f"stopped after {done} of {planned} rows" + (f"; every finished row is in {output}" if output else ""))

    def close(self) -> None:
        for engine in self.engines:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - closing must never mask how the run ended
                pass


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so Python's final flush does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def run(req: SweepRequest, console: Console | None = None, stdout=None) -> int:
    """Run the sweep; returns the exit code. Bad input raises SweepbenchError before anything is loaded."""
    import sys

    console = console or Console(stderr=True)
    state = _Run(req, console, stdout or sys.stdout)
    _check(req, state.names)
    try:
        with _sigterm_raises():
            return state.measure(*state.prepare())
    except KeyboardInterrupt:  # measure() handles its own; this is before the first row
        state.note("interrupted by SIGINT before the first row")
        return EXIT_SIGINT
    except Terminated:
        state.note("terminated by SIGTERM before the first row")
        return EXIT_SIGTERM
    finally:
        state.close()
