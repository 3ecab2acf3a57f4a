"""Numba kernels for the host's side of aggregation: the per-element work a
worker does before it sends and after it receives.

- SwitchML's fixed point (the formulas of :mod:`fpisa.switchml`,
  docs/numerics.md section 6): block exponents, quantize, dequantize, and the
  fused versions a host really runs, which read or write SwitchML's wire
  format (int32, big-endian) in the same pass; :func:`sum_workers`, K hosts
  and their switch in one pass over the K rows (``aggregate(..., "switchml")``);
- byte-order conversion of 16/32/64-bit values: what an FPISA host must do
  when the switch does not swap bytes;
- ATP's fixed-scale quantizer, a third integer baseline (fp32 only);
- :func:`measure_host_rates`, the per-core throughput of each conversion
  (``benchmarks/host_conversion.py`` prints it; ``fpisa study host-cores``
  calls it).

Every element loop here is branch-free and written so LLVM vectorizes it;
on the development machine (AVX2) ``inspect_asm`` shows 256-bit (ymm)
``vcvtps2pd``/``vmulpd``/``vcvtpd2dq`` (rint and the int32 conversion fused,
in the default round-to-nearest-even mode) plus ``vpmaxud`` (the block max)
and ``vpshufb`` (the wire byte order) in quantize; ``vcvtdq2pd``/``vdivpd``/
``vcvtpd2ps`` (fp32) or ``vpaddq``/``vpsrlq``/``vblendvpd`` (fp16/bf16
rounding) in dequantize; ``vpaddd`` for the switch's int32 sum in
sum_workers; ``vpshufb`` in the byte swaps; no element-wise gathers
(vpinsrd/vpextrd) anywhere. ``tests/fpisa/test_host_kernels.py`` and
``tests/fpisa/test_switchml_fused.py`` check the main ones are there. The
kernels assume validated input; :mod:`fpisa.switchml` and :func:`byteswap`
validate.

Bit-identity with the numpy formulas. Quantize widens x exactly to a double,
multiplies by the block's f in double and rounds with ``rint`` (ties to
even), like ``np.rint(x * f)``. Dequantize divides in double, like
``s / f``, and rounds the double once to the format: for fp32 with a
float64 -> float32 conversion (IEEE round to nearest even, subnormals and
overflow to Inf included); for fp16 and bf16 with an integer round to nearest
even on the double's bits (no double rounding through float32), identical to
:func:`fpisa.codec.doubles_to_bits`.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._kernels import _add32

__all__ = [
    "KIND_FP32",
    "KIND_FP16",
    "KIND_BF16",
    "byteswap",
    "atp_quantize",
    "atp_dequantize",
    "measure_host_rates",
    "HOST_RATE_KEYS",
    "PAPER_BYTESWAP_PER_CORE",
    "PAPER_NEEDED_100G",
]

# numpy error model: a float division by zero gives Inf (as in numpy) and,
# more to the point, no per-element check stops the loops from vectorizing
_jit = njit(cache=True, nogil=True, error_model="numpy")
# the per-block loops are inlined by numba itself: an array passed to a
# function LLVM did not inline costs a struct copy per call and the loop
# loses its vectorization (2x slower with 64-value blocks)
_inline = njit(cache=True, nogil=True, error_model="numpy", inline="always")

#: format codes of the kernels (``kind``)
KIND_FP32 = 0
KIND_FP16 = 1
KIND_BF16 = 2

INT32_MAX = 2**31 - 1
EMPTY_BLOCK_EXPONENT = -150  # same constant as fpisa.switchml (checked by the tests)


# ------------------------------------------------------------------ intrinsics
@intrinsic
def _bswap(typingctx, x):
    """llvm.bswap: reverses the bytes of an integer (vpshufb when vectorized)."""
    if not isinstance(x, types.Integer) or x.bitwidth not in (16, 32, 64):
        return None

    def codegen(context, builder, signature, args):
        return builder.bswap(args[0])

    return x(x), codegen


@intrinsic
def _as_float64(typingctx, x):
    """Reinterpret an int64 as a float64 (no conversion)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(x), codegen


@intrinsic
def _as_int64(typingctx, x):
    """Reinterpret a float64 as an int64."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(x), codegen


@intrinsic
def _as_float32(typingctx, x):
    """Reinterpret a 32-bit integer as a float32."""
    if not isinstance(x, types.Integer) or x.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(x), codegen


@intrinsic
def _as_uint32(typingctx, x):
    """Reinterpret a float32 as a uint32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


# --------------------------------------------------- widening (exact) to double
_TWO_M24 = 2.0**-24  # fp16's subnormal ulp


@_jit
def _widen(h, kind):
    """Bits of a finite fp32/fp16/bf16 value -> the same value as a double.

    Non-finite inputs give some finite double; callers count them apart.
    """
    if kind == KIND_FP32:
        return np.float64(_as_float32(np.uint32(h)))
    if kind == KIND_BF16:
        return np.float64(_as_float32(np.uint32(np.int64(h) << 16)))
    # fp16: a normal value is its bits moved into a double's fields
    # (exponent rebiased by 1023 - 15); a subnormal is fraction * 2^-24
    hi = np.int64(h)
    a = hi & 0x7FFF
    normal = (a << 42) + (1008 << 52)
    subnormal = _as_int64(np.float64(a) * _TWO_M24)
    magnitude = normal if a >= 0x400 else subnormal
    return _as_float64(magnitude | ((hi >> 15) << 63))


@_jit
def to_doubles(bits, kind, out):
    """fmt bits -> float64 (exact; for tests of the widening)."""
    for i in range(bits.shape[0]):
        out[i] = _widen(bits[i], kind)


@_inline
def _abs_bits(h, kind):
    """|x| as bits, uint32: ordered like the magnitudes (for max and finiteness).

    A uint32 (not numba's default int64) so the per-block max vectorizes as
    a 32-bit max (vpmaxud)."""
    if kind == KIND_FP32:
        return np.uint32(h & np.uint32(0x7FFFFFFF))
    return np.uint32(h & np.uint16(0x7FFF))


@_jit
def _inf_bits(kind):
    if kind == KIND_FP32:
        return np.uint32(0x7F800000)
    if kind == KIND_FP16:
        return np.uint32(0x7C00)
    return np.uint32(0x7F80)


# ------------------------------------------------ rounding a double to a format
@_jit
def _double_to_small(y, exponent_bits, fraction_bits):
    """A double -> fp16/bf16 bits, round to nearest even, in integer arithmetic.

    Normal results: add just under half an ulp (plus the kept lsb, for ties
    to even) to the double's bits and shift: a carry moves into the exponent
    by itself, and a result at or beyond the all-ones exponent is Inf.
    Subnormal results (|y| < 2^(1 - bias)): one double addition of
    2^(53 - bias - m), whose ulp is the format's subnormal ulp, rounds |y|
    to nearest even there; the difference of the bits is the fraction (2^m:
    rounded up to the smallest normal, which is the right pattern).
    NaN -> the quiet NaN of fpisa.codec (positive, quiet bit only).
    """
    m = fraction_bits
    bias = (1 << (exponent_bits - 1)) - 1
    all_ones = (1 << exponent_bits) - 1
    shift = 52 - m
    u = _as_int64(y)
    sign = (u >> 63) & 1
    a = u & 0x7FFFFFFFFFFFFFFF
    r = ((a + ((1 << (shift - 1)) - 1) + ((a >> shift) & 1)) >> shift) - ((1023 - bias) << m)
    r = (all_ones << m) if r >= (all_ones << m) else r
    magic = _as_float64(np.int64(1023 + 53 - bias - m) << 52)
    sub = _as_int64(_as_float64(a) + magic) - _as_int64(magic)
    r = sub if a < (np.int64(1024 - bias) << 52) else r
    r = r | (sign << (exponent_bits + m))
    return ((all_ones << m) | (1 << (m - 1))) if a > 0x7FF0000000000000 else r


@_jit
def doubles_to_bits(x, kind, out):
    """float64 array -> fmt bits (round to nearest even), the dequantize rounding."""
    if kind == KIND_FP32:
        for i in range(x.shape[0]):
            out[i] = _as_uint32(np.float32(x[i]))
    elif kind == KIND_FP16:
        for i in range(x.shape[0]):
            out[i] = _double_to_small(x[i], 5, 10)
    else:
        for i in range(x.shape[0]):
            out[i] = _double_to_small(x[i], 8, 7)


# ------------------------------------------------------------ block exponents
# Every kernel here walks the values block by block: the full blocks with a
# trip count of block_size, then the partial last block. The element loops
# index with unsigned integers (``_run``: ``bits[lo + j]`` with lo and j
# uint64): numba fixes up a negative signed index (``a[i]`` with i < 0 reads
# a[n + i]) unless it can prove i >= 0, and LLVM vectorizes a loop with that
# per-element fix only with gathers and scatters (vpinsrd / vpextrd),
# several times slower; views (``bits[lo:lo + block_size]``) avoid it too
# but cost ~20% in slicing per 64-value block. Finiteness is checked on the
# block's max |x| bits (a value is non-finite iff its |x| bits are at least
# Inf's), so the loops carry one 32-bit max and nothing else; callers count
# the offending values only when there are some.

@_jit
def _exponent_of(abs_bits, kind):
    """frexp exponent of the finite value with these |x| bits (EMPTY for zero)."""
    if kind == KIND_FP32:
        m, bias = 23, 127
    elif kind == KIND_FP16:
        m, bias = 10, 15
    else:
        m, bias = 7, 127
    a = np.int64(abs_bits)
    if a == 0:
        return EMPTY_BLOCK_EXPONENT
    field = a >> m
    if field > 0:
        return field - bias + 1
    fraction = a & ((1 << m) - 1)
    bit_length = 0
    while fraction:  # subnormal: at most m steps, once per block
        bit_length += 1
        fraction >>= 1
    return bit_length + 1 - bias - m


@_inline
def _run(lo, count):
    """(uint64 lo, range(count) of uint64): element j of a run is a[lo + j]
    with an unsigned index, which numba does not wrap around."""
    return np.uint64(lo), range(np.uint64(count))


@_inline
def _max_abs(bits, lo, count, kind):
    """max |x| bits over bits[lo:lo + count] (uint32)."""
    largest = np.uint32(0)
    base, js = _run(lo, count)
    for j in js:
        largest = np.uint32(max(largest, _abs_bits(bits[base + j], kind)))
    return largest


@_jit
def block_exponents(bits, kind, block_size, out):
    """One worker's block exponents in one pass; False if a value is Inf/NaN."""
    n = bits.shape[0]
    worst = np.uint32(0)
    full = n // block_size
    for b in range(full):
        largest = _max_abs(bits, b * block_size, block_size, kind)
        worst = max(worst, largest)
        out[b] = _exponent_of(largest, kind)
    if full * block_size < n:
        largest = _max_abs(bits, full * block_size, n - full * block_size, kind)
        worst = max(worst, largest)
        out[full] = _exponent_of(largest, kind)
    return worst < _inf_bits(kind)


@_jit
def max_block_exponents(bits2d, kind, block_size, out):
    """e_max per block over the rows (workers) of bits2d, one pass over the
    data: the frexp exponent of the max |x| bits over all workers (the
    exponent is monotonic in them). False if a value is Inf/NaN."""
    workers, n = bits2d.shape
    largest = np.zeros(out.shape[0], np.uint32)
    full = n // block_size
    for k in range(workers):
        row = bits2d[k]
        for b in range(full):
            largest[b] = max(largest[b], _max_abs(row, b * block_size, block_size, kind))
        if full * block_size < n:
            largest[full] = max(largest[full],
                                _max_abs(row, full * block_size, n - full * block_size, kind))
    worst = np.uint32(0)
    for b in range(out.shape[0]):
        worst = max(worst, largest[b])
        out[b] = _exponent_of(largest[b], kind)
    return worst < _inf_bits(kind)


@_jit
def count_non_finite(bits, kind):
    """How many values are Inf/NaN (for error messages)."""
    bad = 0
    inf = _inf_bits(kind)
    for i in range(bits.shape[0]):
        bad += _abs_bits(bits[i], kind) >= inf
    return bad


# ------------------------------------------------------------------ scales
@_inline
def _scale(e, num_workers):
    """f = INT32_MAX / (K * 2^e) (K * 2^e is exact; one rounding)."""
    e = np.int64(e)
    if -1022 <= e <= 1023:
        # 2^e from its bits, and K * 2^e exact or Inf like ldexp, without a libm call
        # per block (a block's exponent is always in this range)
        return np.float64(INT32_MAX) / (np.float64(num_workers) * _as_float64((e + 1023) << 52))
    # beyond +-2000, K * 2^e is 0 or Inf either way; ldexp takes a C int
    e = min(max(e, -2000), 2000)
    return np.float64(INT32_MAX) / math.ldexp(np.float64(num_workers), np.int32(e))


@_jit
def scale_factors(max_exponents, num_workers, out):
    """f = INT32_MAX / (K * 2^e) per block."""
    for b in range(max_exponents.shape[0]):
        out[b] = _scale(max_exponents[b], num_workers)


# ------------------------------------------------------------------ quantize
@_inline
def _q(h, f, kind):
    """q = rint(fl64(x * f)) as int32 (x widened exactly; ties to even)."""
    return np.int32(np.rint(_widen(h, kind) * f))


@_inline
def _quantize_run(bits, lo, count, f, kind, out, swap):
    """out[i] = rint(x_i * f) as int32 (byte-swapped if swap) for the count
    values from lo; returns their max |x| bits."""
    largest = np.uint32(0)
    base, js = _run(lo, count)
    for j in js:
        h = bits[base + j]
        largest = np.uint32(max(largest, _abs_bits(h, kind)))
        q = _q(h, f, kind)
        out[base + j] = _bswap(q) if swap else q
    return largest


@_jit
def _block_status(largest, f, kind):
    """0 if the block is fine, 1 if it holds Inf/NaN, 2 if its largest |q|
    (= rint(max|x| * f): rounding is monotonic) does not fit int32."""
    if largest >= _inf_bits(kind):
        return 1
    if np.rint(_widen(largest, kind) * f) > 2147483647.0:
        return 2
    return 0


@_jit
def quantize(bits, kind, scales, block_size, out, swap):
    """A worker's bits -> int32 (big-endian if swap), block b scaled by scales[b].

    Returns 0, or 1 if some value is Inf/NaN, or 2 if some q would not fit
    int32 (the scale is too large for the block); out is then unspecified."""
    n = bits.shape[0]
    status = 0
    full = n // block_size
    for b in range(full):
        f = scales[b]
        largest = _quantize_run(bits, b * block_size, block_size, f, kind, out, swap)
        status = max(status, _block_status(largest, f, kind))
    if full * block_size < n:
        f = scales[full]
        largest = _quantize_run(bits, full * block_size, n - full * block_size, f, kind, out, swap)
        status = max(status, _block_status(largest, f, kind))
    return status


# ---------------------------------------------------------------- dequantize
@_inline
def _dequantize_run(sums, src, count, f, kind, out, dst, swap):
    """out[dst + j] = the fmt bits of fl64(sums[src + j] / f), j < count."""
    s0, js = _run(src, count)
    d0 = np.uint64(dst)
    if kind == KIND_FP32:
        for j in js:
            s = _bswap(sums[s0 + j]) if swap else sums[s0 + j]
            out[d0 + j] = _as_uint32(np.float32(np.float64(s) / f))
    elif kind == KIND_FP16:
        for j in js:
            s = _bswap(sums[s0 + j]) if swap else sums[s0 + j]
            out[d0 + j] = _double_to_small(np.float64(s) / f, 5, 10)
    else:
        for j in js:
            s = _bswap(sums[s0 + j]) if swap else sums[s0 + j]
            out[d0 + j] = _double_to_small(np.float64(s) / f, 8, 7)


@_jit
def dequantize(sums, kind, scales, block_size, out, swap):
    """int32 sums (big-endian if swap) -> fmt bits: fl64(s / f), rounded once."""
    n = sums.shape[0]
    full = n // block_size
    for b in range(full):
        lo = b * block_size
        _dequantize_run(sums, lo, block_size, scales[b], kind, out, lo, swap)
    if full * block_size < n:
        lo = full * block_size
        _dequantize_run(sums, lo, n - lo, scales[full], kind, out, lo, swap)


# ------------------------------------------- SwitchML end to end, in one pass
# What K SwitchML hosts and their switch compute, fused tile by tile so the
# K rows are read from memory once: per tile of whole blocks, (1) each block's
# max |x| bits over the K rows (the exponent exchange: the frexp exponent is
# monotonic in them, so the max of the workers' exponents is the exponent of
# this max), its scale f; (2) every worker's q summed in an int32 tile (the
# switch's wrapping int32 add; the rows come from L2 this time); (3) the sums
# dequantized into the output. The tile's K rows (SUM_TILE_BYTES) stay in L2
# between (1) and (2); the int32 sums stay in L1.

#: bytes of the K rows of one tile (half of a Zen 3 / Skylake-SP core's L2)
SUM_TILE_BYTES = 1 << 18


def sum_tile_blocks(num_workers: int, block_size: int, itemsize: int) -> int:
    """Blocks per tile of :func:`sum_workers` (at least one)."""
    return max(1, SUM_TILE_BYTES // (num_workers * block_size * itemsize))


@_inline
def _sum_tile(bits2d, lo, count, kind, block_size, largest, scales, acc, out):
    """One tile, elements lo .. lo + count (whole blocks but for the array's
    last). Returns its status: 0 fine, 1 an Inf/NaN, 2 a block's max |q|
    times K exceeds INT32_MAX (the no-overflow premise; K <= 256 rules it out)."""
    workers = bits2d.shape[0]
    nb = -(-count // block_size)
    full = count // block_size
    rest = count - full * block_size
    for b in range(nb):
        largest[b] = 0
    for k in range(workers):
        row = bits2d[k]
        for b in range(full):
            largest[b] = max(largest[b], _max_abs(row, lo + b * block_size, block_size, kind))
        if rest:
            largest[full] = max(largest[full], _max_abs(row, lo + full * block_size, rest, kind))
    status = 0
    for b in range(nb):
        if largest[b] >= _inf_bits(kind):
            return 1
        f = _scale(_exponent_of(largest[b], kind), workers)
        scales[b] = f
        # rounding is monotonic: the block's largest |q| is that of its max |x|
        if np.rint(_widen(largest[b], kind) * f) * workers > 2147483647.0:
            status = 2
    for k in range(workers):
        row = bits2d[k]
        for b in range(nb):
            f = scales[b]
            t, js = _run(b * block_size, block_size if b < full else rest)
            x0 = np.uint64(lo) + t
            if k == 0:
                for j in js:
                    acc[t + j] = _q(row[x0 + j], f, kind)
            else:
                for j in js:
                    acc[t + j] = _add32(acc[t + j], _q(row[x0 + j], f, kind))
    for b in range(full):
        _dequantize_run(acc, b * block_size, block_size, scales[b], kind, out,
                        lo + b * block_size, False)
    if rest:
        _dequantize_run(acc, full * block_size, rest, scales[full], kind, out,
                        lo + full * block_size, False)
    return status


@_jit
def sum_workers(bits2d, kind, block_size, tile_blocks, out):
    """SwitchML on (K, n) bits -> out, the fmt bits every worker gets.

    Returns 0, 1 if some value is Inf/NaN (out is then unspecified), or 2
    if a block's largest |q| times K exceeds INT32_MAX, i.e. the int32 sum
    might have wrapped (K <= 256 makes that impossible, docs/numerics.md
    section 6; out holds the wrapped sums' values, as a switch would)."""
    n = bits2d.shape[1]
    tile = tile_blocks * block_size
    largest = np.empty(tile_blocks, np.uint32)
    scales = np.empty(tile_blocks, np.float64)
    acc = np.empty(tile, np.int32)
    status = 0
    for lo in range(0, n, tile):
        s = _sum_tile(bits2d, lo, min(tile, n - lo), kind, block_size, largest, scales, acc, out)
        if s == 1:
            return 1
        status = max(status, s)
    return status


# ------------------------------------------------- ATP's fixed-scale quantizer
# A third integer baseline: ATP (NSDI'21) quantizes fp32 with one fixed
# factor instead of per-block exponents. The formula, from the AVX2 path of
# in-ATP/ATP common/quantize.h (quantizeAVX2 / dequantizeAVX2), reimplemented:
#     q = cvtps_epi32(fl32(x * 1e6))   float32 product, round to nearest even;
#                                      out of int32 range or NaN -> INT32_MIN
#                                      (x86's "integer indefinite")
#     y = fl32(fl32(s) / 1e6)          int -> float32 (nearest even), float32 divide
# No block exponents, no exchange with the switch: |x| must stay below
# ~2147 (2^31 / 1e6) for every worker and the K-way sum too.
ATP_FACTOR = 1.0e6  # exact in float32


@_jit
def atp_quantize_kernel(bits, out):
    factor = np.float32(ATP_FACTOR)
    for i in range(bits.shape[0]):
        r = np.rint(_as_float32(bits[i]) * factor)
        out[i] = np.int32(r) if abs(r) < np.float32(2147483648.0) else np.int32(-2147483648)


@_jit
def atp_dequantize_kernel(sums, out):
    factor = np.float32(ATP_FACTOR)
    for i in range(sums.shape[0]):
        out[i] = _as_uint32(np.float32(sums[i]) / factor)


def atp_quantize(values_bits) -> np.ndarray:
    """ATP's fixed-scale quantizer: fp32 bits -> int32 (see ATP_FACTOR above)."""
    bits = np.ascontiguousarray(np.asarray(values_bits).ravel(), dtype=np.uint32)
    out = np.empty(bits.size, np.int32)
    atp_quantize_kernel(bits, out)
    return out


def atp_dequantize(int_sums) -> np.ndarray:
    """ATP's dequantizer: int32 sums -> fp32 bits."""
    s = np.ascontiguousarray(np.asarray(int_sums, dtype=np.int32).ravel())
    out = np.empty(s.size, np.uint32)
    atp_dequantize_kernel(s, out)
    return out


# ------------------------------------------------------------------ byte order
@_jit
def byteswap_kernel(values, out):
    """out[i] = values[i] with its bytes reversed (16/32/64-bit integers)."""
    for i in range(values.shape[0]):
        out[i] = _bswap(values[i])


@_jit
def copy_kernel(values, out):
    """out[:] = values: the honest host cost when the switch swaps bytes."""
    for i in range(values.shape[0]):
        out[i] = values[i]


_UINT_OF_SIZE = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def byteswap(values, out=None):
    """Reverse the bytes of every element of ``values`` (itemsize 2, 4 or 8).

    values and out: C-contiguous arrays of the same shape and itemsize (any
    dtype of that size: float16/32/64, integers); out may be values itself
    (in place) but must not otherwise overlap it. out=None allocates an
    array like values. Unaligned arrays are handled (slower). Non-contiguous
    arrays are refused with ValueError: pass ``np.ascontiguousarray(values)``.
    Returns out. Same bytes as ``values.byteswap()``.
    """
    values = np.asarray(values)
    size = values.dtype.itemsize
    if size not in _UINT_OF_SIZE or values.dtype.kind not in "fiu":
        raise ValueError(f"byteswap handles 2-, 4- and 8-byte numbers, got dtype {values.dtype}")
    if not values.flags.c_contiguous:
        raise ValueError("byteswap needs a C-contiguous array; pass np.ascontiguousarray(values)")
    if out is None:
        out = np.empty_like(values)
    elif not isinstance(out, np.ndarray):
        raise ValueError(f"out must be a numpy array, got {type(out).__name__}")
    if out.shape != values.shape or out.dtype.itemsize != size:
        raise ValueError(f"out {out.dtype}{out.shape} does not match values {values.dtype}{values.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable C-contiguous array")
    same = (out.__array_interface__["data"][0] == values.__array_interface__["data"][0])
    if not same and np.shares_memory(out, values):
        raise ValueError("out overlaps values without being the same array")
    u = _UINT_OF_SIZE[size]
    byteswap_kernel(values.view(u).reshape(-1), out.view(u).reshape(-1))
    return out


# --------------------------------------------------------------- measurement
#: the paper's per-core byte-swap rates (values/s) and what 100 Gb/s needs
PAPER_BYTESWAP_PER_CORE = {"fp16": 0.52e9, "fp32": 0.6e9, "fp64": 1.07e9}
PAPER_NEEDED_100G = {"fp16": 5.8e9, "fp32": 2.9e9, "fp64": 1.45e9}

#: the keys of measure_host_rates' result (each maps format -> values/s per core)
HOST_RATE_KEYS = (
    "fpisa_switch_swap",
    "fpisa_host_swap",
    "numpy_byteswap",
    "switchml",
    "switchml_quantize_dequantize",
    "switchml_exponents",
    "switchml_quantize",
    "switchml_dequantize",
    "switchml_numpy",
    "atp",
)

_FLOAT_BITS = {"fp16": np.uint16, "fp32": np.uint32, "fp64": np.uint64}


def _best_time(run_chunk, chunks, threads, repeats):
    """Best wall time over ``repeats`` of running run_chunk on every chunk,
    ``threads`` chunks at a time (the kernels release the GIL)."""
    best = math.inf
    if threads == 1:
        for _ in range(repeats):
            t0 = time.perf_counter()
            for c in chunks:
                run_chunk(c)
            best = min(best, time.perf_counter() - t0)
        return best
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(run_chunk, chunks))
            best = min(best, time.perf_counter() - t0)
    return best


def _split(n, parts, align):
    step = -(-n // parts)
    step = -(-step // align) * align
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def measure_host_rates(n: int = 1 << 24, threads: int = 1, repeats: int = 7,
                       num_workers: int = 8, block_size: int = 64,
                       include_numpy: bool = True, seed: int = 0) -> dict:
    """Per-core host conversion rates in values/s (best of ``repeats``).

    ``n`` values per format (default 16 Mi: 64 MiB of fp32 in and as much
    out, beyond a 32 MiB L3, so these are streaming rates from and to DRAM;
    a small n measures cache-resident rates instead); ``threads`` worker
    threads each convert an equal contiguous share (the kernels release the
    GIL) and the rate is total values / best wall time / threads, i.e. per
    core if each thread has a core. The machine's other load only slows a
    run down, hence the best of several.

    Returns a dict; every entry but "meta" maps a format name to values/s
    per core:

    - ``fpisa_switch_swap`` {fp16, fp32, fp64}: FPISA when the switch swaps
      bytes: the host only hands the buffer over, measured as a copy into a
      packet buffer (the honest cost of "nothing");
    - ``fpisa_host_swap`` {fp16, fp32, fp64}: FPISA when the host swaps
      bytes (:func:`byteswap` into a packet buffer);
    - ``numpy_byteswap`` {fp16, fp32, fp64}: ``arr.byteswap()``, the numpy
      baseline (1 thread; omitted unless include_numpy);
    - ``switchml`` {fp32, fp16}: SwitchML's whole per-value host work, i.e.
      n / (t_exponents + t_quantize + t_dequantize): block exponents, quantize
      into the big-endian int32 wire buffer, dequantize from it back to the
      format (:func:`fpisa.switchml.quantize_to_wire` / ``dequantize_from_wire``
      kernels, the validation excluded);
    - ``switchml_quantize_dequantize`` {fp32, fp16}: n / (t_quantize +
      t_dequantize), the conversions alone (the exponents pass excluded);
    - ``switchml_exponents``, ``switchml_quantize``, ``switchml_dequantize``
      {fp32, fp16}: the three parts alone;
    - ``switchml_numpy`` {fp32, fp16}: the same three steps with the
      previous numpy implementation (block_exponents + quantize + dequantize,
      without the byte swap; 1 thread, omitted unless include_numpy): the
      "before";
    - ``atp`` {fp32}: ATP's fixed-scale quantize + dequantize
      (:func:`atp_quantize`, :func:`atp_dequantize` kernels), n / (t_q + t_dq);
    - ``meta``: n, threads, repeats, num_workers, block_size, cpu_count.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if n < threads * block_size:
        raise ValueError(f"n={n} is too small for {threads} threads of {block_size}-value blocks")
    rng = np.random.default_rng(seed)
    chunks = _split(n, threads, block_size)
    per_core = lambda t: n / t / threads  # noqa: E731
    result = {key: {} for key in HOST_RATE_KEYS}

    for name, u in _FLOAT_BITS.items():
        src = rng.standard_normal(n).astype(name.replace("fp", "float")).view(u)
        dst = np.empty_like(src)
        copy_kernel(src[:8], dst[:8])
        byteswap_kernel(src[:8], dst[:8])
        result["fpisa_switch_swap"][name] = per_core(_best_time(
            lambda c: copy_kernel(src[c[0]:c[1]], dst[c[0]:c[1]]), chunks, threads, repeats))
        result["fpisa_host_swap"][name] = per_core(_best_time(
            lambda c: byteswap_kernel(src[c[0]:c[1]], dst[c[0]:c[1]]), chunks, threads, repeats))
        if include_numpy:
            result["numpy_byteswap"][name] = n / _best_time(lambda c: src.byteswap(), [None], 1, repeats)

    from . import switchml as sml  # late: switchml imports this module

    kinds = {"fp32": KIND_FP32, "fp16": KIND_FP16}
    for name, kind in kinds.items():
        x = rng.standard_normal(n) * np.exp2(rng.integers(-8, 8, n))
        bits = x.astype(np.float32 if name == "fp32" else np.float16).view(
            np.uint32 if name == "fp32" else np.uint16)
        nblocks = -(-n // block_size)
        e = np.empty(nblocks, np.int32)
        block_exponents(bits[:block_size], kind, block_size, e[:1])
        block_exponents(bits, kind, block_size, e)
        scales = np.empty(nblocks)
        scale_factors(e.astype(np.int64), num_workers, scales)
        wire = np.empty(n, np.int32)
        back = np.empty_like(bits)

        def exps(c):
            lo, hi = c
            block_exponents(bits[lo:hi], kind, block_size, e[lo // block_size: -(-hi // block_size)])

        def quant(c):
            lo, hi = c
            quantize(bits[lo:hi], kind, scales[lo // block_size:], block_size, wire[lo:hi], True)

        def dequant(c):
            lo, hi = c
            dequantize(wire[lo:hi], kind, scales[lo // block_size:], block_size, back[lo:hi], True)

        t = {}
        for step, fn in (("exponents", exps), ("quantize", quant), ("dequantize", dequant)):
            fn(chunks[0])
            t[step] = _best_time(fn, chunks, threads, repeats)
            result[f"switchml_{step}"][name] = per_core(t[step])
        result["switchml"][name] = per_core(sum(t.values()))
        result["switchml_quantize_dequantize"][name] = per_core(t["quantize"] + t["dequantize"])
        if include_numpy:
            def numpy_path(_):
                ex = sml._reference_block_exponents(bits, name, block_size)
                q = sml._reference_quantize(bits, name, ex, num_workers, block_size)
                sml._reference_dequantize(q, name, ex, num_workers, block_size)
            numpy_path(None)
            result["switchml_numpy"][name] = n / _best_time(numpy_path, [None], 1, max(1, repeats // 2))

    bits = rng.standard_normal(n).astype(np.float32).view(np.uint32)
    q = np.empty(n, np.int32)
    back = np.empty(n, np.uint32)
    atp_quantize_kernel(bits[:8], q[:8])
    atp_dequantize_kernel(q[:8], back[:8])
    tq = _best_time(lambda c: atp_quantize_kernel(bits[c[0]:c[1]], q[c[0]:c[1]]), chunks, threads, repeats)
    tdq = _best_time(lambda c: atp_dequantize_kernel(q[c[0]:c[1]], back[c[0]:c[1]]), chunks, threads, repeats)
    result["atp"]["fp32"] = per_core(tq + tdq)

    result = {k: v for k, v in result.items() if v}
    result["meta"] = {"n": n, "threads": threads, "repeats": repeats, "num_workers": num_workers,
                      "block_size": block_size, "cpu_count": os.cpu_count()}
    return result
