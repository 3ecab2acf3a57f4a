"""Generate the switch conformance vectors (tests/conformance/vectors/*.json).

A vector is data, STF-style: a job (mode, workers and their addresses, pool),
then steps "this worker (address) sends these UDP payload bytes" with the
packets the switch must send for it ("to this address, these bytes"). The
runner (runner.py) plays them against the emulator's pipeline and against
BMv2; both must produce exactly the expected bytes.

Float vectors exist per element format (fp32, fp16, bf16), each for the
P4 build of that format (p4.program_for: fpisa, fpisa_fp16, ...); the fp32
value sets are the original ones (their files must not change), the fp16 and
bf16 ones are built from the format's fields (format_values) to cover the
same cases within the format's range.

Expected results come from the numerics core (fpisa.aggregate_detailed for
FPISA/FPISA-A; plain int32 arithmetic for SwitchML, checked against
fpisa.aggregate(mode="switchml") through fpisa.switchml's quantizer), never
from the emulator, so the vectors test it. The slot protocol (bitmaps,
duplicates, retransmission, shadow sets) is modelled here in a few lines
from anchors-switchml.md plus the round id of docs/protocol.md (a packet id
per round: older ids are stale, newer ones start a new round).

Run: python tests/conformance/generate_vectors.py   (--check: exit 1 if stale)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import fpisa  # noqa: E402
from fpisa import switchml as sml  # noqa: E402
from fpisa.formats import Format, get_format  # noqa: E402
from fpisa.job import mode_info  # noqa: E402
from fpisa.protocol import (  # noqa: E402
    FLAG_OVERFLOW,
    FLAG_OVERWRITE,
    FLAG_RAW,
    FLAG_SPECIAL,
    RAW_EXPONENT_DTYPE,
    RAW_MANTISSA_DTYPE,
    Header,
    MsgType,
    WireMode,
    element_dtype,
    format_code,
    pack,
    pool_index,
)
from p4 import N_ELEMENTS, P4_FORMATS, program_for  # noqa: E402

VECTOR_DIR = Path(__file__).resolve().parent / "vectors"
FORMAT_VERSION = 1
SWITCH = {"ip": "10.0.0.100", "mac": "02:00:00:00:01:00"}
N = N_ELEMENTS


_SPECIAL_BITS = fpisa.ELEMENT_POS_INF | fpisa.ELEMENT_NEG_INF | fpisa.ELEMENT_NAN


def f32(values) -> np.ndarray:
    """float values -> fp32 bit patterns (uint32)."""
    return np.asarray(values, dtype=np.float32).view(np.uint32).copy()


def worker_address(rank: int) -> dict:
    return {"rank": rank, "ip": f"10.0.0.{rank + 1}", "udp_port": 40000 + rank,
            "mac": f"02:00:00:00:00:{rank + 1:02x}", "switch_port": rank + 1}


@dataclass
class Row:
    """The model's view of one (slot, shadow set)."""

    bitmap: int = 0
    round_id: int | None = None  # None: the row never held a round
    arrivals: list = field(default_factory=list)  # (rank, values, block exponent)
    mode: int = -1
    completed: bool = False
    result: bytes | None = None  # payload after the header
    result_flags: int = 0
    block_exponent: int = 0


class Scenario:
    """Builds one vector: send() appends a step with its expected outputs."""

    def __init__(self, name: str, description: str, mode: str, num_workers: int, *,
                 pool_size: int = 4, job: int = 1, raw_registers: bool = False, fmt: str = "fp32"):
        self.name, self.description, self.mode = name, description, mode
        self.num_workers, self.pool_size, self.job = num_workers, pool_size, job
        self.raw_registers = raw_registers
        self.workers = [worker_address(r) for r in range(num_workers)]
        self.rows: dict[tuple[int, int], Row] = {}
        self.steps: list[dict] = []
        self.data_mode = mode_info(mode).data_wire_mode
        #: the job's element format (the payload's, in the float modes)
        self.fmt = get_format(fmt)
        self.fmt_code = format_code(self.fmt)
        self.program = program_for(mode_info(mode).p4_program, self.fmt.name).name

    def _elements(self, mode: WireMode) -> np.dtype:
        """numpy dtype of the payload values of ``mode`` (bit patterns for floats)."""
        return np.dtype(self.fmt.bits_dtype if mode.is_float else np.int32)

    # -- building packets ------------------------------------------------------
    def data_packet(self, rank: int, slot: int, shadow_set: int, values, *, packet_id: int,
                    flags: int = 0, mode: WireMode | None = None, block_exponent: int = 0,
                    **overrides) -> bytes:
        mode = self.data_mode if mode is None else mode
        fields = dict(msg_type=MsgType.DATA, mode=mode, fmt=self.fmt_code, flags=flags, job=self.job,
                      rank=rank, num_workers=self.num_workers, num_elements=N,
                      pool_index=pool_index(slot, shadow_set), block_exponent=block_exponent,
                      packet_id=packet_id)
        fields.update(overrides)
        payload = np.asarray(values).astype(self._elements(mode))
        return pack(Header(**fields), payload)

    # -- the slot protocol model -----------------------------------------------
    def send(self, rank: int, slot: int, shadow_set: int, values, *, packet_id: int,
             flags: int = 0, mode: WireMode | None = None, block_exponent: int = 0,
             comment: str = "") -> None:
        mode = self.data_mode if mode is None else mode
        data = self.data_packet(rank, slot, shadow_set, values, packet_id=packet_id,
                                flags=flags, mode=mode, block_exponent=block_exponent)
        row = self.rows.setdefault((slot, shadow_set), Row())
        other = self.rows.setdefault((slot, 1 - shadow_set), Row())
        bit = 1 << rank
        expect: list[tuple[int, bytes]] = []
        first = proceed = False
        if row.round_id is None:
            first = proceed = True
        else:
            age = (row.round_id - packet_id) & 0xFFFFFFFF
            if age == 0:
                if row.bitmap & bit:
                    if row.completed:  # duplicate for a complete round: RETX
                        expect = [(rank, self._result(row, slot, shadow_set, rank, packet_id,
                                                      MsgType.RESULT_RETX, mode))]
                    # else: duplicate for an incomplete round: dropped
                elif not row.completed:
                    proceed = True
                # else: stale (its sender moved on to the other set): dropped
            elif age >= 0x80000000:  # a newer round (serial arithmetic)
                first = proceed = True
            # else: an older round's packet: stale, dropped
        if proceed and not first and int(mode) != row.mode:
            proceed = False  # not the mode of the round in progress: dropped
        if proceed:
            row.bitmap |= bit
            other.bitmap &= ~bit
            if first:
                row.arrivals, row.completed = [], False
                row.mode, row.round_id = int(mode), packet_id
            row.arrivals.append((rank, np.asarray(values), block_exponent))
            if len(row.arrivals) == self.num_workers:
                self._complete(row, mode, flags)
                expect = [(r, self._result(row, slot, shadow_set, r, packet_id, MsgType.RESULT, mode))
                          for r in range(self.num_workers)]
        self._step(self.workers[rank], data, expect, comment)

    def send_raw(self, source: dict, data: bytes, comment: str) -> None:
        """A packet the switch must drop (it leaves no state behind)."""
        self._step(source, data, [], comment)

    def _step(self, source: dict, data: bytes, expect, comment: str) -> None:
        self.steps.append({
            "comment": comment,
            "from": {"ip": source["ip"], "udp_port": source["udp_port"],
                     "mac": source.get("mac", "02:00:00:00:00:99")},
            "packet": data.hex(),
            "expect": [{"rank": r, "ip": self.workers[r]["ip"],
                        "udp_port": self.workers[r]["udp_port"], "packet": p.hex()}
                       for r, p in expect],
        })

    def _complete(self, row: Row, mode: WireMode, flags: int) -> None:
        values = np.stack([v for _, v, _ in row.arrivals])  # rows in arrival order
        row.block_exponent = max(b for _, _, b in row.arrivals)
        if mode.is_float:
            name = "fpisa" if mode == WireMode.FPISA else "fpisa-a"
            bits = values.astype(self.fmt.bits_dtype)
            detail = fpisa.aggregate_detailed(bits, name, fmt=self.fmt.name)
            payload = (np.asarray(detail.result, dtype=self.fmt.bits_dtype)
                       .astype(element_dtype(mode, self.fmt_code)).tobytes())
            element = int(np.bitwise_or.reduce(detail.element_flags))
            row.result_flags = ((FLAG_OVERFLOW if element & fpisa.ELEMENT_OVERFLOW else 0)
                                | (FLAG_OVERWRITE if element & fpisa.ELEMENT_OVERWRITE else 0)
                                | (FLAG_SPECIAL if element & _SPECIAL_BITS else 0))
            if self.raw_registers or flags & FLAG_RAW:
                payload += np.asarray(detail.mantissa_register).astype(RAW_MANTISSA_DTYPE).tobytes()
                payload += np.asarray(detail.exponent_register).astype(RAW_EXPONENT_DTYPE).tobytes()
                row.result_flags |= FLAG_RAW
        else:
            ints = values.astype(np.int64)
            if mode == WireMode.SWITCHML:
                total = ints.sum(axis=0)
                total = (total + 2**31) % 2**32 - 2**31  # int32 wrap-around, like the ALU
            else:
                total = ints.max(axis=0)
            payload = total.astype(">i4").tobytes()
            row.result_flags = 0
        row.result = payload
        row.completed = True

    def _result(self, row: Row, slot: int, shadow_set: int, rank: int, packet_id: int,
                msg: MsgType, mode: WireMode) -> bytes:
        header = Header(msg_type=msg, mode=WireMode(row.mode), fmt=self.fmt_code,
                        flags=row.result_flags, job=self.job, rank=rank,
                        num_workers=self.num_workers, num_elements=N,
                        pool_index=pool_index(slot, shadow_set),
                        block_exponent=row.block_exponent, packet_id=packet_id)
        # the payload (and raw registers) were packed at completion; the
        # header's payload argument only sizes it
        zeros = np.zeros(N, self._elements(WireMode(row.mode)))
        return pack(header, zeros)[:16] + row.result

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "description": self.description,
            "program": self.program,
            "job": {"job": self.job, "mode": self.mode, "fmt": self.fmt.name,
                    "num_workers": self.num_workers, "num_elements": N,
                    "pool_size": self.pool_size, "raw_registers": self.raw_registers},
            "switch": SWITCH,
            "workers": self.workers,
            "generated_by": "tests/conformance/generate_vectors.py",
            "steps": self.steps,
        }


# ---------------------------------------------------------------- value sets
def random_values(rng, shape, spread: int = 8) -> np.ndarray:
    """fp32 bits of normal values with random signs, mantissas and exponents."""
    mant = rng.uniform(1.0, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    return f32(np.ldexp(mant, rng.integers(-spread, spread + 1, shape)))


def alignment_values(rng, distances) -> tuple[np.ndarray, np.ndarray]:
    """Two workers whose element j differ in exponent by distances[j]."""
    d = np.asarray(distances)
    m0 = rng.uniform(1.0, 2.0, N) * rng.choice([-1.0, 1.0], N)
    m1 = rng.uniform(1.0, 2.0, N) * rng.choice([-1.0, 1.0], N)
    base = 0
    return f32(np.ldexp(m0, base)), f32(np.ldexp(m1, base + d))


#: the specials' cases that every format represents: Inf, NaN, both
#: infinities, zeros of both signs, cancellation (3 workers' values per lane)
SPECIAL_CASES_ANY_FORMAT = (
    (math.inf, 1.0, 2.0), (1.0, -math.inf, 2.0), (math.nan, 1.0, 1.0), (math.inf, -math.inf, 1.0),
    (1.0, 2.0, math.inf), (-math.inf, -math.inf, 3.0), (math.inf, math.nan, -math.inf),
    (1.0, 2.0, -math.inf), (0.0, 0.0, 0.0), (-0.0, -0.0, -0.0), (0.0, -0.0, 0.0), (1.5, -1.5, 0.0),
    (-2.0, 1.0, 1.0),
)


def specials_values() -> np.ndarray:
    """(3, N) fp32 bits: Inf/NaN/zero/subnormal/overflow/cancellation cases per lane."""
    big = np.float32(3.0e38)
    tiny = np.float32(2.0**-126)
    sub = np.float32(2.0**-140)
    cases = [
        *SPECIAL_CASES_ANY_FORMAT, (big, big, big), (-big, -big, -big), (big, -big, big),
        (tiny * 1.5, -tiny, 0.0), (sub, sub, sub), (-sub, sub * 3, 0.0), (tiny, sub, -tiny),
        (np.float32(2.0**-149), np.float32(2.0**-149), 0.0), (tiny * 1.25, -tiny, -sub),
        (1.9999999, 1.9999999 * 2**7, 1.9999999 * 2**7),  # fpisa-a: headroom overflow
        (-1.9999999, -1.9999999 * 2**7, -1.9999999 * 2**7),
        (1.0, 2.0**8, 1.0), (2.0**8, 1.0, 2.0**-30), (1.0, 2.0**-24, 2.0**-24),
        (1.0, -2.0**-24, -2.0**-25), (2.0**20, 2.0**-20, -2.0**20),
        (np.float32(3.4028235e38), np.float32(3.4028235e38), -1.0),
        (1.0, -1.0, 2.0**-126), (-1.0, 1.0, -2.0**-149),
    ]
    out = np.zeros((3, N), np.uint32)
    nan_payloads = {2: 0x7F800001, 6: 0xFFC00000}  # signalling and negative NaNs too
    for j in range(N):
        case = cases[j % len(cases)]
        for k in range(3):
            out[k, j] = f32(case[k])
        if j in nan_payloads:
            out[0 if j == 2 else 1, j] = nan_payloads[j]
    return out


class Fp32Values:
    """The fp32 value sets: the functions above, as the fp32 vectors were made
    with them (same random streams, same bytes)."""

    fmt = get_format("fp32")
    #: the largest exponent difference the alignment vector covers
    alignment_range = 40

    def spread(self, spread: int) -> int:
        return spread

    def random(self, rng, shape, spread: int = 8) -> np.ndarray:
        return random_values(rng, shape, spread)

    def alignment(self, rng, distances) -> tuple[np.ndarray, np.ndarray]:
        return alignment_values(rng, distances)

    def specials(self) -> np.ndarray:
        return specials_values()


def exact_bits(fmt: Format, x: float) -> int:
    """The bit pattern of ``x`` in ``fmt``; ``x`` must be representable
    (a ValueError otherwise: the value sets never round). NaN: the quiet NaN."""
    m, bias = fmt.fraction_bits, fmt.bias
    sign = int(math.copysign(1.0, x) < 0) << (fmt.exponent_bits + m)
    if math.isnan(x):
        return (fmt.exponent_all_ones << m) | (1 << (m - 1))
    if math.isinf(x):
        return sign | (fmt.exponent_all_ones << m)
    if x == 0:
        return sign
    _, e = math.frexp(abs(x))  # |x| = f * 2^e, 0.5 <= f < 1: leading one at 2^(e - 1)
    field = e - 1 + bias
    if field >= 1:  # normal: |x| = (1 + fraction / 2^m) * 2^(field - bias)
        scaled = math.ldexp(abs(x), m - (e - 1))
        fraction = int(scaled) - (1 << m)
    else:  # subnormal: |x| = fraction * 2^(1 - bias - m)
        scaled = math.ldexp(abs(x), m + bias - 1)
        fraction, field = int(scaled), 0
    if scaled != int(scaled) or field >= fmt.exponent_all_ones or not 0 <= fraction < (1 << m):
        raise ValueError(f"{x!r} is not exactly representable in {fmt.name}")
    return sign | (field << m) | fraction


class FieldValues:
    """The value sets of any format, built from its fields (sign, biased
    exponent, fraction) with the same cases as the fp32 ones, scaled to the
    format's exponent range and headroom."""

    def __init__(self, fmt: str | Format):
        self.fmt = get_format(fmt)
        self.headroom = P4_FORMATS[self.fmt.name].headroom_bits
        #: normal biased exponents are 1 .. all-ones - 1
        self.alignment_range = min(40, self.fmt.exponent_all_ones - 2)

    def spread(self, spread: int) -> int:
        """Exponents bias +- spread stay normal."""
        return min(spread, self.fmt.bias - 1)

    def _bits(self, sign, field, fraction) -> np.ndarray:
        f = self.fmt
        bits = (np.asarray(sign, np.int64) << (f.exponent_bits + f.fraction_bits)) \
            | (np.asarray(field, np.int64) << f.fraction_bits) | np.asarray(fraction, np.int64)
        return bits.astype(f.bits_dtype)

    def random(self, rng, shape, spread: int = 8) -> np.ndarray:
        """Normal values with random signs, fractions and exponents bias +- spread."""
        spread = self.spread(spread)
        return self._bits(rng.integers(0, 2, shape), self.fmt.bias + rng.integers(-spread, spread + 1, shape),
                          rng.integers(0, 1 << self.fmt.fraction_bits, shape))

    def alignment(self, rng, distances) -> tuple[np.ndarray, np.ndarray]:
        """Two workers whose element j differ in exponent by distances[j]
        (both exponents normal, around the middle of the range)."""
        d = np.asarray(distances)
        base = self.fmt.exponent_all_ones // 2 - np.floor_divide(d, 2)
        m = self.fmt.fraction_bits
        a = self._bits(rng.integers(0, 2, N), base, rng.integers(0, 1 << m, N))
        b = self._bits(rng.integers(0, 2, N), base + d, rng.integers(0, 1 << m, N))
        return a, b

    def specials(self) -> np.ndarray:
        """(3, N) bits: the cases of specials_values() in this format."""
        f, h = self.fmt, self.headroom
        m, p = f.fraction_bits, f.precision
        emax, emin = f.bias, 1 - f.bias  # exponents of the largest and smallest normal binade
        largest = math.ldexp(2.0 - math.ldexp(1.0, -m), emax)
        big = math.ldexp(1.75, emax)
        tiny = math.ldexp(1.0, emin)
        sub = math.ldexp(1.0, emin - m // 2 - 1)
        least = math.ldexp(1.0, emin - m)
        full = 2.0 - math.ldexp(1.0, -m)  # the largest significand
        a = -(h // 2)  # a binade with room for 2^(a + h + 1) above it
        s = min(20, emax // 2)
        cases = [
            *SPECIAL_CASES_ANY_FORMAT, (big, big, big), (-big, -big, -big), (big, -big, big),
            (tiny * 1.5, -tiny, 0.0), (sub, sub, sub), (-sub, sub * 3, 0.0), (tiny, sub, -tiny),
            (least, least, 0.0), (tiny * 1.25, -tiny, -sub),
            # fpisa-a: the left shift into the headroom saturates
            (math.ldexp(full, a), math.ldexp(full, a + h), math.ldexp(full, a + h)),
            (-math.ldexp(full, a), -math.ldexp(full, a + h), -math.ldexp(full, a + h)),
            # fpisa-a: one more than the headroom overwrites
            (math.ldexp(1.0, a - 1), math.ldexp(1.0, a + h), math.ldexp(1.0, a - 1)),
            (math.ldexp(1.0, a + h), math.ldexp(1.0, a - 1), math.ldexp(1.0, max(emin, a - 1 - 2 * p))),
            # order dependence (docs/numerics.md section 5)
            (1.0, math.ldexp(1.0, -p), math.ldexp(1.0, -p)),
            (1.0, -math.ldexp(1.0, -p), -math.ldexp(1.0, -p - 1)),
            (math.ldexp(1.0, s), math.ldexp(1.0, -s), -math.ldexp(1.0, s)),
            (largest, largest, -1.0),
            (1.0, -1.0, tiny), (-1.0, 1.0, -least),
        ]
        out = np.zeros((3, N), f.bits_dtype)
        all_ones = f.exponent_all_ones << m
        sign = 1 << (f.exponent_bits + m)
        # a signalling and a negative NaN too
        nan_payloads = {2: all_ones | 1, 6: sign | all_ones | (1 << (m - 1))}
        for j in range(N):
            case = cases[j % len(cases)]
            for k in range(3):
                out[k, j] = exact_bits(f, case[k])
            if j in nan_payloads:
                out[0 if j == 2 else 1, j] = nan_payloads[j]
        return out


def format_values(fmt: str):
    return Fp32Values() if get_format(fmt).name == "fp32" else FieldValues(fmt)


# ---------------------------------------------------------------- scenarios
def float_scenarios(mode: str, fmt: str = "fp32") -> list[Scenario]:
    """The float vectors of ``mode`` in ``fmt``, named after the P4 build
    (fpisa_normal, fpisa_fp16_normal, fpisa_a_bf16_normal, ...)."""
    tag = program_for(mode_info(mode).p4_program, fmt).name
    vals = format_values(fmt)
    # fp32: the original streams (its vectors must not change)
    rng = np.random.default_rng((2022 if mode == "fpisa" else 2023) + 100 * format_code(fmt))
    out = []

    s = Scenario(f"{tag}_normal", "4 workers, 3 slots in both shadow sets, different "
                 "arrival orders; the round's packet id is echoed", mode, 4, fmt=fmt)
    for slot, order in ((0, (0, 1, 2, 3)), (1, (2, 0, 3, 1)), (2, (3, 2, 1, 0))):
        values = vals.random(rng, (4, N))
        for k, r in enumerate(order):
            s.send(r, slot, 0, values[r], packet_id=100 + slot,
                   comment=f"slot {slot}: worker {r} ({k + 1}/4)")
    values = vals.random(rng, (4, N), spread=30)
    for r in (1, 3, 0, 2):
        s.send(r, 0, 1, values[r], packet_id=200, comment=f"slot 0 set 1: worker {r}")
    out.append(s)

    d = vals.alignment_range
    s = Scenario(f"{tag}_alignment", f"every exponent difference -{d}..+{d} between two "
                 "workers, in both arrival orders, plus 3-worker alignment chains", mode, 2, fmt=fmt)
    for slot, distances in enumerate((np.arange(N) - d, np.arange(N) + d - (N - 1))):
        a, b = vals.alignment(rng, distances)
        s.send(0, slot, 0, a, packet_id=slot, comment=f"slot {slot}: exponent 0")
        s.send(1, slot, 0, b, packet_id=slot, comment=f"slot {slot}: exponent 0 + d")
        s.send(1, slot, 1, b, packet_id=slot + 10, comment=f"slot {slot} set 1: the larger first")
        s.send(0, slot, 1, a, packet_id=slot + 10, comment=f"slot {slot} set 1: then exponent 0")
    out.append(s)

    s = Scenario(f"{tag}_alignment_chains", "3 workers with exponents spread over "
                 f"+-{vals.spread(40)}: each arrival may raise the stored exponent", mode, 3, fmt=fmt)
    for slot in range(3):
        values = vals.random(rng, (3, N), spread=40)
        for r in ((0, 1, 2), (2, 1, 0), (1, 2, 0))[slot]:
            s.send(r, slot, 0, values[r], packet_id=slot, comment=f"slot {slot}: worker {r}")
    out.append(s)

    s = Scenario(f"{tag}_specials", "Inf, NaN (canonical result), both infinities, zeros "
                 "of both signs, subnormals, cancellation, result overflow to Inf, "
                 "subnormal results, headroom overflow; in two arrival orders", mode, 3, fmt=fmt)
    values = vals.specials()
    for slot, order in ((0, (0, 1, 2)), (1, (2, 1, 0))):
        for r in order:
            s.send(r, slot, 0, values[r], packet_id=7, comment=f"slot {slot}: worker {r}")
    out.append(s)

    s = Scenario(f"{tag}_duplicates", "duplicates for an incomplete round are dropped; a "
                 "duplicate for a completed round gets RESULT_RETX (asker's rank, same "
                 "payload and flags); older round ids are stale, newer ones start a new "
                 "round, with serial arithmetic across the 32-bit wrap", mode, 3, fmt=fmt)
    values = vals.random(rng, (3, N))
    s.send(0, 2, 0, values[0], packet_id=1, comment="worker 0")
    s.send(0, 2, 0, values[0], packet_id=1, comment="worker 0 again: incomplete, dropped")
    s.send(1, 2, 0, values[1], packet_id=1, comment="worker 1")
    s.send(1, 2, 0, values[1], packet_id=1, comment="worker 1 again: dropped")
    s.send(2, 2, 0, values[2], packet_id=1, comment="worker 2 completes: multicast")
    s.send(1, 2, 0, values[1], packet_id=1, comment="worker 1 retransmits: RESULT_RETX")
    s.send(2, 2, 0, values[2], packet_id=1, comment="worker 2 retransmits: RESULT_RETX")
    s.send(0, 2, 0, vals.random(rng, (N,)), packet_id=1,
           comment="worker 0 retransmits (other payload): the stored result, RETX")
    s.send(0, 2, 0, values[0], packet_id=0, comment="an older round id: stale, dropped")
    newer = vals.random(rng, (3, N))
    for r in (2, 0, 1):
        s.send(r, 2, 0, newer[r], packet_id=2, comment=f"a newer round id: new round, worker {r}")
    wrap = vals.random(rng, (3, N))
    for r in range(3):
        s.send(r, 3, 0, wrap[r], packet_id=0xFFFFFFFF, comment=f"round 2^32-1: worker {r}")
    after = vals.random(rng, (3, N))
    s.send(1, 3, 0, after[1], packet_id=0, comment="round 0 is newer than 2^32-1: new round")
    s.send(2, 3, 0, wrap[2], packet_id=0xFFFFFFFF, comment="late 2^32-1 copy: stale, dropped")
    s.send(0, 3, 0, after[0], packet_id=0, comment="round 0: worker 0")
    s.send(2, 3, 0, after[2], packet_id=0, comment="round 0: worker 2 completes")
    out.append(s)

    s = Scenario(f"{tag}_shadow_sets", "shadow-set switch-over: set 1 of a slot fills "
                 "while set 0's result is still asked for; then set 0 is reused "
                 "(the first arrival resets it)", mode, 3, pool_size=2, fmt=fmt)
    v0, v1, v2 = (vals.random(rng, (3, N)) for _ in range(3))
    for r in range(3):
        s.send(r, 1, 0, v0[r], packet_id=10, comment=f"set 0: worker {r}")
    s.send(0, 1, 1, v1[0], packet_id=11, comment="worker 0 moves to set 1 (clears its set-0 bit)")
    s.send(1, 1, 0, v0[1], packet_id=10, comment="worker 1 lost set 0's result: RETX")
    s.send(1, 1, 1, v1[1], packet_id=11, comment="worker 1 moves to set 1")
    s.send(2, 1, 1, v1[2], packet_id=11, comment="worker 2 completes set 1")
    for r in (2, 0, 1):
        s.send(r, 1, 0, v2[r], packet_id=12, comment=f"set 0 reused: worker {r}")
    s.send(0, 1, 1, v1[0], packet_id=11, comment="late copy for set 1: worker 0 cleared "
           "its set-1 bit when it reused set 0 and the round is complete: stale, dropped")
    out.append(s)

    s = Scenario(f"{tag}_raw_registers", "FLAG_RAW: the completing packet asks for the raw "
                 "(mantissa, exponent) registers; a retransmission repeats them", mode, 2, fmt=fmt)
    values = vals.random(rng, (2, N), spread=20)
    s.send(0, 0, 0, values[0], packet_id=1, comment="worker 0, no FLAG_RAW")
    s.send(1, 0, 0, values[1], packet_id=1, flags=FLAG_RAW, comment="worker 1 with FLAG_RAW")
    s.send(0, 0, 0, values[0], packet_id=1, comment="worker 0 retransmits: raw again")
    specials = vals.specials()
    s.send(1, 1, 0, specials[1], packet_id=2, comment="specials")
    s.send(0, 1, 0, specials[0], packet_id=2, flags=FLAG_RAW,
           comment="specials, completed with FLAG_RAW: raw registers of specials and cancellations")
    s.send(1, 2, 0, values[1], packet_id=3, flags=FLAG_RAW, comment="FLAG_RAW, not the last")
    s.send(0, 2, 0, values[0], packet_id=3, comment="completes without FLAG_RAW: no raw")
    out.append(s)

    out.append(rejection_scenario(mode, rng, fmt))
    return out


def rejection_scenario(mode: str, rng, fmt: str = "fp32") -> Scenario:
    tag = program_for(mode_info(mode).p4_program, fmt).name
    s = Scenario(f"{tag}_rejections", "packets the switch must drop (unknown worker, "
                 "rank mismatch, wrong job, slot out of range, bad lengths, wrong "
                 "version/type/mode/format/num_workers) leave no trace: the slot then "
                 "aggregates normally", mode, 2, pool_size=2, fmt=fmt)
    float_mode = s.data_mode.is_float
    values = (format_values(fmt).random(rng, (2, N)) if float_mode
              else rng.integers(-1000, 1000, (2, N)))
    good = s.data_packet(0, 0, 0, values[0], packet_id=9)
    w0, w1 = s.workers
    stranger = {"ip": "10.0.0.99", "udp_port": 40000, "mac": "02:00:00:00:00:99"}
    s.send_raw(stranger, good, "unknown source IP")
    s.send_raw({**w0, "udp_port": 41234}, good, "registered IP, unknown UDP port")
    s.send_raw(w1, good, "worker 1's address, rank 0 in the header: rank mismatch")
    s.send_raw(w0, s.data_packet(0, 0, 0, values[0], packet_id=9, job=s.job + 1), "wrong job")
    s.send_raw(w0, s.data_packet(0, 2, 0, values[0], packet_id=9), "slot outside the pool")
    s.send_raw(w0, good[:-4], "truncated payload")
    s.send_raw(w0, good + b"\0\0\0\0", "trailing bytes")
    s.send_raw(w0, good[:12], "truncated header")
    s.send_raw(w0, s.data_packet(0, 0, 0, values[0], packet_id=9, num_workers=3), "num_workers 3, job has 2")
    s.send_raw(w0, s.data_packet(0, 0, 0, values[0], packet_id=9, msg_type=MsgType.RESULT),
               "a RESULT sent to the switch")
    bad_version = bytearray(good)
    bad_version[0] = (2 << 4) | MsgType.DATA
    s.send_raw(w0, bytes(bad_version), "version 2")
    other_mode = WireMode.FPISA_A if s.data_mode == WireMode.FPISA else WireMode.FPISA
    s.send_raw(w0, s.data_packet(0, 0, 0, values[0], packet_id=9, mode=other_mode),
               f"mode {other_mode.name} is not this job's")
    # the other formats, each with its own element size (fp16 and bf16 have
    # the same: only the header's fmt tells them apart)
    for other in ((P4_FORMATS["fp16"],) if s.fmt.name == "fp32"
                  else [f for f in P4_FORMATS.values() if f.name != s.fmt.name]):
        packet = bytearray(good[:16]) + bytes(other.fmt.storage_bytes * N)
        packet[2] = other.code
        packet[7] = N
        s.send_raw(w0, bytes(packet), f"{other.name} format (payload {other.fmt.storage_bytes} "
                   "bytes per element)")
    s.send_raw(w0, s.data_packet(0, 0, 0, values[0][:N - 1], packet_id=9, num_elements=N - 1),
               f"num_elements {N - 1} (the job has {N})")
    s.send(0, 0, 0, values[0], packet_id=9, comment="a good packet from worker 0")
    s.send(1, 0, 0, values[1], packet_id=9, comment="worker 1 completes: nothing was disturbed")
    return s


def switchml_scenarios() -> list[Scenario]:
    rng = np.random.default_rng(2024)
    out = []
    K = 4
    s = Scenario("switchml_normal", "SwitchML: block exponent exchange (int-max), then "
                 "the quantized int32 sums with the block exponent max; dequantized they "
                 "equal fpisa.aggregate(mode='switchml')", "switchml", K)
    floats = random_values(rng, (K, N), spread=12)
    local = np.stack([sml.block_exponents(floats[k], "fp32", N) for k in range(K)])  # (K, 1)
    exchange = np.zeros((K, N), np.int32)
    exchange[:, 0] = local[:, 0]
    exchange[:, 1:] = rng.integers(-200, 200, (K, N - 1))
    for r in range(K):
        s.send(r, 0, 0, exchange[r], packet_id=1, mode=WireMode.INT_MAX,
               comment=f"exponent exchange (int32 max): worker {r}")
    e_max = local.max(axis=0)
    quantized = np.stack([sml.quantize(floats[k], "fp32", e_max, K, N) for k in range(K)])
    for r in (2, 0, 3, 1):
        s.send(r, 0, 1, quantized[r], packet_id=2, block_exponent=int(local[r, 0]),
               comment=f"quantized values, local block exponent: worker {r}")
    total = quantized.astype(np.int64).sum(axis=0).astype(np.int32)
    expected = fpisa.aggregate(floats, "switchml", fmt="fp32", block_size=N)
    got = sml.dequantize(total, "fp32", e_max, K, N)
    assert np.array_equal(np.asarray(got).view(np.uint32), np.asarray(expected).view(np.uint32)), \
        "switchml vector disagrees with fpisa.aggregate"
    wrap = np.full((K, N), 2**31 - 1, np.int64)
    wrap[:, ::2] = -(2**31)
    wrap[:, 1::4] = rng.integers(-2**31, 2**31, (K, N // 4))
    for r in range(K):
        s.send(r, 1, 0, wrap[r].astype(np.int32), packet_id=3, block_exponent=-150 + r,
               comment=f"int32 wrap-around and negative block exponents: worker {r}")
    out.append(s)

    s = Scenario("switchml_duplicates", "SwitchML duplicates, retransmission (block "
                 "exponent kept), shadow-set reuse, FLAG_RAW ignored (no raw registers for "
                 "integers), a mode other than the round's dropped", "switchml", 3, pool_size=2)
    ints = rng.integers(-2**20, 2**20, (3, N)).astype(np.int32)
    s.send(0, 1, 0, ints[0], packet_id=1, block_exponent=5, comment="worker 0")
    s.send(0, 1, 0, ints[0], packet_id=1, block_exponent=5, comment="worker 0 again: dropped")
    s.send(1, 1, 0, ints[1], packet_id=1, block_exponent=-3, flags=FLAG_RAW, comment="worker 1")
    s.send(2, 1, 0, ints[2], packet_id=1, block_exponent=9, flags=FLAG_RAW,
           comment="worker 2 completes (FLAG_RAW: ignored for integers)")
    s.send(0, 1, 0, ints[0], packet_id=1, comment="worker 0 retransmits: RETX")
    ints2 = rng.integers(-2**20, 2**20, (3, N)).astype(np.int32)
    for r in (1, 2, 0):
        s.send(r, 1, 1, ints2[r], packet_id=3, block_exponent=-r, comment=f"set 1: worker {r}")
    for r in (0, 1, 2):
        s.send(r, 1, 0, ints[r] // 2, packet_id=4, block_exponent=r, comment=f"set 0 reused: worker {r}")
    s.send(0, 0, 0, ints[0], packet_id=5, mode=WireMode.INT_MAX, comment="int-max round")
    s.send(1, 0, 0, ints[1], packet_id=5, comment="same round, switchml mode: mode mismatch, dropped")
    s.send(1, 0, 0, ints[1], packet_id=5, mode=WireMode.INT_MAX, comment="int-max: worker 1")
    s.send(2, 0, 0, ints[2], packet_id=5, mode=WireMode.INT_MAX, comment="int-max: worker 2 completes")
    out.append(s)
    out.append(rejection_scenario("switchml", rng))
    return out


def all_scenarios() -> list[Scenario]:
    return [*(s for mode in ("fpisa", "fpisa-a") for fmt in P4_FORMATS for s in float_scenarios(mode, fmt)),
            *switchml_scenarios()]


def render(scenario: Scenario) -> str:
    return json.dumps(scenario.to_json(), indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a vector file is stale")
    args = parser.parse_args(argv)
    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    stale = []
    expected = {}
    for scenario in all_scenarios():
        expected[VECTOR_DIR / f"{scenario.name}.json"] = render(scenario)
    for path, text in expected.items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    extra = [p for p in VECTOR_DIR.glob("*.json") if p not in expected]
    for path in stale:
        print(("stale: " if args.check else "wrote ") + str(path.relative_to(ROOT)))
    for path in extra:
        print(f"not generated by this script: {path.relative_to(ROOT)}")
    return 1 if args.check and (stale or extra) else 0


if __name__ == "__main__":
    sys.exit(main())
