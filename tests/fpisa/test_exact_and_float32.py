"""The two host baselines: `exact` (the exact sum rounded once, nearest even)
against Fractions, with ties and overflow built on purpose; `float32`
(sequential float32 adds in arrival order) against numpy."""

from fractions import Fraction

import numpy as np
import pytest

import fpisa
from fpisa import _oracle
from fpisa.formats import get_format
from oracle_helpers import FORMAT_NAMES, assert_bits_equal, clustered_bits, make_bits, oracle_aggregate


def test_exact_ties_round_to_even_and_overflow_to_inf():
    one_ulp, half_ulp = 2.0**-23, 2.0**-24
    big = float(np.finfo(np.float32).max)  # (2 - 2^-23) * 2^127, ulp 2^104
    cases = [  # (worker values, expected sum)
        ([1.0, half_ulp], 1.0),                                   # tie, even stays
        ([1.0 + one_ulp, half_ulp], 1.0 + 2 * one_ulp),           # tie, odd rounds up
        ([1.0, half_ulp, 2.0**-60], 1.0 + one_ulp),               # just above the tie
        ([-1.0 - one_ulp, -half_ulp], -1.0 - 2 * one_ulp),
        ([big, 2.0**103], np.inf),                                # tie at the top: Inf
        ([big, 2.0**103 - 2.0**79], big),                         # just below: max
        ([big, big, -big], big),                                  # exact, not sequential
        ([-big, -big], -np.inf),
        ([2.0**-149, 0.0, 2.0**-149], 2.0**-148),                  # subnormals add exactly
        ([1e-45, -1e-45], 0.0),
    ]
    width = max(len(v) for v, _ in cases)
    values = np.zeros((width, len(cases)), np.float32)
    for j, (column, _) in enumerate(cases):
        values[: len(column), j] = column
    got = fpisa.aggregate(values, "exact")
    expected = np.array([e for _, e in cases], np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_exact_matches_fractions(fmt):
    f = get_format(fmt)
    rng = np.random.default_rng(23)
    for workers in (1, 2, 3, 8):
        values = clustered_bits(rng, fmt, (workers, 1500), spread=int(rng.integers(0, 30)),
                                subnormals=0.05)
        if workers == 2:  # ties: x + half an ulp of x, built on the bits
            x = values[0].astype(np.int64)
            values[1] = make_bits(0, np.clip(((x >> f.fraction_bits) & f.exponent_all_ones) - f.precision,
                                             0, None), 0, fmt)
        expected = [
            _oracle.round_to_format(sum((_oracle.value_of(int(b), f) for b in col), Fraction(0)), f)
            for col in values.T
        ]
        got = fpisa.aggregate(values, "exact", fmt=fmt, order=rng.permutation(workers))
        assert_bits_equal(got, np.array(expected, f.bits_dtype), fmt, values, f"exact K={workers}")


def test_exact_negative_zeros_sum_to_positive_zero():
    """Exact arithmetic has no signed zero: an exact sum of 0 is +0 (the same
    rule as the FPISA read-out of A == 0), even for -0 + -0."""
    values = np.array([[-0.0], [-0.0]], np.float32)
    assert fpisa.aggregate(values, "exact").view(np.uint32)[0] == 0


@pytest.mark.parametrize("fmt", ["fp32", "fp16"])
def test_float32_is_sequential_float32_adds(fmt):
    f = get_format(fmt)
    rng = np.random.default_rng(29)
    values = clustered_bits(rng, fmt, (7, 3000), spread=20, subnormals=0.02, specials=0.002)
    order = rng.permuted(np.tile(np.arange(7), (3000, 1)), axis=1)
    as_float32 = values.view(f.float_dtype).astype(np.float32)
    columns = np.arange(3000)
    with np.errstate(all="ignore"):
        total = as_float32[order[:, 0], columns]
        for i in range(1, 7):
            total = total + as_float32[order[:, i], columns]
        expected = total.astype(f.float_dtype).view(f.bits_dtype)
    got = fpisa.aggregate(values, "float32", fmt=fmt, order=order)
    assert_bits_equal(got, expected, fmt, values, "float32", any_nan=True)
    expected = oracle_aggregate(values[:, :300], "float32", fmt=fmt, order=order[:300]).result
    assert_bits_equal(got[:300], expected, fmt, values[:, :300], "float32 oracle", any_nan=True)
