"""The ``fpisa`` command: one entry point, one subcommand per package.

This module is the composition root: it is the only place that names the
upper layers (emulator, hosts, hw_model, ...), and it imports each lazily so
``fpisa numerics`` works without them being importable. Each package owns
its subcommand in its own ``cli.py`` exposing ``add_parser(subparsers)``.

Exit codes: 0 success, 1 a check failed (e.g. results not bit-exact),
2 bad usage or configuration, 3 a required external tool is missing.
"""

from __future__ import annotations

import argparse
import importlib
import sys

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_TOOL_MISSING = 3

#: modules that contribute subcommands, in --help order
SUBCOMMAND_MODULES = (
    "fpisa.numerics_cli",
    "hosts.cli",
    "emulator.cli",
    "emulator.bmv2.cli",
    "hosts.mininet.cli",
    "hosts.study.cli",
    "hw_model.cli",
    "fpisa.torch.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fpisa",
        description=(
            "In-switch floating-point aggregation (FPISA, NSDI'22), emulated: "
            "numerics, a software switch, worker hosts, P4 for BMv2, Mininet "
            "experiments and a hardware cycle model."
        ),
        epilog="exit codes: 0 ok, 1 check failed, 2 bad usage/config, 3 required tool missing",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that package is not part of this checkout
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:  # configuration errors are validated into ValueErrors
        print(f"fpisa {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
