"""``fpisa mininet run`` and ``fpisa mininet sweep`` (root required).

Exit codes: 0 ok; 1 a result was not bit-exact (or a sweep point failed);
2 bad usage/config or not root; 3 Mininet (or BMv2 for ``--switch bmv2``)
missing.
"""

from __future__ import annotations

from fpisa.exitcodes import ExitCode

import json
import shlex
import sys

from fpisa.job import SWITCH_MODES

from .config import BMV2_DEFAULTS, EMULATOR_DEFAULTS, SWITCHES, TOPOLOGIES, ExperimentConfig

__all__ = ["add_parser"]

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_TOOL_MISSING = (ExitCode.OK, ExitCode.CHECK_FAILED,
                                                            ExitCode.USAGE, ExitCode.TOOL_MISSING)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "mininet", help="allreduce experiments in Mininet (root): star / two-level topologies",
        description="Run the allreduce with workers and switches as Mininet hosts on shaped links. "
                    "Needs root and Mininet (apt-get install mininet; pip install 'fpisa[mininet]').")
    sub = parser.add_subparsers(dest="mininet_command", metavar="COMMAND")
    d = ExperimentConfig()

    run = sub.add_parser("run", help="one experiment (repeat R times), checked bit-exact")
    run.add_argument("--topo", choices=TOPOLOGIES, default=d.topo)
    run.add_argument("--workers", type=int, default=d.workers, metavar="K")
    run.add_argument("--leaves", type=int, default=d.leaves, help="leaf switches (two-level)")
    run.add_argument("--switch", choices=SWITCHES, default=d.switch)
    run.add_argument("--mode", choices=SWITCH_MODES, default=d.mode)
    run.add_argument("--fmt", choices=("fp32", "fp16", "bf16"), default=d.fmt)
    run.add_argument("--bw", type=float, default=d.bw_mbit, metavar="MBIT",
                     help="per-link bandwidth in Mbit/s, 0 = unshaped (default %(default)s)")
    run.add_argument("--delay", type=float, default=d.delay_ms, metavar="MS", help="per-link one-way delay")
    run.add_argument("--loss", type=float, default=d.loss, metavar="P",
                     help="per-link, per-direction loss probability (0.05 = 5%%)")
    run.add_argument("--duplicate", type=float, default=d.duplicate, metavar="P",
                     help="per-link, per-direction duplication probability (in the processes)")
    run.add_argument("--reorder", type=float, default=d.reorder, metavar="P",
                     help="per-link, per-direction reordering probability (in the processes)")
    run.add_argument("--elements", type=int, default=d.elements, metavar="N", help="elements per worker")
    run.add_argument("--packet-elements", type=int, default=None, metavar="E",
                     help=f"elements per packet (default {EMULATOR_DEFAULTS['packet_elements']}, at most "
                          f"255; --switch bmv2: {BMV2_DEFAULTS['packet_elements']}, the only size its "
                          "P4 programs take)")
    run.add_argument("--window", type=int, default=None,
                     help=f"outstanding packets per worker (default {EMULATOR_DEFAULTS['window']}; "
                          f"--switch bmv2: {BMV2_DEFAULTS['window']})")
    run.add_argument("--timeout", type=float, default=None, metavar="MS",
                     help=f"workers' minimum retransmission timeout (default "
                          f"{EMULATOR_DEFAULTS['timeout_ms']:g}; --switch bmv2: "
                          f"{BMV2_DEFAULTS['timeout_ms']:g})")
    run.add_argument("--repeat", type=int, default=d.repeat, metavar="R")
    run.add_argument("--seed", type=int, default=d.seed)
    run.add_argument("--no-check", action="store_true", help="skip the bit-exact and error checks")
    run.add_argument("--json", metavar="PATH", help="write the full report here")
    run.add_argument("--keep", action="store_true", help="keep the node logs and specs")
    run.set_defaults(func=_run)

    sweep = sub.add_parser("sweep", help="a grid of experiments from a TOML file -> CSV, JSON, PNG")
    sweep.add_argument("config", metavar="CONFIG.toml")
    sweep.set_defaults(func=_sweep)
    parser.set_defaults(func=lambda args: (parser.print_help(), EXIT_USAGE)[1])


def _guarded(body):
    from .experiment import NotRoot, ToolMissing, preflight

    def wrapper(args) -> int:
        try:
            return body(args, preflight)
        except NotRoot as e:
            print(f"fpisa mininet: {e}", file=sys.stderr)
            return EXIT_USAGE
        except ToolMissing as e:
            print(f"fpisa mininet: required tool missing: {e}", file=sys.stderr)
            return EXIT_TOOL_MISSING
    return wrapper


def _run(args) -> int:
    return _guarded(_run_body)(args)


def _run_body(args, preflight) -> int:
    from .experiment import ExperimentError, run_experiment

    config = ExperimentConfig(topo=args.topo, workers=args.workers, leaves=args.leaves, switch=args.switch,
                              mode=args.mode, fmt=args.fmt, bw_mbit=args.bw, delay_ms=args.delay,
                              loss=args.loss, duplicate=args.duplicate, reorder=args.reorder,
                              elements=args.elements, packet_elements=args.packet_elements,
                              window=args.window, timeout_ms=args.timeout, repeat=args.repeat, seed=args.seed, check=not args.no_check)
    preflight(config)

    def progress(r: int) -> None:
        print(f"allreduce {r + 1}/{config.repeat} done", file=sys.stderr)

    try:
        report = run_experiment(config, on_repeat=progress, keep_dir=args.keep)
    except ExperimentError as e:
        print(f"fpisa mininet run: {e}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
    _print_summary(config, report)
    return EXIT_OK if not config.check or report["summary"]["bit_exact"] else EXIT_CHECK_FAILED


def _print_summary(config: ExperimentConfig, report: dict) -> None:
    s = report["summary"]
    links = ", ".join(f"{k} {v}" for k, v in report["links"].items())
    print(f"{config.topo}, {config.switch} switch, {config.workers} workers, {config.mode}, "
          f"{config.elements} elements ({config.packet_elements} per packet, window {config.window}), "
          f"bw {config.bw_mbit:g} Mbit/s, delay {config.delay_ms:g} ms, loss {config.loss:g}, "
          f"duplicate {config.duplicate:g}, reorder {config.reorder:g} ({links})")
    for run in report["runs"]:
        ratio = f", {run['goodput_ratio']:.1%} of the payload line rate" if run["goodput_ratio"] else ""
        line = (f"  run {run['repeat']}: {run['seconds']:.3f} s, goodput {run['goodput_mbit']:.1f} Mbit/s"
                f"{ratio}, {run['retransmitted']} retransmissions")
        if "checks" in run:
            c = run["checks"]
            against = "numerics core with the recorded arrival orders"
            if "arrival_log_error" in c:
                against += f" (none: {c['arrival_log_error']})"
            line += (f"; bit-exact vs {against}: {c['bit_exact']}; vs exact: mean "
                     f"{c['error_vs_exact']['mean_ulp']:.3f} ulp, max {c['error_vs_exact']['max_ulp']} ulp")
            if "extra_mean_ulp_vs_star" in c:
                line += f"; extra vs star: {c['extra_mean_ulp_vs_star']:+.3f} ulp mean"
        print(line)
    if config.check:
        print("bit-exact" if s["bit_exact"] else "NOT bit-exact")


def _sweep(args) -> int:
    return _guarded(_sweep_body)(args)


def _sweep_body(args, preflight) -> int:
    from .sweep import load_sweep, run_sweep

    sweep = load_sweep(args.config)  # ValueError -> exit 2 (fpisa.cli)
    for config in sweep.points():
        preflight(config)
    command = "fpisa mininet sweep " + shlex.quote(args.config)
    rows, ok = run_sweep(sweep, command=command)
    print(f"{len(rows)} rows -> {sweep.path('csv')}, {sweep.path('json')}, {sweep.path('png')}")
    return EXIT_OK if ok else EXIT_CHECK_FAILED
