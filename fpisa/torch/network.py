"""A DDP communication hook that sends each bucket through a switch.

Where :mod:`fpisa.torch.ddp` emulates the switch's numerics with an
all-gather, this hook does what a worker of an in-network aggregation job
does: it hands the bucket's bit patterns to an allreduce client, which cuts
them into packets, sends them to the switch (the emulator, or BMv2, or a
real one), and returns the switch's sums. The client is injected (any
object with ``allreduce(bits) -> bits`` and ``config.num_workers``, i.e.
``hosts.worker.AllreduceClient``): ``fpisa`` is the bottom layer and does
not import ``hosts`` (see docs/torch.md for the wiring).

The process group is still needed by DDP itself (it broadcasts the initial
parameters); the gradients never touch it. As in the all-gather hook, the
division by the world size happens after the switch's sum, in the bucket's
dtype. The client call is synchronous (its packet loop holds the GIL
anyway), so the returned Future is already complete.

Every rank must call the hook for the same buckets in the same order (DDP
guarantees this): the client numbers its packets by a running sequence, and
the switch pairs the ranks' packets by slot and sequence.
"""

# no `from __future__ import annotations`: DDP compares the hook's return
# annotation with the real torch.futures.Future[torch.Tensor] object
import inspect
import time
from dataclasses import dataclass, field

import numpy as np

from . import require_torch
from .aggregation import format_of
from .ddp import CanonicalLayout

torch = require_torch()

__all__ = ["NetworkHookState", "network_allreduce_hook"]

_BITS = {"fp32": (torch.int32, np.uint32), "fp16": (torch.int16, np.uint16), "bf16": (torch.int16, np.uint16)}


@dataclass
class NetworkHookState:
    """The injected client plus what the hook has done so far."""

    client: object
    #: the model's parameters (registration order), or None: as in
    #: :class:`~fpisa.torch.ddp.FpisaHookState`, the bucket is sent in this
    #: fixed layout (it decides which elements share a packet)
    parameters: list | None = None
    calls: int = 0
    elements: int = 0
    seconds: float = 0.0
    #: per call: (bucket index, elements), for matching runs up afterwards
    buckets: list = field(default_factory=list)
    layout: "CanonicalLayout | None" = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not callable(getattr(self.client, "allreduce", None)):
            raise ValueError("NetworkHookState: client must have an allreduce(bits) method "
                             "(e.g. hosts.worker.AllreduceClient)")
        config = getattr(self.client, "config", None)
        if getattr(config, "num_workers", None) is None:
            raise ValueError("NetworkHookState: client.config.num_workers is required (the divisor)")
        if self.parameters is not None and self.layout is None:
            self.layout = CanonicalLayout(self.parameters)
        try:
            params = inspect.signature(self.client.allreduce).parameters
        except (TypeError, ValueError):  # a builtin without a signature
            params = {}
        #: the client can sum into the array it is given (``out=``, as
        #: AllreduceClient), so the bucket's bits are summed in place
        self.in_place = "out" in params

    @classmethod
    def for_model(cls, model, client, **kwargs) -> "NetworkHookState":
        return cls(client=client, parameters=list(model.parameters()), **kwargs)

    @property
    def world_size(self) -> int:
        return int(self.client.config.num_workers)

    def as_dict(self) -> dict:
        out = {"calls": self.calls, "elements": self.elements, "seconds": self.seconds}
        counters = getattr(self.client, "counters", None)
        if counters is not None and hasattr(counters, "as_dict"):
            out["client"] = counters.as_dict()
        return out


def network_allreduce_hook(state: NetworkHookState, bucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: the bucket through the switch, then / world size."""
    tensor = bucket.buffer()
    fmt = format_of(tensor.dtype)
    int_dtype, bits_dtype = _BITS[fmt]
    cpu = tensor.detach()
    if cpu.device.type != "cpu":
        cpu = cpu.cpu()  # the client works on host memory
    index = state.layout.index(bucket) if state.layout is not None else None
    flat = cpu.contiguous().reshape(-1)
    if index is not None:
        flat = flat[index]
    bits = flat.view(int_dtype).numpy().view(bits_dtype)
    start = time.perf_counter()
    if state.in_place:
        # into the bucket's own (host) memory, as gloo's all_reduce: no
        # result array and no copy of it (``flat`` is the bucket's buffer, or
        # already a copy of it when it is on a GPU or laid out anew)
        summed_bits = state.client.allreduce(bits, out=bits)
    else:
        summed_bits = np.asarray(state.client.allreduce(bits), dtype=bits_dtype)
    state.seconds += time.perf_counter() - start
    if summed_bits.shape != bits.shape:
        raise RuntimeError(f"the allreduce client returned {summed_bits.shape} elements for "
                           f"a bucket of {bits.shape}")
    summed = summed_bits.view(np.dtype(f"i{np.dtype(bits_dtype).itemsize}"))
    # a result of the client's own keeps to itself; in place it is the bucket's memory
    summed = torch.from_numpy(summed if state.in_place else summed.copy())
    summed = summed.view(tensor.dtype)
    if index is not None:
        summed = torch.empty_like(summed).index_copy_(0, index, summed)
    summed = summed.reshape(tensor.shape).to(tensor.device)
    state.calls += 1
    state.elements += int(bits.size)
    state.buckets.append((bucket.index(), int(bits.size)))
    future = torch.futures.Future()
    future.set_result(summed.div_(state.world_size))
    return future
