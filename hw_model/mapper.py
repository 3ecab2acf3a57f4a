"""Placing a program onto a machine's stages, or rejecting it like Domino.

All or nothing, as Domino does: a program maps only if every operation fits
one atom of the machine ("atom not expressive enough" otherwise) and the
pipeline is deep and wide enough for at least one lane ("pipeline too
small" otherwise). The per-packet prologue is placed as early as possible;
then element lanes are replicated until a stage resource or the PHV runs
out, by two greedy strategies whose better result is kept: as late as
possible (leaving the early stages to per-packet control, like SwitchML's
layout) and load-balanced (spreading lanes over the stages they can use).

Per-stage resources: stateful atoms, stateless ALUs (one per output field),
VLIW instruction slots (all always-run ops of a stage share one
instruction; a match table costs one instruction per distinct action),
TCAM blocks, and PHV bits live at each stage boundary.

:func:`plan_packet` then splits a packet's elements over passes: one pass
if they fit, else equal power-of-two chunks (SwitchML's payload sizes are
powers of two: 64 int32 per pass, 1 KB in 4 passes) through recirculation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .machine import Machine
from .programs import Program, StatefulOp, Step, TableKind, build_program

__all__ = [
    "MappingError",
    "NOT_EXPRESSIVE",
    "TOO_SMALL",
    "Placement",
    "StageUsage",
    "Mapping",
    "PacketPlan",
    "check_expressiveness",
    "map_program",
    "plan_packet",
]

NOT_EXPRESSIVE = "atom not expressive enough"
TOO_SMALL = "pipeline too small"


class MappingError(ValueError):
    """The program does not fit the machine; ``reason`` is one of the two
    Domino-style verdicts, ``detail`` says what exactly."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Placement:
    #: None for the per-packet prologue, else the lane index
    lane: int | None
    step: Step
    stage: int

    @property
    def prefix(self) -> str:
        return "" if self.lane is None else f"L{self.lane}."


@dataclass
class StageUsage:
    stateful_alus: int = 0
    stateless_alus: int = 0
    has_plain_ops: bool = False
    table_instructions: int = 0
    tcam_blocks: int = 0

    @property
    def instructions(self) -> int:
        return int(self.has_plain_ops) + self.table_instructions

    def copy(self) -> "StageUsage":
        return StageUsage(**self.__dict__)


@dataclass
class Mapping:
    machine: Machine
    program: Program
    lanes: int
    placements: list[Placement]
    usage: list[StageUsage]
    phv_peak_bits: int

    @property
    def elements_per_pass(self) -> int:
        return self.lanes * self.program.elements_per_lane

    @property
    def stages_used(self) -> int:
        return sum(1 for u in self.usage if u.stateful_alus or u.stateless_alus)

    @property
    def stateful_alus_used(self) -> int:
        return sum(u.stateful_alus for u in self.usage)

    @property
    def stateless_alus_used(self) -> int:
        return sum(u.stateless_alus for u in self.usage)

    @property
    def max_instructions(self) -> int:
        return max(u.instructions for u in self.usage)

    def lane_stages(self, lane: int) -> list[int]:
        return [p.stage for p in self.placements if p.lane == lane]

    def stateful_layout(self) -> list[int]:
        """Stateful atoms used in each stage."""
        return [u.stateful_alus for u in self.usage]

    def describe(self) -> str:
        """Stage-by-stage table: resources used / available and the steps placed."""
        m = self.machine
        slots = "-" if m.instruction_slots_per_stage is None else m.instruction_slots_per_stage
        lines = [
            f"{self.program.name} on {m.name}: {self.lanes} lane(s) x "
            f"{self.program.elements_per_lane} element(s) = {self.elements_per_pass} elements per pass",
            f"{'stage':>5}  {'SALUs':>5}  {'ALUs':>7}  {'instr':>5}  {'TCAM':>5}  steps "
            "(* stateful, [n] = table actions)",
        ]
        for stage, usage in enumerate(self.usage):
            counts: dict[str, int] = {}
            for p in self.placements:
                if p.stage == stage:
                    label = "+".join(_op_label(op) for op in p.step.ops)
                    label = f"{p.step.name}: {label}" + ("" if p.lane is not None else " (per packet)")
                    counts[label] = counts.get(label, 0) + 1
            steps = "; ".join(f"{label}" + (f" x{k}" if k > 1 else "") for label, k in counts.items())
            lines.append(
                f"{stage:>5}  {usage.stateful_alus:>2}/{m.stateful_alus_per_stage:<2}  "
                f"{usage.stateless_alus:>3}/{m.stateless_alus_per_stage:<3}  "
                f"{usage.instructions:>2}/{slots:<2}  {usage.tcam_blocks:>2}/{m.tcam_blocks_per_stage:<2}  {steps}"
            )
        return "\n".join(lines)


def _op_label(op) -> str:
    if isinstance(op, StatefulOp):
        return f"{op.name}*"
    if op.table is TableKind.ALWAYS:
        return op.name
    return f"{op.name}[{op.instructions}]"


@dataclass
class PacketPlan:
    """How one packet of ``elements_per_packet`` elements crosses the pipe."""

    mapping: Mapping
    elements_per_packet: int
    elements_per_pass: int
    passes: int
    #: elements per pass the machine could hold (all lanes that fit)
    capacity_per_pass: int


# ------------------------------------------------------------- capability
def check_expressiveness(program: Program, machine: Machine) -> None:
    """Raise MappingError(NOT_EXPRESSIVE) listing every op the machine cannot do."""
    problems = [p for step in program.prologue + program.lane for op in step.ops
                for p in _op_problems(op, machine)]
    if problems:
        raise MappingError(NOT_EXPRESSIVE, f"{program.name} on {machine.name}: " + "; ".join(problems))


def _op_problems(op, machine: Machine) -> list[str]:
    alu, atom = machine.stateless_alu, machine.stateful_atom
    problems = []
    if isinstance(op, StatefulOp):
        missing = atom.lacks(op.needs)
        if missing:
            problems.append(f"stateful op '{op.name}' needs {_names(missing)}, which stateful "
                            f"atom '{atom.name}' cannot do in one cycle")
        if op.word_bits > atom.word_bits:
            problems.append(f"stateful op '{op.name}' needs {op.word_bits}-bit registers, atom "
                            f"'{atom.name}' has {atom.word_bits}-bit words")
        if op.words > atom.words:
            problems.append(f"stateful op '{op.name}' updates {op.words} words, atom "
                            f"'{atom.name}' holds {atom.words}")
        return problems
    missing = alu.lacks(op.needs)
    if missing:
        problems.append(f"op '{op.name}' needs {_names(missing)}, which stateless ALU "
                        f"'{alu.name}' lacks")
    if op.table is TableKind.EXACT and not machine.exact_match_tables:
        problems.append(f"op '{op.name}' is an exact-match table and the machine has none")
    if op.table is TableKind.TERNARY and not machine.ternary_tables:
        problems.append(f"op '{op.name}' (leading-one detection) needs a ternary (TCAM) "
                        "table and the machine has none")
    return problems


def _names(features) -> str:
    return ", ".join(sorted(f.value for f in features))


# -------------------------------------------------------------- resources
def _step_cost(step: Step, machine: Machine) -> StageUsage:
    cost = StageUsage()
    for op in step.ops:
        if isinstance(op, StatefulOp):
            cost.stateful_alus += 1
            continue
        cost.stateless_alus += len(op.outputs)
        if op.table is TableKind.ALWAYS:
            cost.has_plain_ops = True
        else:
            cost.table_instructions += op.instructions
        if op.table is TableKind.TERNARY:
            cost.tcam_blocks += math.ceil(op.num_entries / machine.tcam_block_entries) * math.ceil(
                op.key_bits / machine.tcam_block_key_bits)
    return cost


def _fits(usage: StageUsage, cost: StageUsage, machine: Machine) -> str | None:
    """None if ``cost`` fits on top of ``usage``, else the exhausted resource."""
    if usage.stateful_alus + cost.stateful_alus > machine.stateful_alus_per_stage:
        return f"stateful ALUs ({machine.stateful_alus_per_stage} per stage)"
    if usage.stateless_alus + cost.stateless_alus > machine.stateless_alus_per_stage:
        return f"stateless ALUs ({machine.stateless_alus_per_stage} per stage)"
    slots = machine.instruction_slots_per_stage
    if slots is not None:
        total = int(usage.has_plain_ops or cost.has_plain_ops) + usage.table_instructions + cost.table_instructions
        if total > slots:
            return f"VLIW instruction slots ({slots} per stage)"
    if usage.tcam_blocks + cost.tcam_blocks > machine.tcam_blocks_per_stage:
        return f"TCAM blocks ({machine.tcam_blocks_per_stage} per stage)"
    return None


def _add(usage: StageUsage, cost: StageUsage) -> None:
    usage.stateful_alus += cost.stateful_alus
    usage.stateless_alus += cost.stateless_alus
    usage.has_plain_ops = usage.has_plain_ops or cost.has_plain_ops
    usage.table_instructions += cost.table_instructions
    usage.tcam_blocks += cost.tcam_blocks


# -------------------------------------------------------------------- PHV
def _phv_live_bits(program: Program, placements: list[Placement], machine: Machine) -> list[int]:
    """Bits of op-produced fields live at each stage boundary 0..stages
    (boundary b = the PHV entering stage b; boundary ``stages`` = deparser).

    A field lives from the stage after its producer (the parser for inputs)
    to its last reader (the deparser for results), as a compiler overlaying
    fields with disjoint live ranges would allocate it.
    """
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    bits: dict[str, int] = {}
    lanes = {p.lane for p in placements if p.lane is not None}
    for lane in lanes:
        for f in program.input_fields:
            name = f"L{lane}.{f.name}"
            first[name], bits[name] = -1, f.bits
        for names in program.result_fields:
            for r in names:
                last[f"L{lane}.{r}"] = machine.stages
    for p in placements:
        for op in p.step.ops:
            for f in op.outputs:
                name = f.name if f.name.startswith("pkt.") else p.prefix + f.name
                first[name] = min(first.get(name, p.stage), p.stage)
                bits[name] = max(bits.get(name, 0), f.bits)
                last.setdefault(name, p.stage)
            for i in op.inputs:
                name = i if i.startswith("pkt.") else p.prefix + i
                last[name] = max(last.get(name, p.stage), p.stage)
    live = [0] * (machine.stages + 1)
    for name, start in first.items():
        for b in range(start + 1, last.get(name, start) + 1):
            live[b] += bits[name]
    return live


# ---------------------------------------------------------------- mapping
def _producers(placements: list[Placement]) -> dict[str, int]:
    out = {}
    for p in placements:
        for op in p.step.ops:
            for f in op.outputs:
                if f.name.startswith("pkt."):
                    out[f.name] = p.stage
    return out


def _place_prologue(program: Program, machine: Machine, usage: list[StageUsage]) -> list[Placement]:
    placements: list[Placement] = []
    for step in program.prologue:
        produced = _producers(placements)
        earliest = max([produced[i] + 1 for op in step.ops for i in op.inputs if i in produced], default=0)
        cost = _step_cost(step, machine)
        for stage in range(earliest, machine.stages):
            if _fits(usage[stage], cost, machine) is None:
                _add(usage[stage], cost)
                placements.append(Placement(None, step, stage))
                break
        else:
            raise MappingError(TOO_SMALL, (
                f"{program.name}: per-packet step '{step.name}' finds no stage at or after "
                f"{earliest} in a {machine.stages}-stage pipeline"))
    return placements


def _earliest_stages(program: Program, produced: dict[str, int]) -> list[int]:
    """Per lane step, the earliest stage its chain and its prologue inputs allow."""
    earliest, lower = [], 0
    for step in program.lane:
        deps = [produced[i] + 1 for op in step.ops for i in op.inputs if i in produced]
        lower = max([lower] + deps)
        earliest.append(lower)
        lower += 1
    return earliest


def _place_lane_alap(program: Program, machine: Machine, lane: int, usage: list[StageUsage],
                     earliest: list[int]) -> tuple[list[Placement], str | None]:
    """Each step as late as possible, last step first; ([], why) if it does not fit."""
    steps = program.lane
    trial = [u.copy() for u in usage]
    chosen: list[Placement] = []
    upper = machine.stages - 1
    for index in range(len(steps) - 1, -1, -1):
        step = steps[index]
        cost = _step_cost(step, machine)
        why = None
        for stage in range(upper, earliest[index] - 1, -1):
            why = _fits(trial[stage], cost, machine)
            if why is None:
                _add(trial[stage], cost)
                chosen.append(Placement(lane, step, stage))
                upper = stage - 1
                break
        else:
            return [], f"no stage in {earliest[index]}..{upper} has room for step '{step.name}': {why}"
    return sorted(chosen, key=lambda p: p.stage), None


def _load(usage: StageUsage, cost: StageUsage, machine: Machine) -> float:
    """How full a stage gets, summed over the resources ``cost`` uses (0..1 each)."""
    load = 0.0
    if cost.stateful_alus:
        load += (usage.stateful_alus + cost.stateful_alus) / machine.stateful_alus_per_stage
    if cost.stateless_alus:
        load += (usage.stateless_alus + cost.stateless_alus) / machine.stateless_alus_per_stage
    if machine.instruction_slots_per_stage and (cost.table_instructions or cost.has_plain_ops):
        total = int(usage.has_plain_ops or cost.has_plain_ops) + usage.table_instructions + cost.table_instructions
        load += total / machine.instruction_slots_per_stage
    if cost.tcam_blocks:
        load += (usage.tcam_blocks + cost.tcam_blocks) / machine.tcam_blocks_per_stage
    return load


def _place_lane_balanced(program: Program, machine: Machine, lane: int, usage: list[StageUsage],
                         earliest: list[int]) -> tuple[list[Placement], str | None]:
    """The chain placement that leaves stages least loaded (shortest path over
    (step, stage)); ties go to later stages. Spreads lanes where ALAP piles up."""
    steps, stages = program.lane, machine.stages
    costs = [_step_cost(step, machine) for step in steps]
    inf = float("inf")
    best = [[inf] * stages for _ in steps]
    back = [[-1] * stages for _ in steps]
    for i, cost in enumerate(costs):
        running, running_at = (0.0, -1) if i == 0 else (inf, -1)
        for stage in range(stages):
            if i > 0 and stage > 0 and best[i - 1][stage - 1] <= running:
                running, running_at = best[i - 1][stage - 1], stage - 1
            if stage < earliest[i] or running == inf or _fits(usage[stage], cost, machine) is not None:
                continue
            best[i][stage] = running + _load(usage[stage], cost, machine) - 1e-9 * stage
            back[i][stage] = running_at
    last = min(range(stages), key=lambda st: best[-1][st])
    if best[-1][last] == inf:
        return [], "no chain of stages has room for every step"
    chosen, stage = [], last
    for i in range(len(steps) - 1, -1, -1):
        chosen.append(Placement(lane, steps[i], stage))
        stage = back[i][stage]
    return sorted(chosen, key=lambda p: p.stage), None


#: lane placement strategies, the first preferred on ties
_STRATEGIES = (_place_lane_alap, _place_lane_balanced)


def _replicate(program: Program, machine: Machine, lanes: int | None, strategy):
    """Prologue, then lanes placed by ``strategy`` until ``lanes`` or no room."""
    usage = [StageUsage() for _ in range(machine.stages)]
    placements = _place_prologue(program, machine, usage)
    produced = _producers(placements)
    earliest = _earliest_stages(program, produced)
    if earliest[-1] >= machine.stages:
        why = (f"a lane is a chain of {len(program.lane)} steps that can start at stage "
               f"{earliest[0]} at the earliest; the machine has {machine.stages} stages")
        return usage, placements, 0, why
    budget = machine.parser.payload_bits
    placed, why = 0, None
    while lanes is None or placed < lanes:
        lane_placements, why = strategy(program, machine, placed, usage, earliest)
        if not lane_placements:
            break
        peak = max(_phv_live_bits(program, placements + lane_placements, machine))
        if peak > budget:
            why = f"PHV: {peak} bits of fields live at once, {budget} left after headers"
            break
        for p in lane_placements:
            _add(usage[p.stage], _step_cost(p.step, machine))
        placements += lane_placements
        placed += 1
    return usage, placements, placed, why


def map_program(program: Program | str, machine: Machine, lanes: int | None = None) -> Mapping:
    """Place the prologue and ``lanes`` lanes (None: as many as fit).

    Two greedy lane strategies are tried: as late as possible (SwitchML's
    layout: whole stages of lanes after the per-packet control) and
    load-balanced; the mapping with more lanes wins, ALAP on ties.
    """
    if isinstance(program, str):
        program = build_program(program, machine)
    if lanes is not None and (not isinstance(lanes, int) or lanes < 1):
        raise ValueError(f"lanes must be a positive int or None, got {lanes!r}")
    check_expressiveness(program, machine)
    results = []
    for strategy in _STRATEGIES:
        result = _replicate(program, machine, lanes, strategy)
        results.append(result)
        if lanes is not None and result[2] == lanes:
            break  # the preferred strategy that reaches the target
    usage, placements, placed, _ = max(results, key=lambda r: r[2])  # first of the best on ties
    why = results[0][3]
    if placed == 0 or (lanes is not None and placed < lanes):
        wanted = "one lane" if placed == 0 else f"{lanes} lanes (fit {placed})"
        raise MappingError(TOO_SMALL, f"{program.name} on {machine.name}: cannot place {wanted}: {why}")
    peak = max(_phv_live_bits(program, placements, machine))
    return Mapping(machine, program, placed, placements, usage, peak)


def plan_packet(program: Program | str, machine: Machine, elements_per_packet: int) -> PacketPlan:
    """Elements per pass and passes per packet, and the mapping that does it."""
    if isinstance(program, str):
        program = build_program(program, machine)
    if isinstance(elements_per_packet, bool) or not isinstance(elements_per_packet, int) or elements_per_packet < 1:
        raise ValueError(f"elements_per_packet must be a positive int, got {elements_per_packet!r}")
    capacity = map_program(program, machine).elements_per_pass
    if elements_per_packet <= capacity:
        per_pass = elements_per_packet
    elif not machine.recirculation:
        raise MappingError(TOO_SMALL, (
            f"{program.name} on {machine.name}: {elements_per_packet} elements per packet, "
            f"{capacity} fit one pass, and the machine has no recirculation"))
    else:
        # payload sizes are powers of two (SwitchML: 64 int32 per pass, 1 KB in 4)
        per_pass = 1 << (capacity.bit_length() - 1)
    passes = math.ceil(elements_per_packet / per_pass)
    lanes = math.ceil(per_pass / program.elements_per_lane)
    mapping = map_program(program, machine, lanes=lanes)
    return PacketPlan(mapping, elements_per_packet, per_pass, passes, capacity)
