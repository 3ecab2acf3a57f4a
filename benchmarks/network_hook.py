"""Training through the emulated network: DDP with ``network_allreduce_hook``
(every bucket through the emulator switch) vs DDP's own gloo allreduce.

K ranks (processes) train the same synthetic model (a stack of linear
layers, ``--params`` parameters, default 10.5 M) for ``--steps`` steps, once
with the network hook (the switch is a process on the same host, reached
over the shared-memory transport or loopback UDP) and once with DDP's
default gloo allreduce, in the same run. Reported per allreduce (one DDP
bucket): seconds through the switch (the hook's own timing) and seconds of
``dist.all_reduce`` of a tensor of the same size on the same process group
(median over the steps), and whole steps per second for both.

    .venv/bin/python benchmarks/network_hook.py [--workers 2] [--params 10500000]
        [--mode fpisa] [--transport shm] [--steps 5] [--json out.json]
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

from emulator import server  # noqa: E402
from emulator.pipeline import SwitchConfig  # noqa: E402
from fpisa.job import SWITCH_MODES, JobSpec  # noqa: E402


def _model(params: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    width = 1024
    layers = max(1, round(params / (width * width + width)))
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)]), width


def _rank(rank, args, port, job, endpoints, switch_address, out):
    import torch
    import torch.distributed as dist
    from torch import nn

    from fpisa.net import transport_for
    from fpisa.torch.network import NetworkHookState, network_allreduce_hook
    from hosts.worker import AllreduceClient, WorkerConfig

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=args.workers)
    result = {}
    try:
        for system in ("network hook", "gloo"):
            module, width = _model(args.params, args.seed)
            numel = sum(p.numel() for p in module.parameters())
            # one bucket holds every gradient: one allreduce per step
            ddp = nn.parallel.DistributedDataParallel(module, bucket_cap_mb=4 * numel / 2**20 + 1)
            state = None
            if system == "network hook":
                client = AllreduceClient(WorkerConfig(job, rank=rank, timeout_ms=50.0, stall_s=120.0),
                                         transport_for(endpoints[rank], rank), switch_address)
                client.warm_up()
                state = NetworkHookState.for_model(module, client)
                ddp.register_comm_hook(state, network_allreduce_hook)
            optimizer = torch.optim.SGD(ddp.parameters(), lr=1e-3)
            g = torch.Generator().manual_seed(args.seed + rank)
            x = torch.randn(8, width, generator=g)
            steps = []
            for _ in range(args.steps + 1):  # the first is a warm-up
                dist.barrier()
                t = time.perf_counter()
                optimizer.zero_grad()
                ddp(x).square().mean().backward()
                optimizer.step()
                steps.append(time.perf_counter() - t)
            entry = {"params": numel, "step_seconds": statistics.median(steps[1:])}
            if state is not None:
                entry["allreduce_seconds"] = state.seconds / max(1, state.calls)
                entry["calls"] = state.calls
                entry["client"] = client.counters.as_dict()
            else:
                flat = torch.randn(numel, generator=g)
                times = []
                for _ in range(args.steps):
                    dist.barrier()
                    t = time.perf_counter()
                    dist.all_reduce(flat)
                    times.append(time.perf_counter() - t)
                entry["allreduce_seconds"] = statistics.median(times)
            result[system] = entry
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--params", type=int, default=10_500_000)
    ap.add_argument("--mode", choices=SWITCH_MODES, default="fpisa")
    ap.add_argument("--transport", choices=["shm", "udp"], default="shm")
    ap.add_argument("--packet-elements", type=int, default=255)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import torch.multiprocessing as tmp

    K = args.workers
    job = JobSpec(mode=args.mode, num_workers=K, packet_elements=args.packet_elements, window=args.window)
    fabric, sockets = None, []
    if args.transport == "shm":
        from fpisa.shm import ShmFabric

        fabric = ShmFabric.create(K, job.data_packet_bytes, slots_per_ring=max(1024, 4 * job.window),
                                  result_slot_bytes=job.max_result_bytes)
        switch_end, endpoints = fabric, [fabric] * K
        switch_address, addresses = fabric.switch_address, fabric.worker_addresses
    else:
        for _ in range(K + 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        switch_end, endpoints = sockets[0], sockets[1:]
        switch_address, addresses = sockets[0].getsockname(), [s.getsockname() for s in sockets[1:]]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"fpisa-network-hook-{os.getpid()}.json"
    switch = server.launch(SwitchConfig(job, tuple(addresses)), switch_end)
    try:
        switch.wait_ready(300)
        print(f"{K} ranks, {args.params:,} parameters requested, mode {args.mode}, {args.transport} "
              f"transport, {args.packet_elements} elements/packet, window {args.window}, "
              f"median of {args.steps} steps", file=sys.stderr)
        tmp.spawn(_rank, args=(args, port, job, endpoints, switch_address, str(out)), nprocs=K, join=True)
        stats, _ = switch.stop()
    finally:
        switch.kill()
        for s in sockets:
            s.close()
        if fabric is not None:
            fabric.close()
    result = json.loads(out.read_text())
    out.unlink()
    net, gloo = result["network hook"], result["gloo"]
    print(f"parameters {net['params']:,}")
    print(f"{'system':14} {'s/allreduce':>12} {'s/step':>8}")
    for name in ("network hook", "gloo"):
        print(f"{name:14} {result[name]['allreduce_seconds']:12.3f} {result[name]['step_seconds']:8.3f}")
    print(f"network / gloo: allreduce {net['allreduce_seconds'] / gloo['allreduce_seconds']:.1f}x slower, "
          f"step {net['step_seconds'] / gloo['step_seconds']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"config": vars(args) | {"json": str(args.json)}, "result": result,
                                         "switch": stats}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
