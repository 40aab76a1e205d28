"""GGML quant formats: the supported set, fast dequantization, and random blocks for synthetic models.

(Placeholder contract written by the lead; the implementation lands with the quant helper.)
"""
from __future__ import annotations

from gguf import GGMLQuantizationType as Q

from sweepbench.errors import SweepbenchError

SUPPORTED = (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.IQ4_XS, Q.MXFP4)


def check_supported(qtype, where: str) -> None:
    if qtype not in SUPPORTED:
        names = ", ".join(q.name for q in SUPPORTED)
        raise SweepbenchError(f"{where} has quant type {Q(qtype).name}, which sweepbench does not support (supported: {names})")
