"""The switch's batch fast path: a whole batch of packets in one Numba call.

:meth:`SwitchPipeline.process` (the reference path) spends ~5-8 us of
Python per packet, which capped the emulator far below what its sockets can
carry. :class:`BatchProcessor` runs the same algorithm over a batch of
same-length packets in one compiled loop, on the *same* state arrays as the
reference path, and aggregates with the numerics core's own row kernels
(``fpisa._kernels.accumulate_row_fpisa`` / ``_fpisa_a`` and
``normalize_array``: exactly what ``SlotRegisters.accumulate`` / ``read``
call). Packets the loop cannot judge on its own (anything that is not a
DATA packet of one of the job's modes, formats and sizes) are handed back
to the reference path, which classifies the drop; none of them can change
state, so the order in which drops are counted does not matter.

The int32 modes (SwitchML's sum, its exponent max) use the core's
``accumulate_row_int_sum`` / ``accumulate_row_int_max`` the same way, after
the big-endian payload is decoded into a scratch row.
tests/emulator/test_fastpath.py checks every output byte and every counter
against the reference path on random packet streams, for every mode.
"""

from __future__ import annotations

import sys
from typing import Hashable, NamedTuple

import numpy as np
from numba import njit, typeof

from fpisa import _kernels as kernels
from fpisa.netem import LINK_DROPPED, LINK_DUPLICATED, LINK_OFFERED, draw_copies
from fpisa.shm import _R_HEAD, _R_TAIL, PUBLISH_SLOTS, _atomic_load, _atomic_store, _write_slots
from fpisa.registers import protocol_flags
from fpisa.protocol import (
    DATA_VT,
    FIELD_OFFSETS,
    FLAG_RAW,
    HEADER_BYTES,
    MAX_SLOTS,
    ALL_RANKS,
    RESULT_VT,
    RETX_VT,
    WireMode,
)

__all__ = ["BatchProcessor", "COUNTER_NAMES"]

#: counter slots of the kernel; names as in SwitchCounters (drops by reason)
COUNTER_NAMES = ("received", "aggregated", "completed", "multicast", "retransmitted",
                 "wrong_job", "unknown_worker", "rank_mismatch", "slot_out_of_range",
                 "duplicate_incomplete", "config_mismatch", "stale")
_RECEIVED, _AGGREGATED, _COMPLETED, _MULTICAST, _RETX = 0, 1, 2, 3, 4
_WRONG_JOB, _UNKNOWN, _RANK_MISMATCH, _SLOT_RANGE, _DUP_INCOMPLETE, _MODE_MISMATCH = 5, 6, 7, 8, 9, 10
_STALE = 11
_DEFERRED = 12  # handed back to the reference path

_FPISA, _FPISA_A, _SWITCHML, _INT_MAX = (int(WireMode.FPISA), int(WireMode.FPISA_A),
                                         int(WireMode.SWITCHML), int(WireMode.INT_MAX))
# header byte offsets, from the protocol's one definition (compile-time constants)
_VT = FIELD_OFFSETS["ver_type"]
_MODE = FIELD_OFFSETS["mode"]
_FMT = FIELD_OFFSETS["fmt"]
_FLAGS = FIELD_OFFSETS["flags"]
_JOB = FIELD_OFFSETS["job"]
_RANK = FIELD_OFFSETS["rank"]
_NW = FIELD_OFFSETS["num_workers"]
_NE = FIELD_OFFSETS["num_elements"]
_POOL = FIELD_OFFSETS["pool_index"]
_BEXP = FIELD_OFFSETS["block_exponent"]
_PID = FIELD_OFFSETS["packet_id"]


class KernelJob(NamedTuple):
    """The job's constants, as the kernel reads them."""

    job: int
    num_workers: int
    packet_elements: int
    pool: int
    fmt: int
    data_mode: int
    int_max_ok: bool
    float_job: bool
    raw_always: bool
    nearest: bool
    exponent_bits: int
    fraction_bits: int
    register_bits: int
    element_bytes: int
    native_little_endian: bool
    record: bool
    #: a completed row's result goes once into output block ``num_workers``
    #: with rank ALL_RANKS (the shared-memory multicast ring), not K times
    multicast_block: bool


class SlotState(NamedTuple):
    """The pipeline's per-row arrays (the very arrays the reference path uses)."""

    bitmap: np.ndarray
    count: np.ndarray
    completed: np.ndarray
    block_exponent: np.ndarray
    row_mode: np.ndarray
    orders: np.ndarray
    round_id: np.ndarray
    result_payload: np.ndarray
    result_length: np.ndarray
    result_flags: np.ndarray


class Registers(NamedTuple):
    """The data mode's registers (and SwitchML's exponent-max row), plus scratch
    rows and byte views of them for plain copies from and to the wire."""

    exponent: np.ndarray
    mantissa: np.ndarray
    flags: np.ndarray
    overwrites: np.ndarray
    int_max: np.ndarray
    bits: np.ndarray
    out: np.ndarray
    bits_bytes: np.ndarray
    out_bytes: np.ndarray
    ints: np.ndarray


class Outputs(NamedTuple):
    """Where the kernel writes what the switch sends, grouped by destination
    rank: rank r's datagrams are ``rows[r, :count[r], :length[r, i]]``, so a
    rank's results leave as one block without being gathered. A call
    appends (``count`` is not reset); ``rank[i], index[i]`` say where the
    call's i-th output went, in the order the reference path emits them."""

    rows: np.ndarray  # (K, capacity, stride) uint8
    length: np.ndarray  # (K, capacity) int64
    count: np.ndarray  # (K,) int64
    rank: np.ndarray  # (K x capacity,) int64
    index: np.ndarray  # (K x capacity,) int64


class Log(NamedTuple):
    """The pipeline's :class:`~emulator.pipeline.ArrivalLog` arrays."""

    packet_id: np.ndarray
    wire_mode: np.ndarray
    order: np.ndarray
    count: np.ndarray


@njit(cache=True, nogil=True)
def _u16(p, i, at):
    return (np.int64(p[i, at]) << 8) | np.int64(p[i, at + 1])


@njit(cache=True, nogil=True)
def _write_header(out, o, vt, mode, fmt, flags, job, rank, nw, ne, pidx, bexp, pid):
    out[o, _VT] = vt
    out[o, _MODE] = mode
    out[o, _FMT] = fmt
    out[o, _FLAGS] = flags
    out[o, _JOB] = job
    out[o, _RANK] = rank
    out[o, _NW] = nw
    out[o, _NE] = ne
    out[o, _POOL] = (pidx >> 8) & 0xFF
    out[o, _POOL + 1] = pidx & 0xFF
    b = min(0x7FFF, max(-0x8000, bexp)) & 0xFFFF
    out[o, _BEXP] = (b >> 8) & 0xFF
    out[o, _BEXP + 1] = b & 0xFF
    for k in range(4):
        out[o, _PID + k] = (pid >> (24 - 8 * k)) & 0xFF


@njit(cache=True, nogil=True, inline="always")
def _emit(out, n_out, block, rank, vt, mode, fmt, flags, job, K, E, pidx, bexp, pid, payload, L):
    """Append one datagram with header rank ``rank`` (header + the first
    ``L`` payload bytes) to output block ``block`` (the destination rank, or
    K: every worker); returns the call's output count + 1."""
    o = out.count[block]
    dst = out.rows[block]
    _write_header(dst, o, vt, mode, fmt, flags, job, rank, K, E, pidx, bexp, pid)
    for b in range(L):
        dst[o, HEADER_BYTES + b] = payload[b]
    out.length[block, o] = HEADER_BYTES + L
    out.count[block] = o + 1
    out.rank[n_out] = block
    out.index[n_out] = o
    return n_out + 1


# Copies are written as loops: Numba's slice assignment between two arrays
# (a[x:y] = b[u:v]) guards against overlap with a temporary and costs
# ~0.4 us per KiB copied, 20x a plain loop (which LLVM turns into wide moves).
@njit(cache=True, nogil=True, inline="always")
def _takes(pkts, i, cfg):
    """The kernel takes row ``i``: a DATA packet of the job's mode(s), worker
    count, packet size and format; any other goes to the reference path."""
    mode = np.int64(pkts[i, _MODE])
    return (pkts[i, _VT] == DATA_VT and (mode == cfg.data_mode or (cfg.int_max_ok and mode == _INT_MAX))
            and pkts[i, _NW] == cfg.num_workers and pkts[i, _NE] == cfg.packet_elements
            and (not cfg.float_job or pkts[i, _FMT] == cfg.fmt))


@njit(cache=True, nogil=True)
def _kernel(pkts, ranks, defer, out, counters, cfg, st, regs, log):
    job, K, E, pool, fmt = cfg.job, cfg.num_workers, cfg.packet_elements, cfg.pool, cfg.fmt
    float_job = cfg.float_job
    raw_always, nearest, elem_bytes = cfg.raw_always, cfg.nearest, cfg.element_bytes
    eb, fb, w = cfg.exponent_bits, cfg.fraction_bits, cfg.register_bits
    native_little_endian, record = cfg.native_little_endian, cfg.record
    bitmap, count, completed, block_exponent = st.bitmap, st.count, st.completed, st.block_exponent
    row_mode, orders, round_id = st.row_mode, st.orders, st.round_id
    result_payload, result_length, result_flags = st.result_payload, st.result_length, st.result_flags
    E0, A0, F0, OW0, A1 = regs.exponent, regs.mantissa, regs.flags, regs.overwrites, regs.int_max
    scratch_bits, scratch_out = regs.bits, regs.out
    scratch_in_bytes, scratch_out_bytes, scratch_int = regs.bits_bytes, regs.out_bytes, regs.ints
    log_pid, log_mode, log_order, log_count = log.packet_id, log.wire_mode, log.order, log.count
    n_out = 0
    all_workers = K
    counters[:] = 0
    for i in range(pkts.shape[0]):
        defer[i] = 0
        counters[_RECEIVED] += 1
        mode = np.int64(pkts[i, _MODE])
        if not _takes(pkts, i, cfg):
            counters[_RECEIVED] -= 1  # the reference path counts it
            counters[_DEFERRED] += 1
            defer[i] = 1
            continue
        if pkts[i, _JOB] != job:
            counters[_WRONG_JOB] += 1
            continue
        r = ranks[i]
        if r < 0:
            counters[_UNKNOWN] += 1
            continue
        if pkts[i, _RANK] != r:
            counters[_RANK_MISMATCH] += 1
            continue
        pidx = _u16(pkts, i, _POOL)
        slot = pidx & (MAX_SLOTS - 1)
        if slot >= pool:
            counters[_SLOT_RANGE] += 1
            continue
        s = pidx >> 15
        row = s * pool + slot
        other = (1 - s) * pool + slot
        bit = np.int64(1) << r
        flags_in = np.int64(pkts[i, _FLAGS])
        bexp = _u16(pkts, i, _BEXP)
        if bexp >= 0x8000:
            bexp -= 0x10000
        pid = (_u16(pkts, i, _PID) << 16) | _u16(pkts, i, _PID + 2)
        # the round-id check of SwitchPipeline.process (see there)
        first = True
        if count[row] != 0:
            age = (round_id[row] - pid) & 0xFFFFFFFF
            if age == 0:
                if bitmap[row] & bit:
                    if completed[row]:
                        counters[_RETX] += 1
                        n_out = _emit(out, n_out, r, r, RETX_VT, row_mode[row], fmt, result_flags[row], job, K,
                                      E, pidx, block_exponent[row], pid, result_payload[row],
                                      result_length[row])
                    else:
                        counters[_DUP_INCOMPLETE] += 1
                    continue
                if completed[row]:
                    counters[_STALE] += 1
                    continue
                first = False
            elif age < 0x80000000:
                counters[_STALE] += 1
                continue
        if not first and mode != row_mode[row]:
            counters[_MODE_MISMATCH] += 1
            continue
        bitmap[row] |= bit
        bitmap[other] &= ~bit
        counters[_AGGREGATED] += 1
        # -- aggregate: the numerics core's row kernels on the registers
        if float_job:
            nbytes = E * elem_bytes
            if native_little_endian:  # the wire's byte order: a plain copy
                for b in range(nbytes):
                    scratch_in_bytes[b] = pkts[i, HEADER_BYTES + b]
            else:
                for j in range(E):
                    v = np.int64(0)
                    for b in range(elem_bytes):  # little-endian on the wire
                        v |= np.int64(pkts[i, HEADER_BYTES + j * elem_bytes + b]) << (8 * b)
                    scratch_bits[j] = v
            if mode == _FPISA:
                kernels.accumulate_row_fpisa(E0[row], A0[row], F0[row], scratch_bits, first, eb, fb, w)
            else:
                kernels.accumulate_row_fpisa_a(E0[row], A0[row], F0[row], OW0[row], scratch_bits,
                                               first, eb, fb, w)
        else:
            for j in range(E):
                at = HEADER_BYTES + 4 * j  # big-endian int32 on the wire
                v = ((np.int64(pkts[i, at]) << 24) | (np.int64(pkts[i, at + 1]) << 16)
                     | (np.int64(pkts[i, at + 2]) << 8) | np.int64(pkts[i, at + 3]))
                scratch_int[j] = v - 0x100000000 if v >= 0x80000000 else v
            if mode == _SWITCHML:
                kernels.accumulate_row_int_sum(A0[row], scratch_int, first)
            else:
                kernels.accumulate_row_int_max(A1[row], scratch_int, first)
        if first:
            completed[row] = False
            count[row] = 0
            row_mode[row] = mode
            block_exponent[row] = bexp
            round_id[row] = pid
        elif bexp > block_exponent[row]:
            block_exponent[row] = bexp
        orders[row, count[row]] = r
        count[row] += 1
        if count[row] < all_workers:
            continue
        # -- the last arrival: read out, keep for retransmissions, multicast
        rflags = np.int64(0)
        if float_job:
            # on the registers as they are (int32 where W <= 32: the read-out
            # takes int32 lanes then anyway, no int64 copies on the way)
            kernels.normalize_array(E0[row], A0[row], F0[row], eb, fb, nearest, scratch_out)
            acc = np.int64(0)
            for j in range(E):
                acc |= F0[row, j]
            if native_little_endian:
                for b in range(E * elem_bytes):
                    result_payload[row, b] = scratch_out_bytes[b]
            else:
                for j in range(E):
                    v = np.int64(scratch_out[j])
                    for b in range(elem_bytes):
                        result_payload[row, j * elem_bytes + b] = (v >> (8 * b)) & 0xFF
            rflags |= protocol_flags(acc)
            L = E * elem_bytes
            if raw_always or (flags_in & FLAG_RAW):
                rflags |= FLAG_RAW
                for j in range(E):
                    m = np.int64(A0[row, j])
                    for b in range(8):  # int64 big-endian
                        result_payload[row, L + 8 * j + b] = (m >> (56 - 8 * b)) & 0xFF
                    e = E0[row, j] & 0xFFFF
                    result_payload[row, L + 8 * E + 2 * j] = (e >> 8) & 0xFF
                    result_payload[row, L + 8 * E + 2 * j + 1] = e & 0xFF
                L += 10 * E
        else:
            A = A0 if mode == _SWITCHML else A1
            for j in range(E):
                v = A[row, j] & 0xFFFFFFFF
                for b in range(4):
                    result_payload[row, 4 * j + b] = (v >> (24 - 8 * b)) & 0xFF
            L = 4 * E
        completed[row] = True
        result_length[row] = L
        result_flags[row] = rflags
        counters[_COMPLETED] += 1
        if record:
            t = log_count[0]
            log_pid[t] = pid
            log_mode[t] = mode
            for k in range(K):
                log_order[t, k] = orders[row, k]
            log_count[0] = t + 1
        if cfg.multicast_block:
            n_out = _emit(out, n_out, K, ALL_RANKS, RESULT_VT, mode, fmt, rflags, job, K, E, pidx,
                          block_exponent[row], pid, result_payload[row], L)
        else:
            for k in range(K):
                n_out = _emit(out, n_out, k, k, RESULT_VT, mode, fmt, rflags, job, K, E, pidx,
                              block_exponent[row], pid, result_payload[row], L)
        counters[_MULTICAST] += K
    return n_out


@njit(cache=True, nogil=True)
def _output_runs(length, count, runs):
    """Cut each rank's outputs into runs of equal length, in order: rows of
    ``runs`` = (rank, first, end, datagram length); returns how many."""
    n = 0
    for r in range(count.shape[0]):
        c = count[r]
        start = 0
        for o in range(1, c + 1):
            if o == c or length[r, o] != length[r, start]:
                runs[n, 0] = r
                runs[n, 1] = start
                runs[n, 2] = o
                runs[n, 3] = length[r, start]
                n += 1
                start = o
    return n


class BatchProcessor:
    """Binds one :class:`~emulator.pipeline.SwitchPipeline`'s state to the kernel."""

    def __init__(self, pipeline, max_batch: int = 256):
        self.p = pipeline
        job = pipeline.job
        K, E = job.num_workers, job.packet_elements
        self.max_batch = max_batch
        self.data_length = pipeline.data_length
        self.workers = list(pipeline.config.workers)
        self._rank_of = pipeline.rank_of
        data = pipeline.registers[job.data_wire_mode]
        int_max = pipeline.registers.get(WireMode.INT_MAX)
        self._stride = HEADER_BYTES + pipeline.max_result_payload
        # a packet sends at most one datagram to each rank: per rank, room for
        # the outputs of max_batch packets; block K holds the one copy for
        # every worker of process_arrays(..., multicast=True)
        self._outputs = Outputs(np.zeros((K + 1, max_batch, self._stride), np.uint8),
                                np.zeros((K + 1, max_batch), np.int64), np.zeros(K + 1, np.int64),
                                np.zeros(K * max_batch, np.int64), np.zeros(K * max_batch, np.int64))
        self._runs = np.zeros((K * max_batch, 4), np.int64)
        self._defer = np.zeros(max_batch, np.uint8)
        self._counters = np.zeros(len(COUNTER_NAMES) + 1, np.int64)  # + deferred
        self._rank_rows = [np.full(max_batch, r, np.int64) for r in range(K)]
        self._entries: dict = {}  # the kernel's compiled entry points, see _run
        fmt = job.format
        self._job = KernelJob(job.job, K, E, job.window, job.fmt_code, int(job.data_wire_mode),
                              int_max is not None, job.info.is_float, job.raw_registers,
                              pipeline.readout_nearest_even, fmt.exponent_bits, fmt.fraction_bits,
                              job.register_bits, fmt.storage_bytes, sys.byteorder == "little",
                              pipeline.config.record_orders, False)
        self._job_multicast = self._job._replace(multicast_block=True)
        self._record = self._job.record
        self._rest = {False: None, True: None}  # _run's cached arguments, per multicast
        p = pipeline
        self._state = SlotState(p.bitmap, p.count, p.completed, p.block_exponent, p.row_mode, p.orders,
                                p.round_id, p.result_payload, p.result_length, p.result_flags)
        self._registers = Registers(
            data.exponent_register, data.mantissa_register, data.element_flags, data.overwrites,
            int_max.mantissa_register if int_max is not None else np.zeros((1, 1), data.mantissa_register.dtype),
            *self._scratch(E, fmt.bits_dtype), np.zeros(E, np.int64))

    @staticmethod
    def _scratch(n: int, dtype) -> tuple:
        # element buffers and byte views of the same memory: the kernel fills
        # and drains them with plain copies (the wire is little-endian, as the
        # host usually is)
        bits, out = np.zeros(n, dtype), np.zeros(n, dtype)
        return bits, out, bits.view(np.uint8), out.view(np.uint8)

    def process(self, packets: list[tuple[bytes, Hashable]]) -> list[tuple[Hashable, bytes]]:
        """Like calling ``pipeline.process`` on each packet in order."""
        out: list[tuple[Hashable, bytes]] = []
        for start in range(0, len(packets), self.max_batch):
            out += self._process(packets[start:start + self.max_batch])
        return out

    def _process(self, packets) -> list[tuple[Hashable, bytes]]:
        p = self.p
        L = self.data_length
        fast = [item for item in packets if len(item[0]) == L]
        out: list[tuple[Hashable, bytes]] = []
        if len(fast) != len(packets):
            for d, s in packets:
                if len(d) != L:
                    out += p.process(d, s)  # malformed or not ours: a counted drop
            if not fast:
                return out
        m = len(fast)
        pkts = np.frombuffer(b"".join([d for d, _ in fast]), np.uint8).reshape(m, L)
        get = self._rank_of.get
        ranks = np.array([get(s, -1) for _, s in fast], np.int64)
        self._outputs.count[:] = 0
        n, deferred = self._run(pkts, ranks)
        for i in deferred:
            out += p.process(*fast[i])
        # every output goes to a registered worker: a RESULT to each rank, a
        # RESULT_RETX back to its asker (accepted only from its registered
        # address), in the reference path's order
        if n:
            rows, length, workers = self._outputs.rows, self._outputs.length, self.workers
            for rank, o in zip(self._outputs.rank[:n].tolist(), self._outputs.index[:n].tolist()):
                out.append((workers[rank], rows[rank, o, :length[rank, o]].tobytes()))
        return out

    def process_trains(self, trains: list[tuple[bytes, int, Hashable]]) -> list[tuple[Hashable, bytes, int]]:
        """The server's path: trains in (``UdpTransport.recv_trains``), trains
        out (``(destination, datagrams back to back, size)`` for
        ``send_train``). Same effect as :meth:`process` on the datagrams in
        order, without Python work per datagram."""
        p = self.p
        L = self.data_length
        get = self._rank_of.get
        blocks, ranks, sources, out = [], [], [], []
        for data, size, source in trains:
            if size == L and len(data) % L == 0:
                blocks.append(data)
                ranks.append((get(source, -1), len(data) // L))
                sources.append(source)
            else:  # not ours, or malformed: one by one through the reference path
                pieces = [data[at:at + size] for at in range(0, len(data), size)] if size else [data]
                for piece in pieces:
                    for address, packet in p.process(piece, source):
                        out.append((address, packet, len(packet)))
        if not blocks:
            return out
        pkts = np.frombuffer(b"".join(blocks), np.uint8).reshape(-1, L)
        counts = np.array([c for _, c in ranks], np.int64)
        rank_of_packet = np.repeat(np.array([r for r, _ in ranks], np.int64), counts)
        train_of_packet = np.repeat(np.arange(len(blocks)), counts)
        for start in range(0, pkts.shape[0], self.max_batch):
            chunk = pkts[start:start + self.max_batch]
            self._outputs.count[:] = 0
            n, deferred = self._run(chunk, rank_of_packet[start:start + self.max_batch])
            for i in deferred:
                source = sources[train_of_packet[start + i]]
                for address, packet in p.process(chunk[i].tobytes(), source):
                    out.append((address, packet, len(packet)))
            if n:
                for rank, rows in self._output_groups():
                    out.append((self.workers[rank], rows.tobytes(), rows.shape[1]))
        return out

    def process_arrays(self, received: list[tuple[int, np.ndarray]], *,
                       multicast: bool = False) -> list[tuple[int, np.ndarray]]:
        """The shared-memory path (``ShmSwitchTransport.recv_arrays``): runs
        of packets as ``(sender rank, (m, L) uint8 view into its ring)`` go
        to the kernel as they lie in the ring, without building bytes.
        Returns ``(destination rank, (k, size) uint8 rows)`` to send, each
        block one size, per rank in order; same effect as :meth:`process` on
        the packets in order. The rows are views of this processor's output
        buffer, valid until its next call: send (copy) them before that.
        Rows of another length than the job's DATA packets (not ours, or
        malformed) go through the reference path one by one.

        ``multicast``: a completed row's result comes once, as destination
        ``num_workers`` (every worker), with rank :data:`~fpisa.protocol.ALL_RANKS`
        in its header, for ``ShmSwitchTransport.send_multicast``; each
        worker's copy is that datagram with its own rank. Per destination,
        the RESULTs and the RESULT_RETXs are each in the reference order
        (they are two streams then, as they travel in two rings)."""
        p = self.p
        L = self.data_length
        out: list[tuple[int, np.ndarray]] = []
        count = self._outputs.count
        count[:] = 0
        held = 0  # packets whose outputs are in the buffer
        cap = self.max_batch
        for rank, view in received:
            if view.shape[1] != L:
                source = self.workers[rank]
                for row in view:
                    for address, packet in p.process(row.tobytes(), source):
                        out.append((self._rank_of[address], np.frombuffer(packet, np.uint8)[None, :]))
                continue
            pkts = view if view.flags.c_contiguous else np.ascontiguousarray(view)
            ranks = self._rank_rows[rank] if 0 <= rank < len(self._rank_rows) else None
            for start in range(0, pkts.shape[0], cap):
                chunk = pkts[start:start + cap]
                m = chunk.shape[0]
                if held + m > cap:  # the buffer could overflow: hand out copies
                    out += [(r, rows.copy()) for r, rows in self._output_groups()]
                    count[:] = 0
                    held = 0
                chunk_ranks = ranks[:m] if ranks is not None else np.full(m, rank, np.int64)
                _, deferred = self._run(chunk, chunk_ranks, multicast)
                held += m
                if deferred:
                    out += [(r, rows.copy()) for r, rows in self._output_groups()]
                    count[:] = 0
                    held = 0
                    for i in deferred:
                        for address, packet in p.process(chunk[i].tobytes(), self.workers[rank]):
                            out.append((self._rank_of[address], np.frombuffer(packet, np.uint8)[None, :]))
        if held:
            out += self._output_groups()
        return out

    def _output_groups(self) -> list[tuple[int, np.ndarray]]:
        """The buffered outputs as (rank, rows of one length) views, in order per rank."""
        o = self._outputs
        n = _output_runs(o.length, o.count, self._runs)
        rows = o.rows
        return [(r, rows[r, a:b, :size]) for r, a, b, size in self._runs[:n].tolist()]

    def _run(self, pkts: np.ndarray, ranks: np.ndarray, multicast: bool = False) -> tuple[int, list[int]]:
        """The kernel on one batch, appending to the output buffer; returns
        (outputs written, deferred indices)."""
        p = self.p
        m = pkts.shape[0]
        counters = self._counters
        log = p.log
        if self._record:
            log.reserve(m)
        # the arguments but the two input arrays, rebuilt only when the log grew
        # (its arrays are replaced then): a call costs ~15 us of Python and
        # argument unboxing, as much as the kernel needs for ~40 packets
        rest = self._kernel_rest(multicast)
        # Numba's dispatcher types every argument on every call, in Python
        # for named tuples: ~40 us a call. Only the two input arrays can
        # change type (writable or not, contiguous or not; internal callers
        # pass 2-D uint8 packets and 1-D int64 ranks), so the compiled entry
        # point is kept per their flags and called directly.
        f, g = pkts.flags, ranks.flags
        key = (f.writeable, f.c_contiguous, g.writeable, g.c_contiguous)
        entry = self._entries.get(key)
        if entry is not None:
            n = entry(pkts, ranks, *rest)
        else:
            args = (pkts, ranks, *rest)
            n = _kernel(*args)
            self._entries[key] = _kernel.overloads[tuple(typeof(a) for a in args)].entry_point
        deferred = self._add_counters(counters)
        return n, (np.flatnonzero(self._defer[:m]).tolist() if deferred else [])

    def _add_counters(self, counters: np.ndarray) -> int:
        """Add the kernel's counters to the pipeline's; returns the deferred count."""
        p = self.p
        received, aggregated, completed, multicast_count, retransmitted, *drops, deferred = counters.tolist()
        c = p.counters
        c.received += received
        c.aggregated += aggregated
        c.completed += completed
        c.multicast += multicast_count
        c.retransmitted += retransmitted
        if any(drops):
            for name, k in zip(COUNTER_NAMES[5:], drops):
                if k:
                    c.dropped[name] = c.dropped.get(name, 0) + k
        return deferred

    def _kernel_rest(self, multicast: bool) -> tuple:
        """The kernel's arguments after the two input arrays (rebuilt when the
        arrival log grew: its arrays are replaced then)."""
        log = self.p.log
        rest = self._rest[multicast]
        if rest is None or rest[-1].packet_id is not log.packet_id:
            rest = (self._defer, self._outputs, self._counters, self._job_multicast if multicast else self._job,
                    self._state, self._registers, Log(log.packet_id, log.wire_mode, log.order, log.count))
            self._rest[multicast] = rest
        return rest


# -- the switch's loop on shared memory: one call per pass ----------------------------

@njit(cache=True, nogil=True, inline="always")
def _write_block(ctrl, words, asleep_words, slots, lengths, masks, head, rows, length, index, row_masks, n, full,
                 who):
    """Write ``rows[index[:n]]`` (each ``length[index[i]]`` bytes long, the
    multicast ring's rank mask ``row_masks[i]``) into a ring, one
    ``_write_slots`` call per run of equal lengths; what does not fit is
    counted in ``full[who]``. Returns (new head, the consumers found asleep)."""
    asleep = np.uint64(0)
    a = 0
    while a < n:
        size = length[index[a]]
        b = a + 1
        while b < n and length[index[b]] == size:
            b += 1
        done, head, sleepers = _write_slots(ctrl, words, asleep_words, slots, lengths, masks, head,
                                            rows[:0, :0], rows[:, :size], rows[0, :0], index[a:b],
                                            row_masks[a:b], np.uint64(0), PUBLISH_SLOTS)
        full[who] += (b - a) - done
        asleep |= sleepers
        a = b
    return head, asleep


@njit(cache=True, nogil=True)
def _ring_step(ctrl, up_words, up_slots, up_lengths, up_tails, start, L, budget, ranks_buf, down_words,
               down_asleep, down_slots, down_lengths, down_heads, mc_words, mc_asleep, mc_slots, mc_lengths,
               mc_masks, mc_head, loss, duplicate, draws, draw_at, link, full, index, row_masks, again_masks,
               defer, out, counters, acc, cfg, st, regs, log):
    """One pass of the switch's loop on shared memory (``relay``): the
    packets waiting in the workers' up rings (round-robin from ring
    ``start``, at most ``budget``: the output buffer's room) go through
    ``_kernel`` where they lie, and what they produce is written once the
    rings are drained: the results into the multicast ring (each worker's
    emulated link drawing its loss and duplication into the slot's rank
    mask), the RESULT_RETXs into the askers' down rings. A ring stops at
    its first row the kernel does not take (another length, another
    packet type or job shape): the Python loop passes that one to the
    reference path. ``full[r]``: datagrams for rank r (``full[K]``: the
    multicast ring) that did not fit. Returns (packets taken, bit r: worker
    r was asleep, ring its doorbell, a row for the reference path is
    waiting)."""
    K = up_words.shape[0]
    total = 0
    odd = False
    acc[:] = 0
    out.count[:] = 0
    for j in range(K):
        r = (start + j) % K
        slots, lengths = up_slots[r], up_lengths[r]
        cap = slots.shape[0]
        tail = up_tails[r]
        head = np.int64(_atomic_load(ctrl, up_words[r] + _R_HEAD))
        while tail < head and total < budget and not odd:
            at = tail % cap
            m = min(head - tail, cap - at, budget - total)
            run = 0
            while run < m and lengths[at + run] == L and _takes(slots, at + run, cfg):
                ranks_buf[run] = r
                run += 1
            if run:
                _kernel(slots[at:at + run], ranks_buf[:run], defer, out, counters, cfg, st, regs, log)
                for c in range(acc.shape[0]):
                    acc[c] += counters[c]
                tail += run
                total += run
            odd = run < m
        if tail != up_tails[r]:
            up_tails[r] = tail
            _atomic_store(ctrl, up_words[r] + _R_TAIL, tail)
        if odd or total >= budget:
            break
    asleep = np.uint64(0)
    d = draw_at[0]
    # the results, once for every worker: each link's loss and duplicates
    c = out.count[K]
    if c:
        n, twice = 0, 0
        for i in range(c):
            mask, again = np.uint64(0), np.uint64(0)
            for w in range(K):
                d, sent, dup = draw_copies(draws, d, loss, duplicate, link)
                if sent:
                    mask |= np.uint64(1) << np.uint64(w)
                if dup:
                    again |= np.uint64(1) << np.uint64(w)
            if mask:
                index[n] = i
                row_masks[n] = mask
                n += 1
            if again:
                index[c + twice] = i
                again_masks[twice] = again
                twice += 1
        rows, length = out.rows[K], out.length[K]
        head, sleepers = _write_block(ctrl, mc_words, mc_asleep, mc_slots, mc_lengths, mc_masks, mc_head[0],
                                      rows, length, index, row_masks, n, full, K)
        asleep |= sleepers
        if twice:
            head, sleepers = _write_block(ctrl, mc_words, mc_asleep, mc_slots, mc_lengths, mc_masks, head,
                                          rows, length, index[c:], again_masks, twice, full, K)
            asleep |= sleepers
        mc_head[0] = head
    # the answers to re-sent packets, each to its asker
    for r in range(K):
        c = out.count[r]
        if c == 0:
            continue
        n = 0
        for i in range(c):
            d, sent, dup = draw_copies(draws, d, loss, duplicate, link)
            if sent:
                index[n] = i
                n += 1
            if dup:
                index[n] = i
                n += 1
        head, sleepers = _write_block(ctrl, down_words[r], down_asleep[r], down_slots[r], down_lengths[r],
                                      mc_masks[:0], down_heads[r], out.rows[r], out.length[r], index,
                                      row_masks, n, full, r)
        down_heads[r] = head
        if sleepers:
            asleep |= np.uint64(1) << np.uint64(r)
    draw_at[0] = d
    return total, asleep, odd


class RingStep:
    """The switch's loop body on shared memory, one compiled call
    (:func:`_ring_step`) per pass: take what waits in the up rings, run the
    kernel on it where it lies, write the results into the multicast ring
    and the RESULT_RETXs into the down rings, with each link's loss and
    duplication (a :class:`~fpisa.netem.FaultInjector`'s draws) in the
    slots' rank masks. ``step()`` returns (packets taken, a row waits that
    only the reference path takes: run ``BatchProcessor.process_arrays``
    on it, between :meth:`release` and :meth:`resume`).

    The Python loop it replaces (``recv_arrays``, ``process_arrays``, the
    fault draws, ``send_multicast`` / ``send_rows``) was ~25 numpy and
    Python steps per pass, each slow with the caches cold that the
    workers' traffic leaves: 0.4 ms of CPU per pass at 1% loss."""

    def __init__(self, processor: BatchProcessor, transport, injector=None):
        self.b = processor
        self.transport = transport
        self.rings = transport.step_rings()
        self.injector = injector
        K = processor.p.job.num_workers
        self.K = K
        budget = processor.max_batch
        self.budget = budget
        self._ranks = np.zeros(budget, np.int64)
        self._index = np.zeros(2 * budget, np.int64)
        self._row_masks = np.zeros(budget, np.uint64)
        self._again = np.zeros(budget, np.uint64)
        self._acc = np.zeros(processor._counters.shape[0], np.int64)
        self._link = np.zeros(3, np.int64)
        self._full = np.zeros(K + 1, np.int64)
        self._draw_at = np.zeros(1, np.int64)
        faults = injector.faults if injector is not None else None
        self.loss = float(faults.loss) if faults is not None else 0.0
        self.duplicate = float(faults.duplicate) if faults is not None else 0.0
        # draws a pass may use: two per copy, a copy per rank and output
        self._need = 2 * (K + 1) * budget
        self._draws = injector.draws(4 * self._need) if self.loss or self.duplicate else np.zeros(0)
        self._start = 0
        self._entry = None

    def step(self) -> tuple[int, bool]:
        b, r = self.b, self.rings
        if b._record:
            b.p.log.reserve(self.budget)
        rest = b._kernel_rest(True)
        draws = self._draws
        if draws.size and draws.size - self._draw_at[0] < self._need:
            draws = self._draws = np.concatenate((draws[self._draw_at[0]:], self.injector.draws(4 * self._need)))
            self._draw_at[0] = 0
        args = (r.ctrl, r.up_words, r.up_slots, r.up_lengths, r.up_tails, self._start, b.data_length, self.budget,
                self._ranks, r.down_words, r.down_asleep, r.down_slots, r.down_lengths, r.down_heads, r.mc_words,
                r.mc_asleep, r.mc_slots, r.mc_lengths, r.mc_masks, r.mc_head, self.loss, self.duplicate, draws,
                self._draw_at, self._link, self._full, self._index, self._row_masks, self._again, *rest[:3],
                self._acc, *rest[3:])
        entry = self._entry
        if entry is None:
            # the dispatcher types the ~40 arguments on every call (tuples of
            # arrays in Python): call the compiled entry point directly (the
            # types stay: a grown log is new arrays of the same types)
            key = tuple(typeof(a) for a in args)
            if key not in _ring_step.overloads:
                _ring_step.compile(key)
            entry = self._entry = _ring_step.overloads[key].entry_point
        n, asleep, odd = entry(*args)
        self._start = (self._start + 1) % self.K
        if n:
            b._add_counters(self._acc)
        if asleep:
            bells = r.bells
            for k in range(self.K):
                if asleep >> k & 1 and bells[k] is not None:
                    bells[k]()
        if self._full.any():
            self.transport.sync_rings(r, self._full)
            self._full[:] = 0
        return n, bool(odd)

    def release(self) -> None:
        """Hand the rings back to the transport's Python methods."""
        self.transport.sync_rings(self.rings)

    def resume(self) -> None:
        """Take them back after those methods moved them."""
        self.transport.load_rings(self.rings)

    def count_links(self) -> None:
        """Add what the emulated links did so far to the injector's counters."""
        if self.injector is not None and self._link.any():
            link = self._link.tolist()
            self.injector.count_filtered(link[LINK_OFFERED], link[LINK_DROPPED], link[LINK_DUPLICATED])
            self._link[:] = 0

    def close(self) -> None:
        """Hand the rings back and count what the links did."""
        self.release()
        self.count_links()
