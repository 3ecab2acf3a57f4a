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
- :func:`overdue`: RACK's scan of the packets in flight for lost ones;
- :func:`worker_step`: on shared memory, a whole pass of the loop (the
  steps above, the timers, the link's faults, the ring reads and writes)
  in one call (docs/shm_transport.md, "Compiled loops").
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fpisa.netem import draw_copies
from fpisa.protocol import ALL_RANKS, FIELD_OFFSETS, RESULT_VT, RETX_VT
from fpisa.shm import _R_HEAD, _R_TAIL, PUBLISH_SLOTS, _atomic_load, _atomic_store, _write_slots
from fpisa.shm import copy_bytes as _copy

__all__ = ["take_results", "clean_samples", "mark_sent", "overdue", "worker_step"]

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
    ignored = 0
    ours = 0
    for i in range(buf.shape[0]):
        k = _take_row(buf[i], mode, job, rank, base, pending, payload_start, result, result_tail, raw_start,
                      raw_mantissa, raw_exponent)
        if k == _NOT_OURS:
            ignored += 1
        elif k != _LATE:
            ours += 1
            if k >= 0:
                fresh[n_fresh] = k
                n_fresh += 1
    return n_fresh, ignored, ours


#: what :func:`_take_row` returns for a row that is not a result of ours,
#: one of an earlier pass, and one of a packet whose result is in already
_NOT_OURS, _LATE, _DUPLICATE = -1, -2, -3


@njit(cache=True, nogil=True, inline="always")
def _take_row(row, mode, job, rank, base, pending, payload_start, result, result_tail, raw_start,
              raw_mantissa, raw_exponent):
    """One result datagram (see :func:`take_results`): its packet number ``k``
    if it is fresh (then taken), else _NOT_OURS, _LATE or _DUPLICATE."""
    vt = row[_VT]
    dst = row[_RANK]
    if not ((vt == RESULT_VT or vt == RETX_VT) and row[_MODE] == mode and row[_JOB] == job
            and (dst == rank or dst == ALL_RANKS)):
        return _NOT_OURS
    pid = ((np.int64(row[_PID]) << 24) | (np.int64(row[_PID + 1]) << 16)
           | (np.int64(row[_PID + 2]) << 8) | np.int64(row[_PID + 3]))
    k = (pid - base) & 0xFFFFFFFF
    if k >= pending.shape[0]:
        return _LATE
    if not pending[k]:
        return _DUPLICATE
    pending[k] = False
    # copies between row slices (copy_bytes: vectorized)
    P = result.shape[1]
    if k < result.shape[0]:
        _copy(row[payload_start:payload_start + P], result[k])
    else:
        _copy(row[payload_start:payload_start + P], result_tail)
    if raw_mantissa.shape[0] > 0:
        RM, RE = raw_mantissa.shape[1], raw_exponent.shape[1]
        _copy(row[raw_start:raw_start + RM], raw_mantissa[k])
        _copy(row[raw_start + RM:raw_start + RM + RE], raw_exponent[k])
    return k


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


@njit(cache=True, nogil=True, inline="always")
def _sent(k, order, pending, in_slot, copy_sent_at, send_order, now, base, window):
    """Packet ``k``'s copy leaves now as copy number ``order``: pending, in its
    slot ``(base + k) % window``, sent at ``now``."""
    pending[k] = True
    in_slot[(base + k) % window] = k
    copy_sent_at[k] = now
    send_order[k] = order


@njit(cache=True, nogil=True)
def rto_sample(srtt, rttvar, rtt, min_s, max_s):
    """RFC 6298's update by a round-trip sample ``rtt`` (``srtt < 0``: none
    yet): returns (srtt, rttvar, the timeout SRTT + 4 RTTVAR, clamped to
    ``min_s`` .. ``max_s``)."""
    if srtt < 0:
        srtt, rttvar = rtt, rtt / 2
    else:
        rttvar += (abs(srtt - rtt) - rttvar) / 4
        srtt += (rtt - srtt) / 8
    return srtt, rttvar, min(max_s, max(min_s, srtt + 4 * rttvar))


@njit(cache=True, nogil=True)
def mark_sent(ks, pending, in_slot, copy_sent_at, send_order, attempts, sent_count, now, base, window):
    """Packets ``ks`` leave now (in this order): pending, each in its slot
    ``(base + k) % window``, sent at ``now``, numbered from ``sent_count``
    on. Returns (their attempt numbers (a new array), the largest)."""
    snapshot = np.empty(ks.shape[0], np.int64)
    top = 0
    for i in range(ks.shape[0]):
        k = ks[i]
        _sent(k, sent_count + i, pending, in_slot, copy_sent_at, send_order, now, base, window)
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


# -- one pass of the worker's loop in one call (shared memory) ------------------------

# worker_step's state: integers ``iv``, floats ``fs`` and counters ``cnt``
#: iv: results in, first copies sent, copies sent (the send order), RACK's
#: latest-sent packet, tail probes in a row, the up ring's head, the down and
#: multicast rings' tails, the next unused draw
(IV_DONE, IV_FIRST, IV_ORDER, IV_RACK_ORDER, IV_PROBES, IV_UP_HEAD, IV_DOWN_TAIL, IV_MCAST_TAIL,
 IV_DRAW, IV_SIZE) = range(10)
#: fs: RACK's round trip, the reordering fraction, srtt (< 0: no sample
#: yet), rttvar, the retransmission timeout, the last result's and the last
#: probe's time; constants: the timeout's floor and cap, the reordering
#: window's floor (s) and fractions, the probe's round trips and floor,
#: loss and duplication probabilities
(FS_RACK_RTT, FS_REORDER, FS_SRTT, FS_RTTVAR, FS_RTO, FS_LAST_PROGRESS, FS_LAST_PROBE, FS_RTO_MIN,
 FS_RTO_MAX, FS_REORDER_MIN_S, FS_REORDER_MIN_F, FS_REORDER_MAX_F, FS_PROBE_RTTS, FS_PROBE_MIN_S,
 FS_LOSS, FS_DUPLICATE, FS_SIZE) = range(17)
#: cnt: ClientCounters' sent .. receive_batches (as named there), then the
#: emulated link's offered / dropped / duplicated, and copies a full ring dropped
(C_SENT, C_RETRANSMITTED, C_FAST, C_PROBES, C_DUPLICATE_RESULTS, C_IGNORED, C_BATCHES, C_OFFERED,
 C_DROPPED, C_DUPLICATED, C_RING_FULL, C_SIZE) = range(12)
#: draws one step may use: two per copy, at most 2 x window copies
DRAWS_PER_SLOT = 4


@njit(cache=True, nogil=True, inline="always")
def _mark(ks, lo, hi, pending, in_slot, copy_sent_at, send_order, attempts, timer_at, iv, fs, now, base,
          window):
    """ks[lo:hi] leave now: pending, in their slots, numbered, their timers
    armed (the timeout doubled per earlier copy, RFC 6298's back-off)."""
    order = iv[IV_ORDER]
    for i in range(lo, hi):
        k = ks[i]
        _sent(k, order, pending, in_slot, copy_sent_at, send_order, now, base, window)
        order += 1
        timer_at[k] = now + min(fs[FS_RTO_MAX], fs[FS_RTO] * float(np.int64(1) << min(attempts[k], 16)))
    iv[IV_ORDER] = order


@njit(cache=True, nogil=True, inline="always")
def _drain(ctrl, word, tail, slots, lengths, masks, bit, expected_len, budget, mode, job, rank, base,
           pending, payload_start, result, result_tail, raw_start, raw_mantissa, raw_exponent, fresh,
           n_fresh, cnt):
    """Consume up to ``budget`` slots of one ring from absolute slot ``tail``
    (``masks``: the multicast ring's; slots without ``bit`` are not ours).
    Returns (new tail, new n_fresh, rows of the result length, ours in range)."""
    head = np.int64(_atomic_load(ctrl, word + _R_HEAD))
    end = min(head, tail + budget)
    cap = slots.shape[0]
    rows, ours = 0, 0
    has_masks = masks.shape[0] > 0
    for t in range(tail, end):
        at = t % cap
        if has_masks and (masks[at] & bit) == 0:
            continue  # lost on the way to this worker (the emulated network)
        if lengths[at] != expected_len:
            cnt[C_IGNORED] += 1
            continue
        rows += 1
        k = _take_row(slots[at], mode, job, rank, base, pending, payload_start, result, result_tail,
                      raw_start, raw_mantissa, raw_exponent)
        if k == _NOT_OURS:
            cnt[C_IGNORED] += 1
        elif k != _LATE:
            ours += 1
            if k >= 0:
                fresh[n_fresh] = k
                n_fresh += 1
    if end > tail:
        _atomic_store(ctrl, word + _R_TAIL, end)
    return end, n_fresh, rows, ours


@njit(cache=True, nogil=True)
def worker_step(now, start, ctrl, down_word, down_slots, down_lengths, mcast_word, mcast_slots,
                mcast_lengths, mcast_masks, bit, expected_len, mode, job, rank, base, payload_start, result,
                result_tail, raw_start, raw_mantissa, raw_exponent, pending, attempts, sent_at, send_order,
                copy_sent_at, in_slot, timer_at, fresh, scratch, lost, ks, index, draws, up_words,
                up_asleep, up_slots, up_lengths, heads, payloads, tail, window, iv, fs, cnt):
    """One pass of :meth:`hosts.worker.AllreduceClient._run_pass`'s loop on
    shared memory, in one call: take every result waiting in the worker's
    down and multicast rings (``_take_row``), then the bookkeeping the loop
    does in Python otherwise, in the same order: round-trip sample (Karn),
    RACK, the next packets of the freed slots, lost copies found by RACK
    (:func:`overdue`), a tail loss probe, expired timers (one deadline per
    packet in ``timer_at``); then loss and duplication for the copies (the
    emulated link: ``draws`` from the injector's stream, two per copy at
    most) and one write of the survivors into the up ring (``_write_slots``:
    header rows + rows of the array, no packets built). ``start``: send the
    first window instead. A Python loop around it waits on the doorbell.

    Returns (fresh results, the next time something falls due (inf: none),
    the switch's asleep bit: ring its doorbell)."""
    num_packets = pending.shape[0]
    W = window
    n_ks = 0
    n_fresh = 0
    if start:
        n_ks = min(W, num_packets)
        for i in range(n_ks):
            ks[i] = i
            sent_at[i] = now
        _mark(ks, 0, n_ks, pending, in_slot, copy_sent_at, send_order, attempts, timer_at, iv, fs, now,
              base, W)
        cnt[C_SENT] += n_ks
        iv[IV_FIRST] += n_ks
    else:
        rows, ours = 0, 0
        budget = 4 * W + 64
        iv[IV_DOWN_TAIL], n_fresh, r1, o1 = _drain(
            ctrl, down_word, iv[IV_DOWN_TAIL], down_slots, down_lengths, mcast_masks[:0], bit, expected_len,
            budget, mode, job, rank, base, pending, payload_start, result, result_tail, raw_start,
            raw_mantissa, raw_exponent, fresh, n_fresh, cnt)
        iv[IV_MCAST_TAIL], n_fresh, r2, o2 = _drain(
            ctrl, mcast_word, iv[IV_MCAST_TAIL], mcast_slots, mcast_lengths, mcast_masks, bit, expected_len,
            budget, mode, job, rank, base, pending, payload_start, result, result_tail, raw_start,
            raw_mantissa, raw_exponent, fresh, n_fresh, cnt)
        rows, ours = r1 + r2, o1 + o2
        if rows:
            cnt[C_BATCHES] += 1
            fs[FS_LAST_PROGRESS] = now
            spurious = ours - n_fresh
            cnt[C_DUPLICATE_RESULTS] += spurious
            if spurious:
                fs[FS_REORDER] = min(fs[FS_REORDER_MAX_F], fs[FS_REORDER] * 1.5)
            else:
                fs[FS_REORDER] = max(fs[FS_REORDER_MIN_F], fs[FS_REORDER] * 0.99)
        if n_fresh:
            k = np.sort(fresh[:n_fresh])
            clean, median_sent_at, q = clean_samples(k, attempts, sent_at, send_order, scratch)
            if clean:
                fs[FS_SRTT], fs[FS_RTTVAR], fs[FS_RTO] = rto_sample(fs[FS_SRTT], fs[FS_RTTVAR], now - median_sent_at,
                                                                    fs[FS_RTO_MIN], fs[FS_RTO_MAX])
                if send_order[q] > iv[IV_RACK_ORDER]:
                    iv[IV_RACK_ORDER] = send_order[q]
                    fs[FS_RACK_RTT] = now - copy_sent_at[q]
            iv[IV_DONE] += n_fresh
            for i in range(n_fresh):
                nxt = k[i] + W
                if nxt < num_packets:
                    ks[n_ks] = nxt
                    n_ks += 1
                    sent_at[nxt] = now
            _mark(ks, 0, n_ks, pending, in_slot, copy_sent_at, send_order, attempts, timer_at, iv, fs, now,
                  base, W)
            cnt[C_SENT] += n_ks
            iv[IV_FIRST] += n_ks
            iv[IV_PROBES] = 0
    srtt = fs[FS_SRTT] if fs[FS_SRTT] >= 0 else 0.0
    next_due = np.inf
    # RACK (see _run_pass): copies overtaken by a later one's result, and out
    # longer than its round trip plus the reordering window, go again
    if iv[IV_RACK_ORDER] >= 0:
        margin = fs[FS_RACK_RTT] + max(fs[FS_REORDER_MIN_S], srtt * fs[FS_REORDER])
        n_lost, n_overtaken, rack_due = overdue(in_slot, pending, send_order, iv[IV_RACK_ORDER], copy_sent_at,
                                                attempts, margin, now, lost)
        if n_lost:
            lo = n_ks
            for i in range(n_lost):
                attempts[lost[i]] += 1
                ks[n_ks] = lost[i]
                n_ks += 1
            _mark(ks, lo, n_ks, pending, in_slot, copy_sent_at, send_order, attempts, timer_at, iv, fs, now,
                  base, W)
            cnt[C_RETRANSMITTED] += n_lost
            cnt[C_FAST] += n_lost
        if n_lost < n_overtaken:
            next_due = min(next_due, max(rack_due, now + max(fs[FS_REORDER_MIN_S], srtt / 8)))
    # the tail loss probe
    if fs[FS_SRTT] >= 0 and iv[IV_DONE] < num_packets and iv[IV_FIRST] == num_packets:
        pto = max(fs[FS_PROBE_MIN_S], fs[FS_PROBE_RTTS] * srtt) * float(np.int64(1) << min(iv[IV_PROBES], 16))
        if now >= fs[FS_LAST_PROGRESS] + pto and now >= fs[FS_LAST_PROBE] + pto:
            n_late = 0
            for s in range(W):
                j = in_slot[s]
                if j >= 0 and pending[j] and copy_sent_at[j] <= now - pto:
                    lost[n_late] = j
                    n_late += 1
            if n_late:
                late = np.sort(lost[:n_late])
                lo = n_ks
                for i in range(n_late):
                    attempts[late[i]] += 1
                    ks[n_ks] = late[i]
                    n_ks += 1
                _mark(ks, lo, n_ks, pending, in_slot, copy_sent_at, send_order, attempts, timer_at, iv, fs,
                      now, base, W)
                cnt[C_RETRANSMITTED] += n_late
                cnt[C_PROBES] += n_late
            iv[IV_PROBES] += 1
            fs[FS_LAST_PROBE] = now
            pto *= 2
        next_due = min(next_due, max(fs[FS_LAST_PROGRESS], fs[FS_LAST_PROBE]) + pto)
    # expired timers; the earliest of the others
    lo = n_ks
    for s in range(W):
        j = in_slot[s]
        if j < 0 or not pending[j]:
            continue
        if timer_at[j] <= now:
            attempts[j] += 1
            ks[n_ks] = j
            n_ks += 1
        elif timer_at[j] < next_due:
            next_due = timer_at[j]
    if n_ks > lo:
        _mark(ks, lo, n_ks, pending, in_slot, copy_sent_at, send_order, attempts, timer_at, iv, fs, now,
              base, W)
        cnt[C_RETRANSMITTED] += n_ks - lo
        for i in range(lo, n_ks):
            if timer_at[ks[i]] < next_due:
                next_due = timer_at[ks[i]]
    asleep = np.uint64(0)
    if n_ks:
        # the emulated link: loss, then a duplicate right after its original
        loss, duplicate = fs[FS_LOSS], fs[FS_DUPLICATE]
        n = 0
        d = iv[IV_DRAW]
        link = cnt[C_OFFERED:C_OFFERED + 3]  # offered, dropped, duplicated: draw_copies' order
        for i in range(n_ks):
            d, sent, twice = draw_copies(draws, d, loss, duplicate, link)
            if sent:
                index[n] = ks[i]
                n += 1
            if twice:
                index[n] = ks[i]
                n += 1
        iv[IV_DRAW] = d
        if n:
            none = mcast_masks[:0]  # no masks: the up ring has none
            done, head, asleep = _write_slots(ctrl, up_words, up_asleep, up_slots, up_lengths, none,
                                              iv[IV_UP_HEAD], heads, payloads, tail, index[:n], none,
                                              np.uint64(0), PUBLISH_SLOTS)
            iv[IV_UP_HEAD] = head
            cnt[C_RING_FULL] += n - done
    return n_fresh, next_due, asleep
