"""Inf/NaN in every combination, cancellation to zero, subnormals, and the
two fpisa-a error sources (headroom saturation, overwrite): API vs oracle,
plus the spec's stated outcomes checked directly."""

import itertools

import numpy as np
import pytest

import fpisa
from fpisa import _oracle
from fpisa.formats import get_format
from oracle_helpers import (FORMAT_NAMES, FPISA_MODES, ROUNDINGS, assert_bits_equal,
                            clustered_bits, make_bits, oracle_aggregate)

ALL_MODES = ["fpisa", "fpisa-a", "float32", "exact"]


def edge_values(fmt: str) -> np.ndarray:
    f = get_format(fmt)
    top, m = f.exponent_all_ones, f.fraction_bits
    return make_bits(
        sign=[0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1, 0, 1],
        exponent=[0, 0, f.bias, f.bias, top, top, top, top, top, top - 1, top - 1, 0, 0],
        fraction=[0, 0, 0, 0, 0, 0, 1 << (m - 1), 1, 1 << (m - 1), (1 << m) - 1,
                  (1 << m) - 1, 1, (1 << m) - 1],
        fmt=fmt,
    )  # +-0, +-1, +-Inf, quiet/signalling/negative NaN, +-max, +min subnormal, -max subnormal


def check_against_oracle(values, mode, fmt, rounding="rz", order=None, register_bits=32):
    got = fpisa.aggregate_detailed(values, mode, fmt=fmt, order=order, rounding=rounding,
                                   register_bits=register_bits)
    expected = oracle_aggregate(values, mode, fmt=fmt, order=order, rounding=rounding,
                                register_bits=register_bits)
    what = f"{mode} {fmt} {rounding} W={register_bits}"
    assert_bits_equal(got.result, expected.result, fmt, values, what, any_nan=mode == "float32")
    if mode in FPISA_MODES:
        np.testing.assert_array_equal(got.element_flags, expected.element_flags, what)
        np.testing.assert_array_equal(got.exponent_register, expected.exponent_register, what)
        np.testing.assert_array_equal(got.mantissa_register, expected.mantissa_register, what)
        np.testing.assert_array_equal(got.overwrites, expected.overwrites, what)
    return got


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_combination_of_edge_values(mode, fmt):
    edges = edge_values(fmt)
    for k in (1, 2, 3):
        values = np.array(list(itertools.product(edges, repeat=k)), edges.dtype).T
        for rounding in ROUNDINGS if mode in FPISA_MODES else ["rz"]:
            check_against_oracle(values, mode, fmt, rounding)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_specials_follow_the_read_out_rule(fmt):
    f = get_format(fmt)
    one, inf, ninf = make_bits([0, 0, 1], [f.bias, f.exponent_all_ones, f.exponent_all_ones],
                               [0, 0, 0], fmt)
    nan = _oracle.quiet_nan(f)
    cases = {(one, inf): _oracle.infinity(0, f), (ninf, one): _oracle.infinity(1, f),
             (inf, ninf): nan, (one, nan): nan, (inf, inf): _oracle.infinity(0, f)}
    values = np.array(list(cases), f.bits_dtype).T
    for mode in ALL_MODES:
        got = fpisa.aggregate(values, mode, fmt=fmt)
        assert_bits_equal(got, np.array(list(cases.values()), f.bits_dtype), fmt, values, mode,
                          any_nan=mode == "float32")
    with pytest.raises(ValueError, match="(?i)inf|nan|finite"):
        fpisa.aggregate(values, "switchml", fmt=fmt)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("mode", ALL_MODES + ["switchml"])
def test_cancellation_gives_positive_zero(mode, fmt):
    rng = np.random.default_rng(11)
    x = clustered_bits(rng, fmt, 500, spread=30)
    x[:5] = make_bits(1, 0, [0, 1, 2, 3, 4], fmt)  # -0 and negative subnormals
    sign_bit = x.dtype.type(1 << (get_format(fmt).storage_bits - 1))
    y = clustered_bits(rng, fmt, 500, spread=30)
    pair = np.stack([x, x ^ sign_bit])
    for order in ([0, 1], [1, 0]):
        if mode != "switchml":
            check_against_oracle(pair, mode, fmt, order=order)
        got = fpisa.aggregate(pair, mode, fmt=fmt, order=order)
        assert_bits_equal(got, np.zeros(500, x.dtype), fmt, pair, f"{mode} x + -x")
    if mode in ("exact", "switchml"):  # order-independent modes cancel with any K
        values = np.stack([x, y, x ^ sign_bit, y ^ sign_bit])
        got = fpisa.aggregate(values, mode, fmt=fmt, order=[3, 1, 0, 2])
        assert_bits_equal(got, np.zeros(500, x.dtype), fmt, values, f"{mode} x + y - x - y")


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("mode", ALL_MODES)
def test_subnormals(mode, fmt):
    """Subnormal + subnormal (crossing into the normals), + smallest normals,
    + larger values; fpisa keeps them, fpisa-a flushes them."""
    f = get_format(fmt)
    rng = np.random.default_rng(5)
    n = 3000
    sub = make_bits(rng.integers(0, 2, (3, n)), 0, rng.integers(0, 1 << f.fraction_bits, (3, n)), fmt)
    low = make_bits(rng.integers(0, 2, (3, n)), rng.integers(1, 4, (3, n)),
                    rng.integers(0, 1 << f.fraction_bits, (3, n)), fmt)
    mix = np.where(rng.random((3, n)) < 0.6, sub, low)
    for rounding in ROUNDINGS if mode in FPISA_MODES else ["rz"]:
        check_against_oracle(sub[:2], mode, fmt, rounding)
        check_against_oracle(mix, mode, fmt, rounding, order=rng.permuted(np.tile(np.arange(3), (n, 1)), axis=1))
    if mode == "fpisa-a":
        got = fpisa.aggregate_detailed(sub, mode, fmt=fmt)
        assert np.all(got.result == 0) and np.all(got.exponent_register == 0)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_fpisa_a_saturates_on_headroom_overflow(fmt):
    """2^h + 1 values of the largest magnitude at one exponent overflow the
    register: saturation to the largest magnitude, flag set, as the oracle."""
    f = get_format(fmt)
    for h in (1, 6):  # (2^h + 1)(2^p - 1) > 2^(W-1) - 1 needs h < p
        register_bits = f.precision + 1 + h
        k = (1 << h) + 1
        largest = make_bits(0, f.bias, (1 << f.fraction_bits) - 1, fmt)
        values = np.tile(np.array([largest, largest ^ (1 << (f.storage_bits - 1))],
                                  f.bits_dtype), (k, 1))
        got = check_against_oracle(values, "fpisa-a", fmt, register_bits=register_bits)
        assert got.mantissa_register[0] == (1 << (register_bits - 1)) - 1
        assert got.mantissa_register[1] == -(1 << (register_bits - 1))
        assert np.all(got.element_flags & fpisa.ELEMENT_OVERFLOW)
        # fpisa wraps instead (and flags it)
        got = check_against_oracle(values, "fpisa", fmt, register_bits=register_bits)
        assert np.all(got.element_flags & fpisa.ELEMENT_OVERFLOW)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("mode", FPISA_MODES)
def test_random_headroom_stress(mode, fmt):
    """Many same-sign values in narrow registers: overflow, saturation and
    overwrite paths with every register width."""
    f = get_format(fmt)
    rng = np.random.default_rng(21)
    for register_bits in range(f.precision + 2, 65, 5):
        values = clustered_bits(rng, fmt, (12, 300), spread=int(rng.integers(1, 12)))
        if rng.random() < 0.5:  # same sign: the register fills up
            values &= values.dtype.type((1 << (f.storage_bits - 1)) - 1)
        order = rng.permuted(np.tile(np.arange(12), (300, 1)), axis=1)
        for rounding in ROUNDINGS:
            check_against_oracle(values, mode, fmt, rounding, order, register_bits)
