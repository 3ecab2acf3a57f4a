"""Number formats, register layouts, aggregation modes and rounding modes.

Every numeric choice of the project is a named, validated option here (the
CPFloat idea): an input format, the width of the switch's mantissa register
(and so its headroom), the aggregation mode and the read-out rounding.
See docs/numerics.md for the semantics each choice selects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Format",
    "FORMATS",
    "RegisterLayout",
    "Mode",
    "Rounding",
    "get_format",
    "get_mode",
    "get_rounding",
]


@dataclass(frozen=True)
class Format:
    """An IEEE-754-style binary interchange format."""

    name: str
    exponent_bits: int
    fraction_bits: int
    #: numpy dtype holding the raw bit pattern
    bits_dtype: type
    #: numpy float dtype with the same layout, or None (bf16 has none)
    float_dtype: type | None

    @property
    def bias(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    @property
    def precision(self) -> int:
        """p = fraction bits + the implied one."""
        return self.fraction_bits + 1

    @property
    def storage_bits(self) -> int:
        return 1 + self.exponent_bits + self.fraction_bits

    @property
    def storage_bytes(self) -> int:
        return self.storage_bits // 8

    @property
    def exponent_all_ones(self) -> int:
        return (1 << self.exponent_bits) - 1


FP32 = Format("fp32", 8, 23, np.uint32, np.float32)
FP16 = Format("fp16", 5, 10, np.uint16, np.float16)
BF16 = Format("bf16", 8, 7, np.uint16, None)

FORMATS: dict[str, Format] = {f.name: f for f in (FP32, FP16, BF16)}


def _choose(kind: str, options: dict, key):
    """``options[key]``, or a ValueError naming the known keys."""
    try:
        return options[key]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {kind} {key!r}; expected one of {list(options)}") from None


def get_format(fmt: str | Format) -> Format:
    return fmt if isinstance(fmt, Format) else _choose("format", FORMATS, fmt)


class Mode(str, enum.Enum):
    """How the K contributions to one element are summed."""

    #: the paper's proposed extended ALU: the stored mantissa may be shifted
    FPISA = "fpisa"
    #: what a Tofino-class switch can do: only the incoming value moves
    FPISA_A = "fpisa-a"
    #: SwitchML: per-block exponent, int32 fixed point, integer sum
    SWITCHML = "switchml"
    #: sequential float32 adds in arrival order (a host reduction)
    FLOAT32 = "float32"
    #: the correctly rounded sum, rounded once to the output format
    EXACT = "exact"


def get_mode(mode: str | Mode) -> Mode:
    return mode if isinstance(mode, Mode) else _choose("mode", {m.value: m for m in Mode}, mode)


class Rounding(str, enum.Enum):
    """Rounding of the read-out normalization (alignment always truncates)."""

    #: round toward zero: what a switch's shifters do (default)
    TOWARD_ZERO = "rz"
    #: round to nearest, ties to even: needs the raw registers on the host
    NEAREST_EVEN = "rne"


def get_rounding(rounding: str | Rounding) -> Rounding:
    if isinstance(rounding, Rounding):
        return rounding
    return _choose("rounding", {r.value: r for r in Rounding}, rounding)


#: widest mantissa register the kernels support (int64 arithmetic)
MAX_REGISTER_BITS = 64
#: at least one headroom bit, else two values of the largest magnitude overflow
MIN_HEADROOM_BITS = 1


@dataclass(frozen=True)
class RegisterLayout:
    """The switch's registers for one element: exponent + W-bit mantissa.

    headroom_bits h = W - 1 - p: up to 2^h values of the largest magnitude
    can be summed without overflowing the two's-complement register.
    """

    fmt: Format
    register_bits: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.register_bits, (int, np.integer)) or isinstance(
            self.register_bits, bool
        ):
            raise ValueError(f"register_bits must be an int, got {self.register_bits!r}")
        lowest = self.fmt.precision + 1 + MIN_HEADROOM_BITS
        if not lowest <= self.register_bits <= MAX_REGISTER_BITS:
            raise ValueError(
                f"register_bits={self.register_bits} cannot hold {self.fmt.name}: "
                f"a {self.fmt.precision}-bit significand, a sign bit and at least "
                f"{MIN_HEADROOM_BITS} headroom bit need W >= {lowest}; the kernels "
                f"support W <= {MAX_REGISTER_BITS}"
            )

    @classmethod
    def of(cls, fmt: str | Format = "fp32", register_bits: int = 32) -> "RegisterLayout":
        return cls(get_format(fmt), register_bits)

    @property
    def headroom_bits(self) -> int:
        return self.register_bits - 1 - self.fmt.precision

    @property
    def register_max(self) -> int:
        return (1 << (self.register_bits - 1)) - 1

    @property
    def register_min(self) -> int:
        return -(1 << (self.register_bits - 1))
