"""A paced link: datagrams leave a sender no faster than a link of a given rate.

:class:`LinkPacer` is the link: it charges every datagram the bytes it
occupies on an Ethernet line (:func:`line_bytes_of_datagram`: Ethernet +
IPv4 + UDP headers, padding to the minimum frame, FCS, preamble and
inter-frame gap: the same bytes ``hosts/study/host_cores.py`` counts) and
gives each its departure time: the moment its last bit has left, with the
link sending back to back at ``gbps`` whenever it has something queued::

    departure = max(previous departure, time it was sent) + line_bytes * 8 / rate

:class:`PacedTransport` wraps any :mod:`fpisa.net` / :mod:`fpisa.shm`
transport and holds what is sent (``send``, ``send_batch``, ``send_train``)
in a queue, in order, handing each datagram to the wrapped transport only
once its departure time has passed: the sender's NIC queue and its link.
Sending never blocks; due datagrams leave from the transport's own calls
(every receive call first sends what is due and waits no longer than the
next departure), so a sender that is descheduled for a while sends the
overdue datagrams when it runs again, the link's timing unchanged: no
datagram reaches the switch before the link would have delivered it, and
none later than the sender's next call. :meth:`PacedTransport.drain` sends
everything queued, waiting for the last departure.

Only sending is paced. For an allreduce worker that paces the receive
direction too: the switch sends a worker a result only when every worker's
packet of that slot has arrived, so results reach a worker no faster than
the slowest worker sends (the links are full duplex, each direction at
``gbps``).

The clock is injectable (tests use a virtual clock).
"""

from __future__ import annotations

import collections
import math
import time
from typing import Callable, Hashable, Iterable

import numpy as np

from .protocol import assemble_packets

__all__ = [
    "LinkPacer",
    "PacedTransport",
    "line_bytes_of_datagram",
    "DATAGRAM_OVERHEAD_BYTES",
    "LINE_OVERHEAD_BYTES",
]

#: Ethernet (14) + IPv4 (20) + UDP (8) headers around a datagram
DATAGRAM_OVERHEAD_BYTES = 14 + 20 + 8
#: what a line spends per frame besides the frame: FCS 4 + preamble/SFD 8 + gap 12
LINE_OVERHEAD_BYTES = 4 + 8 + 12
#: Ethernet's minimum frame without its FCS (shorter frames are padded)
_MIN_FRAME_NO_FCS = 60


def line_bytes_of_datagram(datagram_bytes: int, line_overhead: bool = True) -> int:
    """Bytes one UDP datagram of ``datagram_bytes`` occupies on an Ethernet line
    (``line_overhead=False``: the frame without FCS, preamble, gap, as a Linux
    shaper counts it)."""
    if isinstance(datagram_bytes, bool) or not isinstance(datagram_bytes, (int, np.integer)) \
            or datagram_bytes < 0:
        raise ValueError(f"datagram size must be an int >= 0, got {datagram_bytes!r}")
    frame = max(_MIN_FRAME_NO_FCS, DATAGRAM_OVERHEAD_BYTES + int(datagram_bytes))
    return frame + (LINE_OVERHEAD_BYTES if line_overhead else 0)


def _check_rate(gbps) -> float:
    try:
        value = float(gbps)
    except (TypeError, ValueError):
        raise ValueError(f"link rate must be a number of Gb/s, got {gbps!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"link rate must be a positive, finite number of Gb/s, got {gbps!r}")
    return value


class LinkPacer:
    """One direction of a link of ``gbps`` Gb/s: departure times of what is sent.

    ``bytes`` and ``packets`` count what was sent over it.
    """

    def __init__(self, gbps: float, *, line_overhead: bool = True):
        self.gbps = _check_rate(gbps)
        self.line_overhead = bool(line_overhead)
        self.bytes_per_s = self.gbps * 1e9 / 8
        #: when the link has sent everything so far
        self.free_at = -math.inf
        self.bytes = 0
        self.packets = 0
        #: time the link had nothing to send between the first send and the last departure
        self.idle_s = 0.0
        self.idle_periods = 0
        #: the longest idle period: (seconds, when it began after the first send, packets sent before)
        self.longest_idle = (0.0, 0.0, 0)
        self.first_send: float | None = None

    def line_bytes(self, datagram_bytes: int) -> int:
        return line_bytes_of_datagram(datagram_bytes, self.line_overhead)

    def depart(self, datagram_bytes: int, count: int, now: float) -> np.ndarray:
        """Departure times of ``count`` datagrams of ``datagram_bytes`` sent at ``now``."""
        each = self.line_bytes(datagram_bytes) / self.bytes_per_s
        if now > self.free_at:
            if math.isfinite(self.free_at):
                gap = now - self.free_at
                self.idle_s += gap
                self.idle_periods += 1
                if gap > self.longest_idle[0]:
                    self.longest_idle = (gap, self.free_at - self.first_send, self.packets)
            else:
                self.first_send = now
        start = max(self.free_at, now)
        times = start + each * np.arange(1, count + 1)
        self.free_at = float(times[-1])
        self.bytes += count * self.line_bytes(datagram_bytes)
        self.packets += count
        return times

    def stats(self) -> dict:
        return {"link_gbps": self.gbps, "line_overhead": self.line_overhead,
                "line_bytes": self.bytes, "packets": self.packets, "idle_s": self.idle_s,
                "idle_periods": self.idle_periods, "longest_idle": list(self.longest_idle),
                "busy_s": (self.free_at - self.first_send) if self.first_send is not None else 0.0}


class PacedTransport:
    """A transport whose sends wait in a queue for their departure from a
    :class:`LinkPacer`'s link (module docstring); receiving and everything
    else is the wrapped transport's. What is sent must not be modified
    afterwards (the queue keeps references)."""

    def __init__(self, transport, pacer: LinkPacer, *, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep):
        if not isinstance(pacer, LinkPacer):
            raise ValueError(f"PacedTransport needs a LinkPacer, got {type(pacer).__name__}")
        self.transport = transport
        self.pacer = pacer
        self._clock, self._sleep = clock, sleep
        #: (departure times, how to send, address, datagrams, size) in sending order
        self._queue: collections.deque = collections.deque()
        #: datagrams handed on late: after the sender's next call came past their departure
        self.late = 0
        self.lateness_s = 0.0

    def __getattr__(self, name):
        # fileno, address, ring_stats, ...: only what the wrapped transport has
        # (hasattr() stays truthful, e.g. for recv_arrays)
        return getattr(self.__dict__["transport"], name)

    # -- the queue ------------------------------------------------------------------

    def _enqueue(self, kind: str, address, datagrams, size: int, count: int) -> None:
        now = self._clock()
        times = self.pacer.depart(size, count, now)
        self._queue.append([times, kind, address, datagrams, size])
        self.release(now)

    def release(self, now: float | None = None) -> int:
        """Hand on every datagram whose departure time has passed; returns how many."""
        now = self._clock() if now is None else now
        sent = 0
        queue = self._queue
        while queue and queue[0][0][0] <= now:
            times, kind, address, datagrams, size = queue[0]
            due = int(np.searchsorted(times, now, side="right"))
            late = now - times[:due]
            self.late += int(np.count_nonzero(late > 1e-3))
            self.lateness_s = max(self.lateness_s, float(late.max()))
            if kind == "batch":
                self.transport.send_batch(datagrams[:due])
                rest = datagrams[due:]
            elif kind == "rows":
                self.transport.send_train(address, datagrams[:due], size)
                rest = datagrams[due:]
            else:  # bytes back to back
                self.transport.send_train(address, datagrams[:due * size], size)
                rest = datagrams[due * size:]
            sent += due
            if due == len(times):
                queue.popleft()
            else:
                queue[0][0], queue[0][3] = times[due:], rest
        return sent

    def next_departure(self) -> float | None:
        return float(self._queue[0][0][0]) if self._queue else None

    @property
    def queued(self) -> int:
        return sum(len(item[0]) for item in self._queue)

    def _timeout(self, timeout: float | None) -> float | None:
        nxt = self.next_departure()
        if nxt is None:
            return timeout
        wait = max(0.0, nxt - self._clock())
        return wait if timeout is None else min(timeout, wait)

    def drain(self) -> None:
        """Send everything queued, waiting for each departure."""
        while self._queue:
            wait = self.next_departure() - self._clock()
            if wait > 0:
                self._sleep(wait)
            self.release()

    # -- sending ----------------------------------------------------------------------

    def send(self, address: Hashable, data: bytes) -> None:
        self.send_batch([(address, data)])

    def send_batch(self, items: Iterable[tuple[Hashable, bytes]]) -> None:
        items = list(items)
        # one queue entry per run of equally long datagrams (the usual case: one)
        at = 0
        while at < len(items):
            size = len(items[at][1])
            end = at + 1
            while end < len(items) and len(items[end][1]) == size:
                end += 1
            self._enqueue("batch", None, items[at:end], size, end - at)
            at = end

    def send_train(self, address: Hashable, datagrams, size: int) -> None:
        """``datagrams``: bytes of back-to-back datagrams of ``size`` bytes, or
        (shared memory) a 2-D uint8 array, one datagram per row."""
        if isinstance(datagrams, np.ndarray) and datagrams.ndim == 2:
            if datagrams.shape[0]:
                self._enqueue("rows", address, datagrams, size, datagrams.shape[0])
            return
        data = bytes(datagrams)
        full, tail = divmod(len(data), size) if size > 0 else (0, len(data))
        if full:
            self._enqueue("bytes", address, data[: full * size], size, full)
        if tail:
            self.send_batch([(address, data[full * size:])])

    # -- receiving: first send what is due, wait no longer than the next departure ------

    def recv_batch(self, timeout: float | None, max_packets: int = 256):
        self.release()
        got = self.transport.recv_batch(self._timeout(timeout), max_packets)
        self.release()
        return got

    def stats(self) -> dict:
        return {**self.pacer.stats(), "late_datagrams": self.late, "max_lateness_s": self.lateness_s}

    def close(self) -> None:
        self.transport.close()


def _paced_receive(name: str):
    def receive(self, timeout: float | None, max_packets: int = 256, **options):
        self.release()
        got = getattr(self.transport, name)(self._timeout(timeout), max_packets, **options)
        self.release()
        return got
    receive.__name__ = name
    receive.__doc__ = f"The wrapped transport's ``{name}``, sending what is due before and after."
    return receive


def _paced_send_rows(self, address: Hashable, rows: np.ndarray, index: np.ndarray) -> None:
    """``rows[index]``, paced like :meth:`PacedTransport.send_train` (a copy is
    queued: the caller may reuse ``rows``)."""
    self.send_train(address, rows[index], rows.shape[1])


def _paced_send_packets(self, address: Hashable, heads: np.ndarray, payloads: np.ndarray, tail: np.ndarray,
                        index: np.ndarray) -> None:
    """The datagrams of ``ShmTransport.send_packets``, assembled (a copy) and
    paced like :meth:`PacedTransport.send_train`."""
    rows = assemble_packets(heads, payloads, tail, index)
    self.send_train(address, rows, rows.shape[1])


class _Optional:
    """``recv_trains`` / ``recv_arrays`` / ``send_rows`` / ``send_packets`` exist on a
    PacedTransport only where the wrapped transport has them (the worker
    picks its receive and send paths by hasattr)."""

    def __init__(self, name: str, paced=None):
        self.name, self.paced = name, paced or _paced_receive(name)

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        if not hasattr(obj.transport, self.name):
            raise AttributeError(self.name)
        return self.paced.__get__(obj, owner)


PacedTransport.recv_trains = _Optional("recv_trains")
PacedTransport.recv_arrays = _Optional("recv_arrays")
PacedTransport.send_rows = _Optional("send_rows", _paced_send_rows)
PacedTransport.send_packets = _Optional("send_packets", _paced_send_packets)
