"""The configuration of one Mininet experiment, validated at the boundary.

Every result row carries :meth:`ExperimentConfig.as_dict`, so each number
in a CSV or plot says how it was made.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from fpisa.formats import get_format
from fpisa.protocol import MAX_ELEMENTS, MAX_SLOTS

__all__ = ["ExperimentConfig", "TOPOLOGIES", "SWITCHES", "MODES", "FRAME_OVERHEAD_BYTES"]

TOPOLOGIES = ("star", "two-level")
SWITCHES = ("emulator", "bmv2")
MODES = ("fpisa", "fpisa-a", "switchml")
#: bytes per packet that are not payload, as the htb shaper counts them:
#: Ethernet 14 + IPv4 20 + UDP 8 + aggregation header 16 (no preamble/FCS on veth)
FRAME_OVERHEAD_BYTES = 14 + 20 + 8 + 16
#: one bitmap bit per worker in the switch (emulator.pipeline.MAX_WORKERS)
MAX_WORKERS = 32


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: topology, switch, aggregation mode, links, workload."""

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
    #: elements per packet (one switch slot)
    num_elements: int = 64
    #: outstanding packets per worker = switch slots per shadow set
    window: int = 128
    #: allreduces per experiment (fresh data each; timing statistics)
    repeat: int = 1
    seed: int = 0
    #: workers' lower bound on the retransmission timeout; above the loopback
    #: default (20 ms) because every worker's result waits for the slowest
    #: worker, and K+1 processes share few cores: a 20 ms floor retransmits
    #: spuriously (measured: 1.6 retransmissions per packet, two-level K=3)
    timeout_ms: float = 50.0
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
        if self.mode not in MODES:
            bad(f"mode must be one of {MODES}, got {self.mode!r}")
        get_format(self.fmt)
        if not is_int(self.workers) or not 1 <= self.workers <= MAX_WORKERS:
            bad(f"workers must be 1..{MAX_WORKERS}, got {self.workers!r}")
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
        if not is_int(self.num_elements) or not 1 <= self.num_elements <= MAX_ELEMENTS:
            bad(f"num_elements (per packet) must be 1..{MAX_ELEMENTS}, got {self.num_elements!r}")
        if not is_int(self.window) or not 1 <= self.window <= MAX_SLOTS:
            bad(f"window must be 1..{MAX_SLOTS}, got {self.window!r}")
        if not is_int(self.repeat) or not 1 <= self.repeat <= 1000:
            bad(f"repeat must be 1..1000, got {self.repeat!r}")
        if not is_int(self.seed) or self.seed < 0:
            bad(f"seed must be an int >= 0, got {self.seed!r}")
        if not is_number(self.timeout_ms) or self.timeout_ms <= 0:
            bad(f"timeout_ms must be > 0, got {self.timeout_ms!r}")

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
    def element_bytes(self) -> int:
        return 4 if self.mode == "switchml" else get_format(self.fmt).storage_bytes

    @property
    def payload_fraction(self) -> float:
        """Share of a data packet's bytes on the link that is payload."""
        payload = self.num_elements * self.element_bytes
        return payload / (payload + FRAME_OVERHEAD_BYTES)
