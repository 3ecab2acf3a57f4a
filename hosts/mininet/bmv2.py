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

The program logs every contribution it folds, in fold order
(``p4/include/arrival_log.p4``). While the job runs, an
:class:`~emulator.bmv2.arrival_log.ArrivalLogDrainer` reads that log over
thrift as often as the fold rate needs; :meth:`Bmv2SwitchNode.recorded`
reads the rest and returns the completed rounds in the form the
emulator's switch records them (packet id, wire mode, ranks in arrival
order), so the experiment checks BMv2's results bit for bit against the
numerics core with the orders BMv2 really saw, as it does for the
emulator. A log that cannot give exact orders (overflowed, unreadable)
raises :class:`~emulator.bmv2.arrival_log.ArrivalLogError`; the
experiment reports it and the run is not bit-exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from p4 import job_program

from .config import ExperimentConfig

__all__ = ["bmv2_missing", "program_json", "Bmv2SwitchNode"]

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
        self.switch = self.cli = self.drainer = self.reader = None

    def __enter__(self) -> "Bmv2SwitchNode":
        from emulator.bmv2.arrival_log import ArrivalLogDrainer, ArrivalLogReader
        from emulator.bmv2.control_plane import SwitchCLI, configure_job
        from emulator.bmv2.switch import SimpleSwitch

        netns = self.bed.netns_name(self.node)
        self.switch = SimpleSwitch(self.json_path, self.ports, self.workdir, netns=netns)
        try:
            self.switch.start()
            self.cli = SwitchCLI(self.switch.thrift_port, netns=netns)
            configure_job(self.cli, self.info, self.job)
            self.reader = ArrivalLogReader.for_job(self.cli, self.info, self.job)
            self.drainer = ArrivalLogDrainer(self.reader).start()
        except BaseException:
            self.switch.stop()
            raise
        return self

    def recorded(self) -> dict[str, np.ndarray]:
        """The completed rounds from BMv2's arrival log (``ArrivalLog.arrays()``
        form), read to the end; call once the workers are done.
        ArrivalLogError if the log cannot give exact orders."""
        return self.drainer.finish()

    def counters(self) -> dict[str, int]:
        from emulator.bmv2.control_plane import read_counters

        return read_counters(self.cli, self.info)

    def stats(self) -> dict:
        """What the report says about the switch (counters read now)."""
        return {"switch": f"bmv2 simple_switch ({self.json_path.name})", "netns": self.switch.netns,
                "ports": {str(p): i for p, i in self.ports.items()}, "bmv2_counters": self.counters(),
                "arrival_log": self.reader.stats()}

    def stderr_tail(self, chars: int = 2000) -> str:
        return self.switch.stderr_text()[-chars:] if self.switch else ""

    def __exit__(self, *exc) -> None:
        if self.drainer is not None:
            self.drainer.stop()
        if self.switch is not None:
            self.switch.stop()

