"""One worker of a query: its partition, its partials, its passes through the switch.

Runs in a worker process (started by :mod:`query.run`); imports the numerics
core, the table reader and the allreduce client only (tests/test_layers.py):
like ``hosts/worker.py`` it never sees the switch's code.

Passes, all through the same slots with one packet-id counter (the client's):

1. ``key-claim`` (int32): the group table's fingerprints; every worker gets
   each entry's winner back.
2. COUNT: int32 sum (the ``switchml`` wire mode: an integer add).
3. one SUM pass per distinct SUM/AVG expression, in the job's numerics mode
   (``AllreduceClient.allreduce``: fpisa, fpisa-a, or SwitchML with its
   block-exponent exchange first).
4. one ``float-min`` / ``float-max`` pass per distinct MIN / MAX expression.

Entries a worker does not hold (or whose winner is another key) carry the
identity (0, +0, +NaN for MIN, -NaN for MAX); its groups that lost their
entry spill: their partials go back to the orchestrator (the host).
"""

from __future__ import annotations

import time

import numpy as np

from fpisa.formats import get_format
from fpisa.protocol import WireMode
from hosts.worker import AllreduceClient

from . import partial as P
from .table import column_arrays, partition

__all__ = ["QueryClient", "run_partition"]


class QueryClient(AllreduceClient):
    """The allreduce client, plus passes in the query's wire modes (same
    slots, retransmission and packet ids as ``allreduce``)."""

    def reduce(self, mode: WireMode, values: np.ndarray) -> np.ndarray:
        """One pass of ``values`` in ``mode``: int32 for key-claim and the int32
        sum, the job format's bit patterns for float min/max."""
        if mode.float_payload:
            fmt = self.job.format
            wire = np.ascontiguousarray(values, fmt.bits_dtype)
            wire = wire.astype(wire.dtype.newbyteorder("<"), copy=False)
            out, _ = self._run_pass(mode, wire, bexp=0)
            return out.view(wire.dtype).astype(fmt.bits_dtype)
        wire = np.asarray(values).astype(">i4")
        out, _ = self._run_pass(mode, wire, bexp=0)
        return out.view(">i4").astype(np.int32)


def load_partition(path: str, rank: int, workers: int, columns: list[str], fmt):
    """The worker's rows as numpy columns, its float columns rounded to ``fmt``
    (the table as if stored in that format)."""
    table = partition(path, rank, workers, columns)
    cols = column_arrays(table, columns)
    for name, v in cols.items():
        if not isinstance(v, tuple) and v.dtype == np.float32:
            cols[name] = P.round_to_format(v, fmt)
    return cols, table.num_rows


def run_partition(spec, path: str, rank: int, workers: int, fmt: str, slots: int,
                  client: QueryClient, spill: bool) -> dict:
    """Everything a worker does after the start signal; returns its report."""
    fmt = get_format(fmt)
    t_start = time.perf_counter()
    cols, n = load_partition(path, rank, workers, sorted(spec.columns()), fmt)
    t_loaded = time.perf_counter()
    part = P.partials(spec, cols, n, fmt)
    lay = P.layout(part.keys, slots)
    t_partial = time.perf_counter()
    passes = []

    clock = [time.perf_counter()]

    def mark(name, mode, before):
        now = time.perf_counter()
        passes.append({"name": name, "wire_mode": int(mode), "first_id": before,
                       "ids": client.packet_ids - before, "seconds": now - clock[0]})
        clock[0] = now

    before = client.packet_ids
    winners = client.reduce(WireMode.KEY_CLAIM, lay.claim)
    mark("claim", WireMode.KEY_CLAIM, before)
    in_switch = winners[lay.index].astype(np.int64) == lay.fingerprint if part.keys else np.zeros(0, bool)
    spilled = np.flatnonzero(~in_switch)
    if spilled.size and not spill:
        # the orchestrator stops the job at the first worker that reports it
        raise TableOverflow(int(spilled.size), slots)
    at = lay.index[in_switch]

    def dense(values: np.ndarray, identity: int, dtype) -> np.ndarray:
        out = np.full(slots, identity, dtype)
        out[at] = values[in_switch]
        return out

    sent: dict[str, list] = {"count": [], "sum": [], "min": [], "max": []}
    vec = dense(part.count, 0, np.int64)
    if vec.max(initial=0) >= 1 << 31:
        raise ValueError("a group's count exceeds int32 (the switch's COUNT register)")
    before = client.packet_ids
    counts = client.reduce(WireMode.SWITCHML, vec.astype(np.int32))
    mark("count", WireMode.SWITCHML, before)
    sent["count"].append(vec.astype(np.int32))
    results = {"count": counts, "sum": [], "min": [], "max": []}
    for j, bits in enumerate(part.sums):
        vec = dense(bits, P.identity_bits("sum", fmt), fmt.bits_dtype)
        before = client.packet_ids
        results["sum"].append(client.allreduce(vec))
        mark(f"sum{j}", client.job.data_wire_mode, before)
        sent["sum"].append(vec)
    for kind, mode, columns in (("min", WireMode.FLOAT_MIN, part.mins),
                                ("max", WireMode.FLOAT_MAX, part.maxs)):
        for j, bits in enumerate(columns):
            vec = dense(bits, P.identity_bits(kind, fmt), fmt.bits_dtype)
            before = client.packet_ids
            results[kind].append(client.reduce(mode, vec))
            mark(f"{kind}{j}", mode, before)
            sent[kind].append(vec)
    t_end = time.perf_counter()
    # the keys of the entries this worker won or joined, for the host to name them
    return {
        "rank": rank, "rows": n, "selected": part.selected, "groups": len(part.keys),
        "local_collisions": lay.local_collisions,
        "claim": lay.claim, "winners": winners,
        "entry_keys": {int(i): part.keys[g] for g, i in zip(np.flatnonzero(in_switch).tolist(), at.tolist())},
        "spilled": {"keys": [part.keys[g] for g in spilled.tolist()],
                    "count": part.count[spilled], "sums": [b[spilled] for b in part.sums],
                    "mins": [b[spilled] for b in part.mins], "maxs": [b[spilled] for b in part.maxs]},
        "sent": sent, "results": results, "passes": passes,
        "seconds": {"load": t_loaded - t_start, "partial": t_partial - t_loaded,
                    "switch": t_end - t_partial},
        "start": t_start, "end": t_end,
    }


class TableOverflow(ValueError):
    """Groups lost their table entry and spilling is off (exit 2)."""

    def __init__(self, groups: int, slots: int):
        super().__init__(
            f"the switch's group table ({slots} entries) has no entry for {groups} of this "
            f"worker's groups (hash collisions or more groups than entries): enlarge it with "
            f"--table-slots, or allow spilling to the host with --spill")
        self.groups, self.slots = groups, slots
