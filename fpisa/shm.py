"""Shared-memory transport: the switch and its workers on one host.

The same wire bytes as :mod:`fpisa.net` (a 16-byte aggregation header plus
payload, :mod:`fpisa.protocol`), carried in rings in one POSIX shared memory
segment instead of UDP datagrams, so that moving a packet costs no system
call. Each worker rank ``r`` has two single-producer/single-consumer rings:
``up[r]`` (worker -> switch) and ``down[r]`` (switch -> worker), and all
workers read one *multicast* ring (switch -> every worker: one copy of each
result, in which each worker has its own consumer end; a slot frees once
every worker has consumed it). A ring is
``slots_per_ring`` fixed-size slots of ``slot_bytes`` (the job's largest
datagram in that direction) packed back to back, a ``uint32`` length per
slot, and two ``uint64`` counters: ``head`` (slots ever published, written
only by the producer) and ``tail`` (slots ever consumed, written only by the
consumer), each in its own 128-byte line. docs/shm_transport.md has the byte
layout.

Pieces:

- :class:`ShmFabric`: creates (orchestrator) or attaches (switch, workers) the
  segment; picklable as its :class:`ShmDescriptor` (a few names and sizes), so
  spawn/forkserver children attach by name. The creator unlinks the segment
  on :meth:`ShmFabric.close`, on leaving a ``with`` block (also on an
  exception or Ctrl-C), when it is garbage collected and at interpreter exit.
- :class:`Ring`: one end of one ring, with the batch API (producer:
  :meth:`Ring.reserve` / :meth:`Ring.commit`; consumer: :meth:`Ring.peek` /
  :meth:`Ring.release`).
- :class:`ShmSwitchTransport` and :class:`ShmWorkerTransport`: the
  :class:`fpisa.net.UdpTransport` interface (``recv_batch``, ``recv_trains``,
  ``send``, ``send_batch``, ``send_train``, ``close``, ``send_errors``) plus a
  zero-copy receive (``recv_arrays`` / ``release_arrays``). Addresses:
  worker ``r`` is ``("shm", r)``, the switch is ``("shm", "switch")``.

Memory ordering. Counters and sleep flags are read and written only with
sequentially consistent atomic loads, stores and exchanges (tiny Numba
intrinsics below; on x86-64 a ``mov`` for loads and an ``xchg`` for stores).
Payload bytes and lengths are plain stores made *before* the producer's
atomic store of ``head`` (so they are published by it) and read by the
consumer *after* its atomic load of ``head``; the consumer copies or finishes
with a slot before its atomic store of ``tail`` frees it. This relies on the
hardware not reordering a plain store after a later locked store, nor a plain
load before an earlier atomic load, across a call boundary: true on x86-64
(TSO), which is the only architecture this module accepts (anything else
raises :class:`RuntimeError`; aarch64 would very likely work, since its
``stlr``/``ldar`` order all earlier/later accesses, but is untested).

Idle waiting. A consumer with nothing to read spins for ``spin_s`` (default
50 us if the machine has a CPU for each of the job's K + 1 processes, else
0; and only while recent spins found data), then sets its *asleep* flag, re-checks its rings and sleeps in
``poll`` on its doorbell, a Unix datagram socket in Linux's abstract
namespace (no file to clean up; it vanishes with the process). A producer,
after publishing, reads the consumer's asleep flag; if it is set it exchanges
it with 0 and, if it was still 1, sends one byte to the doorbell (once per
send call, after all of it is published): a system call only when the
consumer really sleeps. Both sides' store-then-load pairs are sequentially
consistent, so a wake-up cannot be lost. The switch has a single asleep flag
and doorbell shared by every ``up`` ring, so it waits on all workers at once.
Doorbells live in the network namespace: all processes of a fabric must share
one (so not across Mininet hosts; use the UDP or raw transports there).

Full rings. A send that finds its ring full drops the datagrams that do not
fit and counts them in ``send_errors`` (and in the ring's ``dropped``
counter), like a full socket buffer: the protocol retransmits, and the switch
never blocks on a slow worker. Size rings to at least the worker's window.

A dead peer. No wait is unbounded unless the caller passes ``timeout=None``;
``peer_alive()`` tells whether the other side's doorbell is still bound
(false before it attached, after it closed, or once it died).
"""

from __future__ import annotations

import errno
import math
import os
import platform
import secrets
import select
import socket
import sys
import time
import weakref
from dataclasses import dataclass
from typing import Hashable, Iterable, NamedTuple

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .net import split_trains
from .protocol import HEADER_BYTES, MAX_WORKERS

__all__ = [
    "ShmFabric",
    "ShmDescriptor",
    "Ring",
    "ShmSwitchTransport",
    "ShmWorkerTransport",
    "SWITCH_ADDRESS",
    "worker_address",
    "NAME_PREFIX",
    "DEFAULT_SPIN_S",
    "default_spin_s",
    "supported",
]

#: every segment this module creates is ``/dev/shm/fpisa-<pid>-<random>``
NAME_PREFIX = "fpisa-"
SWITCH_ADDRESS = ("shm", "switch")
#: how long a consumer polls its counters before it sleeps on its doorbell,
#: when every process of the job can have a CPU of its own (else 0: a spinning
#: consumer would take the CPU from the producer it waits for). Measured here
#: (firecracker VM): a sleep/wake-up cycle costs ~100-200 us, so spinning for
#: less than a few tens of us rarely avoids one.
DEFAULT_SPIN_S = 50e-6


# Adaptive spinning: a spin that finds data earns a credit, one that ends in
# sleep anyway costs _SPIN_FAIL_COST; without credit a consumer sleeps at
# once (and spins again every _SPIN_PROBE_EVERY-th wait, to notice when it
# pays again). Spins fail when the producer has no CPU to run on (it shares
# the consumer's: the spin only delays it) and when the job is idle.
_SPIN_CREDIT_MAX = 16
_SPIN_FAIL_COST = 2
_SPIN_PROBE_EVERY = 32


def default_spin_s(num_processes: int) -> float:
    """:data:`DEFAULT_SPIN_S` if this process may use at least
    ``num_processes`` CPUs, else 0."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        cpus = os.cpu_count() or 1
    return DEFAULT_SPIN_S if cpus >= num_processes else 0.0
#: the largest datagram a slot may hold (a UDP payload's limit)
MAX_SLOT_BYTES = 65535
#: a long send is published in pieces of this many slots, so the consumer
#: can start on the first while the producer copies the rest (GSO's 64)
PUBLISH_SLOTS = 64

_MAGIC = int.from_bytes(b"FPISASHM", "little")
_LAYOUT_VERSION = 2
_LINE = 128  #: bytes between words written by different processes (a cache-line pair)
_W = _LINE // 8  #: uint64 words per line
# fabric header, in uint64 words
_H_MAGIC, _H_VERSION, _H_WORKERS, _H_UP_SLOT, _H_DOWN_SLOT, _H_SLOTS, _H_SIZE = range(7)
_H_SWITCH_ASLEEP = _W  #: the switch's asleep flag, shared by every up ring
_RINGS_AT = 2 * _W  #: first ring's control block
# a ring's control block: four lines, in words from its start
_R_HEAD = 0  #: written by the producer
_R_TAIL = _W  #: written by the consumer
_R_ASLEEP = 2 * _W  #: its consumer's asleep flag (down rings; up rings use the switch's)
_R_DROPPED = 3 * _W  #: written by the producer (apart from head, which the consumer polls)
_RING_WORDS = 4 * _W
_PAGE = 4096


def worker_address(rank: int) -> tuple[str, int]:
    return ("shm", rank)


# -- atomics -------------------------------------------------------------------------

def _element_pointer(context, builder, aryty, ary_value, idx_value, idxty):
    ary = context.make_array(aryty)(context, builder, ary_value)
    i = context.cast(builder, idx_value, idxty, types.intp)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [i])


def _u64_array(arr) -> bool:
    return isinstance(arr, types.Array) and arr.dtype == types.uint64 and arr.ndim == 1


@intrinsic
def _atomic_load(typingctx, arr, idx):
    if not (_u64_array(arr) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return builder.load_atomic(ptr, "seq_cst", 8)

    return types.uint64(arr, idx), codegen


@intrinsic
def _atomic_store(typingctx, arr, idx, value):
    if not (_u64_array(arr) and isinstance(idx, types.Integer) and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        v = context.cast(builder, args[2], sig.args[2], types.uint64)
        builder.store_atomic(v, ptr, "seq_cst", 8)
        return context.get_dummy_value()

    return types.void(arr, idx, value), codegen


@intrinsic
def _atomic_exchange(typingctx, arr, idx, value):
    if not (_u64_array(arr) and isinstance(idx, types.Integer) and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        v = context.cast(builder, args[2], sig.args[2], types.uint64)
        return builder.atomic_rmw("xchg", ptr, v, "seq_cst")

    return types.uint64(arr, idx, value), codegen



_jit = njit(cache=True, nogil=True)


@_jit
def _load(ctrl, i):
    return _atomic_load(ctrl, i)


@_jit
def _store(ctrl, i, value):
    _atomic_store(ctrl, i, value)


@_jit
def _publish(ctrl, head_word, head, asleep_word):
    """Producer: publish ``head``; return 1 if the consumer was asleep (and
    clear its flag: the caller rings its doorbell). The flag is only read
    unless it is set, so K producers do not fight over the switch's line."""
    _atomic_store(ctrl, head_word, head)
    if _atomic_load(ctrl, asleep_word) == 0:
        return np.uint64(0)
    return _atomic_exchange(ctrl, asleep_word, 0)


#: ``_write_slots``' index when it copies the rows as they are
_NO_INDEX = np.full(1, -1, np.int64)
#: ``_write_slots``' masks: none (a ring without them), or every datagram for every worker
_NO_MASKS = np.zeros(0, np.uint64)
#: ``_write_slots``' headers and padded last row: none (the rows are whole datagrams)
_NO_HEADS = np.zeros((0, 0), np.uint8)
_NO_TAIL = np.zeros(0, np.uint8)


@_jit
def _pending(ctrl, first, count, stride, out):
    """Slots waiting in ``count`` rings (control blocks ``stride`` words
    apart from word ``first``); per ring into ``out``, the total returned."""
    total = np.uint64(0)
    for r in range(count):
        w = first + r * stride
        n = _atomic_load(ctrl, w + _R_HEAD) - _atomic_load(ctrl, w + _R_TAIL)
        out[r] = n
        total += n
    return total


@_jit
def _arm(ctrl, asleep_word, first, count, stride, out):
    """Consumer about to sleep: raise the asleep flag, then look again (the
    flag's store and these loads are sequentially consistent, so a producer
    either sees the flag or published before these loads). Lowers the flag
    again and returns the total if something is waiting."""
    _atomic_store(ctrl, asleep_word, 1)
    total = _pending(ctrl, first, count, stride, out)
    if total:
        _atomic_store(ctrl, asleep_word, 0)
    return total


def warm_up() -> None:
    """Load the ring primitives' compiled code now. Numba loads each from its
    cache on its first call (tens of ms on a busy machine: 0.1 s for the
    four a worker uses, measured), which would otherwise land on a job's
    first packets. Every transport calls this when it opens."""
    ctrl = np.zeros(_RINGS_AT + 2 * _RING_WORDS, np.uint64)
    counts = np.zeros(2, np.uint64)
    _store(ctrl, _RINGS_AT + _R_TAIL, 0)
    _load(ctrl, _RINGS_AT + _R_HEAD)
    _publish(ctrl, _RINGS_AT + _R_HEAD, 0, _H_SWITCH_ASLEEP)
    _pending(ctrl, _RINGS_AT, 2, _RING_WORDS, counts)
    _arm(ctrl, _H_SWITCH_ASLEEP, _RINGS_AT, 2, _RING_WORDS, counts)
    slots, lengths = np.zeros((2, 8), np.uint8), np.zeros(2, np.uint32)
    # two rows each: numpy calls a one-row column slice C-contiguous, so a
    # single row would never compile the strided ('A') variants senders pass
    readonly = np.zeros((2, 8), np.uint8)
    readonly.flags.writeable = False
    # the row blocks senders pass: arrays, views of some of their columns, bytes
    words = np.array([_RINGS_AT], np.int64)
    asleep = np.array([_H_SWITCH_ASLEEP], np.int64)
    masks = np.zeros(2, np.uint64)
    for rows in (np.zeros((2, 8), np.uint8), readonly):
        for block in (rows, rows[:, :4]):
            for ring_masks, row_masks in ((_NO_MASKS, _NO_MASKS), (masks, _NO_MASKS),
                                          (masks, np.ones(1, np.uint64))):
                _store(ctrl, _RINGS_AT + _R_TAIL, 0)
                _write_slots(ctrl, words, asleep, slots, lengths, ring_masks, 0, _NO_HEADS, block,
                             _NO_TAIL, _NO_INDEX, row_masks, np.uint64(1), PUBLISH_SLOTS)
    # a worker's DATA packets: header rows + a view of its array's rows + the padded last one
    heads, tail = np.zeros((2, 2), np.uint8), np.zeros(8, np.uint8)
    wide = np.zeros((2, 16), np.uint8)
    for rows in (np.zeros((2, 8), np.uint8), readonly):
        _store(ctrl, _RINGS_AT + _R_TAIL, 0)
        _write_slots(ctrl, words, asleep, wide, lengths, _NO_MASKS, 0, heads, rows, tail,
                     np.arange(2, dtype=np.int64), _NO_MASKS, np.uint64(1), PUBLISH_SLOTS)


def supported() -> bool:
    """Whether this machine can run the shared-memory transport (Linux, x86-64)."""
    try:
        _check_platform()
    except RuntimeError:
        return False
    return True


def _check_platform() -> None:
    if not sys.platform.startswith("linux"):
        raise RuntimeError(f"fpisa.shm needs Linux (abstract Unix sockets, /dev/shm); this is {sys.platform}")
    machine = platform.machine()
    if machine not in ("x86_64", "AMD64"):
        raise RuntimeError(f"fpisa.shm relies on x86-64 memory ordering (TSO) and was only checked "
                           f"there; this machine is {machine!r}: use fpisa.net.UdpTransport")


# -- the segment -------------------------------------------------------------------------

@dataclass(frozen=True)
class ShmDescriptor:
    """What a child process needs to attach: plain names and sizes (picklable)."""

    name: str
    num_workers: int
    slot_bytes: int  #: up rings (worker -> switch)
    result_slot_bytes: int  #: down rings (switch -> worker)
    slots_per_ring: int
    size: int


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class _Layout:
    num_workers: int
    up_slot: int
    down_slot: int
    slots: int

    @property
    def rings(self) -> int:
        """Rings with slots: up[K], down[K], then the multicast ring."""
        return 2 * self.num_workers + 1

    @property
    def multicast(self) -> int:
        """The multicast ring's index (its slots and lengths)."""
        return 2 * self.num_workers

    @property
    def control_blocks(self) -> int:
        """One per up and down ring, then one per worker's end of the
        multicast ring (its own tail; the producer writes ``head`` into each)."""
        return 3 * self.num_workers

    def ring_slot_bytes(self, ring: int) -> int:
        return self.up_slot if ring < self.num_workers else self.down_slot

    @property
    def control_bytes(self) -> int:
        return _round_up((_RINGS_AT + self.control_blocks * _RING_WORDS) * 8, _PAGE)

    def lengths_at(self, ring: int) -> int:
        per_ring = _round_up(4 * self.slots, _LINE)
        return self.control_bytes + ring * per_ring

    @property
    def masks_at(self) -> int:
        """The multicast ring's uint64 per slot: the ranks it is for."""
        return _round_up(self.lengths_at(self.rings), _LINE)

    @property
    def data_at(self) -> int:
        return _round_up(self.masks_at + 8 * self.slots, _PAGE)

    def slots_at(self, ring: int) -> int:
        at = self.data_at
        for r in range(ring):
            at += _round_up(self.slots * self.ring_slot_bytes(r), _PAGE)
        return at

    @property
    def size(self) -> int:
        return self.slots_at(self.rings)

    @staticmethod
    def ring_word(block: int) -> int:
        return _RINGS_AT + block * _RING_WORDS

    def multicast_word(self, rank: int) -> int:
        """Worker ``rank``'s end of the multicast ring (control block)."""
        return self.ring_word(2 * self.num_workers + rank)


_SHM_DIR = "/dev/shm"  #: where glibc's shm_open puts POSIX shared memory on Linux


def _create_segment(name: str, size: int):
    """Create, allocate and map ``/dev/shm/<name>``; registered with
    multiprocessing's resource tracker, which unlinks it if this process
    dies without doing so (SIGKILL), with a "leaked shared_memory" warning.
    The pages are allocated now (``posix_fallocate``): a full /dev/shm fails
    here with ENOSPC instead of a SIGBUS in the middle of a job."""
    import mmap
    from multiprocessing import resource_tracker

    path = os.path.join(_SHM_DIR, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
        mapping = mmap.mmap(fd, size)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    resource_tracker.register("/" + name, "shared_memory")
    return mapping


def _unlink_segment(name: str, creator_pid: int) -> None:
    """Unlink the creator's segment (idempotent; never from a forked child)."""
    if os.getpid() != creator_pid:
        return
    from multiprocessing import resource_tracker

    try:
        os.unlink(os.path.join(_SHM_DIR, name))
    except FileNotFoundError:
        pass
    try:
        resource_tracker.unregister("/" + name, "shared_memory")
    except Exception:  # pragma: no cover - the tracker is gone (interpreter exit)
        pass


def _attach_segment(name: str):
    """Map an existing segment *without* registering it with the resource
    tracker (what ``SharedMemory(name)`` does on Python < 3.13, so that an
    independently started process's tracker unlinks the segment when that
    process exits, and a spawn child's unregister would drop the creator's
    registration from their shared tracker)."""
    import mmap

    fd = os.open(os.path.join(_SHM_DIR, name), os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size < _PAGE:
            raise ValueError(f"shared memory segment {name!r} is not a fabric ({size} bytes)")
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


class ShmFabric:
    """All rings of one job in one shared memory segment.

    ``ShmFabric.create(num_workers, slot_bytes, slots_per_ring)`` in the
    orchestrator; children get it pickled (or its :attr:`descriptor`) and
    call :meth:`attach`. Only the creating process unlinks the segment.
    """

    def __init__(self, mapping, descriptor: ShmDescriptor, *, owner: bool = False):
        self.descriptor = descriptor
        self._mapping = mapping
        self._owner = owner
        self._creator_pid = os.getpid() if owner else -1
        self._closing = False
        self.layout = _Layout(descriptor.num_workers, descriptor.slot_bytes,
                              descriptor.result_slot_bytes, descriptor.slots_per_ring)
        self._ctrl = np.frombuffer(mapping, np.uint64, count=self.layout.control_bytes // 8)
        # unlink on garbage collection and at interpreter exit (also after Ctrl-C)
        self._finalizer = (weakref.finalize(self, _unlink_segment, descriptor.name, self._creator_pid)
                           if owner else None)
        self._transports: weakref.WeakSet = weakref.WeakSet()

    # -- lifecycle ---------------------------------------------------------------

    @classmethod
    def create(cls, num_workers: int, slot_bytes: int, slots_per_ring: int = 1024, *,
               result_slot_bytes: int | None = None) -> "ShmFabric":
        """A new segment for ``num_workers`` workers.

        ``slot_bytes``: the largest datagram a worker sends (the job's DATA
        length: then a run of DATA packets is one C-contiguous ``(m, L)``
        array). ``result_slot_bytes``: the largest the switch sends (results,
        with raw registers if asked for); default ``slot_bytes``.
        ``slots_per_ring``: at least the worker's window.
        """
        num_workers = _check_int("num_workers", num_workers, 1, MAX_WORKERS)
        slot_bytes = _check_int("slot_bytes", slot_bytes, 1, MAX_SLOT_BYTES)
        result_slot_bytes = slot_bytes if result_slot_bytes is None else \
            _check_int("result_slot_bytes", result_slot_bytes, 1, MAX_SLOT_BYTES)
        for what, n in (("slot_bytes", slot_bytes), ("result_slot_bytes", result_slot_bytes)):
            if n < HEADER_BYTES:
                raise ValueError(f"{what} must hold at least the {HEADER_BYTES}-byte aggregation "
                                 f"header, got {n}")
        slots_per_ring = _check_int("slots_per_ring", slots_per_ring, 1, 1 << 24)
        _check_platform()
        layout = _Layout(num_workers, slot_bytes, result_slot_bytes, slots_per_ring)
        size = layout.size
        for _ in range(16):
            name = f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            try:
                mapping = _create_segment(name, size)
                break
            except FileExistsError:
                continue
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise
                raise ValueError(f"the rings need {size / 2**20:.1f} MiB of {_SHM_DIR}, which "
                                 f"does not have them ({e.strerror}): fewer or smaller slots") from None
        else:  # pragma: no cover
            raise RuntimeError("could not find an unused shared memory name")
        try:
            descriptor = ShmDescriptor(name, num_workers, slot_bytes, result_slot_bytes,
                                       slots_per_ring, size)
            fabric = cls(mapping, descriptor, owner=True)
            ctrl = fabric._ctrl
            ctrl[_H_VERSION] = _LAYOUT_VERSION
            ctrl[_H_WORKERS] = num_workers
            ctrl[_H_UP_SLOT] = slot_bytes
            ctrl[_H_DOWN_SLOT] = result_slot_bytes
            ctrl[_H_SLOTS] = slots_per_ring
            ctrl[_H_SIZE] = size
            _store(ctrl, _H_MAGIC, _MAGIC)  # last: a valid magic means a complete header
        except BaseException:
            _unlink_segment(name, os.getpid())
            raise
        return fabric

    @classmethod
    def attach(cls, descriptor: "ShmDescriptor | dict") -> "ShmFabric":
        """Map an existing fabric (in a switch or worker process)."""
        if isinstance(descriptor, dict):
            descriptor = ShmDescriptor(**descriptor)
        _check_platform()
        try:
            mapping = _attach_segment(descriptor.name)
        except FileNotFoundError:
            raise ValueError(f"no shared memory segment {descriptor.name!r} (the orchestrator "
                             "closed it, or it was never created)") from None
        ctrl = np.frombuffer(mapping, np.uint64, count=8)
        expected = (_MAGIC, _LAYOUT_VERSION, descriptor.num_workers, descriptor.slot_bytes,
                    descriptor.result_slot_bytes, descriptor.slots_per_ring, descriptor.size)
        found = (int(_load(ctrl, _H_MAGIC)), *ctrl[1:7].tolist())
        del ctrl
        if found != expected or len(mapping) != descriptor.size:
            mapping.close()
            raise ValueError(f"shared memory segment {descriptor.name!r} does not match its "
                             f"descriptor (header {found}, expected {expected})")
        return cls(mapping, descriptor, owner=False)

    def __reduce__(self):
        return (ShmFabric.attach, (self.descriptor,))

    @property
    def owner(self) -> bool:
        """True in the creating process (the one that unlinks)."""
        return self._owner and os.getpid() == self._creator_pid

    def unlink(self) -> None:
        """Remove the segment's name (creator only; mappings stay valid)."""
        if self._finalizer is not None and self.owner:
            self._finalizer()

    def close(self) -> None:
        """Unlink (creator) and unmap. The mapping outlives this call while a
        transport or a caller still holds one of its arrays."""
        self.unlink()
        if self._closing:
            return
        self._closing = True
        for transport in list(self._transports):
            transport.close()
        self._ctrl = None
        mapping, self._mapping = self._mapping, None
        if mapping is not None:
            try:
                mapping.close()
            except BufferError:
                pass  # arrays into it still exist; unmapped when the last is collected

    @property
    def closed(self) -> bool:
        return self._mapping is None

    def __enter__(self) -> "ShmFabric":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what is in it ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def num_workers(self) -> int:
        return self.descriptor.num_workers

    @property
    def worker_addresses(self) -> list[tuple[str, int]]:
        """``JobConfig.workers`` for a switch on this fabric."""
        return [worker_address(r) for r in range(self.num_workers)]

    @property
    def switch_address(self) -> tuple[str, str]:
        return SWITCH_ADDRESS

    def _doorbell(self, who: str) -> bytes:
        return b"\0" + f"{self.name}.{who}".encode()

    def _ring(self, index: int, asleep_word: int, bell=None) -> "Ring":
        if self._mapping is None:
            raise ValueError(f"shared memory fabric {self.name} is closed")
        lay = self.layout
        lengths, slots = self._slot_arrays(index)
        rank = index % self.num_workers
        return Ring(self._ctrl, lay.ring_word(index), asleep_word, lengths, slots, bell,
                    f"{'up' if index < self.num_workers else 'down'}[{rank}]")

    def multicast_ring(self, rank: int) -> "MaskedRing":
        """Worker ``rank``'s end of the multicast ring (consumer only): the
        slots whose rank mask has ``rank``'s bit. It sleeps with the flag of
        ``rank``'s down ring, as one transport waits on both."""
        rank = _check_int("rank", rank, 0, self.num_workers - 1)
        lay = self.layout
        lengths, slots = self._slot_arrays(lay.multicast)
        return MaskedRing(self._ctrl, lay.multicast_word(rank),
                          lay.ring_word(self.num_workers + rank) + _R_ASLEEP, lengths, slots,
                          name=f"mcast[{rank}]", masks=self._masks(), rank=rank)

    def multicast_producer(self, bells: list | None = None) -> "MulticastRing":
        """The switch's end of the multicast ring; ``bells[r]`` wakes worker ``r``."""
        if self._mapping is None:
            raise ValueError(f"shared memory fabric {self.name} is closed")
        lay, K = self.layout, self.num_workers
        lengths, slots = self._slot_arrays(lay.multicast)
        return MulticastRing(self._ctrl, [lay.multicast_word(r) for r in range(K)],
                             [lay.ring_word(K + r) + _R_ASLEEP for r in range(K)], lengths,
                             self._masks(), slots, bells or [None] * K)

    def _slot_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        lay = self.layout
        stride = lay.ring_slot_bytes(index)
        lengths = np.frombuffer(self._mapping, np.uint32, count=lay.slots, offset=lay.lengths_at(index))
        slots = np.frombuffer(self._mapping, np.uint8, count=lay.slots * stride,
                              offset=lay.slots_at(index)).reshape(lay.slots, stride)
        return lengths, slots

    def _masks(self) -> np.ndarray:
        lay = self.layout
        return np.frombuffer(self._mapping, np.uint64, count=lay.slots, offset=lay.masks_at)

    def up_ring(self, rank: int, bell=None) -> "Ring":
        """Worker ``rank`` -> switch. Each end should use its own :class:`Ring`."""
        rank = _check_int("rank", rank, 0, self.num_workers - 1)
        return self._ring(rank, _H_SWITCH_ASLEEP, bell)

    def down_ring(self, rank: int, bell=None) -> "Ring":
        """Switch -> worker ``rank``."""
        rank = _check_int("rank", rank, 0, self.num_workers - 1)
        index = self.num_workers + rank
        return self._ring(index, self.layout.ring_word(index) + _R_ASLEEP, bell)

    def switch_transport(self, *, spin_s: float | None = None) -> "ShmSwitchTransport":
        return ShmSwitchTransport(self, spin_s=spin_s)

    def worker_transport(self, rank: int, *, spin_s: float | None = None) -> "ShmWorkerTransport":
        return ShmWorkerTransport(self, rank, spin_s=spin_s)

    def __repr__(self) -> str:
        d = self.descriptor
        return (f"ShmFabric({d.name!r}, workers={d.num_workers}, slots={d.slots_per_ring}x"
                f"{d.slot_bytes}/{d.result_slot_bytes} B, {'owner' if self.owner else 'attached'})")


# -- one ring ------------------------------------------------------------------------------

class Ring:
    """One end of a single-producer/single-consumer ring.

    Counters are absolute (slot ``i`` lives at ``i % capacity``), so any
    capacity works. Producer: ``view = reserve(n)`` (``k <= n`` contiguous free
    slots, shape ``(k, slot_bytes)``), fill ``view[:j]``, ``commit(j, lengths)``.
    Consumer: ``view, lengths = peek(max)`` (contiguous waiting slots, not
    removed), use them, ``release(m)``. A batch never wraps: at the end of the
    ring you get the part up to the end, and call again for the rest.
    """

    def __init__(self, ctrl, word: int, asleep_word: int, lengths: np.ndarray, slots: np.ndarray,
                 bell=None, name: str = ""):
        self._ctrl = ctrl
        self._word = word
        self._asleep = asleep_word
        # what _write_slots takes: this ring's one consumer
        self._words = np.array([word], np.int64)
        self._asleep_words = np.array([asleep_word], np.int64)
        self.lengths = lengths
        self.slots = slots
        self.capacity, self.slot_bytes = slots.shape
        self.name = name
        self._bell = bell
        self._head = int(_load(ctrl, word + _R_HEAD))
        self._tail = int(_load(ctrl, word + _R_TAIL))
        self._reserved = 0
        self._flat = None

    def __repr__(self) -> str:
        return f"Ring({self.name}, {self.capacity} x {self.slot_bytes} B)"

    # -- producer ----------------------------------------------------------------------

    def free(self) -> int:
        """Slots the producer could fill now."""
        self._tail = int(_load(self._ctrl, self._word + _R_TAIL))
        return self.capacity - (self._head - self._tail)

    def reserve(self, n: int) -> np.ndarray:
        """Up to ``n`` free contiguous slots, as a writable ``(k, slot_bytes)``
        view (``k`` may be 0: the ring is full)."""
        if n < 0:
            raise ValueError(f"reserve: n must be >= 0, got {n}")
        cap = self.capacity
        free = cap - (self._head - self._tail)
        if free < n:  # the consumer may have moved on since we last looked
            free = self.free()
        at = self._head % cap
        k = min(n, free, cap - at)
        self._reserved = k
        return self.slots[at:at + k]

    def commit(self, n: int, lengths) -> None:
        """Publish the first ``n`` reserved slots; ``lengths``: one int for all
        or ``n`` ints (bytes used in each slot, 0..slot_bytes)."""
        if not 0 <= n <= self._reserved:
            raise ValueError(f"commit: {n} slots, but {self._reserved} are reserved")
        if n == 0:
            return
        at = self._head % self.capacity
        if isinstance(lengths, (int, np.integer)):
            if not 0 <= lengths <= self.slot_bytes:
                raise ValueError(f"commit: length {lengths} does not fit a {self.slot_bytes}-byte slot")
            self.lengths[at:at + n] = lengths
        else:
            lengths = np.asarray(lengths)
            if lengths.shape != (n,):
                raise ValueError(f"commit: {n} slots but lengths has shape {lengths.shape}")
            if lengths.size and (lengths.min() < 0 or lengths.max() > self.slot_bytes):
                raise ValueError(f"commit: lengths must be 0..{self.slot_bytes}")
            self.lengths[at:at + n] = lengths
        if self._publish(n):
            self._ring_bell()

    def _publish(self, n: int) -> bool:
        """Publish ``n`` more slots; True if the consumer was asleep."""
        self._reserved = 0
        self._head += n
        return bool(_publish(self._ctrl, self._word + _R_HEAD, self._head, self._asleep))

    def _ring_bell(self) -> None:
        if self._bell is not None:
            self._bell()

    def write_rows(self, rows: np.ndarray, index: np.ndarray | None = None) -> int:
        """Copy the datagrams ``rows`` (``(n, size)`` uint8), or only
        ``rows[index]`` in that order (gathered while copying: no temporary
        array), into the ring; returns how many fitted (the first ones)."""
        size = rows.shape[1]
        if size > self.slot_bytes:
            raise ValueError(f"{size}-byte datagrams do not fit {self.name}'s {self.slot_bytes}-byte slots")
        if index is None:
            index, n = _NO_INDEX, rows.shape[0]
        else:
            index = np.ascontiguousarray(index, np.int64)
            n = index.shape[0]
            if n and (index.min() < 0 or index.max() >= rows.shape[0]):
                raise IndexError(f"write_rows: index out of range for {rows.shape[0]} rows")
        if n == 0:
            return 0
        return self._write(_NO_HEADS, rows, _NO_TAIL, index)

    def write_packets(self, heads: np.ndarray, payloads: np.ndarray, tail: np.ndarray,
                      index: np.ndarray) -> int:
        """Copy the datagrams ``heads[i] + payloads[i]`` for ``i`` in ``index``
        (in that order), ``heads[i] + tail`` for ``i == len(payloads)``
        (a padded last payload), assembled straight in the ring: a sender
        whose payloads are rows of one array (a worker's tensor) builds no
        packets. Returns how many fitted (the first ones)."""
        H, P = heads.shape[1], payloads.shape[1]
        if H + P > self.slot_bytes:
            raise ValueError(f"{H + P}-byte datagrams do not fit {self.name}'s {self.slot_bytes}-byte slots")
        if tail.shape != (P,):
            raise ValueError(f"write_packets: the padded last payload must have {P} bytes, got {tail.shape}")
        index = np.ascontiguousarray(index, np.int64)
        n = index.shape[0]
        if n and (index.min() < 0 or index.max() >= heads.shape[0] or index.max() > payloads.shape[0]):
            raise IndexError(f"write_packets: index out of range for {heads.shape[0]} headers and "
                             f"{payloads.shape[0]} + 1 payloads")
        if n == 0:
            return 0
        return self._write(heads, payloads, tail, index)

    def _write(self, heads, rows, tail, index) -> int:
        # one compiled call (copies, lengths, a publish per PUBLISH_SLOTS):
        # a Python loop over the pieces cost ~30 us per 256 datagrams
        done, head, asleep = _write_slots(self._ctrl, self._words, self._asleep_words, self.slots,
                                          self.lengths, _NO_MASKS, self._head, heads, rows, tail, index,
                                          _NO_MASKS, np.uint64(0), PUBLISH_SLOTS)
        self._head = int(head)
        self._reserved = 0
        if asleep:  # once, after the whole send: a sleeper wakes to all of it
            self._ring_bell()
        return int(done)

    def write_many(self, datagrams: list) -> int:
        """Copy bytes-like datagrams (any lengths) into the ring; returns how
        many fitted (the first ones)."""
        stride = self.slot_bytes
        for d in datagrams:
            if len(d) > stride:
                raise ValueError(f"a {len(d)}-byte datagram does not fit {self.name}'s {stride}-byte slots")
        if self._flat is None:
            self._flat = memoryview(self.slots.reshape(-1))
        flat, n, done, asleep = self._flat, len(datagrams), 0, False
        while done < n:
            view = self.reserve(min(n - done, PUBLISH_SLOTS))
            k = view.shape[0]
            if k == 0:
                break
            at = (self._head % self.capacity) * stride
            chunk = datagrams[done:done + k]
            for d in chunk:
                flat[at:at + len(d)] = d
                at += stride
            slot = self._head % self.capacity
            self.lengths[slot:slot + k] = [len(d) for d in chunk]
            asleep |= self._publish(k)
            done += k
        if asleep:
            self._ring_bell()
        return done

    def count_drops(self, n: int) -> None:
        """Producer: add to the ring's shared ``dropped`` counter."""
        w = self._word + _R_DROPPED
        _store(self._ctrl, w, int(_load(self._ctrl, w)) + n)

    @property
    def dropped(self) -> int:
        return int(_load(self._ctrl, self._word + _R_DROPPED))

    # -- consumer ----------------------------------------------------------------------

    def pending(self) -> int:
        """Slots waiting to be consumed (right from either end)."""
        ctrl, w = self._ctrl, self._word
        tail = int(_load(ctrl, w + _R_TAIL))
        return int(_load(ctrl, w + _R_HEAD)) - tail

    def _look(self) -> int:
        """Consumer: slots waiting (loads ``head``; ``tail`` is ours)."""
        self._head = int(_load(self._ctrl, self._word + _R_HEAD))
        return self._head - self._tail

    def peek(self, max_slots: int, skip: int = 0, refresh: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``max_slots`` waiting slots, starting ``skip`` slots after the
        oldest, as ``(view (m, slot_bytes), lengths (m,) uint32)``: read-only
        use until :meth:`release`. ``m`` stops at the ring's end.
        ``refresh=False``: only what the last look at ``head`` saw."""
        avail = (self._look() if refresh else self._head - self._tail) - skip
        if avail <= 0 or max_slots <= 0:
            return self.slots[:0], self.lengths[:0]
        at = (self._tail + skip) % self.capacity
        m = min(avail, max_slots, self.capacity - at)
        return self.slots[at:at + m], self._lengths(at, m)

    #: a consumer that hides some slots (:class:`MaskedRing`) shows them as length 0
    masked = False

    def _lengths(self, at: int, m: int) -> np.ndarray:
        return self.lengths[at:at + m]

    def release(self, m: int) -> None:
        """Hand the ``m`` oldest slots back to the producer."""
        if not 0 <= m <= self._head - self._tail:
            raise ValueError(f"release: {m} slots, but {self._head - self._tail} were peeked")
        if m:
            self._tail += m
            _store(self._ctrl, self._word + _R_TAIL, self._tail)


class MaskedRing(Ring):
    """Worker ``rank``'s consumer end of the multicast ring: slots whose rank
    mask lacks ``rank``'s bit (results the emulated network lost on the way
    to this worker) peek as length 0; the transports skip them, and they are
    released like the others."""

    masked = True

    def __init__(self, ctrl, word: int, asleep_word: int, lengths: np.ndarray, slots: np.ndarray,
                 bell=None, name: str = "", *, masks: np.ndarray, rank: int):
        super().__init__(ctrl, word, asleep_word, lengths, slots, bell, name)
        self.masks = masks
        self._bit = np.uint64(1 << rank)

    def _lengths(self, at: int, m: int) -> np.ndarray:
        lengths = self.lengths[at:at + m]
        mine = (self.masks[at:at + m] & self._bit) != 0
        return lengths if mine.all() else np.where(mine, lengths, np.uint32(0))


@_jit
def _min_tail(ctrl, words):
    low = _atomic_load(ctrl, words[0] + _R_TAIL)
    for r in range(1, words.shape[0]):
        t = _atomic_load(ctrl, words[r] + _R_TAIL)
        if t < low:
            low = t
    return np.int64(low)


@njit(cache=True, nogil=True, inline="always")
def copy_bytes(src, dst):
    """``dst[:] = src[:len(dst)]`` for 1-D arrays, as a loop indexed by its
    counter alone: LLVM then sees non-negative indices (no wrap-around
    select per byte) and moves whole vectors. Numba's slice assignment
    guards against overlap with a temporary instead."""
    for b in range(dst.shape[0]):
        dst[b] = src[b]


@_jit
def _write_slots(ctrl, words, asleep_words, slots, lengths, masks, head, heads, rows, tail, index,
                 row_masks, all_mask, piece):
    """Producer: copy datagrams into the ring from absolute slot ``head`` on,
    publishing every ``piece`` slots (so a consumer can start on the first
    while the rest are copied). Datagram ``j`` is source ``i = index[j]``
    (with a non-negative ``index[0]``; else ``i = j`` for every row of
    ``rows``): ``heads[i]`` (if ``heads`` has columns) followed by
    ``rows[i]``, or by ``tail`` for ``i == len(rows)`` (a padded last row).
    Gathered and assembled here, no temporary. ``words``: the control
    blocks of the ring's consumers (one; the multicast ring's: one per
    worker); the free slots are those every consumer has released, and
    ``head`` is published into each block. With ``masks`` (the multicast
    ring's), each slot gets its rank mask (``row_masks[j]``, or ``all_mask``
    if ``row_masks`` is empty). Returns (datagrams written: the first ones
    that fit, the new head, bit r set: consumer r was asleep, then the
    caller rings its doorbell)."""
    cap = slots.shape[0]
    H, P = heads.shape[1], rows.shape[1]
    size = H + P
    num_rows = rows.shape[0]
    gather = index.shape[0] > 0 and index[0] >= 0
    n = index.shape[0] if gather else num_rows
    per_row = row_masks.shape[0] > 0
    has_masks = masks.shape[0] > 0
    head = np.int64(head)
    free = cap - (head - _min_tail(ctrl, words))
    done = 0
    asleep = np.uint64(0)
    while done < n:
        if free <= 0:
            free = cap - (head - _min_tail(ctrl, words))
            if free <= 0:
                break
        k = min(n - done, piece, free)
        for j in range(k):
            at = (head + j) % cap
            src = index[done + j] if gather else done + j
            slot = slots[at]
            if H:
                copy_bytes(heads[src], slot[:H])
            if src < num_rows:
                copy_bytes(rows[src], slot[H:size])
            else:
                copy_bytes(tail, slot[H:size])
            lengths[at] = size
            if has_masks:
                masks[at] = row_masks[done + j] if per_row else all_mask
        head += k
        free -= k
        done += k
        for r in range(words.shape[0]):
            _atomic_store(ctrl, words[r] + _R_HEAD, head)
        for r in range(words.shape[0]):
            a = asleep_words[r]
            if _atomic_load(ctrl, a) != 0 and _atomic_exchange(ctrl, a, 0) != 0:
                asleep |= np.uint64(1) << np.uint64(r)
    return done, head, asleep


class MulticastRing:
    """The switch's (producer) end of the multicast ring: each datagram is
    written once, with the mask of the ranks it is for, and every worker
    reads it from its own :class:`MaskedRing` end. A slot is free again once
    every worker has released it, so the slowest worker's end decides, as a
    full down ring would."""

    def __init__(self, ctrl, words: list[int], asleep_words: list[int], lengths: np.ndarray,
                 masks: np.ndarray, slots: np.ndarray, bells: list, name: str = "mcast"):
        self._ctrl = ctrl
        self._words = np.array(words, np.int64)
        self._asleep = np.array(asleep_words, np.int64)
        self.lengths, self.masks, self.slots = lengths, masks, slots
        self.capacity, self.slot_bytes = slots.shape
        self._bells = list(bells)
        self.name = name
        self.num_workers = len(words)
        self.all_ranks = np.uint64((1 << len(words)) - 1)
        self._head = int(_load(ctrl, words[0] + _R_HEAD))

    def __repr__(self) -> str:
        return f"MulticastRing({self.num_workers} workers, {self.capacity} x {self.slot_bytes} B)"

    def free(self) -> int:
        return self.capacity - (self._head - int(_min_tail(self._ctrl, self._words)))

    def pending(self) -> int:
        """Slots not yet released by every worker."""
        return self._head - int(_min_tail(self._ctrl, self._words))

    def write_rows(self, rows: np.ndarray, index: np.ndarray | None = None,
                   masks: np.ndarray | None = None) -> int:
        """Copy ``rows`` (or ``rows[index]``) into the ring for every worker,
        or the i-th for the ranks of bit mask ``masks[i]``; returns how many
        fitted (the first ones)."""
        size = rows.shape[1]
        if size > self.slot_bytes:
            raise ValueError(f"{size}-byte datagrams do not fit {self.name}'s {self.slot_bytes}-byte slots")
        if index is None:
            index, n = _NO_INDEX, rows.shape[0]
        else:
            index = np.ascontiguousarray(index, np.int64)
            n = index.shape[0]
            if n and (index.min() < 0 or index.max() >= rows.shape[0]):
                raise IndexError(f"write_rows: index out of range for {rows.shape[0]} rows")
        if masks is None:
            masks = _NO_MASKS
        else:
            masks = np.ascontiguousarray(masks, np.uint64)
            if masks.shape != (n,):
                raise ValueError(f"write_rows: {n} datagrams but masks has shape {masks.shape}")
        if n == 0:
            return 0
        done, head, asleep = _write_slots(self._ctrl, self._words, self._asleep, self.slots,
                                          self.lengths, self.masks, self._head, _NO_HEADS, rows, _NO_TAIL,
                                          index, masks, self.all_ranks, PUBLISH_SLOTS)
        self._head = int(head)
        if asleep:
            for r in range(self.num_workers):
                if int(asleep) >> r & 1 and self._bells[r] is not None:
                    self._bells[r]()
        return int(done)

    def count_drops(self, n: int) -> None:
        w = int(self._words[0]) + _R_DROPPED
        _store(self._ctrl, w, int(_load(self._ctrl, w)) + n)

    @property
    def dropped(self) -> int:
        return int(_load(self._ctrl, int(self._words[0]) + _R_DROPPED))


# -- transports -------------------------------------------------------------------------

class _Bell:
    """Rings a consumer's doorbell (a byte to its abstract datagram socket)."""

    __slots__ = ("sock", "address", "misses")

    def __init__(self, sock: socket.socket, address: bytes):
        self.sock, self.address, self.misses = sock, address, 0

    def __call__(self) -> None:
        try:
            self.sock.sendto(b"\x01", self.address)
        except BlockingIOError:
            pass  # its queue is full of wake-ups already
        except OSError:  # nobody bound there (not attached yet, closed, died)
            self.misses += 1


def _trains(view: np.ndarray, lengths: np.ndarray, source, out: list, skip_empty: bool = False) -> None:
    """Append ``(bytes, size, source)`` per run of equal lengths (``skip_empty``:
    none for runs of length 0, the slots a :class:`MaskedRing` hides)."""
    m = lengths.shape[0]
    first = lengths[0]
    if m == 1 or lengths[-1] == first and (lengths == first).all():
        bounds = (0, m)
    else:
        bounds = (0, *(np.flatnonzero(lengths[1:] != lengths[:-1]) + 1).tolist(), m)
    stride = view.shape[1]
    for a, b in zip(bounds[:-1], bounds[1:]):
        size = int(lengths[a])
        if size == 0:
            if not skip_empty:
                out += [(b"", 0, source)] * (b - a)
        elif size == stride:
            out.append((view[a:b].tobytes(), size, source))
        else:
            out.append((view[a:b, :size].tobytes(), size, source))


def _runs(view: np.ndarray, lengths: np.ndarray, rank: int, out: list, skip_empty: bool = False) -> None:
    """Append ``(rank, view (m, L))`` per run of equal lengths (``skip_empty``:
    none for runs of length 0, the slots a :class:`MaskedRing` hides)."""
    m = lengths.shape[0]
    first = lengths[0]
    if m == 1 or lengths[-1] == first and (lengths == first).all():
        if first or not skip_empty:
            out.append((rank, view[:, :int(first)]))
        return
    bounds = (0, *(np.flatnonzero(lengths[1:] != lengths[:-1]) + 1).tolist(), m)
    for a, b in zip(bounds[:-1], bounds[1:]):
        if lengths[a] or not skip_empty:
            out.append((rank, view[a:b, :int(lengths[a])]))


class _ShmTransport:
    """What both ends share: receive from some rings, send into others."""

    def __init__(self, fabric: ShmFabric, who: str, rx: list[Ring], rx_ranks: list[int],
                 rx_sources: list, tx: dict, asleep_word: int, spin_s: float | None, owns_fabric: bool):
        if spin_s is None:  # the switch and every worker: K + 1 processes
            spin_s = default_spin_s(fabric.num_workers + 1)
        if not spin_s >= 0:
            raise ValueError(f"spin_s must be >= 0, got {spin_s!r}")
        warm_up()
        self.fabric = fabric
        self.spin_s = float(spin_s)
        self._spin_credit, self._spin_skipped = _SPIN_CREDIT_MAX, 0
        self._owns_fabric = owns_fabric
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(fabric._doorbell(who))
        except OSError as e:
            self._sock.close()
            raise ValueError(f"{who} of {fabric.name} is already attached by a live process "
                             f"({e.strerror})") from None
        self._sock.setblocking(False)
        self._poll = select.poll()
        self._poll.register(self._sock.fileno(), select.POLLIN)
        self._rx = rx
        self._rx_ranks = rx_ranks
        self._rx_sources = rx_sources
        self._tx = tx
        self._ctrl = fabric._ctrl
        self._asleep = asleep_word
        first = rx[0]._word
        self._rx_first, self._rx_count = first, len(rx)
        self._rx_stride = rx[1]._word - first if len(rx) > 1 else _RING_WORDS
        self._counts = np.zeros(len(rx), np.uint64)
        self._next = 0  # round-robin: the ring read first
        self._held: list[tuple[Ring, int]] = []  # peeked by recv_arrays, not yet released
        #: datagrams dropped because their ring was full (like a full socket buffer)
        self.send_errors = 0
        self.closed = False
        fabric._transports.add(self)

    # -- waiting ------------------------------------------------------------------------

    def _waiting(self) -> int:
        return int(_pending(self._ctrl, self._rx_first, self._rx_count, self._rx_stride, self._counts))

    def waiting(self) -> int:
        """Datagrams waiting in this end's receive rings now (those of the
        last ``recv_arrays`` count until they are released)."""
        return self._waiting()

    def wait(self, timeout: float | None) -> bool:
        """True once something is waiting; False after ``timeout`` s (None:
        no limit). Spins ``spin_s``, then sleeps on the doorbell."""
        if self._waiting():
            return True
        if timeout is not None and timeout <= 0:
            return False
        clock = time.monotonic
        now = clock()
        deadline = None if timeout is None else now + timeout
        if self.spin_s:
            if self._spin_credit > 0:
                spin_until = now + (self.spin_s if timeout is None else min(self.spin_s, timeout))
                while clock() < spin_until:
                    if self._waiting():
                        self._spin_credit = min(self._spin_credit + 1, _SPIN_CREDIT_MAX)
                        return True
                self._spin_credit -= _SPIN_FAIL_COST
            else:  # spinning has not paid lately: sleep, and try it now and then
                self._spin_skipped += 1
                if self._spin_skipped >= _SPIN_PROBE_EVERY:
                    self._spin_skipped, self._spin_credit = 0, 1
        ctrl, asleep, poll = self._ctrl, self._asleep, self._poll.poll
        args = (self._rx_first, self._rx_count, self._rx_stride, self._counts)
        while True:
            if _arm(ctrl, asleep, *args):
                return True
            if deadline is None:
                ms = None
            else:
                remaining = deadline - clock()
                if remaining <= 0:
                    _store(ctrl, asleep, 0)
                    return False
                ms = max(1, math.ceil(remaining * 1e3))
            try:
                woken = poll(ms)
            finally:
                _store(ctrl, asleep, 0)
            if woken:
                self._drain()
            if self._waiting():
                return True
            if deadline is not None and clock() >= deadline:
                return False

    def _drain(self) -> None:
        # one wake-up byte per sleep (the producer that clears the flag sends
        # it); a late extra one only makes a later poll return early
        try:
            self._sock.recv(16)
        except (BlockingIOError, InterruptedError):
            pass

    def fileno(self) -> int:
        """The doorbell: readable only after :meth:`wait` went to sleep."""
        return self._sock.fileno()

    # -- receiving ------------------------------------------------------------------------

    def _ready_rings(self) -> list[int]:
        """Rings with data, as the last wait saw them (their heads cached)."""
        counts = self._counts.tolist()
        ready = [r for r, n in enumerate(counts) if n]
        for r in ready:
            ring = self._rx[r]
            ring._head = ring._tail + counts[r]
        if len(ready) > 1:  # round-robin, so no ring can starve the others
            start = self._next
            self._next = (start + 1) % self._rx_count
            ready.sort(key=lambda r: (r - start) % self._rx_count)
        return ready

    def recv_trains(self, timeout: float | None, max_packets: int = 256) -> list[tuple[bytes, int, Hashable]]:
        """Up to ``max_packets`` datagrams as ``(buffer, size, source)``:
        ``buffer`` holds ``len(buffer) // size`` equally long datagrams back
        to back (a run of one ring; split where the ring wraps), like
        ``UdpTransport.recv_trains``. Waits at most ``timeout`` s for the first."""
        self.release_arrays()
        out: list = []
        if not self.wait(timeout):
            return out
        budget = max_packets
        for r in self._ready_rings():
            ring, source = self._rx[r], self._rx_sources[r]
            while budget > 0:
                view, lengths = ring.peek(budget, refresh=False)
                m = lengths.shape[0]
                if not m:
                    break
                _trains(view, lengths, source, out, ring.masked)
                ring.release(m)
                budget -= m
            if budget <= 0:
                break
        return out

    def recv_batch(self, timeout: float | None, max_packets: int = 256) -> list[tuple[bytes, Hashable]]:
        """Up to ``max_packets`` datagrams as ``(bytes, source)``, in order per source."""
        return split_trains(self.recv_trains(timeout, max_packets))

    def recv_arrays(self, timeout: float | None, max_packets: int = 256, *, min_packets: int = 1,
                    linger_s: float = 0.0) -> list[tuple[int, np.ndarray]]:
        """Zero copy: up to ``max_packets`` datagrams as ``(rank, view)``,
        ``view`` a read-only-by-convention ``(m, L)`` uint8 array *into the
        ring* holding a run of ``m`` datagrams of ``L`` bytes (row stride =
        the slot size: C-contiguous when ``L`` is the slot size). ``rank`` is
        the ring's worker rank (the sender's, at the switch). The views stay
        valid until :meth:`release_arrays` or the next ``recv_*`` call, which
        hand their slots back to the producer: finish with them (or copy)
        before that.

        Coalescing (like a NIC's interrupt moderation): if fewer than
        ``min_packets`` are waiting once something is, nap ``linger_s``
        (without raising the asleep flag, so producers do not ring) and take
        what is there then. A caller that expects more soon trades that much
        latency for fewer, larger batches: each wake-up costs a process
        switch and a pass of per-batch work, which with more processes than
        CPUs is what runs out."""
        self.release_arrays()
        out: list = []
        if not self.wait(timeout):
            return out
        if linger_s > 0 and min_packets > 1 and self._waiting() < min_packets:
            time.sleep(linger_s)
            self._waiting()  # the rings' counts as they are now
        budget = max_packets
        for r in self._ready_rings():
            ring, rank = self._rx[r], self._rx_ranks[r]
            taken = 0
            while budget > 0:
                view, lengths = ring.peek(budget, skip=taken, refresh=False)
                m = lengths.shape[0]
                if not m:
                    break
                _runs(view, lengths, rank, out, ring.masked)
                taken += m
                budget -= m
            if taken:
                self._held.append((ring, taken))
            if budget <= 0:
                break
        return out

    @property
    def rx_rings(self) -> list[tuple[int, Ring]]:
        """``(rank, consumer end)`` of the rings this transport receives from."""
        return list(zip(self._rx_ranks, self._rx))

    def release_arrays(self) -> None:
        """Give back the slots of the last :meth:`recv_arrays`."""
        if self._held:
            for ring, m in self._held:
                ring.release(m)
            self._held.clear()

    # -- sending ------------------------------------------------------------------------------

    def tx_ring(self, address) -> Ring:
        """The producer end of the ring to ``address``: write datagrams in place
        (``reserve`` / ``commit``, e.g. a kernel's output) instead of sending
        bytes. The same ring the ``send*`` methods fill: don't interleave
        with them between a ``reserve`` and its ``commit``."""
        ring = self._tx.get(address)
        if ring is None:
            raise ValueError(f"{address!r} is not a destination of this transport "
                             f"(expected one of {sorted(self._tx, key=str)[:4]}...)")
        return ring

    def free_slots(self, address) -> int:
        """How many datagrams to ``address`` would fit now."""
        return self.tx_ring(address).free()

    def _dropped(self, ring: Ring, n: int) -> None:
        self.send_errors += n
        ring.count_drops(n)

    def send(self, address, data) -> None:
        ring = self.tx_ring(address)
        if not ring.write_many([data]):
            self._dropped(ring, 1)

    def send_batch(self, items: Iterable[tuple[Hashable, bytes]]) -> None:
        """Send datagrams; order is kept per destination. A full ring drops
        (and counts) the datagrams that do not fit."""
        groups: dict = {}
        for address, data in items:
            group = groups.get(address)
            if group is None:
                groups[address] = [data]
            else:
                group.append(data)
        for address, datagrams in groups.items():
            ring = self.tx_ring(address)
            done = ring.write_many(datagrams)
            if done < len(datagrams):
                self._dropped(ring, len(datagrams) - done)

    def send_rows(self, address, rows: np.ndarray, index: np.ndarray) -> None:
        """Send the datagrams ``rows[index]`` (``rows`` 2-D uint8, one
        datagram per row), gathered straight into the ring: what
        ``send_train(address, rows[index], rows.shape[1])`` does, without
        the temporary copy."""
        if not (isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.dtype == np.uint8):
            raise ValueError("send_rows: rows must be a 2-D uint8 array")
        ring = self.tx_ring(address)
        lost = len(index) - ring.write_rows(rows, index)
        if lost:
            self._dropped(ring, lost)

    def send_packets(self, address, heads: np.ndarray, payloads: np.ndarray, tail: np.ndarray,
                     index: np.ndarray) -> None:
        """Send the datagrams ``heads[i] + payloads[i]`` for ``i`` in
        ``index`` (``heads[i] + tail`` for ``i == len(payloads)``), assembled
        straight in the ring (:meth:`Ring.write_packets`): a worker sends
        rows of its array with a header each, without building packets."""
        for name, a in (("heads", heads), ("payloads", payloads)):
            if not (isinstance(a, np.ndarray) and a.ndim == 2 and a.dtype == np.uint8):
                raise ValueError(f"send_packets: {name} must be a 2-D uint8 array")
        if not (isinstance(tail, np.ndarray) and tail.ndim == 1 and tail.dtype == np.uint8):
            raise ValueError("send_packets: tail must be a 1-D uint8 array")
        ring = self.tx_ring(address)
        lost = len(index) - ring.write_packets(heads, payloads, tail, index)
        if lost:
            self._dropped(ring, lost)

    def send_train(self, address, datagrams, size: int) -> None:
        """Send ``len(datagrams) // size`` datagrams of ``size`` bytes stored
        back to back (bytes-like), or the rows of a 2-D uint8 array (then
        ``size`` must be its width; any row stride): one copy into the ring."""
        ring = self.tx_ring(address)
        if isinstance(datagrams, np.ndarray) and datagrams.ndim == 2:
            rows = datagrams
            if rows.dtype != np.uint8 or rows.shape[1] != size:
                raise ValueError(f"send_train: rows must be uint8 of width {size}, got "
                                 f"{rows.dtype} {rows.shape}")
            tail = None
        else:
            if size <= 0:
                raise ValueError(f"send_train: size must be > 0, got {size}")
            flat = np.frombuffer(datagrams, np.uint8)
            n = flat.size // size
            rows = flat[:n * size].reshape(n, size)
            tail = flat[n * size:] if flat.size % size else None  # a shorter last datagram
        done = ring.write_rows(rows)
        lost = rows.shape[0] - done
        if tail is not None:
            if lost or not ring.write_many([tail]):
                lost += 1
        if lost:
            self._dropped(ring, lost)

    # -- the rest ----------------------------------------------------------------------------

    def _peer_bound(self, who: str) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            probe.connect(self.fabric._doorbell(who))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def ring_stats(self) -> dict:
        """Per ring: datagrams waiting and dropped (full ring) so far."""
        out = {}
        for ring in (*self._rx, *self._tx.values()):
            out[ring.name] = {"pending": ring.pending(), "dropped": ring.dropped}
        return out

    def close(self) -> None:
        """Close the doorbell and drop the views (the fabric stays, unless this
        transport attached it itself)."""
        if self.closed:
            return
        self.closed = True
        self._held.clear()
        self._sock.close()
        self._rx, self._tx, self._counts = [], {}, None
        self._ctrl = None
        if self._owns_fabric:
            self.fabric.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ShmSwitchTransport(_ShmTransport):
    """The switch's end: receives from every worker's ring (sources
    ``("shm", rank)``), sends to ``("shm", rank)``."""

    def __init__(self, fabric: ShmFabric, *, spin_s: float | None = None, owns_fabric: bool = False):
        K = fabric.num_workers
        rx = [fabric.up_ring(r) for r in range(K)]
        super().__init__(fabric, "switch", rx, list(range(K)), fabric.worker_addresses, {},
                         _H_SWITCH_ASLEEP, spin_s, owns_fabric)
        for r in range(K):
            self._tx[worker_address(r)] = fabric.down_ring(r, _Bell(self._sock, fabric._doorbell(f"w{r}")))
        #: every worker's copy of a result at once (:meth:`send_multicast`)
        self.multicast = fabric.multicast_producer([self._tx[worker_address(r)]._bell for r in range(K)])

    def send_multicast(self, rows: np.ndarray, index: np.ndarray | None = None,
                       masks: np.ndarray | None = None) -> None:
        """The datagrams ``rows`` (or ``rows[index]``), each for every worker
        (or the ranks of bit mask ``masks[i]``), written once into the
        multicast ring. Those that do not fit are counted drops, as on a full
        down ring."""
        if not (isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.dtype == np.uint8):
            raise ValueError("send_multicast: rows must be a 2-D uint8 array")
        n = rows.shape[0] if index is None else len(index)
        lost = n - self.multicast.write_rows(rows, index, masks)
        if lost:
            self.send_errors += lost
            self.multicast.count_drops(lost)

    def step_rings(self) -> "SwitchRings":
        """The arrays of the switch's rings for a compiled loop that consumes
        and produces in place (``emulator.fastpath.RingStep``), with where
        each ring stands now. Gives back what the last ``recv_arrays`` held.
        Hand the positions back with :meth:`sync_rings` before using the
        other methods again."""
        self.release_arrays()
        K = self.fabric.num_workers
        up = self._rx
        down = [self._tx[worker_address(r)] for r in range(K)]
        mc = self.multicast
        ctrl = self._ctrl
        return SwitchRings(ctrl, np.array([ring._word for ring in up], np.int64),
                           tuple(ring.slots for ring in up), tuple(ring.lengths for ring in up),
                           np.array([int(_load(ctrl, ring._word + _R_TAIL)) for ring in up], np.int64),
                           np.array([ring._words for ring in down], np.int64).reshape(K, 1),
                           np.array([ring._asleep_words for ring in down], np.int64).reshape(K, 1),
                           tuple(ring.slots for ring in down), tuple(ring.lengths for ring in down),
                           np.array([ring._head for ring in down], np.int64), mc._words, mc._asleep, mc.slots,
                           mc.lengths, mc.masks, np.array([mc._head], np.int64),
                           [ring._bell for ring in down])

    def sync_rings(self, rings: "SwitchRings", full=None) -> None:
        """Where a compiled loop left the rings (see :meth:`step_rings`), and
        per rank (the last entry: the multicast ring) how many datagrams it
        could not write because the ring was full."""
        K = self.fabric.num_workers
        for ring, tail in zip(self._rx, rings.up_tails.tolist()):
            ring._tail = ring._head = tail
        for r, head in enumerate(rings.down_heads.tolist()):
            self._tx[worker_address(r)]._head = head
        self.multicast._head = int(rings.mc_head[0])
        if full is not None:
            for who, n in enumerate(full.tolist()):
                if n:
                    ring = self.multicast if who == K else self._tx[worker_address(who)]
                    self.send_errors += n
                    ring.count_drops(n)

    def load_rings(self, rings: "SwitchRings") -> None:
        """The other way: where the Python methods left the rings, into ``rings``."""
        rings.up_tails[:] = [ring._tail for ring in self._rx]
        rings.down_heads[:] = [self._tx[worker_address(r)]._head for r in range(self.fabric.num_workers)]
        rings.mc_head[0] = self.multicast._head

    def ring_stats(self) -> dict:
        out = super().ring_stats()
        out[self.multicast.name] = {"pending": self.multicast.pending(), "dropped": self.multicast.dropped}
        return out

    def close(self) -> None:
        self.multicast = None  # its arrays would keep the mapping
        super().close()

    @classmethod
    def attach(cls, descriptor, *, spin_s: float | None = None) -> "ShmSwitchTransport":
        """Attach the fabric and open the switch's end; closing the transport
        unmaps the fabric too."""
        fabric = ShmFabric.attach(descriptor)
        try:
            return cls(fabric, spin_s=spin_s, owns_fabric=True)
        except BaseException:
            fabric.close()
            raise

    @property
    def address(self) -> tuple[str, str]:
        return SWITCH_ADDRESS

    def peer_alive(self, address) -> bool:
        """Worker ``address`` has attached and its process still holds its end."""
        self.tx_ring(address)
        return self._peer_bound(f"w{address[1]}")


class SwitchRings(NamedTuple):
    """The switch's rings as arrays (:meth:`ShmSwitchTransport.step_rings`):
    the control words; the up rings (control words, slots and lengths per
    rank, their tails); the down rings (control word and asleep flag per
    rank as ``(K, 1)``, slots, lengths, heads); the multicast ring (its K
    consumers' control words and asleep flags, slots, lengths, rank masks,
    its head as a 1-element array); the down rings' doorbells."""

    ctrl: np.ndarray
    up_words: np.ndarray
    up_slots: tuple
    up_lengths: tuple
    up_tails: np.ndarray
    down_words: np.ndarray
    down_asleep: np.ndarray
    down_slots: tuple
    down_lengths: tuple
    down_heads: np.ndarray
    mc_words: np.ndarray
    mc_asleep: np.ndarray
    mc_slots: np.ndarray
    mc_lengths: np.ndarray
    mc_masks: np.ndarray
    mc_head: np.ndarray
    bells: list


class WorkerRings(NamedTuple):
    """A worker's rings as arrays (:meth:`ShmWorkerTransport.step_rings`):
    the control words, its down ring and its end of the multicast ring
    (control word, slots, lengths; the multicast ring's rank masks and this
    worker's bit), its up ring (control word and asleep flag as 1-element
    arrays, as ``_write_slots`` takes them; slots, lengths), and where they
    stand: the up ring's head, the other two's tails."""

    ctrl: np.ndarray
    down_word: int
    down_slots: np.ndarray
    down_lengths: np.ndarray
    mcast_word: int
    mcast_slots: np.ndarray
    mcast_lengths: np.ndarray
    mcast_masks: np.ndarray
    bit: np.uint64
    up_words: np.ndarray
    up_asleep: np.ndarray
    up_slots: np.ndarray
    up_lengths: np.ndarray
    up_head: int
    down_tail: int
    mcast_tail: int


class ShmWorkerTransport(_ShmTransport):
    """Worker ``rank``'s end: sends to ``("shm", "switch")``, receives the
    results of its own ring (source ``("shm", "switch")``)."""

    def __init__(self, fabric: ShmFabric, rank: int, *, spin_s: float | None = None,
                 owns_fabric: bool = False):
        rank = _check_int("rank", rank, 0, fabric.num_workers - 1)
        self.rank = rank
        # its own results and everyone's (the multicast ring), waited on together
        rx = [fabric.down_ring(rank), fabric.multicast_ring(rank)]
        super().__init__(fabric, f"w{rank}", rx, [rank, rank], [SWITCH_ADDRESS, SWITCH_ADDRESS], {},
                         fabric.layout.ring_word(fabric.num_workers + rank) + _R_ASLEEP, spin_s,
                         owns_fabric)
        self._tx[SWITCH_ADDRESS] = fabric.up_ring(rank, _Bell(self._sock, fabric._doorbell("switch")))

    def step_rings(self) -> "WorkerRings":
        """The arrays of this end's rings for a compiled loop that consumes and
        produces in place (``fpisa._client_kernels.worker_step``), with where
        each ring stands now. Gives back what the last ``recv_arrays`` held.
        Hand the positions the loop reached back with :meth:`sync_rings`
        before using the other methods again."""
        self.release_arrays()
        down, mcast = self._rx
        up = self._tx[SWITCH_ADDRESS]
        ctrl = self._ctrl
        return WorkerRings(ctrl, down._word, down.slots, down.lengths, mcast._word, mcast.slots, mcast.lengths,
                           mcast.masks, mcast._bit, up._words, up._asleep_words, up.slots, up.lengths,
                           up._head, int(_load(ctrl, down._word + _R_TAIL)),
                           int(_load(ctrl, mcast._word + _R_TAIL)))

    def sync_rings(self, up_head: int, down_tail: int, mcast_tail: int, ring_full: int = 0) -> None:
        """Where a compiled loop left the rings (see :meth:`step_rings`), and
        how many datagrams it could not write because the up ring was full."""
        down, mcast = self._rx
        up = self._tx[SWITCH_ADDRESS]
        up._head = int(up_head)
        for ring, tail in ((down, down_tail), (mcast, mcast_tail)):
            ring._tail = ring._head = int(tail)
        if ring_full:
            self._dropped(up, int(ring_full))

    def ring_switch_bell(self) -> None:
        """Wake the switch (a compiled loop found it asleep after a write)."""
        self._tx[SWITCH_ADDRESS]._ring_bell()

    @classmethod
    def attach(cls, descriptor, rank: int, *, spin_s: float | None = None) -> "ShmWorkerTransport":
        """Attach the fabric and open worker ``rank``'s end; closing the
        transport unmaps the fabric too."""
        fabric = ShmFabric.attach(descriptor)
        try:
            return cls(fabric, rank, spin_s=spin_s, owns_fabric=True)
        except BaseException:
            fabric.close()
            raise

    @property
    def address(self) -> tuple[str, int]:
        return worker_address(self.rank)

    def peer_alive(self, address=SWITCH_ADDRESS) -> bool:
        """The switch has attached and its process still holds its end."""
        self.tx_ring(address)
        return self._peer_bound("switch")
