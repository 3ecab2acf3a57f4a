"""The worker's packet loop, its per-batch steps compiled.

The loop in :meth:`hosts.worker.AllreduceClient._run_pass` runs once per
received batch of results (and per timer); each pass was a few dozen small
numpy calls (1-30 us each: header fields, masks, fancy indexing, np.unique,
np.median, ...), so at 255 elements per packet a worker spent more CPU on
them than on moving its bytes, and under loss, with 3x the passes, 2-3x
more. Each function here does one step in one call, with the numpy
version's decisions element by element; tests/fpisa/test_client_kernels.py
checks them against the numpy formulas they replace.

- :func:`take_results`: keep this pass's results, copy each pending
  packet's first one into place;
- :func:`clean_samples`: the round-trip sample and the latest-sent packet
  among the fresh results (Karn: none from retransmitted packets);
- :func:`mark_sent`: the bookkeeping of a send;
- :func:`overdue`: RACK's scan of the packets in flight for lost ones.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fpisa.protocol import ALL_RANKS, FIELD_OFFSETS, RESULT_VT, RETX_VT
from fpisa.shm import copy_bytes as _copy

__all__ = ["take_results", "clean_samples", "mark_sent", "overdue"]

_VT = FIELD_OFFSETS["ver_type"]
_MODE = FIELD_OFFSETS["mode"]
_JOB = FIELD_OFFSETS["job"]
_RANK = FIELD_OFFSETS["rank"]
_PID = FIELD_OFFSETS["packet_id"]


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
    last packet of an array that ``result`` is a view of), with a non-empty
    ``raw_mantissa`` its raw registers (the
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
        # copies between row slices (copy_bytes: vectorized)
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


@njit(cache=True, nogil=True)
def clean_samples(k, attempts, sent_at, send_order, scratch):
    """Of the fresh packets ``k``, those sent once (``attempts == 0``):
    returns (how many, the median of their ``sent_at``, the one sent last:
    the first with the largest ``send_order``; -1 if none)."""
    n = 0
    best, best_order = -1, -1
    for i in range(k.shape[0]):
        j = k[i]
        if attempts[j] == 0:
            scratch[n] = sent_at[j]
            n += 1
            if send_order[j] > best_order:
                best, best_order = j, send_order[j]
    if n == 0:
        return 0, 0.0, -1
    return n, np.median(scratch[:n]), best


@njit(cache=True, nogil=True)
def mark_sent(ks, pending, in_slot, copy_sent_at, send_order, attempts, sent_count, now, base, window):
    """Packets ``ks`` leave now (in this order): pending, each in its slot
    ``(base + k) % window``, sent at ``now``, numbered from ``sent_count``
    on. Returns (their attempt numbers (a new array), the largest)."""
    snapshot = np.empty(ks.shape[0], np.int64)
    top = 0
    for i in range(ks.shape[0]):
        k = ks[i]
        pending[k] = True
        in_slot[(base + k) % window] = k
        copy_sent_at[k] = now
        send_order[k] = sent_count + i
        a = attempts[k]
        snapshot[i] = a
        if a > top:
            top = a
    return snapshot, top


@njit(cache=True, nogil=True)
def overdue(in_slot, pending, send_order, rack_order, copy_sent_at, attempts, margin, now, lost):
    """RACK: of the packets the slots carry (``in_slot``, -1: none), those
    pending and sent before packet number ``rack_order`` are overtaken; one
    is lost once ``margin * 2^min(attempts, 16)`` has passed since its copy
    left. Writes the lost ones into ``lost`` (slot order); returns (how
    many lost, how many overtaken, the earliest due time of the others
    (inf if none))."""
    n_lost, n_over = 0, 0
    next_due = np.inf
    for s in range(in_slot.shape[0]):
        k = in_slot[s]
        if k < 0 or not pending[k] or send_order[k] >= rack_order:
            continue
        n_over += 1
        due = copy_sent_at[k] + margin * float(np.int64(1) << min(attempts[k], 16))
        if due <= now:
            lost[n_lost] = k
            n_lost += 1
        elif due < next_due:
            next_due = due
    return n_lost, n_over, next_due
