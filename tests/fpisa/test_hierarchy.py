"""The two-level (leaf/spine) model, fpisa.hierarchy, against the pure-Python
oracle (leaves and spine computed with fpisa._oracle, raw register pairs
combined by a few lines written from the rule in the module docstring) and
against the flat model where the two must coincide."""

import numpy as np
import pytest

import fpisa
from fpisa import _oracle
from fpisa.hierarchy import aggregate_hierarchical, aggregate_hierarchical_detailed
from oracle_helpers import FORMAT_NAMES, assert_bits_equal, clustered_bits, oracle_aggregate

GROUPINGS = [((0,), (1, 2, 3), (4, 5)), ((2, 0), (5, 1, 4, 3)), ((0, 1, 2, 3, 4, 5),)]


def random_orders(rng, size: int, n: int) -> np.ndarray:
    return np.argsort(rng.random((n, size)), axis=1)


def oracle_hierarchical(bits, mode, groups, leaf_orders, spine_order, fmt, leaf_output,
                        register_bits=32):
    """Leaves and spine with the oracle; raw pairs combined per the documented rule."""
    leaves = [oracle_aggregate(bits[list(g)], mode, fmt=fmt, order=o, register_bits=register_bits)
              for g, o in zip(groups, leaf_orders)]
    if leaf_output == "normalized":
        partials = np.stack([r.result for r in leaves])
        return oracle_aggregate(partials, mode, fmt=fmt, order=spine_order,
                                register_bits=register_bits).result
    out = []
    for j in range(bits.shape[1]):
        arrivals = spine_order[j]
        E = leaves[arrivals[0]].exponent_register[j]
        A = leaves[arrivals[0]].mantissa_register[j]
        flags = leaves[arrivals[0]].element_flags[j]
        for leaf in arrivals[1:]:
            e = leaves[leaf].exponent_register[j]
            total = (A >> max(e - E, 0)) + (leaves[leaf].mantissa_register[j] >> max(E - e, 0))
            A = _oracle.wrap(total, register_bits)
            E = max(E, e)
            flags |= leaves[leaf].element_flags[j] | (fpisa.ELEMENT_OVERFLOW if A != total else 0)
        out.append(_oracle.normalize(E, A, flags, fmt, "rz"))
    return np.array(out, dtype=fpisa.FORMATS[fmt].bits_dtype)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("groups", GROUPINGS)
@pytest.mark.parametrize("mode,leaf_output", [("fpisa", "normalized"), ("fpisa", "raw"),
                                              ("fpisa-a", "normalized")])
def test_matches_oracle_with_per_element_orders(fmt, groups, mode, leaf_output):
    rng = np.random.default_rng(11)
    n = 600
    bits = clustered_bits(rng, fmt, (6, n), spread=30, specials=0.01, subnormals=0.03)
    leaf_orders = [random_orders(rng, len(g), n) for g in groups]
    spine_order = random_orders(rng, len(groups), n)
    got = aggregate_hierarchical(bits, mode, groups, fmt=fmt, leaf_output=leaf_output,
                                 leaf_orders=leaf_orders, spine_order=spine_order)
    expected = oracle_hierarchical(bits, mode, groups, leaf_orders, spine_order, fmt, leaf_output)
    assert_bits_equal(got, expected, fmt, bits, f"{mode} {leaf_output} {groups}")


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("leaf_output", ["normalized", "raw"])
def test_one_worker_per_leaf_is_the_flat_switch(fmt, leaf_output):
    """A leaf with one worker passes its value on unchanged (normalized: the
    read-out of one value is exact; raw: its registers are the extract), so
    the spine sees exactly what a single switch would."""
    rng = np.random.default_rng(5)
    bits = clustered_bits(rng, fmt, (5, 2000), spread=40, specials=0.01, subnormals=0.05)
    order = random_orders(rng, 5, 2000)
    got = aggregate_hierarchical(bits, "fpisa", [[k] for k in range(5)], fmt=fmt,
                                 leaf_output=leaf_output, spine_order=order)
    assert_bits_equal(got, fpisa.aggregate(bits, "fpisa", fmt=fmt, order=order), fmt, bits)


@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a"])
def test_one_leaf_is_the_flat_switch(mode):
    rng = np.random.default_rng(6)
    bits = clustered_bits(rng, "fp32", (4, 3000), spread=30, specials=0.0, subnormals=0.0)
    order = random_orders(rng, 4, 3000)
    got = aggregate_hierarchical(bits, mode, [range(4)], leaf_orders=[order])
    assert_bits_equal(got, fpisa.aggregate(bits, mode, order=order), "fp32", bits)


def test_switchml_hierarchy_equals_flat():
    """Integer partial sums are associative: the hierarchy changes nothing."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((6, 5000)) * 10.0 ** rng.integers(-4, 4, (1, 5000))).astype(np.float32)
    for groups in GROUPINGS:
        got = aggregate_hierarchical(x, "switchml", groups, block_size=64)
        np.testing.assert_array_equal(got.view(np.uint32),
                                      fpisa.aggregate(x, "switchml", block_size=64).view(np.uint32))


def test_float32_hierarchy_sums_partials_in_float32():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 1000)).astype(np.float32)
    groups = GROUPINGS[0]
    got = aggregate_hierarchical(x, "float32", groups)
    partials = np.stack([x[list(g)].sum(axis=0, dtype=np.float32) if len(g) == 1 else
                         np.add.reduce(x[list(g)], axis=0, dtype=np.float32) for g in groups])
    expected = partials[0] + partials[1] + partials[2]
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_detailed_reports_what_went_up():
    x = np.array([[1.0, 2.0], [3.0, -4.0], [0.5, 0.25]], np.float32)
    r = aggregate_hierarchical_detailed(x, "fpisa", [[0, 1], [2]])
    np.testing.assert_array_equal(r.partial_bits.view(np.float32), [[4.0, -2.0], [0.5, 0.25]])
    np.testing.assert_array_equal(r.result, np.array([4.5, -1.75], np.float32))
    raw = aggregate_hierarchical_detailed(x, "fpisa", [[0, 1], [2]], leaf_output="raw")
    assert raw.partial_exponent.shape == (2, 2) and raw.partial_bits is None
    np.testing.assert_array_equal(raw.result, np.array([4.5, -1.75], np.float32))


@pytest.mark.parametrize("kwargs,message", [
    ({"groups": [[0, 1], [1, 2]]}, "partition"),
    ({"groups": [[0, 1], []]}, "at least one worker"),
    ({"groups": [[0, 1, 2]], "leaf_output": "raw", "mode": "fpisa-a"}, "fpisa' only"),
    ({"groups": [[0, 1, 2]], "leaf_output": "bogus"}, "leaf_output"),
    ({"groups": [[0, 1], [2]], "leaf_orders": [[0, 0], None]}, "leaf 0"),
    ({"groups": [[0, 1], [2]], "spine_order": [0, 1, 2]}, "order"),
    ({"groups": [[0, 1, 2]], "mode": "exact"}, "hierarchical mode"),
])
def test_bad_input_is_a_clear_error(kwargs, message):
    x = np.ones((3, 4), np.float32)
    kwargs = {"mode": "fpisa", **kwargs}
    with pytest.raises(ValueError, match=message):
        aggregate_hierarchical(x, kwargs.pop("mode"), kwargs.pop("groups"), **kwargs)
