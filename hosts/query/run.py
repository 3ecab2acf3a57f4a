"""``fpisa query``: a query over a table partitioned across K worker processes,
aggregated by the emulated switch.

:func:`run_query` parses and checks the query against the table's schema
(a :class:`~query.sql.QueryError`, exit 2, before any process starts),
starts the switch and K workers with ``hosts.allreduce.run_job``, the
allreduce's machinery (its launchers, its shared-memory fabric or loopback
sockets, its fault configuration; everything released on failure and
Ctrl-C), lets every worker run :func:`query.worker.run_partition`, merges
the spilled groups on the host, builds the result table and checks it
(:mod:`query.check`).

Part of the testbed layer: it composes the switch and the workers.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from dataclasses import dataclass, field

import numpy as np

from fpisa.aggregate import aggregate
from fpisa._table_kernels import from_ordered_key, ordered_key
from fpisa.codec import doubles_to_bits, from_bits
from fpisa.job import JobSpec
from fpisa.net import transport_for
from fpisa.protocol import WireMode
from hosts.allreduce import AllreduceConfig, AllreduceFailed, run_job

from . import partial as P
from .sql import QuerySpec, parse
from .table import open_table, schema_of, table_name
from .worker import QueryClient, TableOverflow, run_partition

__all__ = ["QueryConfig", "run_query", "query_job", "MAX_TABLE_SLOTS"]

#: the group table's size limit (register entries per aggregate column)
MAX_TABLE_SLOTS = 1 << 20


@dataclass(frozen=True)
class QueryConfig:
    sql: str
    table: str  #: a Parquet or CSV file
    #: the run: its job (mode, format, workers, packet size, window), faults,
    #: transport, timeouts and seed, as for an allreduce (``elements`` unused)
    run: AllreduceConfig = field(default_factory=AllreduceConfig)
    #: entries of the switch's group table
    table_slots: int = 4096
    #: groups without a table entry go to the host (False: the query fails, exit 2)
    spill: bool = True
    #: compare with DuckDB, the exact sums and the switch's arrival orders
    check: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.table_slots, bool) or not isinstance(self.table_slots, int) \
                or not 1 <= self.table_slots <= MAX_TABLE_SLOTS:
            raise ValueError(f"query: table slots must be 1..{MAX_TABLE_SLOTS}, got {self.table_slots!r}")

    def as_dict(self) -> dict:
        run = self.run.as_dict()
        del run["elements"]  # an allreduce's; a query's vectors are table_slots long
        return {"sql": self.sql, "table": self.table, "table_slots": self.table_slots,
                "spill": self.spill, "check": self.check, **run}


def query_job(spec: QuerySpec, mode: str = "fpisa", fmt: str = "fp32", **job) -> JobSpec:
    """The job for ``spec``: the SUM numerics ``mode`` plus the query's wire modes."""
    _, mins, maxs = P.value_columns(spec)
    extra = [WireMode.KEY_CLAIM, WireMode.SWITCHML]
    if mins:
        extra.append(WireMode.FLOAT_MIN)
    if maxs:
        extra.append(WireMode.FLOAT_MAX)
    return JobSpec(mode=mode, fmt=fmt, extra_wire_modes=tuple(extra), **job)


def prepare(sql: str, table: str) -> QuerySpec:
    """Parse and bind (QueryError: exit 2)."""
    return parse(sql, schema_of(table), table_name(table))


# -- worker processes ---------------------------------------------------------------

def _worker_main(config: QueryConfig, spec: QuerySpec, rank: int, endpoint, switch_address, conn, go,
                 progress):
    run = config.run
    try:
        transport = transport_for(endpoint, rank)
        faults = run.sender_faults(seed_offset=1 + rank)
        client = QueryClient(run.worker_config(rank), transport, switch_address,
                             faults=faults if faults.active else None, progress=progress)
        client.warm_up()
        P.warm_up(run.job.fmt)  # compiled kernels loaded before the clock starts
        open_table(config.table)  # the reader's first use (not the rows): as a warm database has it
    except Exception as e:
        conn.send(("error", rank, f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", rank, None))
    go.wait()
    try:
        report = run_partition(spec, config.table, rank, run.job.num_workers, run.job.fmt,
                               config.table_slots, client, config.spill)
        report["counters"] = client.counters.as_dict()
    except TableOverflow as e:
        conn.send(("overflow", rank, str(e)))
        return
    except ValueError as e:  # the data does not fit the query (NULLs, counts beyond int32)
        conn.send(("usage", rank, str(e)))
        return
    except Exception as e:
        conn.send(("error", rank, f"{type(e).__name__}: {e}"))
        return
    conn.send(("done", rank, report))
    transport.close()


def _context():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["numpy", "fpisa", "fpisa.net", "fpisa.netem", "hosts.worker",
                                "hosts.query.worker", "hosts.query.partial", "pyarrow", "pyarrow.parquet",
                                "pyarrow.compute", "emulator.server"])
    return ctx


def run_query(config: QueryConfig, *, progress: bool | None = None, start_timeout: float = 120.0,
              spec: QuerySpec | None = None) -> dict:
    """Run the query; return the report (result rows, timings, checks, counters)."""
    from tqdm import tqdm

    spec = spec or prepare(config.sql, config.table)
    run = config.run
    P.warm_up(run.job.fmt)  # the host's merge uses the same kernels, and the job's SUM
    aggregate(np.zeros((run.job.num_workers, 1), run.job.format.bits_dtype), run.job.mode,
              fmt=run.job.fmt, block_size=run.job.packet_elements)
    job = run.job
    K = job.num_workers

    def bar():
        return tqdm(unit="packet", desc="query", disable=(None if progress is None else not progress),
                    leave=False, mininterval=0.2)

    def on_message(kind, rank, detail):
        if kind == "overflow":
            raise TableOverflowError(detail)
        if kind == "usage":
            raise ValueError(f"worker {rank}: {detail}")

    reports, stats, recorded, setup_seconds = run_job(
        dataclasses.replace(run, check=config.check), _context(), _worker_main, (config, spec), bar,
        start_timeout=start_timeout, on_message=on_message, name="fpisa-query-worker")
    t_host = time.perf_counter()
    merged = assemble(spec, config, [reports[r] for r in range(K)])
    host_seconds = time.perf_counter() - t_host
    ordered = [reports[r] for r in range(K)]
    start = min(r["start"] for r in ordered)
    seconds = max(r["end"] for r in ordered) - start + host_seconds
    rows = sum(r["rows"] for r in ordered)
    report = {
        "config": config.as_dict(),
        "query": {"sql": spec.sql, "outputs": spec.output_names},
        "rows": rows,
        "selected_rows": sum(r["selected"] for r in ordered),
        "seconds": seconds,
        "rows_per_second": rows / seconds if seconds > 0 else float("inf"),
        "setup_seconds": setup_seconds,
        "phases": {name: max(r["seconds"][name] for r in ordered) for name in ("load", "partial", "switch")}
                  | {"host": host_seconds},
        "table": merged["table"],
        "result": merged["rows"],
        "switch": stats,
        "workers": [{"rank": r["rank"], "rows": r["rows"], "groups": r["groups"],
                     "spilled_groups": len(r["spilled"]["keys"]), "counters": r["counters"]}
                    for r in ordered],
    }
    if config.check:
        from .check import check_query

        report["checks"] = check_query(spec, config, ordered, merged, recorded)
    return report


class TableOverflowError(ValueError):
    """The group table overflowed with spilling off (exit 2)."""


# -- the host: merge the switch's table and the spilled groups ---------------------------

def _host_aggregate(spec, job: JobSpec, spills: list[dict]):
    """Spilled groups, aggregated on the host with the switch's numerics:
    SUM with ``fpisa.aggregate`` in the job's mode (workers in rank order, +0
    for a worker without the group), COUNT exactly, MIN/MAX in the switch's
    order of bit patterns."""
    fmt = job.format
    S = fmt.storage_bits
    keys = sorted({k for s in spills for k in s["keys"]}, key=repr)
    if not keys:
        return [], None
    where = {k: i for i, k in enumerate(keys)}
    K, n = len(spills), len(keys)
    count = np.zeros(n, np.int64)
    sums = [np.zeros((K, n), fmt.bits_dtype) for _ in spills[0]["sums"]]
    mins = [np.full((K, n), P.identity_bits("min", fmt), fmt.bits_dtype) for _ in spills[0]["mins"]]
    maxs = [np.full((K, n), P.identity_bits("max", fmt), fmt.bits_dtype) for _ in spills[0]["maxs"]]
    for r, s in enumerate(spills):
        at = np.array([where[k] for k in s["keys"]], np.int64)
        if not at.size:
            continue
        count[at] += s["count"]
        for dst, src in zip(sums + mins + maxs, s["sums"] + s["mins"] + s["maxs"]):
            dst[r, at] = src
    out = {"count": count,
           "sum": [aggregate(v, job.mode, fmt=fmt, rounding=job.rounding, register_bits=job.register_bits,
                             block_size=job.packet_elements) for v in sums],
           "min": [from_ordered_key(ordered_key(v, S).min(axis=0), S).astype(fmt.bits_dtype) for v in mins],
           "max": [from_ordered_key(ordered_key(v, S).max(axis=0), S).astype(fmt.bits_dtype) for v in maxs],
           "inputs": {"sum": sums, "min": mins, "max": maxs}}
    return keys, out


def assemble(spec: QuerySpec, config: QueryConfig, reports: list[dict]) -> dict:
    """The result groups: the switch's table entries, then the spilled groups."""
    job = config.run.job
    fmt = job.format
    first = reports[0]
    winners = first["winners"]
    counts = first["results"]["count"].astype(np.int64)
    entries = np.flatnonzero((winners != 0) & (counts > 0))
    names: dict[int, tuple] = {}
    conflicts = 0
    for r in reports:
        for i, key in r["entry_keys"].items():
            if names.setdefault(i, key) != key:
                conflicts += 1  # two keys with one (entry, fingerprint): merged by the switch
    if conflicts:
        raise AllreduceFailed(f"{conflicts} fingerprint collisions: distinct group keys shared a table "
                              "entry and a 32-bit fingerprint (vanishingly rare; rerun with another "
                              "--table-slots)")
    groups = []  # (key, count, sums bits, mins bits, maxs bits, where)
    res = first["results"]
    for i in entries.tolist():
        groups.append((names[i], int(counts[i]), [int(v[i]) for v in res["sum"]],
                       [int(v[i]) for v in res["min"]], [int(v[i]) for v in res["max"]], "switch"))
    spill_keys, host = _host_aggregate(spec, job, [r["spilled"] for r in reports])
    for j, key in enumerate(spill_keys):
        groups.append((key, int(host["count"][j]), [int(v[j]) for v in host["sum"]],
                       [int(v[j]) for v in host["min"]], [int(v[j]) for v in host["max"]], "host"))
    sums, mins, maxs = P.value_columns(spec)
    rows = []
    for key, count, s_bits, mn_bits, mx_bits, where in groups:
        row = {}
        keyvals = dict(zip(spec.keys, key))
        bits_of = {}
        for kind, name in spec.outputs:
            if kind == "key":
                row[name] = keyvals[name]
                continue
            a = spec.aggregates[name]
            if a.func == "count":
                row[a.name] = count
                continue
            if a.func in ("sum", "avg"):
                b = s_bits[sums.index(a.expr)]
                if a.func == "avg":
                    total = float(from_bits(np.array([b], fmt.bits_dtype), fmt)[0])
                    b = int(doubles_to_bits(np.array([total / count]), fmt)[0])
            elif a.func == "min":
                b = mn_bits[mins.index(a.expr)]
            else:
                b = mx_bits[maxs.index(a.expr)]
            bits_of[a.name] = b
            row[a.name] = float(from_bits(np.array([b], fmt.bits_dtype), fmt)[0])
        rows.append({"key": list(key), "values": row, "bits": bits_of, "where": where})
    if not spec.keys and not rows:
        # SQL: an aggregate without GROUP BY over no rows is one row, COUNT 0, the rest NULL
        aggs = [spec.aggregates[i] for _, i in spec.outputs]  # no keys: every output aggregates
        rows.append({"key": [], "values": {a.name: 0 if a.func == "count" else None for a in aggs},
                     "bits": {}, "where": "empty"})
    rows = order_rows(spec, rows)
    table = {"slots": config.table_slots, "entries_used": int(entries.size),
             "spilled_groups": len(spill_keys),
             "spilled_partials": sum(len(r["spilled"]["keys"]) for r in reports),
             "local_collisions": sum(r["local_collisions"] for r in reports)}
    return {"rows": rows, "table": table, "entries": entries, "spill_keys": spill_keys, "host": host}


def order_rows(spec: QuerySpec, rows: list[dict]) -> list[dict]:
    """ORDER BY (stable sorts, last key first); groups by key otherwise."""
    rows = sorted(rows, key=lambda r: tuple((0, v) if v is not None else (1, 0) for v in r["key"]))
    for name, desc in reversed(spec.order_by):
        rows.sort(key=lambda r: r["values"][name], reverse=desc)
    return rows
