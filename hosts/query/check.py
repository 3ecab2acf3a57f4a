"""The checks of a query result (docs/query.md, "Correctness").

1. Every worker received identical bits (table winners and every column).
2. The switch is bit-exact: each pass's result equals what the numerics
   core computes from the vectors the workers sent, given the arrival
   orders the switch recorded: SUM with ``fpisa.aggregate`` (as an
   allreduce is checked, ``fpisa.verify``), the key claim with the
   first-nonzero rule, COUNT as an integer sum, MIN/MAX in the ordered-key
   order. The spilled groups' host aggregation is the same function.
3. Against DuckDB on the same data (the table's float columns in the job's
   format): the same groups, COUNT equal, MIN/MAX bit-identical.
4. SUM and AVG: error in ULPs against the correctly rounded value
   (:mod:`query.exact`), for the switch's result and for DuckDB's (its
   double result rounded once to the format).

``ok`` is 1-3; 4 is measured, not asserted (the tests bound it).
"""

from __future__ import annotations

import numpy as np

from fpisa._table_kernels import from_ordered_key, key_claim_winners, ordered_key
from fpisa.codec import doubles_to_bits
from fpisa.errors import ulp_distance
from fpisa.protocol import WireMode
from fpisa.verify import packet_orders, star_reference

from . import partial as P
from .exact import exact_avg_bits, exact_group_sums, exact_sum_bits
from .table import column_arrays, read_table

__all__ = ["check_query", "duckdb_result", "reference_table"]


def _per_element(orders: np.ndarray, E: int, n: int) -> np.ndarray:
    return np.repeat(orders, E, axis=0)[:n]


def switch_checks(spec, config, reports: list[dict], recorded: dict) -> dict:
    job = config.run.job
    K, E, n = job.num_workers, job.packet_elements, config.table_slots
    S = job.format.storage_bits
    first = reports[0]
    identical = all(np.array_equal(first["winners"], r["winners"]) for r in reports)
    for kind in ("count",):
        identical &= all(np.array_equal(first["results"][kind], r["results"][kind]) for r in reports)
    for kind in ("sum", "min", "max"):
        for j in range(len(first["results"][kind])):
            identical &= all(np.array_equal(first["results"][kind][j], r["results"][kind][j])
                             for r in reports)
    passes = {p["name"]: p for p in first["passes"]}
    same_ids = all([p["first_id"] for p in r["passes"]] == [p["first_id"] for p in first["passes"]]
                   for r in reports)
    missing = 0
    mismatched: dict[str, int] = {}

    def orders_of(name, mode, skip=0):
        nonlocal missing
        p = passes[name]
        count = p["ids"] - skip
        orders, miss = packet_orders(recorded, mode, p["first_id"] + skip, count, K)
        missing += miss
        return orders, miss

    orders, miss = orders_of("claim", WireMode.KEY_CLAIM)
    if not miss:
        ref = key_claim_winners(np.stack([r["claim"] for r in reports]), _per_element(orders, E, n))
        mismatched["claim"] = int(np.count_nonzero(ref != first["winners"].astype(np.int64)))
    total = np.stack([r["sent"]["count"][0] for r in reports]).astype(np.int64).sum(axis=0)
    mismatched["count"] = int(np.count_nonzero(total != first["results"]["count"].astype(np.int64)))
    for j in range(len(first["results"]["sum"])):
        exchange, _ = job.pass_packets(n)
        orders, miss = orders_of(f"sum{j}", job.data_wire_mode, skip=exchange)
        if not miss:
            values = np.stack([r["sent"]["sum"][j] for r in reports])
            ref = star_reference(values, job, orders)
            mismatched[f"sum{j}"] = int(np.count_nonzero(ref != first["results"]["sum"][j]))
    for kind in ("min", "max"):
        for j in range(len(first["results"][kind])):
            keys = ordered_key(np.stack([r["sent"][kind][j] for r in reports]), S)
            ref = from_ordered_key(keys.min(axis=0) if kind == "min" else keys.max(axis=0), S)
            mismatched[f"{kind}{j}"] = int(np.count_nonzero(ref != first["results"][kind][j].astype(np.int64)))
    return {"identical_across_workers": bool(identical), "same_packet_ids": bool(same_ids),
            "packets_without_recorded_order": missing,
            "bit_exact": bool(identical and same_ids and missing == 0 and not any(mismatched.values())),
            "mismatched_elements": mismatched}


def reference_table(config, columns: list[str]):
    """The whole table as DuckDB gets it: float columns rounded to the job's format."""
    import pyarrow as pa

    fmt = config.run.job.format
    table = read_table(config.table, columns)
    fields = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_floating(col.type):
            x = col.to_numpy().astype(np.float32)
            fields[name] = pa.array(P.round_to_format(x, fmt), pa.float32())
        else:
            fields[name] = col
    return pa.table(fields)


def duckdb_result(spec, table) -> dict[tuple, list]:
    """key tuple -> output values, DuckDB running the query text on ``table``."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register(spec.table, table)
        rows = con.execute(spec.sql).fetchall()
    finally:
        con.close()
    key_pos = [i for i, (kind, _) in enumerate(spec.outputs) if kind == "key"]
    key_names = [spec.outputs[i][1] for i in key_pos]
    order = [key_names.index(k) for k in spec.keys]
    out = {}
    for row in rows:
        key = tuple(row[key_pos[j]] for j in order)
        out[key] = list(row)
    return out


def check_query(spec, config, reports: list[dict], merged: dict, recorded: dict) -> dict:
    job = config.run.job
    fmt = job.format
    checks = switch_checks(spec, config, reports, recorded)
    table = reference_table(config, sorted(spec.columns()))
    cols = column_arrays(table, sorted(spec.columns()))
    n = table.num_rows
    mask, group, G, keys, (sum_bits, _, _) = P.selected_values(spec, cols, n, fmt)
    counts = np.bincount(group, minlength=G)
    exact = [exact_group_sums(group, G, b, fmt) for b in sum_bits]
    exact_index = {k: g for g, k in enumerate(keys)}
    duck = duckdb_result(spec, table)
    ours = {tuple(r["key"]): r for r in merged["rows"]}
    checks["groups"] = len(ours)
    # (an aggregate without GROUP BY over no rows is one row in SQL)
    expected = set(exact_index) or ({()} if not spec.keys else set())
    checks["same_groups_as_duckdb"] = set(ours) == set(duck) == expected
    sums_exprs, _, _ = P.value_columns(spec)
    count_mismatch = minmax_mismatch = 0
    ulps: dict[str, dict] = {}
    for key in set(ours) & set(duck):
        r, d = ours[key], duck[key]
        g = exact_index.get(key)
        for pos, (kind, name) in enumerate(spec.outputs):
            if kind == "key":
                continue
            a = spec.aggregates[name]
            if a.func == "count":
                count_mismatch += int(r["values"][a.name] != d[pos])
                continue
            if a.name not in r["bits"]:  # no rows at all: NULL in SQL
                minmax_mismatch += int(d[pos] is not None)
                continue
            ours_bits = r["bits"][a.name]
            if a.func in ("min", "max"):
                theirs = int(doubles_to_bits(np.array([float(d[pos])]), fmt)[0])
                minmax_mismatch += int(theirs != ours_bits)
                continue
            if g is None:
                continue
            j = sums_exprs.index(a.expr)
            if a.func == "sum":
                ref = exact_sum_bits([exact[j][g]], fmt)
            else:
                ref = exact_avg_bits([exact[j][g]], counts[g:g + 1], fmt)
            theirs = doubles_to_bits(np.array([float(d[pos])]), fmt)
            u = ulps.setdefault(a.name, {"fpisa_max_ulp": 0, "duckdb_max_ulp": 0, "groups": 0})
            u["fpisa_max_ulp"] = max(u["fpisa_max_ulp"], int(ulp_distance(
                np.array([ours_bits], fmt.bits_dtype), ref, fmt)[0]))
            u["duckdb_max_ulp"] = max(u["duckdb_max_ulp"], int(ulp_distance(theirs, ref, fmt)[0]))
            u["groups"] += 1
    checks["count_mismatches"] = count_mismatch
    checks["min_max_mismatches"] = minmax_mismatch
    checks["sum_avg_ulp_vs_correctly_rounded"] = ulps
    checks["ok"] = bool(checks["bit_exact"] and checks["same_groups_as_duckdb"]
                        and count_mismatch == 0 and minmax_mismatch == 0)
    checks["duckdb_rows"] = {repr(k): v for k, v in sorted(duck.items(), key=lambda kv: repr(kv[0]))}
    return checks
