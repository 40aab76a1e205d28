"""Explicit 256-bit SIMD for Numba: three LLVM vector types and the few dozen operations the kernels use.

Why: Numba's loop vectoriser does not find the int8 dot products ggml uses (notes §4: constant 32-trip loops are
unrolled and stay scalar; ``int32*int32`` is typed int64; signed loop bounds make it emit gathers). Values of the
types below live in registers, each operation is one ``@intrinsic`` that emits a handful of LLVM IR
instructions, so the kernels read like ggml's AVX2 code while staying plain Numba functions.

Types (a value is a whole register):
    V32B  <32 x i8>   quants (signedness is up to the operation)
    V8I   <8 x i32>   integer accumulators
    V8F   <8 x float> float accumulators, one lane per row (R8 layouts) or per element

Instruction choice is made once, from the target Numba compiles for (the host, or NUMBA_CPU_NAME /
NUMBA_CPU_FEATURES), so the cache never mixes code paths:
    "vnni"     AVX512-VNNI + VL or AVX-VNNI: ``dot_us`` is one vpdpbusd
    "avx2"     vpmaddubsw + vpmaddwd (+ vpsignb, vpshufb)
    "generic"  portable IR (LLVM lowers it to SSE2 or scalar code): same results, slower
``dot_us`` computes exactly the same integers on every path provided that no pair of u8*s8 products exceeds the
int16 range (vpmaddubsw saturates): the kernels keep u8 <= 128 against |s8| <= 127, or u8 <= 63.

Loads take BYTE offsets into any array's buffer and do no bounds checks: callers own the index arithmetic
(tested against the NumPy twins).
"""
from __future__ import annotations

import llvmlite.binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, models, register_model

# ------------------------------------------------------------------------------------------- target


def _target_features() -> tuple[str, set[str]]:
    """(cpu name, enabled features) of the target Numba compiles for, as NUMBA_CPU_NAME/FEATURES set it."""
    name = config.CPU_NAME or "host"
    if config.CPU_FEATURES is not None:
        feats = config.CPU_FEATURES
    elif name == "host":
        name, feats = ll.get_host_cpu_name(), ll.get_host_cpu_features().flatten()
    else:  # a named CPU without features: Numba uses that CPU's defaults, so do we (conservatively)
        feats = _NAMED_CPU_FEATURES.get(name, "")
    enabled = {f[1:] for f in feats.split(",") if f.startswith("+")}
    return name, enabled


_AVX2 = "+avx2,+fma,+f16c"
_NAMED_CPU_FEATURES = {  # CPUs tests and benchmarks name with NUMBA_CPU_NAME to exercise a code path
    **{n: _AVX2 for n in ("haswell", "broadwell", "skylake", "znver1", "znver2", "znver3", "alderlake")},
    **{n: _AVX2 + ",+avx512f,+avx512bw,+avx512vl,+avx512vnni"
       for n in ("znver4", "znver5", "icelake-server", "sapphirerapids", "cascadelake")},
}


def _isa(feats: set[str]) -> str:
    if "avx2" in feats and ({"avx512vnni", "avx512vl"} <= feats or "avxvnni" in feats):
        return "vnni"
    if "avx2" in feats:
        return "avx2"
    return "generic"


CPU_NAME, CPU_FEATURES = _target_features()
ISA = _isa(CPU_FEATURES)
HAS_F16C = "f16c" in CPU_FEATURES
HAS_FMA = "fma" in CPU_FEATURES

# ------------------------------------------------------------------------------------------- types


class VecType(types.Type):
    def __init__(self, name: str, llvm_elem, lanes: int):
        self.llvm_elem, self.lanes = llvm_elem, lanes
        super().__init__(name=name)


_I8, _I16, _I32, _I64, _F32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64), ir.FloatType()
V32B = VecType("V32B", _I8, 32)
V8I = VecType("V8I", _I32, 8)
V8F = VecType("V8F", _F32, 8)
_T32B, _T16S, _T8I, _T8F = (ir.VectorType(_I8, 32), ir.VectorType(_I16, 16), ir.VectorType(_I32, 8),
                            ir.VectorType(_F32, 8))


@register_model(VecType)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(fe_type.llvm_elem, fe_type.lanes))


# ------------------------------------------------------------------------------------------- helpers


def _i64(context, builder, value, ty):
    return context.cast(builder, value, ty, types.int64)


def _byte_ptr(context, builder, arrty, arr, byte_off, offty, pointee):
    """Pointer to ``pointee`` at byte ``byte_off`` of the array's data."""
    data = context.make_array(arrty)(context, builder, arr).data
    p = builder.gep(builder.bitcast(data, _I8.as_pointer()), [_i64(context, builder, byte_off, offty)])
    return builder.bitcast(p, pointee.as_pointer())


def _elem_ptr(context, builder, arrty, arr, idx, idxty, pointee):
    """Pointer to ``pointee`` at ELEMENT ``idx`` of a 1-D view of the array's data."""
    data = context.make_array(arrty)(context, builder, arr).data
    p = builder.gep(data, [_i64(context, builder, idx, idxty)])
    return builder.bitcast(p, pointee.as_pointer())


def _call(builder, name, ret, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


def _splat(builder, scalar, vty):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, vty.count), [0] * vty.count))


def _const(vty, value):
    return ir.Constant(vty, [value] * vty.count)


def _shuffle(builder, a, b, idx):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, len(idx)), list(idx)))


# ------------------------------------------------------------------------------------------- loads / stores


def _load(name, ret, pointee, align, convert=None, by_bytes=True):
    """An intrinsic ``name(arr, off)`` loading ``pointee`` at byte (or element) offset ``off``, then ``convert``."""
    def impl(typingctx, arr, off):
        def codegen(context, builder, sig, args):
            at = _byte_ptr if by_bytes else _elem_ptr
            v = builder.load(at(context, builder, sig.args[0], args[0], args[1], sig.args[1], pointee), align=align)
            return convert(builder, v) if convert else v
        return ret(arr, off), codegen
    impl.__name__ = name
    return intrinsic(impl)


_V16B, _V8B, _V8H, _V8S = (ir.VectorType(_I8, 16), ir.VectorType(_I8, 8), ir.VectorType(ir.HalfType(), 8),
                           ir.VectorType(_I16, 8))
# bytes at a BYTE offset:
ld32 = _load("ld32", V32B, _T32B, 1)  # 32 bytes -> V32B
ld16x2 = _load("ld16x2", V32B, _V16B, 1, lambda b, v: _shuffle(b, v, v, list(range(16)) * 2))  # 16 bytes, twice
bc4 = _load("bc4", V32B, _I32, 1, lambda b, w: b.bitcast(_splat(b, w, _T8I), _T32B))  # 4 bytes x 8 (vpbroadcastd)
ldu8f = _load("ldu8f", V8F, _V8B, 1, lambda b, v: b.sitofp(b.zext(v, _T8I), _T8F))  # 8 u8 -> V8F (K-quant scales)
lds8f = _load("lds8f", V8F, _V8B, 1, lambda b, v: b.sitofp(b.sext(v, _T8I), _T8F))  # 8 s8 -> V8F (Q6_K, IQ4_XS)
ldh1 = _load("ldh1", types.float32, ir.HalfType(), 1, lambda b, h: b.fpext(h, _F32))  # one half -> float32
# 8 values at an ELEMENT offset of the array's own dtype (for a uint8 array: a byte offset):
ldf = _load("ldf", V8F, _T8F, 4, by_bytes=False)  # float32
ldh = _load("ldh", V8F, _V8H, 2, lambda b, h: b.fpext(h, _T8F), by_bytes=False)  # IEEE half bits (vcvtph2ps)
ldbf = _load("ldbf", V8F, _V8S, 2, lambda b, h: b.bitcast(b.shl(b.zext(h, _T8I), _const(_T8I, 16)), _T8F),
             by_bytes=False)  # bfloat16 bits: exact


@intrinsic
def stf(typingctx, arr, idx, v):
    """Store V8F at element ``idx`` of a float32 array."""
    def codegen(context, builder, sig, args):
        p = _elem_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], _T8F)
        builder.store(args[2], p, align=4)
        return context.get_dummy_value()
    return types.none(arr, idx, v), codegen


# ------------------------------------------------------------------------------------------- constants


@intrinsic
def zi(typingctx):
    def codegen(context, builder, sig, args):
        return _const(_T8I, 0)
    return V8I(), codegen


@intrinsic
def zf(typingctx):
    def codegen(context, builder, sig, args):
        return _const(_T8F, 0.0)
    return V8F(), codegen


@intrinsic
def bcf(typingctx, x):
    """Scalar -> V8F (every lane)."""
    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[0], sig.args[0], types.float32), _T8F)
    return V8F(x), codegen


# ------------------------------------------------------------------------------------------- int8 dot products


def _dot_us_ir(builder, acc, a, b):
    if ISA == "vnni":
        return _call(builder, "llvm.x86.avx512.vpdpbusd.256", _T8I,
                     [acc, builder.bitcast(a, _T8I), builder.bitcast(b, _T8I)])
    if ISA == "avx2":
        pairs = _call(builder, "llvm.x86.avx2.pmadd.ub.sw", _T16S, [a, b])
        quads = _call(builder, "llvm.x86.avx2.pmadd.wd", _T8I, [pairs, _const(_T16S, 1)])
        return builder.add(acc, quads)
    prod = builder.mul(builder.zext(a, ir.VectorType(_I32, 32)), builder.sext(b, ir.VectorType(_I32, 32)))
    s = [_shuffle(builder, prod, prod, range(k, 32, 4)) for k in range(4)]
    return builder.add(acc, builder.add(builder.add(s[0], s[1]), builder.add(s[2], s[3])))


@intrinsic
def dot_us(typingctx, acc, a, b):
    """acc[l] + sum_{k<4} u8(a[4l+k]) * s8(b[4l+k]) for the 8 lanes l (vpdpbusd, or vpmaddubsw + vpmaddwd)."""
    def codegen(context, builder, sig, args):
        return _dot_us_ir(builder, *args)
    return V8I(acc, a, b), codegen


def _sign_ir(builder, x, w):
    if ISA in ("vnni", "avx2"):
        return _call(builder, "llvm.x86.avx2.psign.b", _T32B, [x, w])
    zero = _const(_T32B, 0)
    neg = builder.select(builder.icmp_signed("<", w, zero), builder.sub(zero, x), x)
    return builder.select(builder.icmp_signed("==", w, zero), zero, neg)


@intrinsic
def dot_ss(typingctx, acc, w, x):
    """acc + signed w . signed x per group of 4 (|x| <= 127): dot_us(acc, |w|, sign(x, w))."""
    def codegen(context, builder, sig, args):
        acc, w, x = args
        aw = _call(builder, "llvm.abs.v32i8", _T32B, [w, ir.Constant(ir.IntType(1), 0)])
        return _dot_us_ir(builder, acc, aw, _sign_ir(builder, x, w))
    return V8I(acc, w, x), codegen


# ------------------------------------------------------------------------------------------- byte ops


@intrinsic
def lo4(typingctx, v):
    """Low nibbles of every byte (0..15)."""
    def codegen(context, builder, sig, args):
        return builder.and_(args[0], _const(_T32B, 0x0F))
    return V32B(v), codegen


@intrinsic
def hi4(typingctx, v):
    """High nibbles of every byte (0..15)."""
    def codegen(context, builder, sig, args):
        return builder.lshr(args[0], _const(_T32B, 4))
    return V32B(v), codegen


@intrinsic
def bits_at(typingctx, v, shift, mask, up):
    """((v >> shift) & mask) << up, per byte (shift, mask, up are small run-time ints): Q5_K/Q6_K high bits."""
    def codegen(context, builder, sig, args):
        def splat(i):
            return _splat(builder, context.cast(builder, args[i], sig.args[i], types.uint8), _T32B)
        return builder.shl(builder.and_(builder.lshr(args[0], splat(1)), splat(2)), splat(3))
    return V32B(v, shift, mask, up), codegen


@intrinsic
def orb(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.or_(args[0], args[1])
    return V32B(a, b), codegen


@intrinsic
def lut16(typingctx, table, idx):
    """table[idx] per byte for idx in 0..15, table = 16 int8 in both halves (vpshufb)."""
    def codegen(context, builder, sig, args):
        table, idx = args
        if ISA in ("vnni", "avx2"):
            return _call(builder, "llvm.x86.avx2.pshuf.b", _T32B, [table, idx])
        out = ir.Constant(_T32B, ir.Undefined)
        for k in range(32):
            i = builder.extract_element(idx, ir.Constant(_I32, k))
            out = builder.insert_element(out, builder.extract_element(table, i), ir.Constant(_I32, k))
        return out
    return V32B(table, idx), codegen


# ------------------------------------------------------------------------------------------- float ops


@intrinsic
def cvt(typingctx, v):
    """V8I -> V8F (exact below 2^24)."""
    def codegen(context, builder, sig, args):
        return builder.sitofp(args[0], _T8F)
    return V8F(v), codegen


def _fma_ir(builder, a, b, c):
    # fmuladd: one vfmadd where FMA exists, mul + add elsewhere; either way the same on every run
    return _call(builder, "llvm.fmuladd.v8f32", _T8F, [a, b, c])


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c."""
    def codegen(context, builder, sig, args):
        return _fma_ir(builder, *args)
    return V8F(a, b, c), codegen


def _binary(op):
    def impl(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return getattr(builder, op)(*args)
        return V8F(a, b), codegen
    return intrinsic(impl)


fmul, fadd, fsub = _binary("fmul"), _binary("fadd"), _binary("fsub")


@intrinsic
def iadd(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])
    return V8I(a, b), codegen


def _hreduce(builder, v, op):
    """Deterministic tree over the 8 lanes: (0+4, 1+5, 2+6, 3+7), then pairs, then the last two."""
    lo = _shuffle(builder, v, v, [0, 1, 2, 3])
    hi = _shuffle(builder, v, v, [4, 5, 6, 7])
    v4 = op(lo, hi)
    v2 = op(_shuffle(builder, v4, v4, [0, 1]), _shuffle(builder, v4, v4, [2, 3]))
    return op(builder.extract_element(v2, ir.Constant(_I32, 0)), builder.extract_element(v2, ir.Constant(_I32, 1)))


@intrinsic
def hsum(typingctx, v):
    """Sum of the 8 lanes of a V8F (fixed order)."""
    def codegen(context, builder, sig, args):
        return _hreduce(builder, args[0], builder.fadd)
    return types.float32(v), codegen


@intrinsic
def hmax(typingctx, v):
    def codegen(context, builder, sig, args):
        def mx(a, b):
            return builder.select(builder.fcmp_ordered(">", a, b), a, b)
        return _hreduce(builder, args[0], mx)
    return types.float32(v), codegen


def _vexp_ir(builder, x):
    """exp per lane: 2^k * p(r), k = round(x log2 e), r = x - k ln2 (|r| <= ln2/2), p the degree-6 Taylor
    polynomial (relative error below 2e-7); x is clamped to [-87, 88], and lanes below -87 (or -inf) give 0."""
    c = lambda v: _const(_T8F, v)  # noqa: E731
    xc = builder.select(builder.fcmp_ordered(">", x, c(-87.0)), x, c(-87.0))
    xc = builder.select(builder.fcmp_ordered("<", xc, c(88.0)), xc, c(88.0))
    k = _call(builder, "llvm.floor.v8f32", _T8F, [builder.fadd(builder.fmul(xc, c(1.4426950408889634)), c(0.5))])
    r = _fma_ir(builder, k, c(-0.693145751953125), xc)  # ln2 = hi + lo with k*hi exact
    r = _fma_ir(builder, k, c(-1.4286068203094172e-06), r)
    p = c(1.0 / 720)
    for coef in (1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1.0, 1.0):
        p = _fma_ir(builder, p, r, c(coef))
    e = builder.shl(builder.add(builder.fptosi(k, _T8I), _const(_T8I, 127)), _const(_T8I, 23))
    y = builder.fmul(p, builder.bitcast(e, _T8F))
    return builder.select(builder.fcmp_ordered(">", x, c(-87.0)), y, c(0.0))


@intrinsic
def vexp(typingctx, x):
    """exp of 8 lanes (see ``_vexp_ir``)."""
    def codegen(context, builder, sig, args):
        return _vexp_ir(builder, args[0])
    return V8F(x), codegen


@intrinsic
def silu_mul(typingctx, g, u):
    """silu(g) * u = g * u / (1 + exp(-g)), per lane (the fused up/gate activation)."""
    def codegen(context, builder, sig, args):
        g, u = args
        den = builder.fadd(_const(_T8F, 1.0), _vexp_ir(builder, builder.fneg(g)))
        return builder.fdiv(builder.fmul(g, u), den)
    return V8F(g, u), codegen


@intrinsic
def zb(typingctx):
    def codegen(context, builder, sig, args):
        return _const(_T32B, 0)
    return V32B(), codegen


# ------------------------------------------------------------------------------------------- signed int8 weights
# Signed weights (Q8_0, IQ4_XS values, MXFP4) meet signed activations. With VNNI the repacked weights carry +128
# (u8), so one vpdpbusd does the dot and the kernels subtract 128 * sum(x) per block (``W8_OFFSET``); vpmaddubsw
# would saturate on that, so AVX2 keeps them signed and uses the sign trick, with |w| shared across tokens.
W8_OFFSET = ISA == "vnni"


@intrinsic
def prep_w8(typingctx, w):
    """What ``dot_w8`` wants of a weight vector: w itself (offset weights) or |w| (sign trick)."""
    def codegen(context, builder, sig, args):
        if W8_OFFSET:
            return args[0]
        return _call(builder, "llvm.abs.v32i8", _T32B, [args[0], ir.Constant(ir.IntType(1), 0)])
    return V32B(w), codegen


@intrinsic
def dot_w8(typingctx, acc, wp, w, x):
    """acc + w . x per group of 4 for signed weights, wp = prep_w8(w) (hoisted out of the token loop)."""
    def codegen(context, builder, sig, args):
        acc, wp, w, x = args
        return _dot_us_ir(builder, acc, wp, x if W8_OFFSET else _sign_ir(builder, x, w))
    return V8I(acc, wp, w, x), codegen


# ------------------------------------------------------------------------------------------- scalars and masks


@intrinsic
def f2h(typingctx, x):
    """float32 -> IEEE half bits as uint16 (round to nearest even, as NumPy's astype(float16))."""
    def codegen(context, builder, sig, args):
        h = builder.fptrunc(context.cast(builder, args[0], sig.args[0], types.float32), ir.HalfType())
        return builder.bitcast(h, _I16)
    return types.uint16(x), codegen


@intrinsic
def bits_f32(typingctx, bits):
    """Reinterpret uint32 bits as float32 (e8m0 scales)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(context.cast(builder, args[0], sig.args[0], types.uint32), _F32)
    return types.float32(bits), codegen


@intrinsic
def mask_from(typingctx, v, n, fill):
    """Lanes i >= n of a V8F replaced by ``fill`` (n may be <= 0 or >= 8): the causal mask of 8 cells."""
    def codegen(context, builder, sig, args):
        nv = _splat(builder, context.cast(builder, args[1], sig.args[1], types.int32), _T8I)
        keep = builder.icmp_signed("<", ir.Constant(_T8I, list(range(8))), nv)
        return builder.select(keep, args[0], _splat(builder, context.cast(builder, args[2], sig.args[2],
                                                                            types.float32), _T8F))
    return V8F(v, n, fill), codegen


@intrinsic
def split16(typingctx, v):
    """For 16 bytes in both halves (ld16x2): lanes 0-15 their low nibbles, 16-31 their high nibbles.
    GGUF's Q4_0 / IQ4_XS / MXFP4 blocks in natural value order."""
    def codegen(context, builder, sig, args):
        lo = builder.and_(args[0], _const(_T32B, 0x0F))
        hi = builder.lshr(args[0], _const(_T32B, 4))
        return _shuffle(builder, lo, hi, list(range(16)) + list(range(48, 64)))
    return V32B(v), codegen


@intrinsic
def bcf2(typingctx, a, b):
    """V8F of a in lanes 0-3 and b in lanes 4-7 (per-16 scales of a 32-value run)."""
    def codegen(context, builder, sig, args):
        va = _splat(builder, context.cast(builder, args[0], sig.args[0], types.float32), _T8F)
        vb = _splat(builder, context.cast(builder, args[1], sig.args[1], types.float32), _T8F)
        return _shuffle(builder, va, vb, [0, 1, 2, 3, 12, 13, 14, 15])
    return V8F(a, b), codegen


@intrinsic
def h2f(typingctx, bits):
    """IEEE half bits (uint16) -> float32."""
    def codegen(context, builder, sig, args):
        b = context.cast(builder, args[0], sig.args[0], types.uint16)
        return builder.fpext(builder.bitcast(b, ir.HalfType()), _F32)
    return types.float32(bits), codegen


ld1f = _load("ld1f", types.float32, _F32, 1)  # one float32 at a byte offset, no index checks


@intrinsic
def st1f(typingctx, arr, byte_off, x):
    """Store a float32 at a byte offset of any array (activation records)."""
    def codegen(context, builder, sig, args):
        p = _byte_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], _F32)
        builder.store(context.cast(builder, args[2], sig.args[2], types.float32), p, align=1)
        return context.get_dummy_value()
    return types.none(arr, byte_off, x), codegen


@intrinsic
def prefetch(typingctx, arr, byte_off):
    """Software prefetch of the line at ``byte_off`` (into all cache levels)."""
    def codegen(context, builder, sig, args):
        p = _byte_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], _I8)
        _call(builder, "llvm.prefetch.p0", ir.VoidType(), [p, ir.Constant(_I32, 0), ir.Constant(_I32, 3),
                                                            ir.Constant(_I32, 1)])
        return context.get_dummy_value()
    return types.none(arr, byte_off), codegen
