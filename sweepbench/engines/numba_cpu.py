"""``--engine numba-cpu``: the architectures' ``forward()`` over Numba kernels (``sweepbench.cpu_kernels``).

Quantized weights (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, IQ4_XS) meet activations quantized per block of 32 to int8
and are multiplied with integer dot products, then scales (ggml's scheme); F32/F16/BF16 weights use float dots
on float32 activations (no quantization: the F16 tier). MXFP4 is expanded to int8 blocks at load.
``repack=True`` (-rtr, the default here) rewrites every matrix with a multiple of 8 rows into the R8 layouts
(``cpu_kernels.layouts``); ``repack=False`` runs the plain kernels on the memory-mapped GGUF rows.
KV cache: ``cpu_kernels.attention.KVCache`` (f16 or q8_0), flash attention for prefill and decode.
Up to ``SMALL_ROWS`` tokens (a decode step) the small ops run their kernels' serial twins and neighbouring ops
are fused through deferred values (``engines.cpu_lazy``); the answers keep their bits. A one-token decode of
qwen3moe / bailingmoe2 instead runs as one compiled call per thread (``engines.cpu_step``; the op-by-op path
with ``SWEEPBENCH_DECODE_STEP=ops``), again with the same bits.
Every kernel is compiled (or loaded from Numba's cache) in ``warmup``, never inside a measured call.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType as Q
from numba import set_parallel_chunksize

from sweepbench.config import ModelConfig
from sweepbench.cpu_kernels.threads import init_threading, set_threads, threading_layer
from sweepbench.engines import cpu_lazy as lazy
from sweepbench.engines.base import EngineOptions
from sweepbench.engines.forward_engine import ForwardEngine
from sweepbench.errors import SweepbenchError
from sweepbench.gguf_model import GGUFTensor
from sweepbench.quants import SUPPORTED, dequantize
from sweepbench.ref_ops import QuantMatrix

init_threading()  # before any parallel kernel module is used

from sweepbench.cpu_kernels import attention, dense, moe, qmm, rowmajor  # noqa: E402
from sweepbench.cpu_kernels.layouts import K_F32, KIND_OF, QuantR8, can_repack, repack  # noqa: E402
from sweepbench.cpu_kernels.quant_act import QuantAct  # noqa: E402
from sweepbench.cpu_kernels.simd import CPU_NAME, ISA  # noqa: E402
from sweepbench.engines.cpu_step import CompiledDecode, Unsupported, decode_step_mode  # noqa: E402

@dataclass
class Plain:
    """A weight stack kept as GGUF rows: raw uint8 [X, N*row_bytes] (a view of the mapped file)."""

    kind: int  # rowmajor kind (float weights: K_F32 + format)
    qtype: Q
    n_rows: int
    row_len: int
    raw: np.ndarray

    @property
    def n_bytes(self) -> int:
        return self.raw.nbytes


@dataclass
class FusedPart:
    """Rows lo..hi of the outputs of ``whole``, a matrix fused at load from matrices that share their input
    (a layer's q, k and v): the first product computes all of them, the others are slices of it. One
    quantization and one pass instead of three calls: a 512-row GEMV alone ran at half the streaming rate."""

    whole: QuantR8
    lo: int
    hi: int

    kind = property(lambda self: self.whole.kind)
    qtype = property(lambda self: self.whole.qtype)
    row_len = property(lambda self: self.whole.row_len)
    n_rows = property(lambda self: self.hi - self.lo)
    n_bytes = property(lambda self: self.whole.n_bytes * (self.hi - self.lo) // self.whole.n_rows)


def fuse_rows(parts: list[QuantR8]) -> list[FusedPart] | None:
    """The matrices stacked along their outputs (same type and input width), or None if they cannot be."""
    first = parts[0]
    if not all(isinstance(p, QuantR8) and p.kind == first.kind and p.row_len == first.row_len
               and p.qs.shape[0] == 1 for p in parts):
        return None
    whole = QuantR8(first.kind, first.qtype, sum(p.n_rows for p in parts), first.row_len,
                    np.concatenate([p.qs for p in parts], axis=1))
    bounds = np.cumsum([0] + [p.n_rows for p in parts])
    return [FusedPart(whole, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass
class Groups:
    """Routed rows grouped by expert: rows [R] (routed row t*K + j) in expert order, xrows [R] their tokens,
    offsets [X+1], active experts; ids [T, K] as routed."""

    ids: np.ndarray
    rows: np.ndarray
    xrows: np.ndarray
    offsets: np.ndarray
    active: np.ndarray


@dataclass
class ExpertRows:
    """Expert hidden rows [R, F] in expert order (row i belongs to routed row groups.rows[i])."""

    h: np.ndarray
    groups: Groups

    def routed(self) -> np.ndarray:  # [R, F] in (token, slot) order, as the NumPy twin returns it
        out = np.empty_like(self.h)
        out[self.groups.rows] = self.h
        return out


def _prepare(t: GGUFTensor, n_mats: int, use_repack: bool):
    n_rows = t.raw.shape[0] // n_mats
    if use_repack and can_repack(t.qtype, n_rows):
        return repack(t.raw, t.qtype, n_rows, t.row_len, n_mats)
    return Plain(KIND_OF[Q(t.qtype)], Q(t.qtype), n_rows, t.row_len, np.asarray(t.raw).reshape(n_mats, -1))


SMALL_ROWS = 4  # up to this many rows (a decode step, a short verify batch), element-wise ops stay serial
SERIAL_BYTES = 512 << 10  # a decode product of at most this many weight bytes runs on the calling thread


class CpuOps:
    """The ops table (``models.ops``) over the kernels. Activations are float32 C-contiguous NumPy arrays."""

    def __init__(self) -> None:
        self._last_x: np.ndarray | None = None  # the last quantized input: q, k and v share one quantization
        self._last_q: QuantAct | None = None
        self._rope_key: tuple | None = None
        self._fused_in: tuple = (None, None, None)  # (input, fused matrix, product) of the last fused product
        self._idents: dict[int, tuple] = {}
        self._cur_chunk = -1

    # ---- helpers
    def _chunk(self, chunk: int) -> None:
        """Item hand-out for the next parallel kernel: 0 = static halves (decode products: chunks of 4 items
        cost 2 ms of a 22 ms token, chunks of 8-128 were no faster than halves), else chunks of that many items
        (prefill: a preempted thread then delays few items)."""
        if chunk != self._cur_chunk:
            set_parallel_chunksize(chunk)
            self._cur_chunk = chunk

    @staticmethod
    def _kernel(kernel, n_rows: int):
        """The parallel kernel, or its serial twin for at most SMALL_ROWS rows (why: ``threads.with_serial_twin``;
        the ~150 small ops of a decode step took 2.9 ms a token as thread-switched parallel launches, 1.7 ms as
        serial twins). The thread count stays fixed; only the products and attention run in parallel."""
        return kernel if n_rows > SMALL_ROWS else kernel.serial

    def _quant(self, x: np.ndarray) -> QuantAct:
        if x is not self._last_x:
            self._last_x, self._last_q = x, QuantAct(x)
        return self._last_q

    def _ident(self, t: int):
        """Row indices, offsets and active list of a dense product: one 'expert' holding rows 0..t-1."""
        if t not in self._idents:
            self._idents[t] = np.arange(t, dtype=np.int64), np.array([0, t], np.int64), np.zeros(1, np.int64)
        return self._idents[t]

    def _act(self, x, kind, gather=None):
        """The activations as the kernels of weight ``kind`` take them: float32 rows, or quantized block
        records; with ``gather``, rows x[gather] made contiguous (each expert's rows in one run)."""
        a = x if kind >= K_F32 else self._quant(x).x
        return (a if gather is None else a[gather]).reshape(-1)

    def _mm(self, xin, w, yrows, offsets, active, n_out_rows):
        self._chunk(qmm.CHUNK_ITEMS if n_out_rows > SMALL_ROWS else 0)
        y = np.empty((n_out_rows, w.n_rows), np.float32)
        if isinstance(w, QuantR8):
            small = n_out_rows <= SMALL_ROWS and w.n_bytes <= SERIAL_BYTES  # a router: no parallel launch
            mm = qmm.f_mm if w.kind >= K_F32 else qmm.q_mm
            (mm.serial if small else mm)(w.kind, w.qs, w.row_len, xin, yrows, offsets, active, y.reshape(-1))
        else:
            rowmajor.rm_mm(w.kind, w.raw, w.n_rows, w.row_len, xin, yrows, offsets, active, y.reshape(-1))
        return y

    def _up_gate(self, xin, wg, wu, offsets, active, n_rows):
        self._chunk(qmm.CHUNK_ITEMS if n_rows > SMALL_ROWS else 0)
        h = np.empty((n_rows, wg.n_rows), np.float32)
        if isinstance(wg, QuantR8):
            up_gate = qmm.f_up_gate if wg.kind >= K_F32 else qmm.q_up_gate
            up_gate(wg.kind, wg.qs, wu.qs, wg.row_len, xin, offsets, active, h.reshape(-1))
        else:
            rowmajor.rm_up_gate(wg.kind, wg.raw, wu.raw, wg.n_rows, wg.row_len, xin, offsets, active,
                                h.reshape(-1))
        return h

    def _check_pair(self, wg, wu):
        if type(wg) is not type(wu) or wg.kind != wu.kind:
            raise SweepbenchError(f"gate and up weights differ in type ({wg.qtype.name}, {wu.qtype.name}): "
                                  "numba-cpu fuses them and needs one type")

    # ---- dense building blocks
    def embed(self, w: QuantMatrix, tokens):
        tokens = np.asarray(tokens, np.int64)
        return dequantize(np.ascontiguousarray(w.raw[tokens]), w.qtype, w.row_len)

    def rms_norm(self, x, w, eps):
        if isinstance(x, lazy.Sum) and x.value is None:  # the residual add and this norm in one call
            return lazy.residual_norm(x, w, eps)
        x = lazy.materialize(x)
        out = np.empty_like(x)
        self._kernel(dense.rms_norm, x.shape[0])(x, w, float(eps), out)
        return out

    def rms_norm_heads(self, x, w, eps, head_dim):
        x = lazy.materialize(x)
        if x.shape[0] <= SMALL_ROWS:  # done with the rotation that follows
            return lazy.PerHead(x, w, True, float(eps), int(head_dim))
        out = np.empty_like(x)
        dense.rms_norm_heads(x, w, float(eps), int(head_dim), out)
        return out

    def rope_neox(self, x, pos0, head_dim, n_rot, base, freq_scale):
        key = (int(pos0), x.shape[0], int(n_rot), float(base), float(freq_scale))  # x may be deferred: .shape
        if self._rope_key != key:  # one table per forward: every layer's q and k share it
            self._rope = np.empty((x.shape[0], n_rot // 2), np.float32), np.empty((x.shape[0], n_rot // 2), np.float32)
            dense.rope_table(*key, *self._rope)
            self._rope_key = key
        if isinstance(x, lazy.PerHead) and x.cs is None:  # rows <= SMALL_ROWS: done by the op that reads it
            return lazy.PerHead(x.x, x.w, x.do_norm, x.eps, int(head_dim), *self._rope)
        x = lazy.materialize(x)
        if x.shape[0] <= SMALL_ROWS:
            return lazy.PerHead(x, lazy.NO_WEIGHT, False, 0.0, int(head_dim), *self._rope)
        out = np.empty_like(x)
        dense.rope_neox(x, int(head_dim), *self._rope, out)
        return out

    def matmul(self, x, w):
        x = lazy.materialize(x)
        if isinstance(w, FusedPart):
            if self._fused_in[0] is not x or self._fused_in[1] is not w.whole:
                self._fused_in = (x, w.whole, self.matmul(x, w.whole))
            return np.ascontiguousarray(self._fused_in[2][:, w.lo : w.hi])
        rows, offsets, active = self._ident(x.shape[0])
        return self._mm(self._act(x, w.kind), w, rows, offsets, active, x.shape[0])

    def add(self, x, y):
        if isinstance(x, lazy.Combined):  # the shared expert added to the routed ones: x + y == y + x bit for bit
            x, y = y, x
        x = lazy.materialize(x)
        if x.shape[0] <= SMALL_ROWS:  # done by the rms_norm that reads it (or whoever needs the sum)
            return lazy.Sum(x, y if isinstance(y, lazy.Combined) else lazy.materialize(y))
        y = lazy.materialize(y)
        out = np.empty_like(x)
        dense.add(x, y, out)
        return out

    def swiglu_ffn(self, x, w_gate, w_up, w_down):
        self._check_pair(w_gate, w_up)
        x = lazy.materialize(x)
        rows, offsets, active = self._ident(x.shape[0])
        h = self._up_gate(self._act(x, w_gate.kind), w_gate, w_up, offsets, active, x.shape[0])
        return self._mm(self._act(h, w_down.kind), w_down, rows, offsets, active, x.shape[0])

    def rows(self, x, idx):
        x = lazy.materialize(x)
        return np.ascontiguousarray(x[np.asarray(idx, np.int64)])

    def split(self, x, sizes):
        x = lazy.materialize(x)
        parts, a = [], 0
        for size in sizes:  # one row's slices are already contiguous: views, no copies
            parts.append(x[:, a : a + size] if x.shape[0] == 1 else np.ascontiguousarray(x[:, a : a + size]))
            a += size
        return parts

    def to_host(self, x):
        return np.asarray(lazy.materialize(x), np.float32)

    # ---- attention
    def kv_store(self, cache: attention.KVCache, il, k, v, pos0):
        v = lazy.materialize(v)
        if isinstance(k, lazy.PerHead) and k.cs is not None:  # k's norm and rotation and the store in one call
            attention.rope_store_k(k.x, v, k.w, k.do_norm, k.eps, k.cs, k.sn, cache.k[il], cache.v[il], cache.vs[il],
                                   int(pos0), cache.type_k == "q8_0", cache.type_v == "q8_0")
            return
        k = lazy.materialize(k)
        attention.kv_store(k, v, cache.k[il], cache.v[il], cache.vs[il], int(pos0),
                           cache.type_k == "q8_0", cache.type_v == "q8_0")

    def attention(self, q, cache: attention.KVCache, il, pos0, n_head, n_head_kv, head_dim):
        q = lazy.materialize(q)  # a deferred q is normed and rotated here
        out = np.empty_like(q)
        # few, long items (one per KV head and token tile): one by one; a decode step's items are equal, halves
        self._chunk(1 if q.shape[0] > 1 else 0)
        attention.flash_attn(q, out, int(pos0), int(n_head), cache.k[il], cache.v[il], cache.vs[il],
                             cache.type_k == "q8_0", cache.type_v == "q8_0")
        return out

    # ---- MoE
    def route_softmax_topk(self, logits, k, norm):
        ids, w = np.empty((logits.shape[0], k), np.int32), np.empty((logits.shape[0], k), np.float32)
        self._kernel(moe.route_softmax_topk, logits.shape[0])(logits, int(k), bool(norm), ids, w)
        return ids, w

    def route_sigmoid_topk(self, logits, bias, k, n_groups, n_groups_used, norm, norm_eps, scale):
        ids, w = np.empty((logits.shape[0], k), np.int32), np.empty((logits.shape[0], k), np.float32)
        b = bias if bias is not None else np.zeros(logits.shape[1], np.float32)
        self._kernel(moe.route_sigmoid_topk, logits.shape[0])(
            logits, b, bias is not None, int(k), int(n_groups), int(n_groups_used), bool(norm), float(norm_eps),
            float(scale), ids, w)
        return ids, w

    def group_rows_by_expert(self, ids, n_expert):
        r = ids.size
        rows, xrows, offsets = np.empty(r, np.int64), np.empty(r, np.int64), np.empty(n_expert + 1, np.int64)
        active = moe.group_rows(np.ascontiguousarray(ids, np.int32), int(n_expert), rows, xrows, offsets)
        return Groups(ids, rows, xrows, offsets, active)

    def expert_up_gate(self, x, w_gate, w_up, groups: Groups):
        """-> ExpertRows: the [R, F] hidden rows in expert order (``.routed()`` gives the (t, j) order)."""
        self._check_pair(w_gate, w_up)
        x = lazy.materialize(x)
        xin = self._act(x, w_gate.kind, gather=groups.xrows)
        return ExpertRows(self._up_gate(xin, w_gate, w_up, groups.offsets, groups.active, groups.rows.size), groups)

    def expert_down(self, h: "ExpertRows", w_down, groups: Groups):
        """[R, E] in (t, j) order: each expert's rows are read in one run and written to their routed row."""
        return self._mm(self._act(h.h, w_down.kind), w_down, groups.rows, groups.offsets, groups.active,
                        groups.rows.size)

    def combine(self, y, weights):
        if weights.shape[0] <= SMALL_ROWS:  # done by the add that reads it
            return lazy.Combined(y, weights)
        out = np.empty((weights.shape[0], y.shape[1]), np.float32)
        moe.combine(y, weights, out)
        return out


class NumbaCpuEngine(ForwardEngine):
    name = "numba-cpu"
    # said before the warm-up: a qwen3 Q4_K model's kernels took 204 s to compile on a 2-core machine (2026-12-05)
    warmup_note = "the first run on a machine compiles the kernels (minutes); later runs load Numba's cache"
    IGNORED = {
        "flash_attn": "attention is always flash-style (online softmax over chunks of cells)",
        "fused_moe": "up and gate are always fused (one quantized activation, one pass)",
        "seed": "nothing is sampled",
    }

    def load(self, model_path: str, options: EngineOptions) -> None:
        decode_step_mode()  # a bad SWEEPBENCH_DECODE_STEP fails before any weight loads
        self.ops = CpuOps()
        self.n_threads = set_threads(options.n_threads)
        self._repack_seconds = 0.0
        self._layouts: dict[str, int] = {}
        self.compile_seconds = None
        super().load(model_path, options)
        self._fused = self.fuse_qkv(fuse_rows)
        self._step, self._step_note = None, "op by op (not warmed up)"

    def prepare_weight(self, name: str, kind: str, t: GGUFTensor, cfg: ModelConfig) -> Any:
        if t.qtype not in SUPPORTED:
            raise SweepbenchError(f"{name}: quant type {Q(t.qtype).name} is not supported by numba-cpu")
        if kind in ("norm", "bias"):
            return np.ascontiguousarray(dequantize(t.raw, t.qtype, t.row_len).reshape(-1))
        if kind == "embedding" and name == "token_embd.weight":
            # copied into RAM: a row read from the mapped file can be a disk read (5-8 ms per token measured)
            return QuantMatrix(np.array(t.raw), Q(t.qtype), t.row_len)
        t0 = time.perf_counter()
        w = _prepare(t, cfg.n_expert if kind == "experts" else 1, self.options.repack)
        self._repack_seconds += time.perf_counter() - t0
        layout = "R8" if isinstance(w, QuantR8) else "row-major"
        self._layouts[layout] = self._layouts.get(layout, 0) + 1
        return w

    def allocate_cache(self, cfg: ModelConfig, options: EngineOptions) -> attention.KVCache:
        return attention.KVCache(cfg.n_layer, options.n_ctx, cfg.n_head_kv, cfg.head_dim, options.type_k,
                                 options.type_v)

    def warmup(self) -> None:
        """Compiles (or loads from Numba's cache) every kernel path: the all-experts BOS token runs the decode
        tiles, a short prefill the 4-token tiles; the time is reported once by describe()."""
        t0 = time.perf_counter()
        super().warmup()
        n = min(8, self.options.n_ctx, self.options.n_ubatch)
        if n > 1:
            self.prefill(np.full(n, self.config.bos_token_id), 0)
        if self._step is None:
            self._start_step()
        self.n_filled = 0
        if self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - t0

    def _start_step(self) -> None:
        """The compiled one-call decode step (``engines.cpu_step``) where the model allows it."""
        try:
            step = CompiledDecode(self, self.n_threads)
        except Unsupported as why:
            self._step_note = f"op by op ({why})"
            return
        step.compile()
        step.start()
        self._step = step
        self._step_note = f"compiled, {step.n_roles} thread(s) with spin barriers"

    def decode(self, token: int, pos: int) -> np.ndarray:
        if self._step is None:
            return super().decode(token, pos)
        self._check(np.array([token]), pos)
        logits = self._step.decode(int(token), int(pos))
        self.n_filled = pos + 1
        return logits

    def close(self) -> None:
        if self._step is not None:
            self._step.close()
            self._step = None
        super().close()

    def describe(self) -> dict:
        d = super().describe()
        d.update({
            "threading_layer": threading_layer(), "n_threads": self.n_threads, "simd": ISA, "cpu_target": CPU_NAME,
            "layouts": dict(self._layouts), "repack_seconds": round(self._repack_seconds, 3),
            "fused_qkv_layers": self._fused, "decode_step": self._step_note,
            "compile_seconds": None if self.compile_seconds is None else round(self.compile_seconds, 3),
        })
        return d
