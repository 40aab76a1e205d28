"""The ops table of the numba-cuda engine: every op of ``sweepbench.models.ops`` as kernel launches on one stream.

Activations are ``memory.Act`` handles (float32 device buffers from a pool); weights ``weights.DeviceWeight``.
The position and the token ids are device scalars (``begin`` writes them outside a capture), kernels read them,
so a decode step captured once into a CUDA graph replays for every position. No op synchronises with the host
except ``to_host``. A few op pairs are fused through deferred values (``lazy``).
"""
from __future__ import annotations

import math
import os

import numpy as np
from numba import cuda

from cuda_kernels import attention as att
from cuda_kernels import elementwise as ew
from cuda_kernels import flash, gemm, gemv, routing, sgemm
from cuda_kernels.env import SIM
from cuda_kernels.footprint import GEMV_MAX_T, NORM_MAX_WIDTH, SMS, flash_split_parts, norm_width_ok, sgemm_parts
from cuda_kernels.lazy import (Groups, LazyAdd, LazyCombine, LazyDown, LazyFlash, LazyMatmul, LazyNormHeads,
                               LazyRope, PendingRoute, Routed)
from cuda_kernels.memory import Act, Pool
from cuda_kernels.qdot import QUANTIZED
from cuda_kernels.rope import norm_rope, qk_rope_store
from cuda_kernels.weights import FusedPart

TQ = 64  # query rows per flash-decoding launch in prefill (bounds the partials' scratch)


def _same_rotation(q: LazyRope, k: LazyRope) -> bool:
    """q and k rotated alike (one fused launch serves both)."""
    return (q.x.rows == k.x.rows and (q.head_dim, q.n_rot, q.base, q.freq_scale, q.do_norm)
            == (k.head_dim, k.n_rot, k.base, k.freq_scale, k.do_norm))


def _blocks(n: int, per: int) -> int:
    return max(1, (int(n) + per - 1) // per)


def _env_switch(name: str, default: str, choices: tuple[str, ...]) -> str:
    """A decode-step switch from the environment (stripped, lower case; empty = default); any other value is a
    one-line usage error naming the choices."""
    value = os.environ.get(name, default).strip().lower() or default
    if value not in choices:
        from sweepbench.errors import UsageError

        raise UsageError(f"{name}={value}: choose {', '.join(choices[:-1])} or {choices[-1]}")
    return value


def tails_setting() -> bool:
    """SWEEPBENCH_CUDA_TAILS: on or off (the default: measured on an H100, the tails cost about what the launches
    they replace cost, benchmarks/NOTES.md)."""
    return _env_switch("SWEEPBENCH_CUDA_TAILS", "off", ("on", "off")) == "on"


def pdl_setting() -> str:
    """SWEEPBENCH_CUDA_PDL: order (the default: 2.6% less GPU time per decode step than off in two H100 A/Bs,
    benchmarks/NOTES.md), exit or off (``graph.PDL_PORTS``: when a decode graph's kernel is launched relative to
    its predecessor). Only where the kernels carry the grid-dependency wait (sm_90 on); elsewhere always off."""
    from cuda_kernels.env import GRID_DEP
    from cuda_kernels.graph import PDL_PORTS

    value = _env_switch("SWEEPBENCH_CUDA_PDL", "order", ("off", *PDL_PORTS))
    return value if GRID_DEP else "off"


def prefetch_setting() -> bool:
    """SWEEPBENCH_CUDA_PREFETCH: on or off (the default until a device A/B measures it): one-token dense GEMVs ask
    L2 for their weight rows before their grid-dependency wait (``gemv.prefetch_rows``)."""
    return _env_switch("SWEEPBENCH_CUDA_PREFETCH", "off", ("on", "off")) == "on"


def q8_prefill_setting() -> str:
    """SWEEPBENCH_CUDA_Q8_PREFILL: how the prefill attention reads a q8_0 cache: ``f16`` (the default; H100 A/B in
    benchmarks/NOTES.md: qwen3-30b-a3b S_PP +29% at N_KV 14336, +5% at 0) converts the cells in use to an f16 copy
    first (``flash.q8_to_f16_kernel``), then runs the f16 kernel; ``stage`` dequantizes each tile while staging
    it, once per query head. Same bits."""
    return _env_switch("SWEEPBENCH_CUDA_Q8_PREFILL", "f16", ("stage", "f16"))


TPW_CHOICES = ("1", "2", "4", "8")  # tiles per warp and part the decode attention's switches accept


def att_tpw_setting() -> int:
    """SWEEPBENCH_CUDA_ATT_TPW: 16-cell tiles each warp of the decode attention's warp split takes per part (1, 2,
    4 or 8; default ``attention.TPW``). Fewer tiles: more parts of fewer cells, a shorter chain of tile steps per
    block and a longer merge."""
    return int(_env_switch("SWEEPBENCH_CUDA_ATT_TPW", str(att.TPW), TPW_CHOICES))


def flash_setting() -> str:
    """SWEEPBENCH_CUDA_FLASH: how the prefill attention (``flash.prefill_kernel``) moves its KV tiles and reads its
    mma B fragments: ``ex2-wide-trans`` (the default: 16-byte loads, ``flash.wide_movers``; K and V staged as
    [cell][dim] rows by 16-byte shared stores; ldmatrix reads, .trans for V; a q8_0 tile or a head dim the movers
    do not fit takes ex2's loads) or ``ex2`` (4-byte loads, ``flash.tile_movers``, V transposed, LDS reads); the
    same bits. H100s, qwen3 heads, one layer at N_KV 14336, -ub 2048: ex2 3983 us, ex2-wide-trans 1955 us, the
    variants between them measured step by step (benchmarks/gpu_flash_micro.py, NOTES.md)."""
    return _env_switch("SWEEPBENCH_CUDA_FLASH", "ex2-wide-trans", flash.VARIANTS)


def flash_split_setting() -> str:
    """SWEEPBENCH_CUDA_FLASH_SPLIT: the prefill attention's KV split (``flash.prefill_kernel(split=True)``):
    ``auto`` (the default: from N_KV 1024, as many parts, up to 4, as fit the SMs the query tiles and heads leave
    idle: a ling-mini-2.0 ubatch of 512 is 64 blocks of one per SM for 132 SMs), ``off`` (one block per query
    tile and head) or a fixed ``2`` / ``3`` / ``4`` parts at any depth (tests, A/Bs). Not the unsplit kernel's
    bits where it splits (the parts' sums merge in another order). H100, ling-mini-2.0 -ub 512: S_PP +2.6% at
    N_KV 7680 (NOTES.md)."""
    return _env_switch("SWEEPBENCH_CUDA_FLASH_SPLIT", "auto", ("off", "auto", "2", "3", "4"))


FLASH_SPLIT_MIN_KV = 1024  # ``auto`` splits from this depth: the parts' writes and merge launch cost ~5-10 us


def _sm_count() -> int:
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:  # noqa: BLE001 - no attribute in the simulator, no driver in a dry run: an H100's count
        return SMS


def gemm_setting() -> str:
    """SWEEPBENCH_CUDA_GEMM: how the prefill GEMMs (``gemm.kernel``) convert and stage a step's loaded words:
    ``late-swz`` (the default: kept raw and converted as the next iteration stages them, after the mma in
    between, then staged by 16-byte stores into swizzled unpadded rows: no bank conflicts), ``late`` (the same
    with 4-byte stores into padded rows: 4-way conflicts) or ``early`` (converted right after the loads, which
    then wait out their latency before the step's mma); the same bits. H100, qwen3-30b-a3b through the CLI,
    S_PP: early -> late +8.7% at -ub 2048, +6-8% at -ub 512; late -> late-swz (with f16 activations) +16% at
    -ub 2048, +15% for ling-mini-2.0 -ub 512 (NOTES.md)."""
    return _env_switch("SWEEPBENCH_CUDA_GEMM", "late-swz", ("early", "late", "late-swz"))


def gemm_regs_setting() -> int:
    """SWEEPBENCH_CUDA_GEMM_REGS: a cap on the prefill GEMMs' registers per thread, ``0`` (the default: none) or
    ``128`` (4 blocks of 128 threads per SM instead of 3: with local ptxas the dense GEMMs fit in 124 without
    spilling, the grouped ones spill 20-140 bytes; not yet measured)."""
    return int(_env_switch("SWEEPBENCH_CUDA_GEMM_REGS", "0", ("0", "128")))


def gemm_x_setting() -> str:
    """SWEEPBENCH_CUDA_GEMM_X: the prefill GEMMs' activations, ``f16`` (the default: the RMSNorm before a GEMM
    also writes its rows as f16 pairs, the fused expert gate/up GEMM writes its output so for the down
    projection, and the prefill attention its rows for the output projection (``LazyFlash``): half the bytes and
    registers of the activation loads, which were ~80% of a GEMM step's load bytes) or ``f32`` (float32 rows,
    rounded to f16 as they are staged); the same rounding, so the same bits. H100, through the CLI: S_PP +10-11%
    for qwen3-30b-a3b -ub 2048, +4-5% for ling-mini-2.0 -ub 512 (NOTES.md; the attention's pairs came later,
    not yet measured)."""
    return _env_switch("SWEEPBENCH_CUDA_GEMM_X", "f16", ("f32", "f16"))


def q8_decode_setting() -> str:
    """SWEEPBENCH_CUDA_Q8_DECODE: how the decode attention's warp split loads a q8_0 cache's cells: ``hoist``
    (the default; every cell of a tile fetched first, then widened: ``attention.q8_row_parts``) or ``inline``
    (each cell's loads, then its widening to f16, cell after cell: a memory wait per cell). Same bits. H100,
    qwen3-30b-a3b -ub 2048 q8_0 cache: hoist S_TG +5% at N_KV 0, +10% from 4096 (benchmarks/NOTES.md)."""
    return _env_switch("SWEEPBENCH_CUDA_Q8_DECODE", "hoist", ("inline", "hoist"))


# The warp split's tiles per warp below a depth, by cache type: a q8_0 cache's tile step costs more than an f16
# one (it widens every cell), so shallow steps gain from shorter parts and deep ones lose. H100,
# gpu_attention_micro.py, qwen3 heads, hoisted loads, us per layer at 4 / 2 tiles: 19.1 / 12.4 at 512, 19.4 /
# 16.3 at 2048, 20.5 / 17.5 at 8192, 20.9 / 31.9 at 14336. benchmarks/NOTES.md, sessions of 2026-12-06.
ATT_LOW_BY_KV = {"q8_0": (2, 8192)}  # cache type -> (tiles per warp, below this many cells)


def att_low_setting(kv_type: str) -> tuple[int, int]:
    """SWEEPBENCH_CUDA_ATT_LOW: ``TPW:CELLS`` (decode steps at positions below CELLS run the warp split with TPW
    tiles per warp), ``off``, or unset: ``ATT_LOW_BY_KV`` for the cache's type (q8_0 if either side is)."""
    name = "SWEEPBENCH_CUDA_ATT_LOW"
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return ATT_LOW_BY_KV.get(kv_type, (att.TPW, 0))
    if value == "off":
        return att.TPW, 0
    tpw, _, cells = value.partition(":")
    if tpw not in TPW_CHOICES or not cells.isdigit():
        from sweepbench.errors import UsageError

        raise UsageError(f"{name}={value}: TPW:CELLS (TPW 1, 2, 4 or 8; e.g. 2:4096) or off")
    return int(tpw), int(cells)


# Where Ling's TG loses to order-port edges sooner than qwen3's (benchmarks/NOTES.md; H200: ling-mini-2.0 553.7 t/s
# over positions 0-127 with order edges, ~521 over 128-511, 539.5 over 512-639 with exit ones; H100 A/B, -ub 2048
# N_KV 0: 550.8 t/s with exit edges from 128, 532.8 from 512)
PDL_DEEP_BY_ARCH = {"bailingmoe2": 128}


def pdl_deep_cells(arch: str = "") -> int:
    """SWEEPBENCH_CUDA_PDL_DEEP: the position from which decode steps replay a graph whose edges use the exit port
    instead of the order one (0: the order port at every depth). Default: the architecture's entry in
    ``PDL_DEEP_BY_ARCH``, else 512 (H100, benchmarks/NOTES.md): order edges lose TG with depth (qwen3-30b-a3b:
    +2-6% over plain ones up to N_KV 3072, -2-4% from 3584; ling-mini-2.0 -ub 512: 529 t/s at N_KV 512 falling to
    516 at 3072 with order edges, 547 at 3584 with exit ones), exit edges do not (small qwen3 preset at N_KV
    12288: -1.5% GPU time per step against plain, order +3.7%), and at N_KV 0 order is ahead of exit by 0.9%."""
    default = str(PDL_DEEP_BY_ARCH.get(arch, 512))
    value = os.environ.get("SWEEPBENCH_CUDA_PDL_DEEP", default).strip() or default
    if not value.isdigit():
        from sweepbench.errors import UsageError

        raise UsageError(f"SWEEPBENCH_CUDA_PDL_DEEP={value}: a number of cells (0: order-port edges at every depth)")
    return int(value)


class CudaOps:
    def __init__(self, max_tokens: int, n_ctx: int):
        self.stream = cuda.stream()
        self.pool = Pool(self.stream)
        self.n_ctx = n_ctx
        self.io = cuda.device_array(1 + max_tokens, np.int32)  # [position, token ids...]
        self.posv, self.tokv = self.io[0:1], self.io[1:]
        self.zero_ids = cuda.to_device(np.zeros(max(max_tokens, 1), np.int32))
        self.u32 = cuda.device_array(4, np.uint32)  # stand-ins for arguments a kernel variant does not read
        self.f32 = cuda.device_array(4, np.float32)
        self.capturing = False
        self.n_launches = 0
        self._fused_in: tuple = (None, None, None)  # (input, fused weight, product) of the last fused product
        self.gemv_max_t = GEMV_MAX_T
        self.i32 = cuda.device_array(4, np.int32)
        self.att_nw, self.att_combine_nw = att.NWD, att.COMBINE_WARPS  # flash-decoding block shapes
        # which split kernel, and its shape
        self.att_split, self.att_ws_nw, self.att_tpw = "warp", att.WS_WARPS, att_tpw_setting()
        # ... and below att_low_cells positions, att_tpw_low tiles per warp (``set_cache_type``); a graph captured
        # with graph_low set serves only such positions
        self.att_tpw_low, self.att_low_cells, self.graph_low = self.att_tpw, 0, False
        # The decode step's launch-saving tails (below); SWEEPBENCH_CUDA_TAILS=on turns all three on (off by
        # default: no faster on the device; A/B runs through the CLI, e.g. a sweep).
        tails = tails_setting()
        # Decode attention over at most att_fuse_parts parts: the split's last block merges them (no combine
        # launch). A graph captured with graph_parts set spans that many parts (the engine's shallow graph).
        self.att_fuse_parts, self.graph_parts = (att.FUSE_PARTS if tails else 0), None
        self.att_counter = cuda.to_device(np.zeros(TQ * 64, np.int32))  # [T, Hkv] blocks done, back to 0 after
        self.gemv_nw = gemv.GEMV_WARPS  # output rows per GEMV block
        # one token's add -> rms_norm runs as the tail of the GEMV that makes the addend (no RMSNorm launch)
        self.norm_tails = tails
        self.route_tails = tails  # ... and one token's router GEMV routes it in its last block (no routing launch)
        self.tail_counter = cuda.to_device(np.zeros(1, np.int32))  # blocks of that GEMV done (back to 0 after)
        self.pdl = pdl_setting()  # programmatic edges in the decode graphs (graph.programmatic_edges) ...
        self.pdl_deep = pdl_deep_cells()  # ... order-port ones below this position, exit-port ones from it
        self.gemv_prefetch = prefetch_setting()  # one-token dense GEMVs prefetch their rows before the wait
        self.q8_prefill = q8_prefill_setting()  # prefill attention over a q8_0 cache: staged or via an f16 copy
        self.q8_decode = q8_decode_setting()  # decode attention over a q8_0 cache: loads inline or hoisted
        self.flash = flash_setting()  # the prefill attention's variant
        self.flash_split = flash_split_setting()  # ... and its KV split
        self.n_sm = _sm_count()
        self.gemm = gemm_setting()  # the prefill GEMMs' variant
        self.gemm_regs = gemm_regs_setting()  # ... and their register cap (0: none)
        self.gemm_x = gemm_x_setting()  # ... and their activations' type
        self._f16_kv: dict = {}  # (side, words) -> that f16 copy's buffer, allocated at first use
        self._no_tail = (self.f32, self.f32, self.f32, self.f32, self.u32, self.f32, np.float32(0), self.tail_counter)
        self._pending_kv: tuple | None = None  # a kv_store of a deferred k, done by the next attention
        # A decode step's up/gate kernel may route its token itself (no routing launch). Off until the warp-0
        # version is measured on the device: the first version (every warp routing) made shallow TG slower
        # (benchmarks/NOTES.md, GPU section); tests and gpu_profile.py --fuse-route turn it on.
        self.fuse_route = False
        if SIM:  # the simulator runs a thread per CUDA thread and polls them all at each barrier: keep blocks small
            self.att_nw, self.att_combine_nw, self.gemv_nw, self.att_ws_nw = 1, 2, 1, 1

    # ---- plumbing ----------------------------------------------------------------------------------------
    def begin(self, tokens, pos0: int) -> None:
        """Before a forward: position and token ids into the device scalars (skipped while capturing)."""
        if self.capturing:
            return
        io = np.empty(1 + len(tokens), np.int32)
        io[0], io[1:] = pos0, np.asarray(tokens, np.int64)
        self.io[: len(io)].copy_to_device(io, stream=self.stream)  # pageable source: consumed before return

    def new(self, rows: int, cols: int) -> Act:
        return Act(self.pool, self.pool.get(rows * cols), rows, cols)

    def launch(self, kernel, grid, block, *args):
        self.n_launches += 1
        kernel[grid, block, self.stream](*args)

    def act(self, x) -> Act:
        """Materialize a deferred value."""
        if isinstance(x, LazyAdd):
            if x.value is None:
                a, b = self.act(x.x), self.act(x.y)
                out = self.new(a.rows, a.cols)
                n = a.rows * a.cols
                self.launch(ew.add, _blocks(n, 256), 256, a.f, b.f, out.f, n)
                x.settle(out)
            return x.value
        if isinstance(x, LazyNormHeads):
            return self._norm_rope(x.x, x.w, x.eps, x.head_dim, 0, 1.0, 1.0, True)
        if isinstance(x, LazyRope):
            if x.value is None:
                x.value = self._norm_rope(x.x, x.w, x.eps, x.head_dim, x.n_rot, x.base, x.freq_scale, x.do_norm)
            return x.value
        if isinstance(x, LazyDown):
            return self._expert_rows(x.h, x.w, x.groups, 1)
        if isinstance(x, LazyCombine):
            if x.value is None:
                x.value = self._down_combine(x, x.addend)
            return x.value
        if isinstance(x, LazyMatmul):
            if x.value is None:
                x.value = self._gemv(x.x, x.w)
            return x.value
        if isinstance(x, LazyFlash):
            if x.value is None:
                x.value = self._flash(x, False)
            return x.value
        return x

    def q8(self, x: Act):
        """The q8_1 companion of x (quantized once, kept with x)."""
        if x.q8 is None:
            n4 = x.rows * x.cols // 4
            xq, xa = self.pool.get(n4, np.uint32), self.pool.get(n4 // 4)
            self.launch(ew.quantize_q8_1, _blocks(n4, 256), 256, x.f, xq, xa, n4)
            x.attach_q8(xq, xa)
        return x.q8

    def _inputs(self, x: Act, kind: str):
        """(xq, xa, xf) for a weight of this kind: q8_1 for quantized weights, the float rows otherwise."""
        if kind in QUANTIZED:
            xq, xa = self.q8(x)
            return xq, xa, self.f32
        return self.u32, self.f32, x.f

    # ---- dense ops ---------------------------------------------------------------------------------------
    def embed(self, w, tokens) -> Act:
        t = len(tokens)
        out = self.new(t, w.row_len)
        self.launch(ew.embed_kernel(w.kind), _blocks(t * w.row_len // 32, 128), 128, w.qs, w.hdr, self.tokv, out.f,
                    t, w.row_len)
        return out

    def _tail_producer(self, x):
        """(producer, other addend) where x is one token's unmaterialized add whose one side a GEMV still has to
        make (a LazyMatmul, or a LazyCombine: the down projection), else (None, None)."""
        if not (self.norm_tails and isinstance(x, LazyAdd) and x.value is None):
            return None, None
        for p, other in ((x.y, x.x), (x.x, x.y)):
            if isinstance(p, (LazyMatmul, LazyCombine)) and p.value is None and p.shape[0] == 1 \
                    and not isinstance(other, (LazyMatmul, LazyCombine, LazyDown, LazyAdd)):
                return p, other
        return None, None

    def rms_norm(self, x, w, eps: float) -> Act:
        p, other = self._tail_producer(x)
        if p is not None:
            a = self.act(other)
            e = a.cols
            if a.rows == 1 and norm_width_ok(e) and p.shape[1] == e:
                res, out = self.new(1, e), self.new(1, e)
                xq, xa = self.pool.get(e // 4, np.uint32), self.pool.get(e // 16)
                out.attach_q8(xq, xa)
                tail = (a.f, res.f, w, out.f, xq, xa, np.float32(eps), self.tail_counter)
                if isinstance(p, LazyMatmul):
                    p.value = self._gemv(p.x, p.w, tail)
                else:
                    p.value = self._down_combine(p, p.addend, tail)
                x.settle(res)
                return out
        add = isinstance(x, LazyAdd) and x.value is None
        if add:
            a, b = self.act(x.x), self.act(x.y)
            res = self.new(a.rows, a.cols)
            x.settle(res)
        else:
            a = self.act(x)
            b = res = a
        t, e = a.rows, a.cols
        if not norm_width_ok(e):
            raise ValueError(f"rms_norm: row length {e} must be a multiple of 32 and at most {NORM_MAX_WIDTH}")
        out = self.new(t, e)
        h16 = self.gemm_x == "f16" and t > self.gemv_max_t  # the rows a GEMM reads next: f16, no q8_1 copy
        if h16:
            xq, xa, xh = self.u32, self.f32, self.pool.get(t * e // 2, np.uint32)
            out.attach_h16(xh)
        else:
            xq, xa, xh = self.pool.get(t * e // 4, np.uint32), self.pool.get(t * e // 16), self.u32
            out.attach_q8(xq, xa)
        self.launch(ew.rms_norm, t, 32 * _blocks(e // 4, 32), a.f, b.f, res.f, w, out.f, xq, xa, xh, e,
                    np.float32(eps), add, not h16, h16)
        return out

    def rms_norm_heads(self, x, w, eps: float, head_dim: int):
        return LazyNormHeads(self.act(x), w, eps, head_dim)

    def rope_neox(self, x, pos0: int, head_dim: int, n_rot: int, base: float, freq_scale: float) -> LazyRope:
        if isinstance(x, LazyNormHeads):
            return LazyRope(x.x, x.w, x.eps, head_dim, n_rot, base, freq_scale, True)
        return LazyRope(self.act(x), self.f32, 0.0, head_dim, n_rot, base, freq_scale, False)

    def _norm_rope(self, x: Act, w, eps, d, n_rot, base, freq_scale, do_norm) -> Act:
        out = self.new(x.rows, x.cols)
        self.launch(norm_rope, x.rows * (x.cols // d), d, x.f, w, out.f, self.posv, x.cols // d, d, n_rot,
                    np.float64(base), np.float64(freq_scale), np.float32(eps), do_norm)
        return out

    def matmul(self, x, w) -> Act:
        if isinstance(x, LazyFlash) and x.value is None and not isinstance(w, FusedPart) and w.kind != "f32":
            x.value = self._flash(x, True)  # the GEMM reads f16 pairs (the float32 GEMM of f32 weights does not)
        x = self.act(x)
        if isinstance(w, FusedPart):  # q, k, v of one layer: one product, then column views
            if self._fused_in[0] is not x or self._fused_in[1] is not w.whole:
                self._fused_in = (x, w.whole, self.act(self.matmul(x, w.whole)))
            y = self._fused_in[2]
            if y.rows == 1:
                return Act(self.pool, y.f[w.lo : w.hi], 1, w.hi - w.lo, parent=y)
            out = self.new(y.rows, w.hi - w.lo)
            self.launch(ew.copy_cols, _blocks(y.rows * out.cols, 256), 256, y.f, out.f, y.rows, y.cols, w.lo, out.cols)
            return out
        t, n = x.rows, w.n_rows
        if t > self.gemv_max_t:
            y = self.new(t, n)
            if w.kind == "f32":
                self._sgemm(w, x, y, t, n)
            else:
                self._gemm(w, None, x, y, t, None, 1)
            return y
        if t == 1:  # launched when read; an add -> rms_norm may make the norm its tail
            return LazyMatmul(x, w)
        return self._gemv(x, w)

    def _sgemm(self, w, x: Act, y: Act, m: int, n: int) -> None:
        """y = x w^T for float32 weights (a router), K split into parts added in order where tiles are few."""
        k = w.row_len
        if k % 32:
            raise ValueError(f"matmul: float32 weight rows of {k} values (not a multiple of 32) are not supported "
                             "on the GPU")
        parts, k_len = sgemm_parts(m, n, k)
        grid = (_blocks(m, sgemm.B), _blocks(n, sgemm.B), parts)
        if parts == 1:
            self.launch(sgemm.sgemm_f32, grid, sgemm.THREADS, w.qs, x.f, y.f, m, n, k, k_len)
            return
        part = self.pool.get(parts * m * n)  # [S, M, N]
        self.launch(sgemm.sgemm_f32, grid, sgemm.THREADS, w.qs, x.f, part, m, n, k, k_len)
        self.launch(sgemm.sum_parts, _blocks(m * n, 256), 256, part, y.f, m * n, parts)
        self.pool.put(part)

    def _gemv(self, x: Act, w, tail: tuple | None = None) -> Act:
        t, n = x.rows, w.n_rows
        y = self.new(t, n)
        xq, xa, xf = self._inputs(x, w.kind)
        nw, wpr = self._gemv_shape(w)
        pf = self.gemv_prefetch and t == 1
        self.launch(gemv.dense(w.kind, nw, wpr, tail is not None, pf), _blocks(n, nw // wpr), 32 * nw, w.qs, w.hdr, xq,
                    xa, xf, y.f, n, w.row_len, t, *(tail or self._no_tail))
        return y

    def _gemv_shape(self, w) -> tuple[int, int]:
        """(warps per block, warps per row): short outputs (the router, K/V) split each row's K over 2-4 warps,
        so the grid has warps enough."""
        nw, n = self.gemv_nw, w.n_rows
        return nw, 1 if n >= 2048 else min(nw, 4 if n < 512 else 2, max(1, w.row_len // 1024))

    def add(self, x, y):
        if isinstance(x, LazyCombine) and x.value is None and x.addend is None \
                and not isinstance(y, (LazyCombine, LazyDown)):
            x.addend = self.act(y)  # routed experts + shared expert: one kernel (still deferred: a norm may follow)
            return x
        return LazyAdd(x, y)

    def swiglu_ffn(self, x, w_gate, w_up, w_down) -> Act:
        x = self.act(x)
        if x.rows > self.gemv_max_t and w_gate.kind == w_up.kind:
            h = self.new(x.rows, w_up.n_rows)
            self._gemm(w_gate, w_up, x, h, x.rows, None, 1)
        else:
            h = self._up_gate(x, w_gate, w_up, Routed(self.zero_ids, x.rows, 1))
        return self.matmul(h, w_down)

    def _gemm(self, w, w_up, x: Act, y: Act, m: int, groups: Groups | None, div: int) -> None:
        """y = x w^T (or silu(x w^T) * (x w_up^T)) on the tensor cores; per expert tile when groups is given.
        Reads x's f16 pairs where it has them; writes y's where y is held as f16 (``Act.half``)."""
        fused = w_up is not None
        second = w_up if fused else w
        xh, yh = x.h16 is not None, y.f is None
        k = gemm.kernel(w.kind, groups is not None, fused, self.gemm != "early", self.gemm == "late-swz",
                        self.gemm_regs, xh, yh)
        xs, ys = x.h16 if xh else x.f, y.h16 if yh else y.f
        if groups is None:
            grid = (_blocks(m, gemm.BM), _blocks(w.n_rows, gemm.BN))
            self.launch(k, grid, gemm.THREADS, w.qs, w.hdr, second.qs, second.hdr, xs, ys, m, w.n_rows, w.row_len,
                        self.i32, self.i32, self.i32, div, 0)
        else:
            grid = (groups.max_tiles, _blocks(w.n_rows, gemm.BN))
            self.launch(k, grid, gemm.THREADS, w.qs, w.hdr, second.qs, second.hdr, xs, ys, m, w.n_rows, w.row_len,
                        groups.rows, groups.offsets, groups.tiles, div, groups.n_expert)

    def rows(self, x, idx) -> Act:
        x = self.act(x)
        idx = [int(i) for i in idx]
        if idx == list(range(idx[0], idx[0] + len(idx))):
            if len(idx) == x.rows:
                return x
            a, b = idx[0] * x.cols, (idx[-1] + 1) * x.cols
            return Act(self.pool, x.f[a:b], len(idx), x.cols, parent=x)
        dev = cuda.to_device(np.array(idx, np.int32), stream=self.stream)
        out = self.new(len(idx), x.cols)
        self.launch(ew.gather_rows, _blocks(out.rows * out.cols, 256), 256, x.f, dev, out.f, len(idx), x.cols)
        return out

    def split(self, x, sizes) -> list:
        x = self.act(x)
        parts, off = [], 0
        for s in sizes:
            if x.rows == 1:
                parts.append(Act(self.pool, x.f[off : off + s], 1, s, parent=x))
            else:
                out = self.new(x.rows, s)
                self.launch(ew.copy_cols, _blocks(x.rows * s, 256), 256, x.f, out.f, x.rows, x.cols, off, s)
                parts.append(out)
            off += s
        return parts

    def to_host(self, x) -> np.ndarray:
        self._flush_kv()
        x = self.act(x)
        if x.f is None:  # held as f16 pairs only
            host = x.h16.copy_to_host(stream=self.stream).view(np.float16).astype(np.float32)
        else:
            host = x.f.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return host.reshape(x.rows, x.cols)

    # ---- attention ---------------------------------------------------------------------------------------
    def set_cache_type(self, type_k: str, type_v: str) -> None:
        """The decode attention's shallow shape for this cache (``att_low_setting``)."""
        self.att_tpw_low, self.att_low_cells = att_low_setting("q8_0" if "q8_0" in (type_k, type_v) else type_k)

    def low_cells(self) -> int:
        """Positions below which decode steps run the warp split with att_tpw_low tiles per warp (graphs for them
        are captured with graph_low set); 0 where that shape is the usual one, or the split is not the warp one,
        or the fused merge's shallow graph is on (its parts are sized with att_tpw)."""
        if self.att_split != "warp" or self.att_fuse_parts > 0 or self.att_tpw_low == self.att_tpw:
            return 0
        return self.att_low_cells

    def _decode_tpw(self, pos_last: int) -> int:
        """Tiles per warp of a decode attention whose last query is at pos_last: the same rule for a graph (its
        positions are all below low_cells() or none are) and an eager step, so a position gets the same bits."""
        low = self.graph_low if self.capturing else pos_last < self.low_cells()
        return self.att_tpw_low if low else self.att_tpw

    def shallow_cells(self) -> int:
        """Positions (cells) a decode graph captured with ``graph_parts = att_fuse_parts`` serves: its attention
        has no combine launch. 0 where no such graph is worth capturing (the staged split, or the fusion off)."""
        if self.att_split != "warp" or self.att_fuse_parts < 1:
            return 0
        return self.att_fuse_parts * att.part_cells(self.att_ws_nw, self.att_tpw)

    def kv_store(self, cache, il: int, k, v, pos0: int) -> None:
        self._flush_kv()
        if isinstance(k, LazyRope) and k.value is None:  # done with q's rotation by the attention that follows
            self._pending_kv = (cache, il, k, self.act(v))
            return
        self._store(cache, il, self.act(k), self.act(v))

    def _store(self, cache, il: int, k: Act, v: Act) -> None:
        n4 = k.rows * k.cols // 4
        self.launch(att.kv_store, _blocks(n4, 256), 256, k.f, v.f, cache.kq[il], cache.kd[il], cache.vq[il],
                    cache.vd[il], self.posv, k.rows, k.cols, cache.type_k == "q8_0", cache.type_v == "q8_0")

    def _flush_kv(self) -> None:
        if self._pending_kv is not None:
            cache, il, k, v = self._pending_kv
            self._pending_kv = None
            self._store(cache, il, self.act(k), v)

    def _rope_store(self, q: LazyRope, k: LazyRope, v: Act, cache, il: int) -> Act:
        """q's norm and rotation, k's, and the cache store of k and v: one launch."""
        x, kx = q.x, k.x
        d, h, hkv = q.head_dim, x.cols // q.head_dim, kx.cols // q.head_dim
        out = self.new(x.rows, x.cols)
        self.launch(qk_rope_store, x.rows * (h + hkv), d, x.f, kx.f, v.f, q.w, k.w, out.f, cache.kq[il], cache.kd[il],
                    cache.vq[il], cache.vd[il], self.posv, h, hkv, d, q.n_rot, np.float64(q.base),
                    np.float64(q.freq_scale), np.float32(q.eps), q.do_norm, cache.type_k == "q8_0",
                    cache.type_v == "q8_0")
        q.value = out
        return out

    def flash_split_parts_at_depth(self, n_tokens: int, n_head: int) -> int:
        """The KV parts a ubatch of n_tokens gets deep in the cache (the engine's warmup compiles them)."""
        return self._flash_parts(_blocks(n_tokens, flash.BQ) * n_head, FLASH_SPLIT_MIN_KV)

    def _flash_parts(self, blocks: int, pos0: int) -> int:
        """KV parts of the prefill attention (SWEEPBENCH_CUDA_FLASH_SPLIT) for this many query tiles x heads."""
        if self.flash_split == "off":
            return 1
        if self.flash_split != "auto":
            return int(self.flash_split)
        return flash_split_parts(blocks, self.n_sm) if pos0 >= FLASH_SPLIT_MIN_KV else 1

    def _q8_as_f16(self, side: str, xq, xd, n_words: int, cache):
        """The first n_words words of a q8_0 cache side as f16 words (a buffer for the whole context, reused)."""
        key = (side, cache.n_ctx * cache.n_embd_kv // 2)
        if key not in self._f16_kv:
            self._f16_kv[key] = cuda.device_array(key[1], np.uint32)
        buf = self._f16_kv[key]
        self.launch(flash.q8_to_f16_kernel(), (_blocks(n_words, 256),), 256, xq, xd, buf, n_words)
        return buf

    def attention(self, q, cache, il: int, pos0: int, n_head: int, n_head_kv: int, head_dim: int) -> Act:
        pend, self._pending_kv = self._pending_kv, None
        if pend is not None:
            pc, pil, k, v = pend
            fusable = (isinstance(q, LazyRope) and q.value is None and pc is cache and pil == il
                       and _same_rotation(q, k))
            if fusable:
                self._rope_store(q, k, v, cache, il)
            else:
                self._store(pc, pil, self.act(k), v)
        q = self.act(q)
        t = q.rows
        if att.unsupported_heads(n_head, n_head_kv, head_dim):
            raise ValueError(f"attention: {n_head}/{n_head_kv} heads of {head_dim} are not supported on the GPU")
        if t > self.gemv_max_t:  # prefill: tensor-core flash attention, launched by its reader (LazyFlash)
            lazy = LazyFlash(q, cache, il, pos0, n_head, n_head_kv, head_dim)
            return lazy if self.gemm_x == "f16" else self._flash(lazy, False)
        if cache.n_ctx > att.MAX_CONTEXT:
            raise ValueError(f"attention: a context of {cache.n_ctx} is longer than the {att.MAX_CONTEXT} cells "
                             "the GPU flash-decoding combine merges")
        k_q8, v_q8 = cache.type_k == "q8_0", cache.type_v == "q8_0"
        warp = self.att_split == "warp"
        tpw = self._decode_tpw(pos0 + t - 1)
        if warp:
            nwd, spl = self.att_ws_nw, att.part_cells(self.att_ws_nw, tpw)
        else:
            nwd, spl = min(self.att_nw, head_dim // 16), flash.BKV  # a warp's O slice covers whole 16-dim groups
        n_parts = _blocks(cache.n_ctx, spl)
        combine = att.combine_kernel(head_dim, spl, self.att_combine_nw)
        out = self.new(t, n_head * head_dim)
        xq, xa = self.pool.get(t * n_head * head_dim // 4, np.uint32), self.pool.get(t * n_head * head_dim // 16)
        out.attach_q8(xq, xa)  # the output projection's quantized input, written by the combine
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for t0 in range(0, t, TQ):
            tz = min(TQ, t - t0)
            part_o = self.pool.get(tz * n_head * n_parts * head_dim)
            part_ml = self.pool.get(tz * n_head * n_parts * 2)
            if self.capturing:  # a graph serves every position up to its parts (all of n_ctx unless shallow)
                grid_x = min(n_parts, self.graph_parts or n_parts)
            else:
                grid_x = _blocks(pos0 + t0 + tz, spl)
            # the same rule for a graph and an eager step: a position gets the same kernels, hence the same bits
            fused = warp and grid_x <= self.att_fuse_parts and tz * n_head_kv <= self.att_counter.size
            if warp:
                split = att.warp_split_kernel(head_dim, k_q8, v_q8, nwd, tpw, fused, self.q8_decode == "hoist")
                self.launch(split, (grid_x, n_head_kv, tz), 32 * nwd, q.f, cache.kq[il], cache.kd[il], cache.vq[il],
                            cache.vd[il], self.posv, part_o, part_ml, n_head, n_head_kv, n_parts, scale, t0, out.f,
                            xq, xa, self.att_counter, True)
            else:
                split = att.split_kernel(head_dim, k_q8, v_q8, nwd)
                self.launch(split, (grid_x, n_head_kv, tz), 32 * nwd, q.f, cache.kq[il], cache.kd[il], cache.vq[il],
                            cache.vd[il], self.posv, part_o, part_ml, n_head, n_head_kv, n_parts, scale, t0)
            if not fused:
                self.launch(combine, (n_head, head_dim // 32, tz), 32 * self.att_combine_nw, part_o, part_ml,
                            self.posv, out.f, xq, xa, n_head, n_parts, t0, True)
            self.pool.put(part_o)
            self.pool.put(part_ml)
        return out

    def _flash(self, a: LazyFlash, half: bool) -> Act:
        """The prefill attention of ``a``: out [T, H*D] as float32 rows, or (``half``) as f16 pairs only."""
        q, cache, il, pos0, n_head, head_dim = a.q, a.cache, a.il, a.pos0, a.n_head, a.head_dim
        t = q.rows
        out = Act.half(self.pool, t, n_head * head_dim) if half else self.new(t, n_head * head_dim)
        dst = out.h16 if half else out.f
        kq, kd, k_q8 = cache.kq[il], cache.kd[il], cache.type_k == "q8_0"
        vq, vd, v_q8 = cache.vq[il], cache.vd[il], cache.type_v == "q8_0"
        if self.q8_prefill == "f16":  # the cells in use as f16 first: each is dequantized once, not per head
            n_words = (pos0 + t) * cache.n_embd_kv // 4
            if k_q8:
                kq, k_q8 = self._q8_as_f16("k", kq, kd, n_words, cache), False
            if v_q8:
                vq, v_q8 = self._q8_as_f16("v", vq, vd, n_words, cache), False
        scale = np.float32(1.0 / math.sqrt(head_dim))
        parts = self._flash_parts(_blocks(t, flash.BQ) * n_head, pos0)
        if parts == 1:
            kern = flash.prefill_kernel(head_dim, k_q8, v_q8, self.flash, yh=half)
            self.launch(kern, (_blocks(t, flash.BQ), n_head), flash.THREADS, q.f, kq, kd, vq, vd, self.posv, dst, t,
                        n_head, a.n_head_kv, scale)
            return out
        part = self.new(parts * t * n_head, head_dim + 2)  # [S, T, H, D + 2]
        kern = flash.prefill_kernel(head_dim, k_q8, v_q8, self.flash, split=True)
        self.launch(kern, (_blocks(t, flash.BQ), n_head, parts), flash.THREADS, q.f, kq, kd, vq, vd, self.posv,
                    part.f, t, n_head, a.n_head_kv, scale)
        self.launch(flash.split_combine_kernel(head_dim, half), (t, n_head), head_dim // (2 if half else 1), part.f,
                    dst, self.posv, t, n_head, parts)
        return out

    # ---- MoE ---------------------------------------------------------------------------------------------
    def _routed(self, logits, k: int, launch_fn, sigmoid: bool, n_groups: int, args: tuple):
        """(ids, weights) whose routing launch waits for its first reader: a decode step's fused up/gate
        routes by itself instead (one launch fewer per layer)."""
        t = logits.shape[0]
        ids, w = Act(self.pool, self.pool.get(t * k, np.int32), t, k), self.new(t, k)
        pending = PendingRoute(lambda: launch_fn(ids, w), logits, sigmoid, logits.shape[1], n_groups, args, w.f)
        return Routed(ids.f, t, k, ids, pending), Routed(w.f, t, k, w, pending)

    def _route_tail(self, logits, ids: Act, w: Act, k: int, sigmoid: bool, n_groups: int, args: tuple) -> bool:
        """One token's router logits not yet computed: their GEMV routes the token in its last block (no routing
        launch). False where that does not apply."""
        if not (self.route_tails and isinstance(logits, LazyMatmul) and logits.value is None and logits.x.rows == 1):
            return False
        x, wt = logits.x, logits.w
        n = wt.n_rows
        y = self.new(1, n)
        xq, xa, xf = self._inputs(x, wt.kind)
        nw, wpr = self._gemv_shape(wt)
        bias, has_bias, norm, n_groups_used, eps, scale = args
        self.launch(gemv.dense_routed(wt.kind, nw, wpr, n, n_groups, sigmoid, self.gemv_prefetch),
                    _blocks(n, nw // wpr), 32 * nw, wt.qs,
                    wt.hdr, xq, xa, xf, y.f, n, wt.row_len, 1, bias, has_bias, ids.f, w.f, k, norm, n_groups_used,
                    eps, scale, self.tail_counter)
        logits.value = y
        return True

    def route_softmax_topk(self, logits, k: int, norm: bool):
        if not isinstance(logits, LazyMatmul):
            logits = self.act(logits)
        t, x = logits.shape
        args = (self.f32, False, bool(norm), 0, np.float32(0), np.float32(1))

        def launch(ids, w):
            if not self._route_tail(logits, ids, w, k, False, 1, args):
                self.launch(routing.route_softmax(x), _blocks(t, routing.ROUTE_WARPS), 32 * routing.ROUTE_WARPS,
                            self.act(logits).f, ids.f, w.f, t, k, bool(norm))

        return self._routed(logits, k, launch, False, 1, args)

    def route_sigmoid_topk(self, logits, bias, k, n_groups, n_groups_used, norm, norm_eps, scale):
        if not isinstance(logits, LazyMatmul):
            logits = self.act(logits)
        t, x = logits.shape
        groups = n_groups if n_groups > 1 else 1
        args = (bias if bias is not None else self.f32, bias is not None, bool(norm), n_groups_used,
                np.float32(norm_eps), np.float32(scale))

        def launch(ids, w):
            if not self._route_tail(logits, ids, w, k, True, groups, args):
                b, has_b, nrm, ngu, eps, sc = args
                self.launch(routing.route_sigmoid(x, groups), _blocks(t, routing.ROUTE_WARPS),
                            32 * routing.ROUTE_WARPS, self.act(logits).f, b, has_b, ids.f, w.f, t, k, ngu, nrm, eps,
                            sc)

        return self._routed(logits, k, launch, True, groups, args)

    def group_rows_by_expert(self, ids: Routed, n_expert: int) -> Groups:
        groups = Groups(ids, n_expert)
        if ids.n_tokens > self.gemv_max_t:  # the GEMMs need the rows by expert; the GEMVs read the ids directly
            r = ids.n_tokens * ids.k
            groups.max_tiles = _blocks(r, gemm.BM) + n_expert
            holder = Act(self.pool, self.pool.get(r, np.int32), 1, r)
            holder.bufs += [self.pool.get(n_expert + 2, np.int32), self.pool.get(2 * groups.max_tiles, np.int32),
                            self.pool.get(n_expert, np.int32)]
            groups.rows, groups.offsets, groups.tiles, counts = holder.bufs
            groups.owner = holder
            routing.group_rows(self.launch, ids.buf, r, n_expert, gemm.BM, counts, groups.rows, groups.offsets,
                               groups.tiles)
        return groups

    def _up_gate(self, x: Act, w_gate, w_up, ids: Routed) -> Act:
        r, f = ids.n_tokens * ids.k, w_up.n_rows
        h = self.new(r, f)
        if w_gate.kind == w_up.kind:
            xq, xa, xf = self._inputs(x, w_up.kind)
            grid, block = (_blocks(f, self.gemv_nw), r), 32 * self.gemv_nw
            p = ids.pending
            if self.fuse_route and p is not None and not p.done and self.gemv_nw <= routing.ROUTE_WARPS:
                p.done = True
                bias, has_bias, norm, n_groups_used, eps, scale = p.args
                kern = gemv.up_gate_routed(w_up.kind, self.gemv_nw, p.n_expert, p.n_groups, p.sigmoid)
                logits = self.act(p.logits)
                self.launch(kern, grid, block, w_gate.qs, w_gate.hdr, w_up.qs, w_up.hdr, xq, xa, xf, logits.f, bias,
                            has_bias, ids._buf, p.weights_buf, h.f, f, x.cols, ids.k, norm, n_groups_used, eps, scale)
                return h
            self.launch(gemv.up_gate(w_up.kind, self.gemv_nw), grid, block, w_gate.qs, w_gate.hdr, w_up.qs,
                        w_up.hdr, xq, xa, xf, ids.buf, h.f, f, x.cols, ids.k)
            return h
        g = self._expert_rows(x, w_gate, Groups(ids, 0), ids.k)
        u = self._expert_rows(x, w_up, Groups(ids, 0), ids.k)
        self.launch(ew.silu_mul, _blocks(r * f, 256), 256, g.f, u.f, h.f, r * f)
        return h

    def _expert_rows(self, x: Act, w, groups: Groups, div: int) -> Act:
        """y[r] = x[r // div] @ W[ids[r]]^T for every routed row r."""
        ids = groups.ids
        r, n = ids.n_tokens * ids.k, w.n_rows
        y = self.new(r, n)
        xq, xa, xf = self._inputs(x, w.kind)
        self.launch(gemv.expert(w.kind, self.gemv_nw), (_blocks(n, self.gemv_nw), r), 32 * self.gemv_nw, w.qs, w.hdr,
                    xq, xa, xf, ids.buf, y.f, n, w.row_len, div)
        return y

    def expert_up_gate(self, x, w_gate, w_up, groups: Groups) -> Act:
        x = self.act(x)
        if groups.rows is None:
            return self._up_gate(x, w_gate, w_up, groups.ids)
        r, k = groups.ids.n_tokens * groups.ids.k, groups.ids.k
        if w_gate.kind == w_up.kind:  # only the down projection's GEMM reads h: f16 will do (SWEEPBENCH_CUDA_GEMM_X;
            half = self.gemm_x == "f16" and w_up.n_rows % 2 == 0  # the GEMM writes whole pairs)
            h = Act.half(self.pool, r, w_up.n_rows) if half else self.new(r, w_up.n_rows)
            self._gemm(w_gate, w_up, x, h, r, groups, k)
            return h
        h, g, u = (self.new(r, w_up.n_rows) for _ in range(3))
        self._gemm(w_gate, None, x, g, r, groups, k)
        self._gemm(w_up, None, x, u, r, groups, k)
        self.launch(ew.silu_mul, _blocks(r * w_up.n_rows, 256), 256, g.f, u.f, h.f, r * w_up.n_rows)
        return h

    def expert_down(self, h, w_down, groups: Groups):
        h = self.act(h)
        if groups.rows is None:
            return LazyDown(h, w_down, groups)
        y = self.new(h.rows, w_down.n_rows)
        self._gemm(w_down, None, h, y, h.rows, groups, 1)
        return y

    def combine(self, y, weights: Routed):
        if isinstance(y, LazyDown):
            return LazyCombine(y, weights)
        t, k = weights.n_tokens, weights.k
        y = self.act(y)
        out = self.new(t, y.cols)
        self.launch(ew.combine_rows, _blocks(t * y.cols, 256), 256, y.f, weights.buf, out.f, t, y.cols, k)
        return out

    def _down_combine(self, c: LazyCombine, addend: Act | None, tail: tuple | None = None) -> Act:
        """The down projection of every routed row, weighted and summed over the slots (+ addend); with tail,
        the residual add and the next RMSNorm (``gemv.dense``'s TAIL)."""
        t, k = c.weights.n_tokens, c.weights.k
        w, h, ids = c.y.w, c.y.h, c.y.groups.ids
        e = w.n_rows
        out = self.new(t, e)
        hq, ha, hf = self._inputs(h, w.kind)
        z = addend.f if addend is not None else self.f32
        self.launch(gemv.down_combine(w.kind, self.gemv_nw, tail is not None), (_blocks(e, self.gemv_nw), t),
                    32 * self.gemv_nw, w.qs, w.hdr, hq, ha, hf, ids.buf, c.weights.buf, out.f, e, w.row_len, k, z,
                    addend is not None, *(tail or self._no_tail))
        return out
