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


def test_multicast_faults_are_drawn_per_worker_as_for_unicast_copies():
    """The switch's multicast with loss and duplication: each worker gets
    what a unicast copy through its own link would have (the same draws, in
    rank order), a duplicate as a second slot for the ranks that get one."""
    import numpy as np

    from emulator.server import _send_multicast
    from fpisa.shm import ShmFabric

    K, m = 3, 300
    rows = np.arange(m * 8, dtype=np.uint32).view(np.uint8).reshape(m, 32)
    faults = LinkFaults(loss=0.2, duplicate=0.2, seed=11)
    twin = FaultInjector(faults)
    expected = [sorted(row.tobytes() for row in rows[twin.filter_index(m)]) for _ in range(K)]
    injector = FaultInjector(faults)
    with ShmFabric.create(K, 64, 2 * m) as fabric:
        switch = fabric.switch_transport()
        workers = [fabric.worker_transport(r) for r in range(K)]
        _send_multicast(switch.send_multicast, rows, injector, K)
        for r, w in enumerate(workers):
            got = sorted(d for d, _ in w.recv_batch(0, 4 * m))
            assert got == expected[r]
            assert len(got) != m  # some lost, some twice: the check has teeth
        assert injector.counters.as_dict() == twin.counters.as_dict()
        _send_multicast(switch.send_multicast, rows[:2], None, K)
        assert all([d for d, _ in w.recv_batch(0)] == [rows[0].tobytes(), rows[1].tobytes()] for w in workers)
