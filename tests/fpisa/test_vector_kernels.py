"""The vector kernels of fpisa._kernels against the scalar reference loops
they replaced, bit for bit: registers, flags, overwrite counts and results.

Every format, register widths at the edges of each lane class (int32 lanes up
to W = 32, int64 lanes above; fpisa's overflow-free "safe" kernels when
K (2^p - 1) fits), K = 1..16, rz and rne, one order for all elements and
per-element orders, tile boundaries, and adversarial inputs (specials alone
or mixed, zeros, subnormals, cancellation, saturation, wrap-around, |A| =
2^31 and 2^63, wide exponent spreads for overwrites). The float32 baseline
is compared with its numpy formulation (NaN payloads: see there).
"""

import numpy as np
import pytest

import fpisa
from fpisa import _kernels as K
from fpisa import _oracle
from fpisa.aggregate import _aggregate_float32_numpy, arrival_orders
from fpisa.codec import doubles_to_bits
from fpisa.formats import get_format
from oracle_helpers import FORMAT_NAMES, assert_bits_equal, clustered_bits, make_bits

#: register widths per format: the smallest, both sides of 32 and of 64
WIDTHS = {
    "fp32": (26, 31, 32, 33, 48, 63, 64),
    "fp16": (13, 26, 32, 33, 48, 63, 64),
    "bf16": (10, 26, 32, 33, 48, 63, 64),
}


def _bits(rng, fmt, shape):
    f = get_format(fmt)
    return rng.integers(0, 1 << f.storage_bits, shape, dtype=np.uint64).astype(f.bits_dtype)


def adversarial(rng, fmt, K, n=1500):
    """(K, n) bit patterns mixing every kind of input the kernels special-case."""
    f = get_format(fmt)
    top, m, sign = f.exponent_all_ones, f.fraction_bits, 1 << (f.storage_bits - 1)
    parts = [
        _bits(rng, fmt, (K, n)),
        clustered_bits(rng, fmt, (K, n), spread=int(rng.integers(1, 40)), specials=0.02,
                       subnormals=0.05),
        clustered_bits(rng, fmt, (K, n), spread=3) & f.bits_dtype(sign - 1),  # same sign
    ]
    # columns of specials only, zeros only, and specials among normal values
    col = np.empty((K, 64), f.bits_dtype)
    inf, nan = make_bits(0, top, 0, fmt), make_bits(0, top, 1 << (m - 1), fmt)
    choices = np.array([inf, inf | sign, nan, nan | sign, make_bits(0, top, 1, fmt), 0, sign,
                        make_bits(0, 0, 1, fmt), make_bits(1, 0, (1 << m) - 1, fmt)], f.bits_dtype)
    col[:] = choices[rng.integers(0, choices.size, col.shape)]
    parts.append(col)
    # the largest magnitudes at one exponent (overflow, saturation to +-2^(W-1))
    big = make_bits(rng.integers(0, 2, (1, 64)).repeat(K, 0), rng.integers(top - 3, top, (K, 64)),
                    (1 << m) - 1 - rng.integers(0, 3, (K, 64)), fmt)
    parts.append(big)
    # cancellation: x, -x, then small values
    x = clustered_bits(rng, fmt, (1, 64), spread=2)
    canc = np.concatenate([x, x ^ f.bits_dtype(sign), clustered_bits(rng, fmt, (max(K - 2, 0), 64))])[:K]
    parts.append(canc)
    # exponents far apart (fpisa-a overwrites, shifts beyond the register)
    far = make_bits(rng.integers(0, 2, (K, 64)), rng.integers(1, top, (K, 64)),
                    rng.integers(0, 1 << m, (K, 64)), fmt)
    parts.append(far)
    # fpisa-a saturating exactly at -2^(W-1) / 2^(W-1) - 1 for W = 32 and 64: the
    # first value at e0, the others at e0 + h (shifted left by h), one sign
    for W in (32, 64):
        h = W - 1 - f.precision
        if top - 1 - h >= 1:
            e0 = rng.integers(1, top - h, (1, 32))
            signs = rng.integers(0, 2, (1, 32))
            rest = make_bits(signs.repeat(K, 0), (e0 + h).repeat(K, 0),
                             (1 << m) - 1 - rng.integers(0, 2, (K, 32)), fmt)
            rest[0] = make_bits(signs[0], e0[0], rng.integers(0, 1 << m, 32), fmt)
            parts.append(rest)
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def scalar_detailed(bits, mode, fmt, order, register_bits, rounding):
    """What aggregate_detailed returned before the vector kernels."""
    f = get_format(fmt)
    n = bits.shape[1]
    orders = arrival_orders(order, bits.shape[0], n)
    out = np.empty(n, f.bits_dtype)
    E, A = np.empty(n, np.int64), np.empty(n, np.int64)
    flags, overwrites = np.zeros(n, np.uint8), np.zeros(n, np.int64)
    args = (bits, orders, f.exponent_bits, f.fraction_bits, register_bits, rounding == "rne", out,
            E, A, flags)
    if mode == "fpisa":
        K.scalar_aggregate_fpisa(*args)
    else:
        K.scalar_aggregate_fpisa_a(*args, overwrites)
    return out, E, A, flags, overwrites


def assert_same_detailed(got, expected, fmt, bits, what):
    out, E, A, flags, overwrites = expected
    assert_bits_equal(got.result_bits, out, fmt, bits, what)
    np.testing.assert_array_equal(got.exponent_register, E, err_msg=what)
    np.testing.assert_array_equal(got.mantissa_register, A, err_msg=what)
    np.testing.assert_array_equal(got.element_flags, flags, err_msg=what)
    np.testing.assert_array_equal(got.overwrites, overwrites, err_msg=what)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a"])
def test_whole_arrays_equal_the_scalar_loops(mode, fmt):
    rng = np.random.default_rng(101)
    for workers in range(1, 17):
        bits = adversarial(rng, fmt, workers)
        order = rng.permutation(workers)
        for register_bits in WIDTHS[fmt]:
            for rounding in ("rz", "rne"):
                what = f"{mode} {fmt} K={workers} W={register_bits} {rounding}"
                expected = scalar_detailed(bits, mode, fmt, order, register_bits, rounding)
                got = fpisa.aggregate_detailed(bits, mode, fmt=fmt, order=order,
                                               rounding=rounding, register_bits=register_bits)
                assert_same_detailed(got, expected, fmt, bits, what)
                # aggregate() skips storing the registers: same result
                assert_bits_equal(fpisa.aggregate(bits, mode, fmt=fmt, order=order,
                                                  rounding=rounding, register_bits=register_bits),
                                  expected[0], fmt, bits, what + " (aggregate)")


@pytest.mark.parametrize("workers", [129, 200])
def test_many_workers_use_the_int64_tiles(workers):
    """fpisa fp32 needs int64 lanes (and, for small W, the overflow checks)
    only when K (2^p - 1) >= 2^31, i.e. K > 128."""
    rng = np.random.default_rng(109)
    bits = adversarial(rng, "fp32", workers, n=500)
    order = rng.permutation(workers)
    for register_bits in (26, 32, 33, 40, 48, 63, 64):
        for rounding in ("rz", "rne"):
            expected = scalar_detailed(bits, "fpisa", "fp32", order, register_bits, rounding)
            got = fpisa.aggregate_detailed(bits, "fpisa", order=order, rounding=rounding,
                                           register_bits=register_bits)
            assert_same_detailed(got, expected, "fp32", bits, f"K={workers} W={register_bits}")


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a"])
def test_per_element_orders_and_tile_boundaries(mode, fmt):
    """Per-element orders run the scalar loop; rows that all hold the same
    permutation must give what the vector kernel gives for that order. Sizes
    around the tile and vector widths."""
    rng = np.random.default_rng(102)
    for n in (1, 7, 8, 9, 1023, 1024, 1025, 2049):
        workers = int(rng.integers(1, 17))
        bits = np.ascontiguousarray(adversarial(rng, fmt, workers)[:, rng.permutation(n) % 1500])
        perm = rng.permutation(workers)
        for register_bits in (WIDTHS[fmt][0], 32, 64):
            same = fpisa.aggregate_detailed(bits, mode, fmt=fmt, order=np.tile(perm, (n, 1)),
                                            register_bits=register_bits)
            vec = fpisa.aggregate_detailed(bits, mode, fmt=fmt, order=perm,
                                           register_bits=register_bits)
            expected = (same.result_bits, same.exponent_register, same.mantissa_register,
                        same.element_flags, same.overwrites)
            assert_same_detailed(vec, expected, fmt, bits, f"{mode} {fmt} n={n} W={register_bits}")
            mixed = rng.permuted(np.tile(np.arange(workers), (n, 1)), axis=1)
            got = fpisa.aggregate_detailed(bits, mode, fmt=fmt, order=mixed,
                                           register_bits=register_bits)
            assert_same_detailed(got, scalar_detailed(bits, mode, fmt, mixed, register_bits, "rz"),
                                 fmt, bits, f"{mode} {fmt} n={n} per-element")


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a"])
def test_switch_rows_equal_the_scalar_row_kernels(mode, fmt):
    """accumulate_row_* sequences (first arrival resets) and normalize_array."""
    f = get_format(fmt)
    eb, m = f.exponent_bits, f.fraction_bits
    rng = np.random.default_rng(103)
    n = 257
    for register_bits in WIDTHS[fmt]:
        state = [np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.uint8),
                 np.zeros(n, np.int64)]
        ref = [a.copy() for a in state]
        for trial in range(6):
            workers = int(rng.integers(1, 17))
            pool = adversarial(rng, fmt, workers, n=40)
            bits = pool[:, rng.integers(0, pool.shape[1], n)]
            for i in range(workers):
                row = np.ascontiguousarray(bits[i])
                if mode == "fpisa":
                    K.accumulate_row_fpisa(*state[:3], row, i == 0, eb, m, register_bits)
                    K.scalar_accumulate_row_fpisa(*ref[:3], row, i == 0, eb, m, register_bits)
                else:
                    K.accumulate_row_fpisa_a(*state, row, i == 0, eb, m, register_bits)
                    K.scalar_accumulate_row_fpisa_a(*ref, row, i == 0, eb, m, register_bits)
                what = f"{mode} {fmt} W={register_bits} trial {trial} arrival {i}"
                for got, expected in zip(state, ref):
                    np.testing.assert_array_equal(got, expected, err_msg=what)
            for nearest in (False, True):
                out, out_ref = np.empty(n, f.bits_dtype), np.empty(n, f.bits_dtype)
                K.normalize_array(*state[:3], eb, m, nearest, out)
                K.scalar_normalize_array(*ref[:3], eb, m, nearest, out_ref)
                assert_bits_equal(out, out_ref, fmt, what=f"{what} read nearest={nearest}")


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("nearest", [False, True])
def test_normalize_any_registers(fmt, nearest):
    """normalize_array on arbitrary (E, A, flags): int32 lanes, int64 lanes
    and the scalar fallback, |A| = 2^31 and 2^63, exponents at every limit."""
    f = get_format(fmt)
    eb, m = f.exponent_bits, f.fraction_bits
    rng = np.random.default_rng(104)
    n = 20_000
    edges_E = np.array([-(1 << 62), -(1 << 40) - 1, -(1 << 40), -(1 << 40) + 1, -(1 << 29) - 1,
                        -(1 << 29), -(1 << 29) + 1, -300, -64, -30, -1, 0, 1, 2, 5, 20, 100,
                        f.exponent_all_ones - 2, f.exponent_all_ones - 1, f.exponent_all_ones,
                        300, (1 << 29) - 1, 1 << 29, (1 << 40) - 1, 1 << 40, 1 << 62], np.int64)
    edges_A = np.array([0, 1, -1, 2, -2, 3, (1 << 31) - 1, -(1 << 31), -(1 << 31) + 1, 1 << 31,
                        (1 << 30), -(1 << 30), (1 << 63) - 1, -(1 << 63), -(1 << 63) + 1,
                        (1 << 62), -(1 << 62), (1 << (m + 1)) - 1, 1 << m, (1 << (m + 2)) + 1,
                        -(3 << (m + 1)), (1 << 40) + 12345], np.int64)
    E_small = rng.integers(-40, f.exponent_all_ones + 40, n)
    A_small = rng.integers(-(1 << 31), 1 << 31, n) >> rng.integers(0, 32, n)
    A_wide = rng.integers(-(2**63), 2**63 - 1, n, endpoint=True) >> rng.integers(0, 64, n)
    grid_E, grid_A = np.meshgrid(edges_E, edges_A)
    flags = rng.integers(0, 32, n).astype(np.uint8) * (rng.random(n) < 0.1)
    cases = {
        "int32 lanes": (E_small, A_small, np.zeros(n, np.uint8)),
        "int32 lanes, flags": (E_small, A_small, flags),
        "int64 lanes": (E_small, A_wide, flags),
        "edges": (grid_E.ravel(), grid_A.ravel(), np.zeros(grid_E.size, np.uint8)),
        "edges in int32 range": (np.clip(grid_E.ravel(), -(1 << 29) + 1, (1 << 29) - 1),
                                 np.clip(grid_A.ravel(), -(1 << 31), (1 << 31) - 1),
                                 np.zeros(grid_E.size, np.uint8)),
    }
    for what, (E, A, F) in cases.items():
        E, A, F = (np.ascontiguousarray(x) for x in (E, A, F))
        out, expected = np.empty(E.size, f.bits_dtype), np.empty(E.size, f.bits_dtype)
        K.normalize_array(E, A, F, eb, m, nearest, out)
        K.scalar_normalize_array(E, A, F, eb, m, nearest, expected)
        assert_bits_equal(out, expected, fmt, np.stack([E, A]), what)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_extract_equals_the_scalar_loop(fmt):
    f = get_format(fmt)
    rng = np.random.default_rng(105)
    if f.storage_bits == 16:
        bits = np.arange(1 << 16, dtype=np.uint16)
    else:
        bits = np.concatenate([rng.integers(0, 2**32, 500_000, dtype=np.uint32),
                               np.array([0, 1, 0x7FFFFF, 0x800000, 0x7F7FFFFF, 0x7F800000,
                                         0x7F800001, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF],
                                        np.uint32)])
    got = [np.empty(bits.size, np.int64), np.empty(bits.size, np.int64),
           np.empty(bits.size, np.uint8)]
    ref = [a.copy() for a in got]
    K.extract_array(bits, f.exponent_bits, f.fraction_bits, *got)
    K.scalar_extract_array(bits, f.exponent_bits, f.fraction_bits, *ref)
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)


def test_int32_row_kernels_equal_the_scalar_loops():
    rng = np.random.default_rng(106)
    n = 1000
    for kernel, reference in ((K.accumulate_row_int_sum, K.scalar_accumulate_row_int_sum),
                              (K.accumulate_row_int_max, K.scalar_accumulate_row_int_max)):
        A, A_ref = np.zeros(n, np.int64), np.zeros(n, np.int64)
        for i in range(40):
            values = rng.integers(-(2**31), 2**31, n).astype(np.int32)
            values[:4] = [2**31 - 1, -(2**31), 0, -1]
            kernel(A, values, i % 7 == 0)
            reference(A_ref, values, i % 7 == 0)
            np.testing.assert_array_equal(A, A_ref)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_float32_equals_numpy(fmt):
    """Every non-NaN bit, NaN-ness and the flags equal numpy's ``acc += x``.
    NaN payloads (fp32 only: fp16/bf16 results are the canonical NaN) are
    compared as any NaN, as everywhere for this mode: numpy's own payload
    for NaN + NaN depends on where the element falls in its loop (the SIMD
    body keeps the accumulator's NaN, the scalar tail the incoming one)."""
    f = get_format(fmt)
    rng = np.random.default_rng(107)
    nans = np.array([make_bits(s, f.exponent_all_ones, frac, fmt) for s in (0, 1)
                     for frac in (1, 1 << (f.fraction_bits - 1), (1 << f.fraction_bits) - 1, 5)],
                    f.bits_dtype)
    for workers in range(1, 17):
        bits = adversarial(rng, fmt, workers)
        sprinkle = rng.random(bits.shape) < 0.01
        bits[sprinkle] = nans[rng.integers(0, nans.size, np.count_nonzero(sprinkle))]
        for order in (rng.permutation(workers),
                      rng.permuted(np.tile(np.arange(workers), (bits.shape[1], 1)), axis=1)):
            orders = arrival_orders(order, workers, bits.shape[1])
            expected, expected_flags = _aggregate_float32_numpy(bits, orders, f)
            got = fpisa.aggregate_detailed(bits, "float32", fmt=fmt, order=order)
            what = f"float32 {fmt} K={workers}"
            assert_bits_equal(got.result_bits, expected, fmt, bits, what, any_nan=fmt == "fp32")
            np.testing.assert_array_equal(got.element_flags, expected_flags)
            assert_bits_equal(fpisa.aggregate(bits, "float32", fmt=fmt, order=order), expected,
                              fmt, bits, what + " (aggregate)", any_nan=fmt == "fp32")


def test_float32_nan_payload_rule():
    """The kernel pins x86's SSE/AVX rule for every element: a NaN operand
    comes back quieted, the accumulator's if both are NaN (Inf - Inf gives
    the FPU's default NaN)."""
    a = np.array([0x7F800001, 0xFFC00005, 0x3F800000, 0x7FC00000, 0x7F800000, 0xFFC00000],
                 np.uint32)
    b = np.array([0x7FC00002, 0x7F800003, 0xFF800007, 0xFFC00000, 0xFF800000, 0x7FC00000],
                 np.uint32)
    expected = [0x7FC00001, 0xFFC00005, 0xFFC00007, 0x7FC00000, 0xFFC00000, 0xFFC00000]
    for n in (6, 1000, 4757):  # vector body and remainder lanes alike
        bits = np.stack([np.resize(a, n), np.resize(b, n)])
        got = fpisa.aggregate(bits, "float32")
        np.testing.assert_array_equal(got, np.resize(np.array(expected, np.uint32), n))


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_float32_rounding_to_16_bit_formats(fmt):
    """The kernel's float32 -> fp16/bf16 (round to nearest even, via the
    vector read-out) equals doubles_to_bits on a wide sample of float32s:
    every exponent, ties, subnormals on both sides, overflow, Inf, NaN."""
    f = get_format(fmt)
    rng = np.random.default_rng(108)
    x = rng.integers(0, 2**32, 1_500_000, dtype=np.uint32)
    exponent = np.arange(256, dtype=np.uint32)
    low = np.arange(1 << 16, dtype=np.uint32)
    structured = ((exponent[:, None] << 23) | (low[None, ::17] << 3)).ravel()  # ties, carries
    x = np.concatenate([x, structured, structured | np.uint32(1 << 31),
                        np.uint32(0x7F7FFFFF) - np.arange(1 << 14, dtype=np.uint32)])
    acc = x.view(np.float32)
    out = np.empty(acc.size, f.bits_dtype)
    K._loop_f32_out(acc, out, f.exponent_bits, f.fraction_bits)
    with np.errstate(invalid="ignore"):
        expected = doubles_to_bits(acc.astype(np.float64), f)
    assert_bits_equal(out, expected, fmt, what="float32 -> " + fmt)


def test_64_bit_register_overflow_matches_the_oracle():
    """W = 64: a sum that leaves int64. numba's signed add is nsw (overflow
    undefined) and LLVM had deleted the scalar kernel's overflow check, so
    fpisa-a did not saturate (and _add never flagged). Now as the oracle."""
    # a bf16 column found by the random comparison: the last add overflows
    bits = np.array([[0xd439], [0xdec9], [0x9f2e], [0xde19], [0xd31a], [0x6f1a], [0x9fd0],
                     [0x6fca]], np.uint16)
    expected = _oracle.aggregate([[int(b) for b in row] for row in bits], "fpisa-a", fmt="bf16",
                                 register_bits=64)
    assert expected.element_flags[0] & fpisa.ELEMENT_OVERFLOW
    for got in (fpisa.aggregate_detailed(bits, "fpisa-a", fmt="bf16", register_bits=64),
                fpisa.aggregate_detailed(bits, "fpisa-a", fmt="bf16", register_bits=64,
                                         order=np.arange(8)[None, :])):  # the scalar loop
        np.testing.assert_array_equal(got.result_bits, np.array(expected.result, np.uint16))
        np.testing.assert_array_equal(got.mantissa_register, expected.mantissa_register)
        np.testing.assert_array_equal(got.element_flags, expected.element_flags)
    top = (1 << 63) - 1
    assert K._add(top, 1, 64) == (-(1 << 63), 1)
    assert K._add(-(1 << 63), -1, 64) == (top, -1)
    assert K._add(1 << 62, 1 << 62, 64) == (-(1 << 63), 1)
    assert K._add(top, -1, 64) == (top - 1, 0)
    assert K._add((1 << 62) - 1, 1, 63) == (-(1 << 62), 1)
    assert K._add(-(1 << 62), -1, 63) == ((1 << 62) - 1, -1)


@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a", "float32"])
def test_threads_change_nothing(mode):
    """threads=2 splits the elements by whole tiles; every output is the same."""
    rng = np.random.default_rng(110)
    for fmt in FORMAT_NAMES:
        for n in (5, K._TILE - 1, 3 * K._TILE + 17):
            workers = int(rng.integers(1, 17))
            bits = np.ascontiguousarray(adversarial(rng, fmt, workers)[:, rng.integers(0, 1500, n)])
            for register_bits in (WIDTHS[fmt][0], 32, 64):
                one = fpisa.aggregate_detailed(bits, mode, fmt=fmt, register_bits=register_bits)
                two = fpisa.aggregate_detailed(bits, mode, fmt=fmt, register_bits=register_bits,
                                               threads=2)
                np.testing.assert_array_equal(two.result_bits, one.result_bits)
                np.testing.assert_array_equal(two.element_flags, one.element_flags)
                np.testing.assert_array_equal(two.overwrites, one.overwrites)
                if mode != "float32":
                    np.testing.assert_array_equal(two.mantissa_register, one.mantissa_register)
                    np.testing.assert_array_equal(two.exponent_register, one.exponent_register)
                np.testing.assert_array_equal(
                    fpisa.aggregate(bits, mode, fmt=fmt, register_bits=register_bits, threads=2),
                    one.result_bits)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2", 10**6])
def test_bad_thread_counts(threads):
    with pytest.raises(ValueError, match="threads"):
        fpisa.aggregate(np.zeros((2, 4), np.float32), "fpisa", threads=threads)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_doubles_to_format_equals_the_scalar_loop(fmt):
    """float64 -> format (round to nearest even): every double exponent, ties
    and near-ties at every rounding position, subnormal results, overflow,
    signed zeros, Inf, NaN payloads."""
    f = get_format(fmt)
    rng = np.random.default_rng(111)
    x = rng.integers(0, 2**64, 1_000_000, dtype=np.uint64)
    exponent = np.arange(2048, dtype=np.uint64) << np.uint64(52)
    for shift in range(52 - f.fraction_bits - 2, 53):  # ties and one-offs below/above
        half = np.uint64(1) << np.uint64(max(shift, 0))
        mant = rng.integers(0, 1 << 52, exponent.size, dtype=np.uint64) & ~(half * np.uint64(2) - np.uint64(1))
        for delta in (0, 1):
            for sign in (0, 1):
                extra = (np.uint64(sign) << np.uint64(63)) | exponent | mant | half
                x = np.concatenate([x, extra - np.uint64(delta), extra + np.uint64(delta)])
    x = np.concatenate([x, np.array([0, 1 << 63, 0x7FF0000000000000, 0xFFF0000000000000,
                                     0x7FF8000000000000, 0x7FF0000000000001, 1, 2**52 - 1],
                                    np.uint64)])
    v = x.view(np.float64)
    got, expected = np.empty(v.size, f.bits_dtype), np.empty(v.size, f.bits_dtype)
    K.doubles_to_format(v, f.exponent_bits, f.fraction_bits, got)
    K.scalar_doubles_to_format(v, f.exponent_bits, f.fraction_bits, expected)
    assert_bits_equal(got, expected, fmt, what="doubles -> " + fmt)


def test_bf16_from_bits_is_the_shifted_pattern():
    every = np.arange(1 << 16, dtype=np.uint16)
    for bits in (every, every.reshape(256, 256), every.reshape(256, 256)[:, ::3], every[:0]):
        got = fpisa.from_bits(bits, "bf16")
        assert got.dtype == np.float32 and got.shape == bits.shape
        np.testing.assert_array_equal(got.view(np.uint32), bits.astype(np.uint32) << 16)
    assert fpisa.from_bits(np.uint16(0x3F80), "bf16") == 1.0
