"""fpisa.pacing: a paced sender never gets ahead of its link, and keeps it busy."""

import math

import numpy as np
import pytest

from fpisa.pacing import LinkPacer, PacedTransport, line_bytes_of_datagram


class Clock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += max(0.0, s)


class Recorder:
    """A transport that records when (on the virtual clock) each datagram left."""

    def __init__(self, clock):
        self.clock, self.out = clock, []  # (time, bytes of one datagram)

    def send_train(self, address, datagrams, size):
        if isinstance(datagrams, np.ndarray):
            self.out += [(self.clock(), bytes(r)) for r in datagrams]
        else:
            self.out += [(self.clock(), datagrams[i:i + size]) for i in range(0, len(datagrams), size)]

    def send_batch(self, items):
        self.out += [(self.clock(), bytes(d)) for _, d in items]

    def recv_trains(self, timeout, max_packets=256):
        self.clock.sleep(timeout if timeout is not None else 0.0)
        return []

    def close(self):
        pass


def paced(gbps, **kw):
    clock = Clock()
    inner = Recorder(clock)
    return clock, inner, PacedTransport(inner, LinkPacer(gbps, **kw), clock=clock, sleep=clock.sleep)


def assert_never_ahead(inner, pacer, t0):
    """By every hand-over time t, at most rate x (t - t0) line bytes were handed on."""
    times = np.array([t for t, _ in inner.out])
    sizes = np.array([pacer.line_bytes(len(d)) for _, d in inner.out])
    assert np.all(np.diff(times) >= 0)
    allowed = pacer.bytes_per_s * (times - t0) + 1e-2  # float rounding: far below one byte
    assert np.all(np.cumsum(sizes) <= allowed)


def test_line_bytes_count_headers_padding_and_the_line():
    assert line_bytes_of_datagram(16 + 255 * 4) == 14 + 20 + 8 + 16 + 1020 + 24
    assert line_bytes_of_datagram(0) == 60 + 24  # padded to Ethernet's minimum
    assert line_bytes_of_datagram(0, line_overhead=False) == 60
    with pytest.raises(ValueError):
        line_bytes_of_datagram(-1)


@pytest.mark.parametrize("gbps", [0.05, 1.0, 40.0])
def test_a_backlogged_sender_gets_exactly_the_link_rate_and_never_more(gbps):
    clock, inner, t = paced(gbps)
    rows = np.zeros((32, 1036), np.uint8)
    t0 = clock()
    for _ in range(200):
        if t.queued < 256:  # a window of packets in flight
            t.send_train("switch", rows, 1036)
        t.recv_trains(1e-3)  # the worker waits for results, at most until the next departure
    t.drain()
    assert_never_ahead(inner, t.pacer, t0)
    sent = sum(t.pacer.line_bytes(len(d)) for _, d in inner.out)
    elapsed = inner.out[-1][0] - t0
    assert sent == t.pacer.bytes
    # the link was never idle: achieved rate equals the link rate
    assert sent / elapsed == pytest.approx(t.pacer.bytes_per_s, rel=1e-6)
    assert t.pacer.idle_s == 0 and t.pacer.idle_periods == 0


def test_a_descheduled_sender_sends_late_but_never_ahead_and_loses_no_link_time():
    clock, inner, t = paced(0.1)
    rows = np.zeros((64, 1036), np.uint8)
    t0 = clock()
    t.send_train("switch", rows, 1036)  # 64 x 1102 B at 0.1 Gb/s: 5.6 ms of line time
    clock.t += 0.004  # the process does not run for 4 ms
    t.recv_trains(0.0)
    assert t.late > 0  # what was due in those 4 ms left at once, late
    n_due = len(inner.out)
    assert n_due == int(0.004 * t.pacer.bytes_per_s // 1102)
    t.send_train("switch", rows, 1036)  # queued behind the rest: the link stays busy
    t.drain()
    assert_never_ahead(inner, t.pacer, t0)
    assert inner.out[-1][0] == pytest.approx(t0 + 128 * 1102 / t.pacer.bytes_per_s, rel=1e-9)
    assert t.pacer.idle_s == 0


def test_an_idle_link_is_counted_and_not_made_up_for():
    clock, inner, t = paced(1.0)
    t.send("switch", b"x" * 1000)
    t.drain()
    clock.t += 0.01  # nothing to send for 10 ms
    t.send("switch", b"x" * 1000)
    t.drain()
    assert t.pacer.idle_periods == 1
    assert t.pacer.idle_s == pytest.approx(0.01, rel=1e-9)
    each = t.pacer.line_bytes(1000) / t.pacer.bytes_per_s
    assert inner.out[1][0] - inner.out[0][0] == pytest.approx(0.01 + each, rel=1e-9)


def test_order_kept_and_every_datagram_delivered_once():
    clock, inner, t = paced(0.5)
    datagrams = [bytes([i]) * (100 + (i % 3)) for i in range(50)]
    t.send_batch([("s", d) for d in datagrams[:20]])
    t.send_train("s", b"".join(datagrams[20:21] * 5) + b"tail", len(datagrams[20]))  # a shorter last one
    t.send("s", datagrams[21])
    t.drain()
    got = [d for _, d in inner.out]
    assert got == datagrams[:20] + [datagrams[20]] * 5 + [b"tail", datagrams[21]]
    assert t.queued == 0


def test_the_wrapper_has_exactly_the_wrapped_transports_receive_calls():
    class Plain:
        def recv_batch(self, timeout, max_packets=256):
            return []

    t = PacedTransport(Plain(), LinkPacer(1.0))
    assert not hasattr(t, "recv_trains") and not hasattr(t, "recv_arrays") and not hasattr(t, "send_rows")
    assert t.recv_batch(0.0) == []
    assert hasattr(PacedTransport(Recorder(Clock()), LinkPacer(1.0)), "recv_trains")


def test_send_rows_is_paced_like_send_train_where_the_transport_has_it():
    import numpy as np

    from fpisa.shm import ShmFabric

    rows = np.arange(5 * 40, dtype=np.uint8).reshape(5, 40)
    with ShmFabric.create(1, 64, 8) as fabric:
        switch, worker = fabric.switch_transport(), fabric.worker_transport(0)
        t = PacedTransport(worker, LinkPacer(1.0))
        index = np.array([4, 1, 1], np.int64)
        t.send_rows(fabric.switch_address, rows, index)
        rows[:] = 0  # a queued send owns a copy
        t.drain()
        assert [d for d, _ in switch.recv_batch(0)] == [bytes(range(160, 200)), bytes(range(40, 80)),
                                                        bytes(range(40, 80))]
        assert t.pacer.stats()["packets"] == 3


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "fast", None])
def test_a_bad_rate_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="link rate"):
        LinkPacer(bad)


def test_a_pacer_is_required():
    with pytest.raises(ValueError, match="LinkPacer"):
        PacedTransport(Recorder(Clock()), 1.0)
