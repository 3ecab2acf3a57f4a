"""Conversions between floats, IEEE bit patterns and FPISA register pairs.

``encode`` is the switch's extract step (section 1 of docs/numerics.md);
``normalize`` (alias ``decode``) is its read-out (section 4).
"""

from __future__ import annotations

import numpy as np

from . import _kernels as K
from .formats import Format, get_format, get_rounding, Rounding

__all__ = ["to_bits", "from_bits", "encode", "normalize", "decode", "renormalize"]


def to_bits(values, fmt: str | Format = "fp32") -> np.ndarray:
    """Float values (or bit patterns already) -> bit patterns of ``fmt``.

    float32 for fp32 and float16 for fp16 are reinterpreted, not rounded; a
    bit-pattern array of the format's unsigned dtype is returned as is. Any
    other dtype is an error: silently rounding a float64 array would hide
    which values were actually aggregated.
    """
    fmt = get_format(fmt)
    arr = np.asarray(values)
    if arr.dtype == np.dtype(fmt.bits_dtype):
        return arr
    if fmt.float_dtype is not None and arr.dtype == np.dtype(fmt.float_dtype):
        return arr.view(fmt.bits_dtype)
    expected = [np.dtype(fmt.bits_dtype).name]
    if fmt.float_dtype is not None:
        expected.insert(0, np.dtype(fmt.float_dtype).name)
    raise ValueError(
        f"values of dtype {arr.dtype} do not match fmt={fmt.name!r}: expected "
        f"{' or '.join(expected)} (convert explicitly, e.g. .astype(np.float32))"
    )


def from_bits(bits, fmt: str | Format = "fp32") -> np.ndarray:
    """Bit patterns -> floats (bf16 widens exactly to float32: numpy has no bf16)."""
    fmt = get_format(fmt)
    bits = np.asarray(bits, dtype=fmt.bits_dtype)
    if fmt.float_dtype is not None:
        return bits.view(fmt.float_dtype)
    if bits.ndim == 0 or fmt.exponent_bits != 8 or fmt.fraction_bits != 7:
        return (bits.astype(np.uint32) << 16).view(np.float32)
    flat = np.ascontiguousarray(bits).reshape(-1)
    out = np.empty(flat.shape, np.float32)
    K.bf16_to_float32(flat, out)  # one vectorized pass, no temporaries
    return out.reshape(bits.shape)


def encode(bits, fmt: str | Format = "fp32"):
    """IEEE bits -> (exponent int64, signed mantissa int64, special flags uint8)."""
    fmt = get_format(fmt)
    bits = np.ascontiguousarray(to_bits(bits, fmt)).ravel()
    E = np.empty(bits.shape, np.int64)
    S = np.empty(bits.shape, np.int64)
    flags = np.empty(bits.shape, np.uint8)
    K.extract_array(bits, fmt.exponent_bits, fmt.fraction_bits, E, S, flags)
    return E, S, flags


def normalize(exponent_register, mantissa_register, fmt: str | Format = "fp32",
              rounding: str | Rounding = "rz", element_flags=None) -> np.ndarray:
    """(exponent, mantissa) register pairs -> IEEE bits of ``fmt``."""
    fmt = get_format(fmt)
    nearest = get_rounding(rounding) is Rounding.NEAREST_EVEN
    E = np.ascontiguousarray(exponent_register, dtype=np.int64).ravel()
    A = np.ascontiguousarray(mantissa_register, dtype=np.int64).ravel()
    if E.shape != A.shape:
        raise ValueError(f"exponent {E.shape} and mantissa {A.shape} registers differ in shape")
    if element_flags is None:
        flags = np.zeros(E.shape, np.uint8)
    else:
        flags = np.ascontiguousarray(element_flags, dtype=np.uint8).ravel()
        if flags.shape != E.shape:
            raise ValueError("element_flags must match the registers' shape")
    out = np.empty(E.shape, fmt.bits_dtype)
    K.normalize_array(E, A, flags, fmt.exponent_bits, fmt.fraction_bits, nearest, out)
    return out


decode = normalize


def renormalize(switch_bits, exponent_register, mantissa_register,
                fmt: str | Format = "fp32", rounding: str | Rounding = "rne") -> np.ndarray:
    """Host-side normalization of raw registers a switch sent with its result.

    The switch's own (rz) read-out already encodes Inf/NaN from special
    inputs; those elements are kept, the rest are normalized again from the
    raw registers with ``rounding`` (the point: ``rne``, which a switch's
    truncating shifters cannot do).
    """
    fmt = get_format(fmt)
    switch_bits = np.asarray(switch_bits, dtype=fmt.bits_dtype)
    out = normalize(exponent_register, mantissa_register, fmt, rounding)
    exponent_field = (switch_bits.astype(np.int64) >> fmt.fraction_bits) & fmt.exponent_all_ones
    non_finite = exponent_field == fmt.exponent_all_ones
    out[non_finite] = switch_bits[non_finite]
    return out


def doubles_to_bits(x, fmt: str | Format) -> np.ndarray:
    """float64 -> bits of ``fmt``, round to nearest even (one rounding)."""
    fmt = get_format(fmt)
    x = np.ascontiguousarray(x, dtype=np.float64).ravel()
    out = np.empty(x.shape, fmt.bits_dtype)
    K.doubles_to_format(x, fmt.exponent_bits, fmt.fraction_bits, out)
    return out
