"""sweepbench.quants against gguf's reference dequantizers and scalar transcriptions of ggml's C code."""
from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import quants as gguf_quants
from gguf.constants import GGML_QUANT_SIZES

from sweepbench import quants
from sweepbench.errors import SweepbenchError

QUANTIZED = [q for q in quants.SUPPORTED if GGML_QUANT_SIZES[q][0] > 1]
FLOATS = [Q.F32, Q.F16, Q.BF16]

# Byte offsets (within a block) of the fp16 scale fields, forced finite (and MXFP4's exponent kept below
# overflow) so that random blocks decode to finite values and a NaN can never hide a mismatch.
F16_FIELDS = {Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208], Q.IQ4_XS: [0], Q.MXFP4: []}


def odd_row_len(qtype) -> int:
    """A multiple of the block size that is not a power of two."""
    block = GGML_QUANT_SIZES[qtype][0]
    return {1: 96, 32: 32 * 7, 256: 256 * 3}[block]


def random_blocks(qtype, n_rows: int, row_len: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random bytes [R, row_bytes] with every float field made finite (top exponent bit cleared)."""
    raw = rng.integers(0, 256, (n_rows, quants.row_bytes(qtype, row_len)), dtype=np.uint8)
    if qtype in FLOATS:  # the high byte of each little-endian value holds the top exponent bit (0x40)
        width = np.dtype({Q.F32: np.float32, Q.F16: np.float16, Q.BF16: np.uint16}[qtype]).itemsize
        raw[:, width - 1 :: width] &= 0xBF
        return raw
    blocks = raw.reshape(-1, GGML_QUANT_SIZES[qtype][1])
    for offset in F16_FIELDS[qtype]:
        blocks[:, offset + 1] &= 0xBF
    if qtype == Q.MXFP4:  # E8M0 scale 2^(e-128): e <= 252 keeps 12 * scale finite in float32
        blocks[:, 0] %= 253
    return raw


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ---- dequantize ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_rows", [1, 3, 17])
@pytest.mark.parametrize("qtype", quants.SUPPORTED, ids=lambda q: q.name)
def test_dequantize_is_bit_exact_with_gguf(qtype, n_rows):
    rng = np.random.default_rng([int(qtype), n_rows])
    row_len = odd_row_len(qtype)
    raw = random_blocks(qtype, n_rows, row_len, rng)
    ours = quants.dequantize(raw, qtype, row_len)
    ref = gguf_quants.dequantize(raw, qtype).reshape(n_rows, row_len)
    assert ours.dtype == np.float32 and np.isfinite(ours).all()
    assert same_bits(ours, ref)


def e8m0_half_scalar(e: int) -> float:
    """ggml-impl.h ``ggml_e8m0_to_fp32_half``, transcribed."""
    bits = (0x00200000 << e) if e < 2 else ((e - 1) << 23)
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def dequantize_row_mxfp4_scalar(row: bytes, row_len: int) -> np.ndarray:
    """ggml-quants.c ``dequantize_row_mxfp4``, transcribed: y = kvalues_mxfp4[nibble] * d, in float32."""
    kvalues = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]
    y = np.zeros(row_len, np.float32)
    for i in range(row_len // 32):
        e, qs = row[17 * i], row[17 * i + 1 : 17 * i + 17]
        d = np.float32(e8m0_half_scalar(e))
        for j in range(16):
            y[32 * i + j] = np.float32(kvalues[qs[j] & 0x0F]) * d
            y[32 * i + j + 16] = np.float32(kvalues[qs[j] >> 4]) * d
    return y


def test_mxfp4_matches_ggml_scalar_definition():
    rng = np.random.default_rng(39)
    row_len = 32 * 7
    raw = random_blocks(Q.MXFP4, 3, row_len, rng)
    blocks = raw.reshape(-1, 17)
    blocks[:4, 0] = [0, 1, 2, 252]  # both subnormal scales and the extremes of the finite normal range
    ours = quants.dequantize(raw, Q.MXFP4, row_len)
    ref = np.stack([dequantize_row_mxfp4_scalar(bytes(r), row_len) for r in raw])
    assert same_bits(ours, ref)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.BF16], ids=lambda q: q.name)
def test_chunked_dequantize_equals_unchunked(qtype, monkeypatch):
    rng = np.random.default_rng(7)
    row_len = 256 * 3
    raw = random_blocks(qtype, 37, row_len, rng)
    whole = quants.dequantize(raw, qtype, row_len)
    monkeypatch.setattr(quants, "CHUNK_ELEMENTS", row_len * 5)  # 8 chunks, the last one partial
    assert same_bits(quants.dequantize(raw, qtype, row_len), whole)
    monkeypatch.setattr(quants, "CHUNK_ELEMENTS", 1)  # one row per chunk
    assert same_bits(quants.dequantize(raw, qtype, row_len), whole)


def test_dequantize_scratch_memory_is_bounded():
    """Peak allocation is the float32 output plus a scratch that depends on the chunk, not on the tensor."""
    rng = np.random.default_rng(8)
    row_len = 2048
    raw = quants.random_rows(Q.Q8_0, 1024, row_len, rng)  # 8 MiB of float32 output
    tracemalloc.start()
    try:
        out = quants.dequantize(raw, Q.Q8_0, row_len)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    scratch = peak - out.nbytes
    assert scratch < 4 * 4 * quants.CHUNK_ELEMENTS, f"scratch {scratch} bytes"


def test_f32_dequantize_is_a_view():
    raw = quants.random_rows(Q.F32, 3, 64, np.random.default_rng(1))
    out = quants.dequantize(raw, Q.F32, 64)
    assert np.shares_memory(out, raw) and out.shape == (3, 64)


@pytest.mark.parametrize("qtype", quants.SUPPORTED, ids=lambda q: q.name)
def test_dequantize_into_out_buffer(qtype):
    row_len = odd_row_len(qtype)
    raw = random_blocks(qtype, 3, row_len, np.random.default_rng(2))
    buffer = np.full((3, row_len), np.nan, np.float32)
    result = quants.dequantize(raw, qtype, row_len, out=buffer)
    assert result is buffer and same_bits(buffer, quants.dequantize(raw, qtype, row_len))


def test_dequantize_rejects_a_strided_out_buffer():
    raw = random_blocks(Q.Q8_0, 3, 64, np.random.default_rng(3))
    with pytest.raises(SweepbenchError, match="out= must be C-contiguous float32"):
        quants.dequantize(raw, Q.Q8_0, 64, out=np.empty((3, 128), np.float32)[:, ::2])


def test_dequantize_rejects_wrong_row_bytes():
    raw = np.zeros((2, 33), np.uint8)
    with pytest.raises(SweepbenchError, match=r"Q8_0 .* uint8 \[rows, 34\]"):
        quants.dequantize(raw, Q.Q8_0, 32)


# ---- unsupported types -----------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda: quants.check_supported(Q.Q2_K, "m.gguf: tensor blk.0.ffn_up_exps.weight"),
    lambda: quants.dequantize(np.zeros((1, 84), np.uint8), Q.Q2_K, 256),
    lambda: quants.random_rows(Q.IQ2_XXS, 1, 256, np.random.default_rng(0)),
    lambda: quants.row_bytes(Q.Q5_0, 32),
])
def test_unsupported_type_is_one_line_listing_supported(call):
    with pytest.raises(SweepbenchError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    assert all(q.name in message for q in quants.SUPPORTED)


def test_row_len_not_multiple_of_block_is_an_error():
    with pytest.raises(SweepbenchError, match="row length 100 .* Q4_K block size 256"):
        quants.row_bytes(Q.Q4_K, 100)


def test_row_bytes_matches_gguf_sizes():
    for qtype in quants.SUPPORTED:
        block, size = GGML_QUANT_SIZES[qtype]
        assert quants.row_bytes(qtype, block * 6) == size * 6


# ---- random_rows -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("std", [0.03, 0.5])
@pytest.mark.parametrize("qtype", quants.SUPPORTED, ids=lambda q: q.name)
def test_random_rows_statistics(qtype, std):
    """std within 5% of the target, |mean| under 5% of it, all finite (128 x 768 values).

    Observed deviations are under 3% (the u in [0.75, 1.25] scale factor alone adds 1%); 5% rather than a
    looser bound so that a wrong constant (e.g. half the MXFP4 high-exponent probability, -11%) fails.
    """
    row_len = 256 * 3
    raw = quants.random_rows(qtype, 128, row_len, np.random.default_rng(int(qtype)), std=std)
    assert raw.dtype == np.uint8 and raw.shape == (128, quants.row_bytes(qtype, row_len))
    x = quants.dequantize(raw, qtype, row_len)
    assert np.isfinite(x).all()
    assert abs(x.std() / std - 1) < 0.05, x.std()
    assert abs(x.mean()) < 0.05 * std, x.mean()


def test_random_rows_is_reproducible_and_seed_dependent():
    def draw(seed):
        return quants.random_rows(Q.Q4_K, 5, 512, np.random.default_rng(seed))

    assert np.array_equal(draw(3), draw(3))
    assert not np.array_equal(draw(3), draw(4))


# ---- quantize_rows ---------------------------------------------------------------------------------------


def test_q8_0_round_trip_error_within_half_a_step():
    """|x - dequant(quant(x))| <= d/2, plus what rounding d to fp16 adds (up to 127 |d - d_f16|)."""
    rng = np.random.default_rng(80)
    x = rng.standard_normal((17, 32 * 7)).astype(np.float32)
    x *= np.exp(rng.normal(0, 2, (17, 7))).repeat(32, axis=1).astype(np.float32)  # scales vary per block
    y = quants.dequantize(quants.quantize_rows(x, Q.Q8_0), Q.Q8_0, 32 * 7)
    d = np.abs(x.reshape(-1, 32)).max(axis=1, keepdims=True).astype(np.float64) / 127  # [B, 1]
    d_f16 = d.astype(np.float16).astype(np.float64)
    bound = 0.5 * d + 127 * np.abs(d - d_f16) + 1e-5 * d
    assert (np.abs(x - y).reshape(-1, 32) <= bound).all()


def quantize_block_q8_0_scalar(x: np.ndarray) -> bytes:
    """ggml-quants.c ``quantize_row_q8_0_ref`` for one block, transcribed (roundf: halves away from zero)."""
    amax = np.float32(max(abs(float(v)) for v in x))
    d = amax / np.float32(127)
    inv = np.float32(1) / d if d else np.float32(0)
    qs = []
    for v in x:
        t = float(np.float32(v) * inv)
        qs.append(int(np.sign(t) * np.floor(abs(t) + 0.5)))  # exact in float64
    return np.float16(d).tobytes() + np.array(qs, np.int8).tobytes()


def test_q8_0_quantize_matches_ggml_scalar_definition():
    rng = np.random.default_rng(81)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    x[0, :32] = np.arange(-15.5, 16.5)  # exact halves after scaling by 127/max: roundf, not banker's
    x[0, 31] = 127.0
    ours = quants.quantize_rows(x, Q.Q8_0)
    ref = [b"".join(quantize_block_q8_0_scalar(r[i : i + 32]) for i in range(0, 64, 32)) for r in x]
    assert [bytes(r) for r in ours] == ref


@pytest.mark.parametrize("qtype", FLOATS, ids=lambda q: q.name)
def test_float_quantize_round_trip(qtype):
    x = np.random.default_rng(82).standard_normal((3, 96)).astype(np.float32)
    y = quants.dequantize(quants.quantize_rows(x, qtype), qtype, 96)
    rel = {Q.F32: 0.0, Q.F16: 2.0**-11, Q.BF16: 2.0**-8}[qtype]  # half an ulp of the stored type
    subnormal_step = {Q.F32: 0.0, Q.F16: 2.0**-25, Q.BF16: 0.0}[qtype]  # F16 subnormals below 6e-5
    assert (np.abs(x - y) <= rel * np.abs(x) + subnormal_step).all()


def test_q4_0_round_trip_error_within_one_step():
    """Q4_0 maps the signed absmax to -8 d, so its opposite clips to 7 d: the error can reach |d|, no more."""
    rng = np.random.default_rng(83)
    x = rng.standard_normal((5, 32 * 7)).astype(np.float32)
    y = quants.dequantize(quants.quantize_rows(x, Q.Q4_0), Q.Q4_0, 32 * 7)
    d = np.abs(x.reshape(-1, 32)).max(axis=1, keepdims=True) / 8  # [B, 1]
    assert (np.abs(x - y).reshape(-1, 32) <= d * (1 + 2.0**-10)).all()


def test_quantize_to_unsupported_type_is_an_error():
    with pytest.raises(SweepbenchError, match="quantizing to Q4_K is not supported"):
        quants.quantize_rows(np.zeros((1, 256), np.float32), Q.Q4_K)
