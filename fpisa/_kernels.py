"""Numba kernels: the one implementation of FPISA arithmetic on the hot path.

Two layers, tested to agree bit for bit (tests/fpisa/test_vector_kernels.py):

- the scalar element functions (``_extract``, ``_acc_fpisa``,
  ``_acc_fpisa_a``, ``_readout``) and the ``scalar_*`` loops over them: the
  reference, also the path for per-element arrival orders and for formats
  without a specialization;
- the vector kernels (section "vector kernels"): the same arithmetic,
  branch-free per lane, in int32 lanes where values fit, specialized per
  format, so LLVM emits SIMD code. They are behind the public loops
  ``aggregate_fpisa``, ``aggregate_fpisa_a``, ``aggregate_float32``,
  ``normalize_array``, ``extract_array`` and the switch's row kernels
  ``accumulate_row_*`` (``fpisa.registers.SlotRegisters``,
  ``emulator.fastpath``), so the emulator and the numerics reference still
  run the same code. ``fpisa._oracle`` is the independent pure-Python
  implementation the tests compare against.

Integer discipline of the scalar layer: everything is int64. numba turns
uint64 (+) int64 into float64, so no uint64 appears in arithmetic; the one
value that does not fit int64, |A| = 2^63 for a 64-bit register, is handled
explicitly. The vector layer narrows to int32 where the values provably fit
(see there).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.cpython.unsafe.numbers import leading_zeros, viewer
from numba.extending import intrinsic

# per-element flag bits (public names in fpisa.registers)
POS_INF = 1
NEG_INF = 2
NAN = 4
OVERFLOW = 8
OVERWRITE = 16
SPECIALS = POS_INF | NEG_INF | NAN

_INT64_MIN = -(1 << 63)

_jit = njit(cache=True, nogil=True)


@_jit
def _bit_length(x):
    """Position of the leading one + 1, for 0 < x < 2^63 (one ctlz instruction)."""
    return 64 - leading_zeros(x)


@_jit
def _asr(x, d):
    """Arithmetic shift right (floor(x / 2^d)); d >= 63 gives 0 or -1."""
    if d > 63:
        d = 63
    return x >> d


@_jit
def _add(a, b, register_bits):
    """(a + b wrapped to W bits, overflow direction: +1, -1 or 0).

    numba's signed int64 add is ``nsw`` (overflow is undefined, and LLVM
    deletes checks that rely on it), so the 64-bit sum is taken in uint64
    and the W-bit wrap is a sign extension from bit W - 1 (shifts are
    defined for every value).
    """
    r = np.int64(np.uint64(a) + np.uint64(b))  # wraps in 64 bits, like the hardware
    if register_bits == 64:
        if a >= 0 and b >= 0 and r < 0:
            return r, 1
        if a < 0 and b < 0 and r >= 0:
            return r, -1
        return r, 0
    # exact here: two values below 2^62 in magnitude
    lo = -(1 << (register_bits - 1))
    over = np.int64(r > -lo - 1) - np.int64(r < lo)
    sh = 64 - register_bits
    return (r << sh) >> sh, over


@_jit
def _extract(bits, exponent_bits, fraction_bits):
    """IEEE bits -> (exponent, signed mantissa, special flag, biased field).

    Zero and subnormals get exponent 1 and no hidden bit (section 1); Inf and
    NaN give mantissa 0 and their flag.
    """
    x = np.int64(bits)
    all_ones = (1 << exponent_bits) - 1
    sign = (x >> (exponent_bits + fraction_bits)) & 1
    field = (x >> fraction_bits) & all_ones
    frac = x & ((1 << fraction_bits) - 1)
    if field == all_ones:
        return 0, 0, (NAN if frac != 0 else (NEG_INF if sign else POS_INF)), field
    magnitude = frac | (np.int64(field != 0) << fraction_bits)
    exponent = field + np.int64(field == 0)
    return exponent, (magnitude ^ -sign) + sign, 0, field


@_jit
def _acc_fpisa(E, A, flags, bits, first, exponent_bits, fraction_bits, register_bits):
    """Section 2: the extended ALU may shift the stored mantissa (RSAW).

    Written without data-dependent branches (this is the hot loop): a special
    value enters as a zero with exponent 1, which changes neither register.
    """
    e, S, special, _ = _extract(bits, exponent_bits, fraction_bits)
    if special:
        e = 1
    if first:
        # the first arrival's write is the slot's implicit reset
        return e, S, special
    d = e - E
    A = _asr(A, max(d, 0))
    S = _asr(S, max(-d, 0))
    A, over = _add(A, S, register_bits)
    return max(E, e), A, flags | special | (OVERFLOW if over != 0 else 0)


@_jit
def _acc_fpisa_a(E, A, flags, bits, first, exponent_bits, fraction_bits, register_bits):
    """Section 3: only the incoming value moves; returns (E, A, flags, overwrote)."""
    e, S, special, field = _extract(bits, exponent_bits, fraction_bits)
    if first:
        E = 0
        A = 0
        flags = 0
    if special:
        return E, A, flags | special, 0
    if field == 0:  # zero or subnormal: flushed, contributes nothing
        return E, A, flags, 0
    if E == 0:  # first nonzero value
        return e, S, flags, 0
    headroom = register_bits - 1 - (fraction_bits + 1)
    d = e - E
    if d <= 0:
        S = _asr(S, -d)
    elif d <= headroom:
        S = S << d  # fits: |S| < 2^p and d <= h = W - 1 - p
    else:
        return e, S, flags | OVERWRITE, 1
    r, over = _add(A, S, register_bits)
    if over > 0:
        r = (1 << (register_bits - 1)) - 1 if register_bits < 64 else 9223372036854775807
        flags |= OVERFLOW
    elif over < 0:
        r = -(1 << (register_bits - 1)) if register_bits < 64 else _INT64_MIN
        flags |= OVERFLOW
    return E, r, flags, 0


@_jit
def _round_to_format(sign, magnitude, E, exponent_bits, fraction_bits, nearest_even, sticky):
    """Bits of (-1)^sign * magnitude * 2^(E - bias - m), rounded once.

    E is a biased exponent for a leading one at bit m; magnitude > 0, < 2^63.
    sticky: sign of an exact residual below magnitude's last bit (only used
    by round-to-nearest-even, for the correctly rounded exact sum).
    """
    m = fraction_bits
    all_ones = (1 << exponent_bits) - 1
    lead = _bit_length(magnitude) - 1
    E_out = E + lead - m
    shift = lead - m
    if E_out <= 0:  # subnormal result: shift further, exponent field 0
        shift += 1 - E_out
        E_out = 0
    if shift > 0:
        if shift >= 63:
            q = 0
            # everything is dropped; it is above half only if shift == 63 and
            # the magnitude has bit 62 set, and never a tie with magnitude > 0
            above_half = shift == 63 and magnitude > (1 << 62)
            tie = shift == 63 and magnitude == (1 << 62)
        else:
            q = magnitude >> shift
            rem = magnitude & ((1 << shift) - 1)
            half = 1 << (shift - 1)
            above_half = rem > half
            tie = rem == half
        if nearest_even:
            if above_half or (tie and (sticky > 0 or (sticky == 0 and (q & 1) == 1))):
                q += 1
    else:
        q = magnitude << (-shift)
    if q >> (m + 1):  # rounding carried out of the significand
        q >>= 1
        E_out += 1
    if E_out == 0 and (q >> m):  # a subnormal rounded up to the smallest normal
        E_out = 1
    if E_out >= all_ones:
        return (sign << (exponent_bits + m)) | (all_ones << m)
    return (sign << (exponent_bits + m)) | (E_out << m) | (q & ((1 << m) - 1))


@_jit
def _special_bits(flags, exponent_bits, fraction_bits):
    all_ones = (1 << exponent_bits) - 1
    if (flags & NAN) or ((flags & POS_INF) and (flags & NEG_INF)):
        return (all_ones << fraction_bits) | (1 << (fraction_bits - 1))  # quiet NaN
    if flags & POS_INF:
        return all_ones << fraction_bits
    return (1 << (exponent_bits + fraction_bits)) | (all_ones << fraction_bits)


@_jit
def _readout(E, A, flags, exponent_bits, fraction_bits, nearest_even):
    """Section 4: normalize (E, A) to IEEE bits."""
    if flags & SPECIALS:
        return _special_bits(flags, exponent_bits, fraction_bits)
    if A == 0:
        return 0
    if A == _INT64_MIN:  # |A| = 2^63 does not fit int64: 2^62 * 2^1, exact
        return _round_to_format(1, 1 << 62, E + 1, exponent_bits, fraction_bits, nearest_even, 0)
    s = A >> 63  # 0 or -1
    magnitude = (A ^ s) - s
    shift = _bit_length(magnitude) - 1 - fraction_bits
    E_out = E + shift
    if nearest_even or E_out <= 0 or E_out >= (1 << exponent_bits) - 1:
        return _round_to_format(-s, magnitude, E, exponent_bits, fraction_bits, nearest_even, 0)
    # common case, without branches: a normal result, truncated
    q = (magnitude >> max(shift, 0)) << max(-shift, 0)
    return ((-s) << (exponent_bits + fraction_bits)) | (E_out << fraction_bits) | (
        q & ((1 << fraction_bits) - 1))


# ------------------------------------------------- scalar reference loops
#
# The loops as they were before the vector kernels: one element function
# call per element and arrival. They stay as the reference the vector kernels
# are tested against (tests/fpisa/test_vector_kernels.py), as the path for
# per-element arrival orders, and as the fallback for formats without a
# specialized kernel.

_SCALAR_TILE = 512


@_jit
def scalar_aggregate_fpisa(bits, order, exponent_bits, fraction_bits, register_bits, nearest_even,
                    out, E_out, A_out, flags_out):
    """bits (K, n); order (n or 1, K): arrival order of workers per element.

    One order for all elements: tiles of elements, worker-major inside a tile
    (sequential reads of each worker's row). Per-element orders: element-major.
    Both run the same element function, so they agree by construction.
    """
    K, n = bits.shape
    if order.shape[0] == 1:
        for j0 in range(0, n, _SCALAR_TILE):
            j1 = min(n, j0 + _SCALAR_TILE)
            E = E_out[j0:j1]
            A = A_out[j0:j1]
            flags = flags_out[j0:j1]
            for t in range(K):
                row = bits[order[0, t], j0:j1]
                first = t == 0
                for i in range(j1 - j0):
                    E[i], A[i], flags[i] = _acc_fpisa(E[i], A[i], flags[i], row[i], first,
                                                      exponent_bits, fraction_bits, register_bits)
            for i in range(j1 - j0):
                out[j0 + i] = _readout(E[i], A[i], flags[i], exponent_bits, fraction_bits,
                                       nearest_even)
        return
    for j in range(n):
        E = 0
        A = 0
        flags = 0
        for t in range(K):
            E, A, flags = _acc_fpisa(E, A, flags, bits[order[j, t], j], t == 0,
                                     exponent_bits, fraction_bits, register_bits)
        out[j] = _readout(E, A, flags, exponent_bits, fraction_bits, nearest_even)
        E_out[j] = E
        A_out[j] = A
        flags_out[j] = flags


@_jit
def scalar_aggregate_fpisa_a(bits, order, exponent_bits, fraction_bits, register_bits, nearest_even,
                      out, E_out, A_out, flags_out, overwrites_out):
    """As :func:`aggregate_fpisa`, for the Tofino-class rule (section 3)."""
    K, n = bits.shape
    if order.shape[0] == 1:
        for j0 in range(0, n, _SCALAR_TILE):
            j1 = min(n, j0 + _SCALAR_TILE)
            E = E_out[j0:j1]
            A = A_out[j0:j1]
            flags = flags_out[j0:j1]
            overwrites = overwrites_out[j0:j1]
            for t in range(K):
                row = bits[order[0, t], j0:j1]
                first = t == 0
                for i in range(j1 - j0):
                    E[i], A[i], flags[i], ow = _acc_fpisa_a(E[i], A[i], flags[i], row[i], first,
                                                            exponent_bits, fraction_bits,
                                                            register_bits)
                    overwrites[i] = ow if first else overwrites[i] + ow
            for i in range(j1 - j0):
                out[j0 + i] = _readout(E[i], A[i], flags[i], exponent_bits, fraction_bits,
                                       nearest_even)
        return
    for j in range(n):
        E = 0
        A = 0
        flags = 0
        overwrites = 0
        for t in range(K):
            E, A, flags, ow = _acc_fpisa_a(E, A, flags, bits[order[j, t], j], t == 0,
                                           exponent_bits, fraction_bits, register_bits)
            overwrites += ow
        out[j] = _readout(E, A, flags, exponent_bits, fraction_bits, nearest_even)
        E_out[j] = E
        A_out[j] = A
        flags_out[j] = flags
        overwrites_out[j] = overwrites


@_jit
def scalar_normalize_array(E, A, flags, exponent_bits, fraction_bits, nearest_even, out):
    for j in range(E.shape[0]):
        out[j] = _readout(E[j], A[j], flags[j], exponent_bits, fraction_bits, nearest_even)


@_jit
def scalar_extract_array(bits, exponent_bits, fraction_bits, E, S, flags):
    for j in range(bits.shape[0]):
        e, s, special, _ = _extract(bits[j], exponent_bits, fraction_bits)
        E[j] = e
        S[j] = s
        flags[j] = special




@_jit
def scalar_accumulate_row_fpisa(E, A, flags, bits, first, exponent_bits, fraction_bits, register_bits):
    for j in range(bits.shape[0]):
        E[j], A[j], flags[j] = _acc_fpisa(E[j], A[j], flags[j], bits[j], first,
                                          exponent_bits, fraction_bits, register_bits)


@_jit
def scalar_accumulate_row_fpisa_a(E, A, flags, overwrites, bits, first, exponent_bits, fraction_bits,
                           register_bits):
    for j in range(bits.shape[0]):
        if first:
            overwrites[j] = 0
        E[j], A[j], flags[j], ow = _acc_fpisa_a(E[j], A[j], flags[j], bits[j], first,
                                                exponent_bits, fraction_bits, register_bits)
        overwrites[j] += ow


@_jit
def scalar_accumulate_row_int_sum(A, values, first):
    """SwitchML's int32 add: wraps at 32 bits like the switch's ALU."""
    for j in range(values.shape[0]):
        if first:
            A[j] = values[j]
        else:
            r = (A[j] + np.int64(values[j]) + (1 << 31)) & 0xFFFFFFFF
            A[j] = r - (1 << 31)


@_jit
def scalar_accumulate_row_int_max(A, values, first):
    """SwitchML's block exponent exchange: int32 max."""
    for j in range(values.shape[0]):
        if first or np.int64(values[j]) > A[j]:
            A[j] = values[j]


# ---------------------------------------------------------------- vector kernels
#
# The same arithmetic as the element functions above, written so LLVM's loop
# vectorizer turns the loops into SIMD code (AVX2 on this project's machines):
#
# - the element axis is the innermost loop, with no data-dependent branches:
#   every ``x if c else y`` below becomes a select (blend);
# - 32-bit lanes whenever the values fit (8 lanes per AVX2 register instead
#   of 4). numba types int32 (op) int32 as int64 and marks signed adds
#   ``nsw`` (overflow undefined), so the int32 lane arithmetic goes through
#   the small intrinsics ``_add32`` ... ``_shl32``: exactly one i32 LLVM
#   instruction each, wrapping adds, shift distances clamped to 31 (what
#   AVX2's vpsravd does by itself). int64 lanes wrap through uint64;
# - the register-width class is chosen outside the loops: int32 lanes when
#   W <= 32 or when no value can exceed 31 bits, else int64 lanes; fpisa's
#   overflow and wrap checks are dropped when K (2^p - 1) fits the register
#   (then no sum can overflow, so the check could never fire);
# - whole arrays work on tiles of _TILE elements whose registers stay in L2
#   while the K worker rows stream through, several arrivals per pass;
# - the format's widths are loop-invariant arguments (hoisted masks and
#   shift counts). Specializing them as compile-time constants measured ~5%
#   faster on the fpisa step and compiles three times as many functions, so
#   only the float32 baseline (whose decode differs per format) does;
# - rare work leaves the vector loop: Inf/NaN flags are recomputed for a
#   tile (or row) only if it saw a special; the read-out's short rz pass
#   falls back to the full lane (rne, subnormal, Inf, specials) only if some
#   lane needs it; |A| = 2^31 or 2^63 reads out as 2^30 or 2^62 at E + 1
#   (the same value), as _readout does;
# - LLVM turns ``store(select(c, x, load p), p)`` into AVX2 masked stores
#   (slow on Zen 3): exponents are updated as ``max`` and kept int32.
#
# tests/fpisa/test_vector_kernels.py compares every kernel here with the
# scalar reference loops above. Which loops vectorize, and the instructions
# seen: docs/numerics.md, "Kernel performance".

_inline = njit(cache=True, nogil=True, inline="always")

#: elements per tile: the int32 registers of a tile (E, A, flags: 96 KiB)
#: stay in L2 while the K worker rows stream by. Measured (K = 8, n = 2^22,
#: AVX2): 1024 (L1-resident) is ~30% slower for fpisa than 8192: per-call
#: overhead of the loops and short sequential runs per row; software
#: prefetching of the next tile did not help
_TILE = 8192

_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1
_INT64_MAX = (1 << 63) - 1
#: normalize_array: |E| below this reads out in int32 lanes ...
_E32_LIMIT = 1 << 29
#: ... below this in int64 lanes; larger exponents go to the scalar loop
_E64_LIMIT = 1 << 40

# (exponent bits, fraction bits) with vector kernels
VECTOR_FORMATS = ((8, 23), (5, 10), (8, 7))


def has_vector_kernels(exponent_bits: int, fraction_bits: int) -> bool:
    """True if the vector kernels serve this format (else the scalar loops)."""
    return (exponent_bits, fraction_bits) in VECTOR_FORMATS


# ---- int32 lane operations: one LLVM i32 instruction each


_LL_I32 = ir.IntType(32)


def _args32(context, builder, sig, args):
    return [context.cast(builder, v, t, types.int32) for v, t in zip(args, sig.args)]


def _integers(*tys):
    return all(isinstance(t, types.Integer) for t in tys)


def _clamp31(builder, d):
    """min(d, 31) as unsigned (distances are >= 0): vpsravd's own saturation."""
    c31 = ir.Constant(_LL_I32, 31)
    return builder.select(builder.icmp_unsigned(">", d, c31), c31, d)


def _binary32(emit, result=types.int32, shift=False, doc=""):
    """An intrinsic ``f(x, y)`` of two integers as one i32 LLVM instruction
    ``emit(builder, a, b)`` on their int32 casts; ``shift``: ``b`` is a shift
    distance, clamped to 31 as AVX2's variable shifts do by themselves."""
    def typer(typingctx, x, y):
        if not _integers(x, y):
            return None

        def codegen(context, builder, sig, args):
            a, b = _args32(context, builder, sig, args)
            return emit(builder, a, _clamp31(builder, b) if shift else b)
        return result(x, y), codegen
    typer.__doc__ = doc
    return intrinsic(typer)


_add32 = _binary32(lambda b, x, y: b.add(x, y), doc="x + y wrapping at 32 bits.")
_sub32 = _binary32(lambda b, x, y: b.sub(x, y), doc="x - y wrapping at 32 bits.")
_and32 = _binary32(lambda b, x, y: b.and_(x, y), doc="x & y on 32 bits.")
_or32 = _binary32(lambda b, x, y: b.or_(x, y), doc="x | y on 32 bits.")
_xor32 = _binary32(lambda b, x, y: b.xor(x, y), doc="x ^ y on 32 bits.")
_sra32 = _binary32(lambda b, x, d: b.ashr(x, d), shift=True,
                   doc="x >> d, arithmetic (floor(x / 2^d)); d >= 31 gives 0 or -1.")
_shl32 = _binary32(lambda b, x, d: b.shl(x, d), shift=True,
                   doc="x << d, d clamped to 31 (callers keep d below that where it matters).")
_srl32 = _binary32(lambda b, x, d: b.lshr(x, d), shift=True,
                   doc="x >> d, logical (as unsigned), d clamped to 31.")
_ult32 = _binary32(lambda b, x, y: b.icmp_unsigned("<", x, y), result=types.boolean,
                   doc="x < y as unsigned 32-bit values.")


@intrinsic
def _sext32(typingctx, x):
    """A bit pattern as int32, sign-extended from its own width: a 16-bit
    format's sign bit lands in bit 31, like fp32's."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        width = sig.args[0].bitwidth
        if width < 32:
            return builder.sext(args[0], _LL_I32)
        return builder.trunc(args[0], _LL_I32) if width > 32 else args[0]
    return types.int32(x), codegen


# ---- one lane: element functions without branches


@_inline
def _parts32(b, eb, m):
    """IEEE bits (uint32 or uint16) -> (sign mask 0 / -1, exponent field,
    fraction), int32."""
    x = _sext32(b)
    sgn = _sra32(x, 31)
    field = _and32(_sra32(x, m), (1 << eb) - 1)
    frac = _and32(x, (1 << m) - 1)
    return sgn, field, frac


@_inline
def _special_flag32(sgn, field, frac, eb):
    """POS_INF / NEG_INF / NAN of an Inf/NaN input, else 0 (as _extract)."""
    flag = np.int32(NAN) if frac != np.int32(0) else _sub32(1, sgn)
    return flag if field == np.int32((1 << eb) - 1) else np.int32(0)


@_inline
def _signed32(sgn, field, frac, m):
    """The signed mantissa S of _extract (hidden bit unless the field is 0)."""
    mag = _or32(frac, np.int32(1 << m) if field != np.int32(0) else np.int32(0))
    return _sub32(_xor32(mag, sgn), sgn)


@_inline
def _fpisa_input32(b, eb, m):
    """fpisa's view of an arrival: (e, S, special); specials enter as e = 1, S = 0."""
    sgn, field, frac = _parts32(b, eb, m)
    special = field == np.int32((1 << eb) - 1)
    S = _signed32(sgn, field, frac, m)
    e = np.int32(1) if special else max(field, np.int32(1))
    return e, (np.int32(0) if special else S), special


@_inline
def _fpisa_lane32_safe(b, Ei, Ai, eb, m):
    """_acc_fpisa (not first) when the sum cannot overflow: no wrap, no check."""
    e, S, special = _fpisa_input32(b, eb, m)
    E = np.int32(Ei)
    big = max(E, e)
    return big, _add32(_sra32(Ai, _sub32(big, E)), _sra32(S, _sub32(big, e))), special


@_inline
def _fpisa_lane32(b, Ei, Ai, eb, m, lo, mask):
    """_acc_fpisa (not first), W <= 32: returns (E, A, overflow != 0, special).

    W < 32: the int32 sum is exact and wraps to W bits by (r - lo) & mask + lo;
    W = 32: the int32 add wraps by itself and the sign rule detects it.
    """
    e, S, special = _fpisa_input32(b, eb, m)
    E = np.int32(Ei)
    big = max(E, e)
    a = _sra32(Ai, _sub32(big, E))
    s = _sra32(S, _sub32(big, e))
    r = _add32(a, s)
    w = _add32(_and32(_sub32(r, lo), mask), lo)
    over = _or32(_sra32(_and32(_xor32(a, r), _xor32(s, r)), 31), _xor32(w, r))
    return big, w, over, special


@_inline
def _add64(a, b):
    """a + b wrapping at 64 bits (numba's signed add is nsw: overflow undefined)."""
    return np.int64(np.uint64(a) + np.uint64(b))


@_inline
def _fpisa_lane64(b, Ei, Ai, eb, m, sh):
    """_acc_fpisa (not first), int64 lanes: returns (E, A, overflow != 0, special).

    The sum wraps at 64 bits; the W-bit wrap is a sign extension from bit
    W - 1 (sh = 64 - W); overflow: the 64-bit sign rule, or the wrap changed
    the value.
    """
    e, S32, special = _fpisa_input32(b, eb, m)
    E = np.int32(Ei)  # exponents stay int32 (an int64 max would store through a mask)
    big = max(E, e)
    a = np.int64(Ai) >> min(_sub32(big, E), np.int32(63))
    s = np.int64(S32) >> min(_sub32(big, e), np.int32(63))
    r = _add64(a, s)
    w = (r << sh) >> sh
    over = (((a ^ r) & (s ^ r)) >> 63) | (w ^ r)
    return big, w, over, special


@_inline
def _fpisa_lane64_safe(b, Ei, Ai, eb, m):
    e, S32, special = _fpisa_input32(b, eb, m)
    E = np.int32(Ei)
    big = max(E, e)
    return big, ((np.int64(Ai) >> min(_sub32(big, E), np.int32(63)))
                 + (np.int64(S32) >> min(_sub32(big, e), np.int32(63)))), special


@_inline
def _fpisa_a_lane32(b, Ei, Ai, eb, m, h, lo, hi, wrap32):
    """_acc_fpisa_a (after the first arrival's reset), W <= 32.

    Returns (E, A, overflow (sign bit), overwrote, special). The shifted value is
    (S << d) >> -d (one of the two distances is 0); lanes that do not add
    add 0, so they cannot overflow. wrap32 (a literal, W = 32): the
    int32 add wraps and the sign rule picks the saturation bound; else the
    sum is exact and clamped to [lo, hi].
    """
    sgn, field, frac = _parts32(b, eb, m)
    all_ones = np.int32((1 << eb) - 1)
    special = field == all_ones
    valid = (field != np.int32(0)) & (field != all_ones)
    E = np.int32(Ei)
    A = np.int32(Ai)
    # an input that contributes nothing (zero, subnormal, Inf, NaN) enters
    # as S = 0 at e = E: it adds 0, and replaces only an empty slot by itself
    e = field if valid else E
    S = _sub32(_xor32(_or32(frac, 1 << m), sgn), sgn) if valid else np.int32(0)
    d = _sub32(e, E)
    far = d > h
    replace = (E == np.int32(0)) | far
    # adding lanes have d <= h; the others' shifted value is discarded
    Ss = _sra32(_shl32(S, max(d, np.int32(0))), max(_sub32(0, d), np.int32(0)))
    Ss = np.int32(0) if replace else Ss
    r = _add32(A, Ss)
    if wrap32:
        over = _and32(_xor32(A, r), _xor32(Ss, r))  # sign bit: the int32 add overflowed
        res = _xor32(_sra32(A, 31), _I32_MAX) if over < np.int32(0) else r
    else:
        res = min(max(r, lo), hi)
        over = np.int32(-1) if res != r else np.int32(0)
    # a replacement never lowers E (E = 0, or e - E > h >= 1): E' = max(E, e),
    # which also keeps LLVM from storing E through a (slow) AVX2 mask
    return (max(E, e if replace else np.int32(0)), (S if replace else res), over,
            far & (E != np.int32(0)), special)


@_inline
def _fpisa_a_lane64(b, Ei, Ai, eb, m, h, lo, hi):
    """_acc_fpisa_a, int64 lanes (W > 32)."""
    sgn, field, frac = _parts32(b, eb, m)
    all_ones = np.int32((1 << eb) - 1)
    special = field == all_ones
    valid = (field != np.int32(0)) & (field != all_ones)
    S = np.int64(_sub32(_xor32(_or32(frac, 1 << m), sgn), sgn))
    E = np.int32(Ei)
    A = np.int64(Ai)
    d = _sub32(field, E)
    full = E != np.int32(0)
    replace = valid & ((E == np.int32(0)) | (d > h))
    add = valid & full & (d <= h)
    Ss = (S << min(max(d, np.int32(0)), h)) >> min(max(_sub32(0, d), np.int32(0)), np.int32(63))
    Ss = Ss if add else np.int64(0)
    r = _add64(A, Ss)
    ovf = ((A ^ r) & (Ss ^ r)) >> 63
    c = min(max(r, lo), hi)
    res = ((A >> 63) ^ _INT64_MAX) if ovf != 0 else c
    over = ovf | (c ^ r)
    return (max(E, field if replace else np.int32(0)), (S if replace else res), over,
            replace & full, special)


@_inline
def _lead32(mag):
    """floor(log2(mag)) for 0 < mag < 2^31: the exponent of float32(mag)
    (vcvtdq2ps), minus one where the conversion rounded up to a power of
    two. AVX2 has no vector count-leading-zeros; LLVM's table version takes
    about twice the instructions."""
    e = _sub32(_srl32(viewer(np.float32(mag), np.int32), 23), 127)
    return _add32(e, np.int32(-1) if _sra32(mag, e) == np.int32(0) else np.int32(0))


@_inline
def _special_result32(F, eb, m):
    """_special_bits without branches (int32 bit pattern)."""
    all_ones = (1 << eb) - 1
    nan = (_and32(F, NAN) != np.int32(0)) | (_and32(F, POS_INF | NEG_INF)
                                              == np.int32(POS_INF | NEG_INF))
    inf = (np.int32(all_ones << m) if _and32(F, POS_INF) != np.int32(0)
           else np.int32((1 << (eb + m)) | (all_ones << m)))
    return np.int32((all_ones << m) | (1 << (m - 1))) if nan else inf


@_inline
def _readout_lane32(Ei, Ai, Fi, eb, m, nearest):
    """_readout for |A| <= 2^31 and |E| < 2^29, as an int32 bit pattern.

    One formula for normal and subnormal results, rz and rne: the total
    right shift is L - m (normal) or 1 - E (subnormal); rne adds one when
    the remainder is above half, or half with an odd quotient; the exponent
    field is added to the significand so a rounding carry bumps it (and may
    reach Inf); a subnormal that rounds up to 2^m is the smallest normal.
    """
    all_ones = (1 << eb) - 1
    A0 = np.int32(Ai)
    F = np.int32(Fi)
    huge = A0 == np.int32(_I32_MIN)  # -2^31 = -2^30 * 2: |A| fits again
    A = np.int32(-(1 << 30)) if huge else A0
    E = _add32(Ei, np.int32(huge))
    sgn = _sra32(A, 31)
    mag = _sub32(_xor32(A, sgn), sgn)
    lead = _lead32(mag)
    Eo = _sub32(_add32(E, lead), m)
    sub = Eo <= np.int32(0)
    sh = _sub32(1, E) if sub else _sub32(lead, m)
    rsh = max(sh, np.int32(0))
    q = _sra32(mag, rsh)
    rem = _sub32(mag, _shl32(q, rsh))
    half = _shl32(1, max(_sub32(rsh, 1), np.int32(0)))
    up = nearest & (sh > np.int32(0)) & (sh <= np.int32(31)) & (_add32(rem, _and32(q, 1)) > half)
    q = _shl32(_add32(q, np.int32(up)), max(_sub32(0, sh), np.int32(0)))
    Ec = max(min(Eo, np.int32(all_ones - 1)), np.int32(0))
    val = q if sub else _sub32(_add32(_shl32(Ec, m), q), 1 << m)
    inf = (Eo > np.int32(0)) & ((Eo >= np.int32(all_ones)) | (val >= np.int32(all_ones << m)))
    res = _or32(_and32(sgn, 1 << (eb + m)), np.int32(all_ones << m) if inf else val)
    res = np.int32(0) if A0 == np.int32(0) else res
    return res if _and32(F, SPECIALS) == np.int32(0) else _special_result32(F, eb, m)


@_inline
def _readout_rz_lane32(Ei, Ai, Fi, eb, m):
    """The common read-out: rz, a normal result, no special: (bits, rare).

    The leading one is shifted to bit 31 and back down to bit m (truncation);
    the significand's hidden one carries into the exponent field (E' - 1).
    rare: anything else (specials, |A| = 2^31, subnormal or Inf results),
    for _readout_lane32. A = 0 reads +0 here.
    """
    A = np.int32(Ai)
    sgn = _sra32(A, 31)
    mag = _sub32(_xor32(A, sgn), sgn)
    lz = _sub32(31, _lead32(mag))
    Eo = _add32(_sub32(Ei, lz), 31 - m)
    q = _srl32(_shl32(mag, lz), 31 - m)
    res = _or32(_and32(sgn, 1 << (eb + m)), _add32(_shl32(_sub32(Eo, 1), m), q))
    rare = (_and32(Fi, SPECIALS) != np.int32(0)) | ((A != np.int32(0)) & (
        (A == np.int32(_I32_MIN)) | _ult32((1 << eb) - 3, _sub32(Eo, 1))))
    return (np.int32(0) if A == np.int32(0) else res), rare


@_inline
def _readout_lane64(Ei, Ai, Fi, eb, m, nearest):
    """_readout in int64 lanes, for |E| < 2^40 (as _readout_lane32)."""
    all_ones = (1 << eb) - 1
    A0 = np.int64(Ai)
    huge = A0 == _INT64_MIN
    A = np.int64(-(1 << 62)) if huge else A0
    E = np.int64(Ei) + np.int64(huge)
    sgn = A >> 63
    mag = (A ^ sgn) - sgn
    lead = 63 - np.int64(leading_zeros(mag))
    Eo = E + lead - m
    sub = Eo <= 0
    sh = (1 - E) if sub else (lead - m)
    rsh = min(max(sh, 0), 63)
    q = mag >> rsh
    rem = mag - (q << rsh)
    half = np.int64(1) << max(rsh - 1, 0)
    up = nearest & (sh > 0) & (sh <= 63) & (rem + (q & 1) > half)
    q = (q + np.int64(up)) << min(max(-sh, 0), 63)
    Ec = max(min(Eo, all_ones - 1), 0)
    val = q if sub else (Ec << m) + q - (1 << m)
    inf = (Eo > 0) & ((Eo >= all_ones) | (val >= (all_ones << m)))
    res = (sgn & (1 << (eb + m))) | ((all_ones << m) if inf else val)
    res = np.int64(0) if A0 == 0 else res
    special = np.int64(_special_result32(np.int32(Fi), eb, m)) & ((1 << (1 + eb + m)) - 1)
    return res if (np.int64(Fi) & SPECIALS) == 0 else special


# ---- loops: one vectorizable loop each, over a row or a tile
#
# Regular (cached) numba functions with the lane functions above inlined;
# numba compiles one version per array-type combination (int32 tiles,
# int64 switch rows).


@_inline
def _body_special_flags(row, F, eb, m):
    """F |= the Inf/NaN flag of each input (only run when a special was seen)."""
    for i in range(row.shape[0]):
        sgn, field, frac = _parts32(row[i], eb, m)
        F[i] = _or32(F[i], _special_flag32(sgn, field, frac, eb))


@_jit
def _loop_special_flags(row, F, eb, m):
    return _body_special_flags(row, F, eb, m)


@_inline
def _body_fpisa_first(row, E, A, F, eb, m):
    """fpisa's first arrival: the write that resets the slot."""
    for i in range(row.shape[0]):
        sgn, field, frac = _parts32(row[i], eb, m)
        special = field == (1 << eb) - 1
        S = _signed32(sgn, field, frac, m)
        E[i] = np.int32(1) if special else max(field, np.int32(1))
        A[i] = np.int32(0) if special else S
        F[i] = _special_flag32(sgn, field, frac, eb)


@_jit
def _loop_fpisa_first(row, E, A, F, eb, m):
    return _body_fpisa_first(row, E, A, F, eb, m)


@_jit
def _loop_fpisa_safe32(row, E, A, eb, m):
    anysp = np.int32(0)
    for i in range(row.shape[0]):
        e, a, sp = _fpisa_lane32_safe(row[i], E[i], A[i], eb, m)
        E[i] = e
        A[i] = a
        anysp = _or32(anysp, np.int32(sp))
    return anysp


@_jit
def _loop_fpisa_safe32_x4(r0, r1, r2, r3, E, A, eb, m):
    """Four arrivals in one pass over the tile."""
    anysp = np.int32(0)
    for i in range(r0.shape[0]):
        e, a, sp = _fpisa_lane32_safe(r0[i], E[i], A[i], eb, m)
        e, a, sp1 = _fpisa_lane32_safe(r1[i], e, a, eb, m)
        e, a, sp2 = _fpisa_lane32_safe(r2[i], e, a, eb, m)
        e, a, sp3 = _fpisa_lane32_safe(r3[i], e, a, eb, m)
        E[i] = e
        A[i] = a
        anysp = _or32(anysp, np.int32(sp | sp1 | sp2 | sp3))
    return anysp


@_inline
def _body_fpisa32(row, E, A, F, eb, m, lo, mask):
    anysp = np.int32(0)
    for i in range(row.shape[0]):
        e, a, over, sp = _fpisa_lane32(row[i], E[i], A[i], eb, m, lo, mask)
        E[i] = e
        A[i] = a
        F[i] = _or32(F[i], np.int32(OVERFLOW) if over != 0 else np.int32(0))
        anysp = _or32(anysp, np.int32(sp))
    return anysp


@_jit
def _loop_fpisa32(row, E, A, F, eb, m, lo, mask):
    return _body_fpisa32(row, E, A, F, eb, m, lo, mask)


@_jit
def _loop_fpisa_safe64(row, E, A, eb, m):
    anysp = np.int32(0)
    for i in range(row.shape[0]):
        e, a, sp = _fpisa_lane64_safe(row[i], E[i], A[i], eb, m)
        E[i] = e
        A[i] = a
        anysp = _or32(anysp, np.int32(sp))
    return anysp


@_inline
def _body_fpisa64(row, E, A, F, eb, m, sh):
    anysp = np.int32(0)
    for i in range(row.shape[0]):
        e, a, over, sp = _fpisa_lane64(row[i], E[i], A[i], eb, m, sh)
        E[i] = e
        A[i] = a
        F[i] = _or32(F[i], np.int32(OVERFLOW) if over != 0 else np.int32(0))
        anysp = _or32(anysp, np.int32(sp))
    return anysp


@_jit
def _loop_fpisa64(row, E, A, F, eb, m, sh):
    return _body_fpisa64(row, E, A, F, eb, m, sh)


@_inline
def _body_fpisa_a32(row, E, A, F, OW, eb, m, h, lo, hi, wrap32):
    """One arrival into a switch row (flags updated here)."""
    anysp = np.int32(0)
    for i in range(row.shape[0]):
        e, a, over, ow, sp = _fpisa_a_lane32(row[i], E[i], A[i], eb, m, h, lo, hi, wrap32)
        E[i] = e
        A[i] = a
        F[i] = _or32(_or32(F[i], np.int32(OVERFLOW) if over < 0 else np.int32(0)),
                     np.int32(OVERWRITE) if ow else np.int32(0))
        OW[i] += ow
        anysp = _or32(anysp, np.int32(sp))
    return anysp


@_inline
def _fpisa_a_tally(T, over, ow):
    """A tile's per-element tally: overwrites counted in bits 0..30, bit 31
    set by any overflow (the flags are made from it once per tile)."""
    return _or32(_add32(T, np.int32(ow)), _and32(over, _I32_MIN))


@_jit
def _loop_fpisa_a32_tile(row, E, A, T, eb, m, h, lo, hi, wrap32):
    """One arrival into a tile."""
    anysp = np.int32(0)
    for i in range(row.shape[0]):
        e, a, over, ow, sp = _fpisa_a_lane32(row[i], E[i], A[i], eb, m, h, lo, hi, wrap32)
        E[i] = e
        A[i] = a
        T[i] = _fpisa_a_tally(T[i], over, ow)
        anysp = _or32(anysp, np.int32(sp))
    return anysp


@_jit
def _loop_fpisa_a32_tile2(r0, r1, E, A, T, eb, m, h, lo, hi, wrap32):
    """Two arrivals into a tile in one pass (registers loaded and stored once;
    four per pass measured no faster and compile twice as long)."""
    anysp = np.int32(0)
    for i in range(r0.shape[0]):
        e, a, over, ow, sp0 = _fpisa_a_lane32(r0[i], E[i], A[i], eb, m, h, lo, hi, wrap32)
        t = _fpisa_a_tally(T[i], over, ow)
        e, a, over, ow, sp1 = _fpisa_a_lane32(r1[i], e, a, eb, m, h, lo, hi, wrap32)
        T[i] = _fpisa_a_tally(t, over, ow)
        E[i] = e
        A[i] = a
        anysp = _or32(anysp, np.int32(sp0 | sp1))
    return anysp


@_jit
def _loop_fpisa_a_flags(T, F):
    for i in range(F.shape[0]):
        t = T[i]
        F[i] = _or32(np.int32(OVERFLOW) if t < np.int32(0) else np.int32(0),
                     np.int32(OVERWRITE) if _and32(t, _I32_MAX) != np.int32(0) else np.int32(0))
        T[i] = _and32(t, _I32_MAX)  # the count


@_inline
def _body_fpisa_a64(row, E, A, F, OW, eb, m, h, lo, hi):
    anysp = np.int32(0)
    for i in range(row.shape[0]):
        e, a, over, ow, sp = _fpisa_a_lane64(row[i], E[i], A[i], eb, m, h, lo, hi)
        E[i] = e
        A[i] = a
        F[i] = _or32(_or32(F[i], np.int32(OVERFLOW) if over != 0 else np.int32(0)),
                     np.int32(OVERWRITE) if ow else np.int32(0))
        OW[i] += ow
        anysp = _or32(anysp, np.int32(sp))
    return anysp


@_jit
def _loop_fpisa_a64(row, E, A, F, OW, eb, m, h, lo, hi):
    return _body_fpisa_a64(row, E, A, F, OW, eb, m, h, lo, hi)


@_inline
def _body_readout_rz(E, A, F, out, eb, m, checked):
    """The short rz pass; returns nonzero if some lane needs the full one.
    checked (a literal): the registers may be any int64, so lanes outside
    |A| < 2^31, |E| < 2^29 count as rare too."""
    rare = np.int32(0)
    for i in range(out.shape[0]):
        r, x = _readout_rz_lane32(E[i], A[i], F[i], eb, m)
        out[i] = r
        if checked:
            x = x | (np.int64(np.int32(A[i])) != A[i]) | (E[i] >= _E32_LIMIT) | (E[i] <= -_E32_LIMIT)
        rare = _or32(rare, np.int32(x))
    return rare


@_inline
def _body_readout32(E, A, F, out, eb, m, nearest):
    for i in range(out.shape[0]):
        out[i] = _readout_lane32(E[i], A[i], F[i], eb, m, nearest)


@_jit
def _loop_readout32(E, A, F, out, eb, m, nearest):
    """out = _readout(E, A, F) for registers with |A| <= 2^31, |E| < 2^29:
    rz by the short common-case pass, unless some lane needs the full one."""
    if not nearest and _body_readout_rz(E, A, F, out, eb, m, False) == 0:
        return
    _body_readout32(E, A, F, out, eb, m, nearest)


@_inline
def _body_readout64(E, A, F, out, eb, m, nearest):
    """out = _readout(E, A, F) for registers with |E| < 2^40."""
    for i in range(out.shape[0]):
        out[i] = _readout_lane64(E[i], A[i], F[i], eb, m, nearest)


@_jit
def _loop_readout64(E, A, F, out, eb, m, nearest):
    _body_readout64(E, A, F, out, eb, m, nearest)


@_inline
def _body_register_class(E, A):
    """0: every pair fits _readout_lane32; 1: _readout_lane64; 2: neither."""
    wide = 0
    huge = 0
    for i in range(E.shape[0]):
        e = E[i]
        wide += ((np.int64(np.int32(A[i])) != A[i]) | (e >= _E32_LIMIT) | (e <= -_E32_LIMIT))
        huge += (e >= _E64_LIMIT) | (e <= -_E64_LIMIT)
    return 2 if huge else (1 if wide else 0)


@_inline
def _body_extract(bits, eb, m, E, S, flags):
    for i in range(bits.shape[0]):
        sgn, field, frac = _parts32(bits[i], eb, m)
        special = field == (1 << eb) - 1
        E[i] = np.int32(0) if special else max(field, np.int32(1))
        S[i] = np.int32(0) if special else _signed32(sgn, field, frac, m)
        flags[i] = _special_flag32(sgn, field, frac, eb)


@_jit
def _loop_store(src, dst, j0):
    """dst[j0:j0 + len(src)] = src, converting."""
    d = dst[j0:j0 + src.shape[0]]
    for i in range(src.shape[0]):
        d[i] = src[i]


# ---- drivers: the tile loops and the lane-class choice


@_inline
def _wrap_constants(W):
    """(lo, mask) of a W-bit two's-complement wrap, lo = -2^(W-1)."""
    if W >= 64:
        return np.int64(_INT64_MIN), np.int64(-1)
    return np.int64(-(1 << (W - 1))), np.int64((1 << W) - 1)


@_inline
def _register_max(W):
    return np.int64(_INT64_MAX) if W >= 64 else np.int64((1 << (W - 1)) - 1)


@_jit
def _fpisa_tiles(bits, order, eb, m, W, nearest, out, E_out, A_out, F_out, registers, c0, c1):
    """aggregate_fpisa for one arrival order, elements c0:c1.

    |A| <= t (2^p - 1) after t arrivals (a shift never grows a magnitude),
    so with K (2^p - 1) <= 2^(W-1) - 1 nothing can overflow or wrap ("safe":
    no check needed) and W plays no role: int32 lanes then serve any W if
    also K (2^p - 1) < 2^31. Otherwise int32 lanes for W <= 32, int64 above.
    """
    K, n = bits.shape
    bound = K * ((1 << (m + 1)) - 1)
    safe = bound <= _register_max(W)
    lanes32 = (safe and bound <= _I32_MAX) or W <= 32
    lo, mask = _wrap_constants(W)
    lo32, mask32 = np.int32(lo), np.int32(mask)
    sh = np.int64(64 - W)
    T = _TILE if lanes32 else 0
    E = np.empty(_TILE, np.int32)  # exponents are int32 in both lane classes
    A32, A64 = np.empty(T, np.int32), np.empty(_TILE - T, np.int64)
    F = np.empty(_TILE, np.int32)
    for j0 in range(c0, c1, _TILE):
        j1 = min(c1, j0 + _TILE)
        L = j1 - j0
        Et, Ft = E[:L], F[:L]
        anysp = np.int32(0)
        if lanes32:
            At = A32[:L]
            _loop_fpisa_first(bits[order[0, 0], j0:j1], Et, At, Ft, eb, m)
            t = 1
            if safe:
                while t + 4 <= K:
                    anysp |= _loop_fpisa_safe32_x4(
                        bits[order[0, t], j0:j1], bits[order[0, t + 1], j0:j1],
                        bits[order[0, t + 2], j0:j1], bits[order[0, t + 3], j0:j1], Et, At, eb, m)
                    t += 4
            for t in range(t, K):
                row = bits[order[0, t], j0:j1]
                if safe:
                    anysp |= _loop_fpisa_safe32(row, Et, At, eb, m)
                else:
                    anysp |= _loop_fpisa32(row, Et, At, Ft, eb, m, lo32, mask32)
        else:
            At64 = A64[:L]
            _loop_fpisa_first(bits[order[0, 0], j0:j1], Et, At64, Ft, eb, m)
            for t in range(1, K):
                row = bits[order[0, t], j0:j1]
                if safe:
                    anysp |= _loop_fpisa_safe64(row, Et, At64, eb, m)
                else:
                    anysp |= _loop_fpisa64(row, Et, At64, Ft, eb, m, sh)
        if anysp:
            for t in range(1, K):
                _loop_special_flags(bits[order[0, t], j0:j1], Ft, eb, m)
        if lanes32:
            _loop_readout32(Et, At, Ft, out[j0:j1], eb, m, nearest)
            if registers:
                _loop_store(Et, E_out, j0)
                _loop_store(At, A_out, j0)
        else:
            _loop_readout64(Et, At64, Ft, out[j0:j1], eb, m, nearest)
            if registers:
                _loop_store(Et, E_out, j0)
                _loop_store(At64, A_out, j0)
        if registers:
            _loop_store(Ft, F_out, j0)


@_jit
def _fpisa_a_tiles(bits, order, eb, m, W, nearest, out, E_out, A_out, F_out, OW_out,
                   registers, c0, c1):
    """aggregate_fpisa_a for one arrival order, elements c0:c1: int32 lanes
    for W <= 32."""
    K, n = bits.shape
    lanes32 = W <= 32
    h = np.int64(W - 1 - (m + 1))
    lo, _ = _wrap_constants(W)
    hi = _register_max(W)
    h32, lo32, hi32 = np.int32(h), np.int32(lo), np.int32(hi)
    T = _TILE if lanes32 else 0
    E = np.empty(_TILE, np.int32)  # exponents are int32 in both lane classes
    A32, A64 = np.empty(T, np.int32), np.empty(_TILE - T, np.int64)
    F = np.empty(_TILE, np.int32)
    OW = np.empty(_TILE, np.int32)
    for j0 in range(c0, c1, _TILE):
        j1 = min(c1, j0 + _TILE)
        L = j1 - j0
        Et, Ft, OWt = E[:L], F[:L], OW[:L]
        Et[:] = 0
        Ft[:] = 0
        OWt[:] = 0
        anysp = np.int32(0)
        if lanes32:
            At = A32[:L]
            At[:] = 0
            t = 0
            while t + 2 <= K:
                r0, r1 = bits[order[0, t], j0:j1], bits[order[0, t + 1], j0:j1]
                if W == 32:
                    anysp |= _loop_fpisa_a32_tile2(r0, r1, Et, At, OWt, eb, m, h32, lo32, hi32,
                                                   True)
                else:
                    anysp |= _loop_fpisa_a32_tile2(r0, r1, Et, At, OWt, eb, m, h32, lo32, hi32,
                                                   False)
                t += 2
            for t in range(t, K):
                row = bits[order[0, t], j0:j1]
                if W == 32:
                    anysp |= _loop_fpisa_a32_tile(row, Et, At, OWt, eb, m, h32, lo32, hi32, True)
                else:
                    anysp |= _loop_fpisa_a32_tile(row, Et, At, OWt, eb, m, h32, lo32, hi32, False)
            _loop_fpisa_a_flags(OWt, Ft)
        else:
            At64 = A64[:L]
            At64[:] = 0
            for t in range(K):
                anysp |= _loop_fpisa_a64(bits[order[0, t], j0:j1], Et, At64, Ft, OWt, eb, m,
                                         h32, lo, hi)
        if anysp:
            for t in range(K):
                _loop_special_flags(bits[order[0, t], j0:j1], Ft, eb, m)
        if lanes32:
            _loop_readout32(Et, At, Ft, out[j0:j1], eb, m, nearest)
            if registers:
                _loop_store(Et, E_out, j0)
                _loop_store(At, A_out, j0)
        else:
            _loop_readout64(Et, At64, Ft, out[j0:j1], eb, m, nearest)
            if registers:
                _loop_store(Et, E_out, j0)
                _loop_store(At64, A_out, j0)
        if registers:
            _loop_store(Ft, F_out, j0)
            _loop_store(OWt, OW_out, j0)


@_inline
def _normalize(E, A, F, eb, m, nearest, out):
    """normalize_array: the short rz pass if it serves every lane, else int32
    lanes if every register fits them, else int64 lanes (exponents beyond
    2^40, which no switch holds: the scalar loop)."""
    if not nearest and _body_readout_rz(E, A, F, out, eb, m, True) == 0:
        return
    c = _body_register_class(E, A)
    if c == 0:
        _body_readout32(E, A, F, out, eb, m, nearest)
    elif c == 1:
        _body_readout64(E, A, F, out, eb, m, nearest)
    else:
        scalar_normalize_array(E, A, F, eb, m, nearest, out)


@_inline
def _row_fpisa(E, A, flags, bits, first, eb, m, W):
    """accumulate_row_fpisa: one arrival into a row of int64 registers."""
    if first:
        _body_fpisa_first(bits, E, A, flags, eb, m)
        return
    if W <= 32:
        lo, mask = _wrap_constants(W)
        anysp = _body_fpisa32(bits, E, A, flags, eb, m, np.int32(lo), np.int32(mask))
    else:
        anysp = _body_fpisa64(bits, E, A, flags, eb, m, np.int64(64 - W))
    if anysp:
        _body_special_flags(bits, flags, eb, m)


@_inline
def _row_fpisa_a(E, A, flags, overwrites, bits, first, eb, m, W):
    """accumulate_row_fpisa_a: one arrival into a row of int64 registers."""
    if first:
        E[:] = 0
        A[:] = 0
        flags[:] = 0
        overwrites[:] = 0
    h = np.int64(W - 1 - (m + 1))
    lo, _ = _wrap_constants(W)
    hi = _register_max(W)
    if W == 32:
        anysp = _body_fpisa_a32(bits, E, A, flags, overwrites, eb, m, np.int32(h), np.int32(lo),
                                np.int32(hi), True)
    elif W < 32:
        anysp = _body_fpisa_a32(bits, E, A, flags, overwrites, eb, m, np.int32(h), np.int32(lo),
                                np.int32(hi), False)
    else:
        anysp = _body_fpisa_a64(bits, E, A, flags, overwrites, eb, m, np.int32(h), lo, hi)
    if anysp:
        _body_special_flags(bits, flags, eb, m)


# ---- float32 baseline (the tiles compiled per format, with literal widths)


@_inline
def _widen32(b, eb, m):
    """Format bits -> float32 value, exactly (fp16 subnormals by an exact
    product of normal float32s, so no denormal operand is involved)."""
    if m == 23:
        return viewer(np.int32(b), np.float32)
    if m == 7 and eb == 8:
        return viewer(_shl32(b, 16), np.float32)
    sgn, field, frac = _parts32(b, eb, m)
    top = np.int32(0xFF) if field == np.int32((1 << eb) - 1) else _add32(field, 127 - ((1 << (eb - 1)) - 1))
    x = viewer(_or32(_or32(_and32(sgn, _I32_MIN), _shl32(top, 23)), _shl32(frac, 23 - m)), np.float32)
    tiny = np.float32(frac) * np.float32(2.0 ** (1 - ((1 << (eb - 1)) - 1) - m))
    tiny = -tiny if sgn != np.int32(0) else tiny
    return tiny if field == np.int32(0) else x


@_inline
def _is_special32(b, eb, m):
    _, field, _ = _parts32(b, eb, m)
    return field == np.int32((1 << eb) - 1)


@_inline
def _f32_add(a, b):
    """a + b as x86 computes it (float32, round to nearest even), with the NaN
    operand rule pinned: a NaN operand comes back quieted, the first one if
    both are NaN (what numpy's ``acc += x`` gives on x86; LLVM may swap the
    operands of an fadd, which would change the payload)."""
    s = viewer(a + b, np.int32)
    ai = viewer(a, np.int32)
    bi = viewer(b, np.int32)
    s = _or32(bi, 0x400000) if _and32(bi, 0x7FFFFFFF) > np.int32(0x7F800000) else s
    s = _or32(ai, 0x400000) if _and32(ai, 0x7FFFFFFF) > np.int32(0x7F800000) else s
    return viewer(s, np.float32)


@_inline
def _f32_to_format(v, eb, m):
    """float32 -> format bits, round to nearest even (as doubles_to_format):
    the float32 as an (E, A) register pair through the vector read-out."""
    if m == 23:
        return viewer(v, np.int32)
    sgn, field, frac = _parts32(viewer(v, np.int32), 8, 23)
    S = _signed32(sgn, field, frac, 23)
    flag = _special_flag32(sgn, field, frac, 8)
    E = _add32(max(field, np.int32(1)), ((1 << (eb - 1)) - 1) + m - 150)
    r = _readout_lane32(E, S, flag, eb, m, True)
    zero = _and32(sgn, 1 << (eb + m))  # a zero keeps its sign (A = 0 reads as +0)
    return zero if (S == np.int32(0)) & (flag == np.int32(0)) else r


@_jit
def _loop_widen(row, acc, eb, m):
    """acc = the first arrival, widened; returns whether a special was seen."""
    anysp = np.int32(0)
    for i in range(row.shape[0]):
        acc[i] = _widen32(row[i], eb, m)
        anysp = _or32(anysp, np.int32(_is_special32(row[i], eb, m)))
    return anysp


@_jit
def _loop_f32_add(row, acc, eb, m):
    anysp = np.int32(0)
    for i in range(row.shape[0]):
        acc[i] = _f32_add(acc[i], _widen32(row[i], eb, m))
        anysp = _or32(anysp, np.int32(_is_special32(row[i], eb, m)))
    return anysp


@_jit
def _loop_f32_out(acc, out, eb, m):
    for i in range(acc.shape[0]):
        out[i] = _f32_to_format(acc[i], eb, m)


@_jit
def _float32_tiles(bits, order, eb, m, out, F_out, want_flags, c0, c1):
    K, n = bits.shape
    acc = np.empty(_TILE, np.float32)
    F = np.empty(_TILE, np.int32)
    for j0 in range(c0, c1, _TILE):
        j1 = min(c1, j0 + _TILE)
        L = j1 - j0
        accT = acc[:L]
        anysp = _loop_widen(bits[order[0, 0], j0:j1], accT, eb, m)
        for t in range(1, K):
            anysp |= _loop_f32_add(bits[order[0, t], j0:j1], accT, eb, m)
        _loop_f32_out(accT, out[j0:j1], eb, m)
        if want_flags:
            Ft = F[:L]
            Ft[:] = 0
            if anysp:
                for t in range(K):
                    _loop_special_flags(bits[order[0, t], j0:j1], Ft, eb, m)
            _loop_store(Ft, F_out, j0)


@_jit
def _float32_per_element(bits, order, eb, m, out, F_out):
    K, n = bits.shape
    for j in range(n):
        b = bits[order[j, 0], j]
        acc = _widen32(b, eb, m)
        sgn, field, frac = _parts32(b, eb, m)
        flags = _special_flag32(sgn, field, frac, eb)
        for t in range(1, K):
            b = bits[order[j, t], j]
            acc = _f32_add(acc, _widen32(b, eb, m))
            sgn, field, frac = _parts32(b, eb, m)
            flags |= _special_flag32(sgn, field, frac, eb)
        out[j] = _f32_to_format(acc, eb, m)
        F_out[j] = flags


@_jit
def bf16_to_float32(bits, out):
    """bf16 bit patterns -> float32 (exact: the same layout, 16 more fraction bits)."""
    for i in range(bits.shape[0]):
        out[i] = viewer(_shl32(bits[i], 16), np.float32)


# ---------------------------------------------------------------- whole arrays
#
# The public loops: the vector kernels for fp32 / fp16 / bf16, the scalar
# reference loops for other formats (and for per-element arrival orders).


@_inline
def _vector_format(eb, m):
    return (eb == 8 and (m == 23 or m == 7)) or (eb == 5 and m == 10)


@_jit
def aggregate_fpisa(bits, order, exponent_bits, fraction_bits, register_bits, nearest_even,
                    out, E_out, A_out, flags_out, registers=True):
    """bits (K, n); order (n or 1, K): arrival order of workers per element.

    One order for all elements: the vector kernels (tiles of elements,
    worker-major inside a tile); registers=False skips storing E, A and the
    flags (then E_out, A_out, flags_out may be empty). Per-element orders
    (and formats without a specialization): the scalar reference loop,
    which always stores them.
    """
    eb, m, W, rne = exponent_bits, fraction_bits, register_bits, nearest_even
    if order.shape[0] == 1 and _vector_format(eb, m):
        _fpisa_tiles(bits, order, eb, m, W, rne, out, E_out, A_out, flags_out, registers, 0,
                     bits.shape[1])
        return
    scalar_aggregate_fpisa(bits, order, eb, m, W, rne, out, E_out, A_out, flags_out)


@_jit
def aggregate_fpisa_a(bits, order, exponent_bits, fraction_bits, register_bits, nearest_even,
                      out, E_out, A_out, flags_out, overwrites_out, registers=True):
    """As :func:`aggregate_fpisa`, for the Tofino-class rule (section 3)."""
    eb, m, W, rne = exponent_bits, fraction_bits, register_bits, nearest_even
    if order.shape[0] == 1 and _vector_format(eb, m):
        _fpisa_a_tiles(bits, order, eb, m, W, rne, out, E_out, A_out, flags_out, overwrites_out,
                       registers, 0, bits.shape[1])
        return
    scalar_aggregate_fpisa_a(bits, order, eb, m, W, rne, out, E_out, A_out, flags_out,
                             overwrites_out)


@_jit
def _float32_fp32(bits, order, out, flags_out, want_flags, c0, c1):
    _float32_tiles(bits, order, 8, 23, out, flags_out, want_flags, c0, c1)


@_jit
def _float32_fp16(bits, order, out, flags_out, want_flags, c0, c1):
    _float32_tiles(bits, order, 5, 10, out, flags_out, want_flags, c0, c1)


@_jit
def _float32_bf16(bits, order, out, flags_out, want_flags, c0, c1):
    _float32_tiles(bits, order, 8, 7, out, flags_out, want_flags, c0, c1)


_FLOAT32_TILES = {(8, 23): _float32_fp32, (5, 10): _float32_fp16, (8, 7): _float32_bf16}


def aggregate_float32(bits, order, exponent_bits, fraction_bits, out, flags_out, want_flags):
    """Sequential float32 adds in arrival order (IEEE, round to nearest even),
    rounded to nearest even to the format; flags_out: the inputs' Inf/NaN
    flags (written for per-element orders, else only if want_flags).

    A Python function: it picks the format's compiled kernel, so only the
    formats in use are compiled (each inlines its format's decode).
    """
    if order.shape[0] == 1:
        _FLOAT32_TILES[exponent_bits, fraction_bits](bits, order, out, flags_out, want_flags, 0,
                                                     bits.shape[1])
    else:
        _float32_per_element(bits, order, exponent_bits, fraction_bits, out, flags_out)


@_jit
def normalize_array(E, A, flags, exponent_bits, fraction_bits, nearest_even, out):
    eb, m = exponent_bits, fraction_bits
    if _vector_format(eb, m):
        _normalize(E, A, flags, eb, m, nearest_even, out)
    else:
        scalar_normalize_array(E, A, flags, eb, m, nearest_even, out)


@_jit
def extract_array(bits, exponent_bits, fraction_bits, E, S, flags):
    eb, m = exponent_bits, fraction_bits
    if _vector_format(eb, m):
        _body_extract(bits, eb, m, E, S, flags)
    else:
        scalar_extract_array(bits, eb, m, E, S, flags)


# ---------------------------------------------------------------- switch rows


@_jit
def accumulate_row_fpisa(E, A, flags, bits, first, exponent_bits, fraction_bits, register_bits):
    eb, m, W = exponent_bits, fraction_bits, register_bits
    if _vector_format(eb, m):
        _row_fpisa(E, A, flags, bits, first, eb, m, W)
    else:
        scalar_accumulate_row_fpisa(E, A, flags, bits, first, eb, m, W)


@_jit
def accumulate_row_fpisa_a(E, A, flags, overwrites, bits, first, exponent_bits, fraction_bits,
                           register_bits):
    eb, m, W = exponent_bits, fraction_bits, register_bits
    if _vector_format(eb, m):
        _row_fpisa_a(E, A, flags, overwrites, bits, first, eb, m, W)
    else:
        scalar_accumulate_row_fpisa_a(E, A, flags, overwrites, bits, first, eb, m, W)


@_jit
def accumulate_row_int_sum(A, values, first):
    """SwitchML's int32 add: wraps at 32 bits like the switch's ALU."""
    if first:
        for j in range(values.shape[0]):
            A[j] = values[j]
    else:
        for j in range(values.shape[0]):
            A[j] = np.int32(np.int32(A[j]) + values[j])  # the low 32 bits, sign-extended


@_jit
def accumulate_row_int_max(A, values, first):
    """SwitchML's block exponent exchange: int32 max.

    A row written by this kernel holds int32 values; the max is then taken
    in int32 lanes (an int64 max of the stored value becomes a slow AVX2
    masked store). Any other row: in int64.
    """
    if first:
        for j in range(values.shape[0]):
            A[j] = values[j]
        return
    wide = 0
    for j in range(values.shape[0]):
        wide += np.int64(np.int32(A[j])) != A[j]
    if wide == 0:
        for j in range(values.shape[0]):
            A[j] = max(np.int32(A[j]), values[j])
    else:
        for j in range(values.shape[0]):
            A[j] = max(A[j], np.int64(values[j]))


# ---------------------------------------------------------------- threads
#
# The whole-array kernels of one arrival order, split across threads by
# chunks of whole tiles (elements are independent, so the bits do not
# depend on the split). The caller sets the thread count
# (numba.set_num_threads) and checks the format has vector kernels.

_pjit = njit(cache=True, nogil=True, parallel=True)


@_jit
def _chunk(n, chunks, c):
    """Columns [c0, c1) of chunk c: whole tiles, as even as they come."""
    tiles = (n + _TILE - 1) // _TILE
    per = (tiles + chunks - 1) // chunks
    return min(n, c * per * _TILE), min(n, (c + 1) * per * _TILE)


@_pjit
def aggregate_fpisa_threads(bits, order, exponent_bits, fraction_bits, register_bits,
                            nearest_even, out, E_out, A_out, flags_out, registers, chunks):
    for c in prange(chunks):
        c0, c1 = _chunk(bits.shape[1], chunks, c)
        if c0 < c1:
            _fpisa_tiles(bits, order, exponent_bits, fraction_bits, register_bits, nearest_even,
                         out, E_out, A_out, flags_out, registers, c0, c1)


@_pjit
def aggregate_fpisa_a_threads(bits, order, exponent_bits, fraction_bits, register_bits,
                              nearest_even, out, E_out, A_out, flags_out, overwrites_out,
                              registers, chunks):
    for c in prange(chunks):
        c0, c1 = _chunk(bits.shape[1], chunks, c)
        if c0 < c1:
            _fpisa_a_tiles(bits, order, exponent_bits, fraction_bits, register_bits,
                           nearest_even, out, E_out, A_out, flags_out, overwrites_out, registers,
                           c0, c1)


@_pjit
def _float32_threads_fp32(bits, order, out, flags_out, want_flags, chunks):
    for c in prange(chunks):
        c0, c1 = _chunk(bits.shape[1], chunks, c)
        if c0 < c1:
            _float32_tiles(bits, order, 8, 23, out, flags_out, want_flags, c0, c1)


@_pjit
def _float32_threads_fp16(bits, order, out, flags_out, want_flags, chunks):
    for c in prange(chunks):
        c0, c1 = _chunk(bits.shape[1], chunks, c)
        if c0 < c1:
            _float32_tiles(bits, order, 5, 10, out, flags_out, want_flags, c0, c1)


@_pjit
def _float32_threads_bf16(bits, order, out, flags_out, want_flags, chunks):
    for c in prange(chunks):
        c0, c1 = _chunk(bits.shape[1], chunks, c)
        if c0 < c1:
            _float32_tiles(bits, order, 8, 7, out, flags_out, want_flags, c0, c1)


_FLOAT32_THREADS = {(8, 23): _float32_threads_fp32, (5, 10): _float32_threads_fp16,
                    (8, 7): _float32_threads_bf16}


def aggregate_float32_threads(bits, order, exponent_bits, fraction_bits, out, flags_out,
                              want_flags, chunks):
    """aggregate_float32 for one arrival order, in chunks across threads."""
    _FLOAT32_THREADS[exponent_bits, fraction_bits](bits, order, out, flags_out, want_flags,
                                                   chunks)


# ---------------------------------------------------------------- exact sum


@_jit
def _bits_to_double(bits, exponent_bits, fraction_bits):
    """Exact value of finite IEEE bits as a float64 (every fp32/fp16/bf16 fits)."""
    e, S, _, _ = _extract(bits, exponent_bits, fraction_bits)
    bias = (1 << (exponent_bits - 1)) - 1
    return math.ldexp(float(S), e - bias - fraction_bits)


@_jit
def _grow(partials, count, x):
    """Shewchuk's grow-expansion (as in CPython's math.fsum): exact."""
    i = 0
    for k in range(count):
        y = partials[k]
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            partials[i] = lo
            i += 1
        x = hi
    partials[i] = x
    return i + 1


@_jit
def _expansion_sign(partials, count):
    """Sign of the sum of a nonoverlapping expansion: its largest nonzero term."""
    for k in range(count - 1, -1, -1):
        if partials[k] > 0.0:
            return 1
        if partials[k] < 0.0:
            return -1
    return 0


@_jit
def _fsum_hi(partials, count):
    """CPython's correctly rounded final step of math.fsum."""
    if count == 0:
        return 0.0
    n = count - 1
    hi = partials[n]
    lo = 0.0
    while n > 0:
        x = hi
        n -= 1
        y = partials[n]
        hi = x + y
        yr = hi - x
        lo = y - yr
        if lo != 0.0:
            break
    if n > 0 and ((lo < 0.0 and partials[n - 1] < 0.0) or (lo > 0.0 and partials[n - 1] > 0.0)):
        y = lo * 2.0
        x = hi + y
        yr = x - hi
        if y == yr:
            hi = x
    return hi


@_jit
def aggregate_exact(bits, exponent_bits, fraction_bits, out, flags_out):
    """Correctly rounded (RNE) sum per element; order-independent by definition."""
    K, n = bits.shape
    bias = (1 << (exponent_bits - 1)) - 1
    partials = np.empty(K + 64, np.float64)
    for j in range(n):
        flags = 0
        count = 0
        for k in range(K):
            _, _, special, _ = _extract(bits[k, j], exponent_bits, fraction_bits)
            if special:
                flags |= special
            else:
                count = _grow(partials, count, _bits_to_double(bits[k, j], exponent_bits,
                                                               fraction_bits))
        flags_out[j] = flags
        if flags & SPECIALS:
            out[j] = _special_bits(flags, exponent_bits, fraction_bits)
            continue
        hi = _fsum_hi(partials, count)
        if hi == 0.0:
            out[j] = 0
            continue
        # exact sum = hi + residual, |residual| below half an ulp of hi
        count = _grow(partials, count, -hi)
        residual = _expansion_sign(partials, count)
        sign = 1 if hi < 0.0 else 0
        frac, ex = math.frexp(abs(hi))
        magnitude = np.int64(frac * 9007199254740992.0)  # frac * 2^53: exact
        sticky = residual if sign == 0 else -residual  # relative to |hi|
        out[j] = _round_to_format(sign, magnitude, ex - 53 + bias + fraction_bits,
                                  exponent_bits, fraction_bits, True, sticky)


@_jit
def scalar_doubles_to_format(x, exponent_bits, fraction_bits, out):
    """float64 -> format bits, round to nearest even (NaN stays NaN)."""
    bias = (1 << (exponent_bits - 1)) - 1
    for j in range(x.shape[0]):
        v = x[j]
        if v != v:
            out[j] = _special_bits(NAN, exponent_bits, fraction_bits)
        elif v == math.inf:
            out[j] = _special_bits(POS_INF, exponent_bits, fraction_bits)
        elif v == -math.inf:
            out[j] = _special_bits(NEG_INF, exponent_bits, fraction_bits)
        elif v == 0.0:
            out[j] = (1 << (exponent_bits + fraction_bits)) if math.copysign(1.0, v) < 0 else 0
        else:
            sign = 1 if v < 0.0 else 0
            frac, ex = math.frexp(abs(v))
            magnitude = np.int64(frac * 9007199254740992.0)
            out[j] = _round_to_format(sign, magnitude, ex - 53 + bias + fraction_bits,
                                      exponent_bits, fraction_bits, True, 0)


@_inline
def _double_to_format_lane(v, eb, m):
    """doubles_to_format for one value, without branches: the double as an
    (E, A) register pair (A its signed 53-bit significand) through the int64
    read-out lane, rne; Inf/NaN through the special-value flags; a zero
    keeps its sign."""
    x = viewer(v, np.int64)
    sgn = x >> 63
    field = (x >> 52) & 0x7FF
    frac = x & ((np.int64(1) << 52) - 1)
    special = field == 0x7FF
    flag = (NAN if frac != 0 else (NEG_INF if sgn != 0 else POS_INF)) if special else 0
    mag = frac | ((np.int64(1) << 52) if field != 0 else np.int64(0))
    A = np.int64(0) if special else (mag ^ sgn) - sgn
    E = max(field, np.int64(1)) - 1075 + ((1 << (eb - 1)) - 1) + m
    r = _readout_lane64(E, A, flag, eb, m, True)
    zero = sgn & (1 << (eb + m))
    return zero if (A == 0) & (flag == 0) else r


@_jit
def doubles_to_format(x, exponent_bits, fraction_bits, out):
    """float64 -> format bits, round to nearest even (NaN stays NaN)."""
    eb, m = exponent_bits, fraction_bits
    if _vector_format(eb, m):
        for j in range(x.shape[0]):
            out[j] = _double_to_format_lane(x[j], eb, m)
    else:
        scalar_doubles_to_format(x, eb, m, out)
