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

import struct
from dataclasses import dataclass, field
from typing import Hashable

import numpy as np

from fpisa.formats import RegisterLayout, get_format, get_rounding
from fpisa.protocol import (
    FLAG_RAW,
    HEADER_BYTES,
    HEADER_FIELDS,
    MAX_ELEMENTS,
    MAX_WORKERS,
    MAX_SLOTS,
    RAW_EXPONENT_DTYPE,
    RAW_MANTISSA_DTYPE,
    VERSION,
    MalformedPacket,
    MsgType,
    WireMode,
    element_dtype,
    format_code,
    payload_bytes,
    raw_bytes,
    unpack,
)
from fpisa.registers import SlotRegisters

__all__ = ["JobConfig", "SwitchPipeline", "SwitchCounters", "DROP_REASONS", "MAX_WORKERS",
           "header_struct"]


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
_RANK_OFFSET = [name for name, *_ in HEADER_FIELDS].index("rank")  # 1-byte fields come first
_DATA_VT = (VERSION << 4) | MsgType.DATA
_RESULT_VT = (VERSION << 4) | MsgType.RESULT
_RETX_VT = (VERSION << 4) | MsgType.RESULT_RETX
_SWITCH_MODES = ("fpisa", "fpisa-a", "switchml")


@dataclass(frozen=True)
class JobConfig:
    """One aggregation job as installed in the switch (its control plane)."""

    num_workers: int
    #: transport addresses by rank (UDP: (ip, port); raw Ethernet: EthEndpoint)
    workers: tuple
    mode: str = "fpisa"
    fmt: str = "fp32"
    job: int = 0
    #: elements per packet (one slot's width)
    num_elements: int = 64
    register_bits: int = 32
    #: slots per shadow set
    pool_size: int = 256
    #: always append the raw (mantissa, exponent) registers to float results
    raw_registers: bool = False
    #: the switch's read-out normalization; a real switch truncates ("rz")
    rounding: str = "rz"
    #: keep each completed slot's arrival order (for bit-exact checks)
    record_orders: bool = False

    def __post_init__(self) -> None:
        def bad(msg: str):
            raise ValueError(f"JobConfig: {msg}")

        def is_int(x) -> bool:
            return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

        if self.mode not in _SWITCH_MODES:
            bad(f"mode {self.mode!r} does not run in the switch; expected one of {_SWITCH_MODES}")
        get_format(self.fmt)  # raises ValueError for unknown formats
        get_rounding(self.rounding)
        if not is_int(self.num_workers) or not 1 <= self.num_workers <= MAX_WORKERS:
            bad(f"num_workers must be 1..{MAX_WORKERS}, got {self.num_workers!r}")
        if not is_int(self.job) or not 0 <= self.job <= 255:
            bad(f"job must be 0..255, got {self.job!r}")
        if not is_int(self.num_elements) or not 1 <= self.num_elements <= MAX_ELEMENTS:
            bad(f"num_elements must be 1..{MAX_ELEMENTS}, got {self.num_elements!r}")
        if not is_int(self.pool_size) or not 1 <= self.pool_size <= MAX_SLOTS:
            bad(f"pool_size must be 1..{MAX_SLOTS}, got {self.pool_size!r}")
        workers = tuple(self.workers)
        object.__setattr__(self, "workers", workers)
        if len(workers) != self.num_workers:
            bad(f"{len(workers)} worker addresses for {self.num_workers} workers")
        try:
            distinct = len(set(workers)) == len(workers)
        except TypeError:
            bad("worker addresses must be hashable (e.g. (ip, port) tuples)")
        if not distinct:
            bad(f"worker addresses must be distinct, got {workers}")
        RegisterLayout.of(self.fmt, self.register_bits)  # raises for a bad width

    @property
    def wire_mode(self) -> WireMode:
        return WireMode.of(self.mode)

    @property
    def fmt_code(self) -> int:
        return format_code(self.fmt)

    def wire_modes(self) -> tuple[WireMode, ...]:
        """The modes the job's packets may use: SwitchML adds its exponent exchange."""
        if self.mode == "switchml":
            return (WireMode.SWITCHML, WireMode.INT_MAX)
        return (self.wire_mode,)


@dataclass
class SwitchCounters:
    received: int = 0
    #: data packets folded into a slot (not duplicates)
    aggregated: int = 0
    #: slots completed (last arrival seen)
    completed: int = 0
    #: RESULT packets sent (one per worker per completed slot)
    multicast: int = 0
    #: RESULT_RETX packets sent (duplicate for a completed slot)
    retransmitted: int = 0
    dropped: dict = field(default_factory=dict)

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

    def __init__(self, config: JobConfig):
        self.config = config
        c = config
        self.counters = SwitchCounters()
        self._rank_of: dict[Hashable, int] = {addr: r for r, addr in enumerate(c.workers)}
        rows = 2 * c.pool_size
        self.registers: dict[WireMode, SlotRegisters] = {
            m: SlotRegisters(_register_mode(m), rows, c.num_elements, c.fmt, c.register_bits)
            for m in c.wire_modes()
        }
        self._fmt_code = c.fmt_code
        self._pool = c.pool_size
        # per wire mode: (payload dtype, expected DATA length)
        self._data_layout = {
            int(m): (element_dtype(m, self._fmt_code), HEADER_BYTES + payload_bytes(m, self._fmt_code, c.num_elements))
            for m in c.wire_modes()
        }
        # per-row state, numpy so the batch fast path (emulator.fastpath)
        # works on the very same arrays as this reference path
        K = c.num_workers
        self.bitmap = np.zeros(rows, np.int64)
        self.count = np.zeros(rows, np.int64)
        self.completed = np.zeros(rows, np.bool_)
        #: the packet id of the round a row holds (valid where count > 0)
        self.round_id = np.zeros(rows, np.int64)
        self.block_exponent = np.zeros(rows, np.int64)
        self.row_mode = np.full(rows, int(c.wire_modes()[0]), np.int64)
        self.orders = np.zeros((rows, K), np.int16)  # arrival order of the current generation
        # the completed result of each row, kept for retransmissions
        float_job = self.config.wire_mode.is_float
        self.result_payload = np.zeros((rows, self.max_result_payload), np.uint8)
        self.result_length = np.zeros(rows, np.int64)
        self.result_flags = np.zeros(rows, np.int64)
        # the log of completions when recording: (packet_id, wire mode, order)
        self._log_pid = np.zeros(1024, np.int64)
        self._log_mode = np.zeros(1024, np.int8)
        self._log_order = np.zeros((1024, K), np.int16)
        self._log_count = np.zeros(1, np.int64)
        self._rounding = get_rounding(c.rounding)
        self._float_job = float_job

    @property
    def max_result_payload(self) -> int:
        c = self.config
        n = max(payload_bytes(m, self._fmt_code, c.num_elements) for m in c.wire_modes())
        return n + (raw_bytes(c.num_elements) if c.wire_mode.is_float else 0)

    def _reserve_log(self, more: int) -> None:
        need = int(self._log_count[0]) + more
        if need > self._log_pid.size:
            size = max(need, 2 * self._log_pid.size)
            self._log_pid = np.resize(self._log_pid, size)
            self._log_mode = np.resize(self._log_mode, size)
            self._log_order = np.resize(self._log_order, (size, self.config.num_workers))

    @property
    def recorded(self) -> list[tuple[int, int, tuple[int, ...]]]:
        """(packet_id, wire mode, arrival order) per completed slot, in completion
        order (empty unless the job records orders)."""
        n = int(self._log_count[0])
        return [(int(p), int(m), tuple(int(r) for r in o))
                for p, m, o in zip(self._log_pid[:n], self._log_mode[:n], self._log_order[:n])]

    def recorded_arrays(self) -> dict[str, np.ndarray]:
        n = int(self._log_count[0])
        return {"packet_id": self._log_pid[:n].copy(), "wire_mode": self._log_mode[:n].copy(),
                "order": self._log_order[:n].copy()}

    # -- the data plane (reference path: one packet at a time) -------------------

    def process(self, data: bytes, source: Hashable) -> list[tuple[Hashable, bytes]]:
        """One arriving packet -> the packets to send (possibly none)."""
        counters = self.counters
        counters.received += 1
        c = self.config
        try:
            (vt, mode, fmt, flags, job, rank, nw, ne, pidx, bexp, pid) = _HEADER.unpack_from(data)
        except struct.error:
            return self._drop_malformed(data)
        layout = self._data_layout.get(mode)
        if (vt != _DATA_VT or layout is None or len(data) != layout[1] or nw != c.num_workers
                or ne != c.num_elements or (mode <= WireMode.FPISA_A and fmt != self._fmt_code)):
            return self._classify_drop(data)
        if job != c.job:
            counters.drop("wrong_job")
            return []
        r = self._rank_of.get(source)
        if r is None:
            counters.drop("unknown_worker")
            return []
        if rank != r:
            counters.drop("rank_mismatch")
            return []
        slot = pidx & (MAX_SLOTS - 1)
        if slot >= self._pool:
            counters.drop("slot_out_of_range")
            return []
        s = pidx >> 15
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
                        return [(source, self._result_packet(row, _RETX_VT, r, pid))]
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
        payload = np.frombuffer(data, layout[0], c.num_elements, HEADER_BYTES)
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
        c = self.config
        mode = WireMode(int(self.row_mode[row]))
        regs = self.registers[mode]
        if mode.is_float:
            payload = regs.read(row, self._rounding).astype(element_dtype(mode, self._fmt_code)).tobytes()
            result_flags = regs.row_flags(row)
            if c.raw_registers or flags & FLAG_RAW:
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
        if c.record_orders:
            self._reserve_log(1)
            i = int(self._log_count[0])
            self._log_pid[i], self._log_mode[i] = packet_id, int(mode)
            self._log_order[i] = self.orders[row]
            self._log_count[0] += 1
        header = bytearray(self._result_header(row, _RESULT_VT, 0, packet_id))
        payload = self.result_payload[row, :len(payload)].tobytes()
        out = []
        for r, address in enumerate(c.workers):
            header[_RANK_OFFSET] = r
            out.append((address, bytes(header) + payload))
        self.counters.multicast += len(out)
        return out

    def _result_header(self, row: int, vt: int, rank: int, packet_id: int) -> bytes:
        c = self.config
        slot, s = row % self._pool, row // self._pool
        bexp = max(-0x8000, min(0x7FFF, int(self.block_exponent[row])))
        return _HEADER.pack(vt, int(self.row_mode[row]), self._fmt_code, int(self.result_flags[row]),
                            c.job, rank, c.num_workers, c.num_elements, (s << 15) | slot, bexp, packet_id)

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
        c = self.config
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
        c = self.config
        return {"job": c.job, "mode": c.mode, "fmt": c.fmt, "num_workers": c.num_workers,
                "num_elements": c.num_elements, "pool_size": c.pool_size,
                "counters": self.counters.as_dict()}

    def recorded_orders(self, wire_mode: WireMode | None = None) -> dict[int, tuple[int, ...]]:
        """packet_id -> arrival order (ranks), for slots completed in ``wire_mode``
        (default: the job's data mode). Later completions of the same id win."""
        if not self.config.record_orders:
            raise ValueError("the job was configured without record_orders")
        mode = int(self.config.wire_mode if wire_mode is None else wire_mode)
        return {pid: order for pid, m, order in self.recorded if m == mode}


def _register_mode(mode: WireMode) -> str:
    return {WireMode.FPISA: "fpisa", WireMode.FPISA_A: "fpisa-a",
            WireMode.SWITCHML: "switchml", WireMode.INT_MAX: "int-max"}[mode]
