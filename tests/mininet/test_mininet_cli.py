"""fpisa mininet's boundary, without root: exit codes for missing root /
tools / bad config, sweep config validation, and the sweep's CSV/JSON/PNG
plumbing (with a stand-in for the experiment: what is tested here is the
bookkeeping, the experiments themselves are in test_mininet_experiments)."""

import csv
import json
import os

import pytest

from fpisa.cli import main
from hosts.mininet import experiment
from hosts.mininet.config import ExperimentConfig
from hosts.mininet.sweep import load_sweep, run_sweep


def test_not_root_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["mininet", "run", "--workers", "2"]) == 2
    assert "needs root" in capsys.readouterr().err


def test_missing_mininet_is_exit_3(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(experiment, "mininet_missing", lambda: "mnexec is not on PATH")
    assert main(["mininet", "run"]) == 3
    assert "mnexec" in capsys.readouterr().err


def test_bmv2_without_its_tools_is_exit_3(monkeypatch, capsys):
    from emulator.bmv2 import tools

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(experiment, "mininet_missing", lambda: None)
    monkeypatch.setattr(tools, "tool_path", lambda name: None)
    assert main(["mininet", "run", "--switch", "bmv2"]) == 3
    assert "simple_switch" in capsys.readouterr().err


def test_bmv2_without_program_or_p4c_is_exit_3(monkeypatch, tmp_path, capsys):
    from emulator.bmv2 import tools
    from p4 import Program

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(experiment, "mininet_missing", lambda: None)
    monkeypatch.setattr(tools, "tool_path", lambda name: None if name == tools.P4C else f"/bin/{name}")
    # a program whose JSON does not exist
    monkeypatch.setattr("hosts.mininet.bmv2.job_program",
                        lambda job: type("P", (), {"json_path": tmp_path / "missing.json"})())
    assert main(["mininet", "run", "--switch", "bmv2"]) == 3
    err = capsys.readouterr().err
    assert "p4c-bm2-ss" in err and "does not exist" in err


@pytest.mark.parametrize("args,message", [
    (["--packet-elements", "64"], "48 elements per packet"),
    (["--duplicate", "0.01"], "duplicate"),
    (["--topo", "two-level", "--workers", "4"], "emulator only"),
])
def test_bmv2_configs_it_cannot_run_are_exit_2(args, message, capsys):
    assert main(["mininet", "run", "--switch", "bmv2", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--workers", "0"], "workers"),
    (["--loss", "0.7"], "loss"),
    (["--topo", "two-level", "--workers", "3", "--leaves", "4"], "leaves"),
    (["--packet-elements", "300"], "elements per packet"),
])
def test_bad_config_is_exit_2(args, message, capsys):
    assert main(["mininet", "run", *args]) == 2
    assert message in capsys.readouterr().err


def write(tmp_path, text: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text,message", [
    ("[grid]\n", "empty"),
    ("[grid]\nworkers = 3\n", "non-empty list"),
    ("[grid]\nworkers = [2]\nbogus = [1]\n", "unknown keys"),
    ("[grid]\nworkers = [0]\n", "workers must be"),
    ("[experiment]\nworkers = 2\n[grid]\nworkers = [2]\n", "both"),
    ("[grid]\nworkers = [2]\n[extra]\n", "unknown sections"),
    ("[grid\n", "not valid TOML"),
])
def test_sweep_config_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_sweep(write(tmp_path, text))


def test_sweep_writes_rows_with_full_config_and_a_plot(tmp_path):
    path = write(tmp_path, '[experiment]\nelements = 1000\nrepeat = 2\n'
                           '[grid]\nworkers = [2, 3]\nloss = [0.0, 0.1]\nmode = ["fpisa", "switchml"]\n'
                           '[output]\ndir = "out"\nname = "t"\n')
    sweep = load_sweep(path)
    assert len(sweep.points()) == 8

    def stand_in(config: ExperimentConfig) -> dict:
        if config.workers == 3 and config.loss and config.mode == "switchml":
            raise experiment.ExperimentError("a node died")
        runs = [{"repeat": r, "seconds": 0.1 * config.workers + r, "goodput_mbit": 10.0 / config.workers,
                 "payload_line_rate_mbit": 81.5, "goodput_ratio": 0.1, "sent": 16, "retransmitted": 0,
                 "checks": {"bit_exact": True, "mismatched_elements": [0] * config.workers,
                            "error_vs_exact": {"mean_ulp": 1.0, "max_ulp": 4, "p99_ulp": 2.0,
                                               "bit_exact_fraction": 0.5, "mean_rel_error": 1e-7}}}
                for r in range(config.repeat)]
        return {"runs": runs, "summary": {"bit_exact": True}, "links": {"loss": "nftables"},
                "kernel": {"netem": False, "nft_egress": True}}

    rows, ok = run_sweep(sweep, stand_in, command="fpisa mininet sweep s.toml")
    assert not ok  # one point failed
    out = tmp_path / "out"
    with open(out / "t.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 7 * 2 + 1
    failed = [r for r in table if r["error"]]
    assert len(failed) == 1 and failed[0]["mode"] == "switchml" and failed[0]["workers"] == "3"
    for r in table:  # every row says how it was made
        assert r["elements"] == "1000" and r["topo"] == "star" and float(r["bw_mbit"]) == 100.0
    doc = json.loads((out / "t.json").read_text())
    assert doc["sweep"]["command"] == "fpisa mininet sweep s.toml"
    assert len(doc["points"]) == 8 and len(doc["rows"]) == 15
    assert (out / "t.png").stat().st_size > 10_000
