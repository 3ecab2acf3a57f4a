"""SwitchML's fixed-point baseline: the host-side float <-> int32 conversion.

Anchored on SwitchML's ``cpu_exponent_quantizer`` (see docs/numerics.md,
section 6): per block of ``block_size`` elements (one packet's payload) each
worker sends its local exponent e (frexp exponent of the block's max |x|,
so 2^e > max|x|); the switch returns e_max = max over workers; every worker
scales by

    f = INT32_MAX / (K * 2^e_max)           (float64, correctly rounded)
    q = round_half_even(x * f)              (product rounded to float64)

so that the K-way int32 sum cannot overflow; the switch adds the q; hosts
compute y = sum / f in float64 and round once (to nearest even) to the
format. This is the per-element host work FPISA removes.

Why the sum cannot overflow: |x| < 2^e_max, so |x * f| < INT32_MAX / K by at
least INT32_MAX / K * 2^-p (p = 24 for fp32); with r = INT32_MAX mod K,
the K-way sum stays below 2^31 while r - K/2 < INT32_MAX * 2^-p, which holds
for every K <= 256 (docs/numerics.md, section 6 has the proof; the tests
check every K at every binade).
"""

from __future__ import annotations

import numpy as np

from .codec import doubles_to_bits, from_bits
from .formats import Format, get_format

__all__ = [
    "INT32_MAX",
    "EMPTY_BLOCK_EXPONENT",
    "MAX_WORKERS",
    "block_exponents",
    "quantize",
    "dequantize",
    "scale_factors",
]

INT32_MAX = 2**31 - 1
#: exponent of an all-zero block: below every frexp exponent of fp32/fp16/bf16
#: values (the smallest is -148, of the smallest fp32 subnormal)
EMPTY_BLOCK_EXPONENT = -150
#: the no-overflow argument above holds up to this many workers
MAX_WORKERS = 256


def _as_double(values_bits, fmt: Format) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        x = from_bits(values_bits, fmt).astype(np.float64)  # exact widening
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(
            f"switchml mode cannot aggregate Inf/NaN ({bad} non-finite values): "
            "SwitchML's int32 fixed point has no encoding for them"
        )
    return x


def check_block_size(block_size) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    return int(block_size)


def _blocks(n: int, block_size: int) -> int:
    return -(-n // check_block_size(block_size))


def block_exponents(values_bits, fmt: str | Format = "fp32", block_size: int = 64) -> np.ndarray:
    """One worker's local exponent per block of ``block_size`` elements."""
    fmt = get_format(fmt)
    x = np.abs(_as_double(np.asarray(values_bits).ravel(), fmt))
    nblocks = _blocks(x.size, block_size)
    padded = np.zeros(nblocks * block_size)
    padded[: x.size] = x
    block_max = padded.reshape(nblocks, block_size).max(axis=1)
    _, exponents = np.frexp(block_max)
    exponents = exponents.astype(np.int32)
    exponents[block_max == 0] = EMPTY_BLOCK_EXPONENT
    return exponents


def scale_factors(max_exponents, num_workers: int) -> np.ndarray:
    """f = INT32_MAX / (K * 2^e_max) per block, in float64."""
    if not 1 <= num_workers <= MAX_WORKERS:
        raise ValueError(f"switchml supports 1..{MAX_WORKERS} workers, got {num_workers}")
    e = np.asarray(max_exponents, dtype=np.int64)
    # K * 2^e is exact in float64, so the division is the one rounding
    return np.float64(INT32_MAX) / np.ldexp(np.float64(num_workers), e)


def quantize(values_bits, fmt: str | Format, max_exponents, num_workers: int,
             block_size: int = 64) -> np.ndarray:
    """A worker's values -> int32 to send, given the blocks' max exponents."""
    fmt = get_format(fmt)
    x = _as_double(np.asarray(values_bits).ravel(), fmt)
    f = np.repeat(scale_factors(max_exponents, num_workers), check_block_size(block_size))[: x.size]
    if f.size != x.size:
        raise ValueError(f"{np.size(max_exponents)} block exponents do not cover {x.size} values")
    return np.rint(x * f).astype(np.int32)


def dequantize(int_sums, fmt: str | Format, max_exponents, num_workers: int,
               block_size: int = 64) -> np.ndarray:
    """The switch's int32 sums -> bits of ``fmt`` (one rounding, to nearest even)."""
    fmt = get_format(fmt)
    s = np.asarray(int_sums, dtype=np.int32).ravel().astype(np.float64)
    f = np.repeat(scale_factors(max_exponents, num_workers), check_block_size(block_size))[: s.size]
    if f.size != s.size:
        raise ValueError(f"{np.size(max_exponents)} block exponents do not cover {s.size} sums")
    return doubles_to_bits(s / f, fmt)
