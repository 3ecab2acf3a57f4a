"""``fpisa p4``: build the P4 programs, regenerate their generated sources.

- ``fpisa p4 build [PROGRAM ...]``: p4c-bm2-ss --arch v1model --std p4-16 on each
  program into p4/build/<program>.json; exit 3 when p4c-bm2-ss is missing,
  1 when a program does not compile. A program is a source built for one
  element format: fpisa, fpisa_fp16, fpisa_bf16, fpisa_a, fpisa_a_fp16,
  fpisa_a_bf16, switchml (``--format`` picks the builds of formats instead).
- ``fpisa p4 constants``: regenerate p4/include/constants.p4 (from
  fpisa.protocol.p4_constants()) and the other generated P4 files;
  ``--check`` only reports stale ones (exit 1).
- ``fpisa p4 status``: which p4lang tools are on PATH and which programs are built.
"""

from __future__ import annotations

from fpisa.exitcodes import ExitCode

import argparse
import json
import sys

__all__ = ["add_parser"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    from p4 import P4_FORMATS, PROGRAMS

    parser = subparsers.add_parser("p4", help="build and inspect the P4 (BMv2) programs",
                                   description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="p4_command", required=True)

    build = sub.add_parser("build", help="compile the programs with p4c-bm2-ss")
    build.add_argument("programs", nargs="*",
                       help="builds: " + ", ".join(PROGRAMS) + " (default: all; fpisa_fp16 is "
                       "p4/fpisa.p4 for fp16 packets, and so on)")
    build.add_argument("--format", dest="formats", action="append", choices=list(P4_FORMATS),
                       help="only the builds of this element format (repeatable; switchml counts "
                       "as fp32)")
    build.add_argument("--json", action="store_true", help="print results as JSON")
    build.set_defaults(func=_build)

    constants = sub.add_parser("constants", help="regenerate the generated P4 sources")
    constants.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    constants.set_defaults(func=_constants)

    status = sub.add_parser("status", help="tools on PATH and built programs")
    status.set_defaults(func=_status)
    parser.set_defaults(func=lambda args: (parser.print_help(), ExitCode.USAGE)[1])
    return parser


def _build(args) -> int:
    from p4 import PROGRAMS

    from .build import build_program
    from .tools import ToolMissing

    names = args.programs or list(PROGRAMS)
    if args.formats:
        names = [n for n in names if n not in PROGRAMS or PROGRAMS[n].fmt in args.formats]
    unknown = [n for n in names if n not in PROGRAMS]
    if unknown:
        print(f"unknown program(s) {unknown}; expected some of {list(PROGRAMS)}", file=sys.stderr)
        return ExitCode.USAGE
    results = []
    for name in names:
        try:
            result = build_program(name)
        except ToolMissing as e:
            print(f"fpisa p4 build: {e}", file=sys.stderr)
            return ExitCode.TOOL_MISSING
        except ValueError as e:
            print(f"fpisa p4 build: {e}", file=sys.stderr)
            return ExitCode.USAGE
        results.append(result)
        if not args.json:
            status = "ok" if result.ok else "FAILED"
            print(f"{name:10s} {status:6s} {result.seconds:6.1f} s ({result.cpu_seconds:.1f} s CPU)  "
                  f"{result.json_path}")
            if result.optimized:
                print(f"{'':10s} {result.optimized}")
            if not result.ok or result.output:
                print(result.output)
    if args.json:
        print(json.dumps([{"program": r.program, "ok": r.ok, "seconds": round(r.seconds, 2),
                           "cpu_seconds": round(r.cpu_seconds, 2), "json": str(r.json_path),
                           "optimized": r.optimized, "output": r.output} for r in results], indent=1))
    return 0 if all(r.ok for r in results) else 1


def _constants(args) -> int:
    from p4.generate import main as generate

    return generate(["--check"] if args.check else [])


def _status(args) -> int:
    from p4 import PROGRAMS

    from .tools import P4C, SIMPLE_SWITCH, SIMPLE_SWITCH_CLI, tool_path

    for tool in (P4C, SIMPLE_SWITCH, SIMPLE_SWITCH_CLI):
        print(f"{tool:18s} {tool_path(tool) or 'not on PATH'}")
    for name, program in PROGRAMS.items():
        built = program.json_path.exists()
        print(f"{name:18s} {'built: ' + str(program.json_path) if built else 'not built'}")
    return 0
