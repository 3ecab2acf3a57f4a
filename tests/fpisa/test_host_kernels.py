"""The compiled host conversions (fpisa._host_kernels) against the numpy
formulas they replace (fpisa.switchml._reference_*) and numpy's byteswap:
bit for bit, over every binade and every block exponent, every K up to 256,
fp32/fp16/bf16, partial blocks, all-zero blocks, -0.0, and the errors.
No timings are asserted here (benchmarks/host_conversion.py measures)."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fpisa import _host_kernels as HK
from fpisa import switchml as sml
from fpisa.codec import doubles_to_bits, from_bits
from fpisa.formats import get_format
from oracle_helpers import FORMAT_NAMES, assert_bits_equal, clustered_bits, make_bits

KIND = {"fp32": HK.KIND_FP32, "fp16": HK.KIND_FP16, "bf16": HK.KIND_BF16}


def finite_patterns(fmt, rng, per_binade=None):
    """Bit patterns of finite values of fmt, both signs, every binade (the
    subnormals' included): all of them for 16-bit formats, for fp32 the
    extremes and a random sample of each binade."""
    f = get_format(fmt)
    if f.storage_bits == 16:
        bits = np.arange(1 << 16, dtype=np.uint16)
        return bits[(bits.astype(np.int64) >> f.fraction_bits & f.exponent_all_ones) != f.exponent_all_ones]
    per_binade = per_binade or 64
    m = f.fraction_bits
    fields = np.repeat(np.arange(f.exponent_all_ones), per_binade)
    fractions = rng.integers(0, 1 << m, fields.size)
    fractions[::per_binade] = 0
    fractions[1::per_binade] = (1 << m) - 1
    fractions[2::per_binade] = 1
    # every subnormal binade (fraction bit length 1..m): its ends and a middle
    lengths = np.arange(1, m + 1)
    sub = np.concatenate([1 << (lengths - 1), (1 << lengths) - 1, (3 << lengths) >> 2])
    fields = np.concatenate([fields, np.zeros(sub.size, np.int64)])
    fractions = np.concatenate([fractions, sub])
    signs = rng.integers(0, 2, fields.size)
    return make_bits(signs, fields, fractions, fmt)


def frexp_exponent(bits, fmt):
    x = np.abs(from_bits(bits, fmt).astype(np.float64))
    e = np.frexp(x)[1].astype(np.int64)
    return np.where(x == 0, sml.EMPTY_BLOCK_EXPONENT, e)


# ------------------------------------------------------------ element steps
@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_widening_is_exact_for_every_pattern(fmt):
    bits = finite_patterns(fmt, None)
    out = np.empty(bits.size)
    HK.to_doubles(bits, KIND[fmt], out)
    expected = from_bits(bits, fmt).astype(np.float64)
    np.testing.assert_array_equal(out.view(np.int64), expected.view(np.int64))  # -0.0 too


def _rounding_candidates(fmt, rng):
    """Doubles around every value of fmt: the values, the midpoints between
    neighbours (the ties), one double ulp either side of each, and values
    beyond the largest finite and below half the smallest subnormal."""
    f = get_format(fmt)
    bits = finite_patterns(fmt, rng, per_binade=256)
    v = np.unique(np.abs(from_bits(bits, fmt).astype(np.float64)))
    mids = (v[:-1] + v[1:]) / 2  # exact in double
    top = v[-1]
    ulp = top - v[-2]
    extra = [top + ulp / 2, top + ulp / 2 * (1 - 2.0**-40), top + ulp, 2 * top, 1e300,
             np.finfo(np.float64).max, v[1] / 2, v[1] / 4, 5e-324, 1e-310, 0.0]
    x = np.concatenate([v, mids, extra])
    with np.errstate(over="ignore"):
        x = np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, 0)])
    x = np.concatenate([x, -x, [np.inf, -np.inf, np.nan, -np.nan]])
    if f.name == "fp32":  # random doubles over the whole exponent range too
        x = np.concatenate([x, rng.standard_normal(200_000) * np.exp2(rng.integers(-160, 140, 200_000))])
    return x


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_double_rounding_matches_codec(fmt):
    """The dequantize rounding (float64 -> fmt, nearest even, no double
    rounding) is fpisa.codec.doubles_to_bits, ties, subnormals, overflow to
    Inf and NaN included."""
    x = _rounding_candidates(fmt, np.random.default_rng(3))
    out = np.empty(x.size, get_format(fmt).bits_dtype)
    HK.doubles_to_bits(x, KIND[fmt], out)
    expected = doubles_to_bits(x, fmt)
    nan = np.isnan(x)
    assert_bits_equal(out[~nan], expected[~nan], fmt, what="float64 -> format")
    if fmt != "fp32":  # fp32 keeps the hardware's NaN; only NaN-ness matters here
        assert_bits_equal(out[nan], expected[nan], fmt, what="NaN")
    assert np.all(np.isnan(from_bits(out[nan], fmt)))


def test_fp16_differs_from_rounding_through_float32():
    """The case the integer rounding exists for: a double just above an fp16
    tie rounds up, but float32 first rounds it onto the tie, then down."""
    tie = 1.0 + 2.0**-11  # halfway between 1 and 1 + 2^-10
    x = np.array([tie + 2.0**-40])
    out = np.empty(1, np.uint16)
    HK.doubles_to_bits(x, HK.KIND_FP16, out)
    assert out[0] == 0x3C01 == doubles_to_bits(x, "fp16")[0]
    assert x.astype(np.float32).astype(np.float16).view(np.uint16)[0] == 0x3C00


# ------------------------------------------------------------ block exponents
@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_block_exponent_of_every_binade(fmt):
    bits = finite_patterns(fmt, np.random.default_rng(5))
    got = sml.block_exponents(bits, fmt, 1)
    np.testing.assert_array_equal(got, frexp_exponent(bits, fmt))
    np.testing.assert_array_equal(got, sml._reference_block_exponents(bits, fmt, 1))


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("block_size", [1, 2, 3, 7, 16, 63, 64, 65, 100, 256, 5000])
def test_block_exponents_match_reference(fmt, block_size):
    rng = np.random.default_rng(block_size)
    n = 4321
    bits = clustered_bits(rng, fmt, (n,), spread=int(rng.integers(0, 60)), subnormals=0.1)
    bits[: 2 * block_size] = 0  # all-zero blocks
    bits[2 * block_size: 3 * block_size] = 1 << (get_format(fmt).storage_bits - 1)  # -0.0
    got = sml.block_exponents(bits, fmt, block_size)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, sml._reference_block_exponents(bits, fmt, block_size))
    # the one-pass max over workers is the max of the workers' exponents
    rows = np.stack([bits, np.roll(bits, 17), rng.permutation(bits)])
    e_max = np.empty(got.size, np.int32)
    assert HK.max_block_exponents(rows, KIND[fmt], block_size, e_max)
    expected = np.max([sml._reference_block_exponents(r, fmt, block_size) for r in rows], axis=0)
    np.testing.assert_array_equal(e_max, expected)


# ------------------------------------------------------------------ scales
def test_scale_factors_match_reference():
    e = np.concatenate([np.arange(-1100, 1100), [-(10**12), -3000, 3000, 10**12]])
    for workers in range(1, 257):
        with np.errstate(over="ignore", divide="ignore"):  # 0 and Inf at the ends
            expected = sml._reference_scale_factors(e, workers)
        np.testing.assert_array_equal(sml.scale_factors(e, workers).view(np.int64),
                                      expected.view(np.int64))
    assert sml.scale_factors(np.array([[3, 4]]), 2).shape == (1, 2)


# ------------------------------------------------------------------ quantize
def _binade_blocks(fmt, rng, values_per_block):
    """Blocks of values of one binade each, paired with every block exponent
    from the binade's own up to 130 (and EMPTY for an all-zero block)."""
    bits = finite_patterns(fmt, rng)
    e_local = frexp_exponent(bits, fmt)
    blocks, exponents = [], []
    for e in np.unique(e_local):
        binade = bits[e_local == e]
        members = binade[rng.integers(0, binade.size, values_per_block)]
        # the binade's largest magnitude (the worst case for overflow), both signs
        largest = binade[np.argmax(np.abs(from_bits(binade, fmt).astype(np.float64)))]
        sign = np.array(1 << (get_format(fmt).storage_bits - 1), largest.dtype)
        members[0], members[1] = largest, largest ^ sign
        for e_max in range(int(e), 131):
            blocks.append(members)
            exponents.append(e_max)
    blocks.append(np.zeros(values_per_block, get_format(fmt).bits_dtype))
    exponents.append(sml.EMPTY_BLOCK_EXPONENT)
    return np.concatenate(blocks), np.array(exponents)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_quantize_every_binade_every_exponent_every_k(fmt):
    rng = np.random.default_rng(11)
    block_size = 3
    bits, e_max = _binade_blocks(fmt, rng, block_size)
    for workers in range(1, 257):
        got = sml.quantize(bits, fmt, e_max, workers, block_size)
        assert got.dtype == np.int32
        expected = sml._reference_quantize(bits, fmt, e_max, workers, block_size)
        np.testing.assert_array_equal(got, expected, err_msg=f"K={workers}")


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_dequantize_every_exponent(fmt):
    """Sums of every magnitude at every block exponent: the results span the
    format's overflow, normal, subnormal and underflow-to-zero ranges."""
    rng = np.random.default_rng(13)
    block_size = 40
    exponents = np.arange(sml.EMPTY_BLOCK_EXPONENT, 131)
    sums = (rng.choice([-1, 1], (exponents.size, block_size))
            * np.exp2(rng.uniform(0, 31, (exponents.size, block_size)))).astype(np.int64)
    sums[:, :8] = [0, 1, -1, 2, -sml.INT32_MAX, sml.INT32_MAX, -(2**31), 3]
    sums = np.clip(sums, -(2**31), sml.INT32_MAX).astype(np.int32).ravel()
    for workers in [1, 2, 3, 5, 7, 8, 64, 100, 255, 256]:
        got = sml.dequantize(sums, fmt, exponents, workers, block_size)
        expected = sml._reference_dequantize(sums, fmt, exponents, workers, block_size)
        assert_bits_equal(got, expected, fmt, what=f"dequantize K={workers}")
        wire = sums.astype(">i4").tobytes()
        assert_bits_equal(sml.dequantize_from_wire(wire, fmt, exponents, workers, block_size),
                          expected, fmt, what=f"dequantize_from_wire K={workers}")


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_random_blocks_end_to_end(fmt):
    """Random clustered data, partial last blocks, all-zero blocks and -0.0:
    exponents, quantize (plain and to the wire), the integer sum, dequantize
    (plain and from the wire), and sum_workers, each against the numpy path."""
    f = get_format(fmt)
    rng = np.random.default_rng(23)
    for trial in range(12):
        workers = int(rng.choice([1, 2, 3, 8, 31, 100, 256])) if trial else 256
        block_size = int(rng.choice([1, 5, 16, 64, 100]))
        n = int(rng.integers(1, 700))
        values = clustered_bits(rng, fmt, (workers, n), spread=int(rng.integers(0, 50)),
                                subnormals=0.05)
        values[:, :block_size] = 0
        values[rng.integers(0, workers), block_size: 2 * block_size] = 1 << (f.storage_bits - 1)
        exps = np.stack([sml.block_exponents(v, fmt, block_size) for v in values])
        ref_exps = np.stack([sml._reference_block_exponents(v, fmt, block_size) for v in values])
        np.testing.assert_array_equal(exps, ref_exps)
        e_max = exps.max(axis=0)
        sums = np.zeros(n, np.int64)
        for v in values:
            q = sml.quantize(v, fmt, e_max, workers, block_size)
            np.testing.assert_array_equal(q, sml._reference_quantize(v, fmt, e_max, workers, block_size))
            wire = sml.quantize_to_wire(v, fmt, e_max, workers, block_size)
            assert wire.dtype == np.uint8 and wire.tobytes() == q.astype(">i4").tobytes()
            sums += q
        sums = sums.astype(np.int32)
        expected = sml._reference_dequantize(sums, fmt, e_max, workers, block_size)
        assert_bits_equal(sml.dequantize(sums, fmt, e_max, workers, block_size), expected, fmt)
        assert_bits_equal(sml.dequantize_from_wire(sums.astype(">i4"), fmt, e_max, workers,
                                                   block_size), expected, fmt)
        assert_bits_equal(sml.sum_workers(values, fmt, block_size), expected, fmt,
                          what=f"sum_workers K={workers} block={block_size}")


def test_wire_buffers_of_any_alignment_and_kind():
    rng = np.random.default_rng(29)
    bits = rng.standard_normal(1000).astype(np.float32).view(np.uint32)
    e = sml.block_exponents(bits, "fp32", 64)
    expected = sml._reference_quantize(bits, "fp32", e, 4, 64).astype(">i4").tobytes()
    packet = np.zeros(42 + 4000 + 3, np.uint8)  # a payload at an odd offset
    out = sml.quantize_to_wire(bits, "fp32", e, 4, 64, packet[42:4042])
    assert out.base is packet and packet[42:4042].tobytes() == expected
    assert not packet[:42].any() and not packet[4042:].any()
    be = np.empty(1000, ">i4")
    assert sml.quantize_to_wire(bits, "fp32", e, 4, 64, be) is be and be.tobytes() == expected
    ba = bytearray(4000)
    sml.quantize_to_wire(bits, "fp32", e, 4, 64, ba)
    assert bytes(ba) == expected
    # reading back from the same odd offset, into a given output array
    sums = np.frombuffer(expected, ">i4").astype(np.int32)
    out_bits = np.empty(1000, np.uint32)
    got = sml.dequantize_from_wire(packet[42:4042], "fp32", e, 4, 64, out=out_bits)
    assert got is out_bits
    np.testing.assert_array_equal(got, sml._reference_dequantize(sums, "fp32", e, 4, 64))


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_non_finite_values_are_refused(fmt):
    f = get_format(fmt)
    inf = f.exponent_all_ones << f.fraction_bits
    for special in (inf, inf | 1, inf | (1 << (f.storage_bits - 1))):
        for position in (0, 63, 64, 99):  # a full block and the partial last one
            bits = np.zeros(100, f.bits_dtype)
            bits[position] = special
            bits[position - 1] = special
            e = np.zeros(2, np.int64)
            calls = [lambda: sml.block_exponents(bits, fmt, 64),
                     lambda: sml.quantize(bits, fmt, e, 2, 64),
                     lambda: sml.quantize_to_wire(bits, fmt, e, 2, 64),
                     lambda: sml.sum_workers(np.stack([bits * 0, bits]), fmt, 64)]
            for call in calls:
                with pytest.raises(ValueError, match=r"Inf/NaN \(2 non-finite values\)"):
                    call()


def test_bad_arguments_are_refused():
    bits = np.ones(10, np.uint32) * 0x3F800000
    e = np.ones(3, np.int64)
    for workers in (0, 257, -1):
        for call in (lambda: sml.quantize(bits, "fp32", e, workers, 4),
                     lambda: sml.dequantize(np.zeros(10, np.int32), "fp32", e, workers, 4),
                     lambda: sml.scale_factors(e, workers),
                     lambda: sml.quantize_to_wire(bits, "fp32", e, workers, 4),
                     lambda: sml.dequantize_from_wire(bytes(40), "fp32", e, workers, 4)):
            with pytest.raises(ValueError, match="1..256 workers"):
                call()
    for block_size in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="block_size"):
            sml.quantize(bits, "fp32", e, 2, block_size)
        with pytest.raises(ValueError, match="block_size"):
            sml.block_exponents(bits, "fp32", block_size)
    # too few exponents for the blocks; more than needed are ignored, as before
    with pytest.raises(ValueError, match="2 block exponents do not cover 10 values"):
        sml.quantize(bits, "fp32", e[:2], 2, 4)
    with pytest.raises(ValueError, match="2 block exponents do not cover 10 sums"):
        sml.dequantize(np.zeros(10, np.int32), "fp32", e[:2], 2, 4)
    with pytest.raises(ValueError, match="do not cover"):
        sml._reference_quantize(bits, "fp32", e[:2], 2, 4)
    np.testing.assert_array_equal(sml.quantize(bits, "fp32", np.ones(9), 2, 4),
                                  sml._reference_quantize(bits, "fp32", np.ones(9), 2, 4))
    # an exponent below the block's own: q would not fit int32 (numpy's cast
    # gave INT32_MIN with a RuntimeWarning; the kernels refuse)
    with pytest.raises(ValueError, match="exceed int32"):
        sml.quantize(bits, "fp32", np.array([1, -1, 1]), 1, 4)
    # wire buffers
    with pytest.raises(ValueError, match="has 39 bytes, expected 40"):
        sml.quantize_to_wire(bits, "fp32", e, 2, 4, bytearray(39))
    with pytest.raises(ValueError, match="read-only"):
        sml.quantize_to_wire(bits, "fp32", e, 2, 4, bytes(40))
    with pytest.raises(ValueError, match="C-contiguous"):
        sml.quantize_to_wire(bits, "fp32", e, 2, 4, np.zeros(80, np.uint8)[::2])
    with pytest.raises(ValueError, match="multiple of 4"):
        sml.dequantize_from_wire(bytes(41), "fp32", e, 2, 4)
    with pytest.raises(ValueError, match="out must be"):
        sml.dequantize_from_wire(bytes(40), "fp32", e, 2, 4, out=np.empty(10, np.uint16))
    with pytest.raises(ValueError, match="at most 256 workers"):
        sml.sum_workers(np.zeros((257, 4), np.uint32), "fp32", 4)


def test_bounds_hold_for_every_k_at_the_worst_case():
    """The no-overflow argument through the kernels: with the largest value
    below 2^e_max, every K in 1..256 sums without leaving int32."""
    for fmt in FORMAT_NAMES:
        f = get_format(fmt)
        binades = np.arange(f.exponent_all_ones)
        worst = make_bits(binades % 2, binades, (1 << f.fraction_bits) - 1, fmt)
        for workers in range(1, 257):
            values = np.tile(worst, (workers, 1))
            expected = sml._reference_dequantize(
                workers * sml._reference_quantize(worst, fmt, sml.block_exponents(worst, fmt, 1),
                                                  workers, 1).astype(np.int64),
                fmt, sml.block_exponents(worst, fmt, 1), workers, 1)
            assert_bits_equal(sml.sum_workers(values, fmt, 1), expected, fmt, what=f"K={workers}")


# ------------------------------------------------------------------ byte swap
@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64, np.float16, np.float32,
                                   np.float64, np.int16, np.int32, np.int64])
def test_byteswap_matches_numpy(dtype):
    rng = np.random.default_rng(31)
    for n in [0, 1, 2, 3, 5, 7, 15, 31, 33, 63, 1001]:
        raw = rng.integers(0, 256, n * np.dtype(dtype).itemsize, dtype=np.uint8)
        values = raw.view(dtype)
        got = HK.byteswap(values)
        assert got.dtype == values.dtype and got.tobytes() == values.byteswap().tobytes()
        copy = values.copy()
        assert HK.byteswap(copy, copy) is copy  # in place
        assert copy.tobytes() == values.byteswap().tobytes()
    square = rng.integers(0, 2**16, (5, 7), dtype=np.uint16)  # any contiguous shape
    np.testing.assert_array_equal(HK.byteswap(square), square.byteswap())
    # a view of the other signedness/kind of the same size as out
    out = np.empty(5 * 7, np.int16).reshape(5, 7)
    assert HK.byteswap(square, out).tobytes() == square.byteswap().tobytes()


@pytest.mark.parametrize("itemsize", [2, 4, 8])
def test_byteswap_unaligned(itemsize):
    """Unaligned arrays (a payload at an odd offset of a packet) are handled."""
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[itemsize]
    n = 37
    buf = np.random.default_rng(itemsize).integers(0, 256, n * itemsize + 8, dtype=np.uint8)
    for offset in (1, 3):
        values = np.frombuffer(buf.data, u, n, offset)
        assert not values.flags.aligned
        target = np.zeros(n * itemsize + 8, np.uint8)
        out = np.frombuffer(target.data, u, n, offset + 2) if itemsize > 2 else \
            np.frombuffer(target.data, u, n, offset)
        HK.byteswap(values, out)
        assert out.tobytes() == values.byteswap().tobytes()


def test_byteswap_refusals():
    a = np.arange(20, dtype=np.uint32)
    with pytest.raises(ValueError, match="C-contiguous"):
        HK.byteswap(a[::2])
    with pytest.raises(ValueError, match="C-contiguous"):
        HK.byteswap(a.reshape(4, 5).T)
    with pytest.raises(ValueError, match="C-contiguous"):
        HK.byteswap(a, np.empty(40, np.uint32)[::2])
    with pytest.raises(ValueError, match="does not match"):
        HK.byteswap(a, np.empty(21, np.uint32))
    with pytest.raises(ValueError, match="does not match"):
        HK.byteswap(a, np.empty(20, np.uint16))
    with pytest.raises(ValueError, match="2-, 4- and 8-byte"):
        HK.byteswap(np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="2-, 4- and 8-byte"):
        HK.byteswap(np.zeros(4, np.complex64))
    with pytest.raises(ValueError, match="overlaps"):
        HK.byteswap(a[1:], a[:-1])
    read_only = np.empty(20, np.uint32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        HK.byteswap(a, read_only)
    with pytest.raises(ValueError, match="numpy array"):
        HK.byteswap(a, bytearray(80))


# ------------------------------------------------------------ ATP baseline
def _atp_reference(bits):
    """ATP's AVX2 quantizer in numpy: float32 product, round half even,
    out of range and NaN -> INT32_MIN (x86 cvtps2dq)."""
    with np.errstate(over="ignore", invalid="ignore"):
        r = np.rint(bits.view(np.float32) * np.float32(1e6))
        ok = np.abs(r) < np.float32(2**31)
        return np.where(ok, np.where(ok, r, 0).astype(np.int32), np.int32(-(2**31)))


def test_atp_quantizer_matches_its_formula():
    rng = np.random.default_rng(37)
    bits = finite_patterns("fp32", rng)
    specials = np.array([0x7F800000, 0xFF800000, 0x7FC00000, 0x80000000, 0], np.uint32)
    near = np.array([2147.483, 2147.4836, -2147.4836, 2147.48365, 0.5e-6, 1.5e-6, 2.5e-6],
                    np.float32).view(np.uint32)
    bits = np.concatenate([bits, specials, near])
    np.testing.assert_array_equal(HK.atp_quantize(bits), _atp_reference(bits))
    sums = np.concatenate([rng.integers(-(2**31), 2**31, 100_000),
                           [0, 1, -1, 2**31 - 1, -(2**31), 16777217, -16777217]]).astype(np.int32)
    expected = (sums.astype(np.float32) / np.float32(1e6)).view(np.uint32)
    np.testing.assert_array_equal(HK.atp_dequantize(sums), expected)


# ------------------------------------------------------------ vectorization
_ASM_SCRIPT = textwrap.dedent("""
    import re, sys, json
    import numpy as np
    from fpisa import _host_kernels as HK
    from fpisa import switchml as sml
    bits = np.ones(256, np.uint32)
    e = sml.block_exponents(bits, "fp32", 64)
    sml.dequantize_from_wire(sml.quantize_to_wire(bits, "fp32", e, 2, 64), "fp32", e, 2, 64)
    for u in (np.uint16, np.uint32, np.uint64):
        HK.byteswap(np.zeros(8, u))
    found = {}
    for name in ("byteswap_kernel", "quantize", "dequantize"):
        disp = getattr(HK, name)
        for sig in disp.signatures:
            asm = disp.inspect_asm(sig)
            found[name + str(sig[0].dtype)] = sorted(set(re.findall(r"^\\s+(v[a-z0-9]+)\\s[^\\n]*[yz]mm", asm, re.M)))
    print(json.dumps(found))
""")


def _has_avx2():
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not _has_avx2(), reason="the instruction check is for AVX2 machines")
def test_kernels_are_vectorized(tmp_path):
    """The loops compile to 256-bit vector code (or 512-bit: on an AVX-512
    machine LLVM puts some loops in zmm registers): vpshufb for the byte swaps,
    vmulpd/vcvtps2pd for quantize, vdivpd for dequantize. Compiled afresh in
    a subprocess (numba does not disassemble code loaded from its cache)."""
    import json
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd()] + sys.path)
    out = subprocess.run([sys.executable, "-c", _ASM_SCRIPT], env=env, capture_output=True,
                         text=True, check=True, timeout=600)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    for width in ("uint16", "uint32", "uint64"):
        assert "vpshufb" in found["byteswap_kernel" + width], found
    assert {"vcvtps2pd", "vmulpd", "vpshufb"} <= set(found["quantizeuint32"]), found
    assert re.search(r"vcvt[t]?pd2dq", " ".join(found["quantizeuint32"])), found
    assert {"vcvtdq2pd", "vdivpd", "vpshufb"} <= set(found["dequantizeint32"]), found


# ------------------------------------------------------------ measurement API
def test_measure_host_rates_shape():
    for threads in (1, 2):
        rates = HK.measure_host_rates(n=4096, threads=threads, repeats=1)
        assert set(rates) == set(HK.HOST_RATE_KEYS) | {"meta"}
        for key in ("fpisa_switch_swap", "fpisa_host_swap", "numpy_byteswap"):
            assert set(rates[key]) == {"fp16", "fp32", "fp64"}
        for key in ("switchml", "switchml_quantize_dequantize", "switchml_exponents", "switchml_quantize",
                    "switchml_dequantize", "switchml_numpy"):
            assert set(rates[key]) == {"fp32", "fp16"}
        assert all(v > 0 for key in HK.HOST_RATE_KEYS for v in rates[key].values())
        assert set(rates["atp"]) == {"fp32"}
        assert rates["meta"]["threads"] == threads
    assert "switchml_numpy" not in HK.measure_host_rates(n=4096, repeats=1, include_numpy=False)
