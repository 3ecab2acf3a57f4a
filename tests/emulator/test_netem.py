"""Fault injection (fpisa.netem): seeded, and each fault does what it says."""

import pytest

from fpisa.netem import FaultInjector, LinkFaults


def run(faults, n=2000, step=1e-4):
    inj = FaultInjector(faults)
    out, t = [], 0.0
    for i in range(n):
        t += step
        out += inj.submit(i, t)
    out += inj.flush()
    return inj, out


def test_no_faults_is_identity():
    _, out = run(LinkFaults())
    assert out == list(range(2000))


def test_same_seed_same_faults_other_seed_differs():
    f = LinkFaults(loss=0.1, duplicate=0.1, reorder=0.1, seed=3)
    assert run(f)[1] == run(f)[1]
    assert run(f)[1] != run(f.with_seed(4))[1]


def test_loss_rate_and_counting():
    inj, out = run(LinkFaults(loss=0.2, seed=1), n=5000)
    assert inj.counters.dropped == 5000 - len(out)
    assert 0.17 < inj.counters.dropped / 5000 < 0.23
    assert out == sorted(out)


def test_duplicates_follow_their_original():
    inj, out = run(LinkFaults(duplicate=0.3, seed=2))
    assert len(out) == 2000 + inj.counters.duplicated and inj.counters.duplicated > 400
    assert sorted(set(out)) == list(range(2000))


def test_reordered_packets_come_later_but_not_much_later():
    f = LinkFaults(reorder=0.1, reorder_gap=3, seed=5)
    inj, out = run(f)
    assert sorted(out) == list(range(2000)) and out != list(range(2000))
    for position, packet in enumerate(out):
        assert position - packet <= 3 * (inj.counters.reordered + 1)
    late = sum(1 for pos, pkt in enumerate(out) if pos > pkt)
    assert late > 0


def test_held_packet_is_released_by_time_when_traffic_stops():
    inj = FaultInjector(LinkFaults(reorder=0.999999, reorder_max_ms=2.0, seed=0))
    assert inj.submit("a", 0.0) == []
    assert inj.next_deadline() == pytest.approx(0.002)
    assert inj.due(0.001) == []
    assert inj.due(0.0021) == ["a"]


def test_delay_is_constant_and_fifo():
    inj = FaultInjector(LinkFaults(delay_ms=5.0))
    assert inj.submit(1, 0.0) == [] and inj.submit(2, 0.001) == []
    assert inj.due(0.0049) == []
    assert inj.due(0.0051) == [1]
    assert inj.submit(3, 0.0061) == [2]
    assert inj.flush() == [3]


@pytest.mark.parametrize("kw", [dict(loss=1.0), dict(duplicate=-0.1), dict(reorder=2),
                                dict(delay_ms=-1), dict(reorder_gap=0), dict(reorder_max_ms=0)])
def test_bad_fault_config_is_rejected(kw):
    with pytest.raises(ValueError):
        LinkFaults(**kw)



def test_batch_loss_and_duplication():
    import numpy as np

    rows = np.arange(20000, dtype=np.uint32).view(np.uint8).reshape(-1, 4)
    injector = FaultInjector(LinkFaults(loss=0.1, duplicate=0.2, seed=5))
    assert injector.vectorizable
    out = injector.filter_rows(rows)
    c = injector.counters
    assert c.offered == 20000 and 1700 < c.dropped < 2300 and 3300 < c.duplicated < 3900
    assert out.shape[0] == 20000 - c.dropped + c.duplicated
    ids = out.view(np.uint32)[:, 0]
    assert np.all(np.diff(ids.astype(np.int64)) >= 0)  # in order, a duplicate right after its original
    assert len(set(ids.tolist())) == 20000 - c.dropped
    again = FaultInjector(LinkFaults(loss=0.1, duplicate=0.2, seed=5)).filter_rows(rows)
    assert np.array_equal(again, out)  # seeded


def test_filter_index_is_filter_rows_as_indices():
    import numpy as np

    rows = np.arange(5000, dtype=np.uint32).view(np.uint8).reshape(-1, 4)
    for faults in (LinkFaults(loss=0.1, duplicate=0.2, seed=3), LinkFaults(loss=0.3, seed=4),
                   LinkFaults(duplicate=0.5, seed=5), LinkFaults(seed=6)):
        a, b = FaultInjector(faults), FaultInjector(faults)
        for n in (0, 1, 17, 5000):  # the same draws, call after call
            index = a.filter_index(n)
            assert index.dtype.kind == "i"
            assert np.array_equal(rows[:n][index], b.filter_rows(rows[:n]))
        assert a.counters.as_dict() == b.counters.as_dict()


def test_batch_faults_refuse_reordering_and_delay():
    import numpy as np

    for faults in (LinkFaults(reorder=0.1), LinkFaults(delay_ms=1.0)):
        injector = FaultInjector(faults)
        assert not injector.vectorizable
        with pytest.raises(ValueError, match="packet by packet"):
            injector.filter_rows(np.zeros((3, 4), np.uint8))
        with pytest.raises(ValueError, match="packet by packet"):
            injector.filter_index(3)


def test_filter_masks_draw_each_receivers_faults_like_a_unicast_copy():
    import numpy as np

    n, K = 20000, 3
    injector = FaultInjector(LinkFaults(loss=0.1, duplicate=0.2, seed=8))
    masks, again = injector.filter_masks(n, K)
    assert masks.dtype == again.dtype == np.uint64 and masks.shape == again.shape == (n,)
    assert not np.any(again & ~masks)  # only a received packet comes twice
    assert not np.any(masks >> np.uint64(K))
    got = [(masks >> np.uint64(r)) & np.uint64(1) for r in range(K)]
    twice = [(again >> np.uint64(r)) & np.uint64(1) for r in range(K)]
    for r in range(K):  # each receiver: ~10% lost, ~20% of the rest twice
        assert 0.085 < 1 - got[r].mean() < 0.115
        assert 0.18 < twice[r].sum() / got[r].sum() < 0.22
    lost = sum(int(n - g.sum()) for g in got)
    c = injector.counters
    assert (c.offered, c.dropped, c.duplicated) == (n * K, lost, sum(int(t.sum()) for t in twice))
    # the receivers' draws are independent: all three lose a packet ~0.1% of the time
    assert np.count_nonzero(masks == 0) < 0.004 * n
    again_masks, again_twice = FaultInjector(LinkFaults(loss=0.1, duplicate=0.2, seed=8)).filter_masks(n, K)
    assert np.array_equal(again_masks, masks) and np.array_equal(again_twice, again)  # seeded
    clean = FaultInjector(LinkFaults(seed=1))
    m, a = clean.filter_masks(5, 64)
    assert (m == np.uint64(2**64 - 1)).all() and not a.any()
    with pytest.raises(ValueError, match="1..64 receivers"):
        clean.filter_masks(5, 65)
    with pytest.raises(ValueError, match="packet by packet"):
        FaultInjector(LinkFaults(reorder=0.1)).filter_masks(5, 2)


def test_multicast_faults_reach_each_worker_as_drawn():
    """The switch's multicast with loss and duplication through the rings:
    each worker gets the packets of its bit in the drawn masks, and a second
    copy of those of its bit in the duplicates' masks."""
    import numpy as np

    from emulator.server import _send_multicast
    from fpisa.shm import ShmFabric

    K, m = 3, 300
    rows = np.arange(m * 8, dtype=np.uint32).view(np.uint8).reshape(m, 32)
    faults = LinkFaults(loss=0.2, duplicate=0.2, seed=11)
    masks, again = FaultInjector(faults).filter_masks(m, K)
    injector = FaultInjector(faults)
    with ShmFabric.create(K, 64, 2 * m) as fabric:
        switch = fabric.switch_transport()
        workers = [fabric.worker_transport(r) for r in range(K)]
        _send_multicast(switch.send_multicast, rows, injector, K)
        for r, w in enumerate(workers):
            bit = np.uint64(1 << r)
            expected = [rows[i].tobytes() for i in np.flatnonzero(masks & bit)]
            expected += [rows[i].tobytes() for i in np.flatnonzero(again & bit)]
            got = [d for d, _ in w.recv_batch(0, 4 * m)]
            assert got == expected
            assert len(got) != m  # some lost, some twice: the check has teeth
        _send_multicast(switch.send_multicast, rows[:2], None, K)
        assert all([d for d, _ in w.recv_batch(0)] == [rows[0].tobytes(), rows[1].tobytes()] for w in workers)
