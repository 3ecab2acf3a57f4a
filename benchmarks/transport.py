"""Transport microbenchmark: shared-memory rings (fpisa.shm) vs UdpTransport
on loopback (GSO/GRO trains), two processes, measured in the same run.

Two patterns, each for each datagram size, each repeated ``--repeats`` times
(best of N reported, and the median, since the machine is shared):

- ``echo``: the allreduce's pattern. A worker-side process keeps ``--window``
  datagrams in flight to a switch-side process, which sends every datagram it
  receives straight back (``recv_trains`` -> ``send_train``, what the switch
  loop does); the worker refills as echoes arrive (``recv_trains`` ->
  ``send_train``). Rate = echoes per second at the worker; each one crossed
  the transport twice.
- ``stream``: one way, open loop. The worker sends trains of 64 datagrams as
  fast as it can; the switch side counts what arrives in ``--seconds``.
  Rate = datagrams delivered per second (what the receiver keeps up with;
  the sender's excess is dropped: a full socket buffer or ring) and the
  fraction lost. ``shm-zero-copy`` receives with ``recv_arrays`` (views into
  the ring, no bytes objects) instead of ``recv_trains``.

Placements (``--placements``): ``two-cpus`` pins the two processes to CPUs 0
and 1, ``one-cpu`` pins both to CPU 0 (what an oversubscribed host does to a
job: K + 1 processes on fewer CPUs), ``unpinned`` leaves it to the scheduler.

    .venv/bin/python benchmarks/transport.py [--sizes 272 1036] [--seconds 1]
        [--repeats 5] [--window 256] [--spin-us US] [--placements two-cpus one-cpu]
        [--patterns echo stream] [--json out.json]

272 bytes = header + 64 fp32 (the default DATA packet); 1036 = 255 fp32.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from fpisa.net import UdpTransport  # noqa: E402
from fpisa.shm import SWITCH_ADDRESS, ShmFabric, ShmSwitchTransport, ShmWorkerTransport  # noqa: E402

TRAIN = 64


def _open(kind: str, role: str, spec):
    """-> (transport, peer address or None)."""
    if kind == "udp":
        if role == "switch":
            return spec, None
        return UdpTransport.bind("127.0.0.1", 0), spec
    descriptor, spin_s = spec
    if role == "switch":
        return ShmSwitchTransport.attach(descriptor, spin_s=spin_s), None
    return ShmWorkerTransport.attach(descriptor, 0, spin_s=spin_s), SWITCH_ADDRESS


def _pin(cpu) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _switch_main(kind: str, pattern: str, spec, size: int, seconds: float, cpu, conn) -> None:
    transport, _ = _open(kind, "switch", spec)
    _pin(cpu)  # after: the transport's spin policy looks at the CPUs it may use
    if kind == "udp":  # the bound socket came over the pipe
        transport = UdpTransport(transport)
    conn.send("ready")
    cpu0 = time.process_time()
    received = 0
    if pattern == "echo":
        while not conn.poll():
            for data, sz, source in transport.recv_trains(0.02, 256):
                transport.send_train(source, data, sz)
                received += len(data) // sz
        conn.recv()
        conn.send({"received": received, "cpu_s": time.process_time() - cpu0, "send_errors": transport.send_errors})
        return
    zero_copy = pattern == "stream-zero-copy"
    first = None
    deadline = None
    while True:
        now = time.perf_counter()
        if deadline is not None and now >= deadline:
            break
        if zero_copy:
            got = sum(view.shape[0] for _, view in transport.recv_arrays(0.02, 1024))
        else:
            got = sum(len(d) // sz for d, sz, _ in transport.recv_trains(0.02, 1024))
        if got and first is None:
            first = time.perf_counter()
            deadline = first + seconds
            cpu0 = time.process_time()
            continue  # the first batch starts the clock; it is not counted
        received += got
    elapsed = time.perf_counter() - first
    cpu = time.process_time() - cpu0
    conn.send({"received": received, "seconds": elapsed, "cpu_s": cpu})
    conn.recv()  # the sender has stopped
    if kind == "shm":
        transport.close()


def _worker_main(kind: str, pattern: str, spec, size: int, seconds: float, window: int, cpu, conn) -> None:
    transport, peer = _open(kind, "worker", spec)
    _pin(cpu)
    rng = np.random.default_rng(1)
    packets = rng.integers(0, 256, (max(window, TRAIN), size), dtype=np.uint8)
    conn.recv()  # go
    if pattern == "echo":
        clock = time.perf_counter
        transport.send_train(peer, packets[:window].tobytes(), size)
        warm_until = clock() + 0.2
        echoed, start, cpu0 = 0, None, None
        last = clock()
        while True:
            got = 0
            for data, sz, _ in transport.recv_trains(0.05, 1024):
                got += len(data) // sz
            now = clock()
            if got:
                last = now
                transport.send_train(peer, packets[:got].tobytes(), size)
            elif now - last > 0.2:  # lost datagrams: top the window up again
                transport.send_train(peer, packets[:window].tobytes(), size)
                last = now
            if start is None:
                if now >= warm_until:
                    start, cpu0 = now, time.process_time()
                continue
            echoed += got
            if now - start >= seconds:
                break
        conn.send({"received": echoed, "seconds": clock() - start, "cpu_s": time.process_time() - cpu0,
                   "send_errors": transport.send_errors})
        return
    train = packets[:TRAIN].tobytes()
    sent = 0
    while not conn.poll():
        for _ in range(16):
            transport.send_train(peer, train, size)
        sent += 16 * TRAIN
    conn.recv()
    conn.send({"sent": sent, "send_errors": transport.send_errors})


#: where the two processes run: (switch side's CPU, worker side's CPU)
PLACEMENTS = {"two-cpus": (0, 1), "one-cpu": (0, 0), "unpinned": (None, None)}


def run_once(kind: str, pattern: str, size: int, seconds: float, window: int, spin_s: float,
             slots: int, placement: str = "unpinned") -> dict:
    cpus = PLACEMENTS[placement]
    ctx = mp.get_context("spawn")
    fabric = None
    if kind == "shm":
        fabric = ShmFabric.create(1, size, slots)
        switch_spec = worker_spec = (fabric.descriptor, spin_s)
    else:
        switch_udp = UdpTransport.bind("127.0.0.1", 0)
        switch_spec, worker_spec = switch_udp.sock, switch_udp.address
    try:
        s_parent, s_child = ctx.Pipe()
        w_parent, w_child = ctx.Pipe()
        sw = ctx.Process(target=_switch_main, args=(kind, pattern, switch_spec, size, seconds, cpus[0], s_child))
        wk = ctx.Process(target=_worker_main, args=(kind, pattern, worker_spec, size, seconds, window, cpus[1],
                                                   w_child))
        sw.start()
        if kind == "udp":
            switch_udp.close()  # the child has its own copy now
        wk.start()
        if s_parent.recv() != "ready":
            raise RuntimeError("switch side failed")
        w_parent.send("go")
        if pattern == "echo":
            worker = w_parent.recv()
            s_parent.send("stop")
            switch = s_parent.recv()
            rate = worker["received"] / worker["seconds"]
            out = {"rate": rate, "cpu_us_per_datagram": 1e6 * (worker["cpu_s"] + switch["cpu_s"])
                   / max(1, worker["received"]), "send_errors": worker["send_errors"] + switch["send_errors"]}
        else:
            switch = s_parent.recv()
            w_parent.send("stop")
            worker = w_parent.recv()
            s_parent.send("done")
            rate = switch["received"] / switch["seconds"]
            out = {"rate": rate, "lost": max(0.0, 1 - switch["received"] / max(1, worker["sent"])),
                   "receiver_cpu_us_per_datagram": 1e6 * switch["cpu_s"] / max(1, switch["received"])}
        for p in (sw, wk):
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
        return out
    finally:
        if fabric is not None:
            fabric.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[272, 1036])
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    ap.add_argument("--repeats", type=int, default=5, help="best of N")
    ap.add_argument("--window", type=int, default=256, help="echo: datagrams in flight")
    ap.add_argument("--slots", type=int, default=1024, help="shm: slots per ring")
    ap.add_argument("--spin-us", type=float, default=None,
                    help="shm: spin before sleeping (default: the transport's, 50 us with a CPU per process)")
    ap.add_argument("--patterns", nargs="+", default=["echo", "stream"], choices=["echo", "stream"])
    ap.add_argument("--placements", nargs="+", default=["two-cpus", "one-cpu"], choices=list(PLACEMENTS),
                    help="two-cpus: one CPU each (pinned); one-cpu: both on CPU 0 (an oversubscribed host)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{args.repeats} runs of {args.seconds:g} s each, best of {args.repeats} (and median)")
    results = []
    variants = {"echo": [("udp", "echo"), ("shm", "echo")],
                "stream": [("udp", "stream"), ("shm", "stream"), ("shm", "stream-zero-copy")]}
    if len(os.sched_getaffinity(0)) < 2:
        args.placements = [p for p in args.placements if p != "two-cpus"] or ["unpinned"]
    for placement, pattern, size in ((pl, pa, si) for pl in args.placements for pa in args.patterns
                                     for si in args.sizes):
        row = {}
        for kind, variant in variants[pattern]:
            spin_s = None if args.spin_us is None else args.spin_us * 1e-6
            runs = [run_once(kind, variant, size, args.seconds, args.window, spin_s, args.slots, placement)
                    for _ in range(args.repeats)]
            best = max(runs, key=lambda r: r["rate"])
            median = statistics.median(r["rate"] for r in runs)
            label = f"{kind}-{variant.replace('stream-', '')}" if variant != pattern else kind
            entry = {"placement": placement, "pattern": pattern, "transport": label, "size": size,
                     "best_rate": best["rate"],
                     "median_rate": median, "best_MBps": best["rate"] * size / 1e6,
                     "best_run": best, "runs": [r["rate"] for r in runs]}
            results.append(entry)
            row[label] = best["rate"]
            extra = ", ".join(f"{k} {v:.3g}" for k, v in best.items() if k != "rate")
            print(f"{placement:8s} {pattern:6s} {size:5d} B {label:14s} best {best['rate'] / 1e3:9.1f} k/s "
                  f"({best['rate'] * size / 1e6:7.1f} MB/s)  median {median / 1e3:9.1f} k/s  [{extra}]",
                  flush=True)
        base = row.get("udp")
        if base:
            print("       " + ", ".join(f"{k}/udp = {v / base:.1f}x" for k, v in row.items() if k != "udp"))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v)
                                                  for k, v in vars(args).items()},
                                         "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
