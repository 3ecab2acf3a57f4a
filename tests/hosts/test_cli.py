"""The subcommands: `fpisa allreduce` (exit codes, JSON report), and a
standalone `fpisa switch` with two `fpisa worker` processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import free_port
from fpisa.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_allreduce_command_reports_and_exits_zero(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["allreduce", "--workers", "2", "--elements", "700", "--mode", "fpisa-a",
                 "--window", "8", "--loss", "0.05", "--seed", "3", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "bit-exact   yes" in text and "fpisa-a" in text
    report = json.loads(out.read_text())
    assert report["checks"]["bit_exact"] and report["config"]["loss"] == 0.05
    assert report["switch"]["counters"]["completed"] == 11


def test_bad_configuration_exits_two(capsys):
    assert main(["allreduce", "--workers", "0"]) == 2
    assert main(["allreduce", "--loss", "1.5"]) == 2
    assert main(["allreduce", "--packet-elements", "256"]) == 2
    assert "packet" in capsys.readouterr().err


def test_standalone_switch_and_workers(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fpisa = [sys.executable, "-m", "fpisa.cli"]
    switch_port, ports = free_port(socket.SOCK_DGRAM), [free_port(socket.SOCK_DGRAM) for _ in range(2)]
    stats = tmp_path / "stats.json"
    switch = subprocess.Popen(
        fpisa + ["switch", "--listen", f"127.0.0.1:{switch_port}", "--record-orders",
                 "--stats-json", str(stats)]
        + [a for p in ports for a in ("--worker", f"127.0.0.1:{p}")],
        env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening" in switch.stderr.readline()
        workers = [subprocess.Popen(
            fpisa + ["worker", "--rank", str(r), "--workers", "2", "--elements", "1000",
                     "--switch-address", f"127.0.0.1:{switch_port}", "--bind", f"127.0.0.1:{ports[r]}"],
            env=env, stdout=subprocess.PIPE, text=True) for r in range(2)]
        reports = []
        for w in workers:
            out, _ = w.communicate(timeout=60)
            assert w.returncode == 0
            reports.append(json.loads(out))
        assert reports[0]["result_sha256"] == reports[1]["result_sha256"]
    finally:
        switch.send_signal(signal.SIGTERM)
        switch.wait(timeout=30)
    assert switch.returncode == 0
    final = json.loads(stats.read_text())
    assert final["counters"]["completed"] == 16 and len(final["recorded_orders"]) == 16


def test_version_and_python_dash_m():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in ([sys.executable, "-m", "fpisa", "--version"],):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.startswith("fpisa "), done.stderr
    done = subprocess.run([sys.executable, "-m", "fpisa"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "allreduce" in done.stdout


def test_allreduce_help_is_written_for_users(capsys):
    import pytest

    with pytest.raises(SystemExit) as stop:
        main(["allreduce", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "bit-exact" in text and "examples:" in text and "exit status" in text
    assert "composition root" not in text and "module" not in text
