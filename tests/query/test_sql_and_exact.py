"""The query form (sqlglot), the worker's vectorized filter/grouping, and the
correctly rounded reference sums."""

from fractions import Fraction

import numpy as np
import pytest

from fpisa.codec import doubles_to_bits
from hosts.query import partial as P
from hosts.query.exact import exact_avg_bits, exact_group_sums, exact_sum_bits, round_rational
from hosts.query.sql import TPCH, QueryError, parse

SCHEMA = {"k": "int", "s": "string", "x": "float", "y": "float", "d": "date"}


def test_tpch_queries_parse():
    q1 = parse(TPCH["q1"])
    assert q1.keys == ("l_returnflag", "l_linestatus")
    assert [a.func for a in q1.aggregates] == ["sum"] * 4 + ["avg"] * 3 + ["count"]
    assert q1.order_by == (("l_returnflag", False), ("l_linestatus", False))
    # DATE '1998-12-01' - INTERVAL '90' DAY, folded to days since 1970
    assert q1.where == ("cmp", "<=", ("col", "l_shipdate"), ("date", 10561 - 90))
    q6 = parse(TPCH["q6"])
    assert q6.keys == () and q6.aggregates[0].expr == (
        "arith", "*", ("col", "l_extendedprice"), ("col", "l_discount"))


@pytest.mark.parametrize("sql,match", [
    ("SELECT k, SUM(nope) FROM t GROUP BY k", "unknown column 'nope'"),
    ("SELECT k, SUM(s) FROM t GROUP BY k", "not a float column"),
    ("SELECT k, SUM(k) FROM t GROUP BY k", "not a float column"),
    ("SELECT x, COUNT(*) FROM t GROUP BY x", "keys must be integer or string"),
    ("SELECT k, SUM(x) FROM u GROUP BY k", "unknown table 'u'"),
    ("SELECT k, SUM(x) FROM t GROUP BY k LIMIT 3", "LIMIT is not supported"),
    ("SELECT k, MEDIAN(x) FROM t GROUP BY k", "unsupported select item"),
    ("SELECT k, x FROM t GROUP BY k", "neither grouped nor aggregated"),
    ("SELECT SUM(x) FROM t WHERE s < 'a'", "strings compare with =, <> and IN only"),
    ("SELECT SUM(x) FROM t WHERE s = 3", "mixes types"),
    ("SELECT SUM(x) FROM t JOIN u ON t.k = u.k", "JOIN is not supported"),
    ("SELECT COUNT(*) FROM t GROUP BY k", "must also be selected"),
    ("SELEC k FROM t", "cannot parse|expected one SELECT"),
])
def test_bad_queries_are_query_errors(sql, match):
    with pytest.raises(QueryError, match=match):
        parse(sql, SCHEMA, "t")


def cols_of(rng, n):
    codes = rng.integers(0, 3, n).astype(np.int32)
    return {"k": rng.integers(-2, 3, n).astype(np.int64), "s": (codes, ["a", "b", "c"]),
            "x": rng.standard_normal(n).astype(np.float32), "y": rng.uniform(0, 1, n).astype(np.float32),
            "d": rng.integers(9000, 9100, n).astype(np.int32)}


def test_filter_group_and_partials_match_a_plain_loop():
    rng = np.random.default_rng(0)
    n = 5000
    cols = cols_of(rng, n)
    spec = parse("SELECT k, s, SUM(x * 2 + y) AS t, MIN(x), MAX(y), COUNT(*) FROM t "
                 "WHERE (s IN ('a', 'c') OR x > 0.5) AND NOT d BETWEEN DATE '1994-09-01' "
                 "AND DATE '1994-08-22' + INTERVAL '20' DAY AND y <> 0.25 "
                 "GROUP BY k, s", SCHEMA, "t")
    part = P.partials(spec, cols, n, "fp32")
    names = cols["s"][1]
    expected = {}
    for i in range(n):
        s = names[cols["s"][0][i]]
        x, y, d = cols["x"][i], cols["y"][i], cols["d"][i]
        if (s in ("a", "c") or x > np.float32(0.5)) and not (9009 <= d <= 9019) and y != np.float32(0.25):
            e = expected.setdefault((int(cols["k"][i]), s), [0, [], [], []])
            e[0] += 1
            e[1].append(float(x * np.float32(2) + y))
            e[2].append(x)
            e[3].append(y)
    assert set(part.keys) == set(expected)
    for g, key in enumerate(part.keys):
        c, t, xs, ys = expected[key]
        assert part.count[g] == c
        # a float64 sum in row order (as bincount adds), rounded once
        assert part.sums[0][g] == doubles_to_bits(np.array([sum(t)]), "fp32")[0]
        assert part.mins[0][g] == np.min(xs).view(np.uint32)
        assert part.maxs[0][g] == np.max(ys).view(np.uint32)


def test_layout_claims_one_key_per_entry():
    keys = [(i, "x") for i in range(40)]
    lay = P.layout(keys, 16)
    assert lay.claim.shape == (16,) and lay.local_collisions == 40 - np.unique(lay.index).size
    for i in np.unique(lay.index):
        first = np.flatnonzero(lay.index == i)[0]
        assert lay.claim[i] == lay.fingerprint[first] != 0
    assert np.array_equal(P.layout(keys, 16).fingerprint, lay.fingerprint)  # deterministic


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16"])
def test_round_rational_is_round_to_nearest_even(fmt):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(3000) * 10.0 ** rng.uniform(-45, 39, 3000),
                        [3.4028235e38 * 1.0000001, 2.0 ** -150, 3 * 2.0 ** -151, 65519.99, 65520.0]])
    ref = doubles_to_bits(x, fmt)
    for v, r in zip(x.tolist(), ref.tolist()):
        num, den = Fraction(v).as_integer_ratio()
        assert round_rational(num, den, fmt) == r
        assert round_rational(num * 3, den * 3, fmt) == r  # not a power-of-two denominator
    # a tie between two floats of fp32, not representable in a double: 1 + 2^-24 + 2^-80
    assert round_rational((1 << 80) + (1 << 56) + 1, 1 << 80, "fp32") == np.float32(1 + 2 ** -23).view(np.uint32)
    assert round_rational((1 << 80) + (1 << 56), 1 << 80, "fp32") == np.float32(1).view(np.uint32)


def test_exact_group_sums_and_averages():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(2000) * 10.0 ** rng.integers(-20, 20, 2000)).astype(np.float32)
    group = rng.integers(0, 3, 2000)
    sums = exact_group_sums(group, 3, x.view(np.uint32), "fp32")
    got = exact_sum_bits(sums, "fp32")
    avg = exact_avg_bits(sums, np.bincount(group), "fp32")
    for g in range(3):
        exact = sum((Fraction(float(v)) for v in x[group == g]), Fraction(0))
        assert got[g] == round_rational(exact.numerator, exact.denominator, "fp32")
        mean = exact / int(np.count_nonzero(group == g))
        assert avg[g] == round_rational(mean.numerator, mean.denominator, "fp32")
    inf = exact_group_sums(np.zeros(2, np.int64), 1, np.array([np.inf, 1], np.float32).view(np.uint32),
                           "fp32")
    assert exact_sum_bits(inf, "fp32")[0] == np.float32(np.inf).view(np.uint32)
