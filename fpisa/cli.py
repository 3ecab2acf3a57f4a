"""The ``fpisa`` command: one entry point, one subcommand per package.

Each package owns its subcommands in its own ``cli.py`` exposing
``add_parser(subparsers)``; this module lists those modules (it names them
as strings only, so ``fpisa numerics`` works in a checkout that lacks a
package). Exit codes: :mod:`fpisa.exitcodes`.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from . import __version__
from .exitcodes import EPILOG, ExitCode

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
    "hosts.query.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fpisa",
        description=(
            "In-switch floating-point aggregation (FPISA, NSDI'22), emulated: "
            "numerics, a software switch, worker hosts, P4 for BMv2, Mininet "
            "experiments and a hardware cycle model."
        ),
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"fpisa {__version__}")
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
        return ExitCode.USAGE
    # SIGTERM (kill, a job scheduler, a test harness) unwinds like Ctrl-C, so
    # every command's cleanup (child processes, shared memory, namespaces)
    # runs; without a handler Python would exit at once and leave it
    previous = signal.signal(signal.SIGTERM, _terminate) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:  # configuration errors are validated into ValueErrors
        print(f"fpisa {args.command}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except Terminated:
        print("terminated", file=sys.stderr)
        return ExitCode.TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so cleanup runs as after Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


if __name__ == "__main__":
    raise SystemExit(main())
