"""A DDP communication hook that sums gradients the way an in-switch ALU would.

Register it with ``ddp_model.register_comm_hook(FpisaHookState(mode=...),
fpisa_allreduce_hook)``. For every bucket, each rank all-gathers the
bucket's flattened gradients from every rank (any backend that has
``all_gather``, e.g. gloo, any world size), stacks them in rank order, sums
them with :func:`~fpisa.torch.aggregation.aggregate_gradients` in the
seeded arrival order of :func:`~fpisa.torch.aggregation.arrival_order`
(derived from (seed, step, bucket index) only, so no rank needs to be told
it) and divides by the world size. Every rank computes the same sum from
the same inputs in the same order, so every rank ends with identical bits.

Where the division happens: PyTorch's default ``allreduce_hook`` divides
each rank's gradients by the world size *before* the sum. Here the switch
sums the raw gradients (that is what a switch receives) and the division
happens *after* the in-switch sum, on the host, as one IEEE float32 (or the
bucket's dtype) division per element, ``sum / world_size``. The K-worker
simulator does the same, which is why the two agree bit for bit.

Cost: an all-gather moves K times the data of an allreduce; this hook
emulates the switch's numerics, not its bandwidth (the network hook in
:mod:`fpisa.torch.network` sends real packets through an emulated switch).
"""

# no `from __future__ import annotations`: DDP compares the hook's return
# annotation with the real torch.futures.Future[torch.Tensor] object
from dataclasses import dataclass, field


from . import require_torch
from .aggregation import AggregationStats, SwitchEmulation, aggregate_gradients, arrival_order

torch = require_torch()
import torch.distributed as dist  # noqa: E402

__all__ = ["FpisaHookState", "fpisa_allreduce_hook", "CanonicalLayout"]


class CanonicalLayout:
    """Maps a DDP bucket's element layout to the parameters' registration order.

    DDP lays a bucket out in registration order in the first iteration and
    then rebuilds it in the order gradients became ready (roughly reversed).
    The sum of one element does not care, but SwitchML's blocks and
    per-packet arrival orders group neighbouring elements, so a hook that
    wants results independent of DDP's bookkeeping (and equal to the
    simulator's) aggregates in this fixed layout.
    """

    def __init__(self, parameters):
        self._rank_of = {id(p): i for i, p in enumerate(parameters)}
        self._cache: dict = {}

    def index(self, bucket):
        """Element indices into the bucket's buffer, in canonical order (j-th
        canonical element = buffer[index[j]]); None if the layouts coincide."""
        params = bucket.parameters()
        key = tuple(id(p) for p in params)
        if key not in self._cache:
            try:
                ranks = [self._rank_of[id(p)] for p in params]
            except KeyError:
                raise ValueError("a DDP bucket holds a parameter that is not among the hook "
                                 "state's parameters (pass model.parameters() of the module "
                                 "DDP wraps)") from None
            starts = [0]
            for p in params:
                starts.append(starts[-1] + p.numel())
            canonical = sorted(range(len(params)), key=ranks.__getitem__)
            self._cache[key] = None if canonical == list(range(len(params))) else torch.cat(
                [torch.arange(starts[i], starts[i + 1]) for i in canonical])
        return self._cache[key]


@dataclass
class FpisaHookState(SwitchEmulation):
    """Configuration (:class:`~fpisa.torch.aggregation.SwitchEmulation`) and
    running statistics of :func:`fpisa_allreduce_hook`; ``measure_error``
    fills the error fields of ``stats``."""

    process_group: object | None = None
    #: the model's parameters in registration order (``model.parameters()``),
    #: or None. When given, each bucket is aggregated in this canonical
    #: layout, not in DDP's bucket layout, which DDP rebuilds after the
    #: first iteration (registration order, then gradient-ready order).
    #: The layout matters where elements are grouped: SwitchML's blocks
    #: and ``packet`` arrival orders. See :meth:`for_model`.
    parameters: list | None = None
    stats: AggregationStats = field(default_factory=AggregationStats)
    #: aggregations done per bucket index: the step number of the next one
    steps: dict = field(default_factory=dict)
    layout: "CanonicalLayout | None" = field(default=None, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.parameters is not None and self.layout is None:
            self.layout = CanonicalLayout(self.parameters)

    @classmethod
    def for_model(cls, model, **kwargs) -> "FpisaHookState":
        """A state whose canonical layout is ``model``'s parameter order (what
        :class:`~fpisa.torch.simulator.KWorkerSimulator` flattens)."""
        return cls(parameters=list(model.parameters()), **kwargs)

    def next_step(self, bucket_index: int) -> int:
        step = self.steps.get(bucket_index, 0)
        self.steps[bucket_index] = step + 1
        return step


def fpisa_allreduce_hook(state: FpisaHookState, bucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: all-gather, in-switch sum in ``state.mode``, / world size."""
    group = state.process_group if state.process_group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    tensor = bucket.buffer()
    gathered = [torch.empty_like(tensor) for _ in range(world)]
    work = dist.all_gather(gathered, tensor, group=group, async_op=True)
    bucket_index = bucket.index()
    index = state.layout.index(bucket) if state.layout is not None else None
    order = arrival_order(state.arrival, world, tensor.numel(), seed=state.seed,
                          step=state.next_step(bucket_index), bucket=bucket_index,
                          packet_elements=state.packet_elements)

    def finish(fut):
        fut.wait()
        stack = torch.stack(gathered)
        if index is not None:
            stack = stack[:, index]
        summed, stats = aggregate_gradients(
            stack, state.mode, order=order, rounding=state.rounding,
            register_bits=state.register_bits, packet_elements=state.packet_elements,
            measure_error=state.measure_error)
        state.stats.merge(stats)
        if index is not None:
            summed = torch.empty_like(summed).index_copy_(0, index, summed)
        return summed.div_(world)

    return work.get_future().then(finish)
