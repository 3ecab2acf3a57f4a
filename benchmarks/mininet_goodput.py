"""Goodput of the allreduce on a shaped Mininet star vs the link's payload line rate.

For each K: one experiment on 100 Mbit/s links (htb) and, in the same run,
one on unshaped links (the machine's own limit: Python workers and switch
sharing the cores). Goodput = gradient bytes per worker / completion time;
the payload line rate is the bandwidth times the payload's share of each
frame (Ethernet+IPv4+UDP+aggregation header are overhead). Prints both
ratios: goodput / payload line rate, and goodput / min(line rate,
unshaped goodput), i.e. how close to the limit that actually binds. Root.

    .venv/bin/python benchmarks/mininet_goodput.py [--workers 1 2 3] [--elements 2000000]
        [--packet-elements 255] [--window 128] [--bw 100] [--mode fpisa] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hosts.mininet.config import ExperimentConfig  # noqa: E402
from hosts.mininet.experiment import run_experiment  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--elements", type=int, default=2_000_000)
    p.add_argument("--packet-elements", type=int, default=255)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--timeout", type=float, default=100.0, help="workers' minimum RTO in ms")
    p.add_argument("--bw", type=float, default=100.0)
    p.add_argument("--mode", default="fpisa")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("needs root (Mininet)", file=sys.stderr)
        return 2
    rows = []
    print(f"{'K':>2} {'goodput':>9} {'line rate':>9} {'ratio':>6} {'unshaped':>9} {'vs binding limit':>16}  bit-exact")
    for K in args.workers:
        common = dict(topo="star", workers=K, mode=args.mode, elements=args.elements,
                      packet_elements=args.packet_elements, window=args.window, timeout_ms=args.timeout,
                      repeat=args.repeat)
        shaped = run_experiment(ExperimentConfig(bw_mbit=args.bw, **common))
        unshaped = run_experiment(ExperimentConfig(bw_mbit=0.0, check=False, **common))
        goodput = shaped["summary"]["median_goodput_mbit"]
        line = shaped["runs"][0]["payload_line_rate_mbit"]
        free = unshaped["summary"]["median_goodput_mbit"]
        row = {"workers": K, "goodput_mbit": goodput, "payload_line_rate_mbit": line,
               "ratio_to_line_rate": goodput / line, "unshaped_goodput_mbit": free,
               "ratio_to_binding_limit": goodput / min(line, free),
               "bit_exact": shaped["summary"]["bit_exact"], "config": shaped["config"]}
        rows.append(row)
        print(f"{K:>2} {goodput:9.1f} {line:9.1f} {row['ratio_to_line_rate']:6.2f} {free:9.1f} "
              f"{row['ratio_to_binding_limit']:16.2f}  {row['bit_exact']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
