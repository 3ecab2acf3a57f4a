"""The network hook: DDP gradients through the emulated switch on loopback UDP.

Each test starts the emulator switch (a process, ``emulator.server.launch``)
and a 2- or 3-rank gloo DDP job whose hook sends every bucket through it
with ``hosts.worker.AllreduceClient``. Checks: identical parameters on every
rank; and, for the modes whose sum does not depend on the arrival order at
the switch (SwitchML's integer sum; FPISA with two workers, where either
order aligns the smaller value to the larger), bit-identical parameters to
the in-process simulator.
"""

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
pytestmark = [pytest.mark.torch, pytest.mark.slow]  # spawns processes
server = pytest.importorskip("emulator.server", reason="the emulator package is not importable")
pytest.importorskip("hosts.worker", reason="the hosts package is not importable")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as tmp  # noqa: E402

import ddp_workers  # noqa: E402
from conftest import bit_view, free_port, udp_socket  # noqa: E402
from emulator.pipeline import SwitchConfig  # noqa: E402
from fpisa.job import JobSpec  # noqa: E402
from fpisa.shm import ShmFabric  # noqa: E402

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this torch build has no gloo backend", allow_module_level=True)

SEED = 5


def bits(t):
    return bit_view(t)


@pytest.mark.parametrize("world, modes, order_free, transport", [
    (2, ("fpisa", "switchml", "fpisa-a"), {"fpisa", "switchml"}, "udp"),
    (2, ("fpisa", "switchml"), {"fpisa", "switchml"}, "shm"),
    (3, ("switchml",), {"switchml"}, "udp"),
])
def test_network_hook_through_the_emulator(world, modes, order_free, transport, tmp_path):
    switches, jobs, sockets, fabrics = [], [], [], []
    try:
        for mode in modes:
            job = JobSpec(mode=mode, num_workers=world, packet_elements=64, window=64)
            if transport == "shm":
                fabric = ShmFabric.create(world, job.data_packet_bytes, result_slot_bytes=job.max_result_bytes)
                fabrics.append(fabric)
                switch_end, worker_ends = fabric, [fabric] * world
                switch_address, addresses = fabric.switch_address, fabric.worker_addresses
            else:
                switch_end, *worker_ends = [udp_socket() for _ in range(world + 1)]
                sockets += [switch_end, *worker_ends]
                switch_address = switch_end.getsockname()
                addresses = [s.getsockname() for s in worker_ends]
            switches.append(server.launch(SwitchConfig(job, tuple(addresses)), switch_end))
            jobs.append((mode, worker_ends, switch_address))
        for switch in switches:
            switch.wait_ready(120)
        tmp.spawn(ddp_workers.run_network_rank, args=(world, free_port(), jobs, SEED, str(tmp_path)),
                  nprocs=world, join=True)
        stats = [switch.stop()[0] for switch in switches]
    finally:
        for switch in switches:
            switch.kill()
        for s in sockets:
            s.close()
        for fabric in fabrics:
            fabric.close()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for mode, switch_stats in zip(modes, stats):
            ranks = [torch.load(tmp_path / f"net-{mode}-rank{r}.pt") for r in range(world)]
            assert all(r["hook"]["calls"] == ddp_workers.STEPS for r in ranks)
            for r in range(1, world):
                assert torch.equal(bits(ranks[0]["params"]), bits(ranks[r]["params"])), \
                    f"{mode}: rank {r} differs from rank 0"
            if mode in order_free:
                simulated = ddp_workers.simulate(mode, "rank", SEED, world)
                mismatched = int((bits(simulated) != bits(ranks[0]["params"])).sum())
                assert mismatched == 0, f"{mode}: {mismatched} parameters differ from the simulator"
            # every bucket really went through the switch: one slot per packet
            # (SwitchML first exchanges one exponent per block: a short pass)
            blocks = -(-ranks[0]["params"].numel() // 64)
            packets = blocks + (-(-blocks // 64) if mode == "switchml" else 0)
            assert switch_stats["counters"]["completed"] == ddp_workers.STEPS * packets, switch_stats
    finally:
        torch.set_num_threads(threads)
