"""Compatibility shims that must run before numba is imported.

numba 0.68.0 still calls ``np.row_stack``, which numpy 2.5 removed; on the GPU machine that combination
fails at the first kernel compile. Aliasing it to ``np.vstack`` (what it always was) is harmless elsewhere.
"""
import numpy as np

if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack
