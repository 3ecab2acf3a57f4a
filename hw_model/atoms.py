"""The switch's ALUs ("atoms"): what each can do in one clock cycle, and how.

Two things live here:

1. **Capability descriptions.** A stateless ALU offers a set of
   :class:`StatelessFeature` (which operations one instruction may use); a
   stateful atom offers a set of :class:`StatefulFeature` (what one
   read-modify-write of its private register may do within one cycle). The
   stateful templates follow Banzai/Domino (SIGCOMM'16, "Packet
   Transactions"), from the least to the most expressive: Write, RAW, PRAW,
   IfElseRAW, Sub, Nested, Pairs; plus Tofino 1's stateful ALU and FPISA's
   proposed read-shift-add-write (RSAW). Sources: /work/shared/docs
   anchors-banzai.md and anchors-fpisa.md (docs/hw_model.md cites them).
2. **Executable semantics** of the word operations those ALUs perform on
   W-bit two's-complement words (:func:`wrap`, :func:`add`,
   :func:`saturating_add`, :func:`shift_right`, :func:`shift_left`). The
   per-element programs (programs.py) are written with these and nothing
   else, so a program computes what the hardware would.

Areas are the FPISA paper's 15 nm synthesis figures (anchors-fpisa.md):
default ALU 505.4 um^2, FPISA ALU (two-operand shift) 618.6, default RAW
468.8, FPISA RSAW 633.0. Where no published figure exists the area is None
and reports say "n/a" rather than inventing one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "StatelessFeature",
    "StatefulFeature",
    "StatelessAlu",
    "StatefulAtom",
    "STATELESS_ALUS",
    "STATEFUL_ATOMS",
    "wrap",
    "add",
    "saturating_add",
    "shift_right",
    "shift_left",
    "shift_right_logical",
    "shift_left_logical",
]


class StatelessFeature(str, enum.Enum):
    """Operations a stateless ALU instruction may use (one output field)."""

    ADD = "add"
    SUB = "sub"
    #: and, or, xor, bit-field extract/deposit
    LOGIC = "logic"
    #: ==, !=, <, >= producing a flag
    COMPARE = "compare"
    #: a ? b : c
    SELECT = "select"
    MIN_MAX = "min-max"
    #: shift by an amount fixed in the instruction (Tofino's only kind)
    CONST_SHIFT = "const-shift"
    #: shift by an amount taken from a packet field or action data
    #: (Banzai's stateless atom; FPISA's proposed "two-operand shift")
    VAR_SHIFT = "var-shift"


class StatefulFeature(str, enum.Enum):
    """What one read-modify-write of a stateful atom may do in one cycle."""

    #: s = pkt or const
    WRITE = "write"
    #: s = s + (pkt or const)
    ADD = "add"
    #: s = s - (pkt or const)
    SUB = "sub"
    #: the update is guarded by one predicate on s / packet fields
    PREDICATE = "predicate"
    #: different updates in the two branches of the predicate
    BRANCH = "branch"
    #: two predicates combined (two levels, up to four update leaves)
    TWO_PREDICATES = "two-predicates"
    #: two 32-bit state words updated together (a 64-bit pair)
    PAIR = "pair"
    #: add that clamps to the register's range instead of wrapping
    SATURATE = "saturate"
    #: the stored value may be shifted by a packet-supplied amount before the
    #: add: FPISA's read-shift-add-write; absent from Banzai's templates and
    #: from Tofino ("no shift in the stateful ALU")
    SHIFT_STORED = "shift-stored"


@dataclass(frozen=True)
class StatelessAlu:
    """A stateless ALU (Banzai stateless atom / a Tofino VLIW container ALU)."""

    name: str
    features: frozenset[StatelessFeature]
    #: area of one ALU in um^2, None when no published figure exists
    area_um2: float | None
    area_source: str
    description: str

    def lacks(self, needs: frozenset[StatelessFeature]) -> frozenset[StatelessFeature]:
        return frozenset(needs) - self.features


@dataclass(frozen=True)
class StatefulAtom:
    """A stateful atom template: one register (or pair) and its update circuit."""

    name: str
    features: frozenset[StatefulFeature]
    word_bits: int
    area_um2: float | None
    area_source: str
    description: str

    def lacks(self, needs: frozenset[StatefulFeature]) -> frozenset[StatefulFeature]:
        return frozenset(needs) - self.features

    @property
    def words(self) -> int:
        """State words per atom: 2 for pair atoms, else 1."""
        return 2 if StatefulFeature.PAIR in self.features else 1


_SL = StatelessFeature
_SF = StatefulFeature

_ARITH = frozenset({_SL.ADD, _SL.SUB, _SL.LOGIC, _SL.COMPARE, _SL.SELECT, _SL.MIN_MAX})
_FPISA_AREA = "FPISA (NSDI'22) 15 nm synthesis, anchors-fpisa.md"

STATELESS_ALUS: dict[str, StatelessAlu] = {
    a.name: a
    for a in (
        StatelessAlu(
            "banzai-stateless",
            _ARITH | {_SL.CONST_SHIFT, _SL.VAR_SHIFT},
            None,
            "Banzai reports 32 nm circuits only (anchors-banzai.md); no 15 nm figure",
            "Banzai stateless atom: add, sub, logic, compare, <<, >> by a packet "
            "field (variable shift), a ? b : c; 3 packet operands + 1 constant",
        ),
        StatelessAlu(
            "tofino-vliw",
            _ARITH | {_SL.CONST_SHIFT},
            505.4,
            _FPISA_AREA + ": 'default ALU'",
            "Tofino 1 VLIW container ALU: arithmetic, logic, min/max, bit-field "
            "deposit; shift counts must be constants",
        ),
        StatelessAlu(
            "fpisa-alu",
            _ARITH | {_SL.CONST_SHIFT, _SL.VAR_SHIFT},
            618.6,
            _FPISA_AREA + ": 'FPISA ALU'",
            "Tofino-like VLIW ALU plus FPISA's two-operand shift (shift amount "
            "from a field or action data)",
        ),
    )
}

#: Domino's templates, each adding to the one before (anchors-banzai.md)
_WRITE = frozenset({_SF.WRITE})
_RAW = _WRITE | {_SF.ADD}
_PRAW = _RAW | {_SF.PREDICATE}
_IF_ELSE_RAW = _PRAW | {_SF.BRANCH}
_SUB = _IF_ELSE_RAW | {_SF.SUB}
_NESTED = _SUB | {_SF.TWO_PREDICATES}
_PAIRS = _NESTED | {_SF.PAIR}
#: Tofino 1: 32-bit word or 64-bit pair, 2 compare units, up to 4
#: arithmetic/logic units, saturating add/sub; no shift
_TOFINO_SALU = _PAIRS | {_SF.SATURATE}

_BANZAI_AREA = "Banzai reports 32 nm circuits only (anchors-banzai.md); no 15 nm figure"

STATEFUL_ATOMS: dict[str, StatefulAtom] = {
    a.name: a
    for a in (
        StatefulAtom("write", _WRITE, 32, None, _BANZAI_AREA, "Banzai Write: s = pkt or const"),
        StatefulAtom(
            "raw", _RAW, 32, 468.8, _FPISA_AREA + ": 'default RAW'",
            "Banzai RAW: s = s + (pkt or const)",
        ),
        StatefulAtom("praw", _PRAW, 32, None, _BANZAI_AREA, "Banzai PRAW: if (pred) s = s + x"),
        StatefulAtom(
            "if-else-raw", _IF_ELSE_RAW, 32, None, _BANZAI_AREA,
            "Banzai IfElseRAW: a RAW in each branch of one predicate",
        ),
        StatefulAtom("sub", _SUB, 32, None, _BANZAI_AREA, "Banzai Sub: IfElseRAW with subtraction"),
        StatefulAtom(
            "nested", _NESTED, 32, None, _BANZAI_AREA,
            "Banzai Nested: two levels of predicates, four update leaves",
        ),
        StatefulAtom(
            "pairs", _PAIRS, 32, None, _BANZAI_AREA,
            "Banzai Pairs: two state variables updated together under predicates",
        ),
        StatefulAtom(
            "tofino-salu", _TOFINO_SALU, 32, 468.8,
            _FPISA_AREA + ": 'default RAW', used as a proxy (Tofino's real stateful "
            "ALU, a pair with 4 arithmetic units, is larger; no public figure)",
            "Tofino 1 stateful ALU: 32-bit word or 64-bit pair, 2 compare units, "
            "add/sub (saturating), min/max, bitwise; no shift",
        ),
        StatefulAtom(
            "fpisa-rsaw", _TOFINO_SALU | {_SF.SHIFT_STORED}, 32, 633.0,
            _FPISA_AREA + ": 'FPISA RSAW'",
            "Tofino-like stateful ALU with FPISA's read-shift-add-write: the "
            "stored value is shifted by a packet-supplied amount before the add",
        ),
    )
}


# ------------------------------------------------------- word semantics
def wrap(x: int, bits: int = 32) -> int:
    """x as a ``bits``-wide two's-complement value (what an adder produces)."""
    x &= (1 << bits) - 1
    return x - (1 << bits) if x >> (bits - 1) else x


def add(a: int, b: int, bits: int = 32) -> int:
    """Wrapping two's-complement add."""
    return wrap(a + b, bits)


def saturating_add(a: int, b: int, bits: int = 32) -> int:
    """Add clamped to [-2^(bits-1), 2^(bits-1) - 1] (Tofino's saturating add)."""
    return min(max(a + b, -(1 << (bits - 1))), (1 << (bits - 1)) - 1)


def shift_right(x: int, distance: int, bits: int = 32) -> int:
    """Arithmetic shift right; distances >= bits-1 give the sign fill (0 or -1).

    A shifter's amount field is narrower than the distances an exponent
    difference can reach; the model clamps, which for an arithmetic shift is
    the same as shifting by any larger amount.
    """
    if distance < 0:
        raise ValueError(f"shift distance must be >= 0, got {distance}")
    return wrap(x, bits) >> min(distance, bits - 1)


def shift_left(x: int, distance: int, bits: int = 32) -> int:
    """Shift left, keeping the low ``bits`` (two's complement)."""
    if distance < 0:
        raise ValueError(f"shift distance must be >= 0, got {distance}")
    return wrap(x << distance, bits)


def shift_right_logical(x: int, distance: int, bits: int = 32) -> int:
    """Logical shift right of an unsigned ``bits``-wide value (zero fill)."""
    if distance < 0:
        raise ValueError(f"shift distance must be >= 0, got {distance}")
    return (x & ((1 << bits) - 1)) >> min(distance, bits)


def shift_left_logical(x: int, distance: int, bits: int = 32) -> int:
    """Shift left of an unsigned ``bits``-wide value, keeping the low bits."""
    if distance < 0:
        raise ValueError(f"shift distance must be >= 0, got {distance}")
    return (x << distance) & ((1 << bits) - 1)
