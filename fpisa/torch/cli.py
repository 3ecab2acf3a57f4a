"""``fpisa train``: train a small model with K simulated workers per aggregation mode.

Importing this module does not import torch (``fpisa --help`` works without
it); running the subcommand without torch exits with code 3 and says how to
install it.
"""

from __future__ import annotations

import argparse
import sys

from fpisa.exitcodes import ExitCode

EXIT_OK, EXIT_TOOL_MISSING = ExitCode.OK, ExitCode.TOOL_MISSING

# kept here too (not imported from train.py, which needs torch) so --help works without it
_DATASETS = ("digits", "synthetic")
_MODELS = ("mlp", "cnn")
_MODES = ("float32", "fpisa", "fpisa-a", "switchml")
_ARRIVALS = ("rank", "step", "packet")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a small model with K simulated workers, gradients summed per mode (needs torch)",
        description=(
            "Train with K data-parallel workers simulated in one process; each step's K "
            "per-worker gradients are summed by the chosen in-switch numerics (FPISA, "
            "FPISA-A, SwitchML) or float32, divided by K, and applied. Every (mode, seed) "
            "run of one seed starts from the same weights and sees the same batches. "
            "Writes results.json, epochs.csv, summary.csv, summary.md and accuracy.png."),
    )
    p.add_argument("--dataset", choices=_DATASETS, default="digits",
                   help="digits: scikit-learn's bundled 8x8 digits; synthetic: a generated "
                        "Gaussian-mixture problem (default digits)")
    p.add_argument("--model", choices=_MODELS, default="mlp", help="(default mlp)")
    p.add_argument("--workers", "-K", type=int, default=8, help="simulated workers K (default 8)")
    p.add_argument("--mode", nargs="+", choices=_MODES, default=list(_MODES), metavar="MODE",
                   help=f"one or more of {', '.join(_MODES)} (default: all)")
    p.add_argument("--epochs", type=int, default=5, help="(default 5)")
    p.add_argument("--seed", nargs="+", type=int, default=[0], metavar="SEED",
                   help="one or more seeds: model init, batch order, arrival orders (default 0)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="global batch per step, split into K shards (default 64)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    p.add_argument("--momentum", type=float, default=0.9, help="(default 0.9)")
    p.add_argument("--arrival", choices=_ARRIVALS, default="packet",
                   help="workers' arrival order at the switch: rank order, one seeded "
                        "permutation per step, or one per packet (default packet)")
    p.add_argument("--packet-elements", type=int, default=64,
                   help="elements per packet: SwitchML's block and the arrival granularity (default 64)")
    p.add_argument("--rounding", choices=("rz", "rne"), default="rz",
                   help="FPISA read-out rounding; a switch truncates (default rz)")
    p.add_argument("--register-bits", type=int, default=32, help="FPISA mantissa register width (default 32)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: reproducible)")
    p.add_argument("--no-error", action="store_true",
                   help="skip the per-step exact sum (no error statistics; faster)")
    p.add_argument("--out", default="results/train", help="output directory (default results/train)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        from .train import TrainConfig, run_training, summary_markdown, write_results
    except ImportError as exc:
        print(f"fpisa train: {exc}", file=sys.stderr)
        return EXIT_TOOL_MISSING
    config = TrainConfig(
        dataset=args.dataset, model=args.model, workers=args.workers, modes=tuple(args.mode),
        seeds=tuple(args.seed), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, arrival=args.arrival, packet_elements=args.packet_elements,
        rounding=args.rounding, register_bits=args.register_bits, threads=args.threads,
        measure_error=not args.no_error)
    try:
        report = run_training(config, progress=not args.quiet, out=args.out)
    except ImportError as exc:  # scikit-learn missing for the digits data set
        print(f"fpisa train: {exc}", file=sys.stderr)
        return EXIT_TOOL_MISSING
    paths = write_results(report, args.out)
    sys.stdout.write(summary_markdown(report))
    print(f"\nresults: {', '.join(paths.values())}")
    return EXIT_OK
