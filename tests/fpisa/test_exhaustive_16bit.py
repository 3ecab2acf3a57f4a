"""Every fp16 and every bf16 bit pattern (65,536 each, numpy test_half.py
style) against a set of partner values, K=2, both arrival orders: the API's
bits against the oracle's (fpisa, fpisa-a; rz and rne), and the baselines
against numpy or the oracle."""

import numpy as np
import pytest

import fpisa
from fpisa import _oracle
from fpisa.formats import RegisterLayout, get_format
from oracle_helpers import all_patterns, assert_bits_equal, make_bits

SIXTEEN_BIT = ["fp16", "bf16"]


def partners(fmt: str) -> np.ndarray:
    """Zero, +-1, the extremes of the range, a value far from 1, specials."""
    f = get_format(fmt)
    top, m = f.exponent_all_ones, f.fraction_bits
    return make_bits(
        sign=[0, 0, 1, 0, 1, 1, 0, 0, 0],
        exponent=[0, f.bias, f.bias, 0, top - 1, f.bias + 3, 2, top, top],
        fraction=[0, 0, 0, 1, (1 << m) - 1, 0x55 & ((1 << m) - 1), 0, 0, 1 << (m - 1)],
        fmt=fmt,
    )


def oracle_run(mode: str, arrivals: list, layout: RegisterLayout) -> dict:
    """The oracle over columns of arrivals: registers, flags, rz and rne bits."""
    step = _oracle.accumulate_fpisa if mode == "fpisa" else _oracle.accumulate_fpisa_a
    f = layout.fmt
    columns = {"exponent": [], "mantissa": [], "flags": [], "rz": [], "rne": []}
    for arrival in arrivals:
        state = None
        for bits in arrival:
            state = step(state, bits, layout)
        columns["exponent"].append(state.exponent)
        columns["mantissa"].append(state.mantissa)
        columns["flags"].append(state.flags)
        for rounding in ("rz", "rne"):
            columns[rounding].append(
                _oracle.normalize(state.exponent, state.mantissa, state.flags, f, rounding))
    return {name: np.array(column) for name, column in columns.items()}


@pytest.mark.parametrize("fmt", SIXTEEN_BIT)
@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a"])
def test_every_pattern_against_partners(mode, fmt):
    f = get_format(fmt)
    layout = RegisterLayout(f, 32)
    every = all_patterns(fmt)
    # fpisa with K=2 is order-independent: one oracle run serves both orders,
    # so it affords more partners; NaN partners are in test_specials_and_edges
    chosen = partners(fmt)[:8] if mode == "fpisa" else partners(fmt)[[0, 1, 3, 4, 5, 7]]
    for partner in chosen:
        values = np.stack([every, np.full_like(every, partner)])
        oracle_orders = [[0, 1]] if mode == "fpisa" else [[0, 1], [1, 0]]
        for oracle_order in oracle_orders:
            expected = oracle_run(mode, values[oracle_order].T.tolist(), layout)
            for order in ([[0, 1], [1, 0]] if mode == "fpisa" else [oracle_order]):
                got = fpisa.aggregate_detailed(values, mode, fmt=fmt, order=order)
                what = f"{mode} {fmt} partner=0x{int(partner):04x} order={order}"
                np.testing.assert_array_equal(got.exponent_register, expected["exponent"], what)
                np.testing.assert_array_equal(got.mantissa_register, expected["mantissa"], what)
                np.testing.assert_array_equal(got.element_flags, expected["flags"], what)
                assert_bits_equal(got.result, expected["rz"], fmt, values, f"{what} rz")
                rne = fpisa.aggregate(values, mode, fmt=fmt, order=order, rounding="rne")
                assert_bits_equal(rne, expected["rne"], fmt, values, f"{what} rne")


def test_fp16_baselines_against_numpy():
    """exact: a sum of two fp16 is exact in float64, and numpy rounds float64
    to float16 to nearest even, so numpy is an independent reference here;
    float32: numpy's float32 add then float16 rounding is the definition."""
    every = all_patterns("fp16")
    finite = np.isfinite(every.view(np.float16))
    with np.errstate(all="ignore"):
        for partner in partners("fp16"):
            values = np.stack([every, np.full_like(every, partner)])
            halves = values.view(np.float16)
            exact_sum = halves[0].astype(np.float64) + halves[1].astype(np.float64)
            # exact arithmetic has no signed zero: the project returns +0
            expected = np.where(exact_sum == 0, 0, exact_sum).astype(np.float16).view(np.uint16)
            got = fpisa.aggregate(values, "exact", fmt="fp16")
            checked = finite & np.isfinite(halves[1])  # specials: read-out rule, tested below
            assert_bits_equal(got[checked], expected[checked], "fp16", values[:, checked], "exact")
            for order in ([0, 1], [1, 0]):
                ordered = halves[order].astype(np.float32)
                expected = (ordered[0] + ordered[1]).astype(np.float16).view(np.uint16)
                got = fpisa.aggregate(values, "float32", fmt="fp16", order=order)
                assert_bits_equal(got, expected, "fp16", values, f"float32 {order}", any_nan=True)


@pytest.mark.parametrize("fmt", SIXTEEN_BIT)
def test_baselines_against_oracle(fmt):
    """exact and float32 for every pattern against the oracle, with fewer
    partners (the oracle's rational arithmetic is slow), specials included."""
    f = get_format(fmt)
    every = all_patterns(fmt)
    chosen = partners(fmt)[[1, 4, 7]]  # 1.0, -max, +Inf
    for partner in chosen:
        values = np.stack([every, np.full_like(every, partner)])
        expected = np.array([_oracle.exact_sum([int(b), int(partner)], f) for b in every], f.bits_dtype)
        assert_bits_equal(fpisa.aggregate(values, "exact", fmt=fmt), expected, fmt, values, "exact")
    # float32 mode on a strided sample (the oracle's float32 add is the slowest part)
    sample = every[::5]
    partner = chosen[0]
    values = np.stack([sample, np.full_like(sample, partner)])
    expected = [_oracle.narrow_from_float32(_oracle.float32_add(
        _oracle.widen_to_float32(int(partner), f), _oracle.widen_to_float32(int(b), f)), f)
        for b in sample]
    got = fpisa.aggregate(values, "float32", fmt=fmt, order=[1, 0])
    assert_bits_equal(got, np.array(expected, f.bits_dtype), fmt, values, "float32", any_nan=True)
