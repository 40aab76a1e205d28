"""Numba CPU kernels of the ``numba-cpu`` engine; every op has a NumPy twin in ``sweepbench.ref_ops``.

    threads     threading layer (tbb first), thread count, serial twins of parallel kernels (decode steps)
    simd        LLVM vector types and the SIMD operations the kernels are written in
    quant_act   activation quantization: int8 per block of 32, scales and half-block sums
    layouts     run-time repacking: GGUF blocks -> R8 row-group layouts (8 rows interleaved)
    qtiles      register tiles per weight type: 8 rows x 1 token (decode) or x 4 tokens (prefill)
    qmm         matrix-product drivers (dense, fused expert up/gate, expert down) over the tiles
    rowmajor    the plain path on unrepacked GGUF rows (``--no-repack``)
    attention   KV cache (f16, q8_0), flash attention, a decode step's k norm + RoPE + store in one call
    moe         routing (softmax / sigmoid / grouped top-k), grouping by expert, weighted combine
    dense       RMS norms, NEOX RoPE, residual add; fused decode forms (norm + RoPE, combine + add + norm)
"""
