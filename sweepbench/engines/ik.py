"""``--engine ik``: ik_llama.cpp (CPU build from the ``ik-llama-cpp-python`` wheel) driven through ctypes.

It is both the ground truth for ``sweepbench verify`` and the speed peer in sweeps: batches are built and
chunked exactly like llama-sweep-bench's ``decode_helper`` (``llama_decode`` per ``n_batch`` chunk, then
``llama_synchronize``), so a sweepbench sweep with this engine times what sweep-bench times.

ik's own log output is silenced (``SWEEPBENCH_IK_LOG=1`` lets it through); its last warning/error lines are
kept and put into our one-line error messages.

``IkEngine(capture=lambda name: ...)`` records ik's intermediate tensors (``attn_norm-0``, ``ffn_moe_topk-1``,
``l_out-1``, ``result_output``, ...) of every ``llama_decode`` through ik's eval callback: the way to find
which op of another engine departs from ik. Capture few names: asking for many intermediates splits ik's graph
at each of them, and with F16 experts some splits (e.g. ffn_moe_topk + ffn_moe_gate_par on bailingmoe2) corrupt
ik's heap (an ik bug in the split path; normal runs are clean under MALLOC_CHECK_=3).
"""
from __future__ import annotations

import ctypes
import os
import resource
import sys
from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np

from sweepbench import ik_ctypes as ik
from sweepbench.config import ModelConfig
from sweepbench.engines.base import KV_TYPES, EngineOptions, MemoryUse
from sweepbench.errors import SweepbenchError, UsageError
from sweepbench.models.tensors import open_model

# bytes per KV element, per cache type (q8_0: 34-byte blocks of 32)
KV_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32}

# EngineOptions field -> (ik struct, field) it sets; a field missing from the struct means ik ignores the option
IK_SPECIFIC = {
    "repack": (ik.llama_model_params, "repack_tensors"),  # -rtr
    "fused_moe": (ik.llama_context_params, "fused_moe_up_gate"),  # -fmoe
    "grouped_routing": (ik.llama_context_params, "grouped_expert_routing"),  # -ger
}
_LOG_LEVEL_WARN, _LOG_LEVEL_CONT = 3, 5
# ggml type id -> NumPy dtype of intermediates we can capture
_CAPTURE_DTYPES = {ik.GGML_TYPE_IDS["f32"]: np.float32, ik.GGML_TYPE_IDS["f16"]: np.float16,
                   ik.GGML_TYPE_IDS["i32"]: np.int32}


class _IkLog:
    """ik's log sink (process-wide, like ``llama_log_set``): drops everything unless SWEEPBENCH_IK_LOG is set, but
    remembers the last warning/error lines so that a failure can say what ik complained about."""

    def __init__(self) -> None:
        self.echo = os.environ.get("SWEEPBENCH_IK_LOG", "") not in ("", "0")
        self.recent: deque[str] = deque(maxlen=4)
        self._keep_cont = False
        self.callback = ik.ggml_log_callback(self._on_log)  # referenced here so it is never garbage-collected

    def _on_log(self, level: int, text: bytes | None, _user_data) -> None:
        message = text.decode("utf-8", "replace") if text else ""
        if self.echo:
            sys.stderr.write(message)
        if level != _LOG_LEVEL_CONT:
            self._keep_cont = level >= _LOG_LEVEL_WARN
        if self._keep_cont and message.strip():
            self.recent.append(message.strip())

    def clear(self) -> None:
        self.recent.clear()

    def reason(self) -> str:
        return f" (ik: {' | '.join(self.recent)})" if self.recent else ""


_log: _IkLog | None = None


def _library() -> ctypes.CDLL:
    """The bound library, with the backend initialised and the log silenced exactly once per process."""
    global _log
    lib = ik.load_library()
    if _log is None:
        _log = _IkLog()
        lib.llama_log_set(_log.callback, None)
        lib.llama_backend_init()
    return lib


def _kv_type_id(value: str, flag: str) -> int:
    if value not in KV_TYPES:
        raise UsageError(f"{flag} {value}: not a supported KV-cache type (choose from: {', '.join(KV_TYPES)})")
    return ik.GGML_TYPE_IDS[value]


class IkEngine:
    name = "ik"

    def __init__(self, capture: Callable[[str], bool] | None = None) -> None:
        """``capture``: tensor name -> whether to record it into ``self.captured`` (cleared per llama_decode)."""
        self._capture = capture
        self._on_eval = ik.ggml_backend_sched_eval_callback(self._record) if capture else None
        self.captured: list[tuple[str, np.ndarray]] = []  # (name, array in NumPy order [ne3, ne2, ne1, ne0])
        self._lib: ctypes.CDLL | None = None
        self._model = None  # llama_model *
        self._ctx = None  # llama_context *
        self.options: EngineOptions | None = None
        self.config: ModelConfig | None = None
        self.model_path: Path | None = None

    # ------------------------------------------------------------------------------------------- load

    def load(self, model_path: str, options: EngineOptions) -> None:
        self.close()
        self.model_path = Path(model_path)
        _, self.config = open_model(self.model_path)  # our own checks first: one-line errors for bad files
        self.options = options
        self.n_threads = options.n_threads or os.cpu_count() or 1
        lib = self._lib = _library()

        mparams = self._model_params(lib, options)
        _log.clear()
        self._model = lib.llama_model_load_from_file(str(self.model_path).encode(), mparams)
        if not self._model:
            raise SweepbenchError(f"{self.model_path}: ik_llama.cpp cannot load the model{_log.reason()}")

        cparams = self._context_params(lib, options)
        _log.clear()
        self._ctx = lib.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self.close()
            raise SweepbenchError(f"{model_path}: ik_llama.cpp cannot create a context{_log.reason()}")
        self.n_ctx = int(lib.llama_n_ctx(self._ctx))  # ik pads n_ctx (to 256 with flash attention)
        self.n_vocab = int(lib.llama_n_vocab(self._model))
        self._batch = _Batch(options.n_batch)

    def _model_params(self, lib, options: EngineOptions) -> ik.llama_model_params:
        p = lib.llama_model_default_params()
        p.n_gpu_layers = 0  # CPU only
        p.repack_tensors = options.repack
        p.use_mmap = not options.repack  # like -rtr: repacking rewrites the weights in memory
        # the model also carries the cache/batch settings (ik sizes its compute buffers from them)
        p.flash_attn = options.flash_attn
        p.n_ubatch = options.n_ubatch
        p.type_k = _kv_type_id(options.type_k, "--type-k")
        p.type_v = _kv_type_id(options.type_v, "--type-v")
        return p

    def _context_params(self, lib, options: EngineOptions) -> ik.llama_context_params:
        p = lib.llama_context_default_params()
        p.n_ctx = options.n_ctx
        p.n_batch = options.n_batch
        p.n_ubatch = options.n_ubatch
        p.n_seq_max = 1
        p.n_threads = p.n_threads_batch = self.n_threads
        p.flash_attn = options.flash_attn
        p.type_k = _kv_type_id(options.type_k, "--type-k")
        p.type_v = _kv_type_id(options.type_v, "--type-v")
        p.fused_moe_up_gate = options.fused_moe
        p.grouped_expert_routing = options.grouped_routing
        if self._on_eval is not None:
            p.cb_eval = self._on_eval
        return p

    # ------------------------------------------------------------------------------------------- compute

    def warmup(self) -> None:
        """sweep-bench's warmup: one BOS token at position 0 without logits, then an empty cache. ik treats a
        lone BOS as its first decode specially and routes it to ALL experts, which pages every expert in.
        Call it right after ``load`` (ik only does this for the context's very first decode)."""
        bos = int(self._lib.llama_token_bos(self._model))
        self._decode_chunk(np.array([bos], np.int32), 0, want_logits=np.zeros(1, bool))
        self._lib.llama_kv_cache_clear(self._ctx)

    def prefill(self, tokens: np.ndarray, start_pos: int, *, all_logits: bool = False) -> np.ndarray:
        tokens = self._check_tokens(tokens, start_pos)
        n = len(tokens)
        want = np.zeros(n, bool)
        want[:] = all_logits
        want[-1] = True  # sweep-bench asks for the last token's logits only
        outputs = [
            self._decode_chunk(tokens[i : i + self.options.n_batch], start_pos + i, want[i : i + self.options.n_batch])
            for i in range(0, n, self.options.n_batch)  # decode_helper: one llama_decode per n_batch chunk
        ]
        logits = np.concatenate([o for o in outputs if len(o)])  # [n_out, V]
        return logits if all_logits else logits[-1]

    def decode(self, token: int, pos: int) -> np.ndarray:
        tokens = self._check_tokens(np.array([token]), pos)
        return self._decode_chunk(tokens, pos, np.ones(1, bool))[0]

    def _decode_chunk(self, tokens: np.ndarray, start_pos: int, want_logits: np.ndarray) -> np.ndarray:
        """One ``llama_decode`` + ``llama_synchronize``; returns float32 logits [n_out, V] of the flagged tokens."""
        batch = self._batch.fill(tokens, start_pos, want_logits)
        self.captured = []
        _log.clear()
        ret = self._lib.llama_decode(self._ctx, batch)
        if ret != 0:
            end = start_pos + len(tokens) - 1
            why = f": the KV cache ({self.n_ctx} cells) has no room for them" if ret == 1 else ""
            raise SweepbenchError(
                f"ik_llama.cpp: llama_decode failed (code {ret}) for {len(tokens)} tokens at positions "
                f"{start_pos}..{end}{why}{_log.reason()}"
            )
        self._lib.llama_synchronize(self._ctx)
        n_out = int(want_logits.sum())
        if n_out == 0:
            return np.empty((0, self.n_vocab), np.float32)
        ptr = self._lib.llama_get_logits(self._ctx)  # rows of the flagged tokens, in batch order
        return np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab)).astype(np.float32, copy=True)

    def _record(self, tensor_address: int, ask: bool, _user_data) -> bool:
        """ik's eval callback: asked first whether we want a tensor, then called again once it is computed."""
        t = ik.ggml_tensor.from_address(tensor_address)
        name = t.name.decode(errors="replace")
        if ask:
            return bool(self._capture(name))
        dtype = _CAPTURE_DTYPES.get(t.type)
        if dtype is not None and t.data:  # CPU backend: data is host memory
            shape, strides = tuple(reversed(t.ne)), tuple(reversed(t.nb))
            n_bytes = sum((n - 1) * s for n, s in zip(shape, strides)) + np.dtype(dtype).itemsize
            raw = np.frombuffer((ctypes.c_char * n_bytes).from_address(t.data), dtype=np.uint8)
            view = np.lib.stride_tricks.as_strided(raw.view(dtype)[:1], shape, strides, writeable=False)
            self.captured.append((name, np.array(view, np.float32 if dtype == np.float16 else dtype)))
        return True  # go on computing

    def _check_tokens(self, tokens, start_pos: int) -> np.ndarray:
        """Refuse what ik would reject or abort on, with a message naming the cause."""
        if self._ctx is None:
            raise SweepbenchError("engine 'ik': load() a model first")
        tokens = np.asarray(tokens, np.int64).reshape(-1)
        if len(tokens) == 0:
            raise SweepbenchError("engine 'ik': no tokens to process")
        bad = tokens[(tokens < 0) | (tokens >= self.n_vocab)]
        if len(bad):
            raise SweepbenchError(f"engine 'ik': token id {int(bad[0])} is outside the vocabulary (0..{self.n_vocab - 1})")
        if start_pos < 0 or start_pos + len(tokens) > self.n_ctx:
            raise SweepbenchError(
                f"engine 'ik': positions {start_pos}..{start_pos + len(tokens) - 1} do not fit the context of {self.n_ctx}"
            )
        return tokens.astype(np.int32)

    def truncate(self, n_kv: int) -> None:
        if not self._lib.llama_kv_cache_seq_rm(self._ctx, 0, n_kv, -1):
            raise SweepbenchError(f"engine 'ik': cannot drop cache positions >= {n_kv}")

    def synchronize(self) -> None:
        self._lib.llama_synchronize(self._ctx)

    # ------------------------------------------------------------------------------------------- facts

    def memory(self) -> MemoryUse:
        cfg, o = self.config, self.options
        per_cell = cfg.n_layer * cfg.n_embd_kv * (KV_TYPE_BYTES[o.type_k] + KV_TYPE_BYTES[o.type_v])
        return MemoryUse(
            weights_bytes=int(self._lib.llama_model_size(self._model)),
            kv_bytes=int(per_cell * self.n_ctx),
            rss_hwm_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports KiB
        )

    def describe(self) -> dict:
        lib, o = self._lib, self.options
        desc = ctypes.create_string_buffer(256)
        lib.llama_model_desc(self._model, desc, len(desc))
        honoured = {
            "n_ctx": self.n_ctx, "n_batch": o.n_batch, "n_ubatch": o.n_ubatch, "n_threads": self.n_threads,
            "n_threads_batch": self.n_threads, "flash_attn": o.flash_attn, "type_k": o.type_k, "type_v": o.type_v,
        }
        ignored = {"seed": "ik is deterministic; nothing is sampled"}
        for option, (struct, field) in IK_SPECIFIC.items():
            if field in dict(struct._fields_):
                honoured[option] = getattr(o, option)
            else:
                ignored[option] = f"this ik_llama.cpp build has no {struct.__name__}.{field}"
        if o.grouped_routing and self.config.arch != "bailingmoe2":
            ignored["grouped_routing"] = f"ik applies grouped routing to bailingmoe2 only, not {self.config.arch}"
        return {
            "engine": self.name,
            "wheel": f"{ik.WHEEL} {ik.wheel_version()}",
            "library": str(ik.library_path()),
            "model_desc": desc.value.decode(errors="replace"),
            "system_info": lib.llama_print_system_info().decode(errors="replace").strip(" |"),
            "options": honoured,
            "ignored": ignored,
        }

    def close(self) -> None:
        if self._ctx:
            self._lib.llama_free(self._ctx)
        if self._model:
            self._lib.llama_free_model(self._model)
        self._ctx = self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass


class _Batch:
    """A reusable ``llama_batch`` over arrays we own (one sequence, seq id 0), refilled for every chunk."""

    def __init__(self, capacity: int) -> None:
        self.token = np.zeros(capacity, np.int32)
        self.pos = np.zeros(capacity, np.int32)
        self.n_seq_id = np.ones(capacity, np.int32)
        self.output = np.zeros(capacity, np.int8)
        self._seq0 = ctypes.c_int32(0)
        self._seq_ids = (ctypes.POINTER(ik.llama_seq_id) * capacity)(*[ctypes.pointer(self._seq0)] * capacity)
        self.struct = ik.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(ctypes.POINTER(ik.llama_token)),
            embd=None,
            pos=self.pos.ctypes.data_as(ctypes.POINTER(ik.llama_pos)),
            n_seq_id=self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=self._seq_ids,
            logits=self.output.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    def fill(self, tokens: np.ndarray, start_pos: int, want_logits: np.ndarray) -> ik.llama_batch:
        n = len(tokens)
        self.token[:n] = tokens
        self.pos[:n] = np.arange(start_pos, start_pos + n)
        self.output[:n] = want_logits
        self.struct.n_tokens = n
        return self.struct
