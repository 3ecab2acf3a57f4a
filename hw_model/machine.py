"""Machine descriptions: what a switch pipeline has, as typed, validated data.

A :class:`Machine` is a Banzai/RMT-style feed-forward pipeline: ``stages``
match-action stages, each with ``stateful_alus_per_stage`` stateful atoms of
one template and ``stateless_alus_per_stage`` stateless ALUs, a budget of
distinct VLIW instructions per stage, optional exact-match and ternary (TCAM)
tables, a packet header vector (PHV) of limited size filled by the parser,
ports, and optionally recirculation. Presets cite their sources; every field
can be overridden with :func:`get_machine` (``dataclasses.replace``).

Sources (summarised in /work/shared/docs/anchors-banzai.md, anchors-fpisa.md):
- Banzai/Domino: Sivaraman et al., "Packet Transactions", SIGCOMM'16.
- Tofino 1: the open-sourced compiler backend and TNA documentation (stage,
  stateful-ALU, TCAM, clock and port figures); the 4 Kb PHV is RMT's
  (Bosshart et al., SIGCOMM'13), Tofino's ancestor.
- FPISA extensions: Yuan et al., NSDI'22 (arXiv 2112.06095), section on the
  proposed hardware: two-operand shift, read-shift-add-write.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from fpisa.protocol import HEADER_BYTES

from .atoms import STATEFUL_ATOMS, STATELESS_ALUS, StatefulAtom, StatelessAlu

__all__ = [
    "ParserLimits",
    "Machine",
    "PRESETS",
    "get_machine",
    "banzai",
    "tofino1",
    "fpisa_extended",
    "ETHERNET_OVERHEAD_BYTES",
    "PACKET_HEADER_BYTES",
]

#: preamble + start delimiter (8) + inter-frame gap (12) + FCS (4): what a
#: 100G link spends per frame besides the frame's own headers and payload
ETHERNET_OVERHEAD_BYTES = 24
#: Ethernet (14) + IPv4 (20) + UDP (8) + the aggregation header
#: (fpisa.protocol, imported: one definition of the wire format)
PACKET_HEADER_BYTES = 14 + 20 + 8 + HEADER_BYTES


@dataclass(frozen=True)
class ParserLimits:
    """How much of a packet the parser can hand to the match-action stages."""

    #: packet header vector size in bits: every live field must fit at every
    #: stage boundary (RMT: 4 Kb)
    phv_bits: int = 4096
    #: PHV bits taken by the parsed protocol headers for the whole pipeline
    header_bits: int = PACKET_HEADER_BYTES * 8

    def __post_init__(self) -> None:
        if self.phv_bits <= 0 or self.header_bits < 0:
            raise ValueError(f"ParserLimits needs phv_bits > 0 and header_bits >= 0, got {self}")
        if self.header_bits >= self.phv_bits:
            raise ValueError(
                f"the headers ({self.header_bits} bits) leave no PHV room "
                f"(phv_bits={self.phv_bits})"
            )

    @property
    def payload_bits(self) -> int:
        """PHV bits left for per-element fields."""
        return self.phv_bits - self.header_bits


@dataclass(frozen=True)
class Machine:
    """One pipeline (a Tofino "pipe"), its ALUs, tables, ports and limits."""

    name: str
    description: str
    clock_hz: float
    stages: int
    stateful_alus_per_stage: int
    stateless_alus_per_stage: int
    #: distinct VLIW instructions (actions) per stage; None: each atom is
    #: configured on its own (Banzai), no shared instruction memory
    instruction_slots_per_stage: int | None
    stateless_alu: StatelessAlu
    stateful_atom: StatefulAtom
    exact_match_tables: bool
    ternary_tables: bool
    tcam_blocks_per_stage: int
    tcam_block_entries: int
    tcam_block_key_bits: int
    ports: int
    port_gbps: float
    recirculation: bool
    #: bandwidth available to extra passes (loopback ports); each extra pass
    #: of a packet re-sends the whole frame through it
    recirculation_gbps: float = 0.0
    parser: ParserLimits = field(default_factory=ParserLimits)
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        positive = (
            "clock_hz", "stages", "stateful_alus_per_stage", "stateless_alus_per_stage",
            "ports", "port_gbps", "tcam_block_entries", "tcam_block_key_bits",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"machine {self.name!r}: {name} must be a positive number, got {value!r}")
        for name in ("stages", "stateful_alus_per_stage", "stateless_alus_per_stage", "ports"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"machine {self.name!r}: {name} must be an int, got {getattr(self, name)!r}")
        slots = self.instruction_slots_per_stage
        if slots is not None and (not isinstance(slots, int) or slots <= 0):
            raise ValueError(
                f"machine {self.name!r}: instruction_slots_per_stage must be a positive int or None, got {slots!r}"
            )
        if not isinstance(self.tcam_blocks_per_stage, int) or self.tcam_blocks_per_stage < 0:
            raise ValueError(f"machine {self.name!r}: tcam_blocks_per_stage must be an int >= 0")
        if self.recirculation and not (
            isinstance(self.recirculation_gbps, (int, float)) and self.recirculation_gbps > 0
        ):
            raise ValueError(f"machine {self.name!r}: recirculation needs recirculation_gbps > 0")
        if self.ternary_tables and self.tcam_blocks_per_stage == 0:
            raise ValueError(f"machine {self.name!r}: ternary tables need tcam_blocks_per_stage > 0")
        if not isinstance(self.stateless_alu, StatelessAlu) or not isinstance(self.stateful_atom, StatefulAtom):
            raise ValueError(f"machine {self.name!r}: stateless_alu / stateful_atom must be atoms.* objects")

    @property
    def register_bits(self) -> int:
        """Width of one stateful word (a pair atom holds two)."""
        return self.stateful_atom.word_bits

    @property
    def line_rate_bps(self) -> float:
        return self.ports * self.port_gbps * 1e9

    def summary(self) -> dict:
        """Plain-data description, printed with every result."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (StatelessAlu, StatefulAtom)):
                value = value.name
            elif isinstance(value, ParserLimits):
                value = {"phv_bits": value.phv_bits, "header_bits": value.header_bits}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


_TOFINO_SOURCES = (
    "Tofino 1 facts (12 MAU stages, 4 stateful ALUs/stage with 32-bit words or 64-bit "
    "pairs and no shift, constant-only VLIW shifts, 24 TCAM blocks of 512x44/stage, "
    "~1.27 GHz MAU clock, 16 x 100G ports per pipe, recirculation): open-sourced "
    "Tofino compiler backend and TNA docs, via anchors-banzai.md",
    "32 VLIW instruction slots per stage: FPISA (NSDI'22) reports that align and "
    "normalize take ~32 constant-shift instructions, saturating a stage (anchors-fpisa.md)",
    "PHV 4 Kb and one ALU per PHV container (224 containers): RMT (SIGCOMM'13), "
    "Tofino's ancestor",
)


def tofino1() -> Machine:
    """Tofino-1-like: what SwitchML and the paper's FPISA-A were built on."""
    return Machine(
        name="tofino1",
        description="Tofino-1-like pipe: constant shifts only, no shift in stateful ALUs",
        clock_hz=1.27e9,
        stages=12,
        stateful_alus_per_stage=4,
        stateless_alus_per_stage=224,
        instruction_slots_per_stage=32,
        stateless_alu=STATELESS_ALUS["tofino-vliw"],
        stateful_atom=STATEFUL_ATOMS["tofino-salu"],
        exact_match_tables=True,
        ternary_tables=True,
        tcam_blocks_per_stage=24,
        tcam_block_entries=512,
        tcam_block_key_bits=44,
        ports=16,
        port_gbps=100.0,
        recirculation=True,
        # one pipe's worth of ports in loopback: SwitchML's 1 KB mode
        # recirculates through the other pipes of the switch
        recirculation_gbps=16 * 100.0,
        sources=_TOFINO_SOURCES,
    )


def fpisa_extended() -> Machine:
    """Tofino-1-like plus FPISA's proposed ALU changes (NSDI'22)."""
    return replace(
        tofino1(),
        name="fpisa-extended",
        description="Tofino-1-like + two-operand (variable) shift in stateless ALUs "
        "+ stateful read-shift-add-write (RSAW)",
        stateless_alu=STATELESS_ALUS["fpisa-alu"],
        stateful_atom=STATEFUL_ATOMS["fpisa-rsaw"],
        sources=_TOFINO_SOURCES
        + (
            "FPISA (NSDI'22) proposed hardware: two-operand shift, stateful RSAW; "
            "15 nm areas 618.6 / 633.0 um^2 (anchors-fpisa.md)",
        ),
    )


def banzai() -> Machine:
    """Banzai (Domino's machine model) with its most expressive stateful atom."""
    return Machine(
        name="banzai",
        description="Banzai: ~1 GHz, stateless atoms with variable shift, Pairs stateful "
        "atoms, no match tables, no recirculation",
        clock_hz=1e9,
        # Banzai leaves depth and width as parameters; the preset uses the
        # Tofino-like figures so that only the atoms differ in comparisons
        stages=12,
        stateful_alus_per_stage=4,
        stateless_alus_per_stage=224,
        instruction_slots_per_stage=None,
        stateless_alu=STATELESS_ALUS["banzai-stateless"],
        stateful_atom=STATEFUL_ATOMS["pairs"],
        # Banzai models the action pipeline only; matches are assumed, so no
        # TCAM leading-one tables and no exact-match shift tables
        exact_match_tables=False,
        ternary_tables=False,
        tcam_blocks_per_stage=0,
        tcam_block_entries=512,
        tcam_block_key_bits=44,
        ports=16,
        port_gbps=100.0,
        # feed-forward, one packet per tick, no stalls: no recirculation
        recirculation=False,
        sources=(
            "Banzai/Domino (SIGCOMM'16): ~1 GHz, one packet per tick, atoms finish a "
            "read-modify-write in one cycle, stateless atom with variable shift, "
            "stateful templates Write..Pairs (anchors-banzai.md)",
            "stages, atoms per stage, ports and PHV: set equal to the Tofino-like "
            "preset (Banzai leaves them as parameters)",
        ),
    )


PRESETS = {"banzai": banzai, "tofino1": tofino1, "fpisa-extended": fpisa_extended}


def get_machine(name: str, **overrides) -> Machine:
    """A preset by name, with fields overridden (validated again).

    ``register_bits=`` is accepted too: it sets the stateful atom's word width.
    """
    try:
        machine = PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown machine {name!r}; presets: {sorted(PRESETS)}") from None
    if "register_bits" in overrides:
        bits = overrides.pop("register_bits")
        if isinstance(bits, bool) or not isinstance(bits, int) or bits < 1:
            raise ValueError(f"register_bits must be a positive int, got {bits!r}")
        atom = overrides.get("stateful_atom", machine.stateful_atom)
        overrides["stateful_atom"] = replace(atom, word_bits=bits)
    unknown = set(overrides) - {f.name for f in fields(Machine)}
    if unknown:
        raise ValueError(f"unknown machine parameter(s) {sorted(unknown)}")
    return replace(machine, **overrides) if overrides else machine
