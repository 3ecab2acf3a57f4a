"""The P4_16 (v1model) programs: where they are, and the constants they share.

Three programs, one per way of aggregating (docs/p4.md has the design):

- ``fpisa``: FPISA with the proposed extended ALU (variable shifts, the
  stored mantissa may be shifted before the add: the paper's RSAW).
- ``fpisa_a``: FPISA as a Tofino-class target forces it: shift distances
  select one constant-shift action from a table, only the incoming value
  moves, normalization through a ternary leading-one table.
- ``switchml``: SwitchML int32 sum with the block exponent max (and the
  int32 max mode of SwitchML's exponent exchange).

The per-element ("lane") P4 code and the constants are generated from this
module and :mod:`fpisa.protocol` by :mod:`p4.generate`; the generated files
are checked in (so the P4 can be read and compiled without Python) and a
test keeps them up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fpisa.protocol import WireMode

__all__ = [
    "P4_DIR",
    "INCLUDE_DIR",
    "GENERATED_DIR",
    "BUILD_DIR",
    "N_ELEMENTS",
    "POOL_SLOTS",
    "POOL_ROWS",
    "MAX_JOBS",
    "HEADROOM_BITS",
    "SWITCH_COUNTERS",
    "Program",
    "PROGRAMS",
    "BASELINE",
    "get_program",
]

P4_DIR = Path(__file__).resolve().parent
INCLUDE_DIR = P4_DIR / "include"
GENERATED_DIR = INCLUDE_DIR / "generated"
#: compiler output (gitignored)
BUILD_DIR = P4_DIR / "build"
#: P4 programs that only benchmarks use (the BMv2 baseline)
BENCHMARK_P4_DIR = P4_DIR.parent / "benchmarks" / "p4"

#: elements per packet, a compile-time constant of every program. Not the
#: emulator's default of 64: stock simple_switch gives a packet only 512 bytes
#: to grow (PacketBuffer(len + 512) in simple_switch.cpp, an assertion aborts
#: the switch beyond), and a result with the raw registers grows by 10 bytes
#: per element; 48 is the largest multiple of 16 that fits. Workers talking
#: to BMv2 use --packet-elements 48. Packets with another num_elements are
#: dropped (counter drop_bad_length).
N_ELEMENTS = 48
#: bytes simple_switch lets a packet grow by (see N_ELEMENTS)
BMV2_GROWTH_BYTES = 512
assert 10 * N_ELEMENTS <= BMV2_GROWTH_BYTES, "raw-register results would not fit in BMv2"
#: slots in the switch's pool, shared by all jobs (the job table gives each
#: job a base and a size); each slot has two shadow sets (rows)
POOL_SLOTS = 512
POOL_ROWS = 2 * POOL_SLOTS
MAX_JOBS = 256
#: fp32 in a 32-bit mantissa register: h = W - 1 - p = 32 - 1 - 24
HEADROOM_BITS = 7
REGISTER_BITS = 32

#: index -> name of the packet counter array ``switch_counter`` in every
#: program; the control plane reads them by these names
SWITCH_COUNTERS: tuple[str, ...] = (
    "received",  # every packet the ingress saw
    "aggregated",  # data packets folded into a slot (first or later arrival)
    "results_multicast",  # slots completed: one result multicast to every worker
    "results_retransmitted",  # a completed slot asked again: unicast to the asker
    "drop_not_aggregation",  # not Ethernet/IPv4(ihl 5)/UDP to the switch port
    "drop_bad_length",  # num_elements != N_ELEMENTS, truncated, or trailing bytes
    "drop_bad_header",  # wrong version, not a DATA message, bad num_workers
    "drop_wrong_mode",  # a mode or format this program does not aggregate
    "drop_unknown_job",  # job not configured
    "drop_unknown_worker",  # (job, source IP, source UDP port) not registered
    "drop_rank_mismatch",  # header rank differs from the registered one
    "drop_bad_slot",  # slot outside the job's pool
    "drop_duplicate_incomplete",  # already counted, slot not complete yet
    "drop_stale",  # an older round's packet, or a late copy for a round its sender left
    "drop_mode_mismatch",  # not the mode of the round in progress (switchml / int-max)
    "drop_no_worker_address",  # egress: a replica for a rank with no address
)


@dataclass(frozen=True)
class Program:
    name: str
    #: wire modes the program aggregates; others are dropped (drop_wrong_mode)
    modes: tuple[WireMode, ...]
    doc: str
    #: where <name>.p4 is
    directory: Path = P4_DIR

    @property
    def source(self) -> Path:
        return self.directory / f"{self.name}.p4"

    @property
    def json_path(self) -> Path:
        return BUILD_DIR / f"{self.name}.json"

    @property
    def lanes_file(self) -> Path:
        return GENERATED_DIR / f"{self.name}_lanes.p4"


PROGRAMS: dict[str, Program] = {
    p.name: p
    for p in (
        Program("fpisa", (WireMode.FPISA,), "FPISA, proposed extended ALU (variable shift, RSAW)"),
        Program("fpisa_a", (WireMode.FPISA_A,), "FPISA-A, Tofino-style constant shifts via tables"),
        Program("switchml", (WireMode.SWITCHML, WireMode.INT_MAX), "SwitchML int32 sum / max"),
    )
}


#: the benchmark's baseline (benchmarks/bmv2_vs_emulator.py): the same parser
#: and N_ELEMENTS register<bit<32>> read-add-write per packet, the packet sent
#: back; what any program doing this much arithmetic costs BMv2. Generated by
#: p4/generate.py; not an aggregation program (no protocol, no conformance).
BASELINE = Program("minimal_register_add", (), "BMv2 baseline: N_ELEMENTS register read-add-writes",
                   BENCHMARK_P4_DIR)


def get_program(name: str) -> Program:
    try:
        return PROGRAMS[name]
    except KeyError:
        raise ValueError(f"unknown P4 program {name!r}; expected one of {sorted(PROGRAMS)}") from None
