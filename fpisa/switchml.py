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

The public functions run compiled, vectorized kernels
(:mod:`fpisa._host_kernels`), bit-identical to the numpy formulas kept here
as ``_reference_*`` (tests/fpisa/test_host_kernels.py and
test_switchml_fused.py compare them).
:func:`quantize_to_wire` and :func:`dequantize_from_wire` are what a host
really runs: SwitchML sends its int32 big-endian, so the byte swap is fused
into the same pass.
"""

from __future__ import annotations

import numpy as np

from . import _host_kernels as HK
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
    "quantize_to_wire",
    "dequantize_from_wire",
    "sum_workers",
]

INT32_MAX = 2**31 - 1
#: exponent of an all-zero block: below every frexp exponent of fp32/fp16/bf16
#: values (the smallest is -148, of the smallest fp32 subnormal)
EMPTY_BLOCK_EXPONENT = -150
#: the no-overflow argument above holds up to this many workers
MAX_WORKERS = 256

assert HK.EMPTY_BLOCK_EXPONENT == EMPTY_BLOCK_EXPONENT and HK.INT32_MAX == INT32_MAX


def check_block_size(block_size) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    return int(block_size)


def _blocks(n: int, block_size: int) -> int:
    return -(-n // check_block_size(block_size))


def _check_workers(num_workers) -> None:
    if not 1 <= num_workers <= MAX_WORKERS:
        raise ValueError(f"switchml supports 1..{MAX_WORKERS} workers, got {num_workers}")


def _non_finite_error(bits: np.ndarray, kind: int) -> ValueError:
    bad = int(HK.count_non_finite(bits, kind))
    return ValueError(
        f"switchml mode cannot aggregate Inf/NaN ({bad} non-finite values): "
        "SwitchML's int32 fixed point has no encoding for them"
    )


def _kind(fmt: Format) -> int:
    kinds = {(8, 23): HK.KIND_FP32, (5, 10): HK.KIND_FP16, (8, 7): HK.KIND_BF16}
    try:
        return kinds[fmt.exponent_bits, fmt.fraction_bits]
    except KeyError:
        raise ValueError(f"switchml handles fp32, fp16 and bf16, not {fmt.name!r}") from None


def _bits(values_bits, fmt: Format) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values_bits).ravel(), dtype=fmt.bits_dtype)


def _scales(max_exponents, num_workers: int, n: int, block_size: int, what: str) -> np.ndarray:
    """Validated per-block scales for n values (only the blocks n needs)."""
    _check_workers(num_workers)
    block_size = check_block_size(block_size)
    e = np.asarray(max_exponents, dtype=np.int64).ravel()
    nblocks = _blocks(n, block_size)
    if e.size < nblocks:
        raise ValueError(f"{e.size} block exponents do not cover {n} {what}")
    scales = np.empty(nblocks, np.float64)
    HK.scale_factors(np.ascontiguousarray(e[:nblocks]), num_workers, scales)
    return scales


def block_exponents(values_bits, fmt: str | Format = "fp32", block_size: int = 64) -> np.ndarray:
    """One worker's local exponent per block of ``block_size`` elements (one pass)."""
    fmt = get_format(fmt)
    bits = _bits(values_bits, fmt)
    kind = _kind(fmt)
    out = np.empty(_blocks(bits.size, block_size), np.int32)
    if not HK.block_exponents(bits, kind, int(block_size), out):
        raise _non_finite_error(bits, kind)
    return out


def scale_factors(max_exponents, num_workers: int) -> np.ndarray:
    """f = INT32_MAX / (K * 2^e_max) per block, in float64."""
    _check_workers(num_workers)
    e = np.asarray(max_exponents, dtype=np.int64)
    out = np.empty(e.size, np.float64)
    HK.scale_factors(np.ascontiguousarray(e.ravel()), num_workers, out)
    return out.reshape(e.shape)


def _quantize_into(values_bits, fmt, max_exponents, num_workers, block_size, out_of, swap):
    fmt = get_format(fmt)
    bits = _bits(values_bits, fmt)
    scales = _scales(max_exponents, num_workers, bits.size, block_size, "values")
    kind = _kind(fmt)
    out = out_of(bits.size)
    status = HK.quantize(bits, kind, scales, int(block_size), out, swap)
    _raise_for(status, bits, kind)
    return out


def _raise_for(status: int, bits: np.ndarray, kind: int) -> None:
    if status == 1:
        raise _non_finite_error(bits.ravel(), kind)
    if status == 2:
        raise ValueError("quantized values exceed int32: max_exponents must be at least "
                         "every block's exponent (the max over the workers' block_exponents)")


def quantize(values_bits, fmt: str | Format, max_exponents, num_workers: int,
             block_size: int = 64) -> np.ndarray:
    """A worker's values -> int32 to send, given the blocks' max exponents.

    ValueError for Inf/NaN, K outside 1..256, too few block exponents, and
    (which the numpy formula did not check) max exponents below a block's own,
    for which q would not fit int32.
    """
    return _quantize_into(values_bits, fmt, max_exponents, num_workers, block_size,
                          lambda n: np.empty(n, np.int32), False)


def dequantize(int_sums, fmt: str | Format, max_exponents, num_workers: int,
               block_size: int = 64) -> np.ndarray:
    """The switch's int32 sums -> bits of ``fmt`` (one rounding, to nearest even)."""
    fmt = get_format(fmt)
    s = np.ascontiguousarray(np.asarray(int_sums, dtype=np.int32).ravel())
    scales = _scales(max_exponents, num_workers, s.size, block_size, "sums")
    out = np.empty(s.size, fmt.bits_dtype)
    HK.dequantize(s, _kind(fmt), scales, int(block_size), out, False)
    return out


def _int32_view(buffer, n: int | None, writeable: bool, what: str) -> np.ndarray:
    """A native int32 view on a contiguous buffer of big-endian int32s."""
    try:
        view = memoryview(buffer)
    except TypeError:
        raise ValueError(f"{what} must be a buffer (numpy array, bytearray, ...), "
                         f"got {type(buffer).__name__}") from None
    if not view.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")
    if writeable and view.readonly:
        raise ValueError(f"{what} is read-only")
    if view.nbytes % 4 or (n is not None and view.nbytes != 4 * n):
        expected = f"{4 * n}" if n is not None else "a multiple of 4"
        raise ValueError(f"{what} has {view.nbytes} bytes, expected {expected}")
    return np.frombuffer(view.cast("B"), dtype=np.int32)


def quantize_to_wire(values_bits, fmt: str | Format, max_exponents, num_workers: int,
                     block_size: int = 64, out_be_int32_bytes=None):
    """quantize + byte swap in one pass: the int32 big-endian packet payload.

    out_be_int32_bytes: a writeable C-contiguous buffer of exactly 4 * n bytes
    (a uint8 slice of a packet buffer, a ``np.empty(n, '>i4')``, a
    bytearray; any alignment), or None to allocate a uint8 array. Returns
    that buffer. Same q as :func:`quantize` and the same errors; after an
    error the buffer's content is unspecified.
    """
    fmt = get_format(fmt)
    bits = _bits(values_bits, fmt)
    if out_be_int32_bytes is None:
        out_be_int32_bytes = np.empty(4 * bits.size, np.uint8)
    target = _int32_view(out_be_int32_bytes, bits.size, True, "out_be_int32_bytes")
    _quantize_into(bits, fmt, max_exponents, num_workers, block_size, lambda _n: target, True)
    return out_be_int32_bytes


def dequantize_from_wire(be_int32_bytes, fmt: str | Format, max_exponents, num_workers: int,
                         block_size: int = 64, out=None) -> np.ndarray:
    """Big-endian int32 sums as received (a buffer of 4 * n bytes) -> bits of
    ``fmt``: byte swap + dequantize in one pass, same bits as
    :func:`dequantize`. out: an optional C-contiguous array of n elements of
    the format's bits dtype to write into (returned)."""
    fmt = get_format(fmt)
    s = _int32_view(be_int32_bytes, None, False, "be_int32_bytes")
    scales = _scales(max_exponents, num_workers, s.size, block_size, "sums")
    if out is None:
        out = np.empty(s.size, fmt.bits_dtype)
    elif (not isinstance(out, np.ndarray) or out.dtype != np.dtype(fmt.bits_dtype)
          or out.shape != (s.size,) or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"out must be a writeable contiguous {np.dtype(fmt.bits_dtype)} array "
                         f"of shape ({s.size},)")
    HK.dequantize(s, _kind(fmt), scales, int(block_size), out, True)
    return out


def sum_workers(bits, fmt: str | Format, block_size: int = 64) -> np.ndarray:
    """SwitchML end to end on (K workers, n) bits -> the bits every worker gets.

    One compiled pass, tile by tile (:func:`fpisa._host_kernels.sum_workers`):
    e_max per block over all workers, each worker's q summed as the switch
    does (int32), dequantized once. The kernel also checks the premise of
    the no-overflow argument, K * max |q| <= INT32_MAX per block, so the
    int32 sum is exact.
    """
    fmt = get_format(fmt)
    block_size = check_block_size(block_size)
    bits = np.ascontiguousarray(bits, dtype=fmt.bits_dtype)
    workers, n = bits.shape
    if workers > MAX_WORKERS:
        raise ValueError(f"switchml supports at most {MAX_WORKERS} workers, got {workers}")
    _check_workers(workers)
    kind = _kind(fmt)
    out = np.empty(n, fmt.bits_dtype)
    tile_blocks = HK.sum_tile_blocks(workers, block_size, bits.itemsize)
    status = HK.sum_workers(bits, kind, block_size, tile_blocks, out)
    if status == 1:
        raise _non_finite_error(bits.ravel(), kind)
    if status == 2:  # cannot happen for K <= 256 (module docstring)
        raise AssertionError("switchml: K * |q| exceeds INT32_MAX, the int32 sum may wrap")
    return out


# ---------------------------------------------------- the numpy formulas (reference)
# The implementation before the kernels, kept verbatim as the reference the
# kernels are tested against (and the "before" of benchmarks/host_conversion.py).

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


def _reference_block_exponents(values_bits, fmt: str | Format = "fp32", block_size: int = 64) -> np.ndarray:
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


def _reference_scale_factors(max_exponents, num_workers: int) -> np.ndarray:
    _check_workers(num_workers)
    e = np.asarray(max_exponents, dtype=np.int64)
    # K * 2^e is exact in float64, so the division is the one rounding
    return np.float64(INT32_MAX) / np.ldexp(np.float64(num_workers), e)


def _reference_quantize(values_bits, fmt: str | Format, max_exponents, num_workers: int,
                        block_size: int = 64) -> np.ndarray:
    fmt = get_format(fmt)
    x = _as_double(np.asarray(values_bits).ravel(), fmt)
    f = np.repeat(_reference_scale_factors(max_exponents, num_workers),
                  check_block_size(block_size))[: x.size]
    if f.size != x.size:
        raise ValueError(f"{np.size(max_exponents)} block exponents do not cover {x.size} values")
    return np.rint(x * f).astype(np.int32)


def _reference_dequantize(int_sums, fmt: str | Format, max_exponents, num_workers: int,
                          block_size: int = 64) -> np.ndarray:
    fmt = get_format(fmt)
    s = np.asarray(int_sums, dtype=np.int32).ravel().astype(np.float64)
    f = np.repeat(_reference_scale_factors(max_exponents, num_workers),
                  check_block_size(block_size))[: s.size]
    if f.size != s.size:
        raise ValueError(f"{np.size(max_exponents)} block exponents do not cover {s.size} sums")
    return doubles_to_bits(s / f, fmt)
