"""K data-parallel workers in one process, summed by a switch's numerics.

:class:`KWorkerSimulator` does what K DDP ranks with
:func:`~fpisa.torch.ddp.fpisa_allreduce_hook` do, without processes: the
batch is cut into K shards (``torch.tensor_split``, shard k is worker k's),
each shard's gradient is computed with its own backward pass on the one
model (the same operations a DDP rank runs, hence the same bits; a vmapped
per-sample gradient would use different kernels), the K flattened gradients
are summed by :func:`~fpisa.torch.aggregation.aggregate_gradients` in the
seeded arrival order, divided by K in float32 (after the sum, as in the
hook), and the optimizer takes one step.

The flat layout is the parameters' registration order
(``model.parameters()``), i.e. the whole model as one DDP bucket in
:meth:`FpisaHookState.for_model <fpisa.torch.ddp.FpisaHookState.for_model>`'s
canonical layout; with that state and a model that fits one bucket, the
simulator and the DDP hook agree bit for bit (tests/torch check this).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import require_torch
from .aggregation import AggregationStats, SwitchEmulation, aggregate_gradients, arrival_order

torch = require_torch()

__all__ = ["SimulatorConfig", "KWorkerSimulator", "StepResult"]


@dataclass
class SimulatorConfig(SwitchEmulation):
    """K simulated workers and how the emulated switch sums them (the seed
    seeds the arrival orders; the model's init and data order are the caller's)."""

    workers: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"SimulatorConfig: workers must be a positive integer, got {self.workers!r}")
        if self.mode == "switchml" and self.workers > 256:
            raise ValueError("SimulatorConfig: switchml supports at most 256 workers")


@dataclass
class StepResult:
    #: mean of the K shards' losses (what the K workers would report, averaged)
    loss: float
    stats: AggregationStats = field(default_factory=AggregationStats)


class KWorkerSimulator:
    """One model, K simulated workers, one aggregation per step."""

    def __init__(self, model, loss_fn, optimizer, config: SimulatorConfig):
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.config = config
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        if len(self.parameters) != len(list(model.parameters())):
            raise ValueError("KWorkerSimulator: every parameter must require grad (frozen "
                             "parameters would break the one-bucket layout)")
        dtypes = {p.dtype for p in self.parameters}
        if len(dtypes) != 1:
            raise ValueError(f"KWorkerSimulator: parameters of one dtype expected, got {dtypes}")
        #: optimizer steps taken: the step number of the arrival order
        self.steps = 0
        self.stats = AggregationStats()

    def shards(self, inputs, targets):
        K = self.config.workers
        if len(inputs) < K:
            raise ValueError(f"a batch of {len(inputs)} cannot be split among {K} workers")
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        return list(zip(torch.tensor_split(inputs, K), torch.tensor_split(targets, K)))

    def worker_gradients(self, inputs, targets):
        """(K, n) per-worker flat gradients and the K shard losses."""
        rows, losses = [], []
        for x, y in self.shards(inputs, targets):
            loss = self.loss_fn(self.model(x), y)
            grads = torch.autograd.grad(loss, self.parameters, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(grads, self.parameters)]))
            losses.append(loss.detach())
        return torch.stack(rows), losses

    def aggregate(self, stack):
        """Sum the (K, n) stack in this step's arrival order; (sum / K, stats)."""
        c = self.config
        order = arrival_order(c.arrival, c.workers, stack.shape[1], seed=c.seed, step=self.steps,
                              bucket=0, packet_elements=c.packet_elements)
        summed, stats = aggregate_gradients(stack, c.mode, order=order, rounding=c.rounding,
                                            register_bits=c.register_bits,
                                            packet_elements=c.packet_elements,
                                            measure_error=c.measure_error)
        return summed.div_(c.workers), stats

    def step(self, inputs, targets) -> StepResult:
        self.model.train()
        stack, losses = self.worker_gradients(inputs, targets)
        mean_grad, stats = self.aggregate(stack)
        offset = 0
        for p in self.parameters:
            n = p.numel()
            p.grad = mean_grad[offset:offset + n].view_as(p).clone()
            offset += n
        self.optimizer.step()
        self.steps += 1
        self.stats.merge(stats)
        return StepResult(loss=float(torch.stack(losses).mean()), stats=stats)
