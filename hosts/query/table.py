"""Tables: read Parquet/CSV with pyarrow, a TPC-H-like ``lineitem`` generator,
partitions for K workers.

Column kinds (what the query form knows): ``float`` (float32 or float16 in
the file; CSV has no width and its float columns are read as float32),
``int`` (any integer width), ``string`` and ``date`` (date32). A float64
column in a Parquet file is refused (the switch aggregates float32/fp16/
bf16: cast it first), as are NULLs in the columns a query reads.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

__all__ = ["read_table", "schema_of", "partition", "generate_lineitem", "table_name",
           "column_arrays"]


def _pa():
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - the query extra is missing
        raise ImportError("fpisa query needs pyarrow: pip install 'fpisa[query]'") from None
    return pa


def table_name(path: str | Path) -> str:
    """The name a query uses for a file: its stem (``lineitem.parquet`` -> lineitem)."""
    name = Path(path).name
    for suffix in (".parquet", ".csv", ".pq"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def read_table(path: str | Path, columns: list[str] | None = None, row_groups: list[int] | None = None):
    """A pyarrow Table from Parquet (``row_groups``: only those) or CSV."""
    pa = _pa()
    path = Path(path)
    if not path.exists():
        raise ValueError(f"table {str(path)!r} does not exist")
    if path.suffix.lower() == ".csv":
        import pyarrow.csv as pcsv

        table = pcsv.read_csv(path)
        if columns is not None:
            missing = [c for c in columns if c not in table.column_names]
            if missing:
                raise ValueError(f"unknown columns {missing} in {path}")
            table = table.select(columns)
        # CSV carries no float width: its floats are float32 here
        fields = [pa.field(f.name, pa.float32()) if pa.types.is_floating(f.type) else f
                  for f in table.schema]
        return table.cast(pa.schema(fields))
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    if row_groups is not None:
        return f.read_row_groups(row_groups, columns=columns)
    return f.read(columns=columns)


def _kind(t) -> str:
    pa = _pa()
    if pa.types.is_float32(t) or pa.types.is_float16(t):
        return "float"
    if pa.types.is_floating(t):
        return "double"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type)
                                      or pa.types.is_large_string(t.value_type)):
        return "string"
    if pa.types.is_date32(t):
        return "date"
    return str(t)


def schema_of(path: str | Path) -> dict[str, str]:
    """column -> kind, without reading the data (CSV: reads it once)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"table {str(path)!r} does not exist")
    if path.suffix.lower() == ".csv":
        schema = read_table(path).schema
    else:
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
    return {f.name: _kind(f.type) for f in schema}


def open_table(path: str | Path) -> None:
    """Open the file once and read its metadata and a few rows (the reader's
    first-use costs: imports, thread pools), so a worker's timed read does
    not pay them. CSV: nothing (its read is the whole file)."""
    if Path(path).suffix.lower() == ".csv":
        return
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    if f.num_row_groups:
        next(f.iter_batches(batch_size=16, row_groups=[0]), None)


def num_row_groups(path: str | Path) -> int:
    if Path(path).suffix.lower() == ".csv":
        return 1
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).num_row_groups


def partition(path: str | Path, rank: int, workers: int, columns: list[str]):
    """Worker ``rank``'s rows: Parquet row groups rank, rank + K, ... when the
    file has at least K of them; else (and for CSV, which each worker reads
    whole) the rank-th of K equal slices of the rows."""
    groups = num_row_groups(path)
    if groups >= workers:
        return read_table(path, columns, row_groups=list(range(rank, groups, workers)))
    table = read_table(path, columns)
    n = table.num_rows
    lo, hi = rank * n // workers, (rank + 1) * n // workers
    return table.slice(lo, hi - lo)


def column_arrays(table, columns) -> dict[str, np.ndarray | tuple]:
    """Numpy views of the columns a query reads: floats as float32 (float16
    widened exactly), ints as int64, dates as int32 days, strings as
    (codes int32, dictionary list). NULLs are refused (ValueError)."""
    pa = _pa()
    import pyarrow.compute as pc

    out: dict = {}
    for name in columns:
        col = table.column(name)
        if col.null_count:
            raise ValueError(f"column {name!r} has {col.null_count} NULLs: fpisa query does not "
                             "handle NULLs (filter or fill them first)")
        t = col.type
        if pa.types.is_dictionary(t):
            col = col.cast(t.value_type)
            t = col.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            enc = pc.dictionary_encode(col).combine_chunks()
            out[name] = (enc.indices.to_numpy(zero_copy_only=False).astype(np.int32),
                         enc.dictionary.to_pylist())
        elif pa.types.is_date32(t):
            out[name] = col.cast(pa.int32()).to_numpy().astype(np.int32)
        elif pa.types.is_integer(t):
            out[name] = col.to_numpy().astype(np.int64)
        elif pa.types.is_float16(t) or pa.types.is_float32(t):
            out[name] = col.to_numpy().astype(np.float32)
        else:
            raise ValueError(f"column {name!r} has type {t}: unsupported (float64 columns must be "
                             "cast to float32 first)")
    return out


# -- the TPC-H-like generator -------------------------------------------------------

_START = (dt.date(1992, 1, 1) - dt.date(1970, 1, 1)).days
_END = (dt.date(1998, 12, 31) - dt.date(1970, 1, 1)).days
_CURRENT = (dt.date(1995, 6, 17) - dt.date(1970, 1, 1)).days


def generate_lineitem(scale: float, path: str | Path, seed: int = 0, row_group_rows: int = 250_000,
                      progress: bool = False) -> dict:
    """Write a TPC-H-like ``lineitem`` table (Parquet, or CSV by suffix) of
    ``6,000,000 * scale`` rows; return {rows, path, seconds}.

    Distributions after TPC-H's dbgen (spec 4.2.3): quantity uniform 1..50,
    extendedprice = quantity * a part's retail price (900..2100, cents),
    discount 0.00..0.10, tax 0.00..0.08 (both in hundredths), orders'
    dates uniform 1992-01-01..1998-08-02, shipdate = orderdate + 1..121 days,
    receiptdate = shipdate + 1..30 days; returnflag R or A (equally likely)
    when receiptdate <= 1995-06-17, else N; linestatus O when shipdate >
    1995-06-17, else F. The floats are float32 (as the switch takes them).
    Not dbgen: no text columns, no referential integrity with other tables.
    """
    import time

    pa = _pa()
    import pyarrow.parquet as pq

    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    rows = max(1, int(round(6_000_000 * scale)))
    path = Path(path)
    t0 = time.perf_counter()
    csv = path.suffix.lower() == ".csv"
    writer = None
    chunks = []
    from tqdm import tqdm

    bar = tqdm(total=rows, unit="row", desc="lineitem", disable=not progress, leave=False)
    try:
        for start in range(0, rows, row_group_rows):
            n = min(row_group_rows, rows - start)
            rng = np.random.default_rng([seed, start])
            orderkey = (start + np.arange(n)) // 4 + 1
            quantity = rng.integers(1, 51, n).astype(np.float32)
            retail = rng.integers(90_000, 210_001, n)  # cents
            extendedprice = (quantity.astype(np.int64) * retail / 100.0).astype(np.float32)
            discount = (rng.integers(0, 11, n) / 100.0).astype(np.float32)
            tax = (rng.integers(0, 9, n) / 100.0).astype(np.float32)
            orderdate = rng.integers(_START, _END - 151 + 1, n)
            ship = orderdate + rng.integers(1, 122, n)
            receipt = ship + rng.integers(1, 31, n)
            flag = np.where(receipt <= _CURRENT, np.where(rng.random(n) < 0.5, "R", "A"), "N")
            status = np.where(ship > _CURRENT, "O", "F")
            batch = pa.table({
                "l_orderkey": pa.array(orderkey, pa.int64()),
                "l_linenumber": pa.array((start + np.arange(n)) % 4 + 1, pa.int32()),
                "l_quantity": pa.array(quantity, pa.float32()),
                "l_extendedprice": pa.array(extendedprice, pa.float32()),
                "l_discount": pa.array(discount, pa.float32()),
                "l_tax": pa.array(tax, pa.float32()),
                "l_returnflag": pa.array(flag.tolist(), pa.string()),
                "l_linestatus": pa.array(status.tolist(), pa.string()),
                "l_shipdate": pa.array(ship.astype(np.int32), pa.int32()).cast(pa.date32()),
            })
            if csv:
                chunks.append(batch)
            else:
                if writer is None:
                    writer = pq.ParquetWriter(path, batch.schema)
                writer.write_table(batch, row_group_size=row_group_rows)
            bar.update(n)
    finally:
        if writer is not None:
            writer.close()
        bar.close()
    if csv:
        import pyarrow.csv as pcsv

        pcsv.write_csv(pa.concat_tables(chunks), path)
    return {"rows": rows, "path": str(path), "seconds": time.perf_counter() - t0}
