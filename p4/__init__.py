"""The P4_16 (v1model) programs: where they are, and the constants they share.

Three programs, one per way of aggregating (docs/p4.md has the design):

- ``fpisa``: FPISA with the proposed extended ALU (variable shifts, the
  stored mantissa may be shifted before the add: the paper's RSAW).
- ``fpisa_a``: FPISA as a Tofino-class target forces it: shift distances
  select one constant-shift action from a table, only the incoming value
  moves, normalization through a ternary leading-one table.
- ``switchml``: SwitchML int32 sum with the block exponent max (and the
  int32 max mode of SwitchML's exponent exchange).

The float programs are built once per element format (fp32, fp16, bf16):
the same source compiled with a preprocessor define (``-DFPISA_FORMAT_FP16``)
that selects the format's constants in ``include/generated/format.p4``. Each
build is a :class:`Program` of its own in :data:`PROGRAMS` (``fpisa``,
``fpisa_fp16``, ``fpisa_bf16``, ``fpisa_a``, ...), and :func:`program_for`
picks the one a job needs.

The per-element ("lane") P4 code and the constants are generated from this
module and :mod:`fpisa.protocol` by :mod:`p4.generate`; the generated files
are checked in (so the P4 can be read and compiled without Python) and a
test keeps them up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fpisa.formats import FORMATS, Format, RegisterLayout, get_format
from fpisa.protocol import MAX_WORKERS, WireMode, format_code

__all__ = [
    "P4_DIR",
    "INCLUDE_DIR",
    "GENERATED_DIR",
    "BUILD_DIR",
    "N_ELEMENTS",
    "POOL_SLOTS",
    "POOL_ROWS",
    "MAX_JOBS",
    "REGISTER_BITS",
    "SWITCH_COUNTERS",
    "P4Format",
    "P4_FORMATS",
    "DEFAULT_FORMAT",
    "Program",
    "PROGRAMS",
    "SOURCES",
    "build_name",
    "BASELINE",
    "get_program",
    "program_for",
    "job_program",
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
#: width W of every program's mantissa registers, whatever the format (the
#: headroom h = W - 1 - p then depends on the format: fp32 7, fp16 20, bf16 23)
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
class P4Format:
    """What the P4 programs need to know of an element format, derived from
    :mod:`fpisa.formats` (never re-typed); ``p4/generate.py`` writes these
    into ``include/generated/format.p4``."""

    fmt: Format

    @property
    def name(self) -> str:
        return self.fmt.name

    @property
    def code(self) -> int:
        """The header's ``fmt`` value."""
        return format_code(self.fmt)

    @property
    def define(self) -> str:
        """The preprocessor symbol that selects the format (none for fp32, the default)."""
        return f"FPISA_FORMAT_{self.name.upper()}"

    @property
    def element_bits(self) -> int:
        return self.fmt.storage_bits

    @property
    def headroom_bits(self) -> int:
        return RegisterLayout(self.fmt, REGISTER_BITS).headroom_bits

    @property
    def pos_inf(self) -> int:
        return self.fmt.exponent_all_ones << self.fmt.fraction_bits

    @property
    def neg_inf(self) -> int:
        return (1 << (self.element_bits - 1)) | self.pos_inf

    @property
    def nan(self) -> int:
        """The canonical quiet NaN (docs/numerics.md section 4)."""
        return self.pos_inf | (1 << (self.fmt.fraction_bits - 1))

    @property
    def data_udp_length(self) -> int:
        """UDP header + aggregation header + N_ELEMENTS elements."""
        return 8 + 16 + self.fmt.storage_bytes * N_ELEMENTS


#: every element format, fp32 (the default build) first
P4_FORMATS: dict[str, P4Format] = {name: P4Format(fmt) for name, fmt in FORMATS.items()}
DEFAULT_FORMAT = "fp32"
assert next(iter(P4_FORMATS)) == DEFAULT_FORMAT
# fpisa's FpisaNext (fpisa_registers.p4) adds without an overflow check: the
# sum of MAX_WORKERS mantissas (|S| < 2^(m+1)) must fit a signed register
assert all(MAX_WORKERS << (f.fmt.fraction_bits + 1) <= 1 << (REGISTER_BITS - 1) for f in P4_FORMATS.values())


@dataclass(frozen=True)
class Program:
    """One compiled program: a P4 source built for one element format."""

    name: str
    #: wire modes the program aggregates; others are dropped (drop_wrong_mode)
    modes: tuple[WireMode, ...]
    doc: str
    #: where the source is
    directory: Path = P4_DIR
    #: the source's stem (<source_name>.p4); default: the name
    source_name: str = ""
    #: the element format it is built for (float programs; switchml's int32
    #: payload is built with the default)
    fmt: str = DEFAULT_FORMAT

    @property
    def source_stem(self) -> str:
        return self.source_name or self.name

    @property
    def source(self) -> Path:
        return self.directory / f"{self.source_stem}.p4"

    @property
    def json_path(self) -> Path:
        return BUILD_DIR / f"{self.name}.json"

    @property
    def lanes_file(self) -> Path:
        return GENERATED_DIR / f"{self.source_stem}_lanes.p4"

    @property
    def defines(self) -> tuple[str, ...]:
        """Preprocessor symbols for the compiler (-D): the format's, unless fp32."""
        return () if self.fmt == DEFAULT_FORMAT else (P4_FORMATS[self.fmt].define,)


def build_name(source: str, fmt: str) -> str:
    """The name of ``source`` built for ``fmt``: fpisa, fpisa_fp16, fpisa_a_bf16, ..."""
    fmt = get_format(fmt).name
    return source if fmt == DEFAULT_FORMAT else f"{source}_{fmt}"


def _float_builds(source: str, modes: tuple[WireMode, ...], doc: str) -> tuple[Program, ...]:
    return tuple(Program(build_name(source, fmt), modes, f"{doc}; {fmt}", source_name=source, fmt=fmt)
                 for fmt in P4_FORMATS)


PROGRAMS: dict[str, Program] = {
    p.name: p
    for p in (
        *_float_builds("fpisa", (WireMode.FPISA,), "FPISA, proposed extended ALU (variable shift, RSAW)"),
        *_float_builds("fpisa_a", (WireMode.FPISA_A,), "FPISA-A, Tofino-style constant shifts via tables"),
        Program("switchml", (WireMode.SWITCHML, WireMode.INT_MAX), "SwitchML int32 sum / max"),
    )
}
#: the P4 sources (one per algorithm), each built for one or more formats
SOURCES: tuple[str, ...] = tuple(dict.fromkeys(p.source_stem for p in PROGRAMS.values()))


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


def program_for(source: str, fmt: str = DEFAULT_FORMAT) -> Program:
    """The build of ``source`` (a mode's ``p4_program``: fpisa, fpisa_a, switchml)
    for a job's element format. SwitchML's payload is int32 whatever the
    job's format (the hosts quantize), so it has one build."""
    builds = {p.fmt: p for p in PROGRAMS.values() if p.source_stem == source}
    if not builds:
        raise ValueError(f"unknown P4 source {source!r}; expected one of {list(SOURCES)}")
    if len(builds) == 1:
        return next(iter(builds.values()))
    fmt = get_format(fmt).name
    return builds[fmt]


def job_program(job) -> Program:
    """The build that runs ``job`` (a :class:`fpisa.job.JobSpec`): its mode's
    source (``p4_program``) for its element format."""
    if job.info.p4_program is None:
        raise ValueError(f"mode {job.mode.value!r} has no P4 program")
    return program_for(job.info.p4_program, job.fmt)
