"""``fpisa numerics``: aggregate .npy files, and compare modes' errors."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .aggregate import aggregate_detailed
from .errors import error_report
from .formats import FORMATS, Mode
from .workloads import WORKLOADS, generate

ALL_MODES = [m.value for m in Mode]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "numerics", help="aggregate arrays with a mode; error reports comparing modes",
        description="The numerics core from the command line.")
    sub = p.add_subparsers(dest="numerics_command", metavar="ACTION", required=True)

    agg = sub.add_parser(
        "aggregate", help="sum a (workers, elements) .npy array with a mode",
        description="Read a (K, n) float32/float16 (or uint bit-pattern) .npy, write the "
                    "aggregated (n,) array.")
    agg.add_argument("input", help="(K, n) .npy file")
    agg.add_argument("output", help="where to write the (n,) result .npy")
    agg.add_argument("--mode", choices=ALL_MODES, default="fpisa")
    agg.add_argument("--fmt", choices=sorted(FORMATS), default="fp32")
    agg.add_argument("--order", help="optional .npy: permutation of range(K) or (n, K) orders")
    agg.add_argument("--rounding", choices=["rz", "rne"], default="rz")
    agg.add_argument("--register-bits", type=int, default=32)
    agg.add_argument("--block-size", type=int, default=64, help="switchml elements per block")
    agg.add_argument("--report", action="store_true", help="also print the error vs exact")
    agg.set_defaults(func=_run_aggregate)

    rep = sub.add_parser(
        "report", help="error of every mode against the exact sum on generated data",
        description="Generate per-worker data (seeded), aggregate it with every mode and "
                    "print ULP / relative errors against the correctly rounded sum.")
    rep.add_argument("--workers", type=int, default=8)
    rep.add_argument("--elements", type=int, default=1 << 16)
    rep.add_argument("--workloads", default=",".join(WORKLOADS),
                     help=f"comma-separated, from {', '.join(WORKLOADS)}")
    rep.add_argument("--modes", default="fpisa,fpisa-a,switchml,float32")
    rep.add_argument("--register-bits", type=int, default=32)
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--json", help="write the full report here")
    rep.set_defaults(func=_run_report)


def _run_aggregate(args) -> int:
    values = np.load(args.input)
    order = np.load(args.order) if args.order else None
    res = aggregate_detailed(values, args.mode, fmt=args.fmt, order=order, rounding=args.rounding,
                             register_bits=args.register_bits, block_size=args.block_size)
    np.save(args.output, res.result)
    print(f"{args.mode}: {values.shape[0]} workers x {values.shape[1]} elements -> {args.output}; "
          f"overflowed elements {res.overflow_count}, overwrites {res.overwrite_count}")
    if args.report:
        exact = aggregate_detailed(values, "exact", fmt=args.fmt).result_bits
        print(json.dumps(error_report(res.result_bits, exact, args.fmt), indent=2))
    return 0


def _run_report(args) -> int:
    modes = [m for m in args.modes.split(",") if m]
    workloads = [w for w in args.workloads.split(",") if w]
    for m in modes:
        if m not in ALL_MODES:
            raise ValueError(f"unknown mode {m!r}; expected some of {ALL_MODES}")
    config = {"workers": args.workers, "elements": args.elements, "seed": args.seed,
              "register_bits": args.register_bits, "fmt": "fp32", "rounding": "rz",
              "order": "workers 0..K-1"}
    rows = []
    print(f"error vs the correctly rounded sum; {json.dumps(config)}")
    print(f"{'workload':14s} {'mode':9s} {'bit-exact':>9s} {'mean ulp':>10s} {'max ulp':>10s} "
          f"{'mean rel':>10s} {'max rel':>10s} {'overflow':>8s} {'overwrite':>9s}")
    for w in workloads:
        values = generate(w, args.workers, args.elements, args.seed)
        exact = aggregate_detailed(values, "exact").result_bits
        for m in modes:
            res = aggregate_detailed(values, m, register_bits=args.register_bits)
            rep = error_report(res.result_bits, exact)
            row = {"workload": w, "mode": m, **rep, "overflowed_elements": res.overflow_count,
                   "overwrites": res.overwrite_count}
            rows.append(row)
            print(f"{w:14s} {m:9s} {rep['bit_exact_fraction']:9.3f} {rep['mean_ulp']:10.3g} "
                  f"{rep['max_ulp']:10d} {rep['mean_rel_error']:10.3g} {rep['max_rel_error']:10.3g} "
                  f"{res.overflow_count:8d} {res.overwrite_count:9d}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": config, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
