"""Throughput of every aggregation mode against numpy's float32 sum.

Baseline, measured in the same run on the same data: ``values.sum(axis=0)``
on the (K, n) float32 array (numpy's pairwise SIMD sum over the worker
axis). Prints elements/s per mode and the ratio to that baseline. One core:
the kernels are serial (the emulator parallelizes across slots, not here).

    python benchmarks/numerics.py [--workers 8] [--log2-elements 22] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import fpisa


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--log2-elements", type=int, default=22)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--modes", default="fpisa,fpisa-a,switchml,float32,exact")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    K, n = args.workers, 1 << args.log2_elements
    rng = np.random.default_rng(1)
    values = (rng.standard_normal((K, n)) * np.exp2(rng.integers(-8, 8, (K, n)))).astype(np.float32)
    bits = values.view(np.uint32)

    base = best_of(lambda: values.sum(axis=0), args.repeat)
    rows = [{"mode": "numpy float32 sum (baseline)", "seconds": base, "elements_per_s": n / base, "ratio": 1.0}]
    for mode in args.modes.split(","):
        fpisa.aggregate(bits[:, :1024], mode)  # compile outside the timing
        t = best_of(lambda: fpisa.aggregate(bits, mode), args.repeat)
        rows.append({"mode": mode, "seconds": t, "elements_per_s": n / t, "ratio": base / t})
    print(f"K={K} workers, n=2^{args.log2_elements} elements, best of {args.repeat}, one core")
    print(f"{'mode':32s} {'seconds':>9s} {'elements/s':>12s} {'x numpy sum':>12s}")
    for r in rows:
        print(f"{r['mode']:32s} {r['seconds']:9.4f} {r['elements_per_s']:12.3e} {r['ratio']:12.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"workers": K, "elements": n, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
