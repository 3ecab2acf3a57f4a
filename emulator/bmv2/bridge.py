"""BMv2 as the switch of ``fpisa allreduce --switch bmv2`` (root only).

The workers of ``fpisa allreduce`` talk UDP on loopback. This bridge owns
the switch's UDP socket and puts each datagram, as an Ethernet/IPv4/UDP
frame, on a veth whose peer is port 0 of ``simple_switch`` running the
job's program; every frame BMv2 sends back (a multicast replica or a
retransmission, all on port 0) is unwrapped and sent to its UDP
destination. So the aggregation itself is BMv2's.

Alongside, the emulator's pipeline processes the same packets in the same
order (BMv2 has one ingress thread and the veth keeps the order). It gives
the recorded arrival orders that ``fpisa allreduce`` checks against the
numerics core, and every BMv2 result is compared with the emulator's: the
statistics report ``bmv2_vs_emulator`` (matched / missing / unexpected),
a live conformance check on real traffic, exact when BMv2 lost no input
frame (``bmv2_input_lost``; BMv2 drops frames when workers burst faster
than it processes them, a few hundred packets/s).

:func:`launch` has the signature of :func:`emulator.server.launch`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import select
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from fpisa.net import UdpTransport, build_frame, parse_frame
from fpisa.netem import FaultInjector, LinkFaults
from fpisa.protocol import UDP_PORT
from p4 import N_ELEMENTS

from ..pipeline import JobConfig, SwitchPipeline
from ..server import SwitchProcess
from .build import ensure_built
from .netns import VethPair
from .control_plane import Bmv2Job, ProgramInfo, SwitchCLI, WorkerPort, configure_job, read_counters
from .switch import SimpleSwitch

__all__ = ["launch", "check_spec", "PROGRAM_OF_MODE"]

PROGRAM_OF_MODE = {"fpisa": "fpisa", "fpisa-a": "fpisa_a", "switchml": "switchml"}
_SWITCH_MAC = "02:00:00:00:ff:00"
_SWITCH_IP = "10.255.255.1"
_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4
#: at stop, wait for BMv2 (slow: a few hundred packets/s) to send what the
#: emulator says it still owes, until it has been silent this long
_DRAIN_IDLE_S = 3.0


def check_spec(spec: dict) -> JobConfig:
    """The job as the emulator would run it, refused if BMv2 cannot run it."""
    config = JobConfig(**spec)
    if config.num_elements != N_ELEMENTS:
        raise ValueError(f"the P4 programs carry {N_ELEMENTS} elements per packet, "
                         f"the job has {config.num_elements} (--packet-elements {N_ELEMENTS})")
    if config.mode != "switchml" and config.fmt != "fp32":
        raise ValueError(f"the P4 programs aggregate fp32 only, the job is {config.fmt}")
    if config.register_bits != 32:
        raise ValueError("the P4 programs have 32-bit mantissa registers")
    if config.rounding != "rz":
        raise ValueError("the P4 programs normalize with rounding toward zero (rz) only")
    if os.geteuid() != 0:
        raise ValueError("--switch bmv2 needs root (it creates a veth pair)")
    return config


def launch(spec: dict, sock, faults: LinkFaults | None = None, context=None) -> SwitchProcess:
    check_spec(spec)
    ctx = context or mp.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_process_main, args=(spec, sock, faults, child),
                          name="fpisa-bmv2-bridge", daemon=True)
    process.start()
    child.close()
    return SwitchProcess(process, parent)


def _process_main(spec: dict, sock, faults: LinkFaults | None, conn) -> None:
    veth = switch = raw = None
    try:
        config = check_spec(spec)
        json_path = ensure_built(PROGRAM_OF_MODE[config.mode])
        veth = VethPair()
        workdir = Path(tempfile.mkdtemp(prefix="fpisa-bmv2-"))
        switch = SimpleSwitch(json_path, {0: veth.switch}, workdir).start()
        macs = [f"02:00:00:00:{r >> 8:02x}:{r & 0xFF:02x}" for r in range(config.num_workers)]
        job = Bmv2Job(job=config.job, pool_size=config.pool_size,
                      raw_registers=config.raw_registers,
                      workers=tuple(WorkerPort(r, macs[r], ip, port, switch_port=0)
                                    for r, (ip, port) in enumerate(config.workers)))
        cli, info = SwitchCLI(switch.thrift_port), ProgramInfo(json_path)
        configure_job(cli, info, job)
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        raw.bind((veth.host, 0))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        pipeline = SwitchPipeline(config)
        transport = UdpTransport(sock)
    except Exception as e:  # report, don't hang the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
        _cleanup(switch, veth, raw)
        return
    conn.send(("ready", None))
    try:
        stats = _serve(pipeline, transport, raw, macs, faults, conn.poll)
        stats["bmv2_counters"] = read_counters(cli, info)
        # frames BMv2 never took in (its input queue overflows when workers
        # burst faster than it processes); the protocol recovers, but then
        # the emulator's view and BMv2's differ by those packets
        stats["bmv2_vs_emulator"]["bmv2_input_lost"] = (
            stats["counters"]["received"] - stats["bmv2_counters"]["received"])
        stats["switch"] = f"bmv2 ({json_path.name})"
        conn.recv()
        recorded = pipeline.recorded
        conn.send(("stats", stats, {
            "packet_id": np.array([p for p, _, _ in recorded], np.int64),
            "wire_mode": np.array([m for _, m, _ in recorded], np.int8),
            "order": np.array([o for _, _, o in recorded], np.int16).reshape(
                len(recorded), config.num_workers),
        }))
    finally:
        transport.close()
        _cleanup(switch, veth, raw)


def _cleanup(switch, veth, raw) -> None:
    if raw is not None:
        raw.close()
    if switch is not None:
        switch.stop()
    if veth is not None:
        veth.close()


def _serve(pipeline: SwitchPipeline, transport: UdpTransport, raw: socket.socket, macs,
           faults: LinkFaults | None, should_stop) -> dict:
    injector = FaultInjector(faults) if faults is not None and faults.active else None
    rank_of = {addr: r for r, addr in enumerate(pipeline.config.workers)}
    expected: Counter = Counter()  # (destination, bytes) the emulator says BMv2 owes
    matched = unexpected = 0
    next_check = time.monotonic()
    stopping_since = None  # the drain: BMv2 lags; collect what it still owes
    last_frame = time.monotonic()
    while True:
        readable, _, _ = select.select([transport.fileno(), raw], [], [], 0.02)
        if stopping_since is None and transport.fileno() in readable:
            for data, source in transport.recv_batch(0, 256):
                for dest, packet in pipeline.process(data, source):
                    expected[(tuple(dest), packet)] += 1
                r = rank_of.get(source)
                src_mac = macs[r] if r is not None else "02:00:00:00:ee:ee"
                raw.send(build_frame(data, src_mac=src_mac, dst_mac=_SWITCH_MAC,
                                     src_ip=source[0], dst_ip=_SWITCH_IP, src_port=source[1],
                                     dst_port=UDP_PORT))
        out = []
        if raw in readable:
            for _ in range(256):
                try:
                    frame, addr = raw.recvfrom(65535, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if addr[2] == _PACKET_OUTGOING:
                    continue  # our own frames towards the switch
                parsed = parse_frame(frame)
                if parsed is None or parsed[2] != UDP_PORT:
                    continue
                last_frame = time.monotonic()
                dest, payload = (parsed[4], parsed[5]), parsed[6]
                key = (dest, payload)
                if expected[key] > 0:
                    expected[key] -= 1
                    matched += 1
                else:
                    unexpected += 1
                out.append((dest, payload))
        now = time.monotonic()
        if injector is not None:
            sends = injector.due(now)
            for item in out:
                sends += injector.submit(item, now)
            out = sends
        if out:
            transport.send_batch(out)
        if stopping_since is not None:
            owed = sum(expected.values())
            if owed == 0 or now - last_frame > _DRAIN_IDLE_S:
                break
        elif now >= next_check:
            next_check = now + 0.02
            if should_stop():
                stopping_since = now
    if injector is not None:
        transport.send_batch(injector.flush())
    stats = pipeline.stats()
    stats["emulator_shadow_counters"] = stats.pop("counters")
    stats["counters"] = stats["emulator_shadow_counters"]
    stats["bmv2_vs_emulator"] = {"matched": matched, "unexpected": unexpected,
                                 "missing": sum(expected.values()),
                                 "missing_examples": [
                                     f"to {d}: type {p[0] & 0xF} pool_index 0x{p[8:10].hex()} "
                                     f"packet_id 0x{p[12:16].hex()} rank {p[5]}"
                                     for (d, p), n in expected.items() if n > 0][:8]}
    return stats
