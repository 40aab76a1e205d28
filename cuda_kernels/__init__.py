"""Numba CUDA kernels of the ``numba-cuda`` engine: the whole MoE forward pass on the GPU.

Modules (each a handful of pure kernels or device functions; shapes in ``# [..]`` comments):
    env         simulator switch, warp helpers and one-instruction PTX intrinsics (dp4a, prmt, f16x2, mma)
                with plain-Python fallbacks for NUMBA_ENABLE_CUDASIM=1
    layout      host-side repacking of GGUF blocks into aligned device arrays (scales apart from quants)
    qdot        per-quant-type 32-value dot products (dp4a against q8_1 activations) and tile dequantizers
    elementwise embedding, RMSNorm (+ activation quantization), q/k norm + RoPE, adds, copies
    routing     softmax / sigmoid(+bias) / grouped top-k, one warp per token; stable grouping by expert
    gemv        MMVQ-style GEMVs for one token: dense, fused expert up/gate, expert down + weighted combine
    gemm        tensor-core (mma.sync f16) GEMMs with on-the-fly dequantization, dense and per expert
    attention   KV-cache stores, flash-decoding (split over N_KV) and flash attention for prefill
    graph       capturing numba launches into a CUDA graph and replaying it

Dimension legend (as sweepbench.models.ops):
    T tokens, E n_embd / input row length, N output rows, V vocab, H query heads, Hkv KV heads, D head_dim,
    G = H/Hkv query heads per KV head, X experts, K experts per token, F expert FFN width, R = T*K routed rows,
    C KV cells in use, B 32-value blocks per row (E/32).
"""
import sweepbench  # noqa: F401  (numpy shim before numba is imported)
