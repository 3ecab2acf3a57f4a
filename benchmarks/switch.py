"""Throughput of the switch emulator alone, on packets in memory (no sockets).

Builds the DATA packets of K workers for a run of packets, feeds them to a
fresh :class:`emulator.pipeline.SwitchPipeline` in a round-robin arrival
order and times ``process``: packets/s in, elements/s aggregated, and the
per-packet cost split into the Python slot logic and the register kernels
(``SlotRegisters.accumulate`` / ``read``) measured in the same run.

    .venv/bin/python benchmarks/switch.py [--workers 4] [--packets 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emulator.fastpath import BatchProcessor  # noqa: E402
from emulator.pipeline import SwitchConfig, SwitchPipeline  # noqa: E402
from emulator.server import warm_up  # noqa: E402
from fpisa.job import JobSpec  # noqa: E402
from fpisa.protocol import Header, MsgType, element_dtype, pack, sequence_pool_index  # noqa: E402
from fpisa.registers import SlotRegisters  # noqa: E402


def build_packets(config: SwitchConfig, num_packets: int, seed: int = 0) -> list[tuple[bytes, tuple]]:
    rng = np.random.default_rng(seed)
    job = config.job
    K, E, W = job.num_workers, job.packet_elements, job.window
    mode = job.data_wire_mode
    out = []
    for k in range(num_packets):
        for r in range(K):
            if mode.is_float:
                payload = rng.standard_normal(E).astype(np.float32).view(np.uint32)
            else:
                payload = rng.integers(-2**20, 2**20, E).astype(np.int32)
            h = Header(MsgType.DATA, mode, job.fmt_code, 0, job.job, r, K, E,
                       sequence_pool_index(k, W), 0, k)
            out.append((pack(h, payload), config.workers[r]))
    return out


def best_of(repeats: int, run) -> float:
    """Best (least disturbed) of ``repeats`` runs of ``run``, which sets up,
    times its work and returns the seconds."""
    return min(run() for _ in range(repeats))


def bench_mode(mode: str, workers: int, num_elements: int, num_packets: int, repeats: int = 3) -> dict:
    job = JobSpec(mode=mode, num_workers=workers, packet_elements=num_elements)
    config = SwitchConfig(job, [("10.0.0.1", 5000 + r) for r in range(workers)])
    warm_up(config)
    packets = build_packets(config, num_packets)
    pipeline = SwitchPipeline(config)
    process = pipeline.process
    t0 = time.perf_counter()
    sent = 0
    for data, source in packets:
        sent += len(process(data, source))
    seconds = time.perf_counter() - t0
    assert pipeline.counters.completed == num_packets, pipeline.counters.as_dict()

    def timed(feed) -> float:
        """One run of a fast path on a fresh switch: ``feed(batch)`` hands it
        the packets and returns how many datagrams came out (checked)."""
        pipeline = SwitchPipeline(config)
        batch = BatchProcessor(pipeline, max_batch=256)
        t0 = time.perf_counter()
        out = feed(batch)
        seconds = time.perf_counter() - t0
        assert pipeline.counters.completed == num_packets and out == sent
        return seconds

    # the batch fast path (what the server runs), batches of 256 as from a socket
    fast_seconds = best_of(repeats, lambda: timed(lambda batch: sum(
        len(batch.process(packets[start:start + 256])) for start in range(0, len(packets), 256))))

    # the server's path on loopback: GRO trains of up to 64 datagrams per
    # worker in, one GSO train per worker out
    trains = []
    by_rank = [[d for d, src in packets if src == config.workers[r]] for r in range(workers)]
    for start in range(0, num_packets, 64):
        for r in range(workers):
            chunk = by_rank[r][start:start + 64]
            trains.append((b"".join(chunk), len(chunk[0]), config.workers[r]))
    train_seconds = best_of(repeats, lambda: timed(lambda batch: sum(
        len(datagrams) // size for start in range(0, len(trains), 4)
        for _, datagrams, size in batch.process_trains(trains[start:start + 4]))))

    # the shared-memory path: each worker's ring holds its packets back to
    # back; the switch takes up to 256 at a time (recv_arrays) where they lie
    arrays = []
    for start in range(0, num_packets, 64):
        for r in range(workers):
            chunk = by_rank[r][start:start + 64]
            arrays.append((r, np.frombuffer(b"".join(chunk), np.uint8).reshape(len(chunk), -1)))
    arrays_seconds = best_of(repeats, lambda: timed(lambda batch: sum(
        rows.shape[0] for start in range(0, len(arrays), 4)
        for _, rows in batch.process_arrays(arrays[start:start + 4]))))

    # the baseline: numpy adding the same number of arrivals (K rows of the
    # job's elements, float32 or int32), the memory-bound floor of the work
    rows = np.stack([np.frombuffer(d, element_dtype(job.data_wire_mode, job.fmt_code), offset=16)
                     for d, _ in packets[:workers]])
    stacked = np.tile(rows, (1, num_packets))

    def run_numpy() -> float:
        t0 = time.perf_counter()
        stacked.sum(axis=0, dtype=stacked.dtype)
        return time.perf_counter() - t0

    numpy_seconds = best_of(max(repeats, 5), run_numpy)

    # the register kernels alone, same shapes, same number of calls
    regs = SlotRegisters(job.data_wire_mode, 2 * job.window, num_elements)
    values = [np.frombuffer(d, element_dtype(job.data_wire_mode, job.fmt_code), num_elements, 16)
              for d, _ in packets[: 4 * workers]]
    t1 = time.perf_counter()
    for i in range(len(packets)):
        regs.accumulate(i % 8, values[i % len(values)], i % workers == 0)
    accumulate_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    for i in range(num_packets):
        regs.read(i % 8)
    read_s = time.perf_counter() - t2
    n_in = len(packets)
    return {
        "mode": mode, "workers": workers, "num_elements": num_elements,
        "packets_in": n_in, "packets_out": sent, "seconds": seconds,
        "packets_per_second": n_in / seconds,
        "elements_per_second": num_packets * num_elements / seconds,
        "us_per_packet": seconds / n_in * 1e6,
        "kernel_us_per_packet": (accumulate_s + read_s) / n_in * 1e6,
        "batch_seconds": fast_seconds,
        "batch_packets_per_second": n_in / fast_seconds,
        "batch_elements_per_second": num_packets * num_elements / fast_seconds,
        "batch_us_per_packet": fast_seconds / n_in * 1e6,
        "trains_packets_per_second": n_in / train_seconds,
        "trains_elements_per_second": num_packets * num_elements / train_seconds,
        "trains_us_per_packet": train_seconds / n_in * 1e6,
        "arrays_packets_per_second": n_in / arrays_seconds,
        "arrays_element_arrivals_per_second": n_in * num_elements / arrays_seconds,
        "numpy_element_arrivals_per_second": n_in * num_elements / numpy_seconds,
        "arrays_vs_numpy": numpy_seconds / arrays_seconds,
        "repeats": repeats,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--packets", type=int, default=20000, help="packets per worker")
    ap.add_argument("--elements", type=int, nargs="+", default=[64, 255], help="elements per packet")
    ap.add_argument("--modes", nargs="+", default=["fpisa", "fpisa-a", "switchml"])
    ap.add_argument("--repeats", type=int, default=3, help="fast paths: best of this many runs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = []
    print("ref = SwitchPipeline.process per packet (kernels: SlotRegisters calls alone); batch =")
    print("BatchProcessor.process (per-packet API); trains = process_trains (the server on loopback);")
    print("arrays = process_arrays (the server on shared memory); arrivals/s = packets x elements per s;")
    print(f"numpy = the same arrivals summed by numpy (K rows, sum(axis=0)); fast paths and numpy best of "
          f"{args.repeats}+ (the machine is shared)")
    print(f"{'mode':9} {'K':>2} {'E':>4} | {'ref pkts/s':>10} {'us/pkt':>6} {'kernels':>7} | "
          f"{'batch pkts/s':>12} {'us/pkt':>6} | {'trains pkts/s':>13} {'elem/s':>12} {'us/pkt':>6} {'vs ref':>6} | "
          f"{'arrays pkts/s':>13} {'arrivals/s':>11} {'numpy':>9} {'vs numpy':>8}")
    for mode in args.modes:
        for e in args.elements:
            r = bench_mode(mode, args.workers, e, args.packets, args.repeats)
            rows.append(r)
            print(f"{mode:9} {r['workers']:2d} {e:4d} | {r['packets_per_second']:10.0f} "
                  f"{r['us_per_packet']:6.2f} {r['kernel_us_per_packet']:7.2f} | "
                  f"{r['batch_packets_per_second']:12.0f} {r['batch_us_per_packet']:6.2f} | "
                  f"{r['trains_packets_per_second']:13.0f} {r['trains_elements_per_second']:12.0f} "
                  f"{r['trains_us_per_packet']:6.2f} {r['us_per_packet'] / r['trains_us_per_packet']:5.1f}x | "
                  f"{r['arrays_packets_per_second']:13.0f} {r['arrays_element_arrivals_per_second']:11.3g} "
                  f"{r['numpy_element_arrivals_per_second']:9.3g} {r['arrays_vs_numpy']:7.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
