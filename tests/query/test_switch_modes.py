"""The query wire modes in the switch: float min/max on bit patterns, the
group table's key claim, int32 COUNT in an fp16 job (another packet length
than the data mode's), through the reference path and the batch fast path
(which hands these modes to the reference path)."""

import numpy as np
import pytest

from emulator.fastpath import BatchProcessor
from emulator.pipeline import SwitchConfig, SwitchPipeline
from fpisa._table_kernels import from_ordered_key, key_claim_winners, ordered_key
from fpisa.job import JobSpec
from fpisa.protocol import Header, MsgType, WireMode, format_code, pack, pool_index, unpack

K, E, POOL = 3, 8, 4
WORKERS = tuple(("10.0.0.1", 5000 + r) for r in range(K))
EXTRA = (WireMode.KEY_CLAIM, WireMode.SWITCHML, WireMode.FLOAT_MIN, WireMode.FLOAT_MAX)


def make(fmt="fp32", mode="fpisa"):
    job = JobSpec(mode=mode, fmt=fmt, num_workers=K, packet_elements=E, window=POOL,
                  extra_wire_modes=EXTRA)
    return SwitchPipeline(SwitchConfig(job, WORKERS, record_orders=True))


def packet(rank, wire_mode, values, fmt="fp32", slot=0, pid=0):
    h = Header(MsgType.DATA, wire_mode, format_code(fmt), 0, 0, rank, K, E, pool_index(slot, 0), 0, pid)
    return pack(h, np.asarray(values))


def specials(storage_bits):
    if storage_bits == 32:
        x = np.array([0.0, -0.0, 1.5, -1.5, np.inf, -np.inf, 1e-45, -3e38], np.float32)
        return np.concatenate([x.view(np.uint32), np.array([0x7FC00000, 0xFFC00000], np.uint32)])
    x = np.array([0.0, -0.0, 1.5, -1.5, np.inf, -np.inf, 6e-8, -6e4], np.float16)
    return np.concatenate([x.view(np.uint16), np.array([0x7E00, 0xFE00], np.uint16)])


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16"])
def test_ordered_key_is_the_float_order(fmt):
    S = 32 if fmt == "fp32" else 16
    bits = specials(S)
    keys = ordered_key(bits, S)
    assert np.array_equal(from_ordered_key(keys, S), bits.astype(np.int64))
    if fmt != "bf16":
        f = bits.view(np.float32 if S == 32 else np.float16).astype(np.float64)
        finite = ~np.isnan(f)
        idx = np.flatnonzero(finite)
        for i in idx:
            for j in idx:
                if f[i] < f[j]:
                    assert keys[i] < keys[j]
        # +NaN above everything, -NaN below
        assert keys[-2] == keys.max() and keys[-1] == keys.min()


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("fast", [False, True])
def test_min_max_claim_and_count_in_the_switch(fmt, fast):
    rng = np.random.default_rng(3)
    p = make(fmt)
    send = BatchProcessor(p).process if fast else (lambda pkts: sum((p.process(*x) for x in pkts), []))
    S = 32 if fmt == "fp32" else 16
    dtype = np.uint32 if S == 32 else np.uint16
    values = np.stack([rng.permutation(np.resize(specials(S), E)).astype(dtype) for _ in range(K)])
    claims = rng.integers(-3, 4, (K, E)).astype(np.int32)  # 0: no key
    counts = rng.integers(0, 1000, (K, E)).astype(np.int32)
    order = [1, 2, 0]
    cases = [(WireMode.FLOAT_MIN, values, 1), (WireMode.FLOAT_MAX, values, 2),
             (WireMode.KEY_CLAIM, claims, 3), (WireMode.SWITCHML, counts, 0)]
    for wm, vals, slot in cases:
        out = send([(packet(r, wm, vals[r], fmt, slot=slot, pid=slot), WORKERS[r]) for r in order])
        assert len(out) == K
        headers = [unpack(pkt) for _, pkt in out]
        got = headers[0][1]
        assert all(np.array_equal(h[1], got) for h in headers)
        keys = ordered_key(values, S)
        if wm is WireMode.FLOAT_MIN:
            assert np.array_equal(got.astype(np.int64), from_ordered_key(keys.min(axis=0), S))
        elif wm is WireMode.FLOAT_MAX:
            assert np.array_equal(got.astype(np.int64), from_ordered_key(keys.max(axis=0), S))
        elif wm is WireMode.KEY_CLAIM:
            expected = key_claim_winners(claims, np.tile(order, (E, 1)))
            assert np.array_equal(got.astype(np.int64), expected)
            # the first nonzero arrival wins
            for j in range(E):
                nonzero = [claims[r, j] for r in order if claims[r, j]]
                assert got[j] == (nonzero[0] if nonzero else 0)
        else:
            assert np.array_equal(got, counts.astype(np.int64).sum(axis=0))
    assert p.counters.completed == 4 and p.counters.dropped_total == 0
    assert [m for _, m, _ in p.recorded] == [int(c[0]) for c in cases]


def test_bad_query_packets_are_counted_drops():
    p = make("fp16")
    ok = packet(0, WireMode.FLOAT_MIN, np.zeros(E, np.uint16), "fp16")
    assert p.process(ok[:-1], WORKERS[0]) == []  # truncated
    assert p.process(packet(0, WireMode.FLOAT_MIN, np.zeros(E, np.uint16), "fp32"), WORKERS[0]) == []
    bad_mode = bytearray(ok)
    bad_mode[1] = 7
    assert p.process(bytes(bad_mode), WORKERS[0]) == []
    # a query mode the job does not use
    plain = SwitchPipeline(SwitchConfig(JobSpec(num_workers=K, packet_elements=E, window=POOL), WORKERS))
    assert plain.process(packet(0, WireMode.KEY_CLAIM, np.zeros(E, np.int32)), WORKERS[0]) == []
    assert p.counters.dropped_total == 3 and plain.counters.dropped == {"config_mismatch": 1}
    assert set(p.counters.dropped) == {"malformed:bad_length", "config_mismatch",
                                      "malformed:bad_type_or_mode"}
