"""Shared-memory banks of the prefill GEMM's staged tiles (``cuda_kernels/gemm.py``), without a GPU: which row
pitch and 16-byte chunk swizzle make both the staging stores (16 bytes per lane, thread t on row t // 2, half
t % 2) and the mma fragment reads (4 bytes per lane, lane (g, tq) on row 8i + g, word 4 chunk + tq) free of bank
conflicts, and a check of ``late-swz``'s own choice (pitch 16 words, chunk c of row r at c ^ ((r >> 1) & 3)).

    python benchmarks/gemm_swizzle_banks.py

A quarter warp's 16-byte stores (8 lanes: rows 4j .. 4j+3, both halves) are one wavefront when they cover the
8 groups of 4 banks; a warp's 4-byte reads when they cover all 32 banks.
"""
from __future__ import annotations

import itertools


def conflict_free(pitch_chunks: int, f) -> bool:
    """f: swizzle of row r mod 8 (chunk c -> c ^ f[r % 8]); pitch in 16-byte chunks."""
    for base, q in itertools.product((0, 4), (0, 1)):  # a quarter warp's rows, the store's chunk within the half
        groups = {(pitch_chunks * r + ((2 * h + q) ^ f[r])) % 8 for r in range(base, base + 4) for h in (0, 1)}
        if len(groups) != 8:
            return False
    return all(len({(pitch_chunks * g + (c ^ f[g])) % 8 for g in range(8)}) == 8 for c in range(4))


def kernel_choice_is_conflict_free() -> bool:
    """late-swz's index formulas over the whole 64-row tile: every store quarter and every fragment read."""
    def word(r, chunk):
        return r * 16 + ((chunk ^ ((r >> 1) & 3)) << 2)

    for tid0 in range(0, 128, 8):
        for q in range(2):
            banks = [(word(t // 2, 2 * (t % 2) + q) + i) % 32 for t in range(tid0, tid0 + 8) for i in range(4)]
            if len(set(banks)) != 32:
                return False
    for r0, chunk in itertools.product(range(0, 64, 8), range(4)):
        if len({(word(r0 + lane // 4, chunk) + lane % 4) % 32 for lane in range(32)}) != 32:
            return False
    return True


def main() -> None:
    print("| row pitch (words) | swizzles (by r mod 8) free of conflicts |")
    print("|---:|---:|")
    for p in (4, 5, 6, 7):
        n = sum(conflict_free(p, f) for f in itertools.product(range(4), repeat=8))
        print(f"| {4 * p} | {n} of {4 ** 8} |")
    print("late-swz (pitch 16, c ^ ((r >> 1) & 3)):", "conflict-free" if kernel_choice_is_conflict_free() else
          "CONFLICTS")


if __name__ == "__main__":
    main()
