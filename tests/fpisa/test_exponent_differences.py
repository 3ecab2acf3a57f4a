"""fp32, K=2: every exponent difference 0..W+2, both arrival orders, every
sign combination, edge fractions; fpisa and fpisa-a, rz and rne; the public
API's result bits, registers and flags against the oracle."""

import itertools

import numpy as np
import pytest

import fpisa
from oracle_helpers import FPISA_MODES, ROUNDINGS, assert_bits_equal, make_bits, oracle_aggregate

FRACTIONS = [0, 1, 0x400000, 0x400001, 0x7FFFFF, 0x2AAAAA]


def exponent_difference_cases(register_bits: int) -> np.ndarray:
    """(2, n) fp32 bit patterns: worker 1's exponent is worker 0's plus d."""
    columns = []
    for d in range(register_bits + 3):
        # low (next to the subnormals), middle, and top of the exponent range
        for low in sorted({1, 100, 254 - d}):
            for sa, sb in itertools.product((0, 1), repeat=2):
                for fa, fb in itertools.product(FRACTIONS, repeat=2):
                    columns.append((sa, low, fa, sb, low + d, fb))
    c = np.array(columns).T
    return np.stack([make_bits(c[0], c[1], c[2], "fp32"), make_bits(c[3], c[4], c[5], "fp32")])


@pytest.mark.parametrize("register_bits", [26, 32, 64])
@pytest.mark.parametrize("mode", FPISA_MODES)
def test_every_exponent_difference(mode, register_bits):
    values = exponent_difference_cases(register_bits)
    for order in ([0, 1], [1, 0]):
        expected = oracle_aggregate(values, mode, fmt="fp32", order=order,
                                    register_bits=register_bits)
        for rounding in ROUNDINGS:
            what = f"{mode} W={register_bits} order={order} {rounding}"
            got = fpisa.aggregate_detailed(values, mode, fmt="fp32", order=order,
                                           rounding=rounding, register_bits=register_bits)
            if rounding == "rz":
                expected_bits = expected.result
            else:
                expected_bits = np.array(
                    [fpisa._oracle.normalize(e, a, f, "fp32", "rne") for e, a, f in zip(
                        expected.exponent_register, expected.mantissa_register,
                        expected.element_flags)], np.uint32)
            assert_bits_equal(got.result, expected_bits, "fp32", values, what)
            np.testing.assert_array_equal(got.exponent_register, expected.exponent_register, what)
            np.testing.assert_array_equal(got.mantissa_register, expected.mantissa_register, what)
            np.testing.assert_array_equal(got.element_flags, expected.element_flags, what)
            np.testing.assert_array_equal(got.overwrites, expected.overwrites, what)


def test_fpisa_a_overwrites_exactly_beyond_the_headroom():
    """With a stored 1.0 and an incoming value d binades up, fpisa-a keeps both
    for d <= h and overwrites for d > h (h = 7 for fp32 in 32-bit registers)."""
    d = np.arange(0, 20)
    values = np.stack([make_bits(0, np.full(d.size, 127), 0, "fp32"),
                       make_bits(0, 127 + d, 0, "fp32")])
    got = fpisa.aggregate_detailed(values, "fpisa-a", fmt="fp32")
    np.testing.assert_array_equal(got.overwrites, (d > 7).astype(np.int64))
    kept = fpisa.from_bits(got.result, "fp32")
    np.testing.assert_array_equal(kept, np.where(d > 7, 2.0**d, 1 + 2.0**d).astype(np.float32))
