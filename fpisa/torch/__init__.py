"""PyTorch integration: train with in-switch aggregation numerics.

What this package owns:

- :mod:`fpisa.torch.aggregation`: :func:`aggregate_gradients`, a stack of K
  per-worker gradient tensors summed by a mode of the numerics core, with
  :class:`AggregationStats` (overflow/overwrite counts, error vs exact);
- :mod:`fpisa.torch.ddp`: :func:`fpisa_allreduce_hook`, a DDP communication
  hook that all-gathers each bucket and sums it in-switch style;
- :mod:`fpisa.torch.network`: :func:`network_allreduce_hook`, a DDP hook
  that sends each bucket through a (emulated) switch with an injected
  allreduce client (``hosts.worker.AllreduceClient``);
- :mod:`fpisa.torch.simulator`: :class:`KWorkerSimulator`, K data-parallel
  workers in one process (per-shard gradients, one aggregation, one step);
- :mod:`fpisa.torch.train`: the ``fpisa train`` experiment (data sets,
  models, training loop, JSON/CSV results, accuracy plot).

torch is imported only when one of these names is used, so ``import fpisa``
and ``fpisa --help`` never need torch; a missing torch gives an ImportError
saying how to install the pinned CPU build.
"""

from __future__ import annotations

import importlib

__all__ = [
    "aggregate_gradients",
    "AggregationStats",
    "arrival_order",
    "fpisa_allreduce_hook",
    "FpisaHookState",
    "network_allreduce_hook",
    "NetworkHookState",
    "KWorkerSimulator",
    "SimulatorConfig",
    "require_torch",
]

_HOME = {
    "aggregate_gradients": "aggregation",
    "AggregationStats": "aggregation",
    "arrival_order": "aggregation",
    "fpisa_allreduce_hook": "ddp",
    "FpisaHookState": "ddp",
    "network_allreduce_hook": "network",
    "NetworkHookState": "network",
    "KWorkerSimulator": "simulator",
    "SimulatorConfig": "simulator",
}

INSTALL_HINT = (
    "fpisa.torch needs PyTorch: install the pinned CPU build with "
    "`pip install torch==2.13.0` (or `pip install -e '.[torch]'`); an unpinned "
    "`pip install torch` pulls a multi-GB CUDA build"
)


def require_torch():
    """Import and return torch, or raise an ImportError that says how to get it."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(INSTALL_HINT, name="torch") from exc
    return torch


def __getattr__(name: str):
    # PEP 562: submodules (and torch) load on first use of a public name
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'fpisa.torch' has no attribute {name!r}")
    require_torch()
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
