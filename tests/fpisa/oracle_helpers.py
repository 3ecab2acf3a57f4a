"""Helpers shared by the numerics tests: run the oracle on numpy arrays,
compare bit patterns with a readable failure message, generate inputs."""

from __future__ import annotations

import numpy as np

from fpisa import _oracle
from fpisa.formats import FORMATS, get_format

FORMAT_NAMES = list(FORMATS)
FPISA_MODES = ["fpisa", "fpisa-a"]
ROUNDINGS = ["rz", "rne"]


def bits_dtype(fmt: str):
    return get_format(fmt).bits_dtype


def oracle_aggregate(values_bits: np.ndarray, mode: str, **kwargs) -> _oracle.OracleResult:
    """Oracle on a (K, n) bit array; the result fields become numpy arrays."""
    fmt = get_format(kwargs.get("fmt", "fp32"))
    order = kwargs.pop("order", None)
    if order is not None:
        order = np.asarray(order).tolist()
    out = _oracle.aggregate(
        [[int(b) for b in row] for row in values_bits], mode, order=order, **kwargs
    )
    out.result = np.array(out.result, dtype=fmt.bits_dtype)
    return out


def nan_to_canonical(bits: np.ndarray, fmt: str) -> np.ndarray:
    """Every NaN pattern replaced by the canonical quiet NaN."""
    f = get_format(fmt)
    bits = np.asarray(bits).astype(np.uint64)
    exponent = (bits >> np.uint64(f.fraction_bits)) & np.uint64(f.exponent_all_ones)
    fraction = bits & np.uint64((1 << f.fraction_bits) - 1)
    nan = (exponent == f.exponent_all_ones) & (fraction != 0)
    return np.where(nan, np.uint64(_oracle.quiet_nan(f)), bits).astype(f.bits_dtype)


def assert_bits_equal(got, expected, fmt: str, inputs=None, what: str = "",
                      any_nan: bool = False) -> None:
    """Bitwise equality; on failure list the first mismatches in hex.

    any_nan: every NaN equals every NaN (mode float32 only: its NaN payload
    is whatever the host's FPU produces, see docs/numerics.md).
    """
    f = get_format(fmt)
    got = np.asarray(got)
    expected = np.asarray(expected)
    if any_nan:
        got, expected = nan_to_canonical(got, fmt), nan_to_canonical(expected, fmt)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    bad = np.flatnonzero(got.astype(np.uint64) != expected.astype(np.uint64))
    if bad.size:
        digits = f.storage_bits // 4
        lines = []
        for j in bad[:8]:
            line = f"  element {j}: got 0x{int(got.flat[j]):0{digits}x} expected 0x{int(expected.flat[j]):0{digits}x}"
            if inputs is not None:
                column = np.asarray(inputs)[:, j]
                line += " inputs " + " ".join(f"0x{int(v):0{digits}x}" for v in column)
            lines.append(line)
        raise AssertionError(
            f"{what}: {bad.size} of {got.size} elements differ ({fmt})\n" + "\n".join(lines)
        )


def all_patterns(fmt: str) -> np.ndarray:
    """Every 16-bit pattern (fp16, bf16)."""
    assert get_format(fmt).storage_bits == 16
    return np.arange(1 << 16, dtype=np.uint16)


def is_finite_bits(bits: np.ndarray, fmt: str) -> np.ndarray:
    f = get_format(fmt)
    exponent = (np.asarray(bits).astype(np.uint64) >> np.uint64(f.fraction_bits)) & np.uint64(
        f.exponent_all_ones
    )
    return exponent != f.exponent_all_ones


def make_bits(sign, exponent, fraction, fmt: str) -> np.ndarray:
    f = get_format(fmt)
    sign = np.asarray(sign, dtype=np.uint64)
    exponent = np.asarray(exponent, dtype=np.uint64)
    fraction = np.asarray(fraction, dtype=np.uint64)
    bits = (sign << np.uint64(f.storage_bits - 1)) | (exponent << np.uint64(f.fraction_bits)) | fraction
    return bits.astype(f.bits_dtype)


def clustered_bits(rng: np.random.Generator, fmt: str, shape, spread: int = 12,
                   specials: float = 0.0, subnormals: float = 0.0) -> np.ndarray:
    """Random finite values whose exponents lie within `spread` of a centre, so
    alignment, cancellation and headroom matter; optional specials/subnormals."""
    f = get_format(fmt)
    top = f.exponent_all_ones - 1
    centre = int(rng.integers(1, top + 1))
    exponent = np.clip(centre + rng.integers(-spread, spread + 1, size=shape), 1, top)
    fraction = rng.integers(0, 1 << f.fraction_bits, size=shape)
    sign = rng.integers(0, 2, size=shape)
    if subnormals:
        exponent = np.where(rng.random(shape) < subnormals, 0, exponent)
    if specials:
        special = rng.random(shape) < specials
        exponent = np.where(special, f.exponent_all_ones, exponent)
        # half of them NaN (nonzero fraction), half Inf
        fraction = np.where(special & (rng.random(shape) < 0.5), 0, fraction | special)
    return make_bits(sign, exponent, fraction, fmt)
