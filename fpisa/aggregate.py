"""``aggregate``: sum K workers' arrays the way a given switch (or host) would.

Validation of every argument happens here, at the boundary, with a
``ValueError`` naming the problem; the kernels assume valid input.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np

from . import _kernels as K
from . import switchml as sml
from .codec import from_bits, to_bits, doubles_to_bits
from .formats import Format, Mode, RegisterLayout, Rounding, get_format, get_mode, get_rounding

__all__ = ["aggregate", "aggregate_detailed", "AggregateResult", "arrival_orders"]


@dataclass
class AggregateResult:
    """The result and what the switch's registers held before read-out.

    ``exponent_register`` / ``mantissa_register`` are None for the modes that
    have no such registers (switchml, float32, exact). ``element_flags`` uses
    the ``ELEMENT_*`` bits of :mod:`fpisa.registers`.
    """

    result: np.ndarray
    result_bits: np.ndarray
    element_flags: np.ndarray
    exponent_register: np.ndarray | None
    mantissa_register: np.ndarray | None
    overwrites: np.ndarray
    mode: Mode
    fmt: Format
    rounding: Rounding
    register_bits: int

    @property
    def overflow_count(self) -> int:
        return int(np.count_nonzero(self.element_flags & K.OVERFLOW))

    @property
    def overwrite_count(self) -> int:
        return int(self.overwrites.sum())


def arrival_orders(order, num_workers: int, num_elements: int) -> np.ndarray:
    """Validate ``order`` -> int64 array (1 or n, K) of worker indices."""
    if order is None:
        return np.arange(num_workers, dtype=np.int64)[None, :]
    arr = np.asarray(order)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"order must hold integer worker indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.ndim == 1:
        arr = arr[None, :]
    elif arr.ndim != 2 or arr.shape[0] != num_elements:
        raise ValueError(
            f"order must be a permutation of range({num_workers}) or an "
            f"({num_elements}, {num_workers}) array of per-element orders, got shape {np.shape(order)}"
        )
    if arr.shape[1] != num_workers:
        raise ValueError(f"order lists {arr.shape[1]} workers, values have {num_workers}")
    if not np.array_equal(np.sort(arr, axis=1), np.broadcast_to(np.arange(num_workers), arr.shape)):
        raise ValueError(f"order is not a permutation of range({num_workers}) for every element")
    return np.ascontiguousarray(arr)


def _as_bits_2d(values, fmt: Format) -> tuple[np.ndarray, bool]:
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise ValueError(f"values must be a (workers, elements) array, got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError("values must have at least one worker")
    was_float = arr.dtype.kind == "f"
    return np.ascontiguousarray(to_bits(arr, fmt)), was_float


def check_threads(threads) -> int:
    """threads: an int from 1 to numba's thread pool size."""
    limit = numba.config.NUMBA_NUM_THREADS
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or not (
            1 <= threads <= limit):
        raise ValueError(f"threads must be an int from 1 to {limit} (NUMBA_NUM_THREADS), "
                         f"got {threads!r}")
    return int(threads)


@contextmanager
def _numba_threads(threads: int):
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def aggregate_detailed(values, mode: str | Mode, *, fmt: str | Format = "fp32", order=None,
                       rounding: str | Rounding = "rz", register_bits: int = 32,
                       block_size: int = 64, threads: int = 1) -> AggregateResult:
    """Like :func:`aggregate`, with the registers and per-element flags."""
    return _aggregate(values, mode, fmt, order, rounding, register_bits, block_size, threads,
                      True)


def _aggregate(values, mode, fmt, order, rounding, register_bits, block_size, threads,
               detailed: bool) -> AggregateResult:
    """detailed=False: only ``result`` / ``result_bits`` are meaningful (the
    kernels may skip storing registers, flags and overwrite counts)."""
    threads = check_threads(threads)
    fmt = get_format(fmt)
    mode = get_mode(mode)
    rounding = get_rounding(rounding)
    layout = RegisterLayout(fmt, register_bits)
    block_size = sml.check_block_size(block_size)
    bits, was_float = _as_bits_2d(values, fmt)
    workers, n = bits.shape
    orders = arrival_orders(order, workers, n)
    eb, m = fmt.exponent_bits, fmt.fraction_bits
    nearest = rounding is Rounding.NEAREST_EVEN
    out = np.empty(n, fmt.bits_dtype)
    # the vector kernels (one order for all elements) store registers, flags
    # and overwrite counts only when asked; the scalar loops always do
    vector = orders.shape[0] == 1 and K.has_vector_kernels(eb, m)
    registers = detailed or not vector
    parallel = vector and threads > 1
    stored = n if registers else 0
    flags = np.zeros(stored if mode in (Mode.FPISA, Mode.FPISA_A, Mode.FLOAT32) else n, np.uint8)
    overwrites = np.zeros(stored if mode is Mode.FPISA_A else n, np.int64)
    E = A = None
    W = layout.register_bits
    if mode is Mode.FPISA:
        E, A = np.empty(stored, np.int64), np.empty(stored, np.int64)
        if parallel:
            with _numba_threads(threads):
                K.aggregate_fpisa_threads(bits, orders, eb, m, W, nearest, out, E, A, flags,
                                          registers, threads)
        else:
            K.aggregate_fpisa(bits, orders, eb, m, W, nearest, out, E, A, flags, registers)
    elif mode is Mode.FPISA_A:
        E, A = np.empty(stored, np.int64), np.empty(stored, np.int64)
        if parallel:
            with _numba_threads(threads):
                K.aggregate_fpisa_a_threads(bits, orders, eb, m, W, nearest, out, E, A, flags,
                                            overwrites, registers, threads)
        else:
            K.aggregate_fpisa_a(bits, orders, eb, m, W, nearest, out, E, A, flags, overwrites,
                                registers)
    elif mode is Mode.EXACT:
        K.aggregate_exact(bits, eb, m, out, flags)
    elif mode is Mode.FLOAT32:
        if parallel:
            with _numba_threads(threads):
                K.aggregate_float32_threads(bits, orders, eb, m, out, flags, registers, threads)
        elif K.has_vector_kernels(eb, m):
            K.aggregate_float32(bits, orders, eb, m, out, flags, registers)
        else:
            out, flags = _aggregate_float32_numpy(bits, orders, fmt)
    elif mode is Mode.SWITCHML:
        out = sml.sum_workers(bits, fmt, block_size)
    result = from_bits(out, fmt) if was_float else out
    return AggregateResult(result, out, flags, E, A, overwrites, mode, fmt, rounding,
                           layout.register_bits)


def _aggregate_float32_numpy(bits: np.ndarray, orders: np.ndarray, fmt: Format):
    """Sequential float32 adds in arrival order (numpy float32 adds are IEEE RNE).

    The numpy formulation of ``fpisa._kernels.aggregate_float32`` (which
    aggregate uses): kept as its reference (tests/fpisa/test_vector_kernels.py).
    """
    x = from_bits(bits, fmt).astype(np.float32)  # fp16/bf16 widen exactly
    with np.errstate(over="ignore", invalid="ignore"):  # Inf/NaN are data here
        return _float32_sums(x, orders, fmt)


def _float32_sums(x: np.ndarray, orders: np.ndarray, fmt: Format):
    n = x.shape[1]
    cols = np.arange(n)
    if orders.shape[0] == 1:
        acc = x[orders[0, 0]].copy()
        for k in orders[0, 1:]:
            acc += x[k]
    else:
        acc = x[orders[:, 0], cols].copy()
        for t in range(1, orders.shape[1]):
            acc += x[orders[:, t], cols]
    flags = (np.bitwise_or.reduce(np.where(np.isnan(x), K.NAN, 0)
                                  | np.where(x == np.inf, K.POS_INF, 0)
                                  | np.where(x == -np.inf, K.NEG_INF, 0), axis=0)).astype(np.uint8)
    if fmt.name == "fp32":
        return acc.view(np.uint32).copy(), flags
    return doubles_to_bits(acc.astype(np.float64), fmt), flags


def aggregate(values, mode: str | Mode, *, fmt: str | Format = "fp32", order=None,
              rounding: str | Rounding = "rz", register_bits: int = 32,
              block_size: int = 64, threads: int = 1) -> np.ndarray:
    """Sum (K workers, n elements) with ``mode``; returns what a switch returns.

    values: float32/float16 arrays, or bit patterns (uint32 fp32, uint16
    fp16/bf16); the result has the same kind. order: None (workers 0..K-1),
    a permutation of range(K), or an (n, K) array of per-element arrival
    orders. rounding applies to FPISA read-out (alignment always truncates).
    block_size: elements per SwitchML block (one packet's payload).
    threads: fpisa, fpisa-a and float32 with one arrival order split the
    elements across this many threads (numba's pool; the bits do not
    change); everything else runs on one.
    """
    return _aggregate(values, mode, fmt, order, rounding, register_bits, block_size, threads,
                      False).result
