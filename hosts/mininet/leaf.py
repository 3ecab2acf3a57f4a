"""A leaf switch of the two-level topology: aggregate locally, forward up, multicast down.

:class:`LeafSwitch` wraps an ordinary switch pipeline (``emulator.pipeline.
SwitchPipeline``, injected by the node program: this module does not
import ``emulator``) that aggregates the leaf's own workers, and adds the
two things a leaf does beyond a star switch:

- *up*: when the local slot completes, the partial sum goes to the spine
  as a DATA packet from "worker" ``leaf_index`` of a job of ``num_leaves``
  (same mode, slot, shadow set, packet id and block exponent; the payload
  is the leaf's normalized read-out, i.e. ``leaf_output="normalized"`` of
  :mod:`fpisa.hierarchy`);
- *down*: the spine's RESULT for that slot goes to every local worker.

Workers address the leaf as their switch with their *global* rank and the
job's total worker count; the leaf's pipeline sees *local* ranks and its
own count, so the header is rewritten on the way in and on the way out
(what a real leaf does with per-port metadata).

Loss: a worker retransmits; a duplicate for a slot the leaf has completed
gets the spine's result if the leaf has it (RESULT_RETX), else the leaf
sends its partial up again, at most once per ``resend_gap_s`` per slot (the
spine answers a duplicate for a completed slot with RESULT_RETX, and the
leaf passes that to all its workers). SwitchML's shadow-set argument carries over: a
worker moves a slot to the other set only after it has the spine's result,
so neither the leaf's nor the spine's row is reused while still needed.
"""

from __future__ import annotations

import time
from typing import Hashable, Sequence

from fpisa.counters import Counters
from fpisa.protocol import DATA_VT as _DATA_VT, FIELD_OFFSETS as _OFF, HEADER_BYTES, MAX_WORKERS, \
    RESULT_VT as _RESULT_VT, RETX_VT as _RETX_VT

__all__ = ["LeafSwitch", "LeafCounters"]

# byte offsets of the header fields this module rewrites, from the one definition
_VT, _FLAGS, _RANK, _NW = _OFF["ver_type"], _OFF["flags"], _OFF["rank"], _OFF["num_workers"]
_POOL = slice(_OFF["pool_index"], _OFF["pool_index"] + 2)
_PID = slice(_OFF["packet_id"], _OFF["packet_id"] + 4)


class LeafCounters(Counters):
    """up_sent: partial sums sent to the spine (first time); up_resent: sent
    again (a worker asked, the spine's result was missing); down_results:
    spine results multicast down (per slot, not per worker);
    down_retransmitted: spine results answered to one worker's duplicate;
    stale_from_spine: spine results for a slot generation the leaf is not
    waiting for; unknown_rank: worker packets with a rank this leaf does not
    serve; up_resend_suppressed: duplicates not re-sent up because the
    partial went up less than resend_gap_s ago."""

    NAMES = ("up_sent", "up_resent", "down_results", "down_retransmitted", "stale_from_spine",
             "unknown_rank", "up_resend_suppressed")


class LeafSwitch:
    """A leaf: ``process`` / ``process_batch`` -> packets to send; ``stats``."""

    def __init__(self, pipeline, *, leaf_index: int, num_leaves: int, global_ranks: Sequence[int],
                 total_workers: int, spine: Hashable, uplink_interface: str, batch_processor=None,
                 resend_gap_s: float = 0.01, clock=time.monotonic):
        if len(global_ranks) != pipeline.job.num_workers:
            raise ValueError(f"{len(global_ranks)} global ranks for a pipeline of "
                             f"{pipeline.job.num_workers} workers")
        if not 0 <= leaf_index < num_leaves <= MAX_WORKERS or not 1 <= total_workers <= MAX_WORKERS:
            raise ValueError(f"bad leaf {leaf_index} of {num_leaves} / {total_workers} workers")
        self.pipeline = pipeline
        #: packets -> outputs, like calling pipeline.process on each in order
        self._batch = batch_processor or (lambda packets: [o for d, s in packets for o in pipeline.process(d, s)])
        self.leaf_index = leaf_index
        self.num_leaves = num_leaves
        self.total_workers = total_workers
        self.global_ranks = tuple(global_ranks)
        self._local = {g: r for r, g in enumerate(global_ranks)}
        self._workers = pipeline.config.workers
        self.spine = spine
        self.uplink_interface = uplink_interface
        self.counters = LeafCounters()
        #: each of a slot's workers retransmits on its own timer; one partial
        #: re-sent up per gap answers them all (the spine's answer goes to every
        #: local worker), instead of one per duplicate
        self.resend_gap_s = resend_gap_s
        self._clock = clock
        #: pool index -> [packet id, packet sent up, leaf result flags, last sent]
        self._up: dict[bytes, list] = {}
        #: pool index -> the spine's result packet (as received), for retransmission
        self._down: dict[int, bytes] = {}

    def process(self, data: bytes, source) -> list[tuple[Hashable, bytes]]:
        """One packet (the reference path)."""
        return self.process_batch([(data, source)])

    def process_batch(self, packets: list[tuple[bytes, Hashable]]) -> list[tuple[Hashable, bytes]]:
        """A batch: the spine's packets first, then the workers' through the
        local pipeline in one call of ``batch_processor`` (the emulator's
        batch fast path when the node program injects it)."""
        out: list = []
        local = []
        for data, source in packets:
            if getattr(source, "interface", None) == self.uplink_interface:
                out += self._from_spine(data)
                continue
            if len(data) >= HEADER_BYTES and data[_VT] == _DATA_VT:
                rank = self._local.get(data[_RANK])
                if rank is None:
                    self.counters.unknown_rank += 1
                    continue
                packet = bytearray(data)
                packet[_RANK] = rank
                if data[_NW] == self.total_workers:
                    packet[_NW] = len(self.global_ranks)
                data = bytes(packet)  # a wrong count stays wrong: the pipeline drops it
            local.append((data, source))
        if not local:
            return out
        sent_up = set()
        for destination, packet in self._batch(local):
            if packet[_VT] == _RESULT_VT:
                # one RESULT per local worker per completed slot: go up once
                key = bytes(packet[_POOL]) + bytes(packet[_PID])
                if key not in sent_up:
                    sent_up.add(key)
                    out += self._send_up(packet)
            else:
                out += self._answer_duplicate(packet, destination)
        return out

    def _send_up(self, local_result: bytes) -> list:
        up = bytearray(local_result)
        up[_VT] = _DATA_VT
        up[_FLAGS] = 0
        up[_RANK] = self.leaf_index
        up[_NW] = self.num_leaves
        up = bytes(up)
        pool = bytes(local_result[_POOL])
        self._up[pool] = [bytes(local_result[_PID]), up, local_result[_FLAGS], self._clock()]
        self._down.pop(pool, None)
        self.counters.up_sent += 1
        return [(self.spine, up)]

    def _answer_duplicate(self, retx: bytes, destination) -> list:
        pool = bytes(retx[_POOL])
        spine_result = self._down.get(pool)
        entry = self._up.get(pool)
        if spine_result is not None and entry is not None and spine_result[_PID] == entry[0]:
            self.counters.down_retransmitted += 1
            r = self._workers.index(destination)
            return [(destination, self._for_worker(spine_result, r, entry[2], _RETX_VT))]
        if entry is None:
            return []
        now = self._clock()
        if now - entry[3] < self.resend_gap_s:
            self.counters.up_resend_suppressed += 1
            return []
        entry[3] = now
        self.counters.up_resent += 1
        return [(self.spine, entry[1])]

    def _from_spine(self, data: bytes) -> list:
        if len(data) < HEADER_BYTES or data[_VT] not in (_RESULT_VT, _RETX_VT) \
                or data[_RANK] != self.leaf_index:
            self.counters.stale_from_spine += 1
            return []
        pool = bytes(data[_POOL])
        entry = self._up.get(pool)
        if entry is None or entry[0] != bytes(data[_PID]):
            self.counters.stale_from_spine += 1
            return []
        self._down[pool] = bytes(data)
        self.counters.down_results += 1
        return [(address, self._for_worker(data, r, entry[2], _RESULT_VT))
                for r, address in enumerate(self._workers)]

    def _for_worker(self, spine_result: bytes, local_rank: int, leaf_flags: int, vt: int) -> bytes:
        packet = bytearray(spine_result)
        packet[_VT] = vt
        packet[_RANK] = self.global_ranks[local_rank]
        packet[_NW] = self.total_workers
        # an overflow/overwrite in the leaf is news for the worker too
        packet[_FLAGS] |= leaf_flags
        return bytes(packet)

    # -- the serve loop's view -------------------------------------------------------

    @property
    def config(self):
        return self.pipeline.config

    def recorded_arrays(self) -> dict:
        return self.pipeline.recorded_arrays()

    def stats(self) -> dict:
        stats = self.pipeline.stats()
        stats["leaf"] = {"index": self.leaf_index, "global_ranks": list(self.global_ranks),
                         **self.counters.as_dict()}
        return stats
