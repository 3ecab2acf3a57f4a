"""The data plane's arrival log (``p4/include/arrival_log.p4``), read and decoded.

Every P4 program logs each contribution it folds into a row, in fold
order: a ring of 64-bit entries (``arrival_log``) and a 32-bit count of
folded contributions (``arrival_count``). A packet that is not folded
writes its entry at the count without advancing it, so only entries below
the count are contributions. Entry bits (docs/p4.md "Arrival log"):

====== =============================================================
31-0   packet id (the round id)
47-32  row: ``((pool_base + slot) << 1) | shadow_set``
55-48  wire mode
60-56  rank
61     first arrival of a new round (the row's implicit reset)
62     1: a folded contribution
====== =============================================================

:class:`ArrivalLogReader` reads the count, the whole ring and the count
again in one ``simple_switch_CLI`` batch (:func:`read_commands`,
:func:`parse_read`) and hands the entries it has not seen to an
:class:`OrderBuilder`, which rebuilds what the emulator records
(``emulator.pipeline.ArrivalLog``): per completed round its packet id,
wire mode and the ranks in arrival order, in completion order. An entry
is trusted only if fewer than the ring's size were written after it;
otherwise the reader raises :class:`ArrivalLogError` (an overflow: read
more often). Anything else the log cannot be, e.g. a next arrival without
its round's first one, is an :class:`ArrivalLogError` too: never a
silently wrong order.

:class:`ArrivalLogDrainer` reads the log in a thread while a job runs, as
often as the fold rate needs (the ring holds 65,536 entries; a
1 M-element K=3 allreduce of 48-element packets folds 62,502), and once
more at the end.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["ArrivalLogError", "LogEntry", "decode_entry", "encode_entry", "OrderBuilder",
           "ArrivalLogReader", "ArrivalLogDrainer", "read_commands", "parse_read",
           "LOG_REGISTER", "COUNT_REGISTER", "compare_recorded"]

#: register suffixes in every program (ProgramInfo.register)
LOG_REGISTER = "arrival_log"
COUNT_REGISTER = "arrival_count"

_COUNT_MOD = 1 << 32
_FIRST_BIT = 1 << 61
_FOLDED_BIT = 1 << 62


class ArrivalLogError(RuntimeError):
    """The arrival log cannot give exact orders (overflow, or inconsistent)."""


@dataclass(frozen=True)
class LogEntry:
    packet_id: int
    row: int
    wire_mode: int
    rank: int
    first: bool
    folded: bool


def decode_entry(value: int) -> LogEntry:
    if not 0 <= value < 1 << 63:
        raise ArrivalLogError(f"arrival log entry {value} is outside 0..2^63-1")
    return LogEntry(packet_id=value & 0xFFFFFFFF, row=(value >> 32) & 0xFFFF,
                    wire_mode=(value >> 48) & 0xFF, rank=(value >> 56) & 0x1F,
                    first=bool(value & _FIRST_BIT), folded=bool(value & _FOLDED_BIT))


def encode_entry(packet_id: int, row: int, wire_mode: int, rank: int, first: bool,
                 folded: bool = True) -> int:
    """What the data plane writes (for tests and for reading the P4)."""
    return ((packet_id & 0xFFFFFFFF) | (row & 0xFFFF) << 32 | (wire_mode & 0xFF) << 48
            | (rank & 0x1F) << 56 | int(first) << 61 | int(folded) << 62)


class OrderBuilder:
    """Completed rounds of one job from its log entries, fed in fold order.

    The job owns rows ``2 * pool_base .. 2 * (pool_base + pool_size) - 1``;
    entries of other rows (other jobs on the same switch) are counted and
    skipped. A round starts with a first arrival, gains one rank
    per next arrival and completes with the K-th; a first arrival on a row
    whose round is incomplete abandons that round (as the data plane does).
    """

    def __init__(self, num_workers: int, pool_base: int = 0, pool_size: int | None = None):
        if not 1 <= num_workers <= 32:
            raise ValueError(f"num_workers {num_workers} outside 1..32")
        self.num_workers = num_workers
        self.rows = range(2 * pool_base, 2 * (pool_base + pool_size) if pool_size is not None else 1 << 16)
        #: row -> (packet id, wire mode, ranks so far) of its open round
        self._open: dict[int, tuple[int, int, list[int]]] = {}
        self._ids: list[int] = []
        self._modes: list[int] = []
        self._orders: list[tuple[int, ...]] = []
        self.entries = 0
        self.other_rows = 0
        self.abandoned = 0

    def feed(self, entry: LogEntry, index: int | None = None) -> None:
        where = f"arrival log entry {index}" if index is not None else "arrival log entry"
        if not entry.folded:
            raise ArrivalLogError(f"{where} ({entry}) is below the count but not a folded "
                                  "contribution: the log and its count disagree")
        self.entries += 1
        if entry.row not in self.rows:
            self.other_rows += 1
            return
        if entry.rank >= self.num_workers:
            raise ArrivalLogError(f"{where}: rank {entry.rank} in a job of {self.num_workers} workers")
        held = self._open.get(entry.row)
        if entry.first:
            if held is not None:
                self.abandoned += 1
            held = self._open[entry.row] = (entry.packet_id, entry.wire_mode, [])
        elif held is None or held[:2] != (entry.packet_id, entry.wire_mode):
            raise ArrivalLogError(
                f"{where}: a next arrival (row {entry.row}, packet id {entry.packet_id}, mode "
                f"{entry.wire_mode}, rank {entry.rank}) without its round's first arrival in the log "
                f"(the row holds {held[:2] if held else 'no open round'}); entries were lost")
        # the data plane's record, not a judgement: a worker that sent a packet
        # of the other shadow set before this round completed cleared its bit
        # here, and a copy of its packet is then folded again (so does the
        # emulator; verify rejects such an order)
        ranks = held[2]
        ranks.append(entry.rank)
        if len(ranks) == self.num_workers:
            self._ids.append(held[0])
            self._modes.append(held[1])
            self._orders.append(tuple(ranks))
            del self._open[entry.row]

    @property
    def completed(self) -> int:
        return len(self._ids)

    @property
    def incomplete(self) -> int:
        """Rounds started but not completed (yet)."""
        return len(self._open)

    def arrays(self) -> dict[str, np.ndarray]:
        """The completed rounds as ``emulator.pipeline.ArrivalLog.arrays()`` gives them."""
        order = np.array(self._orders, np.int16).reshape(len(self._orders), self.num_workers)
        return {"packet_id": np.array(self._ids, np.int64), "wire_mode": np.array(self._modes, np.int8),
                "order": order}

    def stats(self) -> dict:
        return {"entries": self.entries, "completed_rounds": self.completed,
                "incomplete_rounds": self.incomplete, "abandoned_rounds": self.abandoned,
                "other_jobs_entries": self.other_rows}


def read_commands(log_name: str, count_name: str) -> list[str]:
    """One CLI batch: the count, the whole ring, the count again."""
    return [f"register_read {count_name} 0", f"register_read {log_name}", f"register_read {count_name} 0"]


def parse_read(output: str, log_name: str, count_name: str, size: int) -> tuple[int, list[int], int]:
    """(count before, ring values, count after) from the batch's output."""
    counts = [int(v) for v in re.findall(re.escape(count_name) + r"\[0\]\s*=\s*(-?\d+)", output)]
    ring = re.search(re.escape(log_name) + r"=\s*([-\d, ]*)", output)
    if len(counts) != 2 or ring is None:
        raise ArrivalLogError(f"could not parse the arrival log read: {output[-500:]}")
    values = [int(v) for v in ring.group(1).replace(",", " ").split()]
    if len(values) != size:
        raise ArrivalLogError(f"the arrival log read gave {len(values)} entries, the ring has {size}")
    return counts[0], values, counts[1]


class ArrivalLogReader:
    """Reads one switch's arrival log for one job; feed :meth:`consume` or call :meth:`drain`."""

    def __init__(self, size: int, builder: OrderBuilder, cli=None, log_name: str = "",
                 count_name: str = ""):
        if size < 2 or size & (size - 1):
            raise ValueError(f"the arrival log's size must be a power of two, got {size}")
        self.size, self.builder = size, builder
        self.cli, self.log_name, self.count_name = cli, log_name, count_name
        #: the count up to which entries were consumed (mod 2^32, as the data plane counts)
        self.position = 0
        self.reads = 0
        self.read_seconds = 0.0

    @classmethod
    def for_job(cls, cli, info, job) -> "ArrivalLogReader":
        """The reader of ``job`` (a :class:`~.control_plane.Bmv2Job`) on a switch whose
        log is empty (a freshly started one)."""
        log_name = info.register(LOG_REGISTER)
        return cls(info.registers[log_name], OrderBuilder(job.num_workers, job.pool_base, job.pool_size),
                   cli, log_name, info.register(COUNT_REGISTER))

    def consume(self, before: int, values: list[int], after: int) -> int:
        """Entries ``position .. before`` of a read (count ``before`` read before the
        ring, ``after`` after it); returns how many were new."""
        new = (before - self.position) % _COUNT_MOD
        written = (after - self.position) % _COUNT_MOD
        if written < new or written >= _COUNT_MOD // 2:  # serial arithmetic, as for round ids
            raise ArrivalLogError(f"the arrival count went back (read {self.position}, then {before}, "
                                  f"then {after}): the switch was reset or restarted")
        if written >= self.size:
            raise ArrivalLogError(
                f"the arrival log overflowed: {written} contributions were folded since the last read "
                f"and its ring holds {self.size} (ARRIVAL_LOG_ENTRIES, p4/include/arrival_log.p4), so "
                "entries were overwritten before they were read; read it more often")
        for i in range(new):
            index = (self.position + i) % _COUNT_MOD
            self.builder.feed(decode_entry(values[index % self.size]), index)
        self.position = before
        return new

    def drain(self) -> int:
        """Read the switch's log now; returns the new entries."""
        start = time.monotonic()
        out = self.cli.run(read_commands(self.log_name, self.count_name))
        before, values, after = parse_read(out, self.log_name, self.count_name, self.size)
        self.reads += 1
        self.read_seconds += time.monotonic() - start
        return self.consume(before, values, after)

    def stats(self) -> dict:
        return {**self.builder.stats(), "ring_entries": self.size, "reads": self.reads,
                "read_seconds": round(self.read_seconds, 3)}


class ArrivalLogDrainer:
    """Drains a reader in a thread while the job runs, then once more in :meth:`finish`.

    The interval adapts to the fold rate so that at most ``fill_fraction`` of
    the ring fills between reads, and is at least ``min_interval`` and
    four times what a read takes (a read is a simple_switch_CLI run).
    """

    def __init__(self, reader: ArrivalLogReader, *, min_interval: float = 2.0,
                 max_interval: float = 10.0, fill_fraction: float = 0.25):
        self.reader = reader
        self.min_interval, self.max_interval = min_interval, max_interval
        self.fill_fraction = fill_fraction
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="arrival-log-drainer", daemon=True)

    def start(self) -> "ArrivalLogDrainer":
        self._thread.start()
        return self

    def _run(self) -> None:
        interval, last = self.min_interval, time.monotonic()
        while not self._stop.wait(interval):
            try:
                start = time.monotonic()
                new = self.reader.drain()
            except BaseException as e:  # kept for finish(): the log is unusable from here
                self._error = e
                return
            now = time.monotonic()
            rate = new / max(1e-3, now - last)
            last = now
            want = self.fill_fraction * self.reader.size / rate if rate > 0 else self.max_interval
            interval = min(self.max_interval, max(self.min_interval, 4 * (now - start), want))

    def finish(self) -> dict[str, np.ndarray]:
        """Stop the thread, read the rest; the completed rounds (ArrivalLogError if the
        log could not be read exactly)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        error = self._error
        if error is None:
            try:
                self.reader.drain()
            except Exception as e:
                error = e
        if isinstance(error, ArrivalLogError):
            raise error
        if error is not None:  # the CLI failed (ControlPlaneError, a timeout, ...)
            raise ArrivalLogError(f"reading the arrival log failed: {error}") from error
        return self.reader.builder.arrays()

    def stop(self) -> None:
        """Stop the thread without a last read (cleanup after a failure)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()


def compare_recorded(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict:
    """Two switches' completed rounds (``ArrivalLog.arrays()`` form), compared in
    completion order: identical, or the first difference."""
    out = {"rounds": int(len(got["packet_id"])), "other_rounds": int(len(want["packet_id"]))}
    n = min(out["rounds"], out["other_rounds"])
    same = ((got["packet_id"][:n] == want["packet_id"][:n])
            & (got["wire_mode"][:n] == want["wire_mode"][:n])
            & (got["order"][:n] == want["order"][:n]).all(axis=1))
    bad = np.flatnonzero(~same)
    out["identical"] = out["rounds"] == out["other_rounds"] and not len(bad)
    if len(bad) or out["rounds"] != out["other_rounds"]:
        i = int(bad[0]) if len(bad) else n
        out["first_difference"] = i
    return out
