"""What emulating the switch's numerics costs a training step (fpisa.torch).

Two measurements, each a ratio against a baseline measured in the same run:

1. ``aggregate_gradients(stack, mode)`` on a (K, n) float32 stack vs
   ``stack.sum(0)`` (torch's own float32 reduction);
2. one :class:`~fpisa.torch.simulator.KWorkerSimulator` step (digits MLP,
   K shards, backward passes, aggregation, SGD step) per mode vs the same
   step whose aggregation is ``stack.sum(0) / K``.

Median of ``--repeats`` after a warm-up (Numba kernels compile or load on
first use). One torch thread, like ``fpisa train``.

    .venv/bin/python benchmarks/torch_training.py [--workers 8] [--elements 17226 1048576]
        [--repeats 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from fpisa.torch.aggregation import aggregate_gradients  # noqa: E402
from fpisa.torch.simulator import KWorkerSimulator, SimulatorConfig  # noqa: E402
from fpisa.torch.train import build_model, load_dataset  # noqa: E402

MODES = ("float32", "fpisa", "fpisa-a", "switchml")


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class TorchSumSimulator(KWorkerSimulator):
    """The baseline: the same step, summed by torch in float32."""

    def aggregate(self, stack):
        return stack.sum(0).div_(self.config.workers), None

    def step(self, inputs, targets):
        self.model.train()
        stack, _ = self.worker_gradients(inputs, targets)
        mean_grad, _ = self.aggregate(stack)
        offset = 0
        for p in self.parameters:
            p.grad = mean_grad[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        self.optimizer.step()
        self.steps += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--elements", type=int, nargs="+", default=[17226, 1 << 20])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    K = args.workers
    report = {"workers": K, "repeats": args.repeats, "aggregate": [], "step": []}

    print(f"aggregate_gradients, K={K}: seconds per call, ratio to torch stack.sum(0)")
    for n in args.elements:
        g = torch.Generator().manual_seed(0)
        stack = torch.randn(K, n, generator=g) * torch.logspace(-6, 0, n)
        base = median_seconds(lambda: stack.sum(0), args.repeats)
        print(f"  n={n:>8}  torch sum {base * 1e3:8.3f} ms")
        for mode in MODES:
            t = median_seconds(lambda: aggregate_gradients(stack, mode, order=None), args.repeats)
            report["aggregate"].append({"elements": n, "mode": mode, "seconds": t, "baseline_seconds": base,
                                        "ratio": t / base})
            print(f"  n={n:>8}  {mode:>8}  {t * 1e3:8.3f} ms  {t / base:7.1f}x")

    x, y, _, _ = load_dataset("digits")
    xb, yb = x[:64], y[:64]

    def step_time(cls, mode):
        model = build_model("mlp", 0)
        sim = cls(model, nn.functional.cross_entropy, torch.optim.SGD(model.parameters(), lr=0.01),
                  SimulatorConfig(workers=K, mode=mode, arrival="packet"))
        return median_seconds(lambda: sim.step(xb, yb), args.repeats)

    base = step_time(TorchSumSimulator, "float32")
    print(f"simulator step, digits MLP, K={K}, batch 64: ratio to the same step summed by torch")
    print(f"  torch sum  {base * 1e3:8.3f} ms")
    for mode in MODES:
        t = step_time(KWorkerSimulator, mode)
        report["step"].append({"mode": mode, "seconds": t, "baseline_seconds": base, "ratio": t / base})
        print(f"  {mode:>8}  {t * 1e3:8.3f} ms  {t / base:7.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
