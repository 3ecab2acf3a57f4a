"""The DDP hook: identical parameters on every rank, equal to the simulator.

2- and 3-process gloo jobs on loopback (torch.multiprocessing.spawn), every
mode, rank-order and seeded per-packet arrival orders; three SGD steps of a
small MLP, compared bit for bit (as int32 patterns, so -0.0 != +0.0). With
tiny DDP buckets (several per step, each aggregated separately) the ranks
must still agree; the simulator comparison needs the one-bucket layout.
"""

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
pytestmark = [pytest.mark.torch, pytest.mark.slow]  # spawns processes
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as tmp  # noqa: E402

import ddp_workers  # noqa: E402
from conftest import bit_view, free_port  # noqa: E402

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this torch build has no gloo backend", allow_module_level=True)

MODES = ("float32", "fpisa", "fpisa-a", "switchml")
ONE_BUCKET, SMALL_BUCKETS = 64, 0.002  # MB; 0.002 MB puts the model in several buckets
CASES = ([(m, "packet", ONE_BUCKET) for m in MODES] + [("fpisa-a", "rank", ONE_BUCKET)]
         + [("fpisa-a", "packet", SMALL_BUCKETS), ("switchml", "packet", SMALL_BUCKETS)])
SEED = 3


def bits(t):
    return bit_view(t)


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_hook_ranks_agree_and_match_simulator(world, tmp_path):
    tmp.spawn(ddp_workers.run_rank, args=(world, free_port(), CASES, SEED, str(tmp_path)),
              nprocs=world, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks: same kernels, same bits
    try:
        finals = {}
        for mode, arrival, cap in CASES:
            ranks = [torch.load(tmp_path / f"{mode}-{arrival}-{cap}-rank{r}.pt") for r in range(world)]
            for r in range(1, world):
                assert torch.equal(bits(ranks[0]["params"]), bits(ranks[r]["params"])), \
                    f"{mode}/{arrival}/{cap} MB buckets: rank {r} differs from rank 0"
            if cap == SMALL_BUCKETS:
                assert ranks[0]["calls"] > ddp_workers.STEPS, "expected several buckets per step"
                continue  # several buckets: not the simulator's one-bucket layout
            assert all(r["calls"] == ddp_workers.STEPS for r in ranks), "one bucket per step expected"
            simulated = ddp_workers.simulate(mode, arrival, SEED, world)
            mismatched = int((bits(simulated) != bits(ranks[0]["params"])).sum())
            assert mismatched == 0, f"{mode}/{arrival}: {mismatched} parameters differ from the simulator"
            finals[(mode, arrival)] = ranks[0]["params"]
    finally:
        torch.set_num_threads(threads)
    # the mode is really applied: the four modes do not all end in the same place
    distinct = {bits(finals[(m, "packet")]).numpy().tobytes() for m in MODES}
    assert len(distinct) > 1
