"""``fpisa switch``: run the emulator switch standalone (Mininet, manual runs).

UDP (default):
    fpisa switch --listen 127.0.0.1:48864 --worker 127.0.0.1:5000 --worker 127.0.0.1:5001
Raw Ethernet on the switch's ports (root; e.g. a Mininet host acting as switch):
    fpisa switch --interfaces s1-eth1 s1-eth2 --ip 10.0.0.254 \\
        --worker s1-eth1/00:00:00:00:00:01/10.0.0.1:5000 --worker s1-eth2/...
Workers are listed in rank order. Statistics: JSON lines on stderr every
``--stats-interval`` seconds, and a final JSON document on exit (SIGINT or
SIGTERM) to stdout or ``--stats-json``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from fpisa.exitcodes import EPILOG, ExitCode
from fpisa.formats import FORMATS
from fpisa.job import SWITCH_MODES, JobSpec
from fpisa.net import EthEndpoint, RawEthernetTransport, UdpTransport, parse_address
from fpisa.netem import add_fault_arguments, faults_from_args
from fpisa.protocol import DEFAULT_ELEMENTS, UDP_PORT

from .pipeline import SwitchConfig, SwitchPipeline
from .server import serve, warm_up

__all__ = ["add_parser"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("switch", help="run the emulator switch for one job",
                              description=__doc__.split("\n", 1)[1].strip() + "\n", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="append", required=True, metavar="ADDR",
                   help="a worker's address, in rank order: HOST:PORT (UDP) or "
                        "IFACE/MAC/IP:PORT (raw Ethernet)")
    p.add_argument("--mode", choices=SWITCH_MODES, default="fpisa", help="aggregation (default fpisa)")
    p.add_argument("--fmt", choices=sorted(FORMATS), default="fp32", help="element format (default fp32)")
    p.add_argument("--job", type=int, default=0, help="the job number in the header (default 0)")
    p.add_argument("--packet-elements", type=int, default=DEFAULT_ELEMENTS,
                   help=f"elements per packet (default {DEFAULT_ELEMENTS})")
    p.add_argument("--window", "--pool-size", type=int, default=256, dest="window",
                   help="slots per shadow set = the workers' window (default 256)")
    p.add_argument("--register-bits", type=int, default=32,
                   help="mantissa register width, FPISA modes (default 32)")
    p.add_argument("--raw-registers", action="store_true", help="append raw registers to every result")
    p.add_argument("--record-orders", action="store_true",
                   help="record arrival orders (included in the final statistics)")
    p.add_argument("--listen", default=f"127.0.0.1:{UDP_PORT}", help="UDP HOST:PORT to listen on")
    p.add_argument("--interfaces", nargs="+", metavar="IFACE",
                   help="use raw Ethernet (AF_PACKET) on these interfaces instead of UDP")
    p.add_argument("--ip", default="10.0.0.254", help="the switch's IP in raw Ethernet mode")
    p.add_argument("--stats-interval", type=float, default=0.0, metavar="S",
                   help="print statistics as JSON lines on stderr every S seconds")
    p.add_argument("--stats-json", type=Path, help="write the final statistics here")
    p.add_argument("--seed", type=int, default=0, help="seeds the faults")
    add_fault_arguments(p, "switch -> workers")
    p.set_defaults(func=run)
    return p


def _worker_address(text: str, raw: bool):
    if not raw:
        return parse_address(text)
    try:
        interface, mac, hostport = text.split("/")
    except ValueError:
        raise ValueError(f"bad raw worker address {text!r}; expected IFACE/MAC/IP:PORT") from None
    ip, port = parse_address(hostport)
    return EthEndpoint(interface, mac.lower(), ip, port)


def run(args) -> int:
    raw = bool(args.interfaces)
    try:
        workers = tuple(_worker_address(w, raw) for w in args.worker)
        job = JobSpec(mode=args.mode, fmt=args.fmt, num_workers=len(workers), job=args.job,
                      packet_elements=args.packet_elements, window=args.window,
                      register_bits=args.register_bits, raw_registers=args.raw_registers)
        config = SwitchConfig(job, workers, record_orders=args.record_orders)
        faults = faults_from_args(args, seed=args.seed * 1000)
        if raw:
            transport = RawEthernetTransport(args.interfaces, args.ip)
        else:
            transport = UdpTransport.bind(*parse_address(args.listen))
    except ValueError as e:
        print(f"fpisa switch: {e}", file=sys.stderr)
        return ExitCode.USAGE
    warm_up(config)
    pipeline = SwitchPipeline(config)
    stopping = []

    def stop(signum, frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    where = ", ".join(args.interfaces) if raw else "%s:%d" % transport.address
    print(f"fpisa switch: job {job.job}, {job.mode.value}/{job.fmt}, {job.num_workers} workers, "
          f"listening on {where}", file=sys.stderr)

    def emit(stats):
        print(json.dumps(stats), file=sys.stderr, flush=True)

    stats = serve(pipeline, transport, faults=faults if faults.active else None,
                  should_stop=lambda: bool(stopping), on_stats=emit,
                  stats_interval_s=args.stats_interval or None)
    transport.close()
    if config.record_orders:
        stats["recorded_orders"] = [{"packet_id": pid, "wire_mode": m, "order": list(order)}
                                    for pid, m, order in pipeline.recorded]
    text = json.dumps(stats, indent=1)
    if args.stats_json:
        args.stats_json.write_text(text + "\n")
    else:
        print(text)
    return ExitCode.OK
