"""Summing K workers' gradient tensors with a mode of the numerics core.

:func:`aggregate_gradients` is the one place where torch tensors meet
:func:`fpisa.aggregate_detailed`: the DDP hook and the K-worker simulator
both call it, so what they compute is, by construction, what the numerics
core computes. CPU tensors of contiguous float32/float16 are handed to numpy
without a copy (``Tensor.numpy()`` shares memory); bfloat16 travels as its
uint16 bit patterns; CUDA tensors are copied to the CPU and the result back
(there is no torch-native GPU kernel: this project is built and tested on
CPU-only machines).

:func:`arrival_order` makes the seeded arrival orders that the hook and the
simulator share, so a run is reproducible and identical on every rank.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

import fpisa
from fpisa.formats import get_mode, get_rounding

from . import require_torch

torch = require_torch()

__all__ = ["aggregate_gradients", "AggregationStats", "arrival_order", "ARRIVALS", "format_of",
           "SwitchEmulation"]

#: arrival orders: ``rank`` (0..K-1 every time), ``step`` (one seeded
#: permutation per step and bucket), ``packet`` (one per packet of
#: ``packet_elements`` elements: packets race independently to the switch)
ARRIVALS = ("rank", "step", "packet")

_FORMATS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass
class SwitchEmulation:
    """How the emulated switch aggregates each step's gradients: shared by the
    K-worker simulator, the DDP hook and the training study.

    ``arrival``: ``rank``, ``step`` or ``packet`` (:data:`ARRIVALS`), seeded
    by ``seed``; ``packet_elements``: elements per packet (SwitchML's block,
    and the granularity of ``packet`` arrival orders); ``measure_error``:
    also compute the exact sum, for the error statistics.
    """

    mode: str = "fpisa"
    arrival: str = "packet"
    seed: int = 0
    packet_elements: int = 64
    rounding: str = "rz"
    register_bits: int = 32
    measure_error: bool = False

    def __post_init__(self) -> None:
        name = type(self).__name__
        get_mode(self.mode)
        get_rounding(self.rounding)
        if self.arrival not in ARRIVALS:
            raise ValueError(f"{name}: arrival must be one of {ARRIVALS}, got {self.arrival!r}")
        if not isinstance(self.packet_elements, int) or self.packet_elements < 1:
            raise ValueError(f"{name}: packet_elements must be an int >= 1, got {self.packet_elements!r}")


def format_of(dtype) -> str:
    """The numerics core's format name for a torch dtype."""
    try:
        return _FORMATS[dtype]
    except KeyError:
        raise ValueError(f"in-switch aggregation supports float32, float16 and bfloat16 "
                         f"gradients, got {dtype}") from None


@dataclass
class AggregationStats:
    """Counts over one or more aggregations (merge them with :meth:`merge`).

    ``overflow_elements``: elements whose mantissa register overflowed (the
    FPISA extended ALU wraps, FPISA-A saturates; both set the sticky
    overflow flag). ``overwrite_events``: FPISA-A overwrites (a stored value
    dropped because a new one was more than the headroom larger). The error
    fields are filled only when the aggregation was measured against the
    exact (correctly rounded) sum.
    """

    calls: int = 0
    elements: int = 0
    overflow_elements: int = 0
    overwrite_events: int = 0
    nonfinite_results: int = 0
    measured_elements: int = 0
    bit_exact_elements: int = 0
    ulp_sum: float = 0.0
    max_ulp: int = 0
    max_rel_error: float = 0.0
    squared_error: float = 0.0
    squared_exact: float = 0.0
    nan_mismatches: int = 0

    def merge(self, other: "AggregationStats") -> "AggregationStats":
        for name, value in asdict(other).items():
            if name.startswith("max_"):
                setattr(self, name, max(getattr(self, name), value))
            else:
                setattr(self, name, getattr(self, name) + value)
        return self

    @property
    def bit_exact_fraction(self) -> float | None:
        return self.bit_exact_elements / self.measured_elements if self.measured_elements else None

    @property
    def mean_ulp(self) -> float | None:
        return self.ulp_sum / self.measured_elements if self.measured_elements else None

    @property
    def relative_l2_error(self) -> float | None:
        """||result - exact||_2 / ||exact||_2 over every measured element."""
        if not self.measured_elements:
            return None
        if self.squared_exact == 0.0:
            return 0.0 if self.squared_error == 0.0 else math.inf
        return math.sqrt(self.squared_error / self.squared_exact)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(bit_exact_fraction=self.bit_exact_fraction, mean_ulp=self.mean_ulp,
                   relative_l2_error=self.relative_l2_error)
        return out


def arrival_order(kind: str, num_workers: int, num_elements: int, *, seed: int, step: int,
                  bucket: int = 0, packet_elements: int = 64):
    """The ``order`` argument of :func:`fpisa.aggregate` for one aggregation.

    Seeded by (seed, step, bucket) only, so every rank of a DDP job (and the
    simulator) derives the same order without communicating.
    """
    if kind not in ARRIVALS:
        raise ValueError(f"arrival must be one of {ARRIVALS}, got {kind!r}")
    if packet_elements < 1:
        raise ValueError(f"packet_elements must be >= 1, got {packet_elements}")
    if kind == "rank":
        return None
    rng = np.random.default_rng([seed, step, bucket])
    if kind == "step":
        return rng.permutation(num_workers)
    packets = max(1, -(-num_elements // packet_elements))
    per_packet = rng.permuted(np.tile(np.arange(num_workers), (packets, 1)), axis=1)
    return np.repeat(per_packet, packet_elements, axis=0)[:num_elements]


def _to_numpy(stack, fmt: str) -> np.ndarray:
    """(K, ...) tensor -> (K, n) numpy array, sharing memory when it can."""
    cpu = stack.detach()
    if cpu.device.type != "cpu":
        cpu = cpu.cpu()  # no GPU kernels here: CUDA tensors go through the CPU
    cpu = cpu.contiguous().reshape(stack.shape[0], -1)
    if fmt == "bf16":  # numpy has no bfloat16: hand over the bit patterns
        return cpu.view(torch.int16).numpy().view(np.uint16)
    return cpu.numpy()


def _from_numpy(result: np.ndarray, fmt: str, like):
    if fmt == "bf16":
        out = torch.from_numpy(np.ascontiguousarray(result).view(np.int16)).view(torch.bfloat16)
    else:
        out = torch.from_numpy(np.ascontiguousarray(result))
    out = out.reshape(like.shape[1:])
    return out if like.device.type == "cpu" else out.to(like.device)


def aggregate_gradients(stack, mode: str, *, order=None, rounding: str = "rz",
                        register_bits: int = 32, packet_elements: int = 64,
                        measure_error: bool = False):
    """Sum a (K, ...) stack of per-worker gradients the way ``mode`` would.

    Returns ``(sum, stats)``: a tensor of shape ``stack.shape[1:]`` on the
    stack's device and dtype, and an :class:`AggregationStats` for this one
    aggregation. ``order`` is as in :func:`fpisa.aggregate` (None, a
    permutation of range(K), or an (n, K) array over the flattened
    elements); ``packet_elements`` is SwitchML's block (one packet's
    payload). With ``measure_error`` the exact sum is computed too.
    """
    if not isinstance(stack, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor of stacked gradients, got {type(stack).__name__}")
    if stack.dim() < 2 or stack.shape[0] < 1:
        raise ValueError(f"expected a (workers, ...) stack with at least one worker, got shape "
                         f"{tuple(stack.shape)}")
    fmt = format_of(stack.dtype)
    mode = get_mode(mode).value
    values = _to_numpy(stack, fmt)
    detail = fpisa.aggregate_detailed(values, mode, fmt=fmt, order=order, rounding=rounding,
                                      register_bits=register_bits, block_size=packet_elements)
    stats = AggregationStats(
        calls=1,
        elements=int(values.shape[1]),
        overflow_elements=detail.overflow_count,
        overwrite_events=detail.overwrite_count,
        nonfinite_results=int(np.count_nonzero(
            detail.element_flags & (fpisa.ELEMENT_POS_INF | fpisa.ELEMENT_NEG_INF | fpisa.ELEMENT_NAN))),
    )
    if measure_error:
        _measure(stats, detail.result_bits, values, fmt)
    return _from_numpy(detail.result, fmt, stack), stats


def _measure(stats: AggregationStats, result_bits: np.ndarray, values: np.ndarray, fmt: str) -> None:
    exact_bits = fpisa.aggregate(fpisa.to_bits(values, fmt), "exact", fmt=fmt)
    ulps = fpisa.ulp_distance(result_bits, exact_bits, fmt)
    finite = ulps >= 0
    result = fpisa.from_bits(result_bits, fmt).astype(np.float64)
    exact = fpisa.from_bits(exact_bits, fmt).astype(np.float64)
    both = np.isfinite(result) & np.isfinite(exact)
    rel = fpisa.relative_error(result_bits, exact_bits, fmt)
    rel = rel[np.isfinite(rel)]
    stats.measured_elements += int(ulps.size)
    stats.bit_exact_elements += int(np.count_nonzero(ulps == 0))
    stats.ulp_sum += float(ulps[finite].sum())
    stats.max_ulp = max(stats.max_ulp, int(ulps[finite].max()) if finite.any() else 0)
    stats.max_rel_error = max(stats.max_rel_error, float(rel.max()) if rel.size else 0.0)
    stats.squared_error += float(np.square(result[both] - exact[both]).sum())
    stats.squared_exact += float(np.square(exact[both]).sum())
    stats.nan_mismatches += int(np.count_nonzero(~finite))
