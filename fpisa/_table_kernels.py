"""Register kernels of the query aggregation modes (docs/query.md).

- ``float-min`` / ``float-max``: the register holds an IEEE bit pattern; an
  arrival replaces it when it is smaller / larger in the order a switch can
  compute without a floating-point unit: the bit pattern's *ordered key*
  (sign-magnitude turned into two's complement: a negative pattern has its
  magnitude bits inverted, then the key is compared as a signed integer).
  This orders -NaN < -Inf < ... < -0 < +0 < ... < +Inf < +NaN, so a +NaN
  wins MAX and loses MIN (as DuckDB orders NaN: above everything), and -0 is
  below +0 (DuckDB treats them as equal).
- ``key-claim``: int32 key fingerprints of the group table; 0 is "no key".
  An element's register takes the first nonzero fingerprint of a round (the
  first arrival writes, so an element nobody claimed so far stays 0) and
  keeps it: a compare-and-set register action. Workers compare the winner
  with their own fingerprint; a loser's group spills to the host.

Kept apart from ``fpisa/_kernels.py`` (the numerics core): these are plain
integer register actions, not arithmetic on floats.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["ordered_key", "from_ordered_key", "accumulate_row_float_min",
           "accumulate_row_float_max", "accumulate_row_key_claim", "key_claim_winners"]


@njit(cache=True, nogil=True)
def _key(bits, storage_bits):
    sign = np.int64(1) << (storage_bits - 1)
    b = np.int64(bits)
    if b & sign:
        return -(b & (sign - 1)) - 1  # ~magnitude, as a signed value
    return b


@njit(cache=True, nogil=True)
def accumulate_row_float_min(A, values, first, storage_bits):
    """A: int64 register row holding bit patterns; values: unsigned bit patterns."""
    for j in range(values.shape[0]):
        v = np.int64(values[j])
        if first or _key(v, storage_bits) < _key(A[j], storage_bits):
            A[j] = v


@njit(cache=True, nogil=True)
def accumulate_row_float_max(A, values, first, storage_bits):
    for j in range(values.shape[0]):
        v = np.int64(values[j])
        if first or _key(v, storage_bits) > _key(A[j], storage_bits):
            A[j] = v


@njit(cache=True, nogil=True)
def accumulate_row_key_claim(A, values, first):
    """First nonzero key per element wins; the first arrival writes the row."""
    for j in range(values.shape[0]):
        v = np.int64(values[j])
        if first or A[j] == 0:
            A[j] = v


def ordered_key(bits: np.ndarray, storage_bits: int) -> np.ndarray:
    """numpy: bit patterns (unsigned) -> the ordered signed key (int64)."""
    b = np.asarray(bits).astype(np.int64)
    sign = np.int64(1) << (storage_bits - 1)
    return np.where(b & sign, -(b & (sign - 1)) - 1, b)


def from_ordered_key(keys: np.ndarray, storage_bits: int) -> np.ndarray:
    """The inverse of :func:`ordered_key` (int64 bit patterns)."""
    k = np.asarray(keys).astype(np.int64)
    sign = np.int64(1) << (storage_bits - 1)
    return np.where(k < 0, (-(k + 1)) | sign, k)


def key_claim_winners(keys: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """What the key-claim registers return for ``keys`` (K, n) int32 when the
    workers arrive in ``orders`` (n, K) per element: the reference of the
    bit-exact check."""
    keys = np.asarray(keys).astype(np.int64)
    n = keys.shape[1]
    out = np.zeros(n, np.int64)
    cols = np.arange(n)
    for t in range(orders.shape[1] - 1, -1, -1):  # the earliest nonzero arrival wins
        k = keys[orders[:, t], cols]
        out = np.where(k != 0, k, out)
    return out
