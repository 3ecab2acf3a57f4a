"""A worker host's allreduce client: packets, a window of slots, retransmission.

:class:`AllreduceClient` sums one array with the other workers of a job
through the switch. The array is cut into packets of ``num_elements``
(the last one zero padded). Packet g of the client's lifetime uses slot
``g mod window`` in shadow set ``(g // window) mod 2``, and packet g+window
is sent only when the result of packet g has arrived: SwitchML's rule that
makes the switch's two shadow sets sufficient under loss. A packet without
a result after the timeout is sent again, unchanged (same id, slot, set);
duplicate results are ignored.

FPISA modes send the array's bytes as they are (little-endian IEEE, the
host does no per-element work: the point of the paper). SwitchML mode first
exchanges per-block exponents (an ``int-max`` pass through the same slots),
then quantizes to int32 (big-endian on the wire), sums, and dequantizes:
the per-element host work FPISA removes. :class:`ConversionCost` records
what that costs per element.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import numpy as np
from numba import typeof

from fpisa import switchml
from fpisa import _client_kernels as ck
from fpisa._client_kernels import clean_samples, mark_sent, overdue, take_results
from fpisa.codec import normalize
from fpisa.counters import Counters
from fpisa.job import JobSpec
from fpisa.netem import FaultInjector, LinkFaults
from fpisa.protocol import (
    DATA_VT,
    FLAG_RAW,
    HEADER_BYTES,
    HEADER_DTYPE,
    RAW_EXPONENT_DTYPE,
    RAW_MANTISSA_DTYPE,
    WireMode,
    assemble_packets,
    raw_bytes,
    sequence_pool_index,
)


__all__ = ["WorkerConfig", "AllreduceClient", "ConversionCost", "AllreduceTimeout"]

_I16 = (-0x8000, 0x7FFF)
_NO_BYTES = np.zeros((0, 0), np.uint8)
#: shared memory: a receive that finds fewer results waiting than this, with
#: many more to come, naps this long first (fewer, larger batches; the
#: round trips here are 5-50 ms, so 0.5 ms is noise)
_COALESCE_PACKETS, _COALESCE_S = 32, 0.5e-3
#: the least reordering window of the time-based loss detection (RACK):
#: a packet counts as lost once a packet sent after it has its result and
#: it has been out this much longer than that one's round trip
_REORDER_MIN_S = 1e-3
#: ... in units of the smoothed round trip: RACK's quarter at first, up to two
_REORDER_MIN_FRACTION, _REORDER_MAX_FRACTION = 0.25, 2.0
#: the same on shared memory (the compiled loop), where the window stays at
#: RACK's quarter round trip, at least this: the rings are FIFO and that
#: loop runs only with loss and duplication faults, so no copy is ever
#: overtaken on the way. A result that arrives twice there is a re-send of a
#: slot that waited for another worker's loss; the worker that lost it and
#: the K - 1 that wait see the same results and find it late at the same
#: moment whatever the window, so a wider window only delays the recovery
#: (docs/protocol.md, "When a worker re-sends")
_RING_REORDER_MIN_S = 1e-4
#: the tail loss probe's timeout (RFC 8985's PTO): this many smoothed round
#: trips without a result, at least _PROBE_MIN_S, doubled per probe in a row
_PROBE_RTTS, _PROBE_MIN_S = 2.0, 2e-3


def deliver(values: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """The sum for the caller: ``values`` itself, or copied into ``out``."""
    if out is None:
        return values
    out[...] = values
    return out


class AllreduceTimeout(RuntimeError):
    """No progress for too long: the switch or another worker is gone."""


@dataclass(frozen=True)
class WorkerConfig:
    """One worker of a job: its rank and its retransmission policy."""

    job: JobSpec
    rank: int
    #: lower bound of the adaptive retransmission timeout (doubles per
    #: retry of the same packet, up to max_timeout_ms)
    timeout_ms: float = 20.0
    max_timeout_ms: float = 200.0
    #: give up after this long without any result
    stall_s: float = 30.0

    def __post_init__(self) -> None:
        def bad(msg):
            raise ValueError(f"worker: {msg}")

        if not isinstance(self.job, JobSpec):
            bad(f"job must be a JobSpec, got {type(self.job).__name__}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) \
                or not 0 <= self.rank < self.job.num_workers:
            bad(f"rank {self.rank!r} outside 0..{self.job.num_workers - 1}")
        if not 0 < self.timeout_ms <= self.max_timeout_ms:
            bad(f"need 0 < timeout_ms <= max_timeout_ms, got {self.timeout_ms}, {self.max_timeout_ms}")
        if not self.stall_s > 0:
            bad(f"stall_s must be > 0, got {self.stall_s}")

    @property
    def num_workers(self) -> int:
        return self.job.num_workers

    def as_dict(self) -> dict:
        return {"job": self.job.as_dict(), "rank": self.rank, "timeout_ms": self.timeout_ms,
                "max_timeout_ms": self.max_timeout_ms, "stall_s": self.stall_s}

    @classmethod
    def from_dict(cls, values: dict) -> "WorkerConfig":
        values = dict(values)
        return cls(job=JobSpec.from_dict(values.pop("job")), **values)


@dataclass
class ConversionCost:
    """Host CPU time spent turning the array into wire payloads and back.

    Measured as this thread's CPU time (not wall time): the workers share
    the machine's cores with each other and the switch, and the claim under
    test is about CPU work per element."""

    encode_ns: int = 0
    decode_ns: int = 0
    elements: int = 0

    @property
    def ns_per_element(self) -> float:
        return (self.encode_ns + self.decode_ns) / max(1, self.elements)

    def as_dict(self) -> dict:
        n = max(1, self.elements)
        return {"encode_ns_per_element": self.encode_ns / n,
                "decode_ns_per_element": self.decode_ns / n,
                "ns_per_element": self.ns_per_element, "elements": self.elements}


class ClientCounters(Counters):
    """sent: DATA packets sent (first copies); retransmitted: copies sent again
    (on a timeout, or as a fast retransmit); fast_retransmitted: those sent
    again before their timer because the result of a packet sent later came
    back and they were overdue by a reordering margin (RACK);
    tail_probes: those sent again because, with every packet of the pass
    sent and no result for two round trips, nothing sent later could show
    them lost (a tail loss probe); results: packets whose result arrived;
    duplicate_results: results that arrived again; ignored: packets not a
    result of ours (other job or rank, malformed); receive_batches: receive
    calls that returned results."""

    NAMES = ("sent", "retransmitted", "fast_retransmitted", "tail_probes", "results", "duplicate_results",
             "ignored", "receive_batches")


class RetransmitTimer:
    """TCP's retransmission timeout (RFC 6298: SRTT + 4 RTTVAR), floored at
    the configured timeout: on a busy 2-core machine the round trip of a
    full window is tens of ms, and a fixed short timeout retransmits nearly
    every packet (which doubles the switch's load)."""

    def __init__(self, min_s: float, max_s: float):
        self.min_s, self.max_s = min_s, max_s
        self.srtt: float | None = None
        self.rttvar = 0.0
        # no sample yet: RFC 6298 starts conservatively (1 s there; the cap
        # here), since the first window waits for every worker to start
        self.timeout = max_s

    def sample(self, rtt: float) -> None:
        # the formula the compiled loop uses too (fpisa/_client_kernels.py)
        self.srtt, self.rttvar, self.timeout = ck.rto_sample(-1.0 if self.srtt is None else self.srtt,
                                                             self.rttvar, rtt, self.min_s, self.max_s)


class AllreduceClient:
    """One worker's side of the allreduce, over any :mod:`fpisa.net` transport."""

    def __init__(self, config: WorkerConfig, transport, switch_address,
                 faults: LinkFaults | None = None, progress=None):
        self.config = config
        self.transport = transport
        self.switch = switch_address
        self._injector = FaultInjector(faults) if faults is not None and faults.active else None
        self.job = config.job
        self._fmt = config.job.format
        self._fmt_code = config.job.fmt_code
        #: packets this client has sent so far: the slot/set sequence number
        self._sequence = 0
        self.counters = ClientCounters()
        self.conversion = ConversionCost()
        #: optional multiprocessing.Value("q") counting completed packets
        self._progress = progress
        self._rto = RetransmitTimer(config.timeout_ms / 1e3, config.max_timeout_ms / 1e3)
        if not isinstance(config, WorkerConfig):
            raise ValueError(f"AllreduceClient needs a WorkerConfig, got {type(config).__name__}")

    # -- public -------------------------------------------------------------------

    def allreduce(self, bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Sum ``bits`` (the format's bit patterns, 1-D) over all workers.

        ``out``: an array of the same shape and dtype (C-contiguous,
        writable) to write the sum into and return; ``bits`` itself sums in
        place, as ``torch.distributed.all_reduce`` does (each packet's part
        is overwritten only once its result is in, when it is never sent
        again). Default: a new array."""
        bits = np.asarray(bits)
        if bits.ndim != 1 or bits.dtype != np.dtype(self._fmt.bits_dtype):
            raise ValueError(f"expected 1-D {np.dtype(self._fmt.bits_dtype)} bit patterns of "
                             f"{self._fmt.name}, got {bits.dtype} with shape {bits.shape}")
        if out is not None and not (isinstance(out, np.ndarray) and out.shape == bits.shape
                                    and out.dtype == bits.dtype and out.flags.c_contiguous
                                    and out.flags.writeable):
            raise ValueError(f"out must be a writable C-contiguous {bits.dtype} array of shape {bits.shape}")
        if self.job.info.exponent_pass:
            return self._allreduce_switchml(bits, out)
        return self._allreduce_fpisa(bits, out)

    def warm_up(self) -> None:
        """Run the host-side conversions once on a tiny array (no network), so
        the measured conversion cost excludes first-call/JIT time."""
        c = self.job
        bits = np.zeros(c.packet_elements, self._fmt.bits_dtype)
        if c.info.exponent_pass:
            e = switchml.block_exponents(bits, self._fmt, c.packet_elements)
            q = switchml.quantize_to_wire(bits, self._fmt, e, c.num_workers, c.packet_elements)
            switchml.dequantize_from_wire(q, self._fmt, e, c.num_workers, c.packet_elements)
        elif c.raw_registers:
            zeros = np.zeros(c.packet_elements, np.int64)
            normalize(zeros, zeros, self._fmt, c.rounding)
        # the receive kernel, for ring views (writable, strided) and for
        # joined socket buffers (read-only)
        rows = np.zeros((2, HEADER_BYTES + 4), np.uint8)
        for block in (rows, rows[:, :HEADER_BYTES + 2], np.frombuffer(rows.tobytes(), np.uint8).reshape(2, -1)):
            take_results(block, 0, 0, 0, 0, np.zeros(1, np.bool_), HEADER_BYTES, np.zeros((1, 2), np.uint8),
                         np.zeros(2, np.uint8), HEADER_BYTES, _NO_BYTES, _NO_BYTES, np.zeros(1, np.int64), 0)
        # the loop's other steps (loaded from Numba's cache on first call)
        ks, ints, times = np.zeros(1, np.int64), np.zeros(2, np.int64), np.zeros(2)
        clean_samples(ks, ints, times, ints, np.zeros(2))
        mark_sent(ks, np.zeros(2, np.bool_), ints.copy(), times, ints.copy(), ints, 0, 0.0, 0, 1)
        ck.rto_sample(-1.0, 0.0, 1e-3, 0.02, 1.0)
        overdue(ints, np.zeros(2, np.bool_), ints, 0, times, ints, 0.0, 0.0, ints.copy())

        if getattr(self.transport, "step_rings", None) is not None and self._direct_packets:
            _warm_step()

    @property
    def packet_ids(self) -> int:
        return self._sequence

    # -- modes ----------------------------------------------------------------------

    def _allreduce_fpisa(self, bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        c = self.job
        t0 = time.thread_time_ns()
        # the wire carries the host's little-endian bytes: on a little-endian
        # host this is a view, no per-element work (FPISA's claim)
        wire = bits.astype(bits.dtype.newbyteorder("<"), copy=False)
        t1 = time.thread_time_ns()
        raw_mode = c.raw_registers
        # the switch's read-out lands in ``out`` (on a little-endian host the
        # wire's bytes are the bits); with raw registers the host normalizes
        into = out.view(wire.dtype) if out is not None and not raw_mode and wire.dtype.isnative else None
        result, raw = self._run_pass(c.data_wire_mode, wire, bexp=0, want_raw=raw_mode, out=into)
        t2 = time.thread_time_ns()
        if raw is not None:
            # host-side normalization with the rounding the switch cannot do
            normalized = normalize(raw[1].astype(np.int64), raw[0], self._fmt, c.rounding)
            out = deliver(np.asarray(normalized, self._fmt.bits_dtype), out)
        elif into is None:
            out = deliver(result.view(wire.dtype).astype(self._fmt.bits_dtype, copy=False), out)
        t3 = time.thread_time_ns()
        self.conversion.encode_ns += t1 - t0
        self.conversion.decode_ns += t3 - t2
        self.conversion.elements += bits.size
        return out

    def _allreduce_switchml(self, bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        c = self.job
        E, K = c.packet_elements, c.num_workers
        t0 = time.thread_time_ns()
        local = switchml.block_exponents(bits, self._fmt, E).astype(">i4")
        t1 = time.thread_time_ns()
        exponents, _ = self._run_pass(WireMode.INT_MAX, local, bexp=0)
        t2 = time.thread_time_ns()
        max_exponents = exponents.view(">i4")[: local.size].astype(np.int32)
        # quantize and byte-swap in one compiled pass, as SwitchML's host code does
        quantized = switchml.quantize_to_wire(bits, self._fmt, max_exponents, K, E,
                                              np.empty(bits.size, ">i4"))
        t3 = time.thread_time_ns()
        # the sums replace the quantized values (each once its result is in)
        sums, _ = self._run_pass(WireMode.SWITCHML, quantized, bexp=max_exponents, out=quantized)
        t4 = time.thread_time_ns()
        out = switchml.dequantize_from_wire(sums, self._fmt, max_exponents, K, E, out)
        t5 = time.thread_time_ns()
        self.conversion.encode_ns += (t1 - t0) + (t3 - t2)
        self.conversion.decode_ns += t5 - t4
        self.conversion.elements += bits.size
        return np.asarray(out, self._fmt.bits_dtype)

    # -- one pass through the switch ---------------------------------------------------

    #: the pass's DATA packets may go out as header rows + rows of the array
    #: (``send_packets``, shared memory): subclasses that build packets
    #: their own way (PipelinedClient) say no
    _direct_packets = True

    def _payloads(self, wire: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The payloads of a pass's packets without copying: the full ones as a
        ``(full, bytes)`` view of ``wire`` and the zero-padded last one (all
        zeros if there is none)."""
        E = self.job.packet_elements
        packet_bytes = E * wire.dtype.itemsize
        flat = np.ascontiguousarray(wire).view(np.uint8)
        full = flat.size // packet_bytes
        tail = np.zeros(packet_bytes, np.uint8)
        tail[: flat.size - full * packet_bytes] = flat[full * packet_bytes:]
        return flat[: full * packet_bytes].reshape(full, packet_bytes), tail

    def _packets(self, mode: WireMode, wire: np.ndarray, bexp, flags: int, base: int) -> np.ndarray:
        """All of a pass's DATA packets, built at once: (num_packets, bytes)."""
        return assemble_packets(self._headers(mode, wire, bexp, flags, base), *self._payloads(wire))

    def _headers(self, mode: WireMode, wire: np.ndarray, bexp, flags: int, base: int) -> np.ndarray:
        """The headers of a pass's DATA packets: (num_packets, HEADER_BYTES)."""
        c = self.job
        num_packets = -(-wire.size // c.packet_elements)
        heads = np.zeros((num_packets, HEADER_BYTES), np.uint8)
        header = heads.view(HEADER_DTYPE)[:, 0]
        g = base + np.arange(num_packets, dtype=np.int64)
        header["ver_type"] = DATA_VT
        header["mode"] = int(mode)
        header["fmt"] = self._fmt_code
        header["flags"] = flags
        header["job"] = c.job
        header["rank"] = self.config.rank
        header["num_workers"] = c.num_workers
        header["num_elements"] = c.packet_elements
        header["pool_index"] = sequence_pool_index(g, c.window)
        header["block_exponent"] = np.clip(bexp, *_I16)
        header["packet_id"] = g & 0xFFFFFFFF
        return heads

    def _run_pass(self, mode: WireMode, wire: np.ndarray, bexp, want_raw: bool = False,
                  out: np.ndarray | None = None):
        """Send ``wire`` (elements already in wire byte order) through the
        switch in ``mode``; return (result array of the same dtype: ``out``
        if given, C-contiguous, writable, of ``wire``'s size and itemsize,
        which may be ``wire`` itself; raw registers (mantissa int64[n],
        exponent uint16[n]) or None).

        Results are handled a received batch at a time with numpy (parse,
        de-duplicate, reassemble, pick the next packets of the freed slots),
        and the next packets leave as one train: Python work per batch, not
        per packet. A batch's timers share one heap entry.
        """
        c = self.job
        E, W = c.packet_elements, c.window
        n = wire.size
        num_packets = -(-n // E)
        packet_bytes = E * wire.dtype.itemsize
        base = self._sequence
        self._sequence += num_packets
        flags = FLAG_RAW if want_raw else 0
        injector = self._injector
        transport = self.transport
        # shared memory: headers + rows of ``wire`` assembled straight in the
        # ring; else all packets built at once
        send_packets = getattr(transport, "send_packets", None) \
            if self._direct_packets and (injector is None or injector.vectorizable) else None
        if send_packets is not None:
            heads = self._headers(mode, wire, bexp, flags, base)
            payloads, tail = self._payloads(wire)
            packets = None
        else:
            packets = self._packets(mode, wire, bexp, flags, base)
        stride = HEADER_BYTES + packet_bytes
        if out is None:
            out = np.empty(n, wire.dtype)
        elif not (out.size == n and out.dtype.itemsize == wire.dtype.itemsize and out.flags.c_contiguous
                  and out.flags.writeable):
            raise ValueError(f"_run_pass: out must be a writable C-contiguous array of {n} "
                             f"{wire.dtype.itemsize}-byte elements")
        # each result's payload goes straight to its place in ``out``; the
        # padded last one to ``result_tail`` (its head is copied at the end)
        out_bytes = out.view(np.uint8)
        full = out_bytes.size // packet_bytes
        result = out_bytes[: full * packet_bytes].reshape(full, packet_bytes)
        result_tail = np.zeros(packet_bytes, np.uint8)
        raw_len = raw_bytes(E) if want_raw else 0
        raw_mantissa = np.zeros((num_packets, E), RAW_MANTISSA_DTYPE) if want_raw else None
        raw_exponent = np.zeros((num_packets, E), RAW_EXPONENT_DTYPE) if want_raw else None
        # byte views the receive kernel copies the raw registers into (empty: none)
        raw_mantissa_bytes = raw_mantissa.view(np.uint8) if want_raw else _NO_BYTES
        raw_exponent_bytes = raw_exponent.view(np.uint8) if want_raw else _NO_BYTES
        fresh = np.empty(num_packets, np.int64)  # the receive kernel's fresh packets
        scratch = np.empty(num_packets)  # clean_samples' send times
        lost_scratch = np.empty(W, np.int64)  # overdue's lost packets
        rank = self.config.rank
        expected_len = HEADER_BYTES + packet_bytes + raw_len
        payload_end = HEADER_BYTES + packet_bytes

        pending = np.zeros(num_packets, np.bool_)  # waiting for its result
        attempts = np.zeros(num_packets, np.int64)
        sent_at = np.zeros(num_packets)
        # fast retransmit, time based (RACK, RFC 8985): when and in which order
        # each packet's latest copy left; of the packets sent once whose results
        # came back, the latest sent (its order and round trip). Results come
        # back out of order whenever workers run at different speeds (a slot
        # completes with its last worker), so "three later packets answered"
        # (TCP's duplicate acks) misfires; a time margin does not.
        send_order = np.zeros(num_packets, np.int64)
        copy_sent_at = np.zeros(num_packets)
        sent_count = 0
        rack_order, rack_rtt = -1, 0.0
        # the reordering window in units of the smoothed RTT: widened when a
        # result comes twice (a retransmission was spurious, RACK's DSACK
        # rule), narrowed slowly again while none does
        reorder = _REORDER_MIN_FRACTION
        # the packet each slot carries now (-1: none yet). Slots progress
        # independently (a slot waiting for a lost packet does not hold up the
        # others), so what is in flight spans far more than W packet ids:
        # look for losses among these W, not in a range of ids
        in_slot = np.full(W, -1, np.int64)
        step_rings = getattr(transport, "step_rings", None) if send_packets is not None else None
        if step_rings is not None:
            # shared memory: each pass of the loop below in one compiled call
            self._loop_on_rings(step_rings(), mode, base, heads, payloads, tail, result, result_tail,
                                raw_len, raw_mantissa_bytes, raw_exponent_bytes, pending, attempts, sent_at,
                                send_order, copy_sent_at, in_slot, fresh, scratch, lost_scratch)
            return self._pass_done(out, wire, result_tail, raw_mantissa, raw_exponent, num_packets)
        timers: list = []  # heap of (deadline, sequence, packet indices, their attempt numbers)
        timer_seq = 0
        clock = time.monotonic
        switch = self.switch
        rto = self._rto
        counters = self.counters
        rows_ok = hasattr(transport, "recv_arrays")
        # shared memory: gather the rows straight into the ring (a plain
        # array only: PipelinedClient's rows wait for conversion when indexed)
        send_rows = getattr(transport, "send_rows", None) \
            if send_packets is None and type(packets) is np.ndarray else None

        def send(ks: np.ndarray, now: float) -> None:
            nonlocal timer_seq, sent_count
            if ks.size == 0:
                return
            # pending, in its slot, sent now, numbered (fpisa/_client_kernels.py)
            snapshot, top = mark_sent(ks, pending, in_slot, copy_sent_at, send_order, attempts, sent_count,
                                      now, base, W)
            sent_count += ks.size
            wait = min(rto.max_s, rto.timeout * (1 << int(min(top, 16))))
            timer_seq += 1
            heapq.heappush(timers, (now + wait, timer_seq, ks, snapshot))
            if send_packets is not None:
                sent = ks if injector is None else ks[injector.filter_index(ks.size)]
                if sent.size:
                    send_packets(switch, heads, payloads, tail, sent)
            elif send_rows is not None and (injector is None or injector.vectorizable):
                sent = ks if injector is None else ks[injector.filter_index(ks.size)]
                if sent.size:
                    send_rows(switch, packets, sent)
            elif injector is None or injector.vectorizable:
                rows = packets[ks] if injector is None else injector.filter_rows(packets[ks])
                if rows.shape[0]:
                    # shared memory takes the rows as they are; sockets want bytes
                    transport.send_train(switch, rows if rows_ok else rows.tobytes(), stride)
            else:
                queue = []
                for k in ks.tolist():
                    queue += injector.submit((switch, packets[k].tobytes()), now)
                transport.send_batch(queue)

        now = clock()
        sent_before = counters.sent  # the first copies of this pass: counters.sent - sent_before
        last_probe = -np.inf
        first = np.arange(min(W, num_packets))
        sent_at[first] = now
        send(first, now)
        counters.sent += first.size
        done = 0
        last_progress = now
        recv_trains = getattr(transport, "recv_trains", None)
        # views into a shared-memory ring stay valid until the next receive
        # call, which releases them: everything below copies what it keeps
        recv_arrays = getattr(transport, "recv_arrays", None)
        rack_deadline = None
        # tail loss probe (RACK-TLP, RFC 8985): once the pass's last packet is
        # out, a lost copy among the last ones sent has no later one whose
        # result could show it lost; without results for two round trips the
        # packets still pending go again (the retransmission timer, floored
        # at timeout_ms for the bulk of a pass, would wait far longer)
        probes = 0
        probe_deadline = None
        while done < num_packets:
            now = clock()
            wait = timers[0][0] - now if timers else rto.timeout
            if rack_deadline is not None:
                wait = min(wait, rack_deadline - now)
            if probe_deadline is not None:
                wait = min(wait, probe_deadline - now)
            if injector is not None:
                deadline = injector.next_deadline()
                if deadline is not None:
                    wait = min(wait, deadline - now)
            timeout = wait if wait > 0.0 else 0.0
            blocks = []  # received rows of the result length: ring views or one joined buffer
            if recv_arrays is not None:  # shared memory: the results where they lie in the ring
                # with many results still to come, wait a moment for a batch
                # of them rather than wake for each few (see recv_arrays)
                # (at most an eighth of the window: a small window never has
                # many results waiting)
                batch = min(_COALESCE_PACKETS, W // 8)
                views = (recv_arrays(timeout, 1024, min_packets=batch, linger_s=_COALESCE_S)
                         if batch > 1 and num_packets - done >= 4 * batch else recv_arrays(timeout, 1024))
                for _, v in views:
                    if v.shape[1] == expected_len:
                        blocks.append(v)
                    else:
                        counters.ignored += v.shape[0]
            elif recv_trains is not None:  # GRO trains: no Python per datagram
                received = recv_trains(timeout, 1024)
                joined = [d for d, size, _ in received if size == expected_len and len(d) % size == 0]
                counters.ignored += sum(len(d) // max(1, size) for d, size, _ in received
                                        if not (size == expected_len and len(d) % size == 0))
                if joined:
                    blocks.append(np.frombuffer(b"".join(joined), np.uint8).reshape(-1, expected_len))
            else:
                joined = [d for d, _ in transport.recv_batch(timeout, 1024) if len(d) == expected_len]
                if joined:
                    blocks.append(np.frombuffer(b"".join(joined), np.uint8).reshape(-1, expected_len))
            now = clock()
            if blocks:
                counters.receive_batches += 1
                last_progress = now
                # one compiled pass per block (fpisa/_client_kernels.py): keep ours,
                # copy each pending packet's first result into place, clear
                # its pending flag; k: the fresh packets, in packet order
                n_fresh, ours = 0, 0
                for block in blocks:
                    n_fresh, ignored, in_range = take_results(
                        block, int(mode), c.job, rank, base, pending, HEADER_BYTES, result, result_tail,
                        payload_end,
                        raw_mantissa_bytes, raw_exponent_bytes, fresh, n_fresh)
                    counters.ignored += ignored
                    ours += in_range
                k = np.sort(fresh[:n_fresh])
                spurious = ours - n_fresh
                counters.duplicate_results += spurious
                if spurious:
                    reorder = min(_REORDER_MAX_FRACTION, reorder * 1.5)
                else:
                    reorder = max(_REORDER_MIN_FRACTION, reorder * 0.99)
                if k.size:
                    # Karn: no RTT samples from retransmitted packets; which
                    # copy a result answers is ambiguous for packets sent more
                    # than once: only the others move RACK on
                    clean, median_sent_at, q = clean_samples(k, attempts, sent_at, send_order, scratch)
                    if clean:
                        rto.sample(now - median_sent_at)
                        if send_order[q] > rack_order:
                            rack_order, rack_rtt = int(send_order[q]), now - copy_sent_at[q]
                    done += k.size
                    nxt = k + W
                    nxt = nxt[nxt < num_packets]
                    sent_at[nxt] = now
                    counters.sent += nxt.size
                    send(nxt, now)
                    if self._progress is not None:
                        self._progress.value = self._progress_base + done
                    probes = 0
            # a copy sent before the latest-sent packet whose result is back,
            # and out longer than that one's round trip plus a reordering
            # window, is lost (or its result is): send it again now instead of
            # waiting for its timer. Each copy counts anew, so a lost
            # retransmission is found the same way. The candidates are the
            # packets the W slots carry now.
            rack_deadline = None
            if rack_order >= 0:
                # the margin is doubled per re-send of the same packet, as its
                # timer is: a packet whose slot waits for another worker's
                # loss would otherwise be re-sent every round trip by all
                # K - 1 others (a storm of duplicates that slows the switch)
                margin = rack_rtt + max(_REORDER_MIN_S, (rto.srtt or 0.0) * reorder)
                n_lost, n_overtaken, next_due = overdue(in_slot, pending, send_order, rack_order, copy_sent_at,
                                                        attempts, margin, now, lost_scratch)
                if n_lost:
                    lost = lost_scratch[:n_lost].copy()  # the timer heap keeps it
                    attempts[lost] += 1
                    counters.retransmitted += n_lost
                    counters.fast_retransmitted += n_lost
                    send(lost, now)
                if n_lost < n_overtaken:
                    # wake for the next due one, but not sooner than an
                    # eighth of a round trip from now: one wake-up then
                    # re-sends all that fell due meanwhile
                    rack_deadline = max(next_due, now + max(_REORDER_MIN_S, (rto.srtt or 0.0) / 8))
            probe_deadline = None
            if rto.srtt is not None and done < num_packets and counters.sent - sent_before == num_packets:
                pto = max(_PROBE_MIN_S, _PROBE_RTTS * rto.srtt) * (1 << min(probes, 16))
                if now >= last_progress + pto and now >= last_probe + pto:
                    # the pending packets are the ones the slots carry now
                    carried = in_slot[in_slot >= 0]
                    late = carried[pending[carried] & (copy_sent_at[carried] <= now - pto)]
                    if late.size:
                        late = np.sort(late)
                        attempts[late] += 1
                        counters.retransmitted += late.size
                        counters.tail_probes += late.size
                        send(late, now)
                    probes += 1
                    last_probe = now
                    pto *= 2
                probe_deadline = max(last_progress, last_probe) + pto
            while timers and timers[0][0] <= now:
                _, _, ks, snapshot = heapq.heappop(timers)
                late = ks[pending[ks] & (attempts[ks] == snapshot)]
                if late.size:
                    attempts[late] += 1
                    counters.retransmitted += late.size
                    send(late, now)
            if injector is not None:
                due = injector.due(now)
                if due:
                    transport.send_batch(due)
            if now - last_progress > self.config.stall_s:
                raise self._stalled(num_packets - done, num_packets)
        if recv_arrays is not None:
            transport.release_arrays()
        # copies the emulated network still holds back stay there and leave
        # during the next pass, late: the switch drops them by their ids
        return self._pass_done(out, wire, result_tail, raw_mantissa, raw_exponent, num_packets)

    def _pass_done(self, out, wire, result_tail, raw_mantissa, raw_exponent, num_packets):
        """A pass's end: the padded last result's head into place; (values, raw)."""
        self.counters.results += num_packets
        if self._progress is not None:
            self._progress_base += num_packets
        out_bytes = out.view(np.uint8)
        packet_bytes = result_tail.size
        full = out_bytes.size // packet_bytes
        rest = out_bytes.size - full * packet_bytes
        if rest:
            out_bytes[full * packet_bytes:] = result_tail[:rest]
        values = out.view(wire.dtype)
        raw = None
        if raw_mantissa is not None:
            n = wire.size
            raw = (raw_mantissa.reshape(-1)[:n].astype(np.int64), raw_exponent.reshape(-1)[:n].astype(np.uint16))
        return values, raw

    _progress_base = 0

    def _stalled(self, outstanding: int, num_packets: int) -> AllreduceTimeout:
        return AllreduceTimeout(f"rank {self.config.rank}: no result for {self.config.stall_s:.0f} s with "
                                f"{outstanding} of {num_packets} packets outstanding")

    def _loop_on_rings(self, rings, mode, base, heads, payloads, tail, result, result_tail, raw_len,
                       raw_mantissa_bytes, raw_exponent_bytes, pending, attempts, sent_at, send_order,
                       copy_sent_at, in_slot, fresh, scratch, lost_scratch) -> None:
        """:meth:`_run_pass`'s loop on shared memory: the same steps, in the
        same order, each pass of it one call of ``worker_step``
        (fpisa/_client_kernels.py), which takes the results where they lie
        in the rings and writes the next copies into the up ring. What is
        left here is waiting on the doorbell. Each pass of the Python loop
        ran ~100 small Python and numpy steps, and on this 2-core machine
        every wake-up finds the caches cold (the switch streams the
        workers' packets through them): a pass cost 300-430 us of CPU,
        against ~60 us for its bytes."""
        c = self.job
        W = c.window
        num_packets = pending.shape[0]
        counters, rto, injector, transport = self.counters, self._rto, self._injector, self.transport
        iv = np.zeros(ck.IV_SIZE, np.int64)
        iv[ck.IV_RACK_ORDER] = -1
        iv[ck.IV_UP_HEAD], iv[ck.IV_DOWN_TAIL], iv[ck.IV_MCAST_TAIL] = rings.up_head, rings.down_tail, rings.mcast_tail
        fs = np.zeros(ck.FS_SIZE)
        fs[ck.FS_REORDER] = _REORDER_MIN_FRACTION
        fs[ck.FS_SRTT] = -1.0 if rto.srtt is None else rto.srtt
        fs[ck.FS_RTTVAR], fs[ck.FS_RTO] = rto.rttvar, rto.timeout
        fs[ck.FS_RTO_MIN], fs[ck.FS_RTO_MAX] = rto.min_s, rto.max_s
        fs[ck.FS_REORDER_MIN_S], fs[ck.FS_REORDER_MIN_F], fs[ck.FS_REORDER_MAX_F] = \
            _RING_REORDER_MIN_S, _REORDER_MIN_FRACTION, _REORDER_MIN_FRACTION
        fs[ck.FS_PROBE_RTTS], fs[ck.FS_PROBE_MIN_S] = _PROBE_RTTS, _PROBE_MIN_S
        fs[ck.FS_LAST_PROBE] = -np.inf
        faults = injector.faults if injector is not None else None
        loss = faults.loss if faults is not None else 0.0
        duplicate = faults.duplicate if faults is not None else 0.0
        fs[ck.FS_LOSS], fs[ck.FS_DUPLICATE] = loss, duplicate
        cnt = np.zeros(ck.C_SIZE, np.int64)
        draws = np.zeros(0)
        need = ck.DRAWS_PER_SLOT * W
        if loss or duplicate:
            draws = injector.draws(max(4 * need, 1 << 14))
        timer_at = np.zeros(num_packets)
        ks = np.empty(3 * W, np.int64)
        index = np.empty(6 * W, np.int64)
        # linger for a batch of results, as recv_arrays(min_packets=...) does
        batch = min(_COALESCE_PACKETS, W // 8)
        args = (rings.ctrl, rings.down_word, rings.down_slots, rings.down_lengths, rings.mcast_word,
                rings.mcast_slots, rings.mcast_lengths, rings.mcast_masks, rings.bit,
                HEADER_BYTES + result.shape[1] + raw_len, int(mode), c.job, self.config.rank, base, HEADER_BYTES,
                result, result_tail, HEADER_BYTES + result.shape[1], raw_mantissa_bytes, raw_exponent_bytes,
                pending, attempts, sent_at, send_order, copy_sent_at, in_slot, timer_at, fresh, scratch,
                lost_scratch, ks, index)
        tx = (rings.up_words, rings.up_asleep, rings.up_slots, rings.up_lengths, heads, payloads, tail, W, iv, fs,
              cnt)
        step = _step_entry(args, draws, tx)
        clock = time.monotonic
        stall_s = self.config.stall_s
        try:
            now = clock()
            fs[ck.FS_LAST_PROGRESS] = now
            start = True
            while True:
                if draws.size and draws.size - iv[ck.IV_DRAW] < need:
                    draws = np.concatenate((draws[iv[ck.IV_DRAW]:], injector.draws(max(4 * need, 1 << 14))))
                    iv[ck.IV_DRAW] = 0
                fresh_n, due, asleep = step(now, start, *args, draws, *tx)
                start = False
                if asleep:
                    transport.ring_switch_bell()
                done = iv[ck.IV_DONE]
                if fresh_n and self._progress is not None:
                    self._progress.value = self._progress_base + done
                if done >= num_packets:
                    break
                now = clock()
                if now - fs[ck.FS_LAST_PROGRESS] > stall_s:
                    raise self._stalled(num_packets - done, num_packets)
                wait = due - now if due < np.inf else fs[ck.FS_RTO]
                if transport.wait(wait if wait > 0.0 else 0.0):
                    if batch > 1 and num_packets - done >= 4 * batch and transport.waiting() < batch:
                        time.sleep(_COALESCE_S)
                now = clock()
        finally:
            transport.sync_rings(iv[ck.IV_UP_HEAD], iv[ck.IV_DOWN_TAIL], iv[ck.IV_MCAST_TAIL], cnt[ck.C_RING_FULL])
            if fs[ck.FS_SRTT] >= 0:
                rto.srtt, rto.rttvar = float(fs[ck.FS_SRTT]), float(fs[ck.FS_RTTVAR])
            rto.timeout = float(fs[ck.FS_RTO])
            for name, i in (("sent", ck.C_SENT), ("retransmitted", ck.C_RETRANSMITTED),
                            ("fast_retransmitted", ck.C_FAST), ("tail_probes", ck.C_PROBES),
                            ("duplicate_results", ck.C_DUPLICATE_RESULTS), ("ignored", ck.C_IGNORED),
                            ("receive_batches", ck.C_BATCHES)):
                setattr(counters, name, getattr(counters, name) + int(cnt[i]))
            if injector is not None:
                injector.count_filtered(int(cnt[ck.C_OFFERED]), int(cnt[ck.C_DROPPED]), int(cnt[ck.C_DUPLICATED]))


def _step_entry(args, draws, tx):
    """``worker_step``'s compiled entry point for these argument types: the
    dispatcher types its ~45 arguments on every call otherwise (tens of us
    with cold caches, per pass of the loop)."""
    key = tuple(typeof(a) for a in (0.0, True, *args, draws, *tx))
    entry = _STEP_ENTRIES.get(key)
    if entry is None:
        ck.worker_step.compile(key)
        entry = ck.worker_step.overloads[key].entry_point
        _STEP_ENTRIES[key] = entry
    return entry


_STEP_ENTRIES: dict = {}


def _warm_step() -> None:
    """Load ``worker_step`` for the argument types of a pass (from Numba's
    cache, or compiled: ~10 s) and run it once on empty rings, so neither
    lands in the first measured pass."""
    W, n = 2, 3
    u8 = np.zeros((n, 8), np.uint8)
    ctrl = np.zeros(64, np.uint64)
    ring = (np.zeros((2, 32), np.uint8), np.zeros(2, np.uint32))
    args = (ctrl, 0, *ring, 16, *ring, np.zeros(2, np.uint64), np.uint64(1), 32, 0, 0, 0, 0, HEADER_BYTES,
            u8[:2], u8[2], 0, _NO_BYTES, _NO_BYTES, np.zeros(n, np.bool_), np.zeros(n, np.int64), np.zeros(n),
            np.zeros(n, np.int64), np.zeros(n), np.full(W, -1, np.int64), np.zeros(n), np.zeros(n, np.int64),
            np.zeros(n), np.zeros(W, np.int64), np.zeros(3 * W, np.int64), np.zeros(6 * W, np.int64))
    iv = np.zeros(ck.IV_SIZE, np.int64)
    iv[ck.IV_RACK_ORDER] = -1
    fs = np.zeros(ck.FS_SIZE)
    fs[ck.FS_SRTT] = -1.0
    tx = (np.array([32], np.int64), np.array([48], np.int64), *ring, u8, u8[:2], u8[2], W, iv, fs,
          np.zeros(ck.C_SIZE, np.int64))
    draws = np.zeros(0)
    _step_entry(args, draws, tx)(0.0, False, *args, draws, *tx)
