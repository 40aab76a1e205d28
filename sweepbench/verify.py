"""Prove that an engine computes what ik_llama.cpp computes: compare the logits of every position.

Both engines run the same schedule: one prefill of the first ``prompt_len`` tokens (logits of every prompt
position), then one ``decode`` per remaining token; this exercises the batched path and the single-token path
over a growing KV cache. ik's own noise is measured by running ik on the same tokens in other batchings (and with
run-time repacking flipped), so our differences can be read against the differences ik has with itself.

Dimension legend: N = positions compared, V = vocabulary.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from gguf import GGMLQuantizationType as Q

from sweepbench.engines import create_engine
from sweepbench.engines.base import EngineOptions
from sweepbench.errors import UsageError
from sweepbench.models.tensors import open_model

FLOAT_TYPES = frozenset({Q.F32, Q.F16, Q.BF16})


@dataclass(frozen=True)
class Tier:
    """Pass thresholds. ``max_rel`` = None: not checked (quantized weights legitimately differ by more)."""

    name: str
    top1_min: float
    kl_max: float
    max_rel_max: float | None = None

    def checks(self, figures: dict) -> list[dict]:
        """[{metric, value, limit, op, passed}] for every threshold of this tier."""
        wanted = [("top1_agreement", ">=", self.top1_min), ("mean_kl", "<=", self.kl_max)]
        if self.max_rel_max is not None:
            wanted.append(("max_rel", "<=", self.max_rel_max))
        out = []
        for metric, op, limit in wanted:
            value = figures[metric]
            passed = bool(np.isfinite(value) and (value >= limit if op == ">=" else value <= limit))
            out.append({"metric": metric, "value": value, "op": op, "limit": limit, "passed": passed})
        return out


F16_TIER = Tier("F16", top1_min=1.0, kl_max=1e-5, max_rel_max=0.005)  # weights F16/F32/BF16, f16 KV cache
QUANT_TIER = Tier("quantized", top1_min=0.7, kl_max=3e-3)


def tier_for(qtypes, type_k: str, type_v: str) -> Tier:
    """F16 tier when every weight is a float type and the KV cache is f16; otherwise the quantized tier."""
    floats_only = all(q in FLOAT_TYPES for q in qtypes) and type_k == type_v == "f16"
    return F16_TIER if floats_only else QUANT_TIER


# ---------------------------------------------------------------------------------------------- metrics


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def compare_logits(ref: np.ndarray, ours: np.ndarray) -> dict:
    """Agreement of ``ours`` [N, V] with ``ref`` [N, V], in float64.

    top1_agreement: share of positions whose argmax matches; max_abs_diff: max |ours - ref|;
    max_rel: max over positions of max|ours - ref| / max|ref|; mean_kl: mean over positions of KL(ref || ours)
    of the softmax distributions. ``per_position`` holds each figure per position (lists, JSON-ready).
    """
    ref = np.asarray(ref, np.float64)
    ours = np.asarray(ours, np.float64)
    if ref.shape != ours.shape or ref.ndim != 2:
        raise ValueError(f"logits shapes differ or are not [N, V]: {ref.shape} vs {ours.shape}")
    diff = np.abs(ours - ref).max(axis=1)  # [N]
    rel = diff / np.maximum(np.abs(ref).max(axis=1), np.finfo(np.float64).tiny)  # [N]
    log_p, log_q = _log_softmax(ref), _log_softmax(ours)  # [N, V]
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1)  # [N]
    top1 = ref.argmax(axis=1) == ours.argmax(axis=1)  # [N]
    return {
        "n_positions": len(ref),
        "top1_agreement": float(top1.mean()),
        "max_abs_diff": float(diff.max()),
        "max_rel": float(rel.max()),
        "mean_kl": float(kl.mean()),
        "max_kl": float(kl.max()),
        "per_position": {"top1": top1.tolist(), "abs_diff": diff.tolist(), "rel": rel.tolist(), "kl": kl.tolist()},
    }


# ---------------------------------------------------------------------------------------------- schedules


def schedule_logits(engine, tokens: np.ndarray, prompt_len: int) -> np.ndarray:
    """Logits [N, V] of every position: one prefill of the prompt, then single-token decodes."""
    prompt = engine.prefill(tokens[:prompt_len], 0, all_logits=True)  # [P, V]
    steps = [engine.decode(int(t), prompt_len + i) for i, t in enumerate(tokens[prompt_len:])]
    return np.concatenate([prompt.reshape(prompt_len, -1), np.array(steps, np.float32).reshape(len(steps), -1)])


def one_at_a_time_logits(engine, tokens: np.ndarray) -> np.ndarray:
    return np.stack([engine.decode(int(t), i) for i, t in enumerate(tokens)])  # [N, V]


def one_batch_logits(engine, tokens: np.ndarray) -> np.ndarray:
    return engine.prefill(tokens, 0, all_logits=True)  # [N, V]


def _loaded(engine_name: str, model_path, options: EngineOptions):
    engine = create_engine(engine_name)
    engine.load(str(model_path), options)
    if hasattr(engine, "warmup"):
        engine.warmup()  # ik: the BOS warmup must come first, or a lone-BOS prompt would be routed to all experts
    return engine


def ik_self_noise(model_path, tokens: np.ndarray, prompt_len: int, options: EngineOptions,
                  reference: np.ndarray | None = None) -> dict[str, dict]:
    """How much ik differs from itself on the same tokens: its verify-schedule logits (``reference``, computed
    here if None) against (a) every position decoded token by token, (b) all positions in a single batch,
    (c) the schedule with run-time repacking (-rtr) flipped. Returns {variant: compare_logits(...)}."""
    ik = _loaded("ik", model_path, options)
    try:
        if reference is None:
            reference = schedule_logits(ik, tokens, prompt_len)
        ik.truncate(0)
        variants = {"token by token": one_at_a_time_logits(ik, tokens)}
        ik.truncate(0)
        variants["single batch"] = one_batch_logits(ik, tokens)
    finally:
        ik.close()
    flipped = _loaded("ik", model_path, replace(options, repack=not options.repack))
    try:
        variants[f"-rtr {'off' if options.repack else 'on'}"] = schedule_logits(flipped, tokens, prompt_len)
    finally:
        flipped.close()
    return {name: compare_logits(reference, logits) for name, logits in variants.items()}


# ---------------------------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class VerifyResult:
    model: str
    engine: str
    n_tokens: int
    prompt_len: int
    options: dict
    tier: Tier
    ours: dict  # compare_logits(ik, engine)
    ik_noise: dict  # ik_self_noise(...)
    checks: list
    ik_describe: dict

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.checks)

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        """Plain-text figures (ours, then ik's self-noise) and the verdict, e.g. for logs and test messages."""
        lines = [f"{self.engine} vs ik: {_figures(self.ours)}"]
        lines += [f"  ik vs ik, {name}: {_figures(f)}" for name, f in self.ik_noise.items()]
        failed = [f"{c['metric']} {c['value']:.3g} not {c['op']} {c['limit']:.3g}" for c in self.checks if not c["passed"]]
        lines.append(f"{self.tier.name} tier: " + ("PASS" if self.passed else "FAIL (" + "; ".join(failed) + ")"))
        return "\n".join(lines)


def _figures(f: dict) -> str:
    return (f"top1 {f['top1_agreement']:.1%}, max|d| {f['max_abs_diff']:.3g}, max_rel {f['max_rel']:.3%}, "
            f"mean KL {f['mean_kl']:.3g}, max KL {f['max_kl']:.3g}")


def random_tokens(n: int, n_vocab: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_vocab, n)


def run_verify(model_path, tokens, engine_name: str = "reference", *, prompt_len: int | None = None,
               grouped_routing: bool = False, type_k: str = "f16", type_v: str = "f16", n_threads: int = 0,
               noise: bool = True) -> VerifyResult:
    """ik and ``engine_name`` compute logits for every position of ``tokens`` (prompt of ``prompt_len`` tokens,
    default 2/3 of them, then single-token decodes); returns our figures, ik's self-noise and the tier's verdict."""
    model, cfg = open_model(model_path)
    tokens = np.asarray(tokens, np.int64).reshape(-1)
    if len(tokens) < 2:
        raise UsageError(f"--tokens: need at least 2 tokens (a prompt and one decode step), got {len(tokens)}")
    if tokens.min() < 0 or tokens.max() >= cfg.n_vocab:
        raise UsageError(f"--tokens: ids must be in 0..{cfg.n_vocab - 1} for this model")
    prompt_len = max(1, (2 * len(tokens)) // 3) if prompt_len is None else prompt_len
    if not 1 <= prompt_len < len(tokens):
        raise UsageError(f"--prompt-len {prompt_len}: must be in 1..{len(tokens) - 1} for {len(tokens)} tokens")
    options = EngineOptions(n_ctx=len(tokens), n_threads=n_threads, type_k=type_k, type_v=type_v,
                            grouped_routing=grouped_routing)

    ik = _loaded("ik", model_path, options)
    try:
        ref = schedule_logits(ik, tokens, prompt_len)
        ik_describe = ik.describe()
    finally:
        ik.close()
    ours_engine = _loaded(engine_name, model_path, options)
    try:
        ours = schedule_logits(ours_engine, tokens, prompt_len)
    finally:
        ours_engine.close()

    tier = tier_for((t.qtype for t in model.tensors.values()), type_k, type_v)
    figures = compare_logits(ref, ours)
    return VerifyResult(
        model=str(model_path), engine=engine_name, n_tokens=len(tokens), prompt_len=prompt_len,
        options=asdict(options), tier=tier, ours=figures,
        ik_noise=ik_self_noise(model_path, tokens, prompt_len, options, ref) if noise else {},
        checks=tier.checks(figures), ik_describe=ik_describe,
    )
