"""Seeded fault injection on a link: loss, duplication, reordering, delay.

The kernel on the project's machines has no netem qdisc, so the switch
emulator and the worker hosts inject faults themselves, each on the packets
it sends (so "per direction" means: the workers' injectors act on
worker -> switch, the switch's injector on switch -> worker). It lives next
to the wire format in ``fpisa`` because both ``emulator`` and ``hosts`` use
it and neither may import the other.

Semantics, per packet offered to :meth:`FaultInjector.submit`, in order:
1. with probability ``loss`` it is dropped;
2. with probability ``duplicate`` a second copy follows it;
3. each copy, with probability ``reorder``, is *held back* and released
   after ``reorder_gap`` later packets have passed (or ``reorder_max_ms``
   elapsed, so a held packet cannot live forever when traffic stops);
4. every packet that leaves is delayed by ``delay_ms`` (constant, FIFO).
Every copy is delivered when it comes out, however late, as a network
would: the switch drops DATA copies older than the round they belong to by
their packet ids, and workers de-duplicate results (docs/protocol.md,
"late duplicates").
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass

import numpy as np
from numba import njit

from .counters import Counters
from typing import Any

__all__ = ["LinkFaults", "FaultInjector", "add_fault_arguments", "faults_from_args"]


@dataclass(frozen=True)
class LinkFaults:
    """Faults applied to the packets one sender puts on its link."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay_ms: float = 0.0
    #: a reordered packet is released after this many later packets ...
    reorder_gap: int = 3
    #: ... or after this long, whichever comes first
    reorder_max_ms: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            p = getattr(self, name)
            if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"{name} probability must be in [0, 1), got {p!r}")
        if not self.delay_ms >= 0.0:
            raise ValueError(f"delay_ms must be >= 0, got {self.delay_ms!r}")
        if not (isinstance(self.reorder_gap, int) and self.reorder_gap >= 1):
            raise ValueError(f"reorder_gap must be an int >= 1, got {self.reorder_gap!r}")
        if not self.reorder_max_ms > 0.0:
            raise ValueError(f"reorder_max_ms must be > 0, got {self.reorder_max_ms!r}")

    @property
    def active(self) -> bool:
        return bool(self.loss or self.duplicate or self.reorder or self.delay_ms)

    def with_seed(self, seed: int) -> "LinkFaults":
        """The same faults with another seed (one stream per sender)."""
        return LinkFaults(self.loss, self.duplicate, self.reorder, self.delay_ms,
                          self.reorder_gap, self.reorder_max_ms, seed)


class FaultCounters(Counters):
    """offered: packets handed to the link; dropped, duplicated, reordered,
    delayed: how many of them each fault hit."""

    NAMES = ("offered", "dropped", "duplicated", "reordered", "delayed")


class FaultInjector:
    """Applies :class:`LinkFaults` to a stream of opaque packets.

    ``submit(packet, now)`` returns the packets to send now; ``due(now)``
    returns held/delayed packets whose time has come; ``next_deadline()``
    tells a loop how long it may sleep. Times are seconds (any monotonic
    clock, as long as the caller is consistent).
    """

    def __init__(self, faults: LinkFaults):
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._delay = faults.delay_ms / 1e3
        self._reorder_max = faults.reorder_max_ms / 1e3
        self._passed = 0  # packets released so far (the reorder clock)
        self._held: list[tuple[int, float, int, Any]] = []  # heap: (release count, deadline, seq, pkt)
        self._seq = 0
        self._delayed: deque[tuple[float, Any]] = deque()
        self.counters = FaultCounters()
        #: loss and duplication only: whole batches go through :meth:`filter_rows`
        self.vectorizable = not faults.reorder and not faults.delay_ms
        self._np_rng = np.random.default_rng([faults.seed, 0x4E45])

    def filter_rows(self, rows: np.ndarray) -> np.ndarray:
        """Loss and duplication for a batch of packets at once (the rows of a
        2-D array, one packet each): what is left to send, a duplicate right
        after its original. Same probabilities as :meth:`submit`, drawn from
        a numpy stream of the same seed; only for a :attr:`vectorizable`
        injector (no reordering or delay, which hold packets back)."""
        if not self.vectorizable:
            raise ValueError("filter_rows: reordering and delay need submit(), packet by packet")
        f, n = self.faults, rows.shape[0]
        if not (f.loss or f.duplicate):
            self.counters.offered += n
            return rows
        return rows[self.filter_index(n)]

    def filter_index(self, n: int) -> np.ndarray:
        """:meth:`filter_rows` for ``n`` packets as the indices of what is
        left to send (``rows[filter_index(len(rows))]`` is ``filter_rows(rows)``,
        with the same draws), so a sender can gather the survivors itself."""
        if not self.vectorizable:
            raise ValueError("filter_index: reordering and delay need submit(), packet by packet")
        f = self.faults
        self.counters.offered += n
        index = np.arange(n)
        if f.loss:
            keep = self._np_rng.random(n) >= f.loss
            self.counters.dropped += int(n - np.count_nonzero(keep))
            index = index[keep]
        if f.duplicate and index.shape[0]:
            twice = self._np_rng.random(index.shape[0]) < f.duplicate
            copies = int(np.count_nonzero(twice))
            if copies:
                self.counters.duplicated += copies
                index = np.repeat(index, 1 + twice.astype(np.int64))
        return index

    def draws(self, n: int) -> np.ndarray:
        """``n`` uniform draws in [0, 1) from the stream :meth:`filter_index`
        uses, for a sender that applies loss and duplication itself (the
        worker's compiled loop on shared memory: a copy is lost if its draw
        is below ``loss``; a survivor, drawing again, is sent twice if that
        draw is below ``duplicate``). Count what it did with
        :meth:`count_filtered`."""
        if not self.vectorizable:
            raise ValueError("draws: reordering and delay need submit(), packet by packet")
        return self._np_rng.random(n)

    def count_filtered(self, offered: int, dropped: int, duplicated: int) -> None:
        """Add what a sender filtering with :meth:`draws` offered, lost and duplicated."""
        c = self.counters
        c.offered += offered
        c.dropped += dropped
        c.duplicated += duplicated

    def filter_masks(self, n: int, receivers: int) -> tuple[np.ndarray, np.ndarray]:
        """Loss and duplication for ``n`` packets each sent to ``receivers``
        receivers at once (a multicast, one link per receiver), drawn in bulk:
        ``(masks, again)`` as ``uint64[n]``, bit ``r`` of ``masks[i]`` set if
        receiver ``r`` gets packet ``i``, of ``again[i]`` if it gets it twice.
        The same probabilities and counters as ``receivers`` calls of
        :meth:`filter_index` (another order of draws); at most 64 receivers."""
        if not self.vectorizable:
            raise ValueError("filter_masks: reordering and delay need submit(), packet by packet")
        if not 1 <= receivers <= 64:
            raise ValueError(f"filter_masks: 1..64 receivers, got {receivers}")
        f = self.faults
        self.counters.offered += n * receivers
        shape = (receivers, n)
        weights = np.left_shift(np.uint64(1), np.arange(receivers, dtype=np.uint64))[:, None]
        got = np.ones(shape, np.bool_)
        if f.loss:
            got = self._np_rng.random(shape) >= f.loss
            self.counters.dropped += int(got.size - np.count_nonzero(got))
        masks = (got * weights).sum(axis=0, dtype=np.uint64)
        again = np.zeros(n, np.uint64)
        if f.duplicate:
            twice = got & (self._np_rng.random(shape) < f.duplicate)
            copies = int(np.count_nonzero(twice))
            if copies:
                self.counters.duplicated += copies
                again = (twice * weights).sum(axis=0, dtype=np.uint64)
        return masks, again

    def submit(self, packet: Any, now: float) -> list:
        f, rng = self.faults, self._rng
        self.counters.offered += 1
        if f.loss and rng.random() < f.loss:
            self.counters.dropped += 1
            return self.due(now)
        copies = [packet]
        if f.duplicate and rng.random() < f.duplicate:
            self.counters.duplicated += 1
            copies.append(packet)
        out = []
        for p in copies:
            if f.reorder and rng.random() < f.reorder:
                self.counters.reordered += 1
                self._seq += 1
                heapq.heappush(self._held, (self._passed + f.reorder_gap, now + self._reorder_max,
                                            self._seq, p))
            else:
                out.append(p)
        self._passed += len(out)
        out += self._release_held(now)
        return self._through_delay(out, now)

    def _release_held(self, now: float) -> list:
        out = []
        # a heap on the release count; a timed-out packet further down is
        # found by the scan below (held packets are few)
        while self._held and self._held[0][0] <= self._passed:
            out.append(heapq.heappop(self._held)[3])
        if self._held and any(h[1] <= now for h in self._held):
            keep = []
            for h in self._held:
                (out.append(h[3]) if h[1] <= now else keep.append(h))
            self._held = keep
            heapq.heapify(self._held)
        self._passed += len(out)
        return out

    def _through_delay(self, packets: list, now: float) -> list:
        if not self._delay:
            return packets
        for p in packets:
            self.counters.delayed += 1
            self._delayed.append((now + self._delay, p))
        return self._pop_delayed(now)

    def _pop_delayed(self, now: float) -> list:
        out = []
        while self._delayed and self._delayed[0][0] <= now:
            out.append(self._delayed.popleft()[1])
        return out

    def due(self, now: float) -> list:
        """Held or delayed packets whose release time has passed."""
        out = self._release_held(now) if self._held else []
        out = self._through_delay(out, now) if out else []
        return out + self._pop_delayed(now) if self._delayed else out

    def submit_all(self, packets: list, now: float) -> list:
        """What leaves now when ``packets`` are offered: held or delayed
        packets now due, then whatever each packet's faults let through."""
        out = self.due(now)
        for packet in packets:
            out += self.submit(packet, now)
        return out

    def next_deadline(self) -> float | None:
        deadlines = [h[1] for h in self._held]
        if self._delayed:
            deadlines.append(self._delayed[0][0])
        return min(deadlines) if deadlines else None

    def flush(self) -> list:
        """Everything still held or delayed (e.g. at shutdown), in order."""
        out = [h[3] for h in sorted(self._held)] + [p for _, p in self._delayed]
        self._held, self._delayed = [], deque()
        return out


def add_fault_arguments(parser, direction: str) -> None:
    """The CLI options of :class:`LinkFaults` (``--loss --dup --reorder --delay-ms``)."""
    g = parser.add_argument_group(f"fault injection ({direction}; seeded by --seed)")
    g.add_argument("--loss", type=float, default=0.0, metavar="P", help="drop probability")
    g.add_argument("--dup", type=float, default=0.0, metavar="P", help="duplication probability")
    g.add_argument("--reorder", type=float, default=0.0, metavar="P",
                   help="probability that a packet is held back behind later ones")
    g.add_argument("--delay-ms", type=float, default=0.0, metavar="MS", help="constant delay")


def faults_from_args(args, seed: int) -> LinkFaults:
    return LinkFaults(loss=args.loss, duplicate=args.dup, reorder=args.reorder,
                      delay_ms=args.delay_ms, seed=seed)


#: the counters of :func:`draw_copies`: copies offered, dropped, duplicated
LINK_OFFERED, LINK_DROPPED, LINK_DUPLICATED = 0, 1, 2


@njit(cache=True, nogil=True, inline="always")
def draw_copies(draws, d, loss, duplicate, link):
    """One copy over one emulated link, in compiled code, from a
    :meth:`FaultInjector.draws` stream at position ``d``: lost if its draw is
    below ``loss``; a survivor, drawing again, goes twice if that draw is
    below ``duplicate`` (no draw for a probability of 0). Counts into
    ``link`` (LINK_*); returns (new position, sent, sent twice)."""
    link[LINK_OFFERED] += 1
    if loss > 0:
        u = draws[d]
        d += 1
        if u < loss:
            link[LINK_DROPPED] += 1
            return d, False, False
    if duplicate > 0:
        u = draws[d]
        d += 1
        if u < duplicate:
            link[LINK_DUPLICATED] += 1
            return d, True, True
    return d, True, False
