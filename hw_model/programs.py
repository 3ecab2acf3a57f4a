"""Per-element aggregation programs, written as steps of ALU operations.

A :class:`Program` has a per-packet *prologue* (the worker counter that
tells an arrival whether it is a slot's first and last; SwitchML's exponent
max) and a *lane*: the chain of steps that aggregates ``elements_per_lane``
elements. The mapper places one prologue and as many lanes as fit. A step
occupies one stage; its operations run in parallel in that stage.

Every operation carries what it needs from the hardware (features of the
stateless ALU or stateful atom, a table kind) and an executable function
built from :mod:`hw_model.atoms`' word operations, so the same description
drives the mapper (does it fit?) and the cycle simulation (what does it
compute?).

Table operations are executable match tables: the entries (key -> action
name + action data) are real, and the number of *distinct actions* is the
number of VLIW instructions the table costs. That is how the model shows
the FPISA paper's point: with constant shifts only, aligning and
normalizing need one action per shift distance (~32 instructions, a whole
stage's budget on Tofino); with the two-operand shift one action serves
every distance.

Programs (FPISA ones for fp32 by default, or fp16 / bf16; always a 32-bit
mantissa register, headroom h = 31 - precision: 7 for fp32):
- ``switchml``: int32 sum (a 64-bit pair atom adds two elements) and the
  block-exponent max; quantization is host-side.
- ``fpisa-a``: docs/numerics.md section 3 with Tofino's workarounds:
  exact-match tables of constant-shift actions align the *incoming*
  mantissa (the stored one cannot move), a TCAM finds the leading one.
- ``fpisa-a-varshift``: the same arithmetic written with variable shifts:
  what FPISA-A looks like without the table workaround.
- ``fpisa``: section 2 on the extended machine: variable shifts and a
  read-shift-add-write mantissa register.
- ``fpisa-raw``: ``fpisa`` returning the raw registers for the hosts to
  normalize (the wire protocol's FLAG_RAW), a design point.
The other FPISA programs normalize on read-out in the switch (section 4, rz).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Mapping

from fpisa.formats import Format, RegisterLayout, get_format

from .atoms import (
    StatefulFeature as SF,
    StatelessFeature as SL,
    add,
    saturating_add,
    shift_left,
    shift_left_logical,
    shift_right,
    shift_right_logical,
    wrap,
)

__all__ = [
    "Field",
    "TableKind",
    "Action",
    "StatelessOp",
    "StatefulOp",
    "Step",
    "Program",
    "PROGRAM_NAMES",
    "build_program",
    "FIRST",
    "LAST",
    "WRITE_SENTINEL",
    "OP_NOP",
    "OP_ADD",
    "OP_WRITE",
]

Reader = Mapping[str, int]

#: bits of the worker counter's output field ``pkt.arrival``
FIRST, LAST = 1, 2
#: exponent-register output meaning "the mantissa register is (re)written"
WRITE_SENTINEL = 512
#: what the align table tells the mantissa register to do
OP_NOP, OP_ADD, OP_WRITE = 0, 1, 2

#: width of the mantissa register (and of every stateful word the programs use)
W = 32
MASK32 = (1 << W) - 1


@dataclass(frozen=True)
class _Layout:
    """The bit positions an FPISA program needs, from fpisa.formats (one truth)."""

    fmt: Format

    @property
    def m(self) -> int:  # fraction bits; the implied one sits at bit m
        return self.fmt.fraction_bits

    @property
    def all_ones(self) -> int:
        return self.fmt.exponent_all_ones

    @property
    def sign_position(self) -> int:
        return self.fmt.storage_bits - 1

    @property
    def headroom(self) -> int:
        return RegisterLayout(self.fmt, W).headroom_bits



@dataclass(frozen=True)
class Field:
    """A packet header vector field. Names starting with ``pkt.`` are shared
    by the whole packet; others are private to one lane."""

    name: str
    bits: int


class TableKind(str, enum.Enum):
    #: no match: the action runs on every packet
    ALWAYS = "always"
    EXACT = "exact"
    TERNARY = "ternary"


@dataclass(frozen=True)
class Action:
    """One VLIW instruction: writes fields from fields, constants and action data."""

    name: str
    needs: frozenset[SL]
    run: Callable[[Reader, tuple], dict[str, int]]


@dataclass(frozen=True)
class StatelessOp:
    """A match (or none) and the actions it selects; runs on stateless ALUs."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[Field, ...]
    actions: tuple[Action, ...]
    table: TableKind = TableKind.ALWAYS
    key: Callable[[Reader], int] | None = None
    key_bits: int = 0
    #: EXACT: {key: (action name, data)}; TERNARY: ((value, mask, action name, data), ...)
    entries: object = None
    default: tuple[str, tuple] | None = None

    def __post_init__(self) -> None:
        names = [a.name for a in self.actions]
        if len(set(names)) != len(names):
            raise ValueError(f"op {self.name}: duplicate action names")
        if self.table is TableKind.ALWAYS and len(self.actions) != 1:
            raise ValueError(f"op {self.name}: an always-run op has exactly one action")
        object.__setattr__(self, "_by_name", {a.name: a for a in self.actions})

    @property
    def needs(self) -> frozenset[SL]:
        return frozenset().union(*(a.needs for a in self.actions))

    @property
    def instructions(self) -> int:
        """Distinct actions = VLIW instruction slots this op's table uses."""
        return len(self.actions)

    @property
    def num_entries(self) -> int:
        if self.entries is None:
            return 0
        return len(self.entries)

    def execute(self, phv: Reader) -> dict[str, int]:
        by_name = self._by_name
        if self.table is TableKind.ALWAYS:
            return self.actions[0].run(phv, ())
        key = self.key(phv)
        hit = None
        if self.table is TableKind.EXACT:
            hit = self.entries.get(key)
        else:  # first matching entry wins (priority order), as in a TCAM
            for value, mask, name, data in self.entries:
                if key & mask == value:
                    hit = (name, data)
                    break
        if hit is None:
            if self.default is None:
                raise RuntimeError(f"table {self.name}: key {key} missed and there is no default")
            hit = self.default
        name, data = hit
        return by_name[name].run(phv, data)


@dataclass(frozen=True)
class StatefulOp:
    """A read-modify-write of a private register array on one stateful atom.

    ``update(state, phv) -> (new_state, outputs)``; ``state`` is a tuple of
    ``words`` register words. One output word (Tofino's stateful ALU has one).
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[Field, ...]
    needs: frozenset[SF]
    words: int
    update: Callable[[tuple, Reader], tuple[tuple, dict[str, int]]]
    #: width of each register word the update assumes (fp32 layout: 32)
    word_bits: int = W

    @property
    def initial_state(self) -> tuple:
        return (0,) * self.words


Op = StatelessOp | StatefulOp


@dataclass(frozen=True)
class Step:
    """Operations that run in one stage, reading only earlier steps' fields."""

    name: str
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class Program:
    name: str
    #: the fpisa.aggregate mode this program implements
    mode: str
    description: str
    elements_per_lane: int
    prologue: tuple[Step, ...]
    lane: tuple[Step, ...]
    #: lane-local input fields filled by the parser, one per element
    input_fields: tuple[Field, ...]
    #: per element of the lane, the lane-local fields the deparser writes back
    #: (one word; two for raw registers: mantissa, exponent)
    result_fields: tuple[tuple[str, ...], ...]
    #: the element format on the wire ("int32" for SwitchML's fixed point)
    fmt: str = "fp32"

    @property
    def element_bytes(self) -> int:
        return 4 if self.fmt == "int32" else get_format(self.fmt).storage_bytes


# ---------------------------------------------------------------- helpers
def _plain(name: str, out: Field, inputs: tuple[str, ...], needs, fn) -> StatelessOp:
    """An always-run op computing one field (one ALU, one shared instruction)."""
    return StatelessOp(
        name=name,
        inputs=inputs,
        outputs=(out,),
        actions=(Action(name, frozenset(needs), lambda r, _d, fn=fn, o=out.name: {o: fn(r)}),),
    )


def _first(r: Reader) -> bool:
    return bool(r["pkt.arrival"] & FIRST)


# ------------------------------------------------------------- prologue
def worker_count_op() -> StatefulOp:
    """SwitchML's counter: reads 0 -> first arrival, stores n-1; else decrements.

    ``if s == 0: s = n - 1 else: s = s + (-1)`` is one predicate with a RAW
    in each branch: Banzai's IfElseRAW.
    """

    def update(state, r):
        (count,) = state
        first = count == 0
        count = r["pkt.num_workers"] - 1 if first else count - 1
        return (count,), {"pkt.arrival": (FIRST if first else 0) | (LAST if count == 0 else 0)}

    return StatefulOp(
        "worker_count",
        ("pkt.num_workers",),
        (Field("pkt.arrival", 8),),
        frozenset({SF.WRITE, SF.ADD, SF.PREDICATE, SF.BRANCH}),
        1,
        update,
    )


def exponent_max_op() -> StatefulOp:
    """SwitchML's block-exponent max: ``if first or e > s: s = e``.

    Two conditions (a packet flag and a comparison with the state): Nested.
    """

    def update(state, r):
        (e_max,) = state
        e = r["pkt.block_exponent"]
        if _first(r) or e > e_max:
            e_max = e
        return (e_max,), {"pkt.max_exponent": e_max}

    return StatefulOp(
        "exponent_max",
        ("pkt.block_exponent", "pkt.arrival"),
        (Field("pkt.max_exponent", 16),),
        frozenset({SF.WRITE, SF.PREDICATE, SF.TWO_PREDICATES}),
        1,
        update,
    )


# ------------------------------------------------------------- switchml
def switchml(pairs: bool = True) -> Program:
    """int32 sums, two per 64-bit pair atom (what SwitchML's public P4 does)."""
    epl = 2 if pairs else 1
    xs = tuple(f"x{k}" for k in range(epl))

    def update(state, r):
        if _first(r):  # first arrival writes: implicit reset, no clearing pass
            new = tuple(wrap(r[x]) for x in xs)
        else:
            new = tuple(add(s, r[x]) for s, x in zip(state, xs))
        return new, dict(zip(xs, new))

    needs = {SF.WRITE, SF.ADD, SF.PREDICATE, SF.BRANCH} | ({SF.PAIR} if pairs else set())
    significand_sum = StatefulOp(
        "significand_sum", xs + ("pkt.arrival",), tuple(Field(x, 32) for x in xs),
        frozenset(needs), epl, update,
    )
    return Program(
        name="switchml",
        mode="switchml",
        description="SwitchML: int32 add (64-bit pair: 2 elements per stateful ALU) "
        "+ block exponent max; float<->int32 conversion on the hosts",
        elements_per_lane=epl,
        prologue=(Step("count", (worker_count_op(),)), Step("exponent", (exponent_max_op(),))),
        lane=(Step("sum", (significand_sum,)),),
        input_fields=tuple(Field(x, 32) for x in xs),
        result_fields=tuple((x,) for x in xs),
        fmt="int32",
    )


# ------------------------------------------------------- FPISA building blocks
def _split_step(b: _Layout) -> Step:
    """Bit fields of the incoming value (Tofino: bit-field extract/deposit)."""
    logic = {SL.LOGIC}
    return Step("split", (
        _plain("sign", Field("sign", 8), ("x",), logic, lambda r: (r["x"] >> b.sign_position) & 1),
        _plain("exponent_field", Field("exponent_field", 8), ("x",), logic,
               lambda r: (r["x"] >> b.m) & b.all_ones),
        _plain("fraction", Field("fraction", 32), ("x",), logic, lambda r: r["x"] & ((1 << b.m) - 1)),
    ))


def _shift_actions(name: str, source: str, outputs: Callable[[Reader, int, tuple], dict],
                   variable: bool, right: range, left: range,
                   unsigned: bool = False) -> tuple[Action, ...]:
    """Actions shifting ``source``: one per distance (constant shifts) or one
    per direction (variable shift, distance from action data ``d[0]``).

    ``outputs(r, shifted, data)`` returns the action's field writes;
    ``unsigned`` selects logical shifts (magnitudes) over arithmetic ones.
    """
    shr = shift_right_logical if unsigned else shift_right
    shl = shift_left_logical if unsigned else shift_left
    if variable:
        needs = frozenset({SL.VAR_SHIFT, SL.LOGIC})
        acts = []
        if len(right):
            acts.append(Action(f"{name}_shr_var", needs,
                               lambda r, d: outputs(r, shr(r[source], d[0]), d)))
        if len(left):
            acts.append(Action(f"{name}_shl_var", needs,
                               lambda r, d: outputs(r, shl(r[source], d[0]), d)))
        return tuple(acts)
    needs = frozenset({SL.CONST_SHIFT, SL.LOGIC})
    acts = [
        Action(f"{name}_shr_{c}", needs, lambda r, d, c=c: outputs(r, shr(r[source], c), d))
        for c in right
    ] + [
        Action(f"{name}_shl_{c}", needs, lambda r, d, c=c: outputs(r, shl(r[source], c), d))
        for c in left
    ]
    return tuple(acts)


def _shift_entry(name: str, variable: bool, distance: int, data: tuple) -> tuple[str, tuple]:
    """Table entry: shift right by ``distance`` (left if negative)."""
    direction = "shr" if distance >= 0 else "shl"
    if variable:
        return f"{name}_{direction}_var", (abs(distance),) + data
    return f"{name}_{direction}_{abs(distance)}", (abs(distance),) + data


def _normalize_steps(variable: bool, b: _Layout) -> tuple[Step, ...]:
    """Read-out in the switch (docs/numerics.md section 4, rz), 5 stages:
    to unsigned; TCAM leading one + shift; adjust exponent; range (subnormal
    / overflow / zero) table; merge bits. Reads ``A`` (mantissa register
    after the update) and ``E_new`` (exponent register after the update).
    """
    to_unsigned = Step("to_unsigned", (
        # the sign at the output format's sign position
        _plain("sign_bit", Field("sign_bit", 32), ("A",), {SL.LOGIC, SL.SELECT},
               lambda r: 1 << b.sign_position if r["A"] < 0 else 0),
        # |A| of -2^31 is 2^31: fine in an unsigned 32-bit container
        _plain("magnitude", Field("magnitude", 32), ("A",), {SL.SUB, SL.SELECT, SL.COMPARE},
               lambda r: abs(r["A"])),
    ))

    # TCAM: the leading one of |A| at position pos; shift it to bit m and
    # record k = pos - m (exponent adjustment). |A| = 0: action data flags it.
    def lead_out(r, shifted, d):
        return {"m1": shifted & MASK32, "k": d[1], "is_zero": d[2]}

    lead_actions = _shift_actions(
        "lead", "magnitude", lead_out, variable, right=range(0, W - b.m), left=range(1, b.m + 1),
        unsigned=True,
    )
    lead_entries = []
    for pos in range(W - 1, -1, -1):
        mask = (MASK32 >> pos) << pos  # bits pos..31: zeros above pos, one at pos
        name, data = _shift_entry("lead", variable, pos - b.m, (pos - b.m, 0))
        lead_entries.append((1 << pos, mask, name, data))
    lead_default = _shift_entry("lead", variable, 0, (0, 1))
    leading_one = Step("leading_one", (StatelessOp(
        name="leading_one",
        inputs=("magnitude",),
        outputs=(Field("m1", 32), Field("k", 8), Field("is_zero", 8)),
        actions=lead_actions,
        table=TableKind.TERNARY,
        key=lambda r: r["magnitude"] & MASK32,
        key_bits=32,
        entries=tuple(lead_entries),
        default=lead_default,
    ),))

    adjust = Step("adjust_exponent", (
        _plain("E_adj", Field("E_adj", 16), ("E_new", "k"), {SL.ADD}, lambda r: r["E_new"] + r["k"]),
    ))

    # Exact match on (is_zero, E_adj): normal; subnormal (shift right by
    # 1 - E_adj more, exponent field 0: exact, m1 was shifted left to get
    # there); overflow to Inf; zero. E_adj spans [1 - m, all_ones + W - 1 - m]
    # (fp32: [-22, 262]) for E in [0, all_ones - 1] and k in [-m, W - 1 - m].
    def range_shift_out(r, shifted, d):
        return {"m": shifted & MASK32, "exponent_out": 0}

    range_actions = (
        Action("range_normal", frozenset({SL.LOGIC}),
               lambda r, d: {"m": r["m1"], "exponent_out": r["E_adj"]}),
        Action("range_const", frozenset({SL.LOGIC}), lambda r, d: {"m": 0, "exponent_out": d[0]}),
    ) + _shift_actions("range", "m1", range_shift_out, variable,
                                      right=range(1, b.m + 1), left=range(0), unsigned=True)
    range_entries = {}
    for e_adj in range(1 - b.m, b.all_ones + W - b.m):
        range_entries[(1, e_adj)] = ("range_const", (0,))
        if e_adj >= b.all_ones:
            range_entries[(0, e_adj)] = ("range_const", (b.all_ones,))
        elif e_adj >= 1:
            range_entries[(0, e_adj)] = ("range_normal", ())
        else:
            range_entries[(0, e_adj)] = _shift_entry("range", variable, 1 - e_adj, ())
    range_step = Step("range", (StatelessOp(
        name="range",
        inputs=("is_zero", "E_adj", "m1"),
        outputs=(Field("m", 32), Field("exponent_out", 8)),
        actions=range_actions,
        table=TableKind.EXACT,
        key=lambda r: (r["is_zero"], r["E_adj"]),
        key_bits=1 + 10,
        entries=range_entries,
    ),))

    merge = Step("merge", (
        # deposit-field: sign | exponent << m | fraction bits of m
        _plain("out", Field("out", b.fmt.storage_bits), ("sign_bit", "exponent_out", "m"), {SL.LOGIC},
               lambda r: r["sign_bit"] | (r["exponent_out"] << b.m) | (r["m"] & ((1 << b.m) - 1))),
    ))
    return (to_unsigned, leading_one, adjust, range_step, merge)


def _fpisa_program(name: str, mode: str, description: str, accumulate: tuple[Step, ...],
                   b: _Layout, normalize_in_switch: bool = True) -> Program:
    """``normalize_in_switch=False``: the result carries the raw registers
    (A, E) and the host normalizes (the wire protocol's FLAG_RAW)."""
    if normalize_in_switch:
        read_out, results = _normalize_steps(_uses_variable(accumulate), b), (("out",),)
    else:
        read_out, results = (), (("A", "E_new"),)
    return Program(
        name=name,
        mode=mode,
        description=description,
        elements_per_lane=1,
        prologue=(Step("count", (worker_count_op(),)),),
        lane=(_split_step(b),) + accumulate + read_out,
        input_fields=(Field("x", b.fmt.storage_bits),),
        result_fields=results,
        fmt=b.fmt.name,
    )


def _uses_variable(steps: tuple[Step, ...]) -> bool:
    return any(SL.VAR_SHIFT in op.needs for s in steps for op in s.ops if isinstance(op, StatelessOp))


# --------------------------------------------------------------- FPISA-A
def fpisa_a(variable_shifts: bool = False, fmt: str | Format = "fp32") -> Program:
    """Section 3: only the incoming mantissa moves; overwrite past the headroom."""
    b = _Layout(get_format(fmt))
    implied_one = Step("implied_one", (
        # subnormals and zeros carry no implied one: FPISA-A flushes them
        _plain("M", Field("M", 32), ("exponent_field", "fraction"), {SL.LOGIC, SL.SELECT, SL.COMPARE},
               lambda r: (r["fraction"] | (1 << b.m)) if r["exponent_field"] else 0),
    ))

    def exponent_update(state, r):
        # The table that calls this atom picks its instruction from packet
        # flags (first arrival; zero input), as Tofino's stateful tables can;
        # the atom itself compares twice: empty (E == 0), past the headroom.
        (E,) = state
        e = r["exponent_field"]
        if _first(r):
            return (e,), {"delta": WRITE_SENTINEL}
        if e == 0:  # zero or flushed subnormal: contributes nothing
            return (E,), {"delta": -E}
        if E == 0 or e - E > b.headroom:
            return (e,), {"delta": WRITE_SENTINEL}
        return (E,), {"delta": e - E}

    exponent_register = StatefulOp(
        "exponent_register", ("exponent_field", "pkt.arrival"), (Field("delta", 16),),
        frozenset({SF.WRITE, SF.SUB, SF.PREDICATE, SF.BRANCH, SF.TWO_PREDICATES}), 1, exponent_update,
    )
    signed = Step("signed_mantissa", (
        _plain("S", Field("S", 32), ("sign", "M"), {SL.SUB, SL.SELECT},
               lambda r: -r["M"] if r["sign"] else r["M"]),
        exponent_register,
    ))

    # Align: exact match on (nonzero input, delta). Writes the aligned value
    # y, the mantissa register's op, and E_new (the exponent register after
    # this packet: E_old = e - delta, or e on a write).
    def align_out(r, shifted, d):
        op, e_new_from_e = d[1], d[2]
        return {"y": shifted, "op": op, "E_new": r["exponent_field"] - e_new_from_e}

    align_actions = _shift_actions("align", "S", align_out, variable_shifts,
                                   right=range(0, b.m + 2), left=range(1, b.headroom + 1))
    entries = {}
    for nonzero in (0, 1):
        entries[(nonzero, WRITE_SENTINEL)] = _shift_entry("align", variable_shifts, 0, (OP_WRITE, 0))
    for delta in range(-b.all_ones, 1):
        # e <= E: add S >> (E - e); distances >= p = m + 1 leave only the
        # sign fill, the same as the clamped shift (|S| < 2^p)
        entries[(1, delta)] = _shift_entry(
            "align", variable_shifts, min(-delta, b.m + 1), (OP_ADD, delta))
        entries[(0, delta)] = _shift_entry("align", variable_shifts, 0, (OP_NOP, delta))
    for delta in range(1, b.headroom + 1):  # 0 < e - E <= h: S << (e - E) into the headroom
        entries[(1, delta)] = _shift_entry("align", variable_shifts, -delta, (OP_ADD, delta))
    align = Step("align", (StatelessOp(
        name="align",
        inputs=("exponent_field", "delta", "S"),
        outputs=(Field("y", 32), Field("op", 8), Field("E_new", 16)),
        actions=align_actions,
        table=TableKind.EXACT,
        key=lambda r: (1 if r["exponent_field"] else 0, r["delta"]),
        key_bits=1 + 10,
        entries=entries,
    ),))

    def mantissa_update(state, r):
        (A,) = state
        if r["op"] == OP_WRITE:
            A = r["y"]
        elif r["op"] == OP_ADD:
            A = saturating_add(A, r["y"])
        return (A,), {"A": A}

    mantissa = Step("mantissa_register", (StatefulOp(
        "mantissa_register", ("y", "op"), (Field("A", 32),),
        frozenset({SF.WRITE, SF.ADD, SF.PREDICATE, SF.BRANCH, SF.SATURATE}), 1, mantissa_update,
    ),))
    how = "variable shifts (no table workaround)" if variable_shifts else (
        "exact-match tables of constant-shift actions, TCAM leading one")
    return _fpisa_program(
        "fpisa-a-varshift" if variable_shifts else "fpisa-a",
        "fpisa-a",
        f"FPISA-A (numerics section 3): only the incoming mantissa is aligned, "
        f"overwrite past the headroom, saturating add; {how}",
        (implied_one, signed, align, mantissa),
        b,
    )


# ----------------------------------------------------------------- FPISA
def fpisa(normalize_in_switch: bool = True, fmt: str | Format = "fp32") -> Program:
    """Section 2 on the extended machine: RSAW aligns the stored mantissa.

    ``normalize_in_switch=False`` (program ``fpisa-raw``) returns the raw
    registers instead, freeing the five read-out stages for more lanes at
    the price of per-element normalization work on the hosts.
    """
    b = _Layout(get_format(fmt))
    implied_one = Step("implied_one", (
        # zero and subnormals: no implied one, exponent 1
        _plain("M", Field("M", 32), ("exponent_field", "fraction"), {SL.LOGIC, SL.SELECT, SL.COMPARE},
               lambda r: (r["fraction"] | (1 << b.m)) if r["exponent_field"] else r["fraction"]),
        _plain("e", Field("e", 8), ("exponent_field",), {SL.MIN_MAX}, lambda r: max(r["exponent_field"], 1)),
    ))

    def exponent_update(state, r):
        (E,) = state
        e = r["e"]
        if _first(r):
            return (e,), {"delta": WRITE_SENTINEL}
        return (max(E, e),), {"delta": e - E}

    signed = Step("signed_mantissa", (
        _plain("S", Field("S", 32), ("sign", "M"), {SL.SUB, SL.SELECT},
               lambda r: -r["M"] if r["sign"] else r["M"]),
        StatefulOp("exponent_register", ("e", "pkt.arrival"), (Field("delta", 16),),
                   frozenset({SF.WRITE, SF.SUB, SF.PREDICATE, SF.BRANCH}), 1, exponent_update),
    ))

    # One action for every delta: y = S >> rs, stored shift sa, op, E_new,
    # all from action data (the two-operand shift takes its distance there).
    def align_run(r, d):
        rs, sa, op, e_plus = d
        return {"y": shift_right(r["S"], rs), "sa": sa, "op": op, "E_new": r["e"] + e_plus}

    entries = {WRITE_SENTINEL: ("align_var", (0, 0, OP_WRITE, 0))}
    for delta in range(-(b.all_ones - 1), b.all_ones):
        if delta > 0:  # e > E: the stored mantissa moves right by delta
            entries[delta] = ("align_var", (0, delta, OP_ADD, 0))
        else:  # e <= E: the incoming one moves right by E - e
            entries[delta] = ("align_var", (-delta, 0, OP_ADD, -delta))
    align = Step("align", (StatelessOp(
        name="align",
        inputs=("delta", "S", "e"),
        outputs=(Field("y", 32), Field("sa", 8), Field("op", 8), Field("E_new", 16)),
        actions=(Action("align_var", frozenset({SL.VAR_SHIFT, SL.ADD}), align_run),),
        table=TableKind.EXACT,
        key=lambda r: r["delta"],
        key_bits=10,
        entries=entries,
    ),))

    def rsaw_update(state, r):
        (A,) = state
        if r["op"] == OP_WRITE:
            A = r["y"]
        else:  # read, shift the stored value, add, write: one cycle (RSAW)
            A = add(shift_right(A, r["sa"]), r["y"])
        return (A,), {"A": A}

    mantissa = Step("mantissa_register", (StatefulOp(
        "mantissa_register", ("y", "sa", "op"), (Field("A", 32),),
        frozenset({SF.WRITE, SF.ADD, SF.PREDICATE, SF.BRANCH, SF.SHIFT_STORED}), 1, rsaw_update,
    ),))
    where = "TCAM leading one in the switch" if normalize_in_switch else (
        "raw registers returned, hosts normalize")
    return _fpisa_program(
        "fpisa" if normalize_in_switch else "fpisa-raw", "fpisa",
        "FPISA (numerics section 2): exponent max, stored mantissa shifted by the "
        f"stateful read-shift-add-write, variable shifts; {where}",
        (implied_one, signed, align, mantissa),
        b,
        normalize_in_switch,
    )


#: program name -> builder; switchml uses pair atoms where the machine has them
PROGRAM_NAMES = ("switchml", "fpisa-a", "fpisa-a-varshift", "fpisa", "fpisa-raw")


def build_program(name: str, machine=None, fmt: str | Format = "fp32") -> Program:
    """The named program, shaped for ``machine`` where that matters (pairs).

    ``fmt`` is the FPISA programs' element format; SwitchML always carries int32.
    """
    get_format(fmt)  # validates
    if name == "switchml":
        pairs = machine is None or SF.PAIR in machine.stateful_atom.features
        return switchml(pairs=pairs)
    if name == "fpisa-a":
        return fpisa_a(variable_shifts=False, fmt=fmt)
    if name == "fpisa-a-varshift":
        return fpisa_a(variable_shifts=True, fmt=fmt)
    if name == "fpisa":
        return fpisa(fmt=fmt)
    if name == "fpisa-raw":
        return fpisa(normalize_in_switch=False, fmt=fmt)
    raise ValueError(f"unknown program {name!r}; programs: {list(PROGRAM_NAMES)}")
