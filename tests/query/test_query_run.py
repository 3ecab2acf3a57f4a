"""`fpisa query` end to end: K worker processes and the switch process, the
result checked against DuckDB (same groups, COUNT equal, MIN/MAX
bit-identical), SUM/AVG within a few ULPs of the correctly rounded value,
every switch result bit-exact against the numerics core given the recorded
arrival orders; with and without faults; a group table that overflows."""

import json

import pytest

pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")
pytest.importorskip("sqlglot")

from fpisa.cli import main  # noqa: E402
from fpisa.job import JobSpec  # noqa: E402
from fpisa.netem import LinkFaults  # noqa: E402
from hosts.allreduce import AllreduceConfig  # noqa: E402
from hosts.query.run import QueryConfig, TableOverflowError, prepare, query_job, run_query  # noqa: E402
from hosts.query.sql import TPCH  # noqa: E402
from hosts.query.table import generate_lineitem, read_table  # noqa: E402

EVERYTHING = ("SELECT l_linenumber, l_returnflag, SUM(l_quantity) AS q, AVG(l_discount) AS d, "
              "MIN(l_tax) AS mn, MAX(l_quantity * l_discount) AS mx, COUNT(*) AS c FROM lineitem "
              "WHERE l_shipdate < DATE '1997-01-01' AND l_linestatus IN ('F', 'O') "
              "GROUP BY l_linenumber, l_returnflag")


@pytest.fixture(scope="module")
def lineitem(tmp_path_factory):
    path = tmp_path_factory.mktemp("query") / "lineitem.parquet"
    generate_lineitem(0.002, path, seed=5, row_group_rows=3000)  # 12,000 rows, 4 row groups
    return path


def run(lineitem, sql, mode="fpisa", fmt="fp32", workers=2, faults=None, transport=None, slots=256,
        spill=True):
    spec = prepare(sql, str(lineitem))
    job = query_job(spec, mode, fmt, num_workers=workers, packet_elements=32, window=8)
    cfg = AllreduceConfig(job=job, elements=slots, faults=faults or LinkFaults(), seed=1,
                          timeout_ms=5.0, transport=transport)
    return run_query(QueryConfig(sql, str(lineitem), cfg, table_slots=slots, spill=spill),
                     progress=False, spec=spec)


def assert_matches_duckdb(report, max_ulp):
    c = report["checks"]
    assert c["bit_exact"], c["mismatched_elements"]
    assert c["identical_across_workers"] and c["packets_without_recorded_order"] == 0
    assert c["same_groups_as_duckdb"] and c["count_mismatches"] == 0 and c["min_max_mismatches"] == 0
    for name, u in c["sum_avg_ulp_vs_correctly_rounded"].items():
        assert u["fpisa_max_ulp"] <= max_ulp, (name, u)
    assert c["ok"]


@pytest.mark.parametrize("mode,fmt,max_ulp", [("fpisa", "fp32", 2), ("fpisa-a", "fp16", 2),
                                              ("switchml", "bf16", 2), ("switchml", "fp32", 2)])
def test_every_aggregate_and_key_type_matches_duckdb(lineitem, mode, fmt, max_ulp):
    report = run(lineitem, EVERYTHING, mode, fmt)
    assert_matches_duckdb(report, max_ulp)
    assert report["checks"]["groups"] == 12  # 4 line numbers x 3 return flags
    assert report["table"]["spilled_groups"] == 0
    assert report["rows"] == 12_000 and 0 < report["selected_rows"] < 12_000


@pytest.mark.parametrize("mode,transport", [("fpisa", "shm"), ("switchml", "udp")])
def test_with_faults(lineitem, mode, transport):
    faults = LinkFaults(loss=0.1, duplicate=0.1, reorder=0.1)
    report = run(lineitem, TPCH["q1"], mode, workers=3, faults=faults, transport=transport)
    assert_matches_duckdb(report, 3)
    assert sum(w["counters"]["retransmitted"] for w in report["workers"]) > 0
    assert report["switch"]["counters"]["dropped_total"] > 0


def test_an_overflowing_group_table_spills_to_the_host(lineitem):
    # 3,000 orders into 64 entries: most groups find their entry taken
    sql = "SELECT l_orderkey, SUM(l_extendedprice) AS p, MAX(l_tax) AS t, COUNT(*) AS c " \
          "FROM lineitem GROUP BY l_orderkey"
    report = run(lineitem, sql, "fpisa", slots=64)
    assert_matches_duckdb(report, 2)
    t = report["table"]
    assert report["checks"]["groups"] == 3000
    assert t["entries_used"] <= 64 and t["spilled_groups"] == 3000 - t["entries_used"] > 2800
    assert {r["where"] for r in report["result"]} == {"switch", "host"}
    with pytest.raises(TableOverflowError, match="--spill"):
        run(lineitem, sql, "fpisa", slots=64, spill=False)


def test_csv_tables_and_q6(lineitem, tmp_path):
    import pyarrow.csv as pcsv

    path = tmp_path / "lineitem.csv"
    pcsv.write_csv(read_table(lineitem), path)
    report = run(path, TPCH["q6"], "fpisa-a", workers=2)
    assert_matches_duckdb(report, 2)
    assert len(report["result"]) == 1 and report["result"][0]["values"]["revenue"] > 0


def test_cli_runs_q1_next_to_duckdb(lineitem, tmp_path, capsys):
    out = tmp_path / "q1.json"
    code = main(["query", "run", "q1", "--table", str(lineitem), "--workers", "2", "--progress", "off",
                 "--json", str(out), "--csv", str(tmp_path / "q1.csv")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "duckdb" in text and "checks      ok" in text
    report = json.loads(out.read_text())
    assert [r["key"] for r in report["result"]] == [["A", "F"], ["N", "F"], ["N", "O"], ["R", "F"]]
    assert (tmp_path / "q1.csv").read_text().startswith("l_returnflag,l_linestatus,sum_qty")


@pytest.mark.parametrize("sql,message", [
    ("SELECT l_returnflag, SUM(l_bogus) FROM lineitem GROUP BY l_returnflag", "unknown column 'l_bogus'"),
    ("SELECT l_returnflag, SUM(l_linestatus) FROM lineitem GROUP BY l_returnflag", "not a float column"),
    ("SELECT l_returnflag, SUM(l_orderkey) FROM lineitem GROUP BY l_returnflag", "not a float column"),
    ("SELECT SUM(l_tax) FROM orders", "unknown table 'orders'"),
])
def test_bad_queries_exit_2(lineitem, sql, message, capsys):
    assert main(["query", "run", sql, "--table", str(lineitem), "--progress", "off"]) == 2
    assert message in capsys.readouterr().err


def test_too_many_groups_without_spill_exit_2(lineitem, capsys):
    sql = "SELECT l_orderkey, COUNT(*) FROM lineitem GROUP BY l_orderkey"
    code = main(["query", "run", sql, "--table", str(lineitem), "--workers", "2", "--table-slots", "16",
                 "--no-spill", "--progress", "off"])
    assert code == 2
    assert "group table (16 entries)" in capsys.readouterr().err


def test_job_carries_only_the_modes_a_query_needs():
    from hosts.query.sql import parse

    job = query_job(parse("SELECT SUM(x), MIN(x) FROM t"), "fpisa")
    assert isinstance(job, JobSpec) and [m.name for m in job.wire_modes] == [
        "FPISA", "KEY_CLAIM", "SWITCHML", "FLOAT_MIN"]


def test_no_selected_rows_give_one_null_row_as_in_sql(lineitem):
    report = run(lineitem, "SELECT SUM(l_tax) AS s, MAX(l_tax) AS m, COUNT(*) AS c FROM lineitem "
                           "WHERE l_quantity > 100")
    assert report["checks"]["ok"]
    assert [r["values"] for r in report["result"]] == [{"s": None, "m": None, "c": 0}]
