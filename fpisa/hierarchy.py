"""Two-level (leaf/spine) aggregation: what a hierarchy of switches computes.

A two-level topology aggregates in two steps: each *leaf* switch sums its
own workers, then the *spine* sums the leaves' partials, and the result
flows back down. This module is the reference model of that computation;
the Mininet two-level experiment (hosts/mininet) is checked against it bit
for bit, given the arrival orders its switches recorded.

What a leaf sends upward (``leaf_output``):

- ``"normalized"``: the leaf reads its registers out like any switch
  (normalization with ``leaf_rounding``, truncation by default) and sends
  ordinary IEEE values; the spine aggregates them exactly as it would
  workers' values. Every read-out truncates, so a hierarchy adds one
  rounding step per level: the *extra error* against a one-switch star.
- ``"raw"``: the leaf sends its (exponent register, mantissa register)
  pairs unnormalized, and the spine combines register pairs with section
  2's rule (docs/numerics.md), where the incoming value is a register pair
  (E', A') instead of an extracted (e, S): ``d = E' - E``; ``A = (A >> max(d,
  0)) + (A' >> max(-d, 0))`` wrapped to W bits (overflow flagged);
  ``E = max(E, E')``; special-value flags are ORed. The first arriving
  pair is written as is. Only mode ``fpisa`` defines this: a Tofino-class
  spine (``fpisa-a``) cannot shift its stored register, and shifting an
  incoming register that already uses its headroom left would overflow.

Modes: ``fpisa``, ``fpisa-a`` (normalized only), ``switchml`` (leaves sum
quantized int32 values and the spine sums the partials; integer sums are
associative and SwitchML's scaling for all K workers rules out overflow, so
the result equals the one-switch result, which the model computes the
hierarchical way anyway), and ``float32`` (float32 partials summed in
float32). Arithmetic is the numerics core's: leaves use
:func:`fpisa.aggregate_detailed`, raw pairs are combined with the same
shift and W-bit add primitives (``fpisa._kernels``) the switch kernels use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numba import njit

# numba caches the kernels compiled into this module's functions with this
# file's stamp only: after a change to _kernels.py, delete this module's
# cache (fpisa/__pycache__/hierarchy.*.nb[ci]) or touch this file
from . import _kernels as K
from . import switchml as sml
from .aggregate import aggregate_detailed, arrival_orders
from .codec import from_bits, normalize, to_bits
from .formats import Format, Mode, RegisterLayout, Rounding, get_format, get_mode, get_rounding

__all__ = ["aggregate_hierarchical", "aggregate_hierarchical_detailed", "HierarchicalResult",
           "LEAF_OUTPUTS", "validate_groups"]

LEAF_OUTPUTS = ("normalized", "raw")
_MODES = (Mode.FPISA, Mode.FPISA_A, Mode.SWITCHML, Mode.FLOAT32)


@dataclass
class HierarchicalResult:
    """The spine's result and the leaves' partials (what went up the links)."""

    result: np.ndarray
    result_bits: np.ndarray
    #: (L, n) bits the leaves sent up (normalized), or None (raw / switchml)
    partial_bits: np.ndarray | None
    #: (L, n) registers the leaves sent up (raw), else None
    partial_exponent: np.ndarray | None
    partial_mantissa: np.ndarray | None
    #: per-element flags (fpisa.registers ELEMENT_* bits), ORed over levels
    element_flags: np.ndarray
    groups: tuple[tuple[int, ...], ...]
    leaf_output: str


def validate_groups(groups, num_workers: int) -> tuple[tuple[int, ...], ...]:
    """``groups`` must partition range(num_workers) into non-empty leaves."""
    try:
        out = tuple(tuple(int(w) for w in g) for g in groups)
    except (TypeError, ValueError):
        raise ValueError(f"groups must be a sequence of sequences of worker indices, got {groups!r}") from None
    if not out or any(len(g) == 0 for g in out):
        raise ValueError(f"every leaf needs at least one worker, got groups {out}")
    flat = sorted(w for g in out for w in g)
    if flat != list(range(num_workers)):
        raise ValueError(f"groups {out} do not partition the {num_workers} workers 0..{num_workers - 1}")
    return out


@njit(cache=True, nogil=True)
def _combine_pairs_fpisa(E_in, A_in, F_in, order, register_bits, E_out, A_out, F_out):
    """Section 2's rule on register pairs (see the module docstring)."""
    L, n = E_in.shape
    per_element = order.shape[0] > 1
    for j in range(n):
        row = j if per_element else 0
        first = order[row, 0]
        E = E_in[first, j]
        A = A_in[first, j]
        F = np.int64(F_in[first, j])
        for t in range(1, L):
            leaf = order[row, t]
            e = E_in[leaf, j]
            d = e - E
            A, over = K._add(K._asr(A, max(d, 0)), K._asr(A_in[leaf, j], max(-d, 0)), register_bits)
            E = max(E, e)
            F = F | np.int64(F_in[leaf, j])
            if over != 0:
                F = F | K.OVERFLOW
        E_out[j] = E
        A_out[j] = A
        F_out[j] = F


def aggregate_hierarchical_detailed(values, mode: str | Mode, groups: Sequence[Sequence[int]], *,
                                    fmt: str | Format = "fp32", leaf_output: str = "normalized",
                                    leaf_orders=None, spine_order=None, rounding: str | Rounding = "rz",
                                    leaf_rounding: str | Rounding = "rz", register_bits: int = 32,
                                    block_size: int = 64) -> HierarchicalResult:
    """Like :func:`aggregate_hierarchical`, with the partials that went up."""
    fmt = get_format(fmt)
    mode = get_mode(mode)
    if mode not in _MODES:
        raise ValueError(f"hierarchical mode must be one of {[m.value for m in _MODES]}, got {mode.value!r}")
    if leaf_output not in LEAF_OUTPUTS:
        raise ValueError(f"leaf_output must be one of {LEAF_OUTPUTS}, got {leaf_output!r}")
    if leaf_output == "raw" and mode is not Mode.FPISA:
        raise ValueError(f"leaf_output='raw' is defined for mode 'fpisa' only (the spine must shift "
                         f"its stored register), not {mode.value!r}")
    rounding = get_rounding(rounding)
    leaf_rounding = get_rounding(leaf_rounding)
    layout = RegisterLayout(fmt, register_bits)
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ValueError(f"values must be a (workers, elements) array, got shape {arr.shape}")
    was_float = arr.dtype.kind == "f"
    bits = np.ascontiguousarray(to_bits(arr, fmt))
    num_workers, n = bits.shape
    groups = validate_groups(groups, num_workers)
    L = len(groups)
    if leaf_orders is None:
        leaf_orders = [None] * L
    if len(leaf_orders) != L:
        raise ValueError(f"{len(leaf_orders)} leaf orders for {L} leaves")
    # validated here so a bad order names the leaf it belongs to
    for leaf, (g, o) in enumerate(zip(groups, leaf_orders)):
        try:
            arrival_orders(o, len(g), n)
        except ValueError as e:
            raise ValueError(f"leaf {leaf}: {e}") from None
    spine = arrival_orders(spine_order, L, n)

    if mode is Mode.SWITCHML:
        out = _switchml_hierarchical(bits, fmt, groups, block_size)
        flags = np.zeros(n, np.uint8)
        result = from_bits(out, fmt) if was_float else out
        return HierarchicalResult(result, out, None, None, None, flags, groups, leaf_output)

    leaves = [aggregate_detailed(bits[list(g)], mode, fmt=fmt, order=o, rounding=leaf_rounding,
                                 register_bits=layout.register_bits)
              for g, o in zip(groups, leaf_orders)]
    leaf_flags = np.bitwise_or.reduce(np.stack([r.element_flags for r in leaves]), axis=0)
    if leaf_output == "normalized":
        partials = np.stack([r.result_bits for r in leaves])
        top = aggregate_detailed(partials, mode, fmt=fmt, order=spine[0] if spine.shape[0] == 1 else spine, rounding=rounding,
                                 register_bits=layout.register_bits)
        # overflow/overwrite happened at some level; specials reach the spine as Inf/NaN anyway
        flags = top.element_flags | (leaf_flags & (K.OVERFLOW | K.OVERWRITE))
        out = top.result_bits
        result = from_bits(out, fmt) if was_float else out
        return HierarchicalResult(result, out, partials, None, None, flags, groups, leaf_output)

    E_in = np.stack([r.exponent_register for r in leaves])
    A_in = np.stack([r.mantissa_register for r in leaves])
    F_in = np.stack([r.element_flags for r in leaves])
    E, A, flags = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.uint8)
    _combine_pairs_fpisa(E_in, A_in, F_in, spine, layout.register_bits, E, A, flags)
    out = normalize(E, A, fmt, rounding, element_flags=flags)
    result = from_bits(out, fmt) if was_float else out
    return HierarchicalResult(result, out, None, E_in, A_in, flags, groups, leaf_output)


def _switchml_hierarchical(bits: np.ndarray, fmt: Format, groups, block_size: int) -> np.ndarray:
    """Leaves sum int32 quantized values (and max their exponents), the spine sums partials."""
    num_workers = bits.shape[0]
    if num_workers > sml.MAX_WORKERS:
        raise ValueError(f"switchml supports at most {sml.MAX_WORKERS} workers, got {num_workers}")
    exps = np.stack([sml.block_exponents(bits[k], fmt, block_size) for k in range(num_workers)])
    # the exponent exchange goes through the hierarchy too: max of leaf maxima
    e_max = np.max(np.stack([exps[list(g)].max(axis=0) for g in groups]), axis=0)
    total = np.zeros(bits.shape[1], np.int64)
    for g in groups:
        partial = np.zeros(bits.shape[1], np.int64)
        for k in g:
            partial += sml.quantize(bits[k], fmt, e_max, num_workers, block_size)
        total += partial
    # quantization scales for all K workers: no partial or total leaves int32
    assert np.all(np.abs(total) <= sml.INT32_MAX)
    return sml.dequantize(total.astype(np.int32), fmt, e_max, num_workers, block_size)


def aggregate_hierarchical(values, mode: str | Mode, groups: Sequence[Sequence[int]], *,
                           fmt: str | Format = "fp32", leaf_output: str = "normalized",
                           leaf_orders=None, spine_order=None, rounding: str | Rounding = "rz",
                           leaf_rounding: str | Rounding = "rz", register_bits: int = 32,
                           block_size: int = 64) -> np.ndarray:
    """Sum (K workers, n elements) through leaf switches and a spine.

    groups: one sequence of worker indices per leaf, partitioning range(K).
    leaf_orders: per leaf, None / a permutation of range(len(group)) / an
    (n, len(group)) array, in the leaf's *local* ranks (positions in its
    group), as a leaf switch records them. spine_order: the same over the
    L leaves. rounding: the spine's read-out; leaf_rounding: the leaves'
    read-out (normalized leaf output). Returns the same kind as ``values``.
    """
    return aggregate_hierarchical_detailed(
        values, mode, groups, fmt=fmt, leaf_output=leaf_output, leaf_orders=leaf_orders,
        spine_order=spine_order, rounding=rounding, leaf_rounding=leaf_rounding,
        register_bits=register_bits, block_size=block_size).result
