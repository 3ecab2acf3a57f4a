"""The switch's register arrays: one row per (slot, shadow set).

A software switch (the emulator) keeps its aggregation state in a
:class:`SlotRegisters` and calls ``accumulate`` once per arriving packet;
underneath run the same Numba element kernels as :func:`fpisa.aggregate`,
so "the switch aggregated it" and "the numerics core says" cannot drift
apart. ``accumulate(first=True)`` is the first arrival's write, which is
the slot's implicit reset (SwitchML's trick: no clear is ever needed).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import _kernels as K
from . import _table_kernels as T
from .formats import RegisterLayout, Rounding, get_format, get_rounding
from .protocol import FLAG_OVERFLOW, FLAG_OVERWRITE, FLAG_SPECIAL, WireMode

__all__ = [
    "SlotRegisters",
    "REGISTER_MODES",
    "ELEMENT_POS_INF",
    "ELEMENT_NEG_INF",
    "ELEMENT_NAN",
    "ELEMENT_OVERFLOW",
    "ELEMENT_OVERWRITE",
]

ELEMENT_POS_INF = K.POS_INF
ELEMENT_NEG_INF = K.NEG_INF
ELEMENT_NAN = K.NAN
ELEMENT_OVERFLOW = K.OVERFLOW
ELEMENT_OVERWRITE = K.OVERWRITE

#: one register kernel per wire mode: "switchml" sums int32 (wrapping like the
#: hardware); "int-max" is SwitchML's block-exponent exchange; "float-min",
#: "float-max" and "key-claim" are the query modes (fpisa/_table_kernels.py)
REGISTER_MODES = tuple(m.register_mode for m in WireMode)
_WIRE_MODE_OF = {m.register_mode: m for m in WireMode}


class SlotRegisters:
    """Register arrays for ``num_rows`` slots of ``num_elements`` elements."""

    def __init__(self, mode: WireMode | str, num_rows: int, num_elements: int, fmt="fp32",
                 register_bits: int = 32):
        """``mode``: a :class:`~fpisa.protocol.WireMode` or its register name
        (one of :data:`REGISTER_MODES`)."""
        if not isinstance(mode, WireMode):
            if mode not in _WIRE_MODE_OF:
                raise ValueError(f"unknown register mode {mode!r}; expected one of {REGISTER_MODES}")
            mode = _WIRE_MODE_OF[mode]
        if num_rows < 1 or num_elements < 1:
            raise ValueError(f"need >= 1 row and element, got {num_rows} x {num_elements}")
        self.wire_mode = mode
        #: the register kernel's name (REGISTER_MODES)
        self.mode = mode.register_mode
        self.fmt = get_format(fmt)
        self.layout = RegisterLayout(self.fmt, register_bits)
        self.num_rows = num_rows
        self.num_elements = num_elements
        shape = (num_rows, num_elements)
        # int32 registers where every value fits (FPISA with W <= 32, SwitchML's
        # int32 sum and exponent max): the row kernels run twice as fast on
        # them as on int64 (measured: 0.73 vs 1.56 ns per element); the float
        # min/max and key-claim rows hold unsigned 32-bit patterns in int64
        narrow = (mode.is_float and register_bits <= 32) or mode in (WireMode.SWITCHML, WireMode.INT_MAX)
        dtype = np.int32 if narrow else np.int64
        self.exponent_register = np.zeros(shape, dtype)
        self.mantissa_register = np.zeros(shape, dtype)  # int32 values in int modes
        self.element_flags = np.zeros(shape, np.uint8)
        self.overwrites = np.zeros(shape, np.int64)
        self._eb = self.fmt.exponent_bits
        self._m = self.fmt.fraction_bits
        self._w = self.layout.register_bits

    @property
    def is_float(self) -> bool:
        """FPISA registers (normalized at read-out)."""
        return self.wire_mode.is_float

    @property
    def takes_bits(self) -> bool:
        """Packets carry the format's bit patterns (FPISA modes, float min/max)."""
        return self.wire_mode.float_payload

    def _check(self, row: int, values: np.ndarray) -> np.ndarray:
        if not 0 <= row < self.num_rows:
            raise ValueError(f"row {row} outside 0..{self.num_rows - 1}")
        if values.shape != (self.num_elements,):
            raise ValueError(f"{values.shape} values for {self.num_elements} elements")
        # never convert values: a float array cast to bit patterns (or fp16 bits
        # widened into fp32 registers) would be silently wrong data
        if self.takes_bits:
            if values.dtype.kind != "u" or values.dtype.itemsize != self.fmt.storage_bytes:
                raise ValueError(
                    f"{self.fmt.name} registers take {self.fmt.storage_bits}-bit unsigned bit "
                    f"patterns, got dtype {values.dtype}")
            return np.ascontiguousarray(values, dtype=self.fmt.bits_dtype)
        if values.dtype.kind != "i" or values.dtype.itemsize != 4:
            raise ValueError(f"{self.mode} registers take int32 values, got dtype {values.dtype}")
        return np.ascontiguousarray(values, dtype=np.int32)

    def accumulate(self, row: int, values, first: bool) -> None:
        """Fold one packet's values into ``row``; ``first`` resets it first."""
        values = self._check(row, np.asarray(values))
        E = self.exponent_register[row]
        A = self.mantissa_register[row]
        mode = self.wire_mode
        if mode is WireMode.FPISA:
            K.accumulate_row_fpisa(E, A, self.element_flags[row], values, first,
                                   self._eb, self._m, self._w)
        elif mode is WireMode.FPISA_A:
            K.accumulate_row_fpisa_a(E, A, self.element_flags[row], self.overwrites[row], values,
                                     first, self._eb, self._m, self._w)
        elif mode is WireMode.SWITCHML:
            K.accumulate_row_int_sum(A, values, first)
        elif mode is WireMode.INT_MAX:
            K.accumulate_row_int_max(A, values, first)
        elif mode is WireMode.FLOAT_MIN:
            T.accumulate_row_float_min(A, values, first, self.fmt.storage_bits)
        elif mode is WireMode.FLOAT_MAX:
            T.accumulate_row_float_max(A, values, first, self.fmt.storage_bits)
        else:
            T.accumulate_row_key_claim(A, values, first)

    def read(self, row: int, rounding: str | Rounding = "rz") -> np.ndarray:
        """The row's result: normalized bits (FPISA modes), the stored bit
        patterns (float min/max) or int32."""
        if self.takes_bits and not self.is_float:
            return self.mantissa_register[row].astype(self.fmt.bits_dtype)
        if not self.is_float:
            return self.mantissa_register[row].astype(np.int32)
        nearest = get_rounding(rounding) is Rounding.NEAREST_EVEN
        out = np.empty(self.num_elements, self.fmt.bits_dtype)
        # the read-out on int64 copies, whatever the storage: the same code
        # and the same bits for every register width
        K.normalize_array(self.exponent_register[row].astype(np.int64),
                          self.mantissa_register[row].astype(np.int64),
                          self.element_flags[row], self._eb, self._m, nearest, out)
        return out

    def raw(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(mantissa int64, exponent uint16) registers before normalization."""
        return (self.mantissa_register[row].astype(np.int64),
                self.exponent_register[row].astype(np.uint16))

    def row_flags(self, row: int) -> int:
        """Protocol FLAG_* bits summarizing the row's element flags."""
        return int(protocol_flags(int(np.bitwise_or.reduce(self.element_flags[row]))))


@njit(cache=True, nogil=True)
def protocol_flags(element_flags):
    """A result's protocol FLAG_* bits from the OR of its elements' flags
    (the switch's fast path calls this too)."""
    out = 0
    if element_flags & K.OVERFLOW:
        out |= FLAG_OVERFLOW
    if element_flags & K.OVERWRITE:
        out |= FLAG_OVERWRITE
    if element_flags & K.SPECIALS:
        out |= FLAG_SPECIAL
    return out
