"""BMv2 (``simple_switch``) as the star's switch node, and how its results are checked.

:class:`Bmv2SwitchNode` runs ``simple_switch`` with the mode's compiled
program (``p4/build/<program>.json``) inside the star switch's Mininet
host, one BMv2 port per worker: worker ``r`` is port ``r`` on interface
``<switch>p<r>`` (the port the testbed gave it). It then installs the job
over thrift with :mod:`emulator.bmv2.control_plane` (worker MAC, IP, UDP
port and switch port; a multicast group with one replica per worker),
and at the end reads the program's packet counters back. Everything BMv2
is driven through ``emulator.bmv2``'s public API; this module only knows
the testbed's addressing.

BMv2 records no arrival orders (the emulator does, and the emulator run
is checked against the model with them). So :func:`check_unordered`
checks each packet's result against the numerics core under *every*
arrival order of the K workers: a packet passes if its bits equal
``fpisa.aggregate`` for at least one of the K! orders. That is exactly
what the model allows a switch to return; it cannot tell *which* order
BMv2 saw. The report counts how many packets were order-independent (all
K! references agree: e.g. SwitchML's integer sum, FPISA with K=2 on most
data) and how many matched only some orders.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

import fpisa
from p4 import job_program

from .config import ExperimentConfig

__all__ = ["bmv2_missing", "program_json", "Bmv2SwitchNode", "check_unordered"]

#: the compiled program per aggregation mode (p4/)
#: the one aggregation job this testbed installs
JOB = 0


def bmv2_missing(config: ExperimentConfig) -> str | None:
    """Why ``--switch bmv2`` cannot run here, or None."""
    from emulator.bmv2.tools import P4C, SIMPLE_SWITCH, SIMPLE_SWITCH_CLI, missing_tools

    missing = missing_tools(SIMPLE_SWITCH, SIMPLE_SWITCH_CLI)
    if missing:
        return f"{', '.join(missing)} (BMv2) not on PATH (docs/p4.md)"
    program = job_program(config.job)
    if not program.json_path.exists() and missing_tools(P4C):
        return (f"the compiled P4 program {program.json_path} does not exist and {P4C} is not "
                "on PATH to compile it (docs/p4.md)")
    return None


def program_json(config: ExperimentConfig) -> Path:
    """The mode's program built for the job's format (fpisa_fp16, ...), compiled
    now if missing or older than its sources."""
    from emulator.bmv2.build import ensure_built

    return ensure_built(job_program(config.job))


class Bmv2SwitchNode:
    """simple_switch in the star switch's host, configured for the job; use as a context manager."""

    def __init__(self, bed, config: ExperimentConfig, json_path: Path, run_dir: str):
        from emulator.bmv2.control_plane import Bmv2Job, ProgramInfo, WorkerPort

        from .network import WORKER_PORT

        if config.topo != "star":
            raise ValueError("BMv2 runs the star topology only")
        self.bed, self.config = bed, config
        self.node = bed.switches[0]
        self.json_path = Path(json_path)
        self.workdir = Path(run_dir) / "bmv2"
        self.info = ProgramInfo(self.json_path)
        ports, workers = {}, []
        for w in bed.workers:
            _, intf, _ = bed.uplink_of[("worker", w.index)]
            ports[w.index] = intf
            workers.append(WorkerPort(w.index, next(iter(w.interfaces.values())), w.ip, WORKER_PORT,
                                      switch_port=w.index))
        self.ports = ports
        # the emulator's pool is one window of slots: the same here
        self.job = Bmv2Job(job=JOB, workers=tuple(workers), pool_size=config.window)
        self.switch = self.cli = None

    def __enter__(self) -> "Bmv2SwitchNode":
        from emulator.bmv2.control_plane import SwitchCLI, configure_job
        from emulator.bmv2.switch import SimpleSwitch

        netns = self.bed.netns_name(self.node)
        self.switch = SimpleSwitch(self.json_path, self.ports, self.workdir, netns=netns)
        try:
            self.switch.start()
            self.cli = SwitchCLI(self.switch.thrift_port, netns=netns)
            configure_job(self.cli, self.info, self.job)
        except BaseException:
            self.switch.stop()
            raise
        return self

    def counters(self) -> dict[str, int]:
        from emulator.bmv2.control_plane import read_counters

        return read_counters(self.cli, self.info)

    def stats(self) -> dict:
        """What the report says about the switch (counters read now)."""
        return {"switch": f"bmv2 simple_switch ({self.json_path.name})", "netns": self.switch.netns,
                "ports": {str(p): i for p, i in self.ports.items()}, "bmv2_counters": self.counters()}

    def stderr_tail(self, chars: int = 2000) -> str:
        return self.switch.stderr_text()[-chars:] if self.switch else ""

    def __exit__(self, *exc) -> None:
        if self.switch is not None:
            self.switch.stop()


def check_unordered(config: ExperimentConfig, values: np.ndarray, results: list[np.ndarray]) -> dict:
    """Each packet's result against the model under every arrival order (see module docstring).

    values: (K, n) bit patterns the workers sent; results: what each worker
    received. Returns the checks' JSON-ready dict (``bit_exact`` = identical
    across workers and every packet equals the model for some order).
    """
    K, n, E = config.workers, config.elements, config.packet_elements
    num_packets = -(-n // E)
    out: dict = {"identical_across_workers": all(np.array_equal(results[0], r) for r in results)}
    exact = fpisa.aggregate(values, "exact", fmt=config.fmt)
    out["error_vs_exact"] = fpisa.error_report(results[0], exact, config.fmt)
    if not config.job.info.is_float:
        # the model ignores the order: an integer sum (and a max) are order-independent
        orders = [tuple(range(K))]
    else:
        orders = list(itertools.permutations(range(K)))
    # matches[o, p]: packet p's result equals the model with order o
    matches = np.zeros((len(orders), num_packets), bool)
    first = None
    same_as_first = np.ones(num_packets, bool)
    pad = num_packets * E - n
    for i, order in enumerate(orders):
        reference = fpisa.aggregate(values, config.mode, fmt=config.fmt, order=np.array(order),
                                    block_size=E)
        if first is None:
            first = reference
        # compare packet by packet: blocks of E elements (the last one padded)
        eq = np.pad(results[0] == reference, (0, pad), constant_values=True)
        matches[i] = eq.reshape(num_packets, E).all(axis=1)
        same = np.pad(reference == first, (0, pad), constant_values=True)
        same_as_first &= same.reshape(num_packets, E).all(axis=1)
    matched = matches.any(axis=0)
    out["order_check"] = {
        "method": ("BMv2 records no arrival orders: each packet's result is compared with "
                   "fpisa.aggregate under every arrival order of the K workers and passes if "
                   "one matches" if len(orders) > 1 else
                   "SwitchML's integer sum is order-independent: one reference"),
        "orders_tried": len(orders),
        "packets": num_packets,
        "packets_matching_some_order": int(matched.sum()),
        "packets_order_independent": int(same_as_first.sum()) if len(orders) > 1 else num_packets,
        "packets_matching_exactly_one_order": int((matches.sum(axis=0) == 1).sum()),
    }
    mismatched = np.flatnonzero(~matched)
    out["mismatched_packets"] = [int(p) for p in mismatched[:20]]
    out["mismatched_elements"] = [
        int(sum(np.count_nonzero(r[p * E:(p + 1) * E] != first[p * E:(p + 1) * E]) for p in mismatched))
        for r in results]
    out["bit_exact"] = out["identical_across_workers"] and not len(mismatched)
    return out

