"""Pure-Python reference implementation (oracle) of docs/numerics.md.

Written directly from the spec, independently of the Numba kernels, so the
two check each other in tests/fpisa. Everything works on one element at a
time with Python integers: the FPISA arithmetic uses no float operations at
all; the exact and float32 baselines use exact rationals (Fraction) rounded
once; SwitchML uses its double-precision formulas, each double operation
computed exactly with Fraction and then correctly rounded, which is what
IEEE double arithmetic does.

It is slow (microseconds per element operation) and meant for tests only.
Section numbers below refer to docs/numerics.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from .formats import Format, Mode, RegisterLayout, Rounding, get_format, get_mode, get_rounding

ELEMENT_POS_INF = 1
ELEMENT_NEG_INF = 2
ELEMENT_NAN = 4
ELEMENT_OVERFLOW = 8
ELEMENT_OVERWRITE = 16
ELEMENT_SPECIAL = ELEMENT_POS_INF | ELEMENT_NEG_INF | ELEMENT_NAN

INT32_MAX = 2**31 - 1
#: block exponent of an all-zero SwitchML block: below every frexp exponent
#: of an fp32/fp16/bf16 value (the smallest, fp32's 2^-149, has frexp -148)
EMPTY_BLOCK_EXPONENT = -150


# ---------------------------------------------------------------- bit fields
def fields(bits: int, fmt: Format) -> tuple[int, int, int]:
    """(sign, biased exponent field, fraction field) of an IEEE bit pattern."""
    m = fmt.fraction_bits
    sign = (bits >> (fmt.storage_bits - 1)) & 1
    exponent = (bits >> m) & fmt.exponent_all_ones
    fraction = bits & ((1 << m) - 1)
    return sign, exponent, fraction


def pack(sign: int, exponent: int, fraction: int, fmt: Format) -> int:
    return (sign << (fmt.storage_bits - 1)) | (exponent << fmt.fraction_bits) | fraction


def infinity(sign: int, fmt: Format) -> int:
    return pack(sign, fmt.exponent_all_ones, 0, fmt)


def quiet_nan(fmt: Format) -> int:
    """The one NaN every mode returns: positive, quiet bit only."""
    return pack(0, fmt.exponent_all_ones, 1 << (fmt.fraction_bits - 1), fmt)


def is_nan(bits: int, fmt: Format) -> bool:
    _, e, f = fields(bits, fmt)
    return e == fmt.exponent_all_ones and f != 0


def value_of(bits: int, fmt: Format) -> Fraction:
    """Exact value of a finite bit pattern."""
    e, s, special = extract(bits, fmt)
    assert not special, "value_of needs a finite value"
    return Fraction(s) * Fraction(2) ** (e - fmt.bias - fmt.fraction_bits)


# --------------------------------------------------------------- 1. extract
def extract(bits: int, fmt: str | Format) -> tuple[int, int, int]:
    """(exponent, signed mantissa S, special flags) of one incoming element."""
    fmt = get_format(fmt)
    sign, e, f = fields(bits, fmt)
    if e == fmt.exponent_all_ones:
        if f:
            return 0, 0, ELEMENT_NAN
        return 0, 0, ELEMENT_NEG_INF if sign else ELEMENT_POS_INF
    if e == 0:  # zero or subnormal: no implied one, exponent of the subnormals
        magnitude, e = f, 1
    else:
        magnitude = (1 << fmt.fraction_bits) + f
    return e, -magnitude if sign else magnitude, 0


# -------------------------------------------------------- registers (2, 3)
@dataclass(frozen=True)
class ElementRegisters:
    """The switch's registers for one element (one slot lane)."""

    exponent: int
    mantissa: int
    flags: int = 0
    overwrites: int = 0


def wrap(x: int, register_bits: int) -> int:
    """x reduced to a W-bit two's-complement value (what an adder does)."""
    x &= (1 << register_bits) - 1
    return x - (1 << register_bits) if x >> (register_bits - 1) else x


def accumulate_fpisa(
    state: ElementRegisters | None, bits: int, layout: RegisterLayout
) -> ElementRegisters:
    """Section 2. ``state=None`` is the slot's first arrival (implicit reset)."""
    e, s, special = extract(bits, layout.fmt)
    if state is None:
        # Decision 1: a special arriving first still resets the slot; E=1, A=0
        # is the same as empty (a zero's exponent is 1).
        state = ElementRegisters(exponent=1, mantissa=0)
        if not special:
            return ElementRegisters(exponent=e, mantissa=s)
    if special:
        return ElementRegisters(state.exponent, state.mantissa, state.flags | special)
    E, A = state.exponent, state.mantissa
    # Python's >> on ints is the arithmetic (flooring) shift; for |A| < 2^(W-1)
    # any distance >= W-1 already gives 0 or -1, the clamped hardware result.
    if e > E:
        total = (A >> (e - E)) + s
        E = e
    else:
        total = A + (s >> (E - e))
    A = wrap(total, layout.register_bits)
    flags = state.flags | (ELEMENT_OVERFLOW if A != total else 0)
    return ElementRegisters(E, A, flags, state.overwrites)


def saturate(x: int, layout: RegisterLayout) -> int:
    return min(max(x, layout.register_min), layout.register_max)


def accumulate_fpisa_a(
    state: ElementRegisters | None, bits: int, layout: RegisterLayout
) -> ElementRegisters:
    """Section 3. ``state=None`` is the slot's first arrival (implicit reset)."""
    e, s, special = extract(bits, layout.fmt)
    if state is None:
        state = ElementRegisters(exponent=0, mantissa=0)  # E = 0: no value yet
    flags, overwrites = state.flags | special, state.overwrites
    E, A = state.exponent, state.mantissa
    no_implied_one = abs(s) < (1 << layout.fmt.fraction_bits)
    if special or no_implied_one:  # specials, zeros and flushed subnormals
        return ElementRegisters(E, A, flags, overwrites)
    h = layout.headroom_bits
    if E == 0:  # first nonzero input
        return ElementRegisters(e, s, flags, overwrites)
    if e - E > h:  # the stored value cannot move: it is lost
        return ElementRegisters(e, s, flags | ELEMENT_OVERWRITE, overwrites + 1)
    if e <= E:
        total = A + (s >> (E - e))
    else:  # 0 < e - E <= h: |S| < 2^p, so S << h still fits W bits
        total = A + (s << (e - E))
    A = saturate(total, layout)
    if A != total:
        flags |= ELEMENT_OVERFLOW
    return ElementRegisters(E, A, flags, overwrites)


# -------------------------------------------------------------- 4. read out
def special_result(flags: int, fmt: Format) -> int | None:
    """Bits of the special result a slot's flags force, or None."""
    both_inf = ELEMENT_POS_INF | ELEMENT_NEG_INF
    if flags & ELEMENT_NAN or flags & both_inf == both_inf:
        return quiet_nan(fmt)
    if flags & ELEMENT_POS_INF:
        return infinity(0, fmt)
    if flags & ELEMENT_NEG_INF:
        return infinity(1, fmt)
    return None


def shift_right(magnitude: int, distance: int, rounding: Rounding) -> int:
    """magnitude / 2^distance rounded to an integer (distance may be <= 0)."""
    if distance <= 0:
        return magnitude << -distance
    quotient = magnitude >> distance
    if rounding is Rounding.NEAREST_EVEN:
        remainder = magnitude - (quotient << distance)
        half = 1 << (distance - 1)
        if remainder > half or (remainder == half and quotient & 1):
            quotient += 1
    return quotient


def normalize(
    exponent: int,
    mantissa: int,
    flags: int = 0,
    fmt: str | Format = "fp32",
    rounding: str | Rounding = "rz",
) -> int:
    """Section 4: registers (E, A) and element flags -> IEEE bits.

    The value is |A| * 2^(E - bias - m), rounded once.
    """
    fmt, rounding = get_format(fmt), get_rounding(rounding)
    special = special_result(flags, fmt)
    if special is not None:
        return special
    if mantissa == 0:
        return 0
    m = fmt.fraction_bits
    sign, magnitude = int(mantissa < 0), abs(mantissa)
    leading_one = magnitude.bit_length() - 1
    biased = exponent + (leading_one - m)
    if biased >= fmt.exponent_all_ones:
        return infinity(sign, fmt)
    if biased >= 1:  # normal: the leading one lands on bit m
        significand = shift_right(magnitude, leading_one - m, rounding)
        # a round-up carry to 2^(m+1) bumps the exponent; adding the
        # significand to (biased - 1) << m does that by itself
        bits = ((biased - 1) << m) + significand
    else:  # subnormal: shift right by 1 - E' more, exponent field 0
        # one shift of (leading_one - m) + (1 - biased) = 1 - E: single rounding;
        # a round-up to 2^m is the smallest normal, again by itself
        bits = shift_right(magnitude, 1 - exponent, rounding)
    if bits >> m >= fmt.exponent_all_ones:
        return infinity(sign, fmt)
    return (sign << (fmt.storage_bits - 1)) | bits


# ------------------------------------- 6. baselines: exact rounding, float32
def round_to_format(value: Fraction, fmt: Format, zero_sign: int = 0) -> int:
    """A rational rounded once to nearest, ties to even; overflow gives Inf."""
    if value == 0:
        return pack(zero_sign, 0, 0, fmt)
    m, sign, magnitude = fmt.fraction_bits, int(value < 0), abs(value)
    # k = floor(log2(magnitude))
    k = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** k > magnitude:
        k -= 1
    quantum = max(k, 1 - fmt.bias) - m  # exponent of the last significand bit
    significand = round(magnitude / Fraction(2) ** quantum)  # ties to even
    if significand == 0:
        return pack(sign, 0, 0, fmt)
    if significand < 1 << m:  # subnormal
        return pack(sign, 0, significand, fmt)
    if significand == 1 << (m + 1):  # rounding carried into the next binade
        significand, quantum = significand >> 1, quantum + 1
    biased = quantum + m + fmt.bias
    if biased >= fmt.exponent_all_ones:
        return infinity(sign, fmt)
    return pack(sign, biased, significand - (1 << m), fmt)


FP32 = get_format("fp32")


def float32_add(a: int, b: int) -> int:
    """IEEE binary32 a + b (round to nearest even) on bit patterns."""
    special = extract(a, FP32)[2] | extract(b, FP32)[2]
    if special:  # Inf + -Inf and NaN give NaN, as in the read-out rule
        return special_result(special, FP32)
    value = value_of(a, FP32) + value_of(b, FP32)
    if value == 0:
        # the sum of two zeros keeps their common sign; x + (-x) is +0
        both_negative = fields(a, FP32)[0] & fields(b, FP32)[0]
        return pack(both_negative if value_of(a, FP32) == 0 else 0, 0, 0, FP32)
    return round_to_format(value, FP32)


def widen_to_float32(bits: int, fmt: Format) -> int:
    """fp16/bf16 bits -> the fp32 bits of the same value (exact)."""
    sign, _, _ = fields(bits, fmt)
    special = extract(bits, fmt)[2]
    if special:
        return special_result(special, FP32)
    return round_to_format(value_of(bits, fmt), FP32, zero_sign=sign)


def narrow_from_float32(bits: int, fmt: Format) -> int:
    """fp32 bits -> fmt, rounded to nearest even (NaN canonical)."""
    sign, _, _ = fields(bits, FP32)
    special = extract(bits, FP32)[2]
    if special:
        return special_result(special, fmt)
    return round_to_format(value_of(bits, FP32), fmt, zero_sign=sign)


# ------------------------------------------------------ 6. baselines: switchml
def block_exponent(block_bits: list[int], fmt: Format) -> int:
    """frexp exponent of max |x| over a worker's block: 2^e > max|x| >= 2^(e-1)."""
    largest = Fraction(0)
    for bits in block_bits:
        if extract(bits, fmt)[2]:
            raise ValueError("switchml cannot carry Inf/NaN in int32 fixed point")
        largest = max(largest, abs(value_of(bits, fmt)))
    if largest == 0:
        return EMPTY_BLOCK_EXPONENT
    e = largest.numerator.bit_length() - largest.denominator.bit_length()
    while Fraction(2) ** e <= largest:
        e += 1
    while Fraction(2) ** (e - 1) > largest:
        e -= 1
    return e


def switchml_scale(num_workers: int, max_exponent: int) -> float:
    """f = INT32_MAX / (K * 2^e_max), correctly rounded to a double."""
    return float(Fraction(INT32_MAX, num_workers) / Fraction(2) ** max_exponent)


def quantize(bits: int, fmt: Format, scale: float) -> int:
    """q = round-half-even(fl64(x * f))."""
    product = float(value_of(bits, fmt) * Fraction(scale))  # one double rounding
    return round(product)


def dequantize(int_sum: int, fmt: Format, scale: float) -> int:
    """y = fl64(sum / f), then rounded to the format (nearest even)."""
    y = float(Fraction(int_sum) / Fraction(scale))
    return round_to_format(Fraction(y), fmt)


# ------------------------------------------------- aggregate (section 5: order)
@dataclass
class OracleResult:
    result: list[int]
    exponent_register: list[int] = field(default_factory=list)
    mantissa_register: list[int] = field(default_factory=list)
    element_flags: list[int] = field(default_factory=list)
    overwrites: list[int] = field(default_factory=list)


def arrival_orders(order, num_workers: int, num_elements: int) -> list[list[int]]:
    """Per element, the workers in arrival order."""
    if order is None:
        return [list(range(num_workers))] * num_elements
    rows = [list(map(int, row)) for row in order] if _is_2d(order) else None
    if rows is None:
        return [list(map(int, order))] * num_elements
    return rows


def _is_2d(order) -> bool:
    first = next(iter(order), None)
    return first is not None and hasattr(first, "__len__")


def aggregate(
    values_bits: list[list[int]],
    mode: str | Mode,
    fmt: str | Format = "fp32",
    order=None,
    rounding: str | Rounding = "rz",
    register_bits: int = 32,
    block_size: int = 64,
) -> OracleResult:
    """Sum K workers' bit patterns (values_bits[k][j]) element-wise."""
    mode, fmt, rounding = get_mode(mode), get_format(fmt), get_rounding(rounding)
    num_workers, num_elements = len(values_bits), len(values_bits[0])
    orders = arrival_orders(order, num_workers, num_elements)
    out = OracleResult([])
    if mode is Mode.SWITCHML:
        out.result = _aggregate_switchml(values_bits, fmt, block_size)
        return out
    layout = RegisterLayout(fmt, register_bits)
    for j in range(num_elements):
        arrivals = [values_bits[k][j] for k in orders[j]]
        if mode in (Mode.FPISA, Mode.FPISA_A):
            step = accumulate_fpisa if mode is Mode.FPISA else accumulate_fpisa_a
            state = None
            for bits in arrivals:
                state = step(state, bits, layout)
            out.result.append(
                normalize(state.exponent, state.mantissa, state.flags, fmt, rounding)
            )
            out.exponent_register.append(state.exponent)
            out.mantissa_register.append(state.mantissa)
            out.element_flags.append(state.flags)
            out.overwrites.append(state.overwrites)
        elif mode is Mode.FLOAT32:
            total = widen_to_float32(arrivals[0], fmt)
            for bits in arrivals[1:]:
                total = float32_add(total, widen_to_float32(bits, fmt))
            out.result.append(narrow_from_float32(total, fmt))
        else:  # exact
            out.result.append(exact_sum(arrivals, fmt))
    return out


def exact_sum(arrivals: list[int], fmt: Format) -> int:
    """The exact sum rounded once (nearest even); an exact zero is +0."""
    flags, total = 0, Fraction(0)
    for bits in arrivals:
        special = extract(bits, fmt)[2]
        flags |= special
        if not special:
            total += value_of(bits, fmt)
    special = special_result(flags, fmt)
    return special if special is not None else round_to_format(total, fmt)


def _aggregate_switchml(values_bits, fmt: Format, block_size: int) -> list[int]:
    num_workers, num_elements = len(values_bits), len(values_bits[0])
    result = []
    for start in range(0, num_elements, block_size):
        stop = min(start + block_size, num_elements)
        max_exponent = max(
            block_exponent(worker[start:stop], fmt) for worker in values_bits
        )
        scale = switchml_scale(num_workers, max_exponent)
        for j in range(start, stop):
            int_sum = sum(quantize(worker[j], fmt, scale) for worker in values_bits)
            assert -(2**31) <= int_sum <= INT32_MAX, "int32 sum overflowed"
            result.append(dequantize(int_sum, fmt, scale))
    return result
