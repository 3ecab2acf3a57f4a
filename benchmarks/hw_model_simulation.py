"""How fast an hw_model check runs, against the numerics core alone.

A check (``check_against_numerics``: mapping, cycle simulation, and the
reference) executes every op of every stage for every packet in Python;
``fpisa.aggregate`` is the Numba kernel. Both aggregate the same inputs in
the same arrival order in the same run; the script prints simulated
cycles/s, element contributions/s, and the ratio of the two wall-clock
times, so users can size ``fpisa hw check`` runs. The check's verdict is
required to be bit-exact (a benchmark of a wrong answer is worthless).

    .venv/bin/python benchmarks/hw_model_simulation.py [--workers 4] [--elements 512]
        [--packet-elements 64] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fpisa  # noqa: E402
from hw_model.machine import get_machine  # noqa: E402
from hw_model.simulate import check_against_numerics  # noqa: E402

CASES = (("tofino1", "switchml"), ("tofino1", "fpisa-a"), ("fpisa-extended", "fpisa"),
         ("fpisa-extended", "fpisa-raw"))


def _median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--elements", type=int, default=512)
    ap.add_argument("--packet-elements", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    values = rng.standard_normal((args.workers, args.elements)).astype(np.float32)
    rows = []
    for machine_name, program in CASES:
        machine = get_machine(machine_name)
        mode = "switchml" if program == "switchml" else program.replace("-raw", "")
        kwargs = {"block_size": args.packet_elements} if mode == "switchml" else {}
        fpisa.aggregate(values, mode, **kwargs)  # compile the kernels outside the timing
        model_s, check = _median_seconds(
            lambda: check_against_numerics(machine, program, values, args.packet_elements), args.repeats)
        core_s, _ = _median_seconds(lambda: fpisa.aggregate(values, mode, **kwargs), max(args.repeats, 5))
        if not check.ok:
            print(f"{machine_name} {program}: NOT bit-exact {check.mismatches}", file=sys.stderr)
            return 1
        contributions = args.workers * args.elements
        row = {
            "machine": machine_name, "program": program, "workers": args.workers,
            "elements": args.elements, "packet_elements": args.packet_elements,
            "simulated_cycles": check.cycles, "model_seconds": model_s, "core_seconds": core_s,
            "model_cycles_per_s": check.cycles / model_s,
            "model_contributions_per_s": contributions / model_s,
            "core_contributions_per_s": contributions / core_s,
            "slowdown_vs_core": model_s / core_s,
        }
        rows.append(row)
        print(f"{machine_name:15s} {program:10s} {check.cycles:7d} cycles in {model_s:7.3f} s "
              f"({row['model_cycles_per_s']:9.0f} cycles/s, {row['model_contributions_per_s']:9.0f} elem/s); "
              f"fpisa.aggregate {row['core_contributions_per_s']:.3g} elem/s; "
              f"model/core time ratio {row['slowdown_vs_core']:.0f}x")
    if args.json:
        args.json.write_text(json.dumps({"config": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
