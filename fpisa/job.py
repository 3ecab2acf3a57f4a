"""What a job is: the mode table and the one validated job description.

Everything in the project that branches on an aggregation mode reads
:data:`MODE_TABLE` (wire modes, float or integer, whether SwitchML's
exponent pass runs first, the P4 program); everything that needs a job's
settings takes a :class:`JobSpec`, which validates each of them once, here,
with the protocol's limits (:mod:`fpisa.protocol`). The switch
(``emulator.pipeline.SwitchConfig``), the worker (``hosts.worker.
WorkerConfig``), the allreduce orchestrator, the Mininet experiment and the
BMv2 bridge all contain a ``JobSpec`` instead of re-declaring its fields.

Strings become :class:`~fpisa.formats.Mode` once, at the edge
(``JobSpec(mode="fpisa")`` parses it); below that, code compares enums.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .formats import Format, Mode, RegisterLayout, Rounding, get_format, get_mode, get_rounding
from .protocol import (
    DEFAULT_ELEMENTS,
    HEADER_BYTES,
    MAX_ELEMENTS,
    MAX_SLOTS,
    MAX_WORKERS,
    WireMode,
    format_code,
    payload_bytes,
    raw_bytes,
)

__all__ = ["ModeInfo", "MODE_TABLE", "SWITCH_MODES", "mode_info", "JobSpec"]


@dataclass(frozen=True)
class ModeInfo:
    """One row of the mode table."""

    mode: Mode
    #: wire modes a job's packets use, its data pass first; () = host-only mode
    wire_modes: tuple[WireMode, ...]
    #: values are float bit patterns all the way (False: int32 fixed point)
    is_float: bool
    #: SwitchML's block-exponent exchange (an int32-max pass) precedes the data
    exponent_pass: bool
    #: the P4 program (p4/<name>.p4) that implements it, if any
    p4_program: str | None
    #: one line for --help and reports
    summary: str

    @property
    def in_switch(self) -> bool:
        return bool(self.wire_modes)

    @property
    def data_wire_mode(self) -> WireMode:
        if not self.wire_modes:
            raise ValueError(f"mode {self.mode.value!r} does not run in the switch")
        return self.wire_modes[0]


MODE_TABLE: dict[Mode, ModeInfo] = {info.mode: info for info in (
    ModeInfo(Mode.FPISA, (WireMode.FPISA,), True, False, "fpisa",
             "FPISA on the proposed extended ALU (the stored mantissa may shift)"),
    ModeInfo(Mode.FPISA_A, (WireMode.FPISA_A,), True, False, "fpisa_a",
             "FPISA-A: what a Tofino can do (only the incoming value moves)"),
    ModeInfo(Mode.SWITCHML, (WireMode.SWITCHML, WireMode.INT_MAX), False, True, "switchml",
             "SwitchML: block exponent exchange, int32 fixed point, integer sum"),
    ModeInfo(Mode.FLOAT32, (), True, False, None, "sequential float32 adds (a host reduction)"),
    ModeInfo(Mode.EXACT, (), True, False, None, "the correctly rounded sum"),
)}

#: the modes a switch runs, as the strings users type (CLI choices)
SWITCH_MODES: tuple[str, ...] = tuple(m.value for m, info in MODE_TABLE.items() if info.in_switch)


def mode_info(mode: str | Mode) -> ModeInfo:
    """The table row of ``mode`` (a ValueError names the known modes)."""
    return MODE_TABLE[get_mode(mode)]


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass(frozen=True)
class JobSpec:
    """One aggregation job, as every participant must agree on it.

    ``mode`` may be given as a string; it is parsed into a :class:`Mode`
    here. Every limit is checked once, in ``__post_init__``.
    """

    mode: Mode = Mode.FPISA
    fmt: str = "fp32"
    num_workers: int = 4
    #: elements per packet (one switch slot's width; the header's num_elements)
    packet_elements: int = DEFAULT_ELEMENTS
    #: switch slots per shadow set = packets a worker keeps outstanding
    window: int = 256
    #: width W of the switch's mantissa register (FPISA modes)
    register_bits: int = 32
    #: results carry the raw registers and hosts normalize them with ``rounding``
    raw_registers: bool = False
    #: host-side normalization with raw registers; without them the result is
    #: the switch's read-out, which truncates (rz), as a switch's shifters do
    rounding: str = "rz"
    #: the header's job number
    job: int = 0
    #: wire modes the job uses besides its mode's (the query modes of
    #: docs/query.md: int32 COUNT, float min/max, the group table's key claim)
    extra_wire_modes: tuple = ()

    def __post_init__(self) -> None:
        def bad(msg: str):
            raise ValueError(f"job: {msg}")

        info = mode_info(self.mode)
        if not info.in_switch:
            bad(f"mode {info.mode.value!r} does not run in a switch; expected one of {SWITCH_MODES}")
        object.__setattr__(self, "mode", info.mode)
        object.__setattr__(self, "fmt", get_format(self.fmt).name)
        object.__setattr__(self, "rounding", get_rounding(self.rounding).value)
        if not _is_int(self.num_workers) or not 1 <= self.num_workers <= MAX_WORKERS:
            bad(f"workers must be 1..{MAX_WORKERS} (one bit each in the switch's 32-bit worker "
                f"bitmap), got {self.num_workers!r}")
        if not _is_int(self.packet_elements) or not 1 <= self.packet_elements <= MAX_ELEMENTS:
            bad(f"elements per packet must be 1..{MAX_ELEMENTS} (an 8-bit header field), "
                f"got {self.packet_elements!r}")
        if not _is_int(self.window) or not 1 <= self.window <= MAX_SLOTS:
            bad(f"window (slots per shadow set) must be 1..{MAX_SLOTS}, got {self.window!r}")
        if not _is_int(self.job) or not 0 <= self.job <= 255:
            bad(f"job must be 0..255, got {self.job!r}")
        if not isinstance(self.raw_registers, bool):
            bad(f"raw_registers must be a bool, got {self.raw_registers!r}")
        RegisterLayout.of(self.fmt, self.register_bits)  # a ValueError for a bad width
        if self.raw_registers and not info.is_float:
            bad("raw registers exist only in the FPISA modes")
        if self.rounding != Rounding.TOWARD_ZERO.value and not self.raw_registers:
            bad(f"rounding {self.rounding!r} needs raw registers (the switch's read-out "
                "truncates; hosts round only the raw registers)")
        try:
            extra = tuple(dict.fromkeys(WireMode(int(m)) for m in self.extra_wire_modes))
        except (TypeError, ValueError):
            bad(f"extra_wire_modes must be wire modes {[m.name for m in WireMode]}, "
                f"got {self.extra_wire_modes!r}")
        object.__setattr__(self, "extra_wire_modes",
                           tuple(m for m in extra if m not in info.wire_modes))
        for name in ("num_workers", "packet_elements", "window", "register_bits", "job"):
            object.__setattr__(self, name, int(getattr(self, name)))

    # -- derived ------------------------------------------------------------------

    @property
    def info(self) -> ModeInfo:
        return MODE_TABLE[self.mode]

    @property
    def format(self) -> Format:
        return get_format(self.fmt)

    @property
    def fmt_code(self) -> int:
        return format_code(self.fmt)

    @property
    def data_wire_mode(self) -> WireMode:
        return self.info.data_wire_mode

    @property
    def wire_modes(self) -> tuple[WireMode, ...]:
        """The mode's wire modes (its data pass first), then the extra ones."""
        return self.info.wire_modes + self.extra_wire_modes

    @property
    def element_bytes(self) -> int:
        """Bytes of one element of the data pass on the wire."""
        return payload_bytes(self.data_wire_mode, self.fmt_code, 1)

    @property
    def data_packet_bytes(self) -> int:
        """A data packet's UDP payload: header + elements."""
        return HEADER_BYTES + self.packet_elements * self.element_bytes

    @property
    def max_data_packet_bytes(self) -> int:
        """The longest DATA packet over all the job's wire modes."""
        return HEADER_BYTES + self.packet_elements * max(
            payload_bytes(m, self.fmt_code, 1) for m in self.wire_modes)

    @property
    def max_result_bytes(self) -> int:
        """The longest result (with raw registers where the mode has them)."""
        extra = raw_bytes(self.packet_elements) if self.info.is_float else 0
        return max(self.data_packet_bytes + extra, self.max_data_packet_bytes)

    def pass_packets(self, elements: int) -> tuple[int, int]:
        """(packets of the exponent exchange, packets of the data pass) for an
        allreduce of ``elements``; packet ids run through both in this order."""
        if not _is_int(elements) or elements < 1:
            raise ValueError(f"elements must be an int >= 1, got {elements!r}")
        data = -(-elements // self.packet_elements)
        # one exponent per data packet (block), packet_elements exponents per packet
        exchange = -(-data // self.packet_elements) if self.info.exponent_pass else 0
        return exchange, data

    def packets(self, elements: int) -> int:
        """Packets one worker sends (once each) for an allreduce of ``elements``."""
        return sum(self.pass_packets(elements))

    # -- (de)serialization ------------------------------------------------------------

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mode"] = self.mode.value
        if self.extra_wire_modes:  # omitted when empty: allreduce jobs' reports stay as they were
            d["extra_wire_modes"] = [int(m) for m in self.extra_wire_modes]
        else:
            del d["extra_wire_modes"]
        return d

    @classmethod
    def from_dict(cls, values: dict) -> "JobSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"job: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes) -> "JobSpec":
        return dataclasses.replace(self, **changes)
