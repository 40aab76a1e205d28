"""``--engine numba-cuda``: the architecture's ``forward()`` over Numba CUDA kernels (``cuda_kernels``), every
weight resident in VRAM, token generation replayed from a CUDA graph.

Weights are repacked into the device layout at load (``cuda_kernels.layout``); the KV cache, the activations'
pool, the position and the token ids live on the device. The first decode runs eagerly (it compiles kernels and
fills the pool), the second is captured as CUDA graphs, and every decode after that is one graph replay, one copy
of the logits back and one synchronisation. The position is a device scalar, so one graph whose flash-decoding
grid is sized for n_ctx can serve every position; where the best kernels or edges change with depth, the
positions are cut into ranges with a graph each (``decode_segments``): the first ``ops.shallow_cells()``
(attention that merges its parts in the split kernel), the first ``ops.low_cells()`` (shorter parts), and those
from ``ops.pdl_deep`` on (exit-port edges). An eager step at a position takes the same kernels as the graph that
serves it, so the two give the same bits.
"""
from __future__ import annotations

import bisect
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sweepbench.config import ModelConfig
from sweepbench.engines.base import EngineOptions, MemoryUse
from sweepbench.engines.forward_engine import ForwardEngine, runs_on_load
from sweepbench.errors import UsageError
from sweepbench.gguf_model import GGUFTensor
from sweepbench.models.tensors import open_model


def gpu_present() -> bool:
    """A cheap check that needs no CUDA import (importing numba.cuda for nothing would pin the simulator off)."""
    cuda = sys.modules.get("numba.cuda")
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or (
            cuda is not None and getattr(cuda.jit, "__module__", "").startswith("numba.cuda.simulator")):
        return True  # the simulator (tests)
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    proc = Path("/proc/driver/nvidia/gpus")
    return proc.is_dir() and any(proc.iterdir())


@dataclass(frozen=True)
class DecodeGraph:
    """A decode step captured as a CUDA graph, and the positions lo .. hi-1 it serves."""
    lo: int
    hi: int
    shallow: bool  # its attention spans ``att_fuse_parts`` parts and merges them in the split kernel
    low: bool  # its attention is the warp split with ``att_tpw_low`` tiles per warp
    exit_edges: bool  # exit-port programmatic edges (the order port's cost grows with depth)
    graph: Any = None
    logits: Any = None


def decode_segments(n_ctx: int, shallow: int, low: int, deep: int) -> list[DecodeGraph]:
    """The position ranges whose decode steps take the same kernels and edges (one graph each): cut where the
    fused merge's parts end (shallow), where the short parts end (low) and where exit-port edges begin (deep).
    A cut at 0 or at n_ctx or beyond cuts nothing."""
    cuts = sorted({0, n_ctx} | {c for c in (shallow, low, deep) if 0 < c < n_ctx})
    return [DecodeGraph(lo, hi, hi <= shallow, hi <= low, 0 < deep <= lo) for lo, hi in zip(cuts, cuts[1:])]


class NumbaCudaEngine(ForwardEngine):
    name = "numba-cuda"
    # the full-size presets warmed up in 17-39 s on an H100 (warmup_s in benchmarks/runs/gpu-h100-2026-12-05/)
    warmup_note = "compiles the kernels and captures the decode graphs (every run: no disk cache)"
    IGNORED = {
        "repack": "weights are always repacked into the GPU layout at load",
        "flash_attn": "attention is always flash-style (online softmax, split over the cache)",
        "n_threads": "the GPU engine runs its kernels on the device; host threads do not matter",
        "fused_moe": "up and gate are always fused (one kernel reads both)",
    }

    def __init__(self) -> None:
        super().__init__()
        self.graphs: list[DecodeGraph] = []  # the decode graphs, by the positions they serve (``_capture``)
        self._eager_decodes = 0
        self.use_graphs = os.environ.get("SWEEPBENCH_CUDA_GRAPHS", "1") != "0"
        self.copies_in_graph = True  # the decode graphs upload the token and read the logits back (``_capture``)

    def load(self, model_path: str, options: EngineOptions) -> None:
        if not gpu_present():
            raise UsageError("--engine numba-cuda: no CUDA GPU found on this machine "
                             "(use --engine numba-cpu, reference or ik)")
        try:
            from numba import cuda
        except ImportError as e:
            raise UsageError(f"--engine numba-cuda needs numba-cuda: pip install 'sweepbench[cuda]' ({e})") from None
        if not cuda.is_available():
            raise UsageError("--engine numba-cuda: numba-cuda sees no usable CUDA device")
        from cuda_kernels.ops_table import CudaOps, pdl_deep_cells

        self.ops = CudaOps(max(options.n_ubatch, 1), options.n_ctx)  # (a bad switch fails here, before any weight)
        self.ops.set_cache_type(options.type_k, options.type_v)  # the decode attention's shallow shape
        super().load(model_path, options)
        self.ops.pdl_deep = pdl_deep_cells(self.config.arch)  # its default depends on the architecture
        inner = self._forward

        def forward(ops, w, cfg, cache, tokens, pos0, out_rows):
            ops.begin(tokens, pos0)
            return inner(ops, w, cfg, cache, tokens, pos0, out_rows)

        self._forward = forward
        from cuda_kernels.weights import fuse_rows

        self._fused = self.fuse_qkv(fuse_rows)

    def check_config(self, cfg: ModelConfig, options: EngineOptions) -> None:
        from cuda_kernels import attention as att
        from cuda_kernels.footprint import NORM_MAX_WIDTH, norm_width_ok

        if att.unsupported_heads(cfg.n_head, cfg.n_head_kv, cfg.head_dim):
            raise UsageError(f"--engine numba-cuda: attention with {cfg.n_head} query heads over {cfg.n_head_kv} KV "
                             f"heads of {cfg.head_dim} dims is not supported on the GPU (use --engine numba-cpu)")
        if options.n_ctx > att.MAX_CONTEXT:
            raise UsageError(f"--engine numba-cuda: a context of {options.n_ctx} is longer than the {att.MAX_CONTEXT} "
                             "cells the GPU flash-decoding combine merges")
        if not norm_width_ok(cfg.n_embd):
            raise UsageError(f"--engine numba-cuda: an embedding width of {cfg.n_embd} is not supported on the GPU "
                             f"(a multiple of 32, at most {NORM_MAX_WIDTH}; use --engine numba-cpu)")

    def estimate_memory(self, model_path: str, options: EngineOptions) -> MemoryUse:
        """For the fit check: every weight that runs (in the GPU layout, as many bytes as in the file; a tied
        head uploads the embeddings twice), the KV cache, the activation pool, the q8_0 cache's f16 copy and
        the CUDA context on the device; on the host only the largest tensor's read and repacked copies."""
        from cuda_kernels.footprint import scratch_bytes
        from sweepbench.model_stats import kv_type_bytes

        model, cfg = open_model(model_path)
        running = [t for name, t in model.tensors.items() if runs_on_load(name, cfg)]
        weights = sum(t.n_bytes for t in running)
        if "output.weight" not in model.tensors:
            weights += model.tensors["token_embd.weight"].n_bytes
        per_cell = cfg.n_layer * cfg.n_embd_kv * (kv_type_bytes(options.type_k) + kv_type_bytes(options.type_v))
        device = weights + int(per_cell * options.n_ctx) + scratch_bytes(cfg, options.n_ubatch, options.n_ctx,
                                                                          options.type_k, options.type_v)
        return MemoryUse(weights_bytes=2 * max(t.n_bytes for t in running), kv_bytes=0, vram_used_bytes=device)

    def prepare_weight(self, name: str, kind: str, t: GGUFTensor, cfg: ModelConfig) -> Any:
        from cuda_kernels.weights import upload_vector, upload_weight

        if kind in ("norm", "bias"):
            return upload_vector(t.dequantize())
        n_mats = cfg.n_expert if kind == "experts" else 1
        return upload_weight(t.raw, t.qtype, t.row_len, n_mats)

    def allocate_cache(self, cfg: ModelConfig, options: EngineOptions):
        from cuda_kernels.weights import DeviceKV

        return DeviceKV(cfg.n_layer, options.n_ctx, cfg.n_embd_kv, options.type_k, options.type_v)

    def warmup(self) -> None:
        """The all-experts token, then one full ubatch (compiles the prompt-processing kernels and fills the pool
        with their buffers) and the decode steps (eager ones at the first and the last position, then the CUDA graph
        captures), so that no compilation or capture lands in a measured row. The cache is empty afterwards."""
        super().warmup()
        bos = self.config.bos_token_id
        n = min(self.options.n_ubatch, self.options.n_ctx - 2)
        if n > 1:
            self.prefill(np.full(n, bos), 0)
        self._warm_flash_split(n, bos)
        self.decode(bos, 0)
        if self.options.n_ctx > 2:  # an eager step at the last position compiles the deep graph's attention
            last = self.options.n_ctx - 1  # (its cache cell is written again before any step reads it)
            self.ops.act(self._forward(self.ops, self.weights, self.config, self.cache, np.array([bos]), last, [0]))
        self.decode(bos, 1)
        self.synchronize()
        self.n_filled = 0

    def _warm_flash_split(self, n: int, bos: int) -> None:
        """Where the prefill attention splits its KV range at depth (SWEEPBENCH_CUDA_FLASH_SPLIT), a second ubatch
        after the first, in that many parts, compiles the split kernels (at any depth: the part count is a launch
        argument) and pools their buffers; the first split row measured would pay for them otherwise."""
        ops = self.ops
        parts = ops.flash_split_parts_at_depth(n, self.config.n_head)
        m = min(n, self.options.n_ctx - 1 - n)  # its cells attend to the first ubatch's, never to unwritten ones
        if parts < 2 or m <= ops.gemv_max_t:
            return
        setting, ops.flash_split = ops.flash_split, str(parts)
        try:
            self.prefill(np.full(m, bos), n)
        finally:
            ops.flash_split = setting

    def synchronize(self) -> None:
        self.ops.stream.synchronize()

    # ---- token generation through a CUDA graph -----------------------------------------------------------
    def decode(self, token: int, pos: int) -> np.ndarray:
        tokens = self._check([token], pos)
        if not self.use_graphs or self._eager_decodes < 1:
            self._eager_decodes += 1  # compiles, and fills the pool with every buffer a step needs
            return self.prefill(tokens, pos)
        if not self.graphs:
            self._capture()
        from cuda_kernels.graph import copy_async

        ops = self.ops
        self._io_host[0], self._io_host[1] = pos, int(tokens[0])
        graph, logits = self.graph_at(pos)
        if not self.copies_in_graph:
            copy_async(ops.io[:2], self._io_host, ops.stream)
        graph.replay()  # with copies_in_graph: upload of (position, token), the step, the logits' read-back
        if not self.copies_in_graph:
            copy_async(self._logits_host, logits.f, ops.stream)
        ops.stream.synchronize()
        self.n_filled = pos + 1
        return np.array(self._logits_host)

    def _capture(self) -> None:
        """The decode graphs. With ``copies_in_graph`` (the default) each graph begins with the upload of
        (position, token) from pinned host memory and ends with the logits' read-back into pinned memory, so a
        decode step costs the host one graph launch and one synchronisation; a driver that refuses memcpy nodes
        in a capture gets the copies as separate calls."""
        from numba import cuda

        from cuda_kernels.graph import Graph, copy_async

        ops = self.ops
        self._io_host = cuda.pinned_array(2, np.int32)
        self._logits_host = cuda.pinned_array(self.config.n_vocab, np.float32)
        ops.stream.synchronize()

        def step():
            if self.copies_in_graph:
                copy_async(ops.io[:2], self._io_host, ops.stream)
            logits = ops.act(self._forward(ops, self.weights, self.config, self.cache, np.zeros(1, np.int64), 0, [0]))
            if self.copies_in_graph:
                copy_async(self._logits_host, logits.f, ops.stream)
            return logits

        def capture(seg: DecodeGraph) -> DecodeGraph:
            graph = Graph(ops.stream, pdl="exit" if seg.exit_edges else ops.pdl)
            ops.capturing, ops.graph_parts, ops.graph_low = True, ops.att_fuse_parts if seg.shallow else None, seg.low
            try:
                logits = graph.capture(step)
            finally:
                ops.capturing, ops.graph_parts, ops.graph_low = False, None, False
            return replace(seg, graph=graph, logits=logits)

        segments = decode_segments(self.options.n_ctx, ops.shallow_cells(), ops.low_cells(),
                                   ops.pdl_deep if ops.pdl == "order" else 0)
        try:
            first = capture(segments[0])
        except Exception as e:  # noqa: BLE001 - the copies then run outside the graph
            if not self.copies_in_graph:
                raise
            print(f"warning: CUDA graph without its host copies ({type(e).__name__}: {e})", file=sys.stderr)
            self.copies_in_graph = False
            first = capture(segments[0])
        self.graphs = [first] + [capture(seg) for seg in segments[1:]]

    def graph_at(self, pos: int):
        """(graph, logits) of the decode graph that serves position pos."""
        seg = self.graphs[bisect.bisect_right([g.lo for g in self.graphs], pos) - 1]
        return seg.graph, seg.logits

    def memory(self) -> MemoryUse:
        from numba import cuda

        use = super().memory()
        free, total = cuda.current_context().get_memory_info()
        use.vram_used_bytes = int(total - free)
        use.scratch_bytes = int(self.ops.pool.n_bytes)
        return use

    def describe(self) -> dict:
        d = super().describe()
        d["fused_qkv_layers"] = getattr(self, "_fused", 0)
        d["cuda_graph"] = bool(self.graphs)
        main = next((g for g in self.graphs if not g.shallow), self.graphs[-1]) if self.graphs else None
        if main is not None:  # the graph of the first positions past the shallow ones
            d["graph_nodes"] = main.graph.n_nodes
            d["graph_host_copies"] = "in the graph" if self.copies_in_graph else "separate calls"
            d["cuda_pdl"] = f"{main.graph.pdl} ({main.graph.n_programmatic} programmatic edges)"
        else:
            d["graph_nodes"] = 0
        shallow = [g for g in self.graphs if g.shallow]
        if shallow:
            d["graph_nodes_shallow"] = f"{shallow[0].graph.n_nodes} (positions below {shallow[-1].hi})"
        deep = [g for g in self.graphs if g.exit_edges and g.graph.pdl == "exit"]
        if deep:
            d["graph_deep"] = f"exit edges from position {deep[0].lo}"
        low = [g for g in self.graphs if g.low]
        if low:
            d["graph_low"] = f"{self.ops.att_tpw_low} tiles per warp below position {low[-1].hi}"
        if self.ops.att_split == "warp":
            d["decode_attention"] = f"warp split, {self.ops.att_tpw} tiles of 16 cells per warp and part"
        from cuda_kernels.ops_table import FLASH_SPLIT_MIN_KV

        auto = f", KV split from N_KV {FLASH_SPLIT_MIN_KV} where SMs idle"
        split = {"off": "", "auto": auto}.get(self.ops.flash_split, f", {self.ops.flash_split} KV parts")
        d["prefill_attention"] = f"flash, {self.ops.flash}{split}"
        d["prefill_gemm"] = f"{self.ops.gemm}, {self.ops.gemm_x} activations" + (
            f", {self.ops.gemm_regs} registers" if self.ops.gemm_regs else "")
        if "q8_0" in (self.options.type_k, self.options.type_v):
            d["q8_prefill"] = "an f16 copy first" if self.ops.q8_prefill == "f16" else "dequantized per tile"
            d["q8_decode"] = self.ops.q8_decode
        return d

    def drop_graphs(self) -> None:
        """Free the decode graphs; the next decode() captures them again (with the ops' settings of then)."""
        for g in self.graphs:
            g.graph.close()
        self.graphs = []

    def close(self) -> None:
        self.drop_graphs()
        super().close()
