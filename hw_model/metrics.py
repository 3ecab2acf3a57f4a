"""What a (machine, program, elements per packet) costs and delivers.

From a :class:`~hw_model.mapper.PacketPlan`: stages and ALUs used, elements
per pass, passes per packet, packets/s and element contributions/s at line
rate (the least of: the ports' bandwidth, one pass per clock cycle, and the
loopback bandwidth the extra passes need) and at the pipeline clock (ports
unlimited), latency in cycles, and an area estimate of the ALUs used and of
the whole machine from per-atom areas (the machine's atom defaults,
overridable with :class:`AreaCosts`).

"Elements/s" counts element contributions absorbed by one pipe (packets/s
x elements per packet); the rate at which fully aggregated elements leave
is that divided by the number of workers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .machine import ETHERNET_OVERHEAD_BYTES, PACKET_HEADER_BYTES, Machine
from .mapper import MappingError, plan_packet
from .programs import build_program

__all__ = [
    "AreaCosts",
    "Metrics",
    "evaluate",
    "compare",
    "machine_alu_area_um2",
    "format_table",
]

@dataclass(frozen=True)
class AreaCosts:
    """Per-atom areas in um^2; None keeps the machine's atom default."""

    stateless_alu_um2: float | None = None
    stateful_atom_um2: float | None = None

    def __post_init__(self) -> None:
        for name in ("stateless_alu_um2", "stateful_atom_um2"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"AreaCosts.{name} must be a number >= 0 or None, got {value!r}")

    def resolve(self, machine: Machine) -> tuple[float | None, float | None]:
        stateless = self.stateless_alu_um2 if self.stateless_alu_um2 is not None else machine.stateless_alu.area_um2
        stateful = self.stateful_atom_um2 if self.stateful_atom_um2 is not None else machine.stateful_atom.area_um2
        return stateless, stateful


@dataclass
class Metrics:
    machine: str
    program: str
    elements_per_packet: int
    mapped: bool
    #: element format on the wire (int32 for SwitchML)
    fmt: str = "fp32"
    #: Domino-style verdict when not mapped, with the detail
    reason: str | None = None
    detail: str | None = None
    lanes: int = 0
    stages_used: int = 0
    stateful_alus_used: int = 0
    stateless_alus_used: int = 0
    #: stateful atoms used in each stage
    stateful_layout: list[int] | None = None
    max_instructions_per_stage: int = 0
    phv_peak_bits: int = 0
    elements_per_pass: int = 0
    capacity_per_pass: int = 0
    passes_per_packet: int = 0
    frame_bytes: int = 0
    packets_per_s_line_rate: float = 0.0
    elements_per_s_line_rate: float = 0.0
    #: "ports", "pipeline" or "recirculation": what bounds the line-rate figure
    line_rate_bound: str = ""
    packets_per_s_clock: float = 0.0
    elements_per_s_clock: float = 0.0
    latency_cycles: int = 0
    latency_ns: float = 0.0
    recirculation_gbps: float = 0.0
    stateful_area_um2: float | None = None
    stateless_area_um2: float | None = None
    area_used_um2: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate(machine: Machine, program: str, elements_per_packet: int,
             area: AreaCosts | None = None, fmt: str = "fp32") -> Metrics:
    """Metrics for one configuration; a rejected mapping gives mapped=False.

    ``fmt`` is the FPISA programs' element format (SwitchML carries int32).
    """
    area = area or AreaCosts()
    prog = build_program(program, machine, fmt)
    try:
        plan = plan_packet(prog, machine, elements_per_packet)
    except MappingError as e:
        return Metrics(machine.name, program, elements_per_packet, False, prog.fmt, e.reason, e.detail)
    mapping = plan.mapping
    frame_bytes = elements_per_packet * prog.element_bytes + PACKET_HEADER_BYTES + ETHERNET_OVERHEAD_BYTES
    port_packets = machine.line_rate_bps / (frame_bytes * 8)
    # every pass takes one entry slot: one packet per cycle in all
    pipeline_packets = machine.clock_hz / plan.passes
    bounds = {"ports": port_packets, "pipeline": pipeline_packets}
    if plan.passes > 1:
        # each extra pass re-sends the frame through loopback ports
        bounds["recirculation"] = machine.recirculation_gbps * 1e9 / (frame_bytes * 8 * (plan.passes - 1))
    line_rate_bound = min(bounds, key=bounds.get)
    line_packets = bounds[line_rate_bound]
    stateless_um2, stateful_um2 = area.resolve(machine)
    stateful_area = None if stateful_um2 is None else mapping.stateful_alus_used * stateful_um2
    stateless_area = None if stateless_um2 is None else mapping.stateless_alus_used * stateless_um2
    used_area = None if stateful_area is None or stateless_area is None else stateful_area + stateless_area
    latency_cycles = plan.passes * machine.stages
    return Metrics(
        machine=machine.name,
        program=program,
        elements_per_packet=elements_per_packet,
        mapped=True,
        fmt=prog.fmt,
        lanes=mapping.lanes,
        stages_used=mapping.stages_used,
        stateful_alus_used=mapping.stateful_alus_used,
        stateless_alus_used=mapping.stateless_alus_used,
        stateful_layout=mapping.stateful_layout(),
        max_instructions_per_stage=mapping.max_instructions,
        phv_peak_bits=mapping.phv_peak_bits,
        elements_per_pass=plan.elements_per_pass,
        capacity_per_pass=plan.capacity_per_pass,
        passes_per_packet=plan.passes,
        frame_bytes=frame_bytes,
        packets_per_s_line_rate=line_packets,
        elements_per_s_line_rate=line_packets * elements_per_packet,
        line_rate_bound=line_rate_bound,
        packets_per_s_clock=pipeline_packets,
        elements_per_s_clock=pipeline_packets * elements_per_packet,
        latency_cycles=latency_cycles,
        latency_ns=latency_cycles / machine.clock_hz * 1e9,
        recirculation_gbps=line_packets * (plan.passes - 1) * frame_bytes * 8 / 1e9,
        stateful_area_um2=stateful_area,
        stateless_area_um2=stateless_area,
        area_used_um2=used_area,
    )


def machine_alu_area_um2(machine: Machine, area: AreaCosts | None = None) -> float | None:
    """Area of every ALU of the pipe (stateful + stateless), None if unknown."""
    stateless_um2, stateful_um2 = (area or AreaCosts()).resolve(machine)
    if stateless_um2 is None or stateful_um2 is None:
        return None
    return machine.stages * (machine.stateful_alus_per_stage * stateful_um2
                             + machine.stateless_alus_per_stage * stateless_um2)


def compare(machines: list[Machine], programs: list[str], sizes: list[int],
            area: AreaCosts | None = None, fmt: str = "fp32") -> list[Metrics]:
    """Every (machine, program, elements per packet) combination."""
    return [evaluate(m, p, n, area, fmt) for m in machines for p in programs for n in sizes]


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


COLUMNS = ("machine", "program", "elem/pkt", "stages", "SALUs", "ALUs", "elem/pass",
           "passes", "pkt/s line", "elem/s line", "elem/s clock", "latency cyc", "ALU area um2")


def format_table(rows: list[Metrics]) -> str:
    """A plain-text comparison table; rejected rows say why."""
    lines = []
    cells = []
    for r in rows:
        if not r.mapped:
            cells.append((r.machine, r.program, str(r.elements_per_packet), f"rejected: {r.reason}"))
            continue
        cells.append((
            r.machine, r.program, str(r.elements_per_packet), str(r.stages_used), str(r.stateful_alus_used),
            str(r.stateless_alus_used), str(r.elements_per_pass), str(r.passes_per_packet),
            _si(r.packets_per_s_line_rate), _si(r.elements_per_s_line_rate), _si(r.elements_per_s_clock),
            str(r.latency_cycles), "n/a" if r.area_used_um2 is None else f"{r.area_used_um2:,.0f}",
        ))
    widths = [len(c) for c in COLUMNS]
    for row in cells:
        if len(row) == len(COLUMNS):
            widths = [max(w, len(c)) for w, c in zip(widths, row)]
        else:
            widths[:3] = [max(w, len(c)) for w, c in zip(widths[:3], row[:3])]
    lines.append("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)))
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        if len(row) == len(COLUMNS):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row[:3], widths[:3])) + "  " + row[3])
    return "\n".join(lines)
