"""The software switch's data plane: SwitchML's slot protocol around FPISA registers.

:class:`SwitchPipeline` is transport independent: ``process(packet bytes,
source address)`` returns the ``(destination, packet bytes)`` pairs to send,
so tests drive it with packets in memory and the server loop
(:mod:`emulator.server`) drives it from UDP or raw Ethernet.

State per (slot i, shadow set s), one *row* = s * pool_size + i:
registers (:class:`fpisa.registers.SlotRegisters`, the numerics core's own
kernels, one instance per wire mode the job uses), a worker bitmap, an
arrival count, a completed flag, the packet id of the round it holds
(``round_id``), the max of the header block exponents and, when recording,
the arrival order. The algorithm is SwitchML's (anchors-switchml.md) plus
the round id, which makes late duplicates harmless (docs/protocol.md):

- a DATA packet with id g for (i, s) whose row holds a round: if g is
  *older* than ``round_id`` (serial-number arithmetic on 32 bits) it is
  stale: dropped (``stale``), nothing touched; if g is *newer*, it is the
  first arrival of a new round;
- g == ``round_id``: from worker r it is a duplicate if bit r of
  bitmap[i][s] is set: for a completed round RESULT_RETX to the sender
  only, for an incomplete one dropped; if the bit is clear and the round is
  complete, r has moved on to (i, 1-s) and has the result: stale, dropped;
- otherwise (a new round, or the next arrival of the current one) it sets
  bit r of bitmap[i][s] and clears it in bitmap[i][1-s]; the first arrival
  of a round *writes* the registers (SlotRegisters ``first=True``: the
  implicit reset) and ``round_id``, later ones *add*; the last one
  completes the round and the result goes to every worker (one RESULT per
  worker, with the destination rank in the header).

Why this is loss tolerant: a worker sends slot i in set 1-s only after it
got the result of (i, s), so (i, s) is overwritten only when every worker
has had its result. Why duplicates and reordering are harmless too: a DATA
packet can change state only if its id is that of the round in progress
in its (slot, set) or newer; a late copy is always older or belongs to a
completed round its sender has left.

Nothing raises on a bad packet: every rejection is a counted drop with a
reason (``SwitchCounters.dropped``).
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Hashable

import numpy as np

from fpisa.counters import Counters
from fpisa.formats import get_rounding
from fpisa.job import JobSpec
from fpisa.protocol import (
    DATA_VT,
    FIELD_OFFSETS,
    FLAG_RAW,
    HEADER_BYTES,
    HEADER_FIELDS,
    RAW_EXPONENT_DTYPE,
    RAW_MANTISSA_DTYPE,
    RESULT_VT,
    RETX_VT,
    MalformedPacket,
    MsgType,
    WireMode,
    element_dtype,
    payload_bytes,
    split_pool_index,
    pool_index,
    unpack,
)
from fpisa.registers import SlotRegisters

__all__ = ["SwitchConfig", "SwitchPipeline", "SwitchCounters", "DROP_REASONS", "header_struct"]


#: every drop reason except the malformed:<reason> family from protocol.unpack
DROP_REASONS = (
    "not_data",
    "wrong_job",
    "unknown_worker",
    "rank_mismatch",
    "config_mismatch",
    "slot_out_of_range",
    "duplicate_incomplete",
    "stale",
)

_STRUCT_CODES = {">u1": "B", ">u2": "H", ">i2": "h", ">u4": "I"}


def header_struct() -> struct.Struct:
    """A struct for the header, derived from protocol.HEADER_FIELDS (the fast
    path's parser: one call instead of a numpy record per packet)."""
    return struct.Struct(">" + "".join(_STRUCT_CODES[t] for _, t, _, _ in HEADER_FIELDS))


_HEADER = header_struct()
assert _HEADER.size == HEADER_BYTES
_RANK_OFFSET = FIELD_OFFSETS["rank"]
#: modes whose payload is the job format's bit patterns (the header's fmt must match)
_FLOAT_WIRE_MODES = frozenset(int(m) for m in WireMode if m.float_payload)


@dataclass(frozen=True)
class SwitchConfig:
    """One job as installed in the switch by its control plane: the job, the
    workers' addresses and what the switch itself may choose."""

    job: JobSpec
    #: transport addresses by rank (UDP: (ip, port); raw Ethernet: EthEndpoint)
    workers: tuple
    #: the switch's read-out normalization; a real switch truncates ("rz")
    rounding: str = "rz"
    #: keep each completed slot's arrival order (for bit-exact checks)
    record_orders: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.job, JobSpec):
            raise ValueError(f"switch: job must be a JobSpec, got {type(self.job).__name__}")
        get_rounding(self.rounding)
        workers = tuple(self.workers)
        object.__setattr__(self, "workers", workers)
        if len(workers) != self.job.num_workers:
            raise ValueError(f"switch: {len(workers)} worker addresses for {self.job.num_workers} workers")
        try:
            distinct = len(set(workers)) == len(workers)
        except TypeError:
            raise ValueError("switch: worker addresses must be hashable (e.g. (ip, port) tuples)") from None
        if not distinct:
            raise ValueError(f"switch: worker addresses must be distinct, got {workers}")

    def replace(self, **changes) -> "SwitchConfig":
        return dataclasses.replace(self, **changes)


class ArrivalLog:
    """The arrival order of every completed slot: (packet id, wire mode, ranks).

    numpy arrays that grow, so the batch fast path appends in compiled code:
    it calls :meth:`reserve` for a whole batch first.
    """

    def __init__(self, num_workers: int, capacity: int = 1024):
        self.packet_id = np.zeros(capacity, np.int64)
        self.wire_mode = np.zeros(capacity, np.int8)
        self.order = np.zeros((capacity, num_workers), np.int16)
        #: entries used (an array so compiled code can advance it)
        self.count = np.zeros(1, np.int64)

    def __len__(self) -> int:
        return int(self.count[0])

    def reserve(self, more: int) -> None:
        need = len(self) + more
        if need > self.packet_id.size:
            size = max(need, 2 * self.packet_id.size)
            self.packet_id = np.resize(self.packet_id, size)
            self.wire_mode = np.resize(self.wire_mode, size)
            self.order = np.resize(self.order, (size, self.order.shape[1]))

    def append(self, packet_id: int, wire_mode: int, order: np.ndarray) -> None:
        self.reserve(1)
        i = len(self)
        self.packet_id[i], self.wire_mode[i], self.order[i] = packet_id, wire_mode, order
        self.count[0] += 1

    def entries(self) -> list[tuple[int, int, tuple[int, ...]]]:
        n = len(self)
        return [(int(p), int(m), tuple(int(r) for r in o))
                for p, m, o in zip(self.packet_id[:n], self.wire_mode[:n], self.order[:n])]

    def arrays(self) -> dict[str, np.ndarray]:
        n = len(self)
        return {"packet_id": self.packet_id[:n].copy(), "wire_mode": self.wire_mode[:n].copy(),
                "order": self.order[:n].copy()}


class SwitchCounters(Counters):
    """received: packets in; aggregated: DATA packets folded into a slot (not
    duplicates); completed: slots completed (last arrival seen); multicast:
    RESULT packets sent (one per worker per completed slot); retransmitted:
    RESULT_RETX packets sent (a duplicate for a completed slot); dropped:
    drops by reason (:data:`DROP_REASONS` and ``malformed:<reason>``)."""

    NAMES = ("received", "aggregated", "completed", "multicast", "retransmitted")

    def __init__(self, **values):
        super().__init__(**values)
        self.dropped: dict[str, int] = {}

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict:
        return {"received": self.received, "aggregated": self.aggregated,
                "completed": self.completed, "multicast": self.multicast,
                "retransmitted": self.retransmitted, "dropped_total": self.dropped_total,
                "dropped": dict(sorted(self.dropped.items()))}


class SwitchPipeline:
    """The switch for one job; see the module docstring for the algorithm."""

    def __init__(self, config: SwitchConfig):
        self.config = config
        job = self.job = config.job
        self.counters = SwitchCounters()
        #: transport address -> rank
        self.rank_of: dict[Hashable, int] = {addr: r for r, addr in enumerate(config.workers)}
        rows = 2 * job.window
        E = job.packet_elements
        self.registers: dict[WireMode, SlotRegisters] = {
            m: SlotRegisters(m, rows, E, job.fmt, job.register_bits) for m in job.wire_modes
        }
        self._fmt_code = job.fmt_code
        self._pool = job.window
        # per wire mode: (payload dtype, expected DATA length)
        self._data_layout = {
            int(m): (element_dtype(m, self._fmt_code), HEADER_BYTES + payload_bytes(m, self._fmt_code, E))
            for m in job.wire_modes
        }
        # per-row state, numpy so the batch fast path (emulator.fastpath)
        # works on the very same arrays as this reference path
        K = job.num_workers
        self.bitmap = np.zeros(rows, np.int64)
        self.count = np.zeros(rows, np.int64)
        self.completed = np.zeros(rows, np.bool_)
        #: the packet id of the round a row holds (valid where count > 0)
        self.round_id = np.zeros(rows, np.int64)
        self.block_exponent = np.zeros(rows, np.int64)
        self.row_mode = np.full(rows, int(job.data_wire_mode), np.int64)
        self.orders = np.zeros((rows, K), np.int16)  # arrival order of the current generation
        # the completed result of each row, kept for retransmissions
        self.result_payload = np.zeros((rows, self.max_result_payload), np.uint8)
        self.result_length = np.zeros(rows, np.int64)
        self.result_flags = np.zeros(rows, np.int64)
        #: completed slots' arrival orders, when the job records them
        self.log = ArrivalLog(K)
        self._rounding = get_rounding(config.rounding)

    @property
    def max_result_payload(self) -> int:
        return self.job.max_result_bytes - HEADER_BYTES

    @property
    def readout_nearest_even(self) -> bool:
        return self._rounding.value == "rne"

    @property
    def data_length(self) -> int:
        """The length of the DATA packets of the job's data mode and of
        SwitchML's exponent pass (the batch fast path's; the query modes of
        ``JobSpec.extra_wire_modes`` may differ, e.g. int32 COUNT in an fp16
        job: the fast path hands those to :meth:`process`)."""
        lengths = {self._data_layout[int(m)][1] for m in self.job.info.wire_modes}
        assert len(lengths) == 1, "a mode's data and exponent passes carry equally long payloads"
        return lengths.pop()

    @property
    def recorded(self) -> list[tuple[int, int, tuple[int, ...]]]:
        """(packet_id, wire mode, arrival order) per completed slot, in completion
        order (empty unless the job records orders)."""
        return self.log.entries()

    def recorded_arrays(self) -> dict[str, np.ndarray]:
        return self.log.arrays()

    # -- the data plane (reference path: one packet at a time) -------------------

    def process(self, data: bytes, source: Hashable) -> list[tuple[Hashable, bytes]]:
        """One arriving packet -> the packets to send (possibly none)."""
        counters = self.counters
        counters.received += 1
        c = self.job
        try:
            (vt, mode, fmt, flags, job, rank, nw, ne, pidx, bexp, pid) = _HEADER.unpack_from(data)
        except struct.error:
            return self._drop_malformed(data)
        layout = self._data_layout.get(mode)
        if (vt != DATA_VT or layout is None or len(data) != layout[1] or nw != c.num_workers
                or ne != c.packet_elements or (mode in _FLOAT_WIRE_MODES and fmt != self._fmt_code)):
            return self._classify_drop(data)
        if job != c.job:
            counters.drop("wrong_job")
            return []
        r = self.rank_of.get(source)
        if r is None:
            counters.drop("unknown_worker")
            return []
        if rank != r:
            counters.drop("rank_mismatch")
            return []
        slot, s = split_pool_index(pidx)
        if slot >= self._pool:
            counters.drop("slot_out_of_range")
            return []
        row = s * self._pool + slot
        other = (1 - s) * self._pool + slot
        bit = 1 << r
        if self.count[row] == 0:  # the row never held a round
            first = True
        else:
            age = (int(self.round_id[row]) - pid) & 0xFFFFFFFF
            if age == 0:  # the round held here
                if self.bitmap[row] & bit:  # duplicate
                    if self.completed[row]:
                        counters.retransmitted += 1
                        return [(source, self._result_packet(row, RETX_VT, r, pid))]
                    counters.drop("duplicate_incomplete")
                    return []
                if self.completed[row]:
                    # its sender cleared the bit by moving on to the other
                    # set, so it has this result: a late copy
                    counters.drop("stale")
                    return []
                first = False
            elif age < 0x80000000:  # an older round's packet
                counters.drop("stale")
                return []
            else:  # a newer round
                first = True
        if not first and mode != self.row_mode[row]:
            # workers disagree about what this slot generation aggregates
            counters.drop("config_mismatch")
            return []
        self.bitmap[row] |= bit
        self.bitmap[other] &= ~bit
        payload = np.frombuffer(data, layout[0], c.packet_elements, HEADER_BYTES)
        self.registers[mode].accumulate(row, payload, first)
        counters.aggregated += 1
        if first:
            self.completed[row] = False
            self.count[row] = 0
            self.row_mode[row] = mode
            self.block_exponent[row] = bexp
            self.round_id[row] = pid
        elif bexp > self.block_exponent[row]:
            self.block_exponent[row] = bexp
        self.orders[row, self.count[row]] = r
        self.count[row] += 1
        if self.count[row] < c.num_workers:
            return []
        return self._complete(row, pid, flags)

    def _complete(self, row: int, packet_id: int, flags: int) -> list[tuple[Hashable, bytes]]:
        mode = WireMode(int(self.row_mode[row]))
        regs = self.registers[mode]
        if mode.float_payload and not mode.is_float:  # float min/max: the stored bit patterns
            payload = regs.read(row).astype(element_dtype(mode, self._fmt_code)).tobytes()
            result_flags = 0
        elif mode.is_float:
            payload = regs.read(row, self._rounding).astype(element_dtype(mode, self._fmt_code)).tobytes()
            result_flags = regs.row_flags(row)
            if self.job.raw_registers or flags & FLAG_RAW:
                mantissa, exponent = regs.raw(row)
                payload += (mantissa.astype(RAW_MANTISSA_DTYPE).tobytes()
                            + exponent.astype(RAW_EXPONENT_DTYPE).tobytes())
                result_flags |= FLAG_RAW
        else:
            payload = regs.read(row).astype(">i4").tobytes()
            result_flags = 0
        self.completed[row] = True
        self.result_payload[row, :len(payload)] = np.frombuffer(payload, np.uint8)
        self.result_length[row] = len(payload)
        self.result_flags[row] = result_flags
        self.counters.completed += 1
        if self.config.record_orders:
            self.log.append(packet_id, int(mode), self.orders[row])
        header = bytearray(self._result_header(row, RESULT_VT, 0, packet_id))
        payload = self.result_payload[row, :len(payload)].tobytes()
        out = []
        for r, address in enumerate(self.config.workers):
            header[_RANK_OFFSET] = r
            out.append((address, bytes(header) + payload))
        self.counters.multicast += len(out)
        return out

    def _result_header(self, row: int, vt: int, rank: int, packet_id: int) -> bytes:
        c = self.job
        bexp = max(-0x8000, min(0x7FFF, int(self.block_exponent[row])))
        return _HEADER.pack(vt, int(self.row_mode[row]), self._fmt_code, int(self.result_flags[row]),
                            c.job, rank, c.num_workers, c.packet_elements,
                            pool_index(row % self._pool, row // self._pool), bexp, packet_id)

    def _result_packet(self, row: int, vt: int, rank: int, packet_id: int) -> bytes:
        payload = self.result_payload[row, :self.result_length[row]].tobytes()
        return self._result_header(row, vt, rank, packet_id) + payload

    # -- drops -------------------------------------------------------------------

    def _drop_malformed(self, data) -> list:
        try:
            unpack(data)
        except MalformedPacket as e:
            self.counters.drop(f"malformed:{e.reason}")
            return []
        self.counters.drop("malformed:unparsed")  # unreachable if unpack is strict
        return []

    def _classify_drop(self, data) -> list:
        """Why a packet missed the fast path (the slow, canonical parse)."""
        try:
            header, _, _ = unpack(data)
        except MalformedPacket as e:
            self.counters.drop(f"malformed:{e.reason}")
            return []
        c = self.job
        if header.msg_type != MsgType.DATA:
            self.counters.drop("not_data")
        elif header.job != c.job:
            self.counters.drop("wrong_job")
        else:
            # well formed, right job, but not this job's mode/format/size
            self.counters.drop("config_mismatch")
        return []

    # -- the control plane's view ------------------------------------------------

    def stats(self) -> dict:
        return {**self.job.as_dict(), "counters": self.counters.as_dict()}

    def recorded_orders(self, wire_mode: WireMode | None = None) -> dict[int, tuple[int, ...]]:
        """packet_id -> arrival order (ranks), for slots completed in ``wire_mode``
        (default: the job's data mode). Later completions of the same id win."""
        if not self.config.record_orders:
            raise ValueError("the job was configured without record_orders")
        mode = int(self.job.data_wire_mode if wire_mode is None else wire_mode)
        return {pid: order for pid, m, order in self.recorded if m == mode}

