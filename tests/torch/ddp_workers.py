"""What each spawned rank of the DDP tests runs (a module, so spawn can import it).

A tiny deterministic problem shared by the ranks and by the in-process
simulator the tests compare them with: the same seeded model, the same
batches, shard k of every batch for rank k.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from fpisa.torch.ddp import FpisaHookState, fpisa_allreduce_hook
from fpisa.torch.simulator import KWorkerSimulator, SimulatorConfig

BATCH = 12  # divisible by 2 and 3 workers: equal shards
STEPS = 3
LR = 0.1


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.Tanh(), nn.Linear(24, 4))


def batches(seed: int):
    g = torch.Generator().manual_seed(seed + 1000)
    out = []
    for step in range(STEPS):
        # per-feature scales over a few decades: gradients with mixed exponents,
        # where the modes' truncation and overwrites actually differ
        scale = torch.logspace(-3, 1, 16)
        x = torch.randn(BATCH, 16, generator=g) * scale
        y = torch.randint(0, 4, (BATCH,), generator=g)
        out.append((x, y))
    return out


def make_optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


def flat_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def simulate(mode: str, arrival: str, seed: int, workers: int) -> torch.Tensor:
    """The single-process simulator on the same problem."""
    model = make_model(seed)
    sim = KWorkerSimulator(model, nn.functional.cross_entropy, make_optimizer(model),
                           SimulatorConfig(workers=workers, mode=mode, arrival=arrival, seed=seed,
                                           packet_elements=64))
    for x, y in batches(seed):
        sim.step(x, y)
    return flat_parameters(model)


def _quiesce() -> None:
    """Every rank done before any tears gloo down. Twice in CI a rank of
    this test aborted ("terminate called without an active exception",
    SIGABRT) while the others had finished; a barrier before
    destroy_process_group is the guard against teardown races, not a
    proven cure."""
    dist.barrier()


def run_rank(rank: int, world: int, port: int, cases: list, seed: int, out_dir: str) -> None:
    """torch.multiprocessing.spawn target: every case with DDP + the fpisa hook."""
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for mode, arrival, bucket_cap_mb in cases:
            module = make_model(seed)
            # 64 MB: one bucket for the whole model, the layout the simulator
            # flattens; a tiny cap: several buckets (each its own aggregation)
            ddp = nn.parallel.DistributedDataParallel(module, bucket_cap_mb=bucket_cap_mb)
            state = FpisaHookState.for_model(module, mode=mode, arrival=arrival, seed=seed,
                                             packet_elements=64)
            ddp.register_comm_hook(state, fpisa_allreduce_hook)
            optimizer = make_optimizer(ddp)
            for x, y in batches(seed):
                xs, ys = torch.tensor_split(x, world)[rank], torch.tensor_split(y, world)[rank]
                optimizer.zero_grad()
                nn.functional.cross_entropy(ddp(xs), ys).backward()
                optimizer.step()
            torch.save({"params": flat_parameters(module), "calls": state.stats.calls},
                       os.path.join(out_dir, f"{mode}-{arrival}-{bucket_cap_mb}-rank{rank}.pt"))
        _quiesce()
    finally:
        dist.destroy_process_group()


def run_network_rank(rank: int, world: int, port: int, jobs: list, seed: int, out_dir: str) -> None:
    """spawn target: DDP with the network hook, one emulated switch per mode.

    ``jobs``: (mode, this rank's bound UDP socket per rank, switch address).
    """
    from fpisa.net import transport_for
    from fpisa.torch.network import NetworkHookState, network_allreduce_hook
    from fpisa.job import JobSpec
    from hosts.worker import AllreduceClient, WorkerConfig

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for mode, endpoints, switch_address in jobs:
            client = AllreduceClient(
                WorkerConfig(JobSpec(mode=mode, num_workers=world, packet_elements=64, window=64), rank=rank),
                transport_for(endpoints[rank], rank), switch_address)
            module = make_model(seed)
            ddp = nn.parallel.DistributedDataParallel(module, bucket_cap_mb=64)
            state = NetworkHookState.for_model(module, client)
            ddp.register_comm_hook(state, network_allreduce_hook)
            optimizer = make_optimizer(ddp)
            for x, y in batches(seed):
                xs, ys = torch.tensor_split(x, world)[rank], torch.tensor_split(y, world)[rank]
                optimizer.zero_grad()
                nn.functional.cross_entropy(ddp(xs), ys).backward()
                optimizer.step()
            torch.save({"params": flat_parameters(module), "hook": state.as_dict()},
                       os.path.join(out_dir, f"net-{mode}-rank{rank}.pt"))
            client.transport.close()
        _quiesce()
    finally:
        dist.destroy_process_group()
