"""Query throughput: ``fpisa query`` (K workers + the emulated switch) vs
DuckDB (embedded, default settings) vs Spark (local mode), same Parquet
table, same queries, same run.

Each system reads the table from the Parquet file inside the timed region
(DuckDB: ``read_parquet`` view; Spark: ``spark.read.parquet`` temp view;
fpisa: each worker reads its row groups) and returns the grouped result.
Not timed: process start (fpisa's K+1 processes, the JVM and the
SparkSession), DuckDB's connection, a warm-up run of each. Reported:
best of ``--repeats`` seconds, rows/s (table rows / seconds) and the ratios.
Each fpisa configuration is also run once with every check on (DuckDB,
exact sums, bit-exactness) and the benchmark fails if a check fails.

    .venv/bin/python benchmarks/query.py [--scale 1] [--workers 2 4] [--modes fpisa switchml]
        [--queries q1 q6] [--repeats 5] [--spark-cores 2] [--out results/query]

Spark: ``pip install 'fpisa[query-bench]'`` and a Java 17 runtime; without
them the Spark rows are left out, with a message saying why.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fpisa.netem import LinkFaults  # noqa: E402
from hosts.allreduce import AllreduceConfig  # noqa: E402
from hosts.query.run import QueryConfig, prepare, query_job, run_query  # noqa: E402
from hosts.query.sql import TPCH  # noqa: E402
from hosts.query.table import generate_lineitem  # noqa: E402


def best(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def duckdb_seconds(path: Path, sql: str, repeats: int) -> float:
    import duckdb

    con = duckdb.connect()
    con.execute(f"CREATE VIEW lineitem AS SELECT * FROM read_parquet('{path}')")
    seconds, _ = best(lambda: con.execute(sql).fetchall(), repeats)
    con.close()
    return seconds


class Spark:
    def __init__(self, cores: int):
        self.why_not = None
        self.session = None
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            self.why_not = "pyspark is not installed (pip install 'fpisa[query-bench]')"
            return
        try:
            t = time.perf_counter()
            self.session = (SparkSession.builder.master(f"local[{cores}]").appName("fpisa-query-bench")
                            .config("spark.sql.shuffle.partitions", str(cores))
                            .config("spark.ui.enabled", "false")
                            .config("spark.ui.showConsoleProgress", "false")
                            .config("spark.driver.memory", "2g").getOrCreate())
            self.session.sparkContext.setLogLevel("ERROR")
            self.start_seconds = time.perf_counter() - t
        except Exception as e:  # no Java, or it failed to start
            self.why_not = f"Spark did not start ({type(e).__name__}: {str(e).splitlines()[0][:200]})"

    def seconds(self, path: Path, sql: str, repeats: int) -> float:
        def run():
            self.session.read.parquet(str(path)).createOrReplaceTempView("lineitem")
            return self.session.sql(sql).collect()

        s, _ = best(run, repeats)
        return s

    def stop(self):
        if self.session is not None:
            self.session.stop()


def fpisa_run(path: Path, sql: str, workers: int, mode: str, check: bool, slots: int = 1024,
              packet_elements: int = 255) -> dict:
    spec = prepare(sql, str(path))
    job = query_job(spec, mode, "fp32", num_workers=workers, packet_elements=packet_elements, window=64)
    cfg = AllreduceConfig(job=job, elements=slots, faults=LinkFaults(), seed=0)
    return run_query(QueryConfig(sql, str(path), cfg, table_slots=slots, check=check), progress=False,
                     spec=spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="lineitem scale factor (1 = 6M rows)")
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--modes", nargs="+", default=["fpisa", "switchml"])
    ap.add_argument("--queries", nargs="+", default=["q1", "q6"], choices=sorted(TPCH))
    ap.add_argument("--repeats", type=int, default=5, help="best of N (default 5)")
    ap.add_argument("--table-slots", type=int, default=1024, help="the switch's group table (default 1024)")
    ap.add_argument("--packet-elements", type=int, default=255, help="table entries per packet (default 255)")
    ap.add_argument("--spark-cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--data", type=Path, default=Path("query-data"))
    ap.add_argument("--out", type=Path, default=Path("results/query"))
    args = ap.parse_args()

    path = args.data / f"sf{args.scale:g}-seed0" / "lineitem.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        info = generate_lineitem(args.scale, path, progress=sys.stderr.isatty())
        print(f"generated {info['rows']:,} rows in {info['seconds']:.1f} s", file=sys.stderr)
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(path).metadata.num_rows
    spark = None if args.no_spark else Spark(args.spark_cores)
    if spark is not None and spark.why_not:
        print(f"Spark left out: {spark.why_not}", file=sys.stderr)
    results = []
    for q in args.queries:
        sql = TPCH[q]
        base = {"query": q, "rows": rows}
        print(f"[{q}] duckdb ...", file=sys.stderr)
        d = duckdb_seconds(path, sql, args.repeats)
        results.append({**base, "system": "duckdb", "config": f"embedded, {os.cpu_count()} threads",
                        "seconds": d})
        if spark is not None and not spark.why_not:
            print(f"[{q}] spark ...", file=sys.stderr)
            s = spark.seconds(path, sql, args.repeats)
            results.append({**base, "system": "spark", "config": f"local[{args.spark_cores}]",
                            "seconds": s})
        for K in args.workers:
            for mode in args.modes:
                print(f"[{q}] fpisa K={K} {mode}: checked run ...", file=sys.stderr)
                checked = fpisa_run(path, sql, K, mode, True, args.table_slots, args.packet_elements)
                if not checked["checks"]["ok"]:
                    print(f"check FAILED: {json.dumps(checked['checks'], default=str)[:2000]}", file=sys.stderr)
                    return 1
                times = []
                for i in range(args.repeats):
                    print(f"[{q}] fpisa K={K} {mode}: run {i + 1}/{args.repeats}", file=sys.stderr)
                    times.append(fpisa_run(path, sql, K, mode, False, args.table_slots, args.packet_elements))
                fastest = min(times, key=lambda r: r["seconds"])
                ulp = checked["checks"]["sum_avg_ulp_vs_correctly_rounded"]
                results.append({**base, "system": "fpisa", "config": f"K={K} {mode}",
                                "table_slots": args.table_slots, "packet_elements": args.packet_elements,
                                "seconds": fastest["seconds"], "phases": fastest["phases"],
                                "max_ulp": max((u["fpisa_max_ulp"] for u in ulp.values()), default=0),
                                "checks_ok": True})
    if spark is not None:
        spark.stop()
    for r in results:
        r["rows_per_second"] = r["rows"] / r["seconds"]
        ref = {x["system"]: x["seconds"] for x in results if x["query"] == r["query"]}
        r["vs_duckdb"] = ref["duckdb"] / r["seconds"]
        r["vs_spark"] = ref["spark"] / r["seconds"] if "spark" in ref else None
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"scale": args.scale, "table_slots": args.table_slots, "packet_elements": args.packet_elements, "rows": rows, "repeats": args.repeats, "cpus": os.cpu_count(),
            "spark": None if spark is None else (spark.why_not or f"local[{args.spark_cores}]")}
    (args.out / "query.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    with (args.out / "query.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["query", "system", "config", "rows", "seconds", "rows_per_second",
                               "vs_duckdb", "vs_spark"], extrasaction="ignore")
        w.writeheader()
        w.writerows(results)
    print(f"\nlineitem SF {args.scale:g} ({rows:,} rows), best of {args.repeats}, {os.cpu_count()} CPUs")
    print(f"{'query':5} {'system':7} {'config':24} {'seconds':>8} {'rows/s':>14} {'vs duckdb':>9} {'vs spark':>9}")
    for r in results:
        vs = f"{r['vs_spark']:.2f}" if r["vs_spark"] is not None else "-"
        print(f"{r['query']:5} {r['system']:7} {r['config']:24} {r['seconds']:8.3f} "
              f"{r['rows_per_second']:14,.0f} {r['vs_duckdb']:9.2f} {vs:>9}")
    plot(results, args.out / "query.png", meta)
    print(f"\nwrote {args.out / 'query.json'}, query.csv, query.png")
    return 0


def plot(results, path: Path, meta) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    queries = sorted({r["query"] for r in results})
    labels = []
    for r in results:
        label = r["system"] if r["system"] != "fpisa" else f"fpisa {r['config']}"
        if label not in labels:
            labels.append(label)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        ys = []
        for q in queries:
            match = [r for r in results if r["query"] == q and
                     (r["system"] if r["system"] != "fpisa" else f"fpisa {r['config']}") == label]
            ys.append(match[0]["rows_per_second"] if match else 0)
        ax.bar([j + i * width for j in range(len(queries))], ys, width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(queries))], [q.upper() for q in queries])
    ax.set_ylabel("rows/s (best of %d)" % meta["repeats"])
    ax.set_yscale("log")
    ax.set_title(f"lineitem SF {meta['scale']:g}, {meta['rows']:,} rows, {meta['cpus']} CPUs (one machine)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
