"""Play the conformance vectors against a switch and compare bytes.

Backends:
- ``emulator``: the emulator's in-memory pipeline
  (:class:`emulator.pipeline.SwitchPipeline`), step by step: after each
  packet, exactly the expected (destination, bytes) must come out.
- ``bmv2``: the compiled P4 program in ``simple_switch --use-files`` (pcap
  files, no root). All packets enter on port 0 in vector order (one input
  file keeps the order); port r+1 is worker r's. The UDP payloads per
  destination must equal the vector's, in order; a RESULT must leave on the
  worker's port, a RESULT_RETX on the port the request came in on (0); the
  frame must come from the switch's IP/UDP port with a valid IPv4 checksum.
  Then the program's arrival log (p4/include/arrival_log.p4), read over
  thrift, must give the emulator's recorded orders: the same completed
  rounds, in the same order, with the same arrival orders.

Run: python tests/conformance/runner.py [--backend emulator|bmv2|both] [NAME ...]
Exit codes: 0 all passed, 1 a vector failed, 3 BMv2 tools missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fpisa.net import build_frame, parse_frame  # noqa: E402
from fpisa.protocol import UDP_PORT, MsgType  # noqa: E402

VECTOR_DIR = Path(__file__).resolve().parent / "vectors"
UPLINK_PORT = 0


@dataclass(frozen=True)
class Vector:
    name: str
    description: str
    program: str
    job: dict
    switch: dict
    workers: list
    steps: list
    path: Path

    @property
    def expected_packets(self) -> int:
        return sum(len(step["expect"]) for step in self.steps)


def load_vector(path: Path) -> Vector:
    data = json.loads(Path(path).read_text())
    if data.get("format_version") != 1:
        raise ValueError(f"{path}: unknown vector format {data.get('format_version')!r}")
    return Vector(data["name"], data["description"], data["program"], data["job"],
                  data["switch"], data["workers"], data["steps"], Path(path))


def load_vectors(directory: Path = VECTOR_DIR, names: list[str] | None = None) -> list[Vector]:
    vectors = [load_vector(p) for p in sorted(Path(directory).glob("*.json"))]
    if names:
        unknown = set(names) - {v.name for v in vectors}
        if unknown:
            raise ValueError(f"no such vectors: {sorted(unknown)}")
        vectors = [v for v in vectors if v.name in names]
    return vectors


def _address(d: dict) -> tuple[str, int]:
    return d["ip"], d["udp_port"]


def _describe(data: bytes) -> str:
    if len(data) < 16:
        return f"{len(data)} bytes"
    return (f"type {data[0] & 0xF} rank {data[5]} flags 0x{data[3]:02x} "
            f"pool_index 0x{data[8:10].hex()} packet_id 0x{data[12:16].hex()} ({len(data)} B)")


def _first_difference(a: bytes, b: bytes) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first differing byte {i} (0x{x:02x} vs 0x{y:02x})"
    return f"lengths {len(a)} vs {len(b)}"


# ------------------------------------------------------------------ emulator
def _emulator(vector: Vector):
    from emulator.pipeline import SwitchConfig, SwitchPipeline
    from fpisa.job import JobSpec

    job = vector.job  # the vector file's names: num_elements, pool_size (the P4 side's)
    spec = JobSpec(mode=job["mode"], fmt=job["fmt"], num_workers=job["num_workers"], job=job["job"],
                   packet_elements=job["num_elements"], window=job["pool_size"],
                   raw_registers=job["raw_registers"])
    return SwitchPipeline(SwitchConfig(spec, tuple(_address(w) for w in vector.workers),
                                       record_orders=True))


def emulator_recorded(vector: Vector) -> dict:
    """The arrival orders the emulator records for the vector's packets."""
    pipeline = _emulator(vector)
    for step in vector.steps:
        pipeline.process(bytes.fromhex(step["packet"]), _address(step["from"]))
    return pipeline.recorded_arrays()


def run_emulator(vector: Vector) -> list[str]:
    """Problems found (empty: the emulator conforms)."""
    pipeline = _emulator(vector)
    problems = []
    for i, step in enumerate(vector.steps):
        got = pipeline.process(bytes.fromhex(step["packet"]), _address(step["from"]))
        got = sorted((tuple(dest), data) for dest, data in got)
        want = sorted((_address(e), bytes.fromhex(e["packet"])) for e in step["expect"])
        if got != want:
            problems.append(_step_problem(vector, i, step, got, want))
    return problems


def _step_problem(vector, i, step, got, want) -> str:
    lines = [f"{vector.name} step {i} ({step['comment']}): expected {len(want)} packets, got {len(got)}"]
    for (gd, gp), (wd, wp) in zip(got, want):
        if (gd, gp) != (wd, wp):
            lines.append(f"  to {wd}: want {_describe(wp)}; got to {gd}: {_describe(gp)}; "
                         f"{_first_difference(gp, wp)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- bmv2
def bmv2_available() -> tuple[bool, str]:
    """Whether the BMv2 backend can run here, and why not."""
    from emulator.bmv2.tools import P4C, SIMPLE_SWITCH, SIMPLE_SWITCH_CLI, missing_tools

    missing = missing_tools(P4C, SIMPLE_SWITCH, SIMPLE_SWITCH_CLI)
    if missing:
        return False, f"not on PATH: {', '.join(missing)} (docs/p4.md)"
    return True, ""


def run_bmv2(vector: Vector, json_path: Path | None = None, *, pcap_wait_seconds: int = 4,
             timeout: float = 60.0, keep_workdir: bool = False, attempts: int = 3,
             counters: dict | None = None) -> list[str]:
    """Problems found (empty: BMv2 running the vector's program conforms).

    ``counters``: filled with the switch's packet counters (by name,
    ``read_counters``) once the packets are through.

    simple_switch starts reading the pcap input ``pcap_wait_seconds`` after
    it starts, so the job must be configured within that time; on a loaded
    machine (large programs make simple_switch_CLI slow) that can fail, and
    the vector is then run again from scratch with twice the wait.
    """
    from emulator.bmv2.build import ensure_built
    from emulator.bmv2.control_plane import (Bmv2Job, ProgramInfo, SwitchCLI, WorkerPort,
                                             configure_job, read_counters)
    from emulator.bmv2.pcap import read_pcap, write_pcap
    from emulator.bmv2.switch import SimpleSwitch

    json_path = Path(json_path) if json_path else ensure_built(vector.program)
    workdir = Path(tempfile.mkdtemp(prefix=f"bmv2-{vector.name}-"))
    switch_addr = vector.switch
    ports = {UPLINK_PORT: "uplink", **{w["switch_port"]: f"worker{w['rank']}" for w in vector.workers}}
    frames = [build_frame(bytes.fromhex(step["packet"]), src_mac=step["from"]["mac"],
                          dst_mac=switch_addr["mac"], src_ip=step["from"]["ip"],
                          dst_ip=switch_addr["ip"], src_port=step["from"]["udp_port"],
                          dst_port=UDP_PORT)
              for step in vector.steps]
    for port, name in ports.items():
        write_pcap(workdir / f"{name}_in.pcap", frames if port == UPLINK_PORT else [])
    switch = SimpleSwitch(json_path, ports, workdir, pcap_wait_seconds=pcap_wait_seconds)
    problems: list[str] = []
    try:
        switch.start()
        job = Bmv2Job(job=vector.job["job"], pool_size=vector.job["pool_size"],
                      raw_registers=vector.job["raw_registers"],
                      workers=tuple(WorkerPort(w["rank"], w["mac"], w["ip"], w["udp_port"],
                                               w["switch_port"]) for w in vector.workers))
        cli, info = SwitchCLI(switch.thrift_port), ProgramInfo(json_path)
        configure_job(cli, info, job)
        if switch.seconds_until_processing() <= 0:
            too_slow = [f"{vector.name}: configuring took longer than the pcap wait "
                        f"({pcap_wait_seconds} s); raise pcap_wait_seconds"]
            if attempts <= 1:
                return too_slow
            switch.stop()
            shutil.rmtree(workdir, ignore_errors=True)
            return run_bmv2(vector, json_path, pcap_wait_seconds=2 * pcap_wait_seconds,
                            timeout=timeout, keep_workdir=keep_workdir, attempts=attempts - 1,
                            counters=counters)
        _collect(switch, ports, vector.expected_packets, timeout, read_pcap)
        log_problems = compare_arrival_log(vector, cli, info, job)
        if counters is not None:
            counters.update(read_counters(cli, info))
    finally:
        switch.stop()
    outputs = _collect_final(switch, ports, read_pcap)
    problems = compare_bmv2(vector, outputs) + log_problems
    if problems and not keep_workdir:
        problems.append(f"  (simple_switch files kept in {workdir})")
    elif not keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return problems


def compare_arrival_log(vector: Vector, cli, info, job) -> list[str]:
    """BMv2's arrival log (p4/include/arrival_log.p4) against the emulator's
    recorded orders: the same rounds, orders and completion order."""
    from emulator.bmv2.arrival_log import ArrivalLogError, ArrivalLogReader, compare_recorded

    reader = ArrivalLogReader.for_job(cli, info, job)
    try:
        reader.drain()
    except ArrivalLogError as e:
        return [f"{vector.name}: arrival log: {e}"]
    got, want = reader.builder.arrays(), emulator_recorded(vector)
    diff = compare_recorded(got, want)
    if diff["identical"]:
        return []
    return [f"{vector.name}: arrival log: {diff['rounds']} completed rounds, the emulator recorded "
            f"{diff['other_rounds']}; first difference at round {diff['first_difference']}: "
            f"BMv2 {_round(got, diff['first_difference'])}, emulator {_round(want, diff['first_difference'])}"]


def _round(recorded: dict, i: int) -> str:
    if i >= len(recorded["packet_id"]):
        return "(none)"
    return (f"packet id {int(recorded['packet_id'][i])} mode {int(recorded['wire_mode'][i])} "
            f"order {recorded['order'][i].tolist()}")


def _collect(switch, ports, expected: int, timeout: float, read_pcap) -> None:
    """Wait until the expected number of frames came out (then a little more)."""
    deadline = time.monotonic() + switch.pcap_wait_seconds + timeout
    while time.monotonic() < deadline:
        count = sum(len(read_pcap(switch.out_pcap(p))) for p in ports
                    if switch.out_pcap(p).exists())
        if count >= expected and switch.seconds_until_processing() < -1.0:
            time.sleep(0.5)  # anything unexpected still in flight
            return
        if not switch.running():
            return
        time.sleep(0.2)


def _collect_final(switch, ports, read_pcap) -> dict[int, list[bytes]]:
    return {p: (read_pcap(switch.out_pcap(p)) if switch.out_pcap(p).exists() else [])
            for p in ports}


def compare_bmv2(vector: Vector, outputs: dict[int, list[bytes]]) -> list[str]:
    """Compare simple_switch's output frames (by port) with the vector."""
    from fpisa.net import _ipv4_checksum  # the same checksum the hosts compute

    port_of = {_address(w): w["switch_port"] for w in vector.workers}
    mac_of = {_address(w): w["mac"] for w in vector.workers}
    want: dict[tuple, list[bytes]] = defaultdict(list)
    for step in vector.steps:
        for e in step["expect"]:
            data = bytes.fromhex(e["packet"])
            port = UPLINK_PORT if data[0] & 0xF == MsgType.RESULT_RETX else port_of[_address(e)]
            want[(_address(e), port)].append(data)
    got: dict[tuple, list[bytes]] = defaultdict(list)
    problems = []
    for port, frames in outputs.items():
        for frame in frames:
            parsed = parse_frame(frame)
            if parsed is None:
                problems.append(f"{vector.name}: port {port}: not an IPv4/UDP frame: {frame[:64].hex()}")
                continue
            src_mac, src_ip, src_port, dst_mac, dst_ip, dst_port, payload = parsed
            dest = (dst_ip, dst_port)
            got[(dest, port)].append(payload)
            if (src_ip, src_port) != (vector.switch["ip"], UDP_PORT) or src_mac != vector.switch["mac"]:
                problems.append(f"{vector.name}: frame to {dest} from {src_mac} {src_ip}:{src_port}, "
                                f"not the switch")
            if dest in mac_of and dst_mac != mac_of[dest]:
                problems.append(f"{vector.name}: frame to {dest} has MAC {dst_mac}, want {mac_of[dest]}")
            if _ipv4_checksum(frame[14:24] + b"\0\0" + frame[26:34]) != int.from_bytes(frame[24:26], "big"):
                problems.append(f"{vector.name}: frame to {dest}: bad IPv4 header checksum")
    for key in sorted(set(want) | set(got)):
        w, g = want.get(key, []), got.get(key, [])
        if w != g:
            (dest, port) = key
            lines = [f"{vector.name}: to {dest} on port {port}: expected {len(w)} packets, got {len(g)}"]
            for i, (wp, gp) in enumerate(zip(w, g)):
                if wp != gp:
                    lines.append(f"  #{i}: want {_describe(wp)}; got {_describe(gp)}; "
                                 f"{_first_difference(gp, wp)}")
            for gp in g[len(w):]:
                lines.append(f"  extra: {_describe(gp)}")
            for wp in w[len(g):]:
                lines.append(f"  missing: {_describe(wp)}")
            problems.append("\n".join(lines))
    return problems


# ----------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="vector names (default: all)")
    parser.add_argument("--backend", choices=("emulator", "bmv2", "both"), default="emulator")
    parser.add_argument("--pcap-wait", type=int, default=4,
                        help="seconds simple_switch waits before reading packets (configuration time)")
    args = parser.parse_args(argv)
    try:
        vectors = load_vectors(names=args.names or None)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    backends = ["emulator", "bmv2"] if args.backend == "both" else [args.backend]
    if "bmv2" in backends:
        ok, why = bmv2_available()
        if not ok:
            print(f"bmv2 backend unavailable: {why}", file=sys.stderr)
            return 3
    failed = 0
    for backend in backends:
        for vector in vectors:
            start = time.perf_counter()
            if backend == "emulator":
                problems = run_emulator(vector)
            else:
                problems = run_bmv2(vector, pcap_wait_seconds=args.pcap_wait)
            status = "ok" if not problems else "FAIL"
            print(f"{backend:8s} {vector.name:32s} {len(vector.steps):3d} steps "
                  f"{vector.expected_packets:3d} out  {status}  ({time.perf_counter() - start:.1f} s)")
            for p in problems:
                print(p)
            failed += bool(problems)
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
