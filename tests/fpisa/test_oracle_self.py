"""The oracle itself, checked against references that share no code with it:
numpy's IEEE float arithmetic and a truncation written with Fractions."""

from fractions import Fraction

import numpy as np
import pytest

from fpisa import _oracle
from fpisa.formats import RegisterLayout, get_format
from oracle_helpers import FORMAT_NAMES, nan_to_canonical


def truncate_to_format(value: Fraction, fmt) -> int:
    """Round toward zero with the project's overflow rule (E' >= all-ones -> Inf)."""
    f = get_format(fmt)
    sign, magnitude = int(value < 0), abs(value)
    unit = Fraction(2) ** (1 - f.bias - f.fraction_bits)  # smallest subnormal
    if magnitude < Fraction(2) ** (1 - f.bias):  # subnormal range
        return _oracle.pack(sign, 0, int(magnitude / unit), f)
    exponent = 1 - f.bias
    while Fraction(2) ** (exponent + 1) <= magnitude:
        exponent += 1
    if exponent + f.bias >= f.exponent_all_ones:
        return _oracle.infinity(sign, f)
    significand = int(magnitude / Fraction(2) ** (exponent - f.fraction_bits))
    return _oracle.pack(sign, exponent + f.bias, significand - (1 << f.fraction_bits), f)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_normalize_is_one_rounding_of_the_register_value(fmt):
    f = get_format(fmt)
    rng = np.random.default_rng(7)
    for _ in range(3000):
        width = int(rng.integers(f.precision + 2, 65))
        layout = RegisterLayout(f, width)
        exponent = int(rng.integers(1, f.exponent_all_ones))
        mantissa = int(rng.integers(layout.register_min, layout.register_max, endpoint=True))
        mantissa >>= int(rng.integers(0, width))  # all magnitudes, not only large ones
        value = Fraction(mantissa) * Fraction(2) ** (exponent - f.bias - f.fraction_bits)
        if mantissa == 0:
            continue
        assert _oracle.normalize(exponent, mantissa, 0, f, "rz") == truncate_to_format(value, f)
        assert _oracle.normalize(exponent, mantissa, 0, f, "rne") == _oracle.round_to_format(value, f)


def test_float32_add_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2**32, 20000, dtype=np.uint32)
    b = rng.integers(0, 2**32, 20000, dtype=np.uint32)
    b[::3] = a[::3] ^ rng.integers(0, 256, a[::3].size, dtype=np.uint32)  # near-cancellation
    b[1::7] = a[1::7] ^ np.uint32(1 << 31)  # exact cancellation
    with np.errstate(all="ignore"):
        expected = (a.view(np.float32) + b.view(np.float32)).view(np.uint32)
    got = np.array([_oracle.float32_add(int(x), int(y)) for x, y in zip(a, b)], np.uint32)
    np.testing.assert_array_equal(got, nan_to_canonical(expected, "fp32"))


def test_fp16_conversions_match_numpy():
    fp16 = get_format("fp16")
    every = np.arange(1 << 16, dtype=np.uint16)
    widened = every.view(np.float16).astype(np.float32).view(np.uint32)
    got = np.array([_oracle.widen_to_float32(int(x), fp16) for x in every], np.uint32)
    np.testing.assert_array_equal(got, nan_to_canonical(widened, "fp32"))
    rng = np.random.default_rng(2)
    wide = rng.integers(0, 2**32, 20000, dtype=np.uint32)
    with np.errstate(all="ignore"):
        narrowed = wide.view(np.float32).astype(np.float16).view(np.uint16)
    got = np.array([_oracle.narrow_from_float32(int(x), fp16) for x in wide], np.uint16)
    np.testing.assert_array_equal(got, nan_to_canonical(narrowed, "fp16"))


def test_round_to_fp32_matches_numpy_double_to_float():
    rng = np.random.default_rng(3)
    # the whole fp32 range and a bit beyond, subnormals and overflow included
    doubles = rng.standard_normal(20000) * np.exp2(rng.integers(-160, 130, 20000))
    # ties: doubles exactly halfway between neighbouring floats
    below = (rng.standard_normal(4000) * np.exp2(rng.integers(-150, 128, 4000))).astype(np.float32)
    above = np.nextafter(below, np.float32(np.inf))
    doubles[::5] = (below.astype(np.float64) + above.astype(np.float64)) / 2
    doubles = doubles[np.isfinite(doubles)]
    with np.errstate(all="ignore"):
        expected = doubles.astype(np.float32).view(np.uint32)
    got = [_oracle.round_to_format(Fraction(float(x)), get_format("fp32"),
                                   zero_sign=int(np.signbit(x))) for x in doubles]
    np.testing.assert_array_equal(np.array(got, np.uint32), expected)
