"""``fpisa hw``: the hardware model's comparison report and bit-exactness check.

    fpisa hw report [--machines ...] [--programs ...] [--elements 64 256]
                    [--out DIR] [--json PATH] [--stateless-area UM2] [--stateful-area UM2]
    fpisa hw layout [--machine tofino1] [--program fpisa-a] [--elements 64]
    fpisa hw check  [--machines ...] [--programs ...] [--workers 4] [--elements 64]
                    [--packet-elements 8] [--seed 0]

``report`` prints the comparison table (rejections say why), each mapping's
stateful-ALU layout, and the machines' ALU areas; it writes
``hw_report.png`` (elements/s per program per machine; stages and stateful
ALUs used) and ``hw_report.json`` into ``--out``. ``layout`` prints one
placement stage by stage (resources used / available, steps placed, table
actions), or the mapper's rejection. ``check`` runs the cycle
simulation of every program that maps on random inputs and random arrival
orders and compares it with ``fpisa.aggregate`` bit for bit (exit 1 if not).
"""

from __future__ import annotations

from fpisa.exitcodes import ExitCode

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fpisa.formats import FORMATS

from .machine import PRESETS, get_machine
from .mapper import MappingError, map_program, plan_packet
from .metrics import AreaCosts, Metrics, compare, format_table, machine_alu_area_um2
from .programs import PROGRAM_NAMES, build_program
from .simulate import check_against_numerics

__all__ = ["add_parser", "DEFAULT_PROGRAMS"]

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE = ExitCode.OK, ExitCode.CHECK_FAILED, ExitCode.USAGE
DEFAULT_PROGRAMS = ("switchml", "fpisa-a", "fpisa-a-varshift", "fpisa", "fpisa-raw")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("hw", help="hardware cycle model: Banzai/Tofino-class pipelines",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hw = p.add_subparsers(dest="hw_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), EXIT_USAGE)[1])

    report = hw.add_parser("report", help="compare programs across machines")
    _common(report)
    report.add_argument("--elements", type=int, nargs="+", default=[64, 256],
                        help="elements per packet (default: 64 256, SwitchML's 256 B and 1 KB)")
    report.add_argument("--out", type=Path, default=Path("results/hw_model"),
                        help="directory for hw_report.png / hw_report.json")
    report.add_argument("--json", type=Path, help="also write the JSON here")
    report.add_argument("--stateless-area", type=float, metavar="UM2",
                        help="override every machine's stateless ALU area (um^2)")
    report.add_argument("--stateful-area", type=float, metavar="UM2",
                        help="override every machine's stateful atom area (um^2)")
    report.add_argument("--no-plot", action="store_true", help="skip the PNG")
    report.set_defaults(func=run_report)

    layout = hw.add_parser("layout", help="stage-by-stage placement of one program on one machine")
    layout.add_argument("--machine", choices=sorted(PRESETS), default="tofino1")
    layout.add_argument("--program", choices=list(PROGRAM_NAMES), default="fpisa-a")
    layout.add_argument("--elements", type=int, default=64, help="elements per packet")
    _fmt(layout)
    layout.set_defaults(func=run_layout)

    check = hw.add_parser("check", help="cycle simulation vs fpisa.aggregate, bit for bit")
    _common(check)
    check.add_argument("--workers", type=int, default=4)
    check.add_argument("--elements", type=int, default=64, help="elements per worker")
    check.add_argument("--packet-elements", type=int, default=8, help="elements per packet")
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(func=run_check)
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--machines", nargs="+", choices=sorted(PRESETS), default=list(PRESETS))
    p.add_argument("--programs", nargs="+", choices=list(PROGRAM_NAMES), default=list(DEFAULT_PROGRAMS))
    _fmt(p)


def _fmt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fmt", choices=sorted(FORMATS), default="fp32",
                   help="element format of the FPISA programs (SwitchML always carries int32)")


def run_report(args) -> int:
    machines = [get_machine(name) for name in args.machines]
    for n in args.elements:
        if n < 1:
            raise ValueError(f"--elements must be positive, got {n}")
    area = AreaCosts(args.stateless_area, args.stateful_area)
    rows = compare(machines, args.programs, args.elements, area, args.fmt)
    print(f"FPISA element format: {args.fmt}")
    print(format_table(rows))
    print()
    print("stateful ALUs per stage (mapped configurations):")
    for r in rows:
        if r.mapped:
            print(f"  {r.machine:15s} {r.program:17s} {r.elements_per_packet:4d} elem/pkt: "
                  f"{r.stateful_layout}  line rate bound by {r.line_rate_bound}")
    print()
    print("rejections:")
    seen = set()
    for r in rows:
        if not r.mapped and (r.machine, r.program, r.detail) not in seen:
            seen.add((r.machine, r.program, r.detail))
            print(f"  {r.reason}: {r.detail}")
    print()
    areas = {m.name: machine_alu_area_um2(m, area) for m in machines}
    print("ALU area of the whole pipe (stateful + stateless, 15 nm figures):")
    for m in machines:
        a = areas[m.name]
        print(f"  {m.name:15s} " + ("n/a (no published area for its atoms)" if a is None else f"{a / 1e6:.3f} mm^2"))
    document = {
        "config": {
            "machines": [m.summary() for m in machines],
            "programs": list(args.programs),
            "elements_per_packet": list(args.elements),
            "fmt": args.fmt,
            "area_overrides_um2": {"stateless_alu": args.stateless_area, "stateful_atom": args.stateful_area},
        },
        "machine_alu_area_um2": areas,
        "rows": [r.as_dict() for r in rows],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [args.out / "hw_report.json"] + ([args.json] if args.json else [])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {path}")
    if not args.no_plot:
        png = args.out / "hw_report.png"
        plot(rows, png)
        print(f"wrote {png}")
    return EXIT_OK


def plot(rows: list[Metrics], path: Path) -> None:
    """Elements/s at line rate per program per machine, and resources used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    machines = list(dict.fromkeys(r.machine for r in rows))
    programs = list(dict.fromkeys(r.program for r in rows))
    sizes = list(dict.fromkeys(r.elements_per_packet for r in rows))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 8.5))
    groups = [(p, n) for p in programs for n in sizes]
    width = 0.8 / len(machines)
    for i, machine in enumerate(machines):
        heights = []
        for p, n in groups:
            r = next(r for r in rows if (r.machine, r.program, r.elements_per_packet) == (machine, p, n))
            heights.append(r.elements_per_s_line_rate if r.mapped else np.nan)
        xs = np.arange(len(groups)) + i * width
        top.bar(xs, heights, width, label=machine)
        for x, h in zip(xs, heights):
            if np.isnan(h):
                top.text(x, 1e8, "x", ha="center", va="bottom", fontsize=9, color="gray")
    top.set_yscale("log")
    mapped = [r.elements_per_s_line_rate for r in rows if r.mapped]
    # headroom above the tallest bar for the legend
    top.set_ylim(1e8, max(mapped, default=1e9) * 30)
    top.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
    top.set_xticklabels([f"{p}\n{n} elem/pkt" for p, n in groups], fontsize=8)
    top.set_ylabel("element contributions / s\n(line rate, one pipe)")
    top.set_title("Aggregation throughput (x = program rejected by the mapper)")
    top.legend(ncol=len(machines), loc="upper center")
    # resources of the mapped configurations at the first packet size
    n0 = sizes[0]
    shown = [r for r in rows if r.mapped and r.elements_per_packet == n0]
    xs = np.arange(len(shown))
    bottom.bar(xs - 0.2, [r.stages_used for r in shown], 0.4, label="stages used")
    bottom.bar(xs + 0.2, [r.stateful_alus_used for r in shown], 0.4, label="stateful ALUs used")
    bottom.set_xticks(xs)
    bottom.set_xticklabels([f"{r.machine}\n{r.program}" for r in shown], fontsize=8, rotation=20, ha="right")
    bottom.set_title(f"Resources used at {n0} elements per packet (mapped configurations)")
    tallest = max([r.stateful_alus_used for r in shown] + [r.stages_used for r in shown], default=1)
    bottom.set_ylim(0, tallest * 1.3)
    bottom.legend(ncol=2, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_layout(args) -> int:
    machine = get_machine(args.machine)
    try:
        plan = plan_packet(build_program(args.program, machine, args.fmt), machine, args.elements)
    except MappingError as e:
        print(e)
        return EXIT_OK
    print(plan.mapping.describe())
    print(f"{args.elements} elements per packet: {plan.elements_per_pass} per pass, {plan.passes} pass(es) "
          f"(capacity {plan.capacity_per_pass} per pass)")
    return EXIT_OK


def random_values(rng: np.random.Generator, workers: int, n: int, fmt: str) -> np.ndarray:
    """Gaussian values spread over a few binades: float32/float16, or bf16 bits."""
    spread = 20 if fmt != "fp16" else 6  # fp16 overflows past 65504
    x = rng.standard_normal((workers, n)) * np.exp2(rng.integers(-spread, spread, (workers, n)))
    if fmt == "fp16":
        return x.astype(np.float16)
    x32 = x.astype(np.float32)
    return x32 if fmt == "fp32" else (x32.view(np.uint32) >> 16).astype(np.uint16)  # bf16: truncate


def run_check(args) -> int:
    if args.workers < 1 or args.elements < 1 or args.packet_elements < 1:
        raise ValueError("--workers, --elements and --packet-elements must be positive")
    rng = np.random.default_rng(args.seed)
    failed = 0
    checked = 0
    for name in args.machines:
        machine = get_machine(name)
        for program in args.programs:
            try:
                map_program(build_program(program, machine, args.fmt), machine)
            except MappingError as e:
                print(f"{name:15s} {program:17s} not mapped ({e.reason})")
                continue
            values = random_values(rng, args.workers, args.elements, args.fmt)
            slots = -(-args.elements // args.packet_elements)
            order = np.stack([rng.permutation(args.workers) for _ in range(slots)])
            result = check_against_numerics(machine, program, values, args.packet_elements, order, fmt=args.fmt)
            checked += 1
            verdict = "bit-exact" if result.ok else f"MISMATCH {result.mismatches}"
            print(f"{name:15s} {program:17s} {result.cycles:7d} cycles  {verdict}")
            failed += not result.ok
    if checked == 0:
        print("nothing mapped: no check ran", file=sys.stderr)
        return EXIT_CHECK_FAILED
    return EXIT_CHECK_FAILED if failed else EXIT_OK
