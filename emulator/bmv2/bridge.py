"""BMv2 as the switch of ``fpisa allreduce --switch bmv2`` (root only).

The workers of ``fpisa allreduce`` talk UDP on loopback. This bridge owns
the switch's UDP socket and puts each datagram, as an Ethernet/IPv4/UDP
frame, on a veth whose peer is port 0 of ``simple_switch`` running the
job's program; every frame BMv2 sends back (a multicast replica or a
retransmission, all on port 0) is unwrapped and sent to its UDP
destination. So the aggregation itself is BMv2's.

The arrival orders that ``fpisa allreduce`` checks the results with are
BMv2's own: its program logs every contribution it folds
(``p4/include/arrival_log.p4``), and an
:class:`~.arrival_log.ArrivalLogDrainer` reads that log while the job runs
and at its end. If the log cannot give exact orders the statistics say
why (``arrival_log_error``) and the check finds no orders (not bit-exact).

Alongside, the emulator's pipeline processes the same packets in the same
order (BMv2 has one ingress thread and the veth keeps the order; the bridge paces what it feeds BMv2 so BMv2
does not drop frames at its input, queueing them, and tail-dropping before
either switch sees them when its queue is full). Every BMv2 result is
compared with the emulator's, and BMv2's logged orders with the
emulator's recorded ones: the statistics report ``bmv2_vs_emulator``
(matched / missing / unexpected results, ``arrival_orders``), a live
conformance check on real traffic, exact when BMv2 lost no input frame
(``bmv2_input_lost``; BMv2 drops frames when workers burst faster than it
processes them, a few hundred packets/s).

:func:`launch` has the signature of :func:`emulator.server.launch`.
"""

from __future__ import annotations

import os
import select
import socket
import tempfile
import time
from collections import Counter, deque
from pathlib import Path


from fpisa.net import UdpTransport, build_frame, parse_frame
from fpisa.netem import FaultInjector, LinkFaults
from fpisa.protocol import UDP_PORT
from p4 import N_ELEMENTS, job_program

from ..pipeline import SwitchConfig, SwitchPipeline
from ..server import SwitchProcess, start_switch_process
from .arrival_log import ArrivalLogDrainer, ArrivalLogError, ArrivalLogReader, OrderBuilder, compare_recorded
from .build import ensure_built
from .netns import VethPair
from .control_plane import Bmv2Job, ProgramInfo, SwitchCLI, WorkerPort, configure_job, read_counters
from .switch import SimpleSwitch

__all__ = ["launch", "check_config"]

_SWITCH_MAC = "02:00:00:00:ff:00"
_SWITCH_IP = "10.255.255.1"
_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4
#: frames/s the bridge feeds BMv2 with, per P4 source (every format's build): below what a default
#: BMv2 1.15.5 build (logging macros on) sustains here (measured by
#: benchmarks/bmv2_vs_emulator.py: ~140 fpisa, ~117 fpisa_a, ~570 switchml);
#: override with FPISA_BMV2_PPS
DEFAULT_PACKETS_PER_SECOND = {"fpisa": 100.0, "fpisa_a": 80.0, "switchml": 400.0}
_QUEUE_PACKETS = 4096
_BURST_PACKETS = 16
#: at stop, wait for BMv2 (slow: a few hundred packets/s) to send what the
#: emulator says it still owes, until it has been silent this long
_DRAIN_IDLE_S = 3.0


def pacing_rate(source: str) -> float:
    text = os.environ.get("FPISA_BMV2_PPS")
    if text is None:
        return DEFAULT_PACKETS_PER_SECOND[source]
    try:
        rate = float(text)
    except ValueError:
        rate = 0.0
    if not rate > 0:
        raise ValueError(f"FPISA_BMV2_PPS must be a positive number, got {text!r}")
    return rate


def check_config(config: SwitchConfig) -> SwitchConfig:
    """The job as the emulator would run it, refused if BMv2 cannot run it."""
    job = config.job
    if job.packet_elements != N_ELEMENTS:
        raise ValueError(f"the P4 programs carry {N_ELEMENTS} elements per packet, "
                         f"the job has {job.packet_elements} (--packet-elements {N_ELEMENTS})")
    if job.register_bits != 32:
        raise ValueError("the P4 programs have 32-bit mantissa registers")
    if config.rounding != "rz":
        raise ValueError("the P4 programs normalize with rounding toward zero (rz) only")
    pacing_rate(job_program(job).source_stem)  # a bad FPISA_BMV2_PPS fails here
    if os.geteuid() != 0:
        raise ValueError("--switch bmv2 needs root (it creates a veth pair)")
    return config


def launch(config: SwitchConfig, sock, faults: LinkFaults | None = None, context=None) -> SwitchProcess:
    check_config(config)
    return start_switch_process(_process_main, "fpisa-bmv2-bridge", config, sock, faults, context)


def _process_main(config: SwitchConfig, sock, faults: LinkFaults | None, conn) -> None:
    veth = switch = raw = drainer = None
    try:
        check_config(config)
        job_spec = config.job
        program = job_program(job_spec)  # the mode's program built for the job's format
        json_path = ensure_built(program)
        veth = VethPair()
        workdir = Path(tempfile.mkdtemp(prefix="fpisa-bmv2-"))
        switch = SimpleSwitch(json_path, {0: veth.switch}, workdir).start()
        macs = [f"02:00:00:00:{r >> 8:02x}:{r & 0xFF:02x}" for r in range(job_spec.num_workers)]
        job = Bmv2Job(job=job_spec.job, pool_size=job_spec.window,
                      raw_registers=job_spec.raw_registers,
                      workers=tuple(WorkerPort(r, macs[r], ip, port, switch_port=0)
                                    for r, (ip, port) in enumerate(config.workers)))
        cli, info = SwitchCLI(switch.thrift_port), ProgramInfo(json_path)
        configure_job(cli, info, job)
        reader = ArrivalLogReader.for_job(cli, info, job)
        drainer = ArrivalLogDrainer(reader).start()
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        raw.bind((veth.host, 0))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        pipeline = SwitchPipeline(config)
        transport = UdpTransport(sock)
    except Exception as e:  # report, don't hang the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
        _cleanup(switch, veth, raw, drainer)
        return
    conn.send(("ready", None))
    try:
        stats = _serve(pipeline, transport, raw, macs, faults, conn.poll,
                       pacing_rate(program.source_stem))
        stats["bmv2_counters"] = read_counters(cli, info)
        # frames BMv2 never took in (its input queue overflows when workers
        # burst faster than it processes); the protocol recovers, but then
        # the emulator's view and BMv2's differ by those packets
        stats["bmv2_vs_emulator"]["bmv2_input_lost"] = (
            stats["counters"]["received"] - stats["bmv2_counters"]["received"])
        stats["switch"] = f"bmv2 ({json_path.name})"
        recorded = _bmv2_orders(drainer, pipeline, stats)
        conn.recv()
        conn.send(("stats", stats, recorded))
    finally:
        transport.close()
        _cleanup(switch, veth, raw, drainer)


def _bmv2_orders(drainer: ArrivalLogDrainer, pipeline: SwitchPipeline, stats: dict) -> dict:
    """BMv2's logged arrival orders (none if its log cannot give them exactly:
    ``stats["arrival_log_error"]`` says why), compared with the emulator's."""
    try:
        recorded = drainer.finish()
    except ArrivalLogError as e:
        stats["arrival_log_error"] = str(e)
        return OrderBuilder(pipeline.job.num_workers).arrays()
    finally:
        stats["arrival_log"] = drainer.reader.stats()
    if pipeline.config.record_orders:
        stats["bmv2_vs_emulator"]["arrival_orders"] = compare_recorded(recorded, pipeline.recorded_arrays())
    return recorded


def _cleanup(switch, veth, raw, drainer=None) -> None:
    if drainer is not None:
        drainer.stop()
    if raw is not None:
        raw.close()
    if switch is not None:
        switch.stop()
    if veth is not None:
        veth.close()


def _serve(pipeline: SwitchPipeline, transport: UdpTransport, raw: socket.socket, macs,
           faults: LinkFaults | None, should_stop, packets_per_second: float) -> dict:
    injector = FaultInjector(faults) if faults is not None and faults.active else None
    rank_of = pipeline.rank_of
    expected: Counter = Counter()  # (destination, bytes) the emulator says BMv2 owes
    matched = unexpected = 0
    next_check = time.monotonic()
    pending: deque = deque()
    queued: Counter = Counter()
    queue_dropped = queue_duplicates = 0
    rate = packets_per_second
    tokens, last_refill = float(_BURST_PACKETS), time.monotonic()
    stopping_since = None  # the drain: BMv2 lags; collect what it still owes
    last_frame = time.monotonic()
    while True:
        readable, _, _ = select.select([transport.fileno(), raw], [], [], 0.02)
        now = time.monotonic()
        if stopping_since is None and transport.fileno() in readable:
            for item in transport.recv_batch(0, 256):
                if queued[item] > 0:
                    # a worker's retransmission of a packet still waiting here:
                    # BMv2 will see the first copy (dropped before either switch)
                    queue_duplicates += 1
                elif len(pending) < _QUEUE_PACKETS:
                    pending.append(item)
                    queued[item] += 1
                else:
                    queue_dropped += 1  # tail drop, before either switch saw it
        # pace: BMv2 drops frames at its input when it falls behind, and then
        # its state and the emulator's would differ; frames wait here instead
        tokens = min(_BURST_PACKETS, tokens + (now - last_refill) * rate)
        last_refill = now
        while pending and tokens >= 1.0 and stopping_since is None:
            tokens -= 1.0
            data, source = pending.popleft()
            queued[(data, source)] -= 1
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
            out = injector.submit_all(out, now)
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
    stats["bridge"] = {"paced_packets_per_second": rate, "queue_dropped": queue_dropped,
                       "queue_duplicates_dropped": queue_duplicates}
    stats["bmv2_vs_emulator"] = {"matched": matched, "unexpected": unexpected,
                                 "missing": sum(expected.values()),
                                 "missing_examples": [
                                     f"to {d}: type {p[0] & 0xF} pool_index 0x{p[8:10].hex()} "
                                     f"packet_id 0x{p[12:16].hex()} rank {p[5]}"
                                     for (d, p), n in expected.items() if n > 0][:8]}
    return stats
