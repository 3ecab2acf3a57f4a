"""Cycle simulation of a mapped program: packets flowing through the stages.

One packet (or a bubble) enters the pipeline per clock cycle; a recirculated
packet takes the entry slot before a new one. Between stages sit packet
latches (Banzai's double-buffered PHVs): in each cycle every stage reads
the PHV in its input latch, runs its operations (stateful ones update their
register arrays), and the result moves to the next latch. A packet leaving
the last stage is deparsed, or recirculated for its next pass. Register
arrays are indexed by (pass, slot): each pass aggregates a different chunk
of the packet.

The simulations here take the same inputs and arrival order as
``fpisa.aggregate``, so that the register contents and the result the last
packet carries out can be compared with the numerics core bit for bit
(:func:`check_against_numerics`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

import fpisa
from fpisa import switchml as sml
from fpisa.formats import get_format

from .machine import Machine
from .mapper import PacketPlan, Placement, plan_packet
from .programs import LAST, StatefulOp, build_program

__all__ = [
    "PacketIn",
    "PipelineRun",
    "run_pipeline",
    "arrival_schedule",
    "FpisaRun",
    "simulate_fpisa",
    "SwitchmlRun",
    "simulate_switchml",
    "CheckResult",
    "check_against_numerics",
]


@dataclass
class PacketIn:
    """One worker's packet for one slot: a payload of element words."""

    worker: int
    slot: int
    payload: list[int]
    block_exponent: int = 0


@dataclass
class _InFlight:
    packet: PacketIn
    pass_index: int = 0
    #: element index in the packet -> result words collected so far
    result: dict[int, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class PipelineRun:
    cycles: int
    packets: int
    passes: int
    #: slot -> per element, the result words the slot's last packet carries out
    results: dict[int, list[tuple[int, ...]]]
    #: slot -> the result packet's per-packet fields (e.g. pkt.max_exponent)
    result_packet_fields: dict[int, dict[str, int]]
    #: (lane, stateful op name) -> {(pass, slot): register words}
    registers: dict[tuple[int | None, str], dict[tuple[int, int], tuple]]


class _LaneView:
    """A lane's window on the PHV: ``pkt.*`` names are shared, others private."""

    __slots__ = ("phv", "prefix")

    def __init__(self, phv: dict[str, int], prefix: str):
        self.phv, self.prefix = phv, prefix

    def __getitem__(self, name: str) -> int:
        return self.phv[name if name.startswith("pkt.") else self.prefix + name]


def run_pipeline(plan: PacketPlan, packets: list[PacketIn], num_workers: int) -> PipelineRun:
    """Cycle-by-cycle run of ``packets`` (in arrival order) through ``plan``."""
    mapping, program = plan.mapping, plan.mapping.program
    stages = mapping.machine.stages
    epp, chunk, epl = plan.elements_per_packet, plan.elements_per_pass, program.elements_per_lane
    for p in packets:
        if len(p.payload) != epp:
            raise ValueError(f"packet from worker {p.worker} has {len(p.payload)} elements, expected {epp}")
    by_stage: list[list[Placement]] = [[] for _ in range(stages)]
    for placement in mapping.placements:
        by_stage[placement.stage].append(placement)
    registers: dict[tuple[int | None, str], dict[tuple[int, int], tuple]] = {}
    for placement in mapping.placements:
        for op in placement.step.ops:
            if isinstance(op, StatefulOp):
                registers[(placement.lane, op.name)] = {}

    def parse(flight: _InFlight) -> dict[str, int]:
        pkt = flight.packet
        phv = {
            "pkt.num_workers": num_workers,
            "pkt.block_exponent": pkt.block_exponent,
            "pkt.slot": pkt.slot,
            "pkt.pass": flight.pass_index,
        }
        for lane in range(mapping.lanes):
            for k, f in enumerate(program.input_fields):
                index = flight.pass_index * chunk + lane * epl + k
                # a last pass with fewer elements than lanes feeds idle lanes 0
                phv[f"L{lane}.{f.name}"] = pkt.payload[index] if index < epp else 0
        return phv

    def run_stage(stage: int, phv: dict[str, int]) -> dict[str, int]:
        writes: dict[str, int] = {}
        row = (phv["pkt.pass"], phv["pkt.slot"])
        for placement in by_stage[stage]:
            view = _LaneView(phv, placement.prefix)
            for op in placement.step.ops:
                if isinstance(op, StatefulOp):
                    array = registers[(placement.lane, op.name)]
                    state, out = op.update(array.get(row, op.initial_state), view)
                    array[row] = state
                else:
                    out = op.execute(view)
                for name, value in out.items():
                    writes[name if name.startswith("pkt.") else placement.prefix + name] = value
        # double-buffered latch: every op of the stage read the input PHV
        return {**phv, **writes}

    pending = deque(_InFlight(p) for p in packets)
    recirculating: deque[_InFlight] = deque()
    latches: list[tuple[_InFlight, dict[str, int]] | None] = [None] * stages
    results: dict[int, list[tuple[int, ...]]] = {}
    result_packet_fields: dict[int, dict[str, int]] = {}
    cycles = passes = 0
    while pending or recirculating or any(latches):
        leaving = latches[-1]
        if leaving is not None:
            flight, phv = leaving
            for lane in range(mapping.lanes):
                for k, names in enumerate(program.result_fields):
                    index = flight.pass_index * chunk + lane * epl + k
                    if index < epp:
                        flight.result[index] = tuple(phv[f"L{lane}.{name}"] for name in names)
            passes += 1
            if flight.pass_index + 1 < plan.passes:
                flight.pass_index += 1
                recirculating.append(flight)
            elif phv["pkt.arrival"] & LAST:
                slot = flight.packet.slot
                results[slot] = [flight.result[i] for i in range(epp)]
                result_packet_fields[slot] = {k: v for k, v in phv.items() if k.startswith("pkt.")}
            # a non-last packet ends here: its contribution is in the registers
        entrant = recirculating.popleft() if recirculating else (pending.popleft() if pending else None)
        latches = [None if entrant is None else (entrant, parse(entrant))] + latches[:-1]
        for stage, latch in enumerate(latches):
            if latch is not None:
                latches[stage] = (latch[0], run_stage(stage, latch[1]))
        cycles += 1
    # the loop's last cycle only drained an empty pipeline
    return PipelineRun(cycles - 1, len(packets), passes, results, result_packet_fields, registers)


def arrival_schedule(num_workers: int, num_slots: int, order=None) -> np.ndarray:
    """(num_slots, K) worker order per slot from None, a permutation, or per slot."""
    if order is None:
        return np.tile(np.arange(num_workers), (num_slots, 1))
    arr = np.asarray(order)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"order must hold worker indices, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = np.tile(arr, (num_slots, 1))
    if arr.shape != (num_slots, num_workers):
        raise ValueError(
            f"order must be a permutation of range({num_workers}) or a ({num_slots}, "
            f"{num_workers}) array of per-slot orders, got shape {np.shape(order)}")
    if not np.array_equal(np.sort(arr, axis=1), np.tile(np.arange(num_workers), (num_slots, 1))):
        raise ValueError(f"order is not a permutation of range({num_workers}) for every slot")
    return arr.astype(np.int64)


def _packets(words: np.ndarray, epp: int, schedule: np.ndarray, block_exponents=None) -> list[PacketIn]:
    """Packets in arrival order: round r brings worker schedule[s, r] for every slot s,
    so all slots are in flight together, as workers stream them."""
    num_workers, n = words.shape
    num_slots = schedule.shape[0]
    padded = np.zeros((num_workers, num_slots * epp), dtype=np.int64)
    padded[:, :n] = words
    out = []
    for r in range(num_workers):
        for slot in range(num_slots):
            w = int(schedule[slot, r])
            e = 0 if block_exponents is None else int(block_exponents[w, slot])
            out.append(PacketIn(w, slot, [int(v) for v in padded[w, slot * epp:(slot + 1) * epp]], e))
    return out


def _num_slots(n: int, epp: int) -> int:
    if n < 1:
        raise ValueError("values must have at least one element")
    return -(-n // epp)


@dataclass
class FpisaRun:
    plan: PacketPlan
    run: PipelineRun
    result_bits: np.ndarray
    exponent_register: np.ndarray
    mantissa_register: np.ndarray
    #: (n, K) per-element arrival orders, as fpisa.aggregate takes them
    element_order: np.ndarray


def simulate_fpisa(machine: Machine, program: str, values_bits, elements_per_packet: int,
                   order=None, rounding: str = "rz", fmt: str = "fp32") -> FpisaRun:
    """Aggregate (K, n) values of ``fmt`` (bit patterns, or float32/float16
    for fp32/fp16) with an FPISA program on ``machine``.

    ``rounding`` applies to ``fpisa-raw`` only (the host normalizes); the
    programs that normalize in the switch truncate (rz).
    """
    form = get_format(fmt)
    prog = build_program(program, machine, form)
    if prog.mode not in ("fpisa", "fpisa-a"):
        raise ValueError(f"program {program!r} is not an FPISA program")
    if rounding != "rz" and len(prog.result_fields[0]) == 1:
        raise ValueError(f"program {program!r} normalizes in the switch, which truncates: "
                         "rounding must be 'rz' (use fpisa-raw for host-side 'rne')")
    bits = fpisa.to_bits(values_bits, form)
    if bits.ndim != 2:
        raise ValueError(f"values must be a (workers, elements) array, got shape {bits.shape}")
    if np.any((bits >> form.fraction_bits) & form.exponent_all_ones == form.exponent_all_ones):
        raise ValueError("the cycle model does not carry Inf/NaN flags (no sticky special-flag "
                         "register is modelled); pass finite values")
    plan = plan_packet(prog, machine, elements_per_packet)
    num_workers, n = bits.shape
    num_slots = _num_slots(n, elements_per_packet)
    schedule = arrival_schedule(num_workers, num_slots, order)
    run = run_pipeline(plan, _packets(bits.astype(np.int64), elements_per_packet, schedule), num_workers)
    words = [w for s in range(num_slots) for w in run.results[s]][:n]
    if len(prog.result_fields[0]) == 1:  # normalized in the switch
        result = np.array([w for (w,) in words], dtype=form.bits_dtype)
    else:  # raw (A, E): the host normalizes, as on a FLAG_RAW result
        result = fpisa.normalize(np.array([e for _, e in words], dtype=np.int64),
                                 np.array([a for a, _ in words], dtype=np.int64), fmt=form, rounding=rounding)
        result = np.asarray(result, dtype=form.bits_dtype)
    exponent = np.zeros(num_slots * elements_per_packet, dtype=np.int64)
    mantissa = np.zeros_like(exponent)
    chunk, epl = plan.elements_per_pass, prog.elements_per_lane
    for (lane, name), rows in run.registers.items():
        if lane is None:
            continue
        target = exponent if name == "exponent_register" else mantissa
        for (pass_index, slot), (word,) in rows.items():
            index = pass_index * chunk + lane * epl
            if index < elements_per_packet:
                target[slot * elements_per_packet + index] = word
    element_order = np.repeat(schedule, elements_per_packet, axis=0)[:n]
    return FpisaRun(plan, run, result, exponent[:n], mantissa[:n], element_order)


@dataclass
class SwitchmlRun:
    plan: PacketPlan
    run: PipelineRun
    #: int32 sums carried out by each slot's last packet
    int_sums: np.ndarray
    #: the block-exponent max each result packet carries
    max_exponents: np.ndarray


def simulate_switchml(machine: Machine, int_values, block_exponents, elements_per_packet: int,
                      order=None) -> SwitchmlRun:
    """Sum int32 values (K, n) and max block exponents (K, slots) on ``machine``."""
    prog = build_program("switchml", machine)
    ints = np.asarray(int_values)
    if ints.ndim != 2 or ints.dtype != np.int32:
        raise ValueError(f"int_values must be a (workers, elements) int32 array, got {ints.dtype} {ints.shape}")
    num_workers, n = ints.shape
    num_slots = _num_slots(n, elements_per_packet)
    exps = np.asarray(block_exponents, dtype=np.int64)
    if exps.shape != (num_workers, num_slots):
        raise ValueError(f"block_exponents must have shape ({num_workers}, {num_slots}), got {exps.shape}")
    plan = plan_packet(prog, machine, elements_per_packet)
    schedule = arrival_schedule(num_workers, num_slots, order)
    run = run_pipeline(plan, _packets(ints.astype(np.int64), elements_per_packet, schedule, exps), num_workers)
    sums = np.array([v for s in range(num_slots) for (v,) in run.results[s]][:n], dtype=np.int64).astype(np.int32)
    max_exp = np.array([run.result_packet_fields[s]["pkt.max_exponent"] for s in range(num_slots)], dtype=np.int64)
    return SwitchmlRun(plan, run, sums, max_exp)


@dataclass
class CheckResult:
    """Cycle model vs the numerics core on the same inputs and arrival order."""

    machine: str
    program: str
    elements: int
    workers: int
    cycles: int
    #: name of each compared quantity -> number of elements that differ
    mismatches: dict[str, int]

    @property
    def ok(self) -> bool:
        return not any(self.mismatches.values())


def check_against_numerics(machine: Machine, program: str, values, elements_per_packet: int,
                           order=None, rounding: str = "rz", fmt: str = "fp32") -> CheckResult:
    """Run the cycle model and ``fpisa.aggregate_detailed``; count differing bits.

    FPISA programs: result bits, exponent and mantissa registers. switchml:
    the hosts quantize with ``fpisa.switchml`` (block = one packet), the
    simulated switch sums int32 and maxes exponents; compared are the int
    sums (against numpy's wrapping int32 sum), the max exponents, and the
    dequantized result (against ``fpisa.aggregate(mode="switchml")``).
    ``values``: (K, n) bit patterns of ``fmt``, or float32 / float16 for
    fp32 / fp16.
    """
    bits = fpisa.to_bits(values, fmt)
    if bits.ndim != 2:
        raise ValueError(f"values must be (workers, elements), got shape {bits.shape}")
    num_workers, n = bits.shape
    prog = build_program(program, machine, fmt)
    if prog.mode == "switchml":
        local = np.stack([sml.block_exponents(bits[k], fmt, elements_per_packet) for k in range(num_workers)])
        # SwitchML pipelines the exponent exchange (packet k carries block
        # k+W's exponent); here a first round of the same program finds the
        # max exponents, with zero payloads, before the data round
        zeros = np.zeros((num_workers, n), dtype=np.int32)
        exchange = simulate_switchml(machine, zeros, local, elements_per_packet, order)
        ints = np.stack([
            sml.quantize(bits[k], fmt, exchange.max_exponents, num_workers, elements_per_packet)
            for k in range(num_workers)])
        data = simulate_switchml(machine, ints, local, elements_per_packet, order)
        expected_sums = ints.sum(axis=0, dtype=np.int32)
        result = sml.dequantize(data.int_sums, fmt, exchange.max_exponents, num_workers, elements_per_packet)
        expected = fpisa.aggregate(bits, "switchml", fmt=fmt, block_size=elements_per_packet)
        mismatches = {
            "max_exponent": int(np.count_nonzero(exchange.max_exponents != local.max(axis=0))),
            "int_sum": int(np.count_nonzero(data.int_sums != expected_sums)),
            "result_bits": int(np.count_nonzero(result != expected)),
        }
        cycles = exchange.run.cycles + data.run.cycles
    else:
        run = simulate_fpisa(machine, program, bits, elements_per_packet, order, rounding, fmt)
        ref = fpisa.aggregate_detailed(bits, prog.mode, fmt=fmt, order=run.element_order, rounding=rounding)
        mismatches = {
            "result_bits": int(np.count_nonzero(run.result_bits != ref.result)),
            "exponent_register": int(np.count_nonzero(run.exponent_register != ref.exponent_register)),
            "mantissa_register": int(np.count_nonzero(run.mantissa_register != ref.mantissa_register)),
        }
        cycles = run.run.cycles
    return CheckResult(machine.name, program, n, num_workers, cycles, mismatches)
