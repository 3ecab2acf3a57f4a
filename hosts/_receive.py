"""A worker's receive step in one compiled pass: results where they lie.

:func:`take_results` goes over a batch of received result datagrams (rows of
one length, usually a view into a shared-memory ring), keeps those of this
worker's pass, and copies each still-pending packet's payload (and raw
registers) into the pass's result arrays. It replaces a dozen numpy calls
per batch, among them two fancy-index copies of the payload bytes, which
numpy moves one byte at a time: those were most of a worker's CPU at 255
elements per packet (~25 of ~45 ms per 2^22-element allreduce, measured).
The decisions are the numpy version's, row by row: tests/hosts/test_receive.py
checks them against it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fpisa.protocol import ALL_RANKS, FIELD_OFFSETS, RESULT_VT, RETX_VT

__all__ = ["take_results"]

_VT = FIELD_OFFSETS["ver_type"]
_MODE = FIELD_OFFSETS["mode"]
_JOB = FIELD_OFFSETS["job"]
_RANK = FIELD_OFFSETS["rank"]
_PID = FIELD_OFFSETS["packet_id"]


@njit(cache=True, nogil=True, inline="always")
def _copy(src, dst):
    for b in range(dst.shape[0]):
        dst[b] = src[b]


@njit(cache=True, nogil=True)
def take_results(buf, mode, job, rank, base, pending, payload_start, result, result_tail, raw_start,
                 raw_mantissa, raw_exponent, fresh, n_fresh):
    """Consume the result datagrams ``buf`` ((m, L) uint8, every row of the
    pass's result length).

    A row is ours if it is a RESULT or RESULT_RETX of wire mode ``mode`` and
    job ``job`` addressed to ``rank`` or to every worker (ALL_RANKS: the
    shared-memory multicast ring's one copy). Its packet number is
    ``k = (packet_id - base) mod 2^32``; rows with ``k >= len(pending)`` are
    late results of an earlier pass and are skipped. The first row of each
    packet ``k`` that is still pending is *fresh*: its payload (bytes
    ``payload_start`` .. ``payload_start + result.shape[1]``) goes to
    ``result[k]`` (to ``result_tail`` for ``k == len(result)``: the padded
    last packet of an array that ``result`` is a view of), with a non-empty ``raw_mantissa`` its raw registers (the
    ``raw_mantissa.shape[1] + raw_exponent.shape[1]`` bytes from
    ``raw_start``) go to ``raw_mantissa[k]`` and ``raw_exponent[k]`` (byte
    views), ``pending[k]`` is cleared and ``k`` is appended to ``fresh`` at
    ``n_fresh``.

    Returns (new n_fresh, rows not ours, rows of ours in range)."""
    m = buf.shape[0]
    P = result.shape[1]
    full = result.shape[0]
    want_raw = raw_mantissa.shape[0] > 0
    RM, RE = raw_mantissa.shape[1], raw_exponent.shape[1]
    num_packets = pending.shape[0]
    ignored = 0
    ours = 0
    for i in range(m):
        vt = buf[i, _VT]
        dst = buf[i, _RANK]
        if not ((vt == RESULT_VT or vt == RETX_VT) and buf[i, _MODE] == mode and buf[i, _JOB] == job
                and (dst == rank or dst == ALL_RANKS)):
            ignored += 1
            continue
        pid = ((np.int64(buf[i, _PID]) << 24) | (np.int64(buf[i, _PID + 1]) << 16)
               | (np.int64(buf[i, _PID + 2]) << 8) | np.int64(buf[i, _PID + 3]))
        k = (pid - base) & 0xFFFFFFFF
        if k >= num_packets:
            continue
        ours += 1
        if not pending[k]:
            continue
        pending[k] = False
        # copies between row slices, indexed by the loop counter alone: LLVM
        # then sees non-negative indices (no wrap-around select per byte)
        # and moves whole vectors
        if k < full:
            _copy(buf[i, payload_start:payload_start + P], result[k])
        else:
            _copy(buf[i, payload_start:payload_start + P], result_tail)
        if want_raw:
            _copy(buf[i, raw_start:raw_start + RM], raw_mantissa[k])
            _copy(buf[i, raw_start + RM:raw_start + RM + RE], raw_exponent[k])
        fresh[n_fresh] = k
        n_fresh += 1
    return n_fresh, ignored, ours
