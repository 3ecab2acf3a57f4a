"""Property tests (hypothesis): random K, n, arrival orders, formats, modes,
register widths, roundings and block sizes; the API's bits (and, for the
FPISA modes, registers, flags and overwrite counts) equal the oracle's."""

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fpisa
from fpisa.formats import get_format
from oracle_helpers import FORMAT_NAMES, FPISA_MODES, assert_bits_equal, oracle_aggregate

MODES = ["fpisa", "fpisa-a", "float32", "exact", "switchml"]


def element_bits(fmt: str, centre: int, spread: int, finite: bool):
    """One bit pattern: near a common exponent (alignment, cancellation,
    headroom), any pattern at all, or an edge value."""
    f = get_format(fmt)
    top, m = f.exponent_all_ones, f.fraction_bits
    near = st.builds(
        lambda s, e, frac: (s << (f.storage_bits - 1)) | (e << m) | frac,
        st.integers(0, 1),
        st.integers(max(0, centre - spread), min(top - 1, centre + spread)),
        st.integers(0, (1 << m) - 1),
    )
    edges = st.sampled_from([0, 1, 1 << (f.storage_bits - 1), (top - 1) << m | ((1 << m) - 1),
                             top << m, (1 << (f.storage_bits - 1)) | top << m, top << m | 1])
    anything = st.integers(0, (1 << f.storage_bits) - 1)
    bits = st.one_of(near, near, near, anything, edges)
    if finite:  # switchml refuses Inf/NaN: make those patterns zero instead
        bits = bits.map(lambda b: 0 if (b >> m) & top == top else b)
    return bits


@st.composite
def cases(draw):
    fmt = draw(st.sampled_from(FORMAT_NAMES))
    mode = draw(st.sampled_from(MODES))
    f = get_format(fmt)
    workers = draw(st.integers(1, 9))
    n = draw(st.integers(1, 24))
    centre = draw(st.integers(0, f.exponent_all_ones - 1))
    spread = draw(st.sampled_from([0, 1, 3, 8, 30]))
    column = st.lists(element_bits(fmt, centre, spread, mode == "switchml"),
                      min_size=workers, max_size=workers)
    values = np.array(draw(st.lists(column, min_size=n, max_size=n)), f.bits_dtype).T
    order = draw(st.one_of(
        st.none(),
        st.permutations(range(workers)),
        st.lists(st.permutations(range(workers)), min_size=n, max_size=n),
    ))
    options = dict(
        fmt=fmt,
        order=None if order is None else np.array(order),
        rounding=draw(st.sampled_from(["rz", "rne"])),
        register_bits=draw(st.integers(f.precision + 2, 64)),
        block_size=draw(st.integers(1, 10)),
    )
    return values, mode, options


@settings(max_examples=400)
@given(cases())
def test_api_equals_oracle(case):
    values, mode, options = case
    got = fpisa.aggregate_detailed(values, mode, **options)
    expected = oracle_aggregate(values, mode, **options)
    what = f"{mode} {options}"
    assert_bits_equal(got.result, expected.result, options["fmt"], values, what,
                      any_nan=mode == "float32")
    if mode in FPISA_MODES:
        np.testing.assert_array_equal(got.exponent_register, expected.exponent_register, what)
        np.testing.assert_array_equal(got.mantissa_register, expected.mantissa_register, what)
        np.testing.assert_array_equal(got.element_flags, expected.element_flags, what)
        np.testing.assert_array_equal(got.overwrites, expected.overwrites, what)


@settings(max_examples=60)
@given(cases())
def test_floats_in_floats_out(case):
    """Float arrays give the same bits as bit patterns, in the float dtype."""
    values, mode, options = case
    f = get_format(options["fmt"])
    assume(f.float_dtype is not None)  # bf16 has no numpy float dtype: bits only
    from_bits = fpisa.aggregate(values, mode, **options)
    from_floats = fpisa.aggregate(values.view(f.float_dtype), mode, **options)
    assert from_floats.dtype == f.float_dtype
    np.testing.assert_array_equal(from_floats.view(f.bits_dtype), from_bits)
