"""The worker's compiled receive step (fpisa/_client_kernels.py) against the numpy
formulas it replaced, on random batches of results: other jobs, modes,
ranks and message types, late results of an earlier pass, duplicates
within a batch and across batches, raw registers, the padded last packet."""

import numpy as np
import pytest

from fpisa.protocol import ALL_RANKS, DATA_VT, HEADER_BYTES, HEADER_DTYPE, RESULT_VT, RETX_VT
from fpisa._client_kernels import clean_samples, mark_sent, overdue, take_results


def reference(buf, mode, job, rank, base, pending, P, R):
    """The numpy version (hosts/worker.py before the kernel): returns
    (fresh packets in packet order, payloads, raw bytes, ignored, ours)."""
    header = buf[:, :HEADER_BYTES].view(HEADER_DTYPE)[:, 0]
    vt = header["ver_type"]
    ours = (((vt == RESULT_VT) | (vt == RETX_VT)) & (header["mode"] == mode) & (header["job"] == job)
            & ((header["rank"] == rank) | (header["rank"] == ALL_RANKS)))
    ignored = int(np.count_nonzero(~ours))
    k = (header["packet_id"].astype(np.int64) - base) & 0xFFFFFFFF
    ours &= k < pending.size
    rows = np.flatnonzero(ours)
    k = k[rows]
    in_range = rows.size
    k, first_at = np.unique(k, return_index=True)
    rows = rows[first_at]
    fresh = pending[k]
    k, rows = k[fresh], rows[fresh]
    pending[k] = False
    return (k, buf[rows, HEADER_BYTES:HEADER_BYTES + P], buf[rows, HEADER_BYTES + P:HEADER_BYTES + P + R],
            ignored, in_range)


def batch(rng, m, num_packets, base, L, job=3, mode=1, rank=2):
    buf = rng.integers(0, 256, (m, L), dtype=np.uint8)
    header = buf[:, :HEADER_BYTES].view(HEADER_DTYPE)[:, 0]
    header["ver_type"] = rng.choice([RESULT_VT, RETX_VT, DATA_VT], m, p=[0.8, 0.15, 0.05])
    header["mode"] = rng.choice([mode, mode + 1], m, p=[0.95, 0.05])
    header["job"] = rng.choice([job, job + 1], m, p=[0.95, 0.05])
    header["rank"] = rng.choice([rank, ALL_RANKS, rank + 1], m, p=[0.3, 0.65, 0.05])
    # mostly this pass's packets (with repeats), some of the pass before, some wrapping 2^32
    k = np.where(rng.random(m) < 0.9, rng.integers(0, num_packets, m), rng.integers(-50, 0, m))
    header["packet_id"] = (base + k) & 0xFFFFFFFF
    return buf


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("base", [0, 1000, 2**32 - 20])
def test_take_results_matches_the_numpy_formulas(raw, base):
    rng = np.random.default_rng(base + raw)
    E, num_packets = 5, 40
    P, R = 4 * E, (10 * E if raw else 0)
    L = HEADER_BYTES + P + R
    # the result array: the pass's first 39 packets whole, the 40th padded (result_tail)
    full = num_packets - 1
    pending_ref = rng.random(num_packets) < 0.8
    pending = pending_ref.copy()
    result = np.zeros((full, P), np.uint8)
    tail = np.zeros(P, np.uint8)
    raw_m = np.zeros((num_packets, 8 * E), np.uint8) if raw else np.zeros((0, 0), np.uint8)
    raw_e = np.zeros((num_packets, 2 * E), np.uint8) if raw else np.zeros((0, 0), np.uint8)
    expected_payload = np.zeros((num_packets, P), np.uint8)
    expected_raw = np.zeros((num_packets, R), np.uint8)
    fresh = np.empty(num_packets, np.int64)
    for round_ in range(6):  # duplicates across batches too
        buf = batch(rng, 30, num_packets, base, L)
        block = buf if round_ % 2 else np.pad(buf, ((0, 0), (0, 7)))[:, :L]  # strided, as a ring's view
        k_ref, payload_ref, raw_ref, ignored_ref, ours_ref = reference(buf, 1, 3, 2, base, pending_ref, P, R)
        expected_payload[k_ref] = payload_ref
        expected_raw[k_ref] = raw_ref
        n, ignored, ours = take_results(block, 1, 3, 2, base, pending, HEADER_BYTES, result, tail,
                                        HEADER_BYTES + P, raw_m, raw_e, fresh, 0)
        assert (ignored, ours) == (ignored_ref, ours_ref)
        assert np.array_equal(np.sort(fresh[:n]), k_ref)  # the first copy of each pending packet
        assert len(set(fresh[:n].tolist())) == n
        assert np.array_equal(pending, pending_ref)
    assert np.array_equal(result, expected_payload[:full])
    assert np.array_equal(tail, expected_payload[full])
    if raw:
        assert np.array_equal(np.hstack([raw_m, raw_e]), expected_raw)


def test_take_results_appends_after_n_fresh_and_skips_nothing_twice():
    L = HEADER_BYTES + 8
    buf = np.zeros((3, L), np.uint8)
    header = buf[:, :HEADER_BYTES].view(HEADER_DTYPE)[:, 0]
    header["ver_type"], header["rank"], header["packet_id"] = RESULT_VT, ALL_RANKS, [2, 2, 0]
    buf[:, HEADER_BYTES:] = np.arange(3)[:, None] + 1
    pending = np.ones(3, np.bool_)
    result, tail = np.zeros((2, 8), np.uint8), np.zeros(8, np.uint8)
    fresh = np.full(5, -1, np.int64)
    none = np.zeros((0, 0), np.uint8)
    n, ignored, ours = take_results(buf, 0, 0, 0, 0, pending, HEADER_BYTES, result, tail, L, none, none,
                                    fresh, 2)
    assert (n, ignored, ours) == (4, 0, 3)
    assert fresh.tolist() == [-1, -1, 2, 0, -1]
    assert np.array_equal(tail, np.full(8, 1)) and np.array_equal(result[0], np.full(8, 3))
    assert not pending[[0, 2]].any() and pending[1]


@pytest.mark.parametrize("seed", range(5))
def test_clean_samples_matches_the_numpy_formulas(seed):
    rng = np.random.default_rng(seed)
    n = 50
    attempts = rng.choice([0, 0, 0, 1, 2], n)
    sent_at = rng.random(n)
    send_order = rng.permutation(n)
    send_order[3] = send_order[7]  # a tie: the first in k's order wins
    k = np.sort(rng.choice(n, rng.integers(1, n), replace=False))
    count, median, q = clean_samples(k, attempts, sent_at, send_order, np.empty(n))
    clean = attempts[k] == 0
    assert count == clean.sum()
    if count:
        now = 2.0
        assert np.isclose(now - median, np.median(now - sent_at[k[clean]]), rtol=0, atol=1e-12)
        ref = k[clean]
        assert q == ref[np.argmax(send_order[ref])]
    else:
        assert q == -1


def test_clean_samples_without_clean_packets():
    assert clean_samples(np.array([1], np.int64), np.array([0, 3]), np.zeros(2), np.zeros(2, np.int64),
                         np.empty(2)) == (0, 0.0, -1)


def test_mark_sent_matches_the_numpy_formulas():
    rng = np.random.default_rng(1)
    n, W, base, count, now = 40, 8, 13, 100, 5.5
    arrays = dict(pending=np.zeros(n, np.bool_), in_slot=np.full(W, -1, np.int64), copy_sent_at=np.zeros(n),
                  send_order=np.zeros(n, np.int64))
    ref = {name: a.copy() for name, a in arrays.items()}
    attempts = rng.integers(0, 4, n)
    ks = np.array([9, 2, 17, 30], np.int64)  # 9 and 17 share a slot: the later one stays
    snapshot, top = mark_sent(ks, arrays["pending"], arrays["in_slot"], arrays["copy_sent_at"],
                              arrays["send_order"], attempts, count, now, base, W)
    ref["pending"][ks] = True
    ref["in_slot"][(base + ks) % W] = ks
    ref["copy_sent_at"][ks] = now
    ref["send_order"][ks] = count + np.arange(ks.size)
    for name in arrays:
        assert np.array_equal(arrays[name], ref[name]), name
    assert np.array_equal(snapshot, attempts[ks]) and top == attempts[ks].max()
    snapshot[:] = -1  # a new array, not a view of attempts
    assert attempts.min() >= 0


@pytest.mark.parametrize("seed", range(5))
def test_overdue_matches_the_numpy_formulas(seed):
    rng = np.random.default_rng(seed)
    n, W = 60, 16
    in_slot = np.where(rng.random(W) < 0.8, rng.choice(n, W, replace=False), -1)
    pending = rng.random(n) < 0.7
    send_order = rng.permutation(n)
    copy_sent_at = rng.random(n)
    attempts = rng.choice([0, 0, 1, 2, 20], n)
    rack_order, margin, now = 40, 0.01, 0.6
    lost = np.empty(W, np.int64)
    n_lost, n_over, next_due = overdue(in_slot, pending, send_order, rack_order, copy_sent_at, attempts,
                                       margin, now, lost)
    flying = in_slot[in_slot >= 0]
    overtaken = flying[pending[flying] & (send_order[flying] < rack_order)]
    due_at = copy_sent_at[overtaken] + np.ldexp(margin, np.minimum(attempts[overtaken], 16))
    assert n_over == overtaken.size
    assert np.array_equal(lost[:n_lost], overtaken[due_at <= now])
    later = due_at[due_at > now]
    assert next_due == (later.min() if later.size else np.inf)
