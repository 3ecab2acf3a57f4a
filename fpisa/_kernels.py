"""Numba kernels: the one implementation of FPISA arithmetic on the hot path.

Element functions (``_extract``, ``_acc_fpisa``, ``_acc_fpisa_a``,
``_readout``) are shared by the whole-array loops used by
:func:`fpisa.aggregate` and the per-row loops used by the switch's
:class:`fpisa.registers.SlotRegisters`, so the emulator and the numerics
reference run literally the same code. ``fpisa._oracle`` is the independent
pure-Python implementation the tests compare against.

Integer discipline: everything is int64. numba turns uint64 (+) int64 into
float64, so no uint64 appears in arithmetic; the one value that does not fit
int64, |A| = 2^63 for a 64-bit register, is handled explicitly.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros

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
    """(a + b wrapped to W bits, overflow direction: +1, -1 or 0)."""
    if register_bits == 64:
        r = a + b  # wraps in int64, like the hardware
        if a >= 0 and b >= 0 and r < 0:
            return r, 1
        if a < 0 and b < 0 and r >= 0:
            return r, -1
        return r, 0
    r = a + b  # exact: two values below 2^62 in magnitude
    lo = -(1 << (register_bits - 1))
    over = np.int64(r > -lo - 1) - np.int64(r < lo)
    return ((r - lo) & ((1 << register_bits) - 1)) + lo, over


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


# ---------------------------------------------------------------- whole arrays


#: elements per tile: a tile's registers stay in L1 while all K rows stream by
_TILE = 512


@_jit
def aggregate_fpisa(bits, order, exponent_bits, fraction_bits, register_bits, nearest_even,
                    out, E_out, A_out, flags_out):
    """bits (K, n); order (n or 1, K): arrival order of workers per element.

    One order for all elements: tiles of elements, worker-major inside a tile
    (sequential reads of each worker's row). Per-element orders: element-major.
    Both run the same element function, so they agree by construction.
    """
    K, n = bits.shape
    if order.shape[0] == 1:
        for j0 in range(0, n, _TILE):
            j1 = min(n, j0 + _TILE)
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
def aggregate_fpisa_a(bits, order, exponent_bits, fraction_bits, register_bits, nearest_even,
                      out, E_out, A_out, flags_out, overwrites_out):
    """As :func:`aggregate_fpisa`, for the Tofino-class rule (section 3)."""
    K, n = bits.shape
    if order.shape[0] == 1:
        for j0 in range(0, n, _TILE):
            j1 = min(n, j0 + _TILE)
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
def normalize_array(E, A, flags, exponent_bits, fraction_bits, nearest_even, out):
    for j in range(E.shape[0]):
        out[j] = _readout(E[j], A[j], flags[j], exponent_bits, fraction_bits, nearest_even)


@_jit
def extract_array(bits, exponent_bits, fraction_bits, E, S, flags):
    for j in range(bits.shape[0]):
        e, s, special, _ = _extract(bits[j], exponent_bits, fraction_bits)
        E[j] = e
        S[j] = s
        flags[j] = special


# ---------------------------------------------------------------- switch rows


@_jit
def accumulate_row_fpisa(E, A, flags, bits, first, exponent_bits, fraction_bits, register_bits):
    for j in range(bits.shape[0]):
        E[j], A[j], flags[j] = _acc_fpisa(E[j], A[j], flags[j], bits[j], first,
                                          exponent_bits, fraction_bits, register_bits)


@_jit
def accumulate_row_fpisa_a(E, A, flags, overwrites, bits, first, exponent_bits, fraction_bits,
                           register_bits):
    for j in range(bits.shape[0]):
        if first:
            overwrites[j] = 0
        E[j], A[j], flags[j], ow = _acc_fpisa_a(E[j], A[j], flags[j], bits[j], first,
                                                exponent_bits, fraction_bits, register_bits)
        overwrites[j] += ow


@_jit
def accumulate_row_int_sum(A, values, first):
    """SwitchML's int32 add: wraps at 32 bits like the switch's ALU."""
    for j in range(values.shape[0]):
        if first:
            A[j] = values[j]
        else:
            r = (A[j] + np.int64(values[j]) + (1 << 31)) & 0xFFFFFFFF
            A[j] = r - (1 << 31)


@_jit
def accumulate_row_int_max(A, values, first):
    """SwitchML's block exponent exchange: int32 max."""
    for j in range(values.shape[0]):
        if first or np.int64(values[j]) > A[j]:
            A[j] = values[j]


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
def doubles_to_format(x, exponent_bits, fraction_bits, out):
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
