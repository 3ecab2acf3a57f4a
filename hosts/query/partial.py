"""A worker's side of a query: filter, group, partially aggregate, lay out
the switch's group table. Vectorized (numpy, pyarrow, one small Numba
loop for MIN/MAX); no Python per row.

The group table (docs/query.md): ``slots`` entries, as the switch's
register arrays. A group key (the tuple of its key values) hashes
(BLAKE2b, 64 bits, of the tuple's ``repr``: every worker computes the same)
to an entry index and a nonzero 32-bit fingerprint. The key-claim pass
sends each worker's fingerprints at their entries; the switch keeps the
first nonzero one per entry; a worker's group whose fingerprint is not the
entry's winner *spills*: its partial goes to the host instead of the switch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from numba import njit

from fpisa._table_kernels import from_ordered_key, ordered_key
from fpisa.codec import doubles_to_bits
from fpisa.formats import Format, get_format

__all__ = ["evaluate", "predicate_mask", "group_rows", "Partials", "partials", "value_columns",
           "round_to_format", "group_hash", "TableLayout", "layout", "identity_bits"]


def round_to_format(x: np.ndarray, fmt: Format) -> np.ndarray:
    """float32 values -> float32 values representable in ``fmt`` (RNE, once)."""
    if fmt.name == "fp32":
        return x
    bits = doubles_to_bits(x.astype(np.float64), fmt)
    if fmt.float_dtype is not None:
        return bits.view(fmt.float_dtype).astype(np.float32)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def to_format_bits(x: np.ndarray, fmt: Format) -> np.ndarray:
    """float32 values (already representable in fmt) -> fmt bit patterns."""
    if fmt.name == "fp32":
        return np.ascontiguousarray(x, np.float32).view(np.uint32)
    return doubles_to_bits(x.astype(np.float64), fmt)


# -- expressions -----------------------------------------------------------------------

def evaluate(node, cols: dict, n: int):
    """A float expression -> float32 array (or a float32 scalar for a literal)."""
    tag = node[0]
    if tag == "col":
        v = cols[node[1]]
        if isinstance(v, tuple):
            raise ValueError(f"column {node[1]!r} is a string")
        return v.astype(np.float32, copy=False)
    if tag == "lit":
        return np.float32(node[1])
    if tag == "date":
        return np.int32(node[1])
    if tag == "neg":
        return -evaluate(node[1], cols, n)
    if tag == "arith":
        a, b = evaluate(node[2], cols, n), evaluate(node[3], cols, n)
        with np.errstate(all="ignore"):
            op = node[1]
            r = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b
        return np.asarray(r, np.float32) if np.ndim(r) else np.float32(r)
    raise ValueError(f"not a value: {tag}")


def _operand(node, cols: dict, n: int, other=None):
    """Comparison operand: numpy values, with strings as dictionary codes and
    literals cast to the column's type (DuckDB casts literals to REAL)."""
    tag = node[0]
    if tag == "col":
        v = cols[node[1]]
        return v  # tuple (codes, dictionary) for strings
    if tag == "lit":
        value = node[1]
        if isinstance(value, str):
            return value
        if other is not None and not isinstance(other, (tuple, str)):
            kind = np.asarray(other).dtype.kind
            if kind == "f":
                return np.float32(value)
            if kind in "iu" and isinstance(value, float) and not float(value).is_integer():
                return np.float64(value)
        return value
    if tag == "date":
        return np.int32(node[1])
    return evaluate(node, cols, n)


def _compare(op: str, a, b):
    if isinstance(a, tuple) or isinstance(b, tuple):  # a string column
        if isinstance(b, tuple):
            a, b = b, a
        codes, dictionary = a
        if not isinstance(b, str):
            raise ValueError("string columns compare with string literals only")
        code = dictionary.index(b) if b in dictionary else -1
        eq = codes == code
        return eq if op == "=" else ~eq
    return {"=": np.equal, "<>": np.not_equal, "<": np.less, "<=": np.less_equal,
            ">": np.greater, ">=": np.greater_equal}[op](a, b)


def predicate_mask(node, cols: dict, n: int) -> np.ndarray:
    tag = node[0]
    if tag == "and":
        return predicate_mask(node[1], cols, n) & predicate_mask(node[2], cols, n)
    if tag == "or":
        return predicate_mask(node[1], cols, n) | predicate_mask(node[2], cols, n)
    if tag == "not":
        return ~predicate_mask(node[1], cols, n)
    if tag == "cmp":
        left = _operand(node[2], cols, n)
        right = _operand(node[3], cols, n, other=left)
        if node[2][0] == "lit":
            left = _operand(node[2], cols, n, other=right)
        out = _compare(node[1], left, right)
    elif tag == "between":
        x = _operand(node[1], cols, n)
        lo, hi = _operand(node[2], cols, n, other=x), _operand(node[3], cols, n, other=x)
        out = _compare(">=", x, lo) & _compare("<=", x, hi)
    elif tag == "in":
        x = _operand(node[1], cols, n)
        out = np.zeros(n, np.bool_)
        for v in node[2]:
            out |= _compare("=", x, _operand(v, cols, n, other=x))
    else:
        raise ValueError(f"not a predicate: {tag}")
    return np.broadcast_to(np.asarray(out, np.bool_), (n,))


# -- grouping -------------------------------------------------------------------------

def _key_codes(values):
    """(codes int64, key values list) of one key column."""
    if isinstance(values, tuple):  # string: pyarrow's dictionary codes
        codes, dictionary = values
        return codes.astype(np.int64), list(dictionary)
    import pyarrow as pa
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(pa.array(values))
    return (enc.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            [int(v) for v in enc.dictionary.to_numpy(zero_copy_only=False)])


def group_rows(keys: tuple[str, ...], cols: dict, mask: np.ndarray):
    """(group index of each selected row, number of groups, key tuples).

    Rows are those where ``mask``; groups are numbered in first-code order
    (deterministic for the same data)."""
    n_sel = int(np.count_nonzero(mask))
    if not keys:
        return np.zeros(n_sel, np.int64), (1 if n_sel else 0), ([()] if n_sel else [])
    code = None
    radix = 1
    dictionaries = []
    parts = []
    for k in keys:
        c, values = _key_codes(cols[k])
        c = c[mask]
        parts.append(c)
        dictionaries.append(values)
        radix *= max(1, len(values))
    if radix <= 1 << 22:  # dense: one bincount, O(rows)
        code = np.zeros(n_sel, np.int64)
        for c, values in zip(parts, dictionaries):
            code = code * max(1, len(values)) + c
        present = np.bincount(code, minlength=radix) > 0
        ids = np.cumsum(present) - 1
        group = ids[code]
        combos = np.flatnonzero(present)
    else:  # sparse: sort
        stacked = np.stack(parts, axis=1)
        combos_rows, group = np.unique(stacked, axis=0, return_inverse=True)
        group = group.reshape(-1)
        combos = combos_rows
    tuples = []
    if radix <= 1 << 22:
        rest = combos.copy()
        digits = []
        for values in reversed(dictionaries):
            size = max(1, len(values))
            digits.append(rest % size)
            rest //= size
        digits.reverse()
        columns = [[values[i] for i in d.tolist()] for d, values in zip(digits, dictionaries)]
    else:
        columns = [[values[i] for i in combos[:, j].tolist()] for j, values in enumerate(dictionaries)]
    tuples = list(zip(*columns))
    return group.astype(np.int64), len(tuples), tuples


@njit(cache=True, nogil=True)
def _group_min_max(group, keys, num_groups, want_max):
    out = np.empty(num_groups, np.int64)
    seen = np.zeros(num_groups, np.bool_)
    for i in range(group.shape[0]):
        g = group[i]
        k = keys[i]
        if not seen[g] or (k > out[g] if want_max else k < out[g]):
            out[g] = k
            seen[g] = True
    return out


# -- partial aggregates -----------------------------------------------------------------

def value_columns(spec) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """The distinct expressions the query sums (SUM, AVG), mins and maxes."""
    sums, mins, maxs = [], [], []
    for a in spec.aggregates:
        target = {"sum": sums, "avg": sums, "min": mins, "max": maxs}.get(a.func)
        if target is not None and a.expr not in target:
            target.append(a.expr)
    return sums, mins, maxs


@dataclass
class Partials:
    """One worker's (or the host's, for checks) per-group partial aggregates."""

    keys: list  #: key tuples, one per group
    count: np.ndarray  #: int64
    sums: list[np.ndarray]  #: per SUM expression: fmt bit patterns (float64 sum, rounded once)
    mins: list[np.ndarray]  #: fmt bit patterns
    maxs: list[np.ndarray]
    rows: int  #: rows read
    selected: int  #: rows passing WHERE


def selected_values(spec, cols: dict, n: int, fmt: Format):
    """(mask, group, num_groups, keys, per value column the selected rows'
    fmt bit patterns as (sums, mins, maxs))."""
    mask = predicate_mask(spec.where, cols, n) if spec.where is not None else np.ones(n, np.bool_)
    group, num_groups, keys = group_rows(spec.keys, cols, mask)
    sums, mins, maxs = value_columns(spec)

    def bits(expr):
        v = evaluate(expr, cols, n)
        v = np.broadcast_to(v, (n,))[mask]
        return to_format_bits(round_to_format(np.ascontiguousarray(v, np.float32), fmt), fmt)

    return mask, group, num_groups, keys, ([bits(e) for e in sums], [bits(e) for e in mins],
                                           [bits(e) for e in maxs])


def partials(spec, cols: dict, n: int, fmt: str | Format) -> Partials:
    """Filter, group and aggregate ``n`` rows of ``cols`` (the float columns
    already in ``fmt``): COUNT exact, SUM as a float64 sum rounded once to
    ``fmt``, MIN/MAX in the switch's order of bit patterns."""
    fmt = get_format(fmt)
    mask, group, G, keys, (sum_bits, min_bits, max_bits) = selected_values(spec, cols, n, fmt)
    count = np.bincount(group, minlength=G).astype(np.int64)
    sums = []
    for b in sum_bits:
        x = _widen(b, fmt)
        with np.errstate(all="ignore"):
            s = np.bincount(group, weights=x, minlength=G)
        sums.append(doubles_to_bits(s, fmt))
    S = fmt.storage_bits
    mins = [from_ordered_key(_group_min_max(group, ordered_key(b, S), G, False), S).astype(fmt.bits_dtype)
            for b in min_bits]
    maxs = [from_ordered_key(_group_min_max(group, ordered_key(b, S), G, True), S).astype(fmt.bits_dtype)
            for b in max_bits]
    return Partials(keys, count, sums, mins, maxs, n, int(np.count_nonzero(mask)))


def warm_up(fmt: str | Format = "fp32") -> None:
    """Load the compiled kernels a query uses (Numba's cache), so the first
    query does not time their loading."""
    from fpisa.codec import from_bits

    fmt = get_format(fmt)
    x = np.array([1.0, 2.0], np.float32)
    bits = to_format_bits(round_to_format(x, fmt), fmt)
    from_bits(bits, fmt)
    doubles_to_bits(x.astype(np.float64), fmt)
    k = ordered_key(bits, fmt.storage_bits)
    _group_min_max(np.zeros(2, np.int64), k, 1, False)
    _group_min_max(np.zeros(2, np.int64), k, 1, True)


def _widen(bits: np.ndarray, fmt: Format) -> np.ndarray:
    from fpisa.codec import from_bits

    return from_bits(bits, fmt).astype(np.float64)


# -- the group table ------------------------------------------------------------------

def group_hash(key: tuple) -> int:
    """64-bit hash of a key tuple, the same on every worker."""
    return int.from_bytes(hashlib.blake2b(repr(tuple(key)).encode(), digest_size=8).digest(), "little")


def identity_bits(kind: str, fmt: Format) -> int:
    """What a worker without the group sends: +0 for SUM, the largest
    ordered key for MIN (+NaN, all fraction bits set), the smallest for MAX
    (-NaN, all fraction bits set)."""
    S = fmt.storage_bits
    if kind == "sum":
        return 0
    if kind == "min":
        return (1 << (S - 1)) - 1
    return (1 << S) - 1


@dataclass
class TableLayout:
    slots: int
    index: np.ndarray  #: int64 entry of each group
    fingerprint: np.ndarray  #: int64 (nonzero int32 values) of each group
    claim: np.ndarray  #: int32 [slots]: what this worker sends in the key-claim pass
    local_collisions: int  #: groups that lost their entry to another group of this worker


def layout(keys: list, slots: int) -> TableLayout:
    h = np.array([group_hash(k) for k in keys], np.uint64) if keys else np.zeros(0, np.uint64)
    index = ((h >> np.uint64(32)) % np.uint64(slots)).astype(np.int64)
    fp = (h & np.uint64(0xFFFFFFFF)).astype(np.int64)
    fp = np.where(fp >= 1 << 31, fp - (1 << 32), fp)  # as int32
    fp = np.where(fp == 0, 1, fp)
    claim = np.zeros(slots, np.int32)
    # the first of this worker's groups at an entry claims it (assigning in
    # reverse leaves the first in place)
    claim[index[::-1]] = fp[::-1].astype(np.int32)
    local = int(index.size - np.unique(index).size)
    return TableLayout(slots, index, fp, claim, local)
