"""The batch fast path (emulator.fastpath) against the reference path
(SwitchPipeline.process): same output bytes, destinations, counters, state
and recorded orders, on random streams with duplicates, stale and bad
packets, for every mode and format."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.fastpath import BatchProcessor
from emulator.pipeline import SwitchConfig, SwitchPipeline
from fpisa.job import JobSpec, mode_info
from fpisa.protocol import (ALL_RANKS, FIELD_OFFSETS, FLAG_RAW, Header, MsgType, WireMode, format_code, pack,
                            pool_index)

K, E, POOL = 3, 5, 2
WORKERS = tuple(("127.0.0.1", 7000 + r) for r in range(K))


def config(mode, fmt, raw=False):
    job = JobSpec(mode=mode, fmt=fmt, num_workers=K, packet_elements=E, window=POOL, raw_registers=raw)
    return SwitchConfig(job, WORKERS, record_orders=True)


#: packet ids start just below 2^32, so streams cross the wrap-around
ID_BASE = 2**32 - 3 * 2 * POOL


def random_stream(rng, mode, fmt, length):
    """Random DATA packets (and bad ones) whose ids follow the workers'
    scheme loosely: each (slot, set) has a current round that sometimes
    moves on; some packets carry the previous round's id or an older one
    (stale)."""
    wire = mode_info(mode).data_wire_mode
    bits = {"fp32": np.uint32, "fp16": np.uint16, "bf16": np.uint16}[fmt]
    stream = []
    generation = np.zeros((POOL, 2), np.int64)
    for _ in range(length):
        r = int(rng.integers(K))
        slot, shadow = int(rng.integers(POOL)), int(rng.integers(2))
        u = rng.random()
        if u < 0.1:
            generation[slot, shadow] += 1
        g = int(generation[slot, shadow]) - (u > 0.9) - 5 * (u > 0.98)
        pid = (ID_BASE + (2 * g + shadow) * POOL + slot) & 0xFFFFFFFF
        m = WireMode.INT_MAX if mode == "switchml" and rng.random() < 0.3 else wire
        if m.is_float:
            payload = rng.integers(0, np.iinfo(bits).max, E, dtype=np.uint64).astype(bits)
        else:
            payload = rng.integers(-2**31, 2**31, E).astype(np.int32)
        h = Header(MsgType.DATA, m, format_code(fmt), FLAG_RAW if rng.random() < 0.2 else 0,
                   0, r, K, E, pool_index(slot, shadow), int(rng.integers(-200, 200)), pid)
        data = pack(h, payload)
        source = WORKERS[r]
        kind = rng.random()
        if kind < 0.05:
            source = ("10.0.0.9", 1)  # unknown worker
        elif kind < 0.1:
            source = WORKERS[(r + 1) % K]  # rank mismatch
        elif kind < 0.13:
            data = data[:-1]  # malformed
        elif kind < 0.16:
            data = data[:4] + b"\x07" + data[5:]  # wrong job
        elif kind < 0.19:
            data = data[:6] + bytes([K + 1]) + data[7:]  # config mismatch
        elif kind < 0.21:
            data = bytes([0x11]) + data[1:]  # a RESULT sent to the switch
        stream.append((data, source))
        if rng.random() < 0.2:
            stream.append((data, source))  # duplicate
    return stream


def state(p):
    return (p.bitmap, p.count, p.completed, p.block_exponent, p.row_mode, p.round_id, p.result_length,
            p.result_flags, *[a for r in p.registers.values()
                             for a in (r.exponent_register, r.mantissa_register, r.element_flags)])


@pytest.mark.parametrize("mode,fmt,raw", [
    (mode, fmt, raw) for mode, fmt in [("fpisa", "fp32"), ("fpisa", "fp16"), ("fpisa", "bf16"),
                                       ("fpisa-a", "fp32"), ("fpisa-a", "bf16"), ("switchml", "fp32")]
    for raw in ([False, True] if mode != "switchml" else [False])  # SwitchML has no raw registers
])
def test_fast_path_equals_reference(mode, fmt, raw):
    rng = np.random.default_rng(hash((mode, fmt, raw)) % 2**32)
    stream = random_stream(rng, mode, fmt, 600)
    ref, fast = SwitchPipeline(config(mode, fmt, raw)), SwitchPipeline(config(mode, fmt, raw))
    expected = [o for d, s in stream for o in ref.process(d, s)]
    batch = BatchProcessor(fast, max_batch=17)
    got = batch.process(stream)
    assert got == expected
    assert fast.counters.as_dict() == ref.counters.as_dict()
    assert fast.counters.completed > 10 and fast.counters.retransmitted > 0
    assert fast.counters.dropped["stale"] > 0
    for a, b in zip(state(fast), state(ref)):
        assert np.array_equal(a, b)
    assert fast.recorded == ref.recorded


@given(st.lists(st.binary(max_size=60), max_size=30), st.integers(0, 2**32 - 1))
def test_fast_path_counts_garbage_like_reference(garbage, seed):
    rng = np.random.default_rng(seed)
    stream = random_stream(rng, "fpisa", "fp32", 20) + [(g, WORKERS[0]) for g in garbage]
    ref, fast = SwitchPipeline(config("fpisa", "fp32")), SwitchPipeline(config("fpisa", "fp32"))
    expected = [o for d, s in stream for o in ref.process(d, s)]
    assert BatchProcessor(fast).process(stream) == expected
    assert fast.counters.as_dict() == ref.counters.as_dict()


@pytest.mark.parametrize("mode,fmt", [("fpisa", "fp32"), ("fpisa-a", "fp16"), ("switchml", "fp32")])
def test_trains_in_and_out_equal_reference(mode, fmt):
    """process_trains (the server's GSO/GRO path): runs of equally long
    datagrams from one source arrive as one train; outputs come as trains
    per destination; per destination the datagrams and their order match."""
    rng = np.random.default_rng(11)
    stream = random_stream(rng, mode, fmt, 500)
    trains, i = [], 0
    while i < len(stream):
        j = i
        while (j + 1 < len(stream) and j + 1 - i < 8 and stream[j + 1][1] == stream[i][1]
               and len(stream[j + 1][0]) == len(stream[i][0])):
            j += 1
        size = len(stream[i][0])
        trains.append((b"".join(d for d, _ in stream[i:j + 1]), size, stream[i][1]))
        i = j + 1
    ref, fast = SwitchPipeline(config(mode, fmt)), SwitchPipeline(config(mode, fmt))
    expected = [o for d, s in stream for o in ref.process(d, s)]
    got = BatchProcessor(fast, max_batch=13).process_trains(trains)
    flat = [(dst, train[at:at + size]) for dst, train, size in got
            for at in range(0, len(train), size)]
    for dst in WORKERS:
        for size in {len(p) for _, p in expected}:
            assert ([pkt for d, pkt in flat if d == dst and len(pkt) == size]
                    == [pkt for d, pkt in expected if d == dst and len(pkt) == size])
    assert len(flat) == len(expected)
    assert fast.counters.as_dict() == ref.counters.as_dict()
    for a, b in zip(state(fast), state(ref)):
        assert np.array_equal(a, b)
    assert fast.recorded == ref.recorded


@given(st.lists(st.tuples(st.binary(max_size=40), st.integers(0, 3),
                          st.sampled_from(WORKERS + (("10.9.9.9", 9),))), max_size=12),
       st.integers(0, 2**32 - 1))
def test_trains_of_garbage_are_counted_never_crash(garbage, seed):
    rng = np.random.default_rng(seed)
    good = random_stream(rng, "fpisa", "fp32", 12)
    trains = [(d, len(d), s) for d, s in good]
    for blob, repeat, source in garbage:
        trains.append((blob * max(1, repeat), len(blob), source))
    p = SwitchPipeline(config("fpisa", "fp32"))
    out = BatchProcessor(p, max_batch=5).process_trains(trains)
    c = p.counters
    assert c.received == c.aggregated + c.retransmitted + c.dropped_total
    assert c.received == len(good) + sum(max(1, r) if b else 1 for b, r, _ in garbage)
    assert all(dst in WORKERS and len(train) % size == 0 for dst, train, size in out)


@pytest.mark.parametrize("multicast", [False, True])
@pytest.mark.parametrize("mode,fmt", [("fpisa", "fp32"), ("fpisa-a", "bf16"), ("switchml", "fp32")])
def test_arrays_in_and_views_out_equal_reference(mode, fmt, multicast):
    """process_arrays (the shared-memory path): runs of one sender's packets
    as writable 2-D arrays (as they lie in a ring), interleaved with calls
    of the per-packet API (read-only bytes) on the same processor, with a
    batch limit small enough that the output buffer fills and is handed out
    early, and bad packets that go through the reference path. Per
    destination the datagrams and their order match the reference.
    ``multicast``: results come once for every worker (destination K, rank
    ALL_RANKS); each worker's copy with its rank written in is the
    reference's, RESULTs and RESULT_RETXs each in order."""
    rng = np.random.default_rng(5)
    stream = [(d, s) for d, s in random_stream(rng, mode, fmt, 500) if s in WORKERS]
    ref, fast = SwitchPipeline(config(mode, fmt)), SwitchPipeline(config(mode, fmt))
    expected = [o for d, s in stream for o in ref.process(d, s)]
    batch = BatchProcessor(fast, max_batch=7)
    got, i, calls = [], 0, 0
    while i < len(stream):
        j = i
        while (j + 1 < len(stream) and j + 1 - i < 12 and stream[j + 1][1] == stream[i][1]
               and len(stream[j + 1][0]) == len(stream[i][0])):
            j += 1
        run = stream[i:j + 1]
        calls += 1
        if calls % 3 == 0:  # the per-packet API in between
            got += batch.process(run)
        else:
            rows = np.array([np.frombuffer(d, np.uint8) for d, _ in run])  # writable, C order
            outputs = batch.process_arrays([(WORKERS.index(run[0][1]), rows)], multicast=multicast)
            for rank, out in outputs:
                if rank == K:
                    assert multicast and (out[:, FIELD_OFFSETS["rank"]] == ALL_RANKS).all()
                    for r in range(K):
                        copy = out.copy()
                        copy[:, FIELD_OFFSETS["rank"]] = r
                        got += [(WORKERS[r], row.tobytes()) for row in copy]
                else:
                    got += [(WORKERS[rank], row.tobytes()) for row in out]
        i = j + 1
    vt = FIELD_OFFSETS["ver_type"]
    for dst in WORKERS:
        for kind in {p[vt] for _, p in expected}:
            assert ([p for d, p in got if d == dst and p[vt] == kind]
                    == [p for d, p in expected if d == dst and p[vt] == kind])
    assert len(got) == len(expected)
    assert fast.counters.as_dict() == ref.counters.as_dict()
    assert fast.counters.completed > 10 and fast.counters.retransmitted > 0
    for a, b in zip(state(fast), state(ref)):
        assert np.array_equal(a, b)
    assert fast.recorded == ref.recorded
