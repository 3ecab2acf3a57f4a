"""encode (the extract step) and normalize (the read-out): encode agrees with
the oracle and normalize(encode(x)) == x for every finite value (the spec's
+0 for A == 0 makes -0 come back as +0)."""

import numpy as np
import pytest

import fpisa
from fpisa import _oracle
from fpisa.formats import get_format
from oracle_helpers import all_patterns, assert_bits_equal, is_finite_bits


def patterns(fmt: str) -> np.ndarray:
    if fmt == "fp32":
        rng = np.random.default_rng(9)
        edges = np.array([0, 1, 0x7FFFFF, 0x800000, 0x7F7FFFFF, 0x3F800000,
                          0x80000000, 0x80000001, 0xFF7FFFFF, 0x7F800000,
                          0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF], np.uint32)
        return np.concatenate([edges, rng.integers(0, 2**32, 300_000, dtype=np.uint32)])
    return all_patterns(fmt)


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16"])
def test_encode_matches_the_oracle_extract(fmt):
    f = get_format(fmt)
    bits = patterns(fmt)
    sample = bits if fmt != "fp32" else bits[:30_000]
    exponent, mantissa, flags = fpisa.encode(sample, fmt)
    expected = np.array([_oracle.extract(int(b), f) for b in sample], np.int64)
    finite = is_finite_bits(sample, fmt)
    np.testing.assert_array_equal(flags, expected[:, 2])
    np.testing.assert_array_equal(exponent[finite], expected[finite, 0])
    np.testing.assert_array_equal(mantissa[finite], expected[finite, 1])


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("rounding", ["rz", "rne"])
def test_normalize_inverts_encode(fmt, rounding):
    f = get_format(fmt)
    bits = patterns(fmt)
    exponent, mantissa, flags = fpisa.encode(bits, fmt)
    back = fpisa.normalize(exponent, mantissa, fmt, rounding, element_flags=flags)
    negative_zero = bits == (1 << (f.storage_bits - 1))
    expected = np.where(negative_zero, 0, bits).astype(f.bits_dtype)
    finite = is_finite_bits(bits, fmt)
    assert_bits_equal(back[finite], expected[finite], fmt, bits[None, finite], "round trip")
    # specials come back as the read-out rule's canonical Inf/NaN
    specials = [_oracle.special_result(int(x), f) for x in flags[~finite]]
    assert_bits_equal(back[~finite], np.array(specials, f.bits_dtype), fmt, what="specials")
    np.testing.assert_array_equal(fpisa.decode(exponent, mantissa, fmt, rounding, element_flags=flags), back)


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("rounding", ["rz", "rne"])
def test_normalize_matches_the_oracle_on_wide_registers(fmt, rounding):
    """Arbitrary (E, A) pairs, as a switch would hold them, W up to 64."""
    f = get_format(fmt)
    rng = np.random.default_rng(13)
    n = 20_000
    exponent = rng.integers(1, f.exponent_all_ones, n)
    mantissa = rng.integers(-(2**63), 2**63 - 1, n, endpoint=True) >> rng.integers(0, 64, n)
    exponent[:50] = f.exponent_all_ones - 1  # overflow to Inf, rne carries
    mantissa[:50] = np.arange(50) - 25 + (1 << (f.precision + 1))
    got = fpisa.normalize(exponent, mantissa, fmt, rounding)
    expected = [_oracle.normalize(int(e), int(a), 0, f, rounding) for e, a in zip(exponent, mantissa)]
    assert_bits_equal(got, np.array(expected, f.bits_dtype), fmt,
                      np.stack([exponent, mantissa]), f"normalize {rounding}")


def test_element_flag_values_match_the_spec():
    assert (fpisa.ELEMENT_POS_INF, fpisa.ELEMENT_NEG_INF, fpisa.ELEMENT_NAN,
            fpisa.ELEMENT_OVERFLOW, fpisa.ELEMENT_OVERWRITE) == (1, 2, 4, 8, 16)
    assert (_oracle.ELEMENT_POS_INF, _oracle.ELEMENT_NEG_INF, _oracle.ELEMENT_NAN,
            _oracle.ELEMENT_OVERFLOW, _oracle.ELEMENT_OVERWRITE) == (1, 2, 4, 8, 16)


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16"])
def test_specials_encode_to_empty_registers(fmt):
    """Inf/NaN carry only their flag: exponent 0, mantissa 0 (docs/numerics.md 1)."""
    f = get_format(fmt)
    top, m = f.exponent_all_ones, f.fraction_bits
    specials = np.array([_oracle.pack(s, top, frac, f) for s in (0, 1)
                         for frac in (0, 1, 1 << (m - 1), (1 << m) - 1)], f.bits_dtype)
    exponent, mantissa, flags = fpisa.encode(specials, fmt)
    np.testing.assert_array_equal(exponent, 0)
    np.testing.assert_array_equal(mantissa, 0)
    np.testing.assert_array_equal(flags, [1, 4, 4, 4, 2, 4, 4, 4])
