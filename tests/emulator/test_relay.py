"""emulator.server.relay's shared-memory path: results held back while more
packets wait in the rings, sent once the rings are drained, in order, and
never lost (not even when the loop is told to stop while it holds some)."""

import numpy as np
import pytest

from emulator import server
from emulator.server import relay

K = 3  # destination K: every worker (the multicast ring)


class FakeRings:
    """A transport like ShmSwitchTransport: ``batches`` wait in the rings
    (one per recv_arrays call); each is a list of (rank, rows)."""

    def __init__(self, batches, stop_after=None):
        self.batches = list(batches)
        self.peeked = 0  # batches taken but not released
        self.multicast, self.unicast = [], []
        self.calls = 0
        self.stop_after = stop_after

    def recv_arrays(self, timeout, max_packets):
        self.release_arrays()
        self.calls += 1
        if not self.batches:
            return []
        self.peeked = 1
        return self.batches.pop(0)

    def release_arrays(self):
        self.peeked = 0

    def waiting(self):
        return len(self.batches) + self.peeked

    def send_multicast(self, rows, index=None, masks=None):
        self.multicast.append(rows.copy() if index is None else rows[index].copy())

    def send_train(self, address, rows, size):
        self.unicast.append((address, rows.copy()))

    def send_rows(self, address, rows, index):
        self.unicast.append((address, rows[index].copy()))

    def should_stop(self):
        return not self.batches if self.stop_after is None else self.calls >= self.stop_after


def rows(*values):
    return np.array([[v] * 4 for v in values], np.uint8)


def kernel(buffer):
    """A stand-in for BatchProcessor.process_arrays: every received row is
    one result for everyone; the rows handed out are views of ``buffer``,
    overwritten by the next call (as the kernel's output buffer is)."""

    def process(received, multicast=False):
        assert multicast
        out = np.concatenate([v for _, v in received])
        buffer[: out.shape[0]] = out
        return [(K, buffer[: out.shape[0]]), (1, buffer[:1])]

    return process


@pytest.mark.parametrize("hold_rows,expected_multicasts", [(256, 1), (0, 3), (3, 2)])
def test_results_are_held_while_packets_wait_and_sent_in_order(hold_rows, expected_multicasts):
    batches = [[(0, rows(1, 2))], [(1, rows(3))], [(2, rows(4, 5))]]
    t = FakeRings(batches)
    relay(t, None, process_arrays=kernel(np.zeros((8, 4), np.uint8)), addresses=["w0", "w1", "w2"],
          should_stop=t.should_stop, hold_rows=hold_rows)
    assert len(t.multicast) == expected_multicasts
    # every result once, in arrival order, whatever the buffer held later
    assert np.concatenate(t.multicast)[:, 0].tolist() == [1, 2, 3, 4, 5]
    # the unicast stream to rank 1: one row per batch, in order
    assert [a for a, _ in t.unicast] == ["w1"] * len(t.unicast)
    assert np.concatenate([r for _, r in t.unicast])[:, 0].tolist() == [1, 3, 4]


def test_held_results_are_sent_when_the_loop_stops(monkeypatch):
    # told to stop right after the first batch, while it holds that batch's
    # results because two more batches wait
    monkeypatch.setattr(server, "_CHECK_INTERVAL_S", 0.0)  # look at should_stop every pass
    batches = [[(0, rows(7))], [(1, rows(8))], [(2, rows(9))]]
    t = FakeRings(batches, stop_after=1)
    relay(t, None, process_arrays=kernel(np.zeros((8, 4), np.uint8)), addresses=["w0", "w1", "w2"],
          should_stop=t.should_stop, hold_rows=256)
    assert t.calls == 1 and len(t.batches) == 2  # it stopped holding the first batch's results
    assert [r[:, 0].tolist() for r in t.multicast] == [[7]]
    assert [(a, r[:, 0].tolist()) for a, r in t.unicast] == [("w1", [7])]
