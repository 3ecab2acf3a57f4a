"""SwitchML fixed point (host quantizer + int32 switch sum): the API against
the oracle, the no-overflow bound for up to 256 workers at the extremes of
every format, and the refusal of Inf/NaN."""

from fractions import Fraction

import numpy as np
import pytest

import fpisa
from fpisa import _oracle
from fpisa import switchml as sml
from fpisa.formats import get_format
from oracle_helpers import FORMAT_NAMES, assert_bits_equal, clustered_bits, make_bits, oracle_aggregate


def test_constants_match_the_spec():
    assert sml.EMPTY_BLOCK_EXPONENT == _oracle.EMPTY_BLOCK_EXPONENT == -150
    assert sml.INT32_MAX == 2**31 - 1


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_aggregate_matches_oracle(fmt):
    rng = np.random.default_rng(17)
    for workers, n, block_size in [(1, 10, 4), (2, 130, 64), (5, 77, 16), (9, 50, 7), (32, 40, 64)]:
        values = clustered_bits(rng, fmt, (workers, n), spread=int(rng.integers(0, 40)),
                                subnormals=0.05)
        values[:, :block_size] = 0  # an all-zero block
        values[1:, block_size: 2 * block_size] = 0  # a block only worker 0 fills
        expected = oracle_aggregate(values, "switchml", fmt=fmt, block_size=block_size).result
        got = fpisa.aggregate(values, "switchml", fmt=fmt, block_size=block_size)
        assert_bits_equal(got, expected, fmt, values, f"switchml K={workers} block={block_size}")
        # the integer sum is order-independent
        perm = rng.permutation(workers)
        np.testing.assert_array_equal(
            fpisa.aggregate(values, "switchml", fmt=fmt, block_size=block_size, order=perm), got)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_quantizer_steps_match_oracle(fmt):
    f = get_format(fmt)
    rng = np.random.default_rng(19)
    workers, n, block_size = 6, 100, 16
    values = clustered_bits(rng, fmt, (workers, n), spread=25, subnormals=0.1)
    values[:, 32:48] = 0
    exponents = np.stack([sml.block_exponents(values[k], fmt, block_size) for k in range(workers)])
    blocks = [range(s, min(s + block_size, n)) for s in range(0, n, block_size)]
    for k in range(workers):
        expected = [_oracle.block_exponent([int(values[k, j]) for j in b], f) for b in blocks]
        np.testing.assert_array_equal(exponents[k], expected)
    e_max = exponents.max(axis=0)
    sums = np.zeros(n, np.int64)
    for k in range(workers):
        q = sml.quantize(values[k], fmt, e_max, workers, block_size)
        assert q.dtype == np.int32
        expected = [_oracle.quantize(int(values[k, j]), f,
                                     _oracle.switchml_scale(workers, int(e_max[j // block_size])))
                    for j in range(n)]
        np.testing.assert_array_equal(q, expected)
        sums += q
    got = sml.dequantize(sums.astype(np.int32), fmt, e_max, workers, block_size)
    expected = [_oracle.dequantize(int(sums[j]), f,
                                   _oracle.switchml_scale(workers, int(e_max[j // block_size])))
                for j in range(n)]
    assert_bits_equal(got, np.array(expected, f.bits_dtype), fmt, what="dequantize")


def test_block_exponent_is_the_frexp_exponent():
    x = np.array([0.75, -3.0, 1.0, 2.0**-149, 3.0e38, 0.0], np.float32)
    expected = [np.frexp(np.float64(v))[1] for v in x[:5]] + [sml.EMPTY_BLOCK_EXPONENT]
    np.testing.assert_array_equal(sml.block_exponents(x.view(np.uint32), "fp32", 1), expected)
    assert sml.block_exponents(x.view(np.uint32), "fp32", 6).tolist() == [128]


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_int32_sum_cannot_overflow_up_to_256_workers(fmt):
    """Every worker sends the largest magnitude below 2^e_max (the worst case:
    |x*f| closest to INT32_MAX/K), for every K in 1..256 and exponents from
    the subnormals to the top of the range: K * |q| <= INT32_MAX."""
    f = get_format(fmt)
    top, m = f.exponent_all_ones, f.fraction_bits
    binades = np.arange(top)  # every exponent field, the subnormals' (0) included
    worst = make_bits(binades % 2, binades, (1 << m) - 1, fmt)  # both signs
    e = sml.block_exponents(worst, fmt, 1)
    for workers in range(1, 257):
        q = sml.quantize(worst, fmt, e, workers, 1).astype(np.int64)
        assert np.all(workers * np.abs(q) <= sml.INT32_MAX), (workers, q)
        if workers % 15 == 1 or workers > 250:  # the oracle on a sample of K
            expected = [_oracle.quantize(int(x), f, _oracle.switchml_scale(workers, int(ex)))
                        for x, ex in zip(worst, e)]
            np.testing.assert_array_equal(q, expected)
    # and end to end with 256 workers at the top of the range
    values = np.tile(worst[-2:], (256, 1))
    got = fpisa.aggregate(values, "switchml", fmt=fmt, block_size=1)
    expected = oracle_aggregate(values, "switchml", fmt=fmt, block_size=1).result
    assert_bits_equal(got, expected, fmt, what="256 workers")


def test_the_bound_is_tight_just_beyond_256_workers():
    """Why the limit: with the oracle's formulas, some K a little above 256
    would overflow int32 for fp32 inputs just below 2^e."""
    x = make_bits(0, 200, (1 << 23) - 1, "fp32")
    e = _oracle.block_exponent([int(x)], get_format("fp32"))
    overflowing = [k for k in range(257, 1025)
                   if k * _oracle.quantize(int(x), get_format("fp32"), _oracle.switchml_scale(k, e))
                   > _oracle.INT32_MAX]
    assert overflowing, "expected some K > 256 to overflow"
    assert min(overflowing) > 256


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_non_finite_input_is_refused(fmt):
    f = get_format(fmt)
    for special in (f.exponent_all_ones << f.fraction_bits, (f.exponent_all_ones << f.fraction_bits) | 1):
        values = np.zeros((3, 8), f.bits_dtype)
        values[1, 5] = special
        with pytest.raises(ValueError, match="(?i)inf|nan|finite"):
            fpisa.aggregate(values, "switchml", fmt=fmt)
        with pytest.raises(ValueError, match="(?i)inf|nan|finite"):
            sml.block_exponents(values[1], fmt, 4)


def test_scale_is_correctly_rounded():
    for workers in (1, 3, 7, 256):
        for e in (-150, -148, -20, 0, 1, 64, 128):
            expected = _oracle.switchml_scale(workers, e)
            assert expected == float(Fraction(2**31 - 1, workers) / Fraction(2) ** e)
            np.testing.assert_array_equal(sml.scale_factors(np.array([e]), workers), [expected])
