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

from fpisa import switchml
from fpisa.codec import normalize
from fpisa.counters import Counters
from fpisa.job import JobSpec
from fpisa.netem import FaultInjector, LinkFaults
from fpisa.protocol import (
    ALL_RANKS,
    DATA_VT,
    FLAG_RAW,
    HEADER_BYTES,
    HEADER_DTYPE,
    RAW_EXPONENT_DTYPE,
    RAW_MANTISSA_DTYPE,
    RESULT_VT,
    RETX_VT,
    WireMode,
    raw_bytes,
    sequence_pool_index,
)

__all__ = ["WorkerConfig", "AllreduceClient", "ConversionCost", "AllreduceTimeout"]

_I16 = (-0x8000, 0x7FFF)
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
    results: packets whose result arrived; duplicate_results: results that
    arrived again; ignored: packets not a result of ours (other job or rank,
    malformed); receive_batches: receive calls that returned results."""

    NAMES = ("sent", "retransmitted", "fast_retransmitted", "results", "duplicate_results", "ignored",
             "receive_batches")


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
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar += (abs(self.srtt - rtt) - self.rttvar) / 4
            self.srtt += (rtt - self.srtt) / 8
        self.timeout = min(self.max_s, max(self.min_s, self.srtt + 4 * self.rttvar))


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

    def allreduce(self, bits: np.ndarray) -> np.ndarray:
        """Sum ``bits`` (the format's bit patterns, 1-D) over all workers."""
        bits = np.asarray(bits)
        if bits.ndim != 1 or bits.dtype != np.dtype(self._fmt.bits_dtype):
            raise ValueError(f"expected 1-D {np.dtype(self._fmt.bits_dtype)} bit patterns of "
                             f"{self._fmt.name}, got {bits.dtype} with shape {bits.shape}")
        if self.job.info.exponent_pass:
            return self._allreduce_switchml(bits)
        return self._allreduce_fpisa(bits)

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

    @property
    def packet_ids(self) -> int:
        return self._sequence

    # -- modes ----------------------------------------------------------------------

    def _allreduce_fpisa(self, bits: np.ndarray) -> np.ndarray:
        c = self.job
        t0 = time.thread_time_ns()
        # the wire carries the host's little-endian bytes: on a little-endian
        # host this is a view, no per-element work (FPISA's claim)
        wire = bits.astype(bits.dtype.newbyteorder("<"), copy=False)
        t1 = time.thread_time_ns()
        result, raw = self._run_pass(c.data_wire_mode, wire, bexp=0, want_raw=c.raw_registers)
        t2 = time.thread_time_ns()
        if raw is not None:
            # host-side normalization with the rounding the switch cannot do
            out = normalize(raw[1].astype(np.int64), raw[0], self._fmt, c.rounding)
            out = np.asarray(out, self._fmt.bits_dtype)
        else:
            out = result.view(wire.dtype).astype(self._fmt.bits_dtype, copy=False)
        t3 = time.thread_time_ns()
        self.conversion.encode_ns += t1 - t0
        self.conversion.decode_ns += t3 - t2
        self.conversion.elements += bits.size
        return out

    def _allreduce_switchml(self, bits: np.ndarray) -> np.ndarray:
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
        sums, _ = self._run_pass(WireMode.SWITCHML, quantized, bexp=max_exponents)
        t4 = time.thread_time_ns()
        out = switchml.dequantize_from_wire(np.ascontiguousarray(sums[: bits.size]), self._fmt,
                                            max_exponents, K, E)
        t5 = time.thread_time_ns()
        self.conversion.encode_ns += (t1 - t0) + (t3 - t2)
        self.conversion.decode_ns += t5 - t4
        self.conversion.elements += bits.size
        return np.asarray(out, self._fmt.bits_dtype)

    # -- one pass through the switch ---------------------------------------------------

    def _packets(self, mode: WireMode, wire: np.ndarray, bexp, flags: int, base: int) -> np.ndarray:
        """All of a pass's DATA packets, built at once: (num_packets, bytes)."""
        c = self.job
        E = c.packet_elements
        num_packets = -(-wire.size // E)
        packet_bytes = E * wire.dtype.itemsize
        packets = np.zeros((num_packets, HEADER_BYTES + packet_bytes), np.uint8)
        payload = packets[:, HEADER_BYTES:]
        flat = np.ascontiguousarray(wire).view(np.uint8)
        full = flat.size // packet_bytes
        payload[:full] = flat[: full * packet_bytes].reshape(full, packet_bytes)
        if full < num_packets:  # the zero-padded last packet
            payload[full, : flat.size - full * packet_bytes] = flat[full * packet_bytes:]
        header = packets[:, :HEADER_BYTES].view(HEADER_DTYPE)[:, 0]
        g = base + np.arange(num_packets, dtype=np.int64)
        header["ver_type"] = DATA_VT
        header["mode"] = int(mode)
        header["fmt"] = self._fmt_code
        header["flags"] = flags
        header["job"] = c.job
        header["rank"] = self.config.rank
        header["num_workers"] = c.num_workers
        header["num_elements"] = E
        header["pool_index"] = sequence_pool_index(g, c.window)
        header["block_exponent"] = np.clip(bexp, *_I16)
        header["packet_id"] = g & 0xFFFFFFFF
        return packets

    def _run_pass(self, mode: WireMode, wire: np.ndarray, bexp, want_raw: bool = False):
        """Send ``wire`` (elements already in wire byte order) through the
        switch in ``mode``; return (result array of the same dtype, raw
        registers (mantissa int64[n], exponent uint16[n]) or None).

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
        packets = self._packets(mode, wire, bexp, FLAG_RAW if want_raw else 0, base)
        stride = packets.shape[1]
        result = np.zeros((num_packets, packet_bytes), np.uint8)
        raw_len = raw_bytes(E) if want_raw else 0
        raw_mantissa = np.zeros((num_packets, E), RAW_MANTISSA_DTYPE) if want_raw else None
        raw_exponent = np.zeros((num_packets, E), RAW_EXPONENT_DTYPE) if want_raw else None
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
        timers: list = []  # heap of (deadline, sequence, packet indices, their attempt numbers)
        timer_seq = 0
        clock = time.monotonic
        switch = self.switch
        injector = self._injector
        transport = self.transport
        rto = self._rto
        counters = self.counters
        rows_ok = hasattr(transport, "recv_arrays")
        # shared memory: gather the rows straight into the ring (a plain
        # array only: PipelinedClient's rows wait for conversion when indexed)
        send_rows = getattr(transport, "send_rows", None) if type(packets) is np.ndarray else None

        def send(ks: np.ndarray, now: float) -> None:
            nonlocal timer_seq, sent_count
            if ks.size == 0:
                return
            pending[ks] = True
            in_slot[(base + ks) % W] = ks
            copy_sent_at[ks] = now
            send_order[ks] = sent_count + np.arange(ks.size)
            sent_count += ks.size
            snapshot = attempts[ks]
            wait = min(rto.max_s, rto.timeout * (1 << int(min(snapshot.max(), 16))))
            timer_seq += 1
            heapq.heappush(timers, (now + wait, timer_seq, ks, snapshot))
            if send_rows is not None and (injector is None or injector.vectorizable):
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
        while done < num_packets:
            now = clock()
            wait = timers[0][0] - now if timers else rto.timeout
            if rack_deadline is not None:
                wait = min(wait, rack_deadline - now)
            if injector is not None:
                deadline = injector.next_deadline()
                if deadline is not None:
                    wait = min(wait, deadline - now)
            timeout = wait if wait > 0.0 else 0.0
            buf = None
            if recv_arrays is not None:  # shared memory: the results where they lie in the ring
                # with many results still to come, wait a moment for a batch
                # of them rather than wake for each few (see recv_arrays)
                # (at most an eighth of the window: a small window never has
                # many results waiting)
                batch = min(_COALESCE_PACKETS, W // 8)
                views = (recv_arrays(timeout, 1024, min_packets=batch, linger_s=_COALESCE_S)
                         if batch > 1 and num_packets - done >= 4 * batch else recv_arrays(timeout, 1024))
                counters.ignored += sum(v.shape[0] for _, v in views if v.shape[1] != expected_len)
                views = [v for _, v in views if v.shape[1] == expected_len]
                if views:
                    buf = views[0] if len(views) == 1 else np.concatenate(views)
            elif recv_trains is not None:  # GRO trains: no Python per datagram
                received = recv_trains(timeout, 1024)
                blocks = [d for d, size, _ in received if size == expected_len and len(d) % size == 0]
                counters.ignored += sum(len(d) // max(1, size) for d, size, _ in received
                                        if not (size == expected_len and len(d) % size == 0))
                if blocks:
                    buf = np.frombuffer(b"".join(blocks), np.uint8).reshape(-1, expected_len)
            else:
                blocks = [d for d, _ in transport.recv_batch(timeout, 1024) if len(d) == expected_len]
                if blocks:
                    buf = np.frombuffer(b"".join(blocks), np.uint8).reshape(-1, expected_len)
            now = clock()
            if buf is not None:
                counters.receive_batches += 1
                last_progress = now
                header = buf[:, :HEADER_BYTES].view(HEADER_DTYPE)[:, 0]
                vt = header["ver_type"]
                ours = (((vt == RESULT_VT) | (vt == RETX_VT)) & (header["mode"] == int(mode))
                        & (header["job"] == c.job)
                        # the shared-memory multicast ring's one copy is everyone's
                        & ((header["rank"] == self.config.rank) | (header["rank"] == ALL_RANKS)))
                counters.ignored += int(np.count_nonzero(~ours))
                k = (header["packet_id"].astype(np.int64) - base) & 0xFFFFFFFF
                ours &= k < num_packets  # a late result of an earlier pass
                rows = np.flatnonzero(ours)
                k = k[rows]
                duplicates = rows.size
                # first copy of each packet that is still pending
                k, first_at = np.unique(k, return_index=True)
                rows = rows[first_at]
                fresh = pending[k]
                spurious = duplicates - int(np.count_nonzero(fresh))
                counters.duplicate_results += spurious
                if spurious:
                    reorder = min(_REORDER_MAX_FRACTION, reorder * 1.5)
                else:
                    reorder = max(_REORDER_MIN_FRACTION, reorder * 0.99)
                k, rows = k[fresh], rows[fresh]
                if k.size:
                    pending[k] = False
                    result[k] = buf[rows, HEADER_BYTES:payload_end]
                    if want_raw:
                        raw = buf[rows, payload_end:]
                        raw_mantissa[k] = raw[:, : 8 * E].copy().view(RAW_MANTISSA_DTYPE)
                        raw_exponent[k] = raw[:, 8 * E:].copy().view(RAW_EXPONENT_DTYPE)
                    clean = attempts[k] == 0  # Karn: no RTT samples from retransmitted packets
                    if clean.any():
                        rto.sample(float(np.median(now - sent_at[k[clean]])))
                        # which copy a result answers is ambiguous for packets
                        # sent more than once: only the others move RACK on
                        q = k[clean]
                        q = q[np.argmax(send_order[q])]
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
            # a copy sent before the latest-sent packet whose result is back,
            # and out longer than that one's round trip plus a reordering
            # window, is lost (or its result is): send it again now instead of
            # waiting for its timer. Each copy counts anew, so a lost
            # retransmission is found the same way. The candidates are the
            # packets the W slots carry now.
            rack_deadline = None
            if rack_order >= 0:
                flying = in_slot[in_slot >= 0]
                overtaken = flying[pending[flying] & (send_order[flying] < rack_order)]
                if overtaken.size:
                    margin = rack_rtt + max(_REORDER_MIN_S, (rto.srtt or 0.0) * reorder)
                    # doubled per re-send of the same packet, as its timer is:
                    # a packet whose slot waits for another worker's loss would
                    # otherwise be re-sent every round trip by all K - 1
                    # others (a storm of duplicates that slows the switch)
                    due_at = copy_sent_at[overtaken] + np.ldexp(margin, np.minimum(attempts[overtaken], 16))
                    lost = overtaken[due_at <= now]
                    if lost.size:
                        attempts[lost] += 1
                        counters.retransmitted += lost.size
                        counters.fast_retransmitted += lost.size
                        send(lost, now)
                    if lost.size < overtaken.size:
                        # wake for the next due one, but not sooner than an
                        # eighth of a round trip from now: one wake-up then
                        # re-sends all that fell due meanwhile
                        rack_deadline = max(float(due_at[due_at > now].min()),
                                            now + max(_REORDER_MIN_S, (rto.srtt or 0.0) / 8))
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
                raise AllreduceTimeout(f"rank {self.config.rank}: no result for "
                                       f"{self.config.stall_s:.0f} s with "
                                       f"{num_packets - done} of {num_packets} packets outstanding")
        if recv_arrays is not None:
            transport.release_arrays()
        counters.results += num_packets
        # copies the emulated network still holds back stay there and leave
        # during the next pass, late: the switch drops them by their ids
        if self._progress is not None:
            self._progress_base += num_packets
        values = result.reshape(-1).view(wire.dtype)[:n]
        raw = None
        if want_raw:
            raw = (raw_mantissa.reshape(-1)[:n].astype(np.int64), raw_exponent.reshape(-1)[:n].astype(np.uint16))
        return values, raw

    _progress_base = 0
