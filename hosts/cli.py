"""``fpisa allreduce`` (the main job) and ``fpisa worker`` (one worker).

    fpisa allreduce --workers 4 --elements 1000000 --mode fpisa
    fpisa allreduce --workers 4 --elements 100000 --mode switchml --loss 0.1 --dup 0.1 --reorder 0.1

``allreduce`` exits 0 if the result is bit-exact against the numerics core
given the switch's recorded arrival orders (and identical on every worker),
1 if not (or if a worker or the switch failed), 2 for a bad configuration,
3 if the chosen switch needs a tool that is not installed (BMv2).

The switch implementation is chosen by name (``--switch``); this module is
the composition root that binds the name to a launcher, so ``hosts`` itself
never imports ``emulator``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from fpisa.net import UdpTransport, parse_address
from fpisa.netem import add_fault_arguments, faults_from_args
from fpisa.protocol import UDP_PORT

from .allreduce import AllreduceConfig, AllreduceFailed, gradient_like, run_allreduce
from .worker import AllreduceClient, AllreduceTimeout, WorkerConfig

__all__ = ["add_parser", "SWITCHES", "format_summary"]

#: --switch NAME -> "module:function" with the signature of emulator.server.launch
SWITCHES = {"emulator": "emulator.server:launch", "bmv2": "emulator.bmv2.bridge:launch"}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--elements", type=int, default=1_000_000, help="array length")
    p.add_argument("--mode", choices=["fpisa", "fpisa-a", "switchml"], default="fpisa")
    p.add_argument("--fmt", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--packet-elements", type=int, default=64, help="elements per packet")
    p.add_argument("--window", type=int, default=256, help="outstanding packets (= switch slots)")
    p.add_argument("--raw-registers", action="store_true",
                   help="FPISA modes: get the raw registers and normalize on the host")
    p.add_argument("--rounding", choices=["rne", "rz"], default="rne",
                   help="host-side normalization rounding with --raw-registers")
    p.add_argument("--timeout-ms", type=float, default=20.0, help="minimum retransmission timeout")
    p.add_argument("--seed", type=int, default=0, help="seeds the data and the faults")
    p.add_argument("--json", type=Path, help="write the full report here")


def add_parser(subparsers) -> None:
    """Registers ``allreduce`` and ``worker``."""
    p = subparsers.add_parser("allreduce", help="the main job: K workers allreduce through a switch",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=4, help="worker processes (K)")
    _common(p)
    p.add_argument("--switch", choices=sorted(SWITCHES), default="emulator")
    p.add_argument("--no-check", action="store_true", help="skip the reference aggregation")
    p.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                   help="progress bar on stderr (auto: when stderr is a terminal)")
    add_fault_arguments(p, "see --fault-direction")
    p.add_argument("--fault-direction", choices=["both", "to-switch", "from-switch"], default="both",
                   help="links the faults act on (default: both)")
    p.set_defaults(func=run_allreduce_command)

    w = subparsers.add_parser("worker", help="one worker of a job (with a standalone `fpisa switch`)")
    w.add_argument("--rank", type=int, required=True)
    w.add_argument("--workers", type=int, required=True)
    w.add_argument("--switch-address", default=f"127.0.0.1:{UDP_PORT}", metavar="HOST:PORT")
    w.add_argument("--bind", default="0.0.0.0:0", metavar="HOST:PORT",
                   help="local address (the switch must list it for this rank)")
    _common(w)
    add_fault_arguments(w, "worker -> switch")
    w.set_defaults(func=run_worker_command)


def _config(args) -> AllreduceConfig:
    return AllreduceConfig(workers=args.workers, elements=args.elements, mode=args.mode, fmt=args.fmt,
                           num_elements=args.packet_elements, window=args.window,
                           loss=args.loss, duplicate=args.dup, reorder=args.reorder,
                           delay_ms=args.delay_ms, seed=args.seed,
                           fault_direction=getattr(args, "fault_direction", "both"),
                           raw_registers=args.raw_registers, rounding=args.rounding,
                           timeout_ms=args.timeout_ms, switch=getattr(args, "switch", "emulator"),
                           check=not getattr(args, "no_check", False))


def _launcher(name: str):
    module, function = SWITCHES[name].split(":")
    return getattr(importlib.import_module(module), function)


def run_allreduce_command(args) -> int:
    try:
        config = _config(args)
    except ValueError as e:
        print(f"fpisa allreduce: {e}", file=sys.stderr)
        return 2
    progress = {"auto": None, "on": True, "off": False}[args.progress]
    try:
        report = run_allreduce(config, _launcher(config.switch), progress=progress)
    except AllreduceFailed as e:
        print(f"fpisa allreduce: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # the switch launcher's errors (emulator.server.SwitchStartError)
        print(f"fpisa allreduce: {e}", file=sys.stderr)
        return 3 if getattr(e, "tool_missing", False) else 1
    print(format_summary(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    checks = report["checks"]
    return 0 if checks.get("bit_exact", checks["identical_across_workers"]) else 1


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
        f"fpisa allreduce: {c['workers']} workers x {c['elements']:,} elements, mode {c['mode']}, "
        f"{c['fmt']}, {c['num_elements']} elements/packet, window {c['window']}, faults: {faults}, "
        f"seed {c['seed']}",
        f"  time        {report['seconds']:.3f} s  ({report['elements_per_second']:,.0f} elements/s)",
    ]
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
        config = WorkerConfig(rank=args.rank, num_workers=args.workers, mode=args.mode, fmt=args.fmt,
                              num_elements=args.packet_elements, window=args.window,
                              timeout_ms=args.timeout_ms, raw_registers=args.raw_registers,
                              rounding=args.rounding)
        # the same seed stream as the same rank inside `fpisa allreduce`
        faults = faults_from_args(args, seed=args.seed * 1000 + 1 + args.rank)
        switch = parse_address(args.switch_address)
        transport = UdpTransport.bind(*parse_address(args.bind, default_port=0))
    except ValueError as e:
        print(f"fpisa worker: {e}", file=sys.stderr)
        return 2
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
        return 1
    seconds = time.perf_counter() - start
    report = {"rank": args.rank, "elements": args.elements, "seconds": seconds,
              "elements_per_second": args.elements / seconds,
              "result_sha256": hashlib.sha256(result.tobytes()).hexdigest(),
              "counters": client.counters.as_dict(), "conversion": client.conversion.as_dict()}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    transport.close()
    return 0
