"""emulator.bmv2 without the tools: job validation, CLI commands, parsing, pcap."""

import json

import pytest

import p4
from emulator.bmv2 import control_plane as cp
from emulator.bmv2.pcap import read_pcap, read_pcap_records, write_pcap
from emulator.bmv2.switch import SimpleSwitch


def worker(rank_, **kw):
    rank = rank_
    args = dict(rank=rank, mac=f"02:00:00:00:00:{rank + 1:02x}", ip=f"10.0.0.{rank + 1}",
                udp_port=40000 + rank, switch_port=rank + 1)
    args.update(kw)
    return cp.WorkerPort(**args)


@pytest.fixture
def program_json(tmp_path):
    """A stand-in for a compiled program: just the names the control plane looks up."""
    spec = {
        "pipelines": [
            {"name": "ingress", "tables": [
                {"name": "FpisaIngress.worker_check.job",
                 "actions": ["FpisaIngress.worker_check.set_job", "FpisaIngress.worker_check.unknown_job"]},
                {"name": "FpisaIngress.worker_check.worker",
                 "actions": ["FpisaIngress.worker_check.set_rank", "FpisaIngress.worker_check.unknown_worker"]},
            ]},
            {"name": "egress", "tables": [
                {"name": "ResultEgress.worker_address",
                 "actions": ["ResultEgress.set_worker_address", "ResultEgress.no_address"]},
            ]},
        ],
        "counter_arrays": [{"name": "FpisaIngress.count_outcome.switch_counter"},
                           {"name": "ResultEgress.egress_counter"}],
        "register_arrays": [{"name": "FpisaIngress.lanes.lane_0.mantissa_register.mantissa_register",
                             "size": p4.POOL_ROWS}],
    }
    path = tmp_path / "prog.json"
    path.write_text(json.dumps(spec))
    return path


def test_job_table_commands(program_json):
    info = cp.ProgramInfo(program_json)
    job = cp.Bmv2Job(job=3, workers=(worker(0), worker(1)), pool_size=8, pool_base=16,
                     raw_registers=True)
    assert job.mcast_grp == 4
    assert job.table_commands(info) == [
        "table_add FpisaIngress.worker_check.job FpisaIngress.worker_check.set_job 3 => 2 16 8 4 1",
        "table_add FpisaIngress.worker_check.worker FpisaIngress.worker_check.set_rank 3 10.0.0.1 40000 => 0",
        "table_add ResultEgress.worker_address ResultEgress.set_worker_address 3 0 => "
        "02:00:00:00:00:01 10.0.0.1 40000",
        "table_add FpisaIngress.worker_check.worker FpisaIngress.worker_check.set_rank 3 10.0.0.2 40001 => 1",
        "table_add ResultEgress.worker_address ResultEgress.set_worker_address 3 1 => "
        "02:00:00:00:00:02 10.0.0.2 40001",
    ]


@pytest.mark.parametrize("bad", [
    dict(job=300),
    dict(workers=(worker(0), worker(2))),  # ranks not 0..K-1
    dict(workers=(worker(0), worker(1, ip="10.0.0.1", udp_port=40000))),  # same address
    dict(pool_base=p4.POOL_SLOTS - 1, pool_size=2),
    dict(pool_size=0),
    dict(workers=()),
])
def test_bad_jobs_are_refused(bad):
    args = dict(job=1, workers=(worker(0), worker(1)), pool_size=4)
    args.update(bad)
    with pytest.raises(ValueError):
        cp.Bmv2Job(**args)


@pytest.mark.parametrize("bad", [dict(rank=32), dict(mac="02:00"), dict(ip="10.0.0"),
                                 dict(udp_port=0), dict(switch_port=512)])
def test_bad_worker_ports_are_refused(bad):
    with pytest.raises(ValueError):
        worker(0, **bad)


def test_names_are_found_by_suffix_and_must_be_unique(program_json):
    info = cp.ProgramInfo(program_json)
    assert info.counter("egress_counter") == "ResultEgress.egress_counter"
    assert info.register("lane_0.mantissa_register.mantissa_register").startswith("FpisaIngress.")
    with pytest.raises(cp.ControlPlaneError):
        info.table("no_such_table")
    with pytest.raises(cp.ControlPlaneError):
        info.counter("counter")  # "counter" is not a full name component of either


class FakeCLI:
    def __init__(self, output):
        self.output, self.commands = output, []

    def run(self, commands):
        self.commands += commands
        return self.output(commands) if callable(self.output) else self.output


def test_counters_are_read_by_name_and_summed_over_directions(program_json):
    info = cp.ProgramInfo(program_json)

    def output(commands):
        lines = []
        for i, cmd in enumerate(commands):
            _, name, index = cmd.split()
            lines.append(f"RuntimeCmd: {name}[{index}]= ({100 * i} bytes, {i} packets)")
        return "\n".join(lines)

    counts = cp.read_counters(FakeCLI(output), info)
    n = len(p4.SWITCH_COUNTERS)
    assert list(counts) == list(p4.SWITCH_COUNTERS)
    assert counts["received"] == 0 + n
    assert counts["drop_no_worker_address"] == (n - 1) + (2 * n - 1)


def test_unparsable_counter_output_is_an_error(program_json):
    with pytest.raises(cp.ControlPlaneError):
        cp.read_counters(FakeCLI("RuntimeCmd: nothing useful"), cp.ProgramInfo(program_json))


def test_multicast_group_gets_one_node_per_worker(program_json):
    def output(commands):
        nodes = [c for c in commands if c.startswith("mc_node_create")]
        return "\n".join(f"node was created with handle {7 + i}" for i in range(len(nodes)))

    cli = FakeCLI(output)
    job = cp.Bmv2Job(job=0, workers=(worker(0), worker(1), worker(2)), pool_size=4)
    cp.configure_job(cli, cp.ProgramInfo(program_json), job)
    assert "mc_mgrp_create 1" in cli.commands
    assert [c for c in cli.commands if c.startswith("mc_node_create")] == [
        "mc_node_create 0 1", "mc_node_create 1 2", "mc_node_create 2 3"]
    assert [c for c in cli.commands if c.startswith("mc_node_associate")] == [
        "mc_node_associate 1 7", "mc_node_associate 1 8", "mc_node_associate 1 9"]


def test_register_read_parses_the_value(program_json):
    info = cp.ProgramInfo(program_json)
    name = info.register("lane_0.mantissa_register.mantissa_register")
    cli = FakeCLI(f"RuntimeCmd: {name}[5]= 4294967295\n")
    assert cp.read_register(cli, info, "lane_0.mantissa_register.mantissa_register", 5) == 2**32 - 1
    assert cli.commands == [f"register_read {name} 5"]


def test_row_index_matches_worker_check():
    # worker_check.p4: row = ((pool_base + slot) << 1) | shadow_set
    assert cp.row_index(16, 3, 1) == 39
    assert cp.row_index(0, 0, 0) == 0


def test_pcap_round_trip(tmp_path):
    frames = [bytes(range(i, i + 60)) for i in range(5)]
    path = tmp_path / "x.pcap"
    write_pcap(path, frames, start_us=2_500_000, gap_us=1000)
    assert read_pcap(path) == frames
    # each record's timestamp (simple_switch stamps its output frames)
    assert [round(t, 6) for t, _ in read_pcap_records(path)] == [2.5, 2.501, 2.502, 2.503, 2.504]
    # a record cut short (file still being written) is left out
    path.write_bytes(path.read_bytes()[:-10])
    assert read_pcap(path) == frames[:-1]
    path.write_bytes(b"not a pcap file at all, nope")
    with pytest.raises(ValueError):
        read_pcap(path)


def test_simple_switch_command_line(tmp_path):
    sw = SimpleSwitch(tmp_path / "p.json", {0: "uplink", 1: "worker0"}, tmp_path,
                      pcap_wait_seconds=3, thrift_port=9555)
    cmd = sw.command()
    assert cmd[-1] == str(tmp_path / "p.json")
    assert ["-i", "0@uplink"] == cmd[cmd.index("-i"):cmd.index("-i") + 2]
    assert cmd[cmd.index("--use-files") + 1] == "3"
    assert cmd[cmd.index("--thrift-port") + 1] == "9555"
    assert any(a.startswith(f"ipc://{tmp_path}") for a in cmd)  # private notification socket


@pytest.mark.parametrize("ports", [{}, {0: "a@b"}, {600: "x"}])
def test_simple_switch_refuses_bad_ports(tmp_path, ports):
    with pytest.raises(ValueError):
        SimpleSwitch(tmp_path / "p.json", ports, tmp_path)
