"""numba-cpu's compiled decode step (``cpu_kernels.decode_step``) bound to a loaded engine: tables of its
weights and cache, scratch buffers, and the worker threads that run the other roles.

The default (``SWEEPBENCH_DECODE_STEP=ops`` runs the op-by-op forward instead). On this project's 2-core VM
host, whose two vCPUs sit either on one CCX or on two CCDs (the slow and the fast memory state of
benchmarks/NOTES.md), the step runs at 0.98-1.00x ik in the slow state and 0.91-0.92x in the fast one, against
0.88-0.90x and 0.78-0.84x op by op (``cpu_decode_probes.py states``). The logits are the same bits either way.
Only a one-token decode of a model it can describe takes this path (qwen3moe, bailingmoe2; R8 weights with
quantized products; a float32 or quantized router); anything else runs the op-by-op forward.

Workers: one Python thread per extra role, each inside ``decode_step.worker_loop`` without the GIL. After a
step a worker spins for ``SPIN_SECONDS`` waiting for the next one (a TG window's steps follow each other within
tens of microseconds), then sleeps on an Event, so a prefill's threads get the cores.
"""
from __future__ import annotations

import os
import threading
import weakref

import numpy as np
from numba.typed import List

from sweepbench.cpu_kernels import decode_step as ds
from sweepbench.cpu_kernels import spin
from sweepbench.cpu_kernels.layouts import K_F32, QuantR8
from sweepbench.cpu_kernels.quant_act import REC
from sweepbench.errors import SweepbenchError, UsageError

SPIN_SECONDS = 2e-3
CYCLES_PER_SECOND = 3e9  # the cycle counter's rate, roughly: only sets the spin budget
ARCHS = ("qwen3moe", "bailingmoe2")


MODES = ("ops", "compiled")


def decode_step_mode() -> str:
    """SWEEPBENCH_DECODE_STEP (ops or compiled; unset = compiled); anything else is a one-line usage error."""
    mode = os.environ.get("SWEEPBENCH_DECODE_STEP", "").strip().lower() or "compiled"
    if mode not in MODES:
        raise UsageError(f"SWEEPBENCH_DECODE_STEP={mode}: choose one of {', '.join(MODES)}")
    return mode


class Unsupported(Exception):
    """Why a model or option set runs the op-by-op decode instead."""


def _matrix(w, slot_name: str, allow_float: bool):
    """(kind, K, n_groups, flat array, is_float) of a product weight, or Unsupported."""
    if hasattr(w, "whole"):  # a fused QKV part: the step runs the whole product
        w = w.whole
    if not isinstance(w, QuantR8):
        raise Unsupported(f"{slot_name} is not repacked (R8)")
    if w.kind >= K_F32:
        if not (allow_float and w.kind == K_F32 and w.qs.dtype == np.float32):
            raise Unsupported(f"{slot_name}: float weights ({w.qtype.name}) in a product")
        return w.kind, w.row_len, w.qs.shape[1], w.qs.reshape(-1), True
    if w.qs.dtype != np.uint8:
        raise Unsupported(f"{slot_name}: unexpected layout")
    return w.kind, w.row_len, w.qs.shape[1], w.qs.reshape(-1), False


class _Tables:
    """The step's view of a model: matrices (``mats``: uint8 block records; ``fmats``: float32 routers) and
    vectors (norm weights, the selection bias) in typed lists, indexed by ``meta`` [L+1, slot, field] and
    ``vmeta`` [L+1, slot] (``decode_step``'s slot constants; -1 = absent)."""

    def __init__(self, cfg, w: dict):
        L = cfg.n_layer
        self.mats, self.fmats, self.vecs = [], [np.zeros(8, np.float32)], []
        self.meta = np.full((L + 1, ds.N_SLOT, ds.N_META), -1, np.int64)
        self.vmeta = np.full((L + 1, ds.N_VEC), -1, np.int64)
        self.f_ffn = 8  # the widest shared / dense FFN
        for il in range(L):
            self._layer(cfg, w, il, f"blk.{il}.")
        self._put(w, L, ds.QKV, "output.weight")
        self._vec(w, L, ds.V_ATTN, "output_norm.weight")
        if cfg.head_dim % 32 or cfg.n_embd % 32:
            raise Unsupported("widths not multiples of 32")

    def _layer(self, cfg, w, il: int, p: str) -> None:
        self._put(w, il, ds.QKV, p + ("attn_q.weight" if cfg.arch == "qwen3moe" else "attn_qkv.weight"))
        if self.meta[il, ds.QKV, ds.M_GROUPS] * 8 != cfg.n_embd_q + 2 * cfg.n_embd_kv:  # q, k, v left unfused
            raise Unsupported("q, k and v are not one matrix (their types differ)")
        self._put(w, il, ds.O, p + "attn_output.weight")
        for slot, name in ((ds.V_ATTN, "attn_norm"), (ds.V_QN, "attn_q_norm"), (ds.V_KN, "attn_k_norm"),
                           (ds.V_FFN, "ffn_norm")):
            self._vec(w, il, slot, p + name + ".weight")
        ffn = ""  # a dense layer's FFN
        if cfg.is_moe_layer(il):
            self._put(w, il, ds.ROUTER, p + "ffn_gate_inp.weight", allow_float=True)
            for slot, name in ((ds.GATE_X, "gate"), (ds.UP_X, "up"), (ds.DOWN_X, "down")):
                self._put(w, il, slot, f"{p}ffn_{name}_exps.weight")
            if self.meta[il, ds.GATE_X, ds.M_KIND] != self.meta[il, ds.UP_X, ds.M_KIND]:
                raise Unsupported("gate and up experts differ in type")
            self._vec(w, il, ds.V_BIAS, p + "exp_probs_b.bias", required=False)
            ffn = "_shexp" if cfg.n_ff_shexp else None
        if ffn is not None:
            for slot, name in ((ds.GATE_F, "gate"), (ds.UP_F, "up"), (ds.DOWN_F, "down")):
                self._put(w, il, slot, f"{p}ffn_{name}{ffn}.weight")
            if self.meta[il, ds.GATE_F, ds.M_KIND] != self.meta[il, ds.UP_F, ds.M_KIND]:
                raise Unsupported("gate and up FFN weights differ in type")
            self.f_ffn = max(self.f_ffn, int(self.meta[il, ds.GATE_F, ds.M_GROUPS]) * 8)

    def _put(self, w, il: int, slot: int, name: str, allow_float: bool = False) -> None:
        if name not in w:
            raise Unsupported(f"missing {name}")
        kind, k, ng, flat, is_float = _matrix(w[name], name, allow_float)
        store = self.fmats if is_float else self.mats
        self.meta[il, slot] = (kind, k, ng, len(store), int(is_float))
        store.append(flat)

    def _vec(self, w, il: int, slot: int, name: str, required: bool = True) -> None:
        if name not in w:
            if required:
                raise Unsupported(f"missing {name}")
            return
        self.vmeta[il, slot] = len(self.vecs)
        self.vecs.append(np.ascontiguousarray(w[name], np.float32))


def _config_arrays(cfg, cache) -> tuple[np.ndarray, np.ndarray]:
    """``decode_step``'s C (int64) and FC (float64) arrays."""
    C = np.zeros(ds.N_C, np.int64)
    C[[ds.C_LAYERS, ds.C_E, ds.C_HEAD, ds.C_HKV, ds.C_D, ds.C_ROT, ds.C_NEXP, ds.C_USED]] = (
        cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.n_rot, cfg.n_expert, cfg.n_expert_used)
    C[ds.C_SIGMOID] = cfg.gating == "sigmoid"
    C[ds.C_NGROUPS] = cfg.n_expert_groups if cfg.grouped_routing else 1
    C[ds.C_GUSED] = cfg.n_group_used
    C[ds.C_NORMW] = cfg.norm_w
    C[ds.C_KQ8], C[ds.C_VQ8] = cache.type_k == "q8_0", cache.type_v == "q8_0"
    C[ds.C_STATIC8] = 8  # eighths of a product's items in fixed shares, the rest from the counter (decode_step._grab):
    # all of them since the per-layer outputs (NOTES.md, CPU: 2.5% faster in the fast memory state, equal in the slow)
    FC = np.array([cfg.rms_eps, cfg.rope_base, cfg.rope_freq_scale, cfg.norm_w_eps, cfg.w_scale], np.float64)
    return C, FC


class CompiledDecode:
    """decode(token, pos) -> logits [V] through one compiled call per thread; raises Unsupported at
    construction for a model or setting it does not cover."""

    def __init__(self, engine, n_threads: int):
        cfg, w, cache = engine.config, engine.weights, engine.cache
        if cfg.arch not in ARCHS:
            raise Unsupported(f"architecture {cfg.arch}")
        if decode_step_mode() != "compiled":
            raise Unsupported("SWEEPBENCH_DECODE_STEP=ops")
        n = max(1, min(int(n_threads), spin.MAX_ROLES))
        tables = _Tables(cfg, w)
        self.n_roles = n
        self.C, self.FC = _config_arrays(cfg, cache)
        self.meta, self.vmeta = tables.meta, tables.vmeta
        self.mats, self.fmats, self.vecs = List(tables.mats), List(tables.fmats), List(tables.vecs)
        self.kcs, self.vcs, self.vss = List(cache.k), List(cache.v), List(cache.vs)
        self.B = self._buffers(cfg, n, tables.f_ffn, int(tables.meta[cfg.n_layer, ds.QKV, ds.M_GROUPS]) * 8)
        self.sync = np.zeros(spin.N_FIELDS * spin.LINE, np.int64)
        self._embed = engine.ops.embed
        self._tok_embd = w["token_embd.weight"]
        self._threads: list[threading.Thread] = []
        self._events = [threading.Event() for _ in range(n)]
        self._error: str | None = None

    @staticmethod
    def _buffers(cfg, n: int, f_ffn: int, n_vocab: int) -> ds.Buffers:
        E, nq, nkv, X, K, F = (cfg.n_embd, cfg.n_embd_q, cfg.n_embd_kv, cfg.n_expert, cfg.n_expert_used,
                               cfg.n_ff_exp)
        L = cfg.n_layer  # one copy of each shared output per layer (decode_step.Buffers says why)
        f32 = lambda *s: np.zeros(s, np.float32)  # noqa: E731
        u8 = lambda *s: np.zeros(s, np.uint8)  # noqa: E731
        rec = lambda width: width // 32 * REC  # noqa: E731
        return ds.Buffers(
            qkv=f32(L, 1, nq + 2 * nkv), qrot=f32(1, nq), krot=f32(1, nkv), att=f32(L, 1, nq), o=f32(L, 1, E),
            rl=f32(L, 1, X), h=f32(L, K, F), hs=f32(L, 1, f_ffn), y=f32(L, K, E), ys=f32(L, 1, E),
            logits=f32(1, n_vocab),
            id_rows=np.zeros(1, np.int64), id_offs=np.array([0, 1], np.int64), id_act=np.zeros(1, np.int64),
            x=f32(n, 1, E), x2=f32(n, 1, E), a=f32(n, 1, E), v=f32(n, 1, E), xa=u8(n, rec(E)), xa8=u8(n, K * rec(E)),
            xo=u8(n, rec(nq)), hq=u8(n, K * rec(F)), hsq=u8(n, rec(f_ffn)),
            cs=f32(n, 1, cfg.n_rot // 2), sn=f32(n, 1, cfg.n_rot // 2), ids=np.zeros((n, 1, K), np.int32),
            wts=f32(n, 1, K), rows=np.zeros((n, K), np.int64), xrows=np.zeros((n, K), np.int64),
            offs=np.zeros((n, X + 1), np.int64), q8=np.zeros((n, 32), np.int8), zbias=f32(X),
            prof=np.zeros((n, ds.N_PHASE, 2), np.int64),
            ctr=np.zeros((cfg.n_layer + 1) * ds.N_PHASE * spin.LINE, np.int64),
        )

    def _args(self):
        return (self.C, self.FC, self.meta, self.vmeta, self.mats, self.fmats, self.vecs, self.kcs, self.vcs,
                self.vss, self.B)

    # ---- threads
    def compile(self) -> None:
        """Compiles (or loads from Numba's cache) the step and the worker loop on this thread, before any worker
        starts: a worker compiling while thread 0 waits at a barrier would look like a dead thread."""
        seen = np.array([self.sync[spin.F_CMD * spin.LINE]], np.int64)
        ds.worker_loop(1, self.n_roles, self.sync, seen, 0, *self._args())
        # thread 0's own entry, called from Python by decode(): compiled (or loaded) here too, by one role's step
        # at position 0 (warmup's cache content is discarded anyway): compiled inside decode(), after the
        # workers were posted, a cold compile outlasted the barrier deadline and broke the step
        ds.run_step(0, 1, self.sync, 0, *self._args())
        self.B.prof[:] = 0
        spin.post(self.sync, 0, 1)
        spin.try_sleep(self.sync, 1, -1)
        spin.awake(self.sync, 1)
        self.sync[:] = 0

    def start(self) -> None:
        args = self._args()
        for role in range(1, self.n_roles):
            t = threading.Thread(target=_work, args=(self.sync, self._events[role], role, self.n_roles, args),
                                 name=f"sweepbench-decode-{role}", daemon=True)
            t.start()
            self._threads.append(t)
        weakref.finalize(self, _shutdown, self.sync, self._events, list(self._threads))

    def close(self) -> None:
        _shutdown(self.sync, self._events, self._threads)
        self._threads = []

    # ---- one step
    def decode(self, token: int, pos: int) -> np.ndarray:
        if self._error:
            raise SweepbenchError(self._error)
        self.B.x[:] = self._embed(self._tok_embd, [token])
        self.B.ctr[:] = 0
        mask = spin.post(self.sync, pos, self.n_roles)
        for role in range(1, self.n_roles):
            if mask >> role & 1:
                self._events[role].set()
        ds.run_step(0, self.n_roles, self.sync, pos, *self._args())
        if self.sync[spin.F_STOP * spin.LINE] == spin.BROKEN:
            self._error = "numba-cpu decode step: a worker thread stopped answering (no result for ~10 s)"
            raise SweepbenchError(self._error)
        return self.B.logits[0].copy()


def _work(sync, ev: threading.Event, role: int, n_roles: int, args) -> None:
    """A worker thread: runs its role of every step posted, sleeps on its Event when idle, returns on stop.
    It holds the step's arrays, not the step object, so dropping the engine lets the finalizer stop it."""
    seen = np.array([sync[spin.F_CMD * spin.LINE]], np.int64)
    spin_cycles = int(SPIN_SECONDS * CYCLES_PER_SECOND)
    try:
        while ds.worker_loop(role, n_roles, sync, seen, spin_cycles, *args) != 0:
            while True:  # idle: sleep until decode() wakes this role
                ev.clear()
                if not spin.try_sleep(sync, role, seen[0]):
                    break
                ev.wait(1.0)  # the timeout only re-checks; short ones cost every idle engine's thread the GIL
            spin.awake(sync, role)
    except BaseException:  # noqa: BLE001  (a dead worker: thread 0's barrier times out and reports it)
        return


def _shutdown(sync, events, threads) -> None:
    spin.stop(sync)
    for ev in events:
        ev.set()
    for t in threads:
        t.join(timeout=5)
