"""sweepbench: llama-sweep-bench style benchmarks of Mixture-of-Experts GGUF models.

Importing the package installs a small NumPy compatibility shim before anything imports numba
(see ``sweepbench._compat``).
"""
from sweepbench import _compat  # noqa: F401  (must run before numba is imported anywhere)

__version__ = "0.1.0"
