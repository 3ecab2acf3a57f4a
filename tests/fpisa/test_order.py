"""Arrival order: fpisa with K=2 is order-independent (alignment of two
values is symmetric); with K>2, or in fpisa-a, the order changes the bits."""

import numpy as np
import pytest

import fpisa
from fpisa.formats import get_format
from oracle_helpers import FORMAT_NAMES, all_patterns, clustered_bits, oracle_aggregate


def fp32(x) -> np.ndarray:
    return np.asarray(x, np.float32).view(np.uint32)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_fpisa_two_workers_commute(fmt):
    """A large sample (fp32) or every pattern against 64 random partners
    (fp16, bf16): both orders give identical registers, flags and bits."""
    rng = np.random.default_rng(3)
    if fmt == "fp32":
        values = np.concatenate([
            rng.integers(0, 2**32, (2, 400_000), dtype=np.uint32),
            clustered_bits(rng, fmt, (2, 400_000), spread=40, specials=0.01, subnormals=0.05),
        ], axis=1)
    else:
        every = all_patterns(fmt)
        partners = rng.integers(0, 2**16, 64, dtype=np.uint16)
        values = np.stack([np.tile(every, 64), np.repeat(partners, every.size)])
    for register_bits in (get_format(fmt).precision + 2, 32, 64):
        for rounding in ("rz", "rne"):
            a = fpisa.aggregate_detailed(values, "fpisa", fmt=fmt, order=[0, 1],
                                         rounding=rounding, register_bits=register_bits)
            b = fpisa.aggregate_detailed(values, "fpisa", fmt=fmt, order=[1, 0],
                                         rounding=rounding, register_bits=register_bits)
            np.testing.assert_array_equal(a.result, b.result)
            np.testing.assert_array_equal(a.mantissa_register, b.mantissa_register)
            np.testing.assert_array_equal(a.exponent_register, b.exponent_register)
            np.testing.assert_array_equal(a.element_flags, b.element_flags)


def test_fpisa_three_workers_depend_on_order():
    """1 + 2^-24 + 2^-24: arriving after 1.0, each small value is shifted out
    (truncated to 0); arriving first, they add to 2^-23 and survive."""
    values = fp32([[1.0], [2.0**-24], [2.0**-24]])
    late = fpisa.aggregate(values, "fpisa", order=[0, 1, 2])
    early = fpisa.aggregate(values, "fpisa", order=[1, 2, 0])
    assert late.view(np.float32)[0] == np.float32(1.0)
    assert early.view(np.float32)[0] == np.float32(1.0 + 2.0**-23)
    for order in ([0, 1, 2], [1, 2, 0]):
        np.testing.assert_array_equal(
            fpisa.aggregate(values, "fpisa", order=order),
            oracle_aggregate(values, "fpisa", order=order).result)


def test_fpisa_order_dependence_is_common_with_many_workers():
    """Not a corner case: with K=8 clustered values, many elements differ
    between two arrival orders, and per-element orders are honoured."""
    rng = np.random.default_rng(4)
    values = clustered_bits(rng, "fp32", (8, 2000), spread=30)
    forward = fpisa.aggregate(values, "fpisa")
    backward = fpisa.aggregate(values, "fpisa", order=np.arange(8)[::-1])
    assert np.count_nonzero(forward != backward) > 100
    per_element = np.where(np.arange(2000)[:, None] % 2 == 0, np.arange(8), np.arange(8)[::-1])
    mixed = fpisa.aggregate(values, "fpisa", order=per_element)
    np.testing.assert_array_equal(mixed[::2], forward[::2])
    np.testing.assert_array_equal(mixed[1::2], backward[1::2])


def test_fpisa_a_two_workers_depend_on_order():
    """fpisa-a cannot shift the stored value: 1.0 then 2^8 overwrites the 1.0
    (8 > h = 7); 2^8 then 1.0 keeps both."""
    values = fp32([[1.0], [256.0]])
    first_small = fpisa.aggregate_detailed(values, "fpisa-a", order=[0, 1])
    first_large = fpisa.aggregate_detailed(values, "fpisa-a", order=[1, 0])
    assert first_small.result.view(np.float32)[0] == 256.0 and first_small.overwrites[0] == 1
    assert first_large.result.view(np.float32)[0] == 257.0 and first_large.overwrites[0] == 0
