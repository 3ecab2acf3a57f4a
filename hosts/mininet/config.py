"""The configuration of one Mininet experiment, validated at the boundary.

Every result row carries :meth:`ExperimentConfig.as_dict`, so each number
in a CSV or plot says how it was made.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from fpisa.job import JobSpec
from fpisa.protocol import DEFAULT_ELEMENTS, FRAME_OVERHEAD_BYTES
from p4 import N_ELEMENTS as BMV2_ELEMENTS, POOL_SLOTS as BMV2_SLOTS

__all__ = ["ExperimentConfig", "TOPOLOGIES", "SWITCHES", "FRAME_OVERHEAD_BYTES",
           "DEFAULT_PACKET_ELEMENTS", "BMV2_ELEMENTS", "EMULATOR_DEFAULTS",
           "BMV2_DEFAULTS"]

TOPOLOGIES = ("star", "two-level")
SWITCHES = ("emulator", "bmv2")
#: elements per packet when not given: the emulator's default; BMv2's
#: programs are compiled for p4.N_ELEMENTS (48) and take nothing else
DEFAULT_PACKET_ELEMENTS = DEFAULT_ELEMENTS
#: defaults that differ by switch (fields left None). simple_switch runs the
#: 48-lane programs at ~150 packets/s on this 2-core machine (~7 ms each), so
#: a window of 128 queues seconds of packets and every timer fires: measured,
#: K=2, 9600 elements, 2% loss, RTO floor 100 ms: window 4 -> 3.6 s and 35
#: retransmissions, 8 -> 4.0 s / 97, 16 -> 8.6 s / 760
EMULATOR_DEFAULTS = {"packet_elements": DEFAULT_PACKET_ELEMENTS, "window": 128, "timeout_ms": 50.0}
BMV2_DEFAULTS = {"packet_elements": BMV2_ELEMENTS, "window": 4, "timeout_ms": 100.0}


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: topology, switch, aggregation mode, links, workload.

    The flat fields are a sweep file's keys; the job's (mode, fmt, workers,
    packet_elements, window) are validated by the :class:`~fpisa.job.JobSpec`
    that :attr:`job` holds.
    """

    topo: str = "star"
    workers: int = 3
    #: leaf switches (two-level only); workers are split into contiguous groups
    leaves: int = 2
    switch: str = "emulator"
    mode: str = "fpisa"
    fmt: str = "fp32"
    #: per-link bandwidth in Mbit/s (htb); 0 = not shaped
    bw_mbit: float = 100.0
    #: per-link one-way delay in ms (netem if the kernel has it, else the processes hold packets)
    delay_ms: float = 0.0
    #: per-link, per-direction random loss probability (netem, else nftables)
    loss: float = 0.0
    #: per-link, per-direction duplication / reordering probability, applied by
    #: the sending processes (fpisa.netem: a reordered packet is held back
    #: until 3 later packets passed or 2 ms elapsed)
    duplicate: float = 0.0
    reorder: float = 0.0
    #: elements per worker (the gradient's length)
    elements: int = 100_000
    #: elements per packet (one switch slot); None: 64 for the emulator,
    #: p4.N_ELEMENTS (48) for BMv2 (the only size its programs take)
    packet_elements: int | None = None
    #: outstanding packets per worker = switch slots per shadow set; None:
    #: 128 for the emulator, 4 for BMv2 (see BMV2_DEFAULTS)
    window: int | None = None
    #: allreduces per experiment (fresh data each; timing statistics)
    repeat: int = 1
    seed: int = 0
    #: workers' lower bound on the retransmission timeout; above the loopback
    #: default (20 ms) because every worker's result waits for the slowest
    #: worker, and K+1 processes share few cores: a 20 ms floor retransmits
    #: spuriously (measured: 1.6 retransmissions per packet, two-level K=3)
    #: None: 50 for the emulator, 100 for BMv2
    timeout_ms: float | None = None
    #: compare results against the numerics core (bit-exact) and the exact sum
    check: bool = True

    def __post_init__(self) -> None:
        def bad(msg: str):
            raise ValueError(f"mininet config: {msg}")

        def is_int(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        def is_number(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        if self.topo not in TOPOLOGIES:
            bad(f"topo must be one of {TOPOLOGIES}, got {self.topo!r}")
        if self.switch not in SWITCHES:
            bad(f"switch must be one of {SWITCHES}, got {self.switch!r}")
        if self.topo == "two-level":
            if not is_int(self.leaves) or not 2 <= self.leaves <= self.workers:
                bad(f"two-level needs 2 <= leaves <= workers, got leaves={self.leaves!r} "
                    f"for {self.workers} workers")
            if self.switch == "bmv2":
                bad("the two-level topology runs the emulator only (leaf forwarding is not in the P4 program)")
        if not is_number(self.bw_mbit) or not 0 <= self.bw_mbit <= 100_000:
            bad(f"bw_mbit must be 0 (unshaped) .. 100000, got {self.bw_mbit!r}")
        if not is_number(self.delay_ms) or not 0 <= self.delay_ms <= 10_000:
            bad(f"delay_ms must be 0..10000, got {self.delay_ms!r}")
        for name in ("loss", "duplicate", "reorder"):
            p = getattr(self, name)
            if not is_number(p) or not 0 <= p < 0.5:
                bad(f"{name} must be a probability in [0, 0.5), got {p!r}")
        if not is_int(self.elements) or self.elements < 1:
            bad(f"elements must be an int >= 1, got {self.elements!r}")
        defaults = BMV2_DEFAULTS if self.switch == "bmv2" else EMULATOR_DEFAULTS
        for name, value in defaults.items():
            if getattr(self, name) is None:
                # frozen dataclass: resolve the default once, so as_dict() records it
                object.__setattr__(self, name, value)
        try:
            job = JobSpec(mode=self.mode, fmt=self.fmt, num_workers=self.workers,
                          packet_elements=self.packet_elements, window=self.window)
        except ValueError as e:
            bad(str(e))
        object.__setattr__(self, "_job", job)
        if not is_int(self.repeat) or not 1 <= self.repeat <= 1000:
            bad(f"repeat must be 1..1000, got {self.repeat!r}")
        if not is_int(self.seed) or self.seed < 0:
            bad(f"seed must be an int >= 0, got {self.seed!r}")
        if not is_number(self.timeout_ms) or self.timeout_ms <= 0:
            bad(f"timeout_ms must be > 0, got {self.timeout_ms!r}")
        if self.switch == "bmv2":
            self._validate_bmv2(bad)

    def _validate_bmv2(self, bad) -> None:
        """What the compiled P4 programs (p4/, docs/p4.md) can run."""
        if self.packet_elements != BMV2_ELEMENTS:
            bad(f"--switch bmv2: the P4 programs carry {BMV2_ELEMENTS} elements per packet, "
                f"got packet_elements={self.packet_elements} (use --packet-elements {BMV2_ELEMENTS} "
                "or leave it out)")
        if self.window > BMV2_SLOTS:
            bad(f"--switch bmv2: window {self.window} exceeds the program's {BMV2_SLOTS} slots")
        if self.duplicate or self.reorder:
            # the emulator's switch process duplicates/reorders its own sends;
            # simple_switch cannot, and the workers alone would fault one direction only
            bad("--switch bmv2: duplicate/reorder are injected by the sending processes and "
                "simple_switch cannot inject them; use --switch emulator")

    @classmethod
    def from_dict(cls, values: dict) -> "ExperimentConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"mininet config: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """Workers per leaf switch (star: one group)."""
        if self.topo == "star":
            return (tuple(range(self.workers)),)
        L, K = self.leaves, self.workers
        return tuple(tuple(range(l * K // L, (l + 1) * K // L)) for l in range(L))

    @property
    def job(self) -> JobSpec:
        """The job every switch and worker of the experiment runs (a two-level
        topology's switches each have their own worker count)."""
        return self._job

    @property
    def element_bytes(self) -> int:
        return self.job.element_bytes

    @property
    def payload_fraction(self) -> float:
        """Share of a data packet's bytes on the link that is payload."""
        payload = self.packet_elements * self.element_bytes
        return payload / (payload + FRAME_OVERHEAD_BYTES)
