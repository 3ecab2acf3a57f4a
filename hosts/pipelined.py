"""A worker whose host conversion overlaps the network: conversion threads.

:class:`PipelinedClient` is an :class:`hosts.worker.AllreduceClient` that
sends exactly the same packets (same ids, slots, shadow sets, payloads and
headers), so its results are the serial client's bit for bit; what changes
is when the host work happens:

- SwitchML: the conversion threads compute the local block exponents (the
  array split between them); the exponent pass runs as in the serial
  client; then ONE data pass over the whole array, as in the serial client,
  except that its packets' payloads are filled by the conversion threads
  chunk by chunk (quantized straight into big-endian int32, then copied
  into the packet rows) while the network thread (the caller's) is already
  sending: a packet row is handed to the network only once its chunk is
  converted (:class:`_ConvertedRows`), so the window never drains between
  chunks. The threads run ahead as far as they can. Dequantizing starts
  when the pass is done, the array split between the threads (the worker
  client hands results over per pass, not per packet).
- FPISA (``fpisa``, ``fpisa-a``): the host has no per-element conversion:
  the wire carries the array's little-endian bytes, copied into packets and
  out of results by the network thread, as in the serial client. With raw
  registers the threads normalize the results, the array split between them.

The compiled kernels (:mod:`fpisa._host_kernels`, :mod:`fpisa._kernels`)
are ``nogil``, so the threads run them in parallel with each other and with
the network thread's Python. ``conversion_threads`` is what
``hosts/study/host_cores.py`` calls host cores: cores that convert; the
network thread (packet I/O) comes on top, as the model's ``packet_io``.

:class:`PipelineStats` records the conversion threads' CPU time (as the
serial client's ``ConversionCost``) and the wall time the network thread
waited for them (``stall_s``: conversion that was not hidden behind the
network: the exponents, the first chunk, a chunk not ready in time, the
final dequantize).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fpisa import switchml
from fpisa.codec import normalize
from fpisa.protocol import HEADER_BYTES, WireMode

from .worker import AllreduceClient, WorkerConfig, deliver

__all__ = ["PipelinedClient", "PipelineStats", "check_conversion_threads", "default_chunk_elements"]


def check_conversion_threads(threads) -> int:
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"conversion threads must be an integer >= 1, got {threads!r}")
    return int(threads)


def default_chunk_elements(packet_elements: int) -> int:
    """64 packets, at least 65,536 elements: small enough that the first chunk
    (converted before anything can be sent) is short, large enough that a
    chunk's Python overhead (~10 us) is small beside its kernel time."""
    packets = max(64, -(-65536 // packet_elements))
    return packets * packet_elements


@dataclass
class PipelineStats:
    """What the pipeline did: chunks, threads, and the network thread's waits."""

    conversion_threads: int
    chunk_elements: int
    chunks: int = 0
    #: wall time the network thread waited for conversion results
    stall_ns: int = 0
    #: wall time of SwitchML's exponent pass (a round trip the link idles through)
    exponent_pass_ns: int = 0

    def as_dict(self) -> dict:
        return {"conversion_threads": self.conversion_threads, "chunk_elements": self.chunk_elements,
                "chunks": self.chunks, "stall_s": self.stall_ns / 1e9,
                "exponent_pass_s": self.exponent_pass_ns / 1e9}


def _split(lo: int, hi: int, parts: int, align: int) -> list[tuple[int, int]]:
    """[lo, hi) in at most ``parts`` pieces whose inner boundaries are multiples of ``align``."""
    blocks = -(-(hi - lo) // align)
    cuts = [lo + min(hi - lo, (blocks * i // parts) * align) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


class _ConvertedRows(np.ndarray):
    """A pass's packets (rows) whose payloads conversion threads are still
    filling: indexing rows (what the worker client does to send them) first
    waits until every chunk up to the highest row asked for is converted,
    and returns a plain array."""

    def __getitem__(self, key):
        wait = getattr(self, "_wait_rows", None)
        if wait is not None:
            rows = key[0] if isinstance(key, tuple) else key
            if isinstance(rows, slice):
                picked = range(*rows.indices(self.shape[0]))
                top = max(picked) if len(picked) else -1
            else:
                top = int(np.max(rows)) if np.size(rows) else -1
            if top >= 0:
                wait(top)
        return np.asarray(super().__getitem__(key))


class PipelinedClient(AllreduceClient):
    """:class:`AllreduceClient` with ``conversion_threads`` threads converting
    while the network thread sends (module docstring)."""

    def __init__(self, config: WorkerConfig, transport, switch_address, *, conversion_threads: int = 1,
                 chunk_elements: int | None = None, faults=None, progress=None):
        super().__init__(config, transport, switch_address, faults=faults, progress=progress)
        threads = check_conversion_threads(conversion_threads)
        E = config.job.packet_elements
        if chunk_elements is None:
            chunk_elements = default_chunk_elements(E)
        # whole packets per chunk
        chunk = -(-self.check_chunk(chunk_elements) // E) * E
        self.pipeline = PipelineStats(threads, chunk)
        #: set while a SwitchML data pass is being built: fills its packets' payloads
        self._fill = None

    @staticmethod
    def check_chunk(chunk_elements) -> int:
        if isinstance(chunk_elements, bool) or not isinstance(chunk_elements, (int, np.integer)) \
                or chunk_elements < 1:
            raise ValueError(f"chunk elements must be an integer >= 1, got {chunk_elements!r}")
        return int(chunk_elements)

    # -- helpers -------------------------------------------------------------------

    @staticmethod
    def _timed(fn, *args):
        """Run ``fn`` in a conversion thread; its result and CPU time."""
        t0 = time.thread_time_ns()
        value = fn(*args)
        return value, time.thread_time_ns() - t0

    def _collect(self, futures: list, field: str) -> list:
        """Wait for ``futures`` (the network thread stalls meanwhile); charge their CPU time."""
        t0 = time.perf_counter_ns()
        values = []
        for f in futures:
            value, ns = f.result()
            setattr(self.conversion, field, getattr(self.conversion, field) + ns)
            values.append(value)
        self.pipeline.stall_ns += time.perf_counter_ns() - t0
        return values

    def _parallel(self, pool, field: str, fn, n: int) -> list:
        """``fn(a, b)`` over [0, n) split between the threads, waited for."""
        E = self.job.packet_elements
        return self._collect([pool.submit(self._timed, fn, a, b)
                              for a, b in _split(0, n, self.pipeline.conversion_threads, E)], field)

    #: SwitchML's rows are converted while they are sent (_ConvertedRows):
    #: the packets are built here, not read from the array
    _direct_packets = False

    def _packets(self, mode, wire, bexp, flags, base):
        packets = super()._packets(mode, wire, bexp, flags, base)
        if self._fill is None or mode != WireMode.SWITCHML:
            return packets
        return self._fill(packets)

    # -- modes ----------------------------------------------------------------------

    def _allreduce_switchml(self, bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        c = self.job
        E, K, fmt = c.packet_elements, c.num_workers, self._fmt
        n = bits.size
        blocks = -(-n // E)
        local = np.empty(blocks, ">i4")
        # zeros, not garbage: a row sent before its chunk is converted would
        # carry zeros and make the result wrong (the tests would see it)
        quantized = np.zeros(n, ">i4")
        chunk = self.pipeline.chunk_elements
        chunk_rows = chunk // E
        bounds = [(a, min(n, a + chunk)) for a in range(0, n, chunk)]
        self.pipeline.chunks += len(bounds)
        max_exponents = None

        def exponents(a, b):
            local[a // E: -(-b // E)] = switchml.block_exponents(bits[a:b], fmt, E)

        def convert(packets, a, b):
            # quantize into the contiguous wire buffer, then copy into the packet rows
            switchml.quantize_to_wire(bits[a:b], fmt, max_exponents[a // E: -(-b // E)], K, E, quantized[a:b])
            flat = quantized[a:b].view(np.uint8)
            rows = packets[a // E: -(-b // E)]
            full = (b - a) // E
            payload = rows[:, HEADER_BYTES:]
            payload[:full] = flat[: full * E * 4].reshape(full, E * 4)
            if full < rows.shape[0]:  # the last, zero-padded packet
                payload[full, : flat.size - full * E * 4] = flat[full * E * 4:]

        with ThreadPoolExecutor(self.pipeline.conversion_threads, thread_name_prefix="fpisa-convert") as pool:
            futures: list = []

            def fill(packets: np.ndarray) -> np.ndarray:
                plain = packets
                futures.extend(pool.submit(self._timed, convert, plain, a, b) for a, b in bounds)
                done = [0]  # chunks collected so far

                def wait_rows(top: int) -> None:
                    need = top // chunk_rows + 1
                    if need > done[0]:
                        self._collect(futures[done[0]:need], "encode_ns")
                        done[0] = need

                lazy = packets.view(_ConvertedRows)
                lazy._wait_rows = wait_rows
                return lazy

            try:
                self._parallel(pool, "encode_ns", exponents, n)
                t0 = time.perf_counter_ns()
                result, _ = self._run_pass(WireMode.INT_MAX, local, bexp=0)
                self.pipeline.exponent_pass_ns += time.perf_counter_ns() - t0
                max_exponents = result.view(">i4")[:blocks].astype(np.int32)
                self._fill = fill
                try:
                    sums, _ = self._run_pass(WireMode.SWITCHML, quantized, bexp=max_exponents)
                finally:
                    self._fill = None
                sums = np.ascontiguousarray(sums[:n])
                if out is None:
                    out = np.empty(n, fmt.bits_dtype)

                def dequantize(a, b):
                    switchml.dequantize_from_wire(sums[a:b], fmt, max_exponents[a // E: -(-b // E)], K, E,
                                                  out[a:b])

                self._parallel(pool, "decode_ns", dequantize, n)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        self.conversion.elements += n
        return out

    def _allreduce_fpisa(self, bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        c = self.job
        n = bits.size
        # the wire carries the host's little-endian bytes (a view: no conversion)
        wire = bits.astype(bits.dtype.newbyteorder("<"), copy=False)
        self.pipeline.chunks += 1
        result, raw = self._run_pass(c.data_wire_mode, wire, bexp=0, want_raw=c.raw_registers)
        if raw is None:
            t0 = time.thread_time_ns()
            out = deliver(result.view(wire.dtype).astype(self._fmt.bits_dtype, copy=False), out)
            self.conversion.decode_ns += time.thread_time_ns() - t0
        else:
            mantissa, exponent = raw
            if out is None:
                out = np.empty(n, self._fmt.bits_dtype)

            def run(a, b):
                out[a:b] = normalize(exponent[a:b], mantissa[a:b], self._fmt, c.rounding)

            with ThreadPoolExecutor(self.pipeline.conversion_threads, thread_name_prefix="fpisa-convert") as pool:
                self._parallel(pool, "decode_ns", run, n)
        self.conversion.elements += n
        return out
