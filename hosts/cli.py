"""``fpisa allreduce`` (the main job) and ``fpisa worker`` (one worker by hand)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from fpisa.exitcodes import EPILOG, ExitCode
from fpisa.formats import FORMATS
from fpisa.job import SWITCH_MODES, JobSpec
from fpisa.net import UdpTransport, parse_address
from fpisa.netem import add_fault_arguments, faults_from_args
from fpisa.protocol import DEFAULT_ELEMENTS, MAX_ELEMENTS, UDP_PORT

from .allreduce import (FAULT_DIRECTIONS, SWITCHES, TRANSPORTS, AllreduceConfig, AllreduceFailed, gradient_like,
                        run_allreduce)
from .worker import AllreduceClient, AllreduceTimeout, WorkerConfig

__all__ = ["add_parser", "format_summary"]

ALLREDUCE_HELP = """\
Run K worker processes that sum (allreduce) an array each through one
switch process on this machine's loopback (no root needed), then check the
result and print accuracy, throughput and the switch's counters.

Every run is checked: all workers must receive identical bits, and those
must equal fpisa.aggregate given the arrival order of every packet that
the switch recorded (bit-exact), whatever faults were injected.

examples:
  fpisa allreduce --workers 4 --elements 1000000 --mode fpisa
  fpisa allreduce --mode switchml --loss 0.1 --dup 0.1 --reorder 0.1 --json out.json
  fpisa allreduce --mode fpisa --raw-registers --rounding rne --fmt fp16

exit status: 0 bit-exact, 1 not bit-exact or a process failed, 2 bad
configuration, 3 the chosen switch needs a tool that is not installed (BMv2).
"""

WORKER_HELP = """\
Run one worker of a job against a switch started by hand with `fpisa switch`
(e.g. on another host). The worker's data is the same seeded gradient-like
array rank R gets inside `fpisa allreduce`; it prints a JSON report with the
SHA-256 of the result, so the workers' results can be compared.

example (three shells):
  fpisa switch --worker 127.0.0.1:5000 --worker 127.0.0.1:5001
  fpisa worker --rank 0 --workers 2 --bind 127.0.0.1:5000
  fpisa worker --rank 1 --workers 2 --bind 127.0.0.1:5001
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--elements", type=int, default=1_000_000, help="array length per worker (default 1000000)")
    p.add_argument("--mode", choices=SWITCH_MODES, default="fpisa",
                   help="aggregation in the switch (default fpisa)")
    p.add_argument("--fmt", choices=sorted(FORMATS), default="fp32", help="element format (default fp32)")
    p.add_argument("--packet-elements", type=int, default=DEFAULT_ELEMENTS,
                   help=f"elements per packet, 1..{MAX_ELEMENTS} (default {DEFAULT_ELEMENTS})")
    p.add_argument("--window", type=int, default=256,
                   help="packets each worker keeps outstanding = switch slots per shadow set (default 256)")
    p.add_argument("--register-bits", type=int, default=32,
                   help="width of the switch's mantissa register, FPISA modes (default 32)")
    p.add_argument("--raw-registers", action="store_true",
                   help="FPISA modes: results carry the raw registers and workers normalize them")
    p.add_argument("--rounding", choices=["rne", "rz"], default=None,
                   help="host-side normalization with --raw-registers (default rne); "
                        "without them results are the switch's truncated (rz) read-out")
    p.add_argument("--timeout-ms", type=float, default=20.0,
                   help="floor of the adaptive retransmission timeout (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seeds the data and the faults (default 0)")
    p.add_argument("--json", type=Path, help="write the full report here")


def add_parser(subparsers) -> None:
    """Registers ``allreduce`` and ``worker``."""
    p = subparsers.add_parser("allreduce", help="the main job: K workers allreduce through a switch",
                              description=ALLREDUCE_HELP, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=4, help="worker processes K (default 4)")
    _common(p)
    p.add_argument("--switch", choices=sorted(SWITCHES), default="emulator",
                   help="the emulator (default) or BMv2 running the P4 program (root, p4c and BMv2 installed)")
    p.add_argument("--transport", choices=TRANSPORTS, default=None,
                   help="how switch and workers exchange packets: shm, rings in shared memory (default "
                        "with the emulator), or udp on loopback (default, and the only one, with BMv2)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the bit-exact check and the exact sum (saves a reference aggregation)")
    p.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                   help="progress bar on stderr (auto: when stderr is a terminal)")
    add_fault_arguments(p, "see --fault-direction")
    p.add_argument("--fault-direction", choices=FAULT_DIRECTIONS, default="both",
                   help="links the faults act on (default both)")
    p.add_argument("--conversion-threads", type=int, metavar="N", default=None,
                   help="run the pipelined worker (hosts/pipelined.py): N threads per worker quantize "
                        "SwitchML's packets chunk by chunk while the first ones are already being sent, "
                        "and dequantize in parallel; same packets and results (default: the serial "
                        "worker, which converts the whole array before and after sending it)")
    p.add_argument("--chunk-elements", type=int, metavar="N", default=None,
                   help="the pipelined worker's unit of conversion, rounded up to whole packets "
                        "(default: 64 packets, at least 65536 elements)")
    p.add_argument("--link-gbps", type=float, metavar="G", default=None,
                   help="pace each worker's link to G Gb/s, counting Ethernet/IPv4/UDP headers, FCS, "
                        "preamble and gap per packet (fpisa/pacing.py; default: unpaced)")
    p.set_defaults(func=run_allreduce_command)

    w = subparsers.add_parser("worker", help="one worker of a job (with a standalone `fpisa switch`)",
                              description=WORKER_HELP, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("--rank", type=int, required=True, help="this worker's rank, 0..K-1")
    w.add_argument("--workers", type=int, required=True, help="workers in the job (K)")
    w.add_argument("--switch-address", default=f"127.0.0.1:{UDP_PORT}", metavar="HOST:PORT",
                   help=f"the switch's UDP address (default 127.0.0.1:{UDP_PORT})")
    w.add_argument("--bind", default="0.0.0.0:0", metavar="HOST:PORT",
                   help="local address (the switch must list it for this rank)")
    _common(w)
    add_fault_arguments(w, "worker -> switch")
    w.set_defaults(func=run_worker_command)


def job_from_args(args) -> JobSpec:
    """The job the command line describes (a ValueError names the bad option)."""
    rounding = args.rounding or ("rne" if args.raw_registers else "rz")
    return JobSpec(mode=args.mode, fmt=args.fmt, num_workers=args.workers,
                   packet_elements=args.packet_elements, window=args.window,
                   register_bits=args.register_bits, raw_registers=args.raw_registers,
                   rounding=rounding)


def _config(args) -> AllreduceConfig:
    return AllreduceConfig(job=job_from_args(args), elements=args.elements,
                           faults=faults_from_args(args, seed=0), seed=args.seed,
                           fault_direction=args.fault_direction, timeout_ms=args.timeout_ms,
                           switch=args.switch, transport=args.transport, check=not args.no_check,
                           conversion_threads=args.conversion_threads, chunk_elements=args.chunk_elements,
                           link_gbps=args.link_gbps)


def run_allreduce_command(args) -> int:
    try:
        config = _config(args)
    except ValueError as e:
        print(f"fpisa allreduce: {e}", file=sys.stderr)
        return ExitCode.USAGE
    progress = {"auto": None, "on": True, "off": False}[args.progress]
    try:
        report = run_allreduce(config, progress=progress)
    except AllreduceFailed as e:
        print(f"fpisa allreduce: {e}", file=sys.stderr)
        return ExitCode.CHECK_FAILED
    except RuntimeError as e:  # the switch launcher's errors (emulator.server.SwitchStartError)
        print(f"fpisa allreduce: {e}", file=sys.stderr)
        return ExitCode.TOOL_MISSING if getattr(e, "tool_missing", False) else ExitCode.CHECK_FAILED
    print(format_summary(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    checks = report["checks"]
    ok = checks.get("bit_exact", checks["identical_across_workers"])
    return ExitCode.OK if ok else ExitCode.CHECK_FAILED


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def format_summary(report: dict) -> str:
    c = report["config"]
    faults = ", ".join(f"{k} {c[k]}" for k in ("loss", "duplicate", "reorder", "delay_ms") if c[k])
    faults = f"{faults} ({c['fault_direction']})" if faults else "none"
    lines = [
        f"fpisa allreduce: {c['num_workers']} workers x {c['elements']:,} elements, mode {c['mode']}, "
        f"{c['fmt']}, {c['packet_elements']} elements/packet, window {c['window']}, "
        f"{c['transport']} transport, faults: {faults}, seed {c['seed']}",
        f"  time        {report['seconds']:.3f} s  ({report['elements_per_second']:,.0f} elements/s)",
    ]
    if "goodput_elements_per_s" in report:
        lines.append("  goodput     " + ", ".join(f"{g:,.0f}" for g in report["goodput_elements_per_s"])
                     + " elements/s per worker (its elements over its own time)")
    if c.get("link_gbps") is not None or c.get("conversion_threads") is not None:
        link = f"{c['link_gbps']:g} Gb/s per worker" if c.get("link_gbps") is not None else "unpaced"
        worker = (f"pipelined, {c['conversion_threads']} conversion thread(s)"
                  if c.get("conversion_threads") is not None else "serial")
        lines.append(f"  link        {link}; worker {worker}")
    checks = report["checks"]
    if "bit_exact" in checks:
        what = "vs fpisa.aggregate with the switch's recorded arrival orders"
        lines.append(f"  bit-exact   {'yes' if checks['bit_exact'] else 'NO'} ({what}; "
                     f"identical on all workers: {'yes' if checks['identical_across_workers'] else 'NO'})")
        if not checks["bit_exact"] and "mismatched_elements" in checks:
            lines.append(f"              mismatched elements per worker: {checks['mismatched_elements']}")
        e = checks["error_vs_exact"]
        lines.append(f"  vs exact    max {e['max_ulp']} ulp, mean {e['mean_ulp']:.3g} ulp, "
                     f"{100 * e['bit_exact_fraction']:.1f}% exact, max rel error {e['max_rel_error']:.3g}, "
                     f"mean rel error {e['mean_rel_error']:.3g}")
    else:
        lines.append(f"  identical   {'yes' if checks['identical_across_workers'] else 'NO'} (not checked "
                     "against the numerics core: --no-check)")
    lines.append(f"  host conv   {report['host_conversion_ns_per_element']:.2f} ns/element "
                 "(encode + decode, per worker)")
    s = report["switch"]["counters"]
    lines.append(f"  switch      received {s['received']}, aggregated {s['aggregated']}, completed "
                 f"{s['completed']}, multicast {s['multicast']}, retransmitted {s['retransmitted']}, "
                 f"dropped {s['dropped_total']} {s['dropped'] or ''}".rstrip())
    w = report["workers"]
    lines.append(f"  workers     sent {sum(x['sent'] for x in w)}, retransmitted "
                 f"{sum(x['retransmitted'] for x in w)}, duplicate results "
                 f"{sum(x['duplicate_results'] for x in w)}")
    cpu = [x.get("cpu_seconds", 0.0) for x in w]
    lines.append(f"  cpu         switch {report['switch'].get('cpu_seconds', 0.0):.2f} s, workers "
                 + " ".join(f"{t:.2f}" for t in cpu) + " s")
    return "\n".join(lines)


def run_worker_command(args) -> int:
    try:
        config = WorkerConfig(job=job_from_args(args), rank=args.rank, timeout_ms=args.timeout_ms)
        # the same seed stream as the same rank inside `fpisa allreduce`
        faults = faults_from_args(args, seed=args.seed * 1000 + 1 + args.rank)
        switch = parse_address(args.switch_address)
        transport = UdpTransport.bind(*parse_address(args.bind, default_port=0))
    except ValueError as e:
        print(f"fpisa worker: {e}", file=sys.stderr)
        return ExitCode.USAGE
    bits = gradient_like(args.elements, args.rank, args.seed, args.fmt)
    client = AllreduceClient(config, transport, switch, faults=faults if faults.active else None)
    client.warm_up()
    print("fpisa worker %d: bound to %s:%d, switch %s:%d" % (args.rank, *transport.address, *switch),
          file=sys.stderr)
    start = time.perf_counter()
    try:
        result = client.allreduce(bits)
    except AllreduceTimeout as e:
        print(f"fpisa worker: {e}", file=sys.stderr)
        return ExitCode.CHECK_FAILED
    seconds = time.perf_counter() - start
    report = {"rank": args.rank, "elements": args.elements, "seconds": seconds,
              "elements_per_second": args.elements / seconds,
              "result_sha256": hashlib.sha256(result.tobytes()).hexdigest(),
              "counters": client.counters.as_dict(), "conversion": client.conversion.as_dict()}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    transport.close()
    return ExitCode.OK
