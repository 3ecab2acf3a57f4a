"""End-to-end allreduce throughput: fpisa through the emulator switch vs
torch.distributed gloo, same K processes, same data size, same machine, same run.

For each K: ``fpisa allreduce`` (K worker processes + 1 switch process,
on each ``--transports``: shared-memory rings or loopback UDP, and each
``--loss``; time from the first worker's start to the last worker's end;
best of ``--fpisa-repeats``) and gloo's ``all_reduce`` of the same float32
arrays with K processes (median of ``--repeats`` after one warm-up), in the
same run. Prints elements/s, the ratio fpisa / gloo, and for lossy runs the
ratio to the same configuration without loss.

    .venv/bin/python benchmarks/allreduce.py [--workers 2 4 8 16] [--elements 4194304]
        [--packet-elements 64 255] [--transports shm udp] [--loss 0 0.001 0.01 0.05]
        [--modes fpisa] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fpisa.job import JobSpec  # noqa: E402
from fpisa.netem import LinkFaults  # noqa: E402
from hosts.allreduce import AllreduceConfig, gradient_like, run_allreduce  # noqa: E402


def _gloo_worker(rank, K, n, seed, port, repeats, queue):
    import torch
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=K)
    data = torch.from_numpy(gradient_like(n, rank, seed).view("float32").copy())
    x = data.clone()
    dist.all_reduce(x)  # warm-up: connections, buffers
    times, cpu = [], []
    for _ in range(repeats):
        x = data.clone()
        dist.barrier()
        c = time.process_time()  # all threads of the process (gloo's included)
        t = time.perf_counter()
        dist.all_reduce(x)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    queue.put((rank, times, cpu))
    dist.barrier()
    dist.destroy_process_group()


def gloo_seconds(K: int, n: int, seed: int, repeats: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds summed over the K processes)."""
    import torch.multiprocessing as tmp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = tmp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_gloo_worker, args=(r, K, n, seed, port, repeats, queue)) for r in range(K)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in range(K)]
    for p in procs:
        p.join()
    # one all_reduce takes as long as its slowest rank
    per_repeat = [max(times[i] for _, times, _ in results) for i in range(repeats)]
    cpu = [sum(c[i] for _, _, c in results) for i in range(repeats)]
    return statistics.median(per_repeat), statistics.median(cpu)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--elements", type=int, default=1 << 22)
    ap.add_argument("--packet-elements", type=int, nargs="+", default=[64, 255])
    ap.add_argument("--modes", nargs="+", default=["fpisa"])
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="gloo repeats (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="also check bit-exactness (slow)")
    ap.add_argument("--transports", nargs="+", default=["shm", "udp"], choices=["shm", "udp"])
    ap.add_argument("--loss", type=float, nargs="+", default=[0.0], help="loss probabilities (both directions)")
    ap.add_argument("--fpisa-repeats", type=int, default=3, help="fpisa runs per point (best of)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = []
    n = args.elements
    print(f"n = {n:,} float32 elements per worker; {os.cpu_count()} CPUs; fpisa best of "
          f"{args.fpisa_repeats}, gloo median of {args.repeats}")
    print("the machine is shared: wall-clock ratios move with other load; CPU-seconds (all our")
    print("processes, summed) and elements per CPU-second are the load-robust comparison")
    print(f"{'K':>2} {'system':22} {'seconds':>8} {'elements/s':>14} {'vs gloo':>8} {'cpu s':>6} "
          f"{'elem/cpu-s':>12} {'vs gloo':>8}  notes")
    for K in args.workers:
        g, g_cpu = gloo_seconds(K, n, args.seed, args.repeats)
        rows.append({"workers": K, "system": "gloo", "seconds": g, "elements_per_second": n / g,
                     "cpu_seconds": g_cpu})
        print(f"{K:2d} {'gloo all_reduce':22} {g:8.3f} {n / g:14,.0f} {1.0:8.3f} {g_cpu:6.2f} "
              f"{n / g_cpu:12,.0f} {1.0:8.3f}")
        points = [(mode, E, t, loss) for mode in args.modes for E in args.packet_elements
                  for t in args.transports for loss in args.loss]
        lossless: dict = {}
        for mode, E, transport, loss in points:
                job = JobSpec(mode=mode, num_workers=K, packet_elements=E, window=args.window)
                config = AllreduceConfig(job=job, elements=n, seed=args.seed, check=args.check,
                                         transport=transport, faults=LinkFaults(loss=loss))
                reports = [run_allreduce(config, progress=False) for _ in range(args.fpisa_repeats)]
                report = min(reports, key=lambda r: r["seconds"])
                s = report["seconds"]
                c = report["switch"]["counters"]
                cpu = report["switch"].get("cpu_seconds", 0.0) + sum(w["cpu_seconds"] for w in report["workers"])
                ok = report["checks"].get("bit_exact", report["checks"]["identical_across_workers"])
                name = f"{mode} {transport} E={E}" + (f" loss={loss:g}" if loss else "")
                if not loss:
                    lossless[(mode, E, transport)] = s
                vs_lossless = lossless.get((mode, E, transport), float("nan")) / s if loss else 1.0
                rows.append({"workers": K, "system": name, "mode": mode, "transport": transport,
                             "packet_elements": E, "loss": loss, "seconds": s, "elements_per_second": n / s,
                             "ratio_vs_gloo": g / s, "ratio_vs_lossless": vs_lossless, "cpu_seconds": cpu,
                             "cpu_ratio_vs_gloo": g_cpu / cpu, "switch": c, "checks_ok": ok,
                             "host_conversion_ns_per_element": report["host_conversion_ns_per_element"]})
                print(f"{K:2d} {name:22} {s:8.3f} {n / s:14,.0f} {g / s:8.3f} {cpu:6.2f} "
                      f"{n / cpu:12,.0f} {g_cpu / cpu:8.3f}  "
                      f"{'ok' if ok else 'RESULTS DIFFER'}; "
                      + (f"{vs_lossless:.2f}x lossless; " if loss else "")
                      + f"switch rx {c['received']}, retx {c['retransmitted']}, drops {c['dropped_total']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
