"""The switch's data plane on packets in memory: aggregation through the
numerics core, SwitchML's slot invariant with shadow sets, and every drop."""

import numpy as np
import pytest

import fpisa
from emulator.fastpath import BatchProcessor
from emulator.pipeline import SwitchConfig, SwitchPipeline
from fpisa.job import JobSpec, mode_info
from fpisa.protocol import (
    FLAG_RAW,
    Header,
    MsgType,
    WireMode,
    format_code,
    pack,
    pool_index,
    unpack,
)

K, E, POOL = 3, 8, 4
WORKERS = tuple(("10.0.0.1", 5000 + r) for r in range(K))


def make(mode="fpisa", fmt="fp32", rounding="rz", **kw):
    job = JobSpec(mode=mode, fmt=fmt, num_workers=K, packet_elements=E, window=POOL, **kw)
    return SwitchPipeline(SwitchConfig(job, WORKERS, rounding=rounding, record_orders=True))


def data(rank, values, slot=0, shadow=0, pid=0, mode="fpisa", fmt="fp32", job=0, flags=0,
         num_workers=K, wire_mode=None, msg=MsgType.DATA):
    wm = mode_info(mode).data_wire_mode if wire_mode is None else wire_mode
    h = Header(msg, wm, format_code(fmt), flags, job, rank, num_workers, len(values),
               pool_index(slot, shadow), 0, pid)
    return pack(h, np.asarray(values))


def float_values(rng, fmt, n=E):
    x = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3, n)).astype(np.float32)
    return fpisa.to_bits(x.astype(np.float16), "fp16") if fmt == "fp16" else (
        (x.view(np.uint32) >> 16).astype(np.uint16) if fmt == "bf16" else x.view(np.uint32))


def results_of(out):
    return [(dst, *unpack(pkt)) for dst, pkt in out]


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a"])
def test_float_modes_bit_exact_with_arrival_order(mode, fmt):
    rng = np.random.default_rng(1)
    p = make(mode, fmt)
    values = np.stack([float_values(rng, fmt) for _ in range(K)])
    order = [2, 0, 1]
    out = []
    for r in order:
        out += p.process(data(r, values[r], slot=1, pid=11, mode=mode, fmt=fmt), WORKERS[r])
    expected = fpisa.aggregate(values, mode, fmt=fmt, order=order)
    assert len(out) == K
    for r, (dst, h, payload, raw) in enumerate(results_of(out)):
        assert dst == WORKERS[r] and h.rank == r and h.msg_type == MsgType.RESULT
        assert h.packet_id == 11 and h.slot == 1 and h.shadow_set == 0 and raw is None
        assert np.array_equal(payload.astype(expected.dtype), expected)
    assert p.recorded_orders() == {11: (2, 0, 1)}


def test_switchml_sum_and_exponent_max():
    rng = np.random.default_rng(2)
    p = make("switchml")
    ints = rng.integers(-2**28, 2**28, (K, E)).astype(np.int32)
    exps = rng.integers(-150, 30, (K, E)).astype(np.int32)
    out_sum, out_max = [], []
    for r in range(K):
        out_max += p.process(data(r, exps[r], slot=0, pid=0, mode="switchml",
                                  wire_mode=WireMode.INT_MAX), WORKERS[r])
        out_sum += p.process(data(r, ints[r], slot=1, pid=1, mode="switchml"), WORKERS[r])
    (_, h, payload, _), *_ = results_of(out_max)
    assert h.mode == WireMode.INT_MAX and np.array_equal(payload, exps.max(axis=0))
    (_, h, payload, _), *_ = results_of(out_sum)
    assert h.mode == WireMode.SWITCHML
    assert np.array_equal(payload, ints.astype(np.int64).sum(axis=0).astype(np.int32))
    assert p.recorded_orders(WireMode.INT_MAX) == {0: (0, 1, 2)}


def test_duplicate_of_incomplete_slot_is_dropped_and_not_added_twice():
    rng = np.random.default_rng(3)
    p = make()
    values = np.stack([float_values(rng, "fp32") for _ in range(K)])
    assert p.process(data(0, values[0]), WORKERS[0]) == []
    assert p.process(data(0, values[0]), WORKERS[0]) == []  # the worker re-sends
    assert p.counters.dropped == {"duplicate_incomplete": 1}
    out = p.process(data(1, values[1]), WORKERS[1]) + p.process(data(2, values[2]), WORKERS[2])
    expected = fpisa.aggregate(values, "fpisa")
    assert np.array_equal(unpack(out[0][1])[1], expected)
    assert p.counters.aggregated == K and p.counters.completed == 1


def test_duplicate_of_completed_slot_gets_unicast_retransmission():
    rng = np.random.default_rng(4)
    p = make()
    values = np.stack([float_values(rng, "fp32") for _ in range(K)])
    out = []
    for r in range(K):
        out += p.process(data(r, values[r], slot=2, pid=7), WORKERS[r])
    first = unpack(out[1][1])[1].copy()
    retx = p.process(data(1, values[1], slot=2, pid=7), WORKERS[1])
    assert len(retx) == 1
    dst, h, payload, _ = results_of(retx)[0]
    assert dst == WORKERS[1] and h.msg_type == MsgType.RESULT_RETX and h.rank == 1
    assert h.packet_id == 7 and np.array_equal(payload, first)
    assert p.counters.retransmitted == 1 and p.counters.completed == 1


def test_shadow_sets_keep_result_until_every_worker_moved_on():
    """SwitchML's invariant: (i, s) stays readable while any worker may still
    ask for it; a worker's packet for (i, 1-s) clears only its own bit."""
    rng = np.random.default_rng(5)
    p = make()
    gen0 = np.stack([float_values(rng, "fp32") for _ in range(K)])
    gen1 = np.stack([float_values(rng, "fp32") for _ in range(K)])
    gen2 = np.stack([float_values(rng, "fp32") for _ in range(K)])
    for r in range(K):
        p.process(data(r, gen0[r], slot=0, shadow=0, pid=0), WORKERS[r])
    # workers 0 and 1 got the result and move on to the other set; worker 2
    # lost it and asks again: it must still get generation 0's result
    p.process(data(0, gen1[0], slot=0, shadow=1, pid=4), WORKERS[0])
    p.process(data(1, gen1[1], slot=0, shadow=1, pid=4), WORKERS[1])
    retx = p.process(data(2, gen0[2], slot=0, shadow=0, pid=0), WORKERS[2])
    assert np.array_equal(unpack(retx[0][1])[1], fpisa.aggregate(gen0, "fpisa"))
    out = p.process(data(2, gen1[2], slot=0, shadow=1, pid=4), WORKERS[2])
    assert np.array_equal(unpack(out[0][1])[1], fpisa.aggregate(gen1, "fpisa"))
    # set 0 is reused by generation 2: the first arrival overwrites (no clear),
    # nothing of generation 0 leaks in
    out = []
    for r in (1, 2, 0):
        out += p.process(data(r, gen2[r], slot=0, shadow=0, pid=8), WORKERS[r])
    assert np.array_equal(unpack(out[0][1])[1], fpisa.aggregate(gen2, "fpisa", order=[1, 2, 0]))
    assert p.recorded_orders() == {0: (0, 1, 2), 4: (0, 1, 2), 8: (1, 2, 0)}
    assert p.counters.dropped == {}


def test_moving_to_other_set_clears_only_own_bit():
    p = make()
    v = np.zeros(E, np.uint32)
    p.process(data(0, v, slot=3, shadow=0), WORKERS[0])
    p.process(data(1, v, slot=3, shadow=0), WORKERS[1])
    p.process(data(0, v, slot=3, shadow=1, pid=1), WORKERS[0])
    row0, row1 = 3, POOL + 3
    assert p.bitmap[row0] == 0b010 and p.bitmap[row1] == 0b001


@pytest.fixture(params=["reference", "fast"])
def send(request):
    """One packet through the reference path or the batch fast path."""
    if request.param == "reference":
        return lambda p, packet, source: p.process(packet, source)
    return lambda p, packet, source: BatchProcessor(p).process([(packet, source)])


def test_late_duplicate_after_sender_moved_on_is_stale(send):
    """The duplicate SwitchML cannot survive: worker 0's copy of (0, set 0,
    id 0) arrives after worker 0 moved on to set 1. Its bit in set 0 is
    clear, yet the round it belongs to is complete: it is dropped (stale),
    set 0 keeps its result for the workers that still need it, and set 1's
    round keeps worker 0's contribution and completes correctly."""
    rng = np.random.default_rng(8)
    p = make()
    gen = [np.stack([float_values(rng, "fp32") for _ in range(K)]) for _ in range(3)]
    for r in range(K):
        send(p, data(r, gen[0][r], pid=0), WORKERS[r])
    assert send(p, data(0, gen[1][0], shadow=1, pid=4), WORKERS[0]) == []
    assert send(p, data(0, gen[0][0], pid=0), WORKERS[0]) == []  # the late copy
    assert p.counters.dropped == {"stale": 1}
    assert p.bitmap[POOL] == 0b001  # set 1 still has worker 0
    # worker 1 lost set 0's result: it is still there
    retx = send(p, data(1, gen[0][1], pid=0), WORKERS[1])
    assert len(retx) == 1 and unpack(retx[0][1])[0].msg_type == MsgType.RESULT_RETX
    assert np.array_equal(unpack(retx[0][1])[1], fpisa.aggregate(gen[0], "fpisa"))
    out = []
    for r in (1, 2):
        out += send(p, data(r, gen[1][r], shadow=1, pid=4), WORKERS[r])
    assert len(out) == K
    assert np.array_equal(unpack(out[0][1])[1], fpisa.aggregate(gen[1], "fpisa"))
    # set 0 reused by id 8; late copies of ids 0 and 4 change nothing
    out = send(p, data(2, gen[2][2], pid=8), WORKERS[2])
    assert send(p, data(0, gen[0][0], pid=0), WORKERS[0]) == []
    # worker 2 moved on from set 1 (stale), worker 1 not yet (a dup: RETX)
    assert send(p, data(2, gen[1][2], shadow=1, pid=4), WORKERS[2]) == []
    retx = send(p, data(1, gen[1][1], shadow=1, pid=4), WORKERS[1])
    assert np.array_equal(unpack(retx[0][1])[1], fpisa.aggregate(gen[1], "fpisa"))
    for r in (0, 1):
        out += send(p, data(r, gen[2][r], pid=8), WORKERS[r])
    assert np.array_equal(unpack(out[0][1])[1], fpisa.aggregate(gen[2], "fpisa", order=[2, 0, 1]))
    assert p.recorded_orders() == {0: (0, 1, 2), 4: (0, 1, 2), 8: (2, 0, 1)}
    assert p.counters.dropped == {"stale": 3}
    assert p.counters.received == p.counters.aggregated + p.counters.retransmitted + 3


def test_older_id_than_the_round_is_stale_and_touches_nothing(send):
    p = make()
    v = np.zeros(E, np.uint32)
    send(p, data(0, v, slot=1, pid=9), WORKERS[0])  # round 9 in (1, set 0)
    send(p, data(1, v, slot=1, shadow=1, pid=5), WORKERS[1])  # round 5 in (1, set 1)
    before = (p.bitmap.copy(), p.count.copy(), p.round_id.copy())
    assert send(p, data(1, v, slot=1, pid=1), WORKERS[1]) == []
    assert send(p, data(2, v, slot=1, pid=1), WORKERS[2]) == []
    assert p.counters.dropped == {"stale": 2}
    for a, b in zip(before, (p.bitmap, p.count, p.round_id)):
        assert np.array_equal(a, b)


def test_a_newer_id_starts_a_new_round(send):
    p = make()
    v = np.ones(E, np.uint32)
    for r in range(K):
        send(p, data(r, v, pid=0), WORKERS[r])
    send(p, data(0, v, pid=8), WORKERS[0])
    assert p.round_id[0] == 8 and p.count[0] == 1 and not p.completed[0]


def test_round_ids_wrap_around_at_2_32(send):
    """Serial-number arithmetic: ids continue through 2^32 -> 0."""
    rng = np.random.default_rng(9)
    p = make()
    base = 2**32 - POOL  # slot 0: set 0 id base, set 1 id 0 (wrapped), set 0 id POOL
    ids = [base, 0, POOL]
    for n, pid in enumerate(ids):
        values = np.stack([float_values(rng, "fp32") for _ in range(K)])
        out = []
        for r in range(K):
            out += send(p, data(r, values[r], shadow=n % 2, pid=pid), WORKERS[r])
        assert len(out) == K and unpack(out[0][1])[0].packet_id == pid
        assert np.array_equal(unpack(out[0][1])[1], fpisa.aggregate(values, "fpisa"))
    # a late copy of id base (older than POOL across the wrap) is stale
    assert send(p, data(1, values[1], pid=base), WORKERS[1]) == []
    assert p.counters.dropped == {"stale": 1}


@pytest.mark.parametrize("pid,stale", [(2**31 - 1, False), (2**31, False), (2**31 + 1, True),
                                       (2**32 - 1, True)])
def test_serial_arithmetic_boundary(send, pid, stale):
    """Relative to a round id 0: ids 1..2^31 ahead are newer, the rest older."""
    p = make()
    v = np.zeros(E, np.uint32)
    send(p, data(0, v, pid=0), WORKERS[0])
    send(p, data(1, v, pid=pid), WORKERS[1])
    assert p.counters.dropped == ({"stale": 1} if stale else {})
    assert p.round_id[0] == (0 if stale else pid)


def test_raw_registers_give_host_side_rne():
    rng = np.random.default_rng(6)
    p = make()
    values = np.stack([float_values(rng, "fp32") for _ in range(K)])
    out = []
    for r in range(K):
        out += p.process(data(r, values[r], flags=FLAG_RAW), WORKERS[r])
    _, h, payload, raw = results_of(out)[0]
    assert h.flags & FLAG_RAW and raw is not None
    mantissa, exponent = raw
    host = fpisa.normalize(exponent.astype(np.int64), mantissa.astype(np.int64), "fp32", "rne")
    assert np.array_equal(np.asarray(host, np.uint32), fpisa.aggregate(values, "fpisa", rounding="rne"))
    assert np.array_equal(payload, fpisa.aggregate(values, "fpisa"))


def test_single_worker_job_completes_on_first_arrival():
    p = SwitchPipeline(SwitchConfig(JobSpec(num_workers=1, packet_elements=E), [WORKERS[0]]))
    v = np.arange(E, dtype=np.float32).view(np.uint32)
    h = Header(MsgType.DATA, WireMode.FPISA, 0, 0, 0, 0, 1, E, 0, 0, 0)
    out = p.process(pack(h, v), WORKERS[0])
    assert len(out) == 1 and np.array_equal(unpack(out[0][1])[1], v)


def valid(**kw):
    return data(0, np.zeros(E, np.uint32), **kw)


@pytest.mark.parametrize("packet,source,reason", [
    (b"", WORKERS[0], "malformed:truncated_header"),
    (valid()[:20], WORKERS[0], "malformed:bad_length"),
    (valid() + b"\0", WORKERS[0], "malformed:bad_length"),
    (bytes([0x21]) + valid()[1:], WORKERS[0], "malformed:bad_version"),
    (valid()[:1] + bytes([9]) + valid()[2:], WORKERS[0], "malformed:bad_type_or_mode"),
    (valid(msg=MsgType.RESULT), WORKERS[0], "not_data"),
    (valid(job=5), WORKERS[0], "wrong_job"),
    (valid(), ("10.9.9.9", 1), "unknown_worker"),
    (valid(), WORKERS[1], "rank_mismatch"),
    (valid(mode="fpisa-a"), WORKERS[0], "config_mismatch"),
    (valid(fmt="bf16")[:16] + b"\0" * 2 * E, WORKERS[0], "config_mismatch"),
    (valid(num_workers=K + 1), WORKERS[0], "config_mismatch"),
    (data(0, np.zeros(E + 1, np.uint32)), WORKERS[0], "config_mismatch"),
    (valid(wire_mode=WireMode.INT_MAX), WORKERS[0], "config_mismatch"),
    (valid(slot=POOL), WORKERS[0], "slot_out_of_range"),
])
def test_every_rejection_is_a_counted_drop(packet, source, reason):
    p = make()
    assert p.process(packet, source) == []
    assert p.counters.dropped == {reason: 1}
    assert p.counters.aggregated == 0 and p.counters.received == 1


def test_workers_disagreeing_on_a_slots_mode_is_a_drop():
    p = make("switchml")
    p.process(data(0, np.zeros(E, np.int32), mode="switchml"), WORKERS[0])
    out = p.process(data(1, np.zeros(E, np.int32), mode="switchml", wire_mode=WireMode.INT_MAX),
                    WORKERS[1])
    assert out == [] and p.counters.dropped == {"config_mismatch": 1}
    assert p.bitmap[0] == 0b001


@pytest.mark.parametrize("kw,match", [
    (dict(workers=WORKERS[:2]), "2 worker addresses"),
    (dict(workers=(WORKERS[0],) * K), "distinct"),
    (dict(workers=([1], [2], [3])), "hashable"),
    (dict(rounding="up"), "rounding"),
    (dict(job={"mode": "fpisa"}), "JobSpec"),
])
def test_switch_config_is_validated(kw, match):
    # the job's own fields are validated by JobSpec (tests/fpisa/test_job.py)
    args = dict(job=JobSpec(num_workers=K), workers=WORKERS)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        SwitchConfig(**args)
