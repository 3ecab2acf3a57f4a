"""``fpisa study host-cores``: FPISA's host-cost claim as a model, with a report.

    fpisa study host-cores --out docs/host_cost
    fpisa study host-cores --rates paper --links 100 --max-cores 8
    fpisa study host-cores --rates measured my_rates.json --fmt fp16

Exit codes: 0 ok; 1 a check failed (the model's byte counts disagree with
fpisa.protocol, or goodput exceeded the link / fell with more cores);
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

__all__ = ["add_parser"]

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE = 0, 1, 2

_DESCRIPTION = """\
Model how many host CPU cores per worker FPISA and SwitchML need, and what
allreduce goodput and training speed-up each gets when cores are scarce
(the FPISA paper's "25-75% fewer CPU cores, up to 85.9% better throughput
than SwitchML in a CPU-constrained environment").

  goodput per worker = min(link payload rate, cores x one core's rate)

The link payload rate comes from this toolkit's wire format (Ethernet + IPv4
+ UDP + the 16-byte aggregation header, plus preamble/IFG/FCS on the line);
one core's rate from the host work per element of each mode:

  fpisa           the switch swaps byte order; the host only copies
  fpisa-hostswap  FPISA without in-switch byte swap: the host swaps bytes
  switchml        quantize + dequantize + big-endian int32, exponent in the header
  switchml-2pass  as this toolkit runs SwitchML: a separate exponent pass first

Single-core rates are measured in this run (with fpisa._host_kernels'
compiled kernels when that module exists, else numpy and fpisa.switchml),
taken from the paper (--rates paper: its byte-swap figures; it publishes no
other per-core rate, so the rest stay measured), or read from a JSON file.
More cores than this machine has are extrapolated from single-core rates.

Training: t_iter = max(compute, overlap*comm) + (1-overlap)*comm with
comm = params / goodput, for the model profiles in hosts/study/profiles.json
(every figure carries its source; unsourced ones are swept).

Writes DIR/host_cores.json (everything), host_cores.csv (goodput grid),
training.csv, summary.md, host_cores.png and training.png, and prints the
key tables beside the paper's figures."""

_EPILOG = """\
rates file (JSON), per format or flat for the chosen --fmt; values/s on one core:
  {"fp32": {"copy": 5e9, "byteswap": 2e9, "byteswap_int32": 2e9,
            "block_exponents": 1e9, "quantize": 1e9, "dequantize": 1e9,
            "packet_io": 5e8}}
  a value may also be {"values_per_s": 1e9, "source": "where it comes from"};
  operations left out are measured; packet_io is free unless given.

exit codes: 0 ok, 1 a check failed, 2 bad usage or configuration"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "study", help="studies: host-cores (FPISA vs SwitchML host CPU cost), validate (it vs a paced allreduce)",
        description="Model-based studies of the FPISA paper's claims.")
    sub = parser.add_subparsers(dest="study_command", metavar="STUDY")
    p = sub.add_parser("host-cores", help="CPU cores, goodput and training speed-up: FPISA vs SwitchML",
                       description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    from .host_cores import MODES
    from .report import StudyConfig

    d = StudyConfig()
    p.add_argument("--out", metavar="DIR", default="host_cost",
                   help="directory for the report files (default: %(default)s)")
    p.add_argument("--rates", nargs="+", metavar="SET", default=list(d.rates),
                   help=f"rate sets to compare: measured, paper, FILE.json (default: {' '.join(d.rates)})")
    p.add_argument("--links", nargs="+", type=float, metavar="GBPS", default=list(d.links_gbps),
                   help=f"link rates in Gb/s (default: {' '.join(f'{x:g}' for x in d.links_gbps)})")
    p.add_argument("--max-cores", type=int, metavar="N", default=d.max_cores,
                   help="host cores per worker from 1 to N (default: %(default)s)")
    p.add_argument("--modes", nargs="+", metavar="MODE", default=list(d.modes),
                   help=f"modes to plot and tabulate (default: all: {' '.join(MODES)})")
    p.add_argument("--fmt", default=d.fmt, help="float format: fp32, fp16, bf16 (default: %(default)s)")
    p.add_argument("--elements-per-packet", type=int, metavar="E", default=d.elements_per_packet,
                   help="elements per packet, at most 255 in this wire format (default: %(default)s, the "
                        "toolkit's; SwitchML uses 256 int32 = 1 KB)")
    p.add_argument("--no-line-overhead", action="store_true",
                   help="count frames as a Linux shaper does (no preamble, IFG, FCS)")
    p.add_argument("--compare-cores", nargs="+", type=int, metavar="C", default=list(d.compare_cores),
                   help=f"host cores of the paper comparison (default: {' '.join(map(str, d.compare_cores))})")
    p.add_argument("--compare-link", type=float, metavar="GBPS", default=d.compare_link_gbps,
                   help="link rate of the paper comparison (default: %(default)s)")
    p.add_argument("--profiles", metavar="FILE.json", default=None,
                   help="model profiles (default: hosts/study/profiles.json)")
    p.add_argument("--measure-elements", type=int, metavar="N", default=d.measure_elements,
                   help="values per rate measurement (default: %(default)s)")
    p.add_argument("--repeats", type=int, metavar="R", default=d.measure_repeats,
                   help="best of R per measurement (default: %(default)s)")
    p.set_defaults(func=_host_cores, _defaults={a.dest: a.default for a in p._actions if a.option_strings})
    _add_validate(sub)
    parser.set_defaults(func=lambda args: (parser.print_help(), EXIT_USAGE)[1])


class _Progress:
    """Shows the measurement's progress once it has taken more than a couple of seconds."""

    def __init__(self, after_s: float = 2.0):
        self.start, self.after, self.shown = time.monotonic(), after_s, False

    def __call__(self, op: str, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.start
        if elapsed < self.after and not self.shown:
            return
        self.shown = True
        what = "done" if op == "done" else f"{op} ({done + 1}/{total})"
        sys.stderr.write(f"\rmeasuring single-core host rates: {what:<28} {elapsed:5.1f} s")
        if op == "done":
            sys.stderr.write("\n")
        sys.stderr.flush()


def _command_line(args) -> str:
    """The command that reproduces this report: the options that differ from the defaults."""
    words = ["fpisa", "study", "host-cores"]
    for dest, default in args._defaults.items():
        value = getattr(args, dest, default)
        if dest == "help" or value == default:
            continue
        flag = "--" + dest.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag)
        elif isinstance(value, list):
            words += [flag] + [f"{v:g}" if isinstance(v, float) else str(v) for v in value]
        else:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(shlex.quote(w) for w in words)


def _host_cores(args) -> int:
    from .report import StudyConfig, run_study, summary_lines, write_report

    config = StudyConfig(  # ValueError -> exit 2 (fpisa.cli)
        links_gbps=tuple(args.links), max_cores=args.max_cores, modes=tuple(args.modes), fmt=args.fmt,
        elements_per_packet=args.elements_per_packet, line_overhead=not args.no_line_overhead,
        rates=tuple(args.rates), profiles=args.profiles, compare_cores=tuple(args.compare_cores),
        compare_link_gbps=args.compare_link, measure_elements=args.measure_elements,
        measure_repeats=args.repeats)
    command = _command_line(args)
    report = run_study(config, command=command, progress=_Progress())
    return _finish("host-cores", report, write_report(report, args.out), summary_lines(report),
                   "host_cores.json")


_VALIDATE_DESCRIPTION = """\
Check the host-cost model of `fpisa study host-cores` where this machine can
run it for real: the allreduce (K worker processes, the emulated switch,
loopback UDP by default; every run checked bit-exact) with each worker's link
paced to a few rates (fpisa/pacing.py: every packet charged its Ethernet
line bytes, as the model counts them) and the pipelined worker
(hosts/pipelined.py) with 1, 2, ... conversion threads, beside

  model = min(link rate, threads x one core's conversion rate)

with single-core rates measured in the same run. Unpaced runs measure the
emulated system's own capacity (switch emulator + transport + Python, on
this machine's cores), a bound the model does not have; paced points at most
--cap-fraction of it are "link-bound" and must be within --tolerance of the
model. Goodput is per worker (its elements over its own time), best of
--repeats runs.

Writes DIR/validation.json (everything, every run), validation.csv,
validation.md (the table) and validation.png."""


def _add_validate(sub) -> None:
    from .validate import MODEL_MODES, ValidateConfig

    d = ValidateConfig()
    p = sub.add_parser("validate", help="the host-cost model vs a real paced allreduce on this machine",
                       description=_VALIDATE_DESCRIPTION,
                       epilog="exit codes: 0 ok, 1 a check failed (not bit-exact, or a link-bound point "
                              "outside the tolerance), 2 bad usage",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", metavar="DIR", default="host_cost",
                   help="directory for the report files (default: %(default)s)")
    p.add_argument("--links", nargs="*", type=float, metavar="GBPS", default=list(d.links_gbps),
                   help="paced link rates per worker, Gb/s (default: "
                        f"{' '.join(f'{x:g}' for x in d.links_gbps)})")
    p.add_argument("--no-unpaced", action="store_true",
                   help="skip the unpaced runs (then no point counts as link-bound: no measured capacity)")
    p.add_argument("--threads", nargs="*", type=int, metavar="N", default=list(d.threads),
                   help=f"conversion threads per worker (default: {' '.join(map(str, d.threads))})")
    p.add_argument("--serial", action="store_true",
                   help="also run the serial worker (converts the whole array before and after sending)")
    p.add_argument("--modes", nargs="+", choices=sorted(MODEL_MODES), default=list(d.modes),
                   help=f"allreduce modes (default: {' '.join(d.modes)})")
    p.add_argument("--workers", type=int, default=d.workers, help="workers K (default: %(default)s)")
    p.add_argument("--fmt", default=d.fmt, help="fp32, fp16, bf16 (default: %(default)s)")
    p.add_argument("--packet-elements", type=int, metavar="E", default=d.packet_elements,
                   help="elements per packet (default: %(default)s)")
    p.add_argument("--window", type=int, default=d.window,
                   help="packets in flight per worker (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=d.seconds,
                   help="line time of one paced run; sets its elements (default: %(default)s)")
    p.add_argument("--unpaced-elements", type=int, metavar="N", default=d.unpaced_elements,
                   help="elements of an unpaced run (default: %(default)s)")
    p.add_argument("--repeats", type=int, metavar="R", default=d.repeats,
                   help="runs per point, the best reported (default: %(default)s)")
    p.add_argument("--tolerance", type=float, default=d.tolerance,
                   help="allowed |measured/model - 1| at link-bound points (default: %(default)s)")
    p.add_argument("--cap-fraction", type=float, default=d.cap_fraction,
                   help="link-bound: link rate <= this x the measured capacity (default: %(default)s)")
    p.add_argument("--transport", choices=["udp", "shm"], default=d.transport,
                   help="how workers and switch exchange packets (default: %(default)s, as the committed "
                        "validation in docs/host_cost ran)")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds the data (default: %(default)s)")
    p.set_defaults(func=_validate)


def _validate(args) -> int:
    from .validate import ValidateConfig, run_validation, validation_lines, write_validation

    config = ValidateConfig(  # ValueError -> exit 2 (fpisa.cli)
        links_gbps=tuple(args.links), unpaced=not args.no_unpaced, threads=tuple(args.threads),
        serial=args.serial, modes=tuple(args.modes), workers=args.workers, fmt=args.fmt,
        packet_elements=args.packet_elements, window=args.window, seconds=args.seconds,
        unpaced_elements=args.unpaced_elements, repeats=args.repeats, tolerance=args.tolerance,
        cap_fraction=args.cap_fraction, seed=args.seed, transport=args.transport)
    argv = sys.argv[1:]
    rest = argv[argv.index("validate") + 1:] if "validate" in argv else []
    command = " ".join(["fpisa", "study", "validate"] + [shlex.quote(a) for a in rest])
    tty = sys.stderr.isatty()

    def progress(what: str) -> None:
        sys.stderr.write(f"\r{what:<72}")
        sys.stderr.flush()

    report = run_validation(config, command=command, progress=progress if tty else None)
    if tty:
        sys.stderr.write("\n")
    return _finish("validate", report, write_validation(report, args.out), validation_lines(report),
                   "validation.json")


def _finish(command: str, report: dict, paths, lines, json_name: str) -> int:
    """Print a study's summary and the files written; exit code by its checks."""
    print("\n".join(lines))
    print("wrote " + ", ".join(str(p) for p in paths))
    if not report["checks"]["ok"]:
        print(f"fpisa study {command}: a check failed (see checks in {json_name})", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_OK
