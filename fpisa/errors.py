"""Error analysis: how far a result is from the correctly rounded sum.

ULP distance is measured on the format's bit patterns mapped to a
monotonic integer line (so it is exact and counts representable values
between the two, across binades and through zero: -0 and +0 coincide).
"""

from __future__ import annotations

import numpy as np

from .codec import from_bits, to_bits
from .formats import Format, get_format

__all__ = ["ulp_distance", "relative_error", "error_report"]


def _ordinal(bits: np.ndarray, fmt: Format) -> np.ndarray:
    b = bits.astype(np.int64)
    sign_bit = 1 << (fmt.storage_bits - 1)
    magnitude = b & (sign_bit - 1)
    return np.where(b & sign_bit, -magnitude, magnitude)


def _is_nan(bits: np.ndarray, fmt: Format) -> np.ndarray:
    b = bits.astype(np.int64)
    field = (b >> fmt.fraction_bits) & fmt.exponent_all_ones
    return (field == fmt.exponent_all_ones) & ((b & ((1 << fmt.fraction_bits) - 1)) != 0)


def ulp_distance(result, reference, fmt: str | Format = "fp32") -> np.ndarray:
    """|ordinal(result) - ordinal(reference)|; -1 where exactly one is NaN, 0 where both are."""
    fmt = get_format(fmt)
    r = to_bits(result, fmt)
    e = to_bits(reference, fmt)
    dist = np.abs(_ordinal(r, fmt) - _ordinal(e, fmt))
    nan_r, nan_e = _is_nan(r, fmt), _is_nan(e, fmt)
    dist[nan_r & nan_e] = 0
    dist[nan_r ^ nan_e] = -1
    return dist


def relative_error(result, reference, fmt: str | Format = "fp32") -> np.ndarray:
    """|result - reference| / |reference| in float64; 0 where both are 0, inf where only the reference is."""
    fmt = get_format(fmt)
    r = from_bits(to_bits(result, fmt), fmt).astype(np.float64)
    e = from_bits(to_bits(reference, fmt), fmt).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(r - e) / np.abs(e)
    rel[(r == e) | (np.isnan(r) & np.isnan(e))] = 0.0
    return rel


def error_report(result, exact, fmt: str | Format = "fp32") -> dict:
    """Summary statistics of ``result`` against the exact sum (JSON-ready)."""
    fmt = get_format(fmt)
    ulps = ulp_distance(result, exact, fmt)
    finite = ulps >= 0
    u = ulps[finite].astype(np.float64)
    rel = relative_error(result, exact, fmt)
    rel_finite = rel[np.isfinite(rel)]
    n = int(ulps.size)
    return {
        "elements": n,
        "bit_exact_fraction": float(np.count_nonzero(ulps == 0) / n) if n else 1.0,
        "max_ulp": int(u.max()) if u.size else 0,
        "mean_ulp": float(u.mean()) if u.size else 0.0,
        "p99_ulp": float(np.percentile(u, 99)) if u.size else 0.0,
        "max_rel_error": float(rel_finite.max()) if rel_finite.size else 0.0,
        "mean_rel_error": float(rel_finite.mean()) if rel_finite.size else 0.0,
        "nan_mismatches": int(np.count_nonzero(ulps < 0)),
        "infinite_rel_error": int(np.count_nonzero(~np.isfinite(rel))),
    }
