"""``fpisa query run`` (a query through the switch, next to DuckDB) and
``fpisa query generate`` (a TPC-H-like lineitem table)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from fpisa.exitcodes import EPILOG, ExitCode
from fpisa.formats import FORMATS
from fpisa.job import SWITCH_MODES
from fpisa.netem import add_fault_arguments, faults_from_args
from fpisa.protocol import MAX_ELEMENTS
from hosts.cli import _json_default

__all__ = ["add_parser", "format_result"]

RUN_HELP = """\
Run an aggregation query over a table partitioned across K worker
processes, aggregated per group by the emulated switch: each worker filters
and partially aggregates its rows, the switch's group table (a fixed-size
hash table in registers) maps group keys to entries, and SUM (in the chosen
numerics mode), COUNT (integer add) and MIN/MAX (on float bit patterns) are
aggregated in the switch; groups without an entry spill to the host.
The result is printed next to DuckDB's on the same data and checked:
COUNT equal, MIN/MAX bit-identical, SUM/AVG error in ULPs against the
correctly rounded value, and every switch result bit-exact against the
numerics core given the switch's recorded arrival orders.

The query: a SQL subset (parsed by sqlglot; docs/query.md), or q1 / q6 for
TPC-H Q1 / Q6 on a lineitem table.

examples:
  fpisa query run q1 --generate 0.01
  fpisa query run "SELECT l_returnflag, MIN(l_tax), MAX(l_tax) FROM lineitem GROUP BY l_returnflag" \\
      --table lineitem.parquet --mode switchml --loss 0.05
  fpisa query generate --scale 0.1 --out lineitem.parquet

exit status: 0 checks passed, 1 a check failed or a process failed, 2 a bad
query (unknown column, non-float SUM, unsupported SQL) or a group table
that overflowed with --no-spill, 3 duckdb/pyarrow/sqlglot missing.
"""


def add_parser(subparsers) -> None:
    q = subparsers.add_parser("query", help="float aggregation queries through the switch, vs DuckDB",
                              description="Aggregation queries through the emulated switch (docs/query.md).",
                              epilog=EPILOG)
    sub = q.add_subparsers(dest="query_command", metavar="SUBCOMMAND")
    r = sub.add_parser("run", help="run a query through the switch, print it next to DuckDB's result",
                       description=RUN_HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("sql", help="the query (SQL subset), or q1 / q6")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--table", type=Path, help="a Parquet or CSV file (queries name it by its stem)")
    src.add_argument("--generate", type=float, metavar="SF",
                     help="use a generated lineitem table at this scale factor (written once to --data-dir)")
    r.add_argument("--data-dir", type=Path, default=Path("query-data"),
                   help="where --generate keeps its tables (default ./query-data)")
    r.add_argument("--workers", type=int, default=4, help="worker processes K (default 4)")
    r.add_argument("--mode", choices=SWITCH_MODES, default="fpisa", help="SUM numerics in the switch")
    r.add_argument("--fmt", choices=sorted(FORMATS), default="fp32",
                   help="the float columns' format (fp16/bf16: rounded to it when read; default fp32)")
    r.add_argument("--table-slots", type=int, default=4096,
                   help="entries of the switch's group table (default 4096)")
    r.add_argument("--spill", action=argparse.BooleanOptionalAction, default=True,
                   help="groups without a table entry go to the host (default); --no-spill: exit 2")
    r.add_argument("--packet-elements", type=int, default=64,
                   help=f"table entries per packet, 1..{MAX_ELEMENTS} (default 64)")
    r.add_argument("--window", type=int, default=64, help="packets in flight per worker (default 64)")
    r.add_argument("--register-bits", type=int, default=32, help="FPISA mantissa register width")
    r.add_argument("--transport", choices=["shm", "udp"], default=None, help="default shm")
    r.add_argument("--timeout-ms", type=float, default=20.0, help="retransmission timeout floor")
    r.add_argument("--seed", type=int, default=0, help="seeds the faults and --generate (default 0)")
    r.add_argument("--no-check", action="store_true", help="skip DuckDB and the checks")
    r.add_argument("--json", type=Path, help="write the full report here")
    r.add_argument("--csv", type=Path, help="write the result rows here")
    r.add_argument("--progress", choices=["auto", "on", "off"], default="auto")
    add_fault_arguments(r, "both directions")
    r.set_defaults(func=run_command)

    g = sub.add_parser("generate", help="write a TPC-H-like lineitem table (Parquet or CSV)",
                       epilog=EPILOG)
    g.add_argument("--scale", type=float, required=True, help="scale factor (1 = 6,000,000 rows)")
    g.add_argument("--out", type=Path, required=True, help="lineitem.parquet or lineitem.csv")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=generate_command)
    q.set_defaults(func=lambda args: (q.print_help(), ExitCode.USAGE)[1])


def _imports() -> str | None:
    missing = []
    for name in ("duckdb", "pyarrow", "sqlglot"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    return ", ".join(missing) or None


def generated_table(scale: float, data_dir: Path, seed: int = 0, progress: bool = True) -> Path:
    from .table import generate_lineitem

    path = data_dir / f"sf{scale:g}-seed{seed}" / "lineitem.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.parquet")
        info = generate_lineitem(scale, tmp, seed=seed, progress=progress)
        tmp.rename(path)
        print(f"generated {info['rows']:,} rows into {path} in {info['seconds']:.1f} s", file=sys.stderr)
    return path


def generate_command(args) -> int:
    missing = _imports()
    if missing:
        print(f"fpisa query: needs {missing}: pip install 'fpisa[query]'", file=sys.stderr)
        return ExitCode.TOOL_MISSING
    from .table import generate_lineitem

    args.out.parent.mkdir(parents=True, exist_ok=True)
    info = generate_lineitem(args.scale, args.out, seed=args.seed, progress=sys.stderr.isatty())
    print(f"wrote {info['rows']:,} rows to {info['path']} in {info['seconds']:.1f} s")
    return ExitCode.OK


def run_command(args) -> int:
    missing = _imports()
    if missing:
        print(f"fpisa query: needs {missing}: pip install 'fpisa[query]'", file=sys.stderr)
        return ExitCode.TOOL_MISSING
    from hosts.allreduce import AllreduceConfig, AllreduceFailed

    from .run import QueryConfig, prepare, query_job, run_query
    from .sql import expand_named

    sql = expand_named(args.sql)
    table = args.table if args.table is not None else generated_table(args.generate, args.data_dir, args.seed)
    spec = prepare(sql, str(table))  # QueryError (a ValueError): exit 2
    job = query_job(spec, args.mode, args.fmt, num_workers=args.workers,
                    packet_elements=args.packet_elements, window=args.window,
                    register_bits=args.register_bits)
    run = AllreduceConfig(job=job, elements=args.table_slots, faults=faults_from_args(args, seed=0),
                          seed=args.seed, timeout_ms=args.timeout_ms, transport=args.transport)
    config = QueryConfig(sql, str(table), run, table_slots=args.table_slots, spill=args.spill,
                         check=not args.no_check)
    progress = {"auto": None, "on": True, "off": False}[args.progress]
    try:
        report = run_query(config, progress=progress, spec=spec)
    except AllreduceFailed as e:
        print(f"fpisa query: {e}", file=sys.stderr)
        return ExitCode.CHECK_FAILED
    except RuntimeError as e:
        print(f"fpisa query: {e}", file=sys.stderr)
        return ExitCode.CHECK_FAILED
    print(format_result(report, spec))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(spec.output_names)
            for row in report["result"]:
                w.writerow([row["values"][name] for name in spec.output_names])
    checks = report.get("checks")
    return ExitCode.OK if checks is None or checks["ok"] else ExitCode.CHECK_FAILED




def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.9g}"
    return str(v)


def format_result(report: dict, spec) -> str:
    c = report["config"]
    checks = report.get("checks")
    duck = {}
    if checks is not None:
        duck = checks["duckdb_rows"]
    names = spec.output_names
    header = []
    for kind, name in spec.outputs:
        if kind == "key":
            header.append(name)
        else:
            n = spec.aggregates[name].name
            header += [n, "duckdb"] if checks is not None else [n]
    lines_rows = []
    for row in report["result"]:
        d = duck.get(repr(tuple(row["key"])))
        cells = []
        for pos, (kind, name) in enumerate(spec.outputs):
            value = row["values"][names[pos]]
            cells.append(_fmt(value))
            if kind != "key" and checks is not None:
                cells.append(_fmt(d[pos]) if d is not None else "-")
        lines_rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in lines_rows)) if lines_rows else len(h)
              for i, h in enumerate(header)]
    out = [f"fpisa query: {c['num_workers']} workers, mode {c['mode']}, {c['fmt']}, table "
           f"{report['rows']:,} rows ({report['selected_rows']:,} selected), group table "
           f"{c['table_slots']} entries, transport {c['transport']}"]
    out.append("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in lines_rows:
        out.append("  " + "  ".join(v.rjust(w) for v, w in zip(r, widths)))
    t = report["table"]
    ph = report["phases"]
    out.append(f"  time        {report['seconds']:.3f} s ({report['rows_per_second']:,.0f} rows/s; load "
               f"{ph['load']:.3f}, partial {ph['partial']:.3f}, switch {ph['switch']:.3f}, host "
               f"{ph['host']:.4f} s; process start {report['setup_seconds']:.2f} s not counted)")
    out.append(f"  group table {t['entries_used']} of {t['slots']} entries used, {t['spilled_groups']} groups "
               f"spilled to the host ({t['spilled_partials']} partials)")
    if checks is not None:
        ulp = checks["sum_avg_ulp_vs_correctly_rounded"]
        worst = max((u["fpisa_max_ulp"] for u in ulp.values()), default=0)
        worst_d = max((u["duckdb_max_ulp"] for u in ulp.values()), default=0)
        yes = lambda b: "yes" if b else "NO"  # noqa: E731
        out.append(f"  checks      {'ok' if checks['ok'] else 'FAILED'}: bit-exact vs fpisa.aggregate with "
                   f"the recorded arrival orders {yes(checks['bit_exact'])}; same groups as DuckDB "
                   f"{yes(checks['same_groups_as_duckdb'])}; COUNT mismatches {checks['count_mismatches']}; "
                   f"MIN/MAX mismatches {checks['min_max_mismatches']}")
        out.append(f"  SUM/AVG     max {worst} ulp from the correctly rounded value (DuckDB's double "
                   f"result rounded to {c['fmt']}: max {worst_d} ulp)")
    s = report["switch"]["counters"]
    out.append(f"  switch      received {s['received']}, aggregated {s['aggregated']}, completed "
               f"{s['completed']}, retransmitted {s['retransmitted']}, dropped {s['dropped_total']} "
               f"{s['dropped'] or ''}".rstrip())
    w = report["workers"]
    out.append(f"  workers     sent {sum(x['counters']['sent'] for x in w)}, retransmitted "
               f"{sum(x['counters']['retransmitted'] for x in w)}")
    return "\n".join(out)
