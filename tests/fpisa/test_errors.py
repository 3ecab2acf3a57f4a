"""Error analysis helpers: ULP distance counts the representable values
between two results (checked by ranking every fp16 value), relative error and
the summary report on constructed cases."""

import numpy as np
import pytest

import fpisa
from oracle_helpers import all_patterns, is_finite_bits


def value_ranks(fmt: str):
    """Every non-NaN 16-bit pattern -> its position on the sorted value line."""
    every = all_patterns(fmt)
    keep = is_finite_bits(every, fmt) | ((every & 0x7FFF) == (0x7C00 if fmt == "fp16" else 0x7F80))
    values = fpisa.from_bits(every[keep], fmt).astype(np.float64)
    distinct = np.unique(values)  # -0 and +0 are one value
    return every[keep], np.searchsorted(distinct, values)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_ulp_distance_counts_representable_values(fmt):
    patterns, ranks = value_ranks(fmt)
    rng = np.random.default_rng(41)
    for _ in range(4):
        other = rng.permutation(patterns.size)
        got = fpisa.ulp_distance(patterns, patterns[other], fmt)
        np.testing.assert_array_equal(got, np.abs(ranks - ranks[other]))


def test_ulp_distance_nan_and_relative_error():
    nan, inf = np.float32(np.nan), np.float32(np.inf)
    result = np.array([1.0, nan, nan, 1.0, 0.0, -0.0, 3.0], np.float32)
    reference = np.array([1.0, nan, 1.0, nan, -0.0, 0.0, 2.0], np.float32)
    np.testing.assert_array_equal(fpisa.ulp_distance(result, reference), [0, 0, -1, -1, 0, 0, 2**22])
    rel = fpisa.relative_error(np.array([3.0, 0.0, 1.0, inf], np.float32),
                               np.array([2.0, 0.0, 0.0, inf], np.float32))
    np.testing.assert_array_equal(rel, [0.5, 0.0, np.inf, 0.0])


def test_error_report():
    exact = np.array([1.0, 2.0, 4.0, 8.0], np.float32)
    result = exact.copy()
    result[1] = np.nextafter(result[1], np.float32(0))  # 1 ulp low: 2 - 2^-23
    report = fpisa.error_report(result, exact)
    assert report["elements"] == 4
    assert report["bit_exact_fraction"] == 0.75
    assert report["max_ulp"] == 1 and report["nan_mismatches"] == 0
    assert report["max_rel_error"] == 2.0**-24  # 2^-23 below 2.0, relative to 2
