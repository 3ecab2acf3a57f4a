"""The bit-exact check of an allreduce, shared by every experiment that runs one.

A switch records, per completed slot, the packet id, wire mode and the
arrival order of the workers (``emulator.pipeline.ArrivalLog``; on BMv2 the
P4 programs' arrival log, decoded by ``emulator.bmv2.arrival_log``). Given those
orders the numerics core must reproduce every result bit for bit:
:func:`packet_orders` turns a switch's log into per-packet orders of one
pass, and :func:`check_allreduce` compares the workers' results with the
reference the caller computes from them (a star: :func:`fpisa.aggregate`;
two levels: :func:`fpisa.hierarchy.aggregate_hierarchical`), and reports the
error against the exact sum.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .aggregate import aggregate
from .errors import error_report
from .job import JobSpec
from .protocol import WireMode

__all__ = ["packet_orders", "check_allreduce", "star_reference"]


def packet_orders(recorded: dict, wire_mode: WireMode, base: int, num_packets: int,
                  num_workers: int) -> tuple[np.ndarray, int]:
    """(num_packets, K) arrival orders of packet ids ``base ..`` in ``wire_mode``
    (-1 where none was recorded), and how many packets have none.

    ``recorded`` holds arrays ``packet_id``, ``wire_mode``, ``order``; a later
    completion of the same id wins (a retransmitted round).
    """
    orders = np.full((num_packets, num_workers), -1, np.int64)
    mask = np.asarray(recorded["wire_mode"]) == int(wire_mode)
    ids = np.asarray(recorded["packet_id"])[mask] - base
    inside = (ids >= 0) & (ids < num_packets)
    orders[ids[inside]] = np.asarray(recorded["order"])[mask][inside]
    return orders, int(np.count_nonzero(orders[:, 0] < 0))


def star_reference(values: np.ndarray, job: JobSpec, orders: np.ndarray) -> np.ndarray:
    """What one switch returns for ``values`` (K, n) with per-packet ``orders``."""
    n = values.shape[1]
    per_element = np.repeat(orders, job.packet_elements, axis=0)[:n]
    return aggregate(values, job.mode, fmt=job.fmt, order=per_element, rounding=job.rounding,
                     register_bits=job.register_bits, block_size=job.packet_elements)


def check_allreduce(values: np.ndarray, results: list[np.ndarray], job: JobSpec, missing: int,
                    reference: Callable[[], np.ndarray]) -> dict:
    """The checks of one allreduce: identical on every worker; bit-exact against
    ``reference()`` (called only if no packet lacks its recorded order); the
    error against the exact sum. Returns a JSON-ready dict."""
    identical = all(np.array_equal(results[0], r) for r in results)
    checks: dict = {"identical_across_workers": identical, "packets_without_recorded_order": missing}
    if missing == 0:
        ref = reference()
        mismatches = [int(np.count_nonzero(r != ref)) for r in results]
        checks["bit_exact"] = identical and not any(mismatches)
        checks["mismatched_elements"] = mismatches
    else:
        checks["bit_exact"] = False
    exact = aggregate(values, "exact", fmt=job.fmt)
    checks["error_vs_exact"] = error_report(results[0], exact, job.fmt)
    return checks
