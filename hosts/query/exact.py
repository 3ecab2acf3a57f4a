"""Correctly rounded per-group SUM and AVG: the reference the query's
results are measured against (in ULPs of the format).

Exact, not float64: every value of a binary format is an integer M times
2^s times the format's smallest subnormal u; per (group, s) the integer
mantissas are summed exactly (float64 bincount of integers below 2^24 is
exact up to 2^29 rows per bin), the bins are combined in Python integers,
and the rational result is rounded to the format once, to nearest even.
"""

from __future__ import annotations

import numpy as np

from fpisa.formats import Format, get_format

__all__ = ["round_rational", "exact_group_sums", "exact_sum_bits", "exact_avg_bits"]


def round_rational(num: int, den: int, fmt: str | Format) -> int:
    """num/den (den > 0) -> the bit pattern of ``fmt`` nearest to it (RNE;
    beyond the largest finite value: +-Inf; zero: +0)."""
    fmt = get_format(fmt)
    m, bias, S = fmt.fraction_bits, fmt.bias, fmt.storage_bits
    if den <= 0:
        raise ValueError("den must be > 0")
    if num == 0:
        return 0
    sign = 1 if num < 0 else 0
    num = abs(num)
    e = num.bit_length() - den.bit_length()  # 2^(e-1) < num/den < 2^(e+1)
    if (num << max(0, -e)) < (den << max(0, e)):  # num/den < 2^e
        e -= 1
    # now 2^e <= num/den < 2^(e+1)
    e = max(e, 1 - bias)
    shift = m - e
    n2, d2 = (num << shift, den) if shift >= 0 else (num, den << -shift)
    q, r = divmod(n2, d2)
    if 2 * r > d2 or (2 * r == d2 and q & 1):
        q += 1
    if q >= 1 << (m + 1):  # rounded up to the next binade (q == 2^(m+1) exactly)
        q >>= 1
        e += 1
    if e > bias:
        return (sign << (S - 1)) | (fmt.exponent_all_ones << m)
    if q < 1 << m:  # subnormal
        E, F = 0, q
    else:
        E, F = e + bias, q - (1 << m)
    return (sign << (S - 1)) | (E << m) | F


def _decompose(bits: np.ndarray, fmt: Format):
    b = np.asarray(bits).astype(np.int64)
    m = fmt.fraction_bits
    S = fmt.storage_bits
    E = (b >> m) & fmt.exponent_all_ones
    F = b & ((1 << m) - 1)
    neg = (b >> (S - 1)) & 1
    special = E == fmt.exponent_all_ones
    M = np.where(E == 0, F, F | (1 << m))
    s = np.where(E == 0, 0, E - 1)
    signed = np.where(neg == 1, -M, M)
    return signed, s, special, F != 0, neg


def exact_group_sums(group: np.ndarray, num_groups: int, bits: np.ndarray, fmt: str | Format):
    """Per group: (integer N with sum = N * u, special) where u is the
    format's smallest subnormal and special is None, '+inf', '-inf' or 'nan'."""
    fmt = get_format(fmt)
    signed, s, special, frac, neg = _decompose(bits, fmt)
    levels = int(fmt.exponent_all_ones)  # s in 0 .. all_ones - 2 for finite values
    ok = ~special
    flat = group[ok] * levels + s[ok]
    bins = np.bincount(flat, weights=signed[ok].astype(np.float64), minlength=num_groups * levels)
    bins = bins.reshape(num_groups, levels)
    out = []
    nan = np.zeros(num_groups, np.bool_)
    pinf = np.zeros(num_groups, np.bool_)
    ninf = np.zeros(num_groups, np.bool_)
    if special.any():
        g = group[special]
        np.logical_or.at(nan, g[frac[special]], True)
        np.logical_or.at(pinf, g[~frac[special] & (neg[special] == 0)], True)
        np.logical_or.at(ninf, g[~frac[special] & (neg[special] == 1)], True)
    for j in range(num_groups):
        row = bins[j]
        nz = np.flatnonzero(row)
        N = 0
        for k in nz.tolist():
            N += int(row[k]) << k
        sp = None
        if nan[j] or (pinf[j] and ninf[j]):
            sp = "nan"
        elif pinf[j]:
            sp = "+inf"
        elif ninf[j]:
            sp = "-inf"
        out.append((N, sp))
    return out


def _special_bits(sp: str, fmt: Format) -> int:
    m, S = fmt.fraction_bits, fmt.storage_bits
    inf = fmt.exponent_all_ones << m
    return {"+inf": inf, "-inf": inf | (1 << (S - 1)), "nan": inf | (1 << (m - 1))}[sp]


def _unit_shift(fmt: Format) -> int:
    """u = 2^-(bias + m - 1)."""
    return fmt.bias + fmt.fraction_bits - 1


def exact_sum_bits(sums, fmt: str | Format) -> np.ndarray:
    """exact_group_sums -> correctly rounded bit patterns."""
    fmt = get_format(fmt)
    d = 1 << _unit_shift(fmt)
    return np.array([_special_bits(sp, fmt) if sp else round_rational(N, d, fmt) for N, sp in sums],
                    dtype=fmt.bits_dtype)


def exact_avg_bits(sums, counts: np.ndarray, fmt: str | Format) -> np.ndarray:
    """The correctly rounded sum / count of each group."""
    fmt = get_format(fmt)
    d = 1 << _unit_shift(fmt)
    return np.array([_special_bits(sp, fmt) if sp else round_rational(N, d * int(c), fmt)
                     for (N, sp), c in zip(sums, counts)], dtype=fmt.bits_dtype)
