"""fpisa: in-switch floating-point aggregation (FPISA, NSDI'22), emulated.

The numerics core: FPISA's exponent register + signed integer mantissa with
delayed normalization (modes ``fpisa`` and ``fpisa-a``), SwitchML's int32
fixed point (``switchml``), and the baselines ``float32`` and ``exact``.
docs/numerics.md is the specification; every implementation in the project
(this package's Numba kernels, the switch emulator, the P4 programs, the
hardware model) agrees with it bit for bit.
"""

from .aggregate import AggregateResult, aggregate, aggregate_detailed
from .codec import decode, encode, from_bits, normalize, renormalize, to_bits
from .errors import error_report, relative_error, ulp_distance
from .formats import FORMATS, Format, Mode, RegisterLayout, Rounding
from .job import MODE_TABLE, JobSpec, ModeInfo, mode_info
from .registers import (
    ELEMENT_NAN,
    ELEMENT_NEG_INF,
    ELEMENT_OVERFLOW,
    ELEMENT_OVERWRITE,
    ELEMENT_POS_INF,
    SlotRegisters,
)

__version__ = "0.1.0"

__all__ = [
    "aggregate",
    "aggregate_detailed",
    "AggregateResult",
    "encode",
    "decode",
    "normalize",
    "renormalize",
    "to_bits",
    "from_bits",
    "error_report",
    "ulp_distance",
    "relative_error",
    "Format",
    "FORMATS",
    "Mode",
    "Rounding",
    "RegisterLayout",
    "JobSpec",
    "MODE_TABLE",
    "ModeInfo",
    "mode_info",
    "SlotRegisters",
    "ELEMENT_POS_INF",
    "ELEMENT_NEG_INF",
    "ELEMENT_NAN",
    "ELEMENT_OVERFLOW",
    "ELEMENT_OVERWRITE",
]
