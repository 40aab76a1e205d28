"""How much GPU memory the numba-cuda engine takes beyond its weights and KV cache, before anything is loaded.

Dimension legend: T tokens of a ubatch, E = n_embd, F = expert FFN width, K = experts per token, Hq / Hkv query
/ KV heads of Dh dims, V vocabulary. The activation pool (``memory.Pool``) keeps one buffer per live activation
of the largest ubatch, and the forward's live set does not grow with the layer count (``LazyAdd.settle``), so
the pool is a sum of per-token widths times T and of per-expert-row widths times the rows routed. The widths
below are the ops table's buffers, each counted once (checked against a dry run's pool and device arrays by
``benchmarks/gpu_memory_check.py``, which the tests run).
No numba import: the fit check runs before the engine loads.
"""
from __future__ import annotations

from sweepbench.config import ModelConfig

CONTEXT_BYTES = 512 * 2**20  # an allowance for the CUDA context and the kernels' code (not measured by the check)
FIXED_BYTES = 2**18  # counters, stand-in arguments, the token / position slots (~16 KB measured on a dry run)


def pool_bytes(cfg: ModelConfig, n_ubatch: int) -> int:
    """Bytes of the activation pool for ubatches of up to n_ubatch tokens (float32 activations plus the q8_1
    copies of the normed rows). The warm-up's token routed to every expert makes at least E expert rows."""
    e, dh, t = cfg.n_embd, cfg.head_dim, max(n_ubatch, 1)
    rows = max(t * cfg.n_expert_used, cfg.n_expert)
    per_token = (2 * (cfg.n_head + 2 * cfg.n_head_kv) * dh  # the q|k|v product [T, (Hq + 2 Hkv) Dh] and its split
                 + 3 * cfg.n_head * dh  # q after norm and rope, the attention output, the output projection's input
                 + 9 * e  # the residual stream: sums, norms, sublayer outputs [T, E]
                 + 3 * cfg.n_ff_shexp  # the shared expert's gate, up and product [T, F_sh]
                 + 2 * cfg.n_expert)  # router logits and their selection
    # the experts' down rows [R, E] and up*silu(gate) [R, F] (float32 at most); the normed rows' companions, twice:
    # f16 pairs (2E bytes) for the GEMMs of a prefill batch, q8_1 (E bytes + E/32 scales) for a GEMV's few rows
    return (4 * (rows * (e + cfg.n_ff_exp) + t * per_token) + 4 * t * e + flash_split_bytes(cfg, t)
            + router_split_bytes(cfg, t))


GEMV_MAX_T = 8  # activation rows up to which the GEMV kernels run; larger batches take the tensor-core GEMMs
NORM_MAX_WIDTH = 4 * 1024  # an RMSNorm row: 4 values per thread of one block (at most 1024 threads)


def norm_width_ok(e: int) -> bool:
    """Whether the RMSNorm (and the float32 router GEMM, in 32-wide K steps) can take rows of e values."""
    return e % 32 == 0 and e <= NORM_MAX_WIDTH


SMS = 132  # the H100's and H200's SM count (the ops table reads the card's; this where there is none)


def flash_split_parts(blocks: int, n_sm: int) -> int:
    """KV parts of a split prefill attention at depth (SWEEPBENCH_CUDA_FLASH_SPLIT=auto): as many, up to 4, as
    the SMs that ``blocks`` query tiles x heads (one block per SM) leave idle."""
    return max(1, min(4, n_sm // blocks))


def flash_split_bytes(cfg: ModelConfig, t: int) -> int:
    """The split prefill attention's partial rows [S, T, Hq, Dh + 2] (float32) for a ubatch of t tokens, S the
    parts ``auto`` gives at depth (none below two)."""
    parts = flash_split_parts(-(-t // 128) * cfg.n_head, SMS)  # query tiles of 128 rows (flash.BQ) x heads
    return 4 * parts * t * cfg.n_head * (cfg.head_dim + 2) if parts > 1 else 0


SGEMM_BLOCKS = 128  # the float32 router GEMM's split-K target: tiles x parts (a constant, not the card's SMs:
# the parts decide the order of the sums, so the logits' bits would otherwise depend on the GPU)


def sgemm_parts(m: int, n: int, k: int) -> tuple[int, int]:
    """(S, K per part) of the float32 GEMM (``sgemm.sgemm_f32``) of an [m, k] x [n, k]^T product: K (a multiple
    of 32) in S ranges of whole 32-wide steps, at least 4 steps each, so that 64 x 64 tiles x S reach about
    SGEMM_BLOCKS blocks."""
    tiles = -(-m // 64) * -(-n // 64)
    steps = k // 32
    per = -(-steps // max(1, min(SGEMM_BLOCKS // tiles, steps // 4)))
    return -(-steps // per), 32 * per


def router_split_bytes(cfg: ModelConfig, t: int) -> int:
    """The router GEMM's partial sums [S, T, X] (float32) for a ubatch of t tokens (none where S is 1 or the
    GEMVs take t of GEMV_MAX_T or fewer rows)."""
    if t <= GEMV_MAX_T or cfg.n_expert == 0:
        return 0
    parts, _ = sgemm_parts(t, cfg.n_expert, cfg.n_embd)
    return 4 * parts * t * cfg.n_expert if parts > 1 else 0


def q8_prefill_copy_bytes(cfg: ModelConfig, n_ctx: int, type_k: str, type_v: str) -> int:
    """The f16 copy of a q8_0 cache side that the prefill attention reads (one per side, shared by the layers)."""
    return sum(2 * n_ctx * cfg.n_embd_kv for t in (type_k, type_v) if t == "q8_0")


def scratch_bytes(cfg: ModelConfig, n_ubatch: int, n_ctx: int, type_k: str, type_v: str) -> int:
    """Device bytes besides weights and KV: the pool for a ubatch of n_ubatch tokens (at least the one-token
    step's), the logits row, the q8_0 cache's f16 copy, the fixed small buffers and the CUDA context."""
    return (pool_bytes(cfg, n_ubatch) + 8 * cfg.n_vocab
            + q8_prefill_copy_bytes(cfg, n_ctx, type_k, type_v) + FIXED_BYTES + CONTEXT_BYTES)
