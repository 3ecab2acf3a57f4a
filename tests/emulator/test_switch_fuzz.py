"""Hypothesis: no byte string, however mangled, crashes the switch, and
every received packet is accounted for exactly once (aggregated,
retransmitted or dropped with a reason)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from emulator.pipeline import DROP_REASONS, SwitchConfig, SwitchPipeline
from fpisa.job import JobSpec, mode_info
from fpisa.protocol import Header, MsgType, pack, pool_index

K, E, POOL = 3, 4, 2
WORKERS = tuple(("127.0.0.1", 6000 + r) for r in range(K))


def pipeline(mode):
    job = JobSpec(mode=mode, num_workers=K, packet_elements=E, window=POOL)
    return SwitchPipeline(SwitchConfig(job, WORKERS, record_orders=True))


def accounted(p):
    c = p.counters
    assert c.received == c.aggregated + c.retransmitted + c.dropped_total
    for reason in c.dropped:
        assert reason in DROP_REASONS or reason.startswith("malformed:"), reason


def valid_packet(rank, slot, shadow, pid, mode):
    wm = mode_info(mode).data_wire_mode
    payload = np.arange(E, dtype=np.uint32 if wm.is_float else np.int32)
    return pack(Header(MsgType.DATA, wm, 0, 0, 0, rank, K, E, pool_index(slot, shadow), 0, pid), payload)


packets = st.one_of(
    st.binary(max_size=80),
    # a valid packet with some bytes overwritten and/or truncated/extended
    st.tuples(st.integers(0, K - 1), st.integers(0, POOL + 1), st.integers(0, 1), st.integers(0, 9),
              st.lists(st.tuples(st.integers(0, 40), st.integers(0, 255)), max_size=4),
              st.integers(-3, 3)),
)


def materialize(item, mode):
    if isinstance(item, bytes):
        return item
    rank, slot, shadow, pid, edits, resize = item
    raw = bytearray(valid_packet(rank, min(slot, POOL - 1), shadow, pid, mode))
    for at, byte in edits:
        if at < len(raw):
            raw[at] = byte
    if resize < 0:
        raw = raw[:resize]
    else:
        raw += bytes(resize)
    return bytes(raw)


@given(st.sampled_from(["fpisa", "fpisa-a", "switchml"]),
       st.lists(st.tuples(packets, st.sampled_from(WORKERS + (("10.1.1.1", 1),))), max_size=40))
def test_fuzzed_packets_never_crash_and_are_counted(mode, stream):
    p = pipeline(mode)
    for item, source in stream:
        out = p.process(materialize(item, mode), source)
        assert isinstance(out, list)
        for dst, pkt in out:
            assert dst in WORKERS and isinstance(pkt, bytes)
    accounted(p)


@given(st.lists(st.tuples(st.integers(0, K - 1), st.integers(0, POOL - 1), st.integers(0, 1)),
                max_size=60))
def test_valid_packets_in_any_order_are_counted(stream):
    p = pipeline("fpisa")
    for rank, slot, shadow in stream:
        p.process(valid_packet(rank, slot, shadow, 0, "fpisa"), WORKERS[rank])
    accounted(p)
    assert p.counters.multicast == K * p.counters.completed
