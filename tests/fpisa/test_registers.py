"""fpisa.registers.SlotRegisters (the emulator's switch state): a sequence of
accumulate(first=...) calls and a read equals aggregate for the same arrival
order, rows are independent, and first=True is a complete reset."""

import numpy as np
import pytest

import fpisa
from fpisa.protocol import FLAG_OVERFLOW, FLAG_OVERWRITE, FLAG_SPECIAL
from oracle_helpers import FORMAT_NAMES, FPISA_MODES, assert_bits_equal, clustered_bits


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("mode", FPISA_MODES)
def test_packet_sequence_equals_aggregate(mode, fmt):
    rng = np.random.default_rng(31)
    workers, n = 6, 257
    regs = fpisa.SlotRegisters(mode, num_rows=3, num_elements=n, fmt=fmt, register_bits=28
                               if fmt == "fp32" else 16)
    for trial in range(4):
        values = clustered_bits(rng, fmt, (workers, n), spread=10, specials=0.01, subnormals=0.05)
        order = rng.permutation(workers)
        row = trial % 3
        for i, k in enumerate(order):
            # any byte order: the switch sees little-endian payloads
            packet = values[k].astype(values.dtype.newbyteorder("<" if i % 2 else ">"))
            regs.accumulate(row, packet, first=i == 0)
        expected = fpisa.aggregate_detailed(values, mode, fmt=fmt, order=order,
                                            register_bits=regs.layout.register_bits)
        assert_bits_equal(regs.read(row), expected.result, fmt, values, f"{mode} row {row}")
        rne = fpisa.aggregate(values, mode, fmt=fmt, order=order, rounding="rne",
                              register_bits=regs.layout.register_bits)
        assert_bits_equal(regs.read(row, rounding="rne"), rne, fmt, values, "rne")
        mantissa, exponent = regs.raw(row)
        np.testing.assert_array_equal(mantissa, expected.mantissa_register)
        np.testing.assert_array_equal(exponent, expected.exponent_register)
        assert exponent.dtype == np.uint16 and mantissa.dtype == np.int64
        flags = int(np.bitwise_or.reduce(expected.element_flags))
        row_flags = regs.row_flags(row)
        assert bool(row_flags & FLAG_OVERFLOW) == bool(flags & fpisa.ELEMENT_OVERFLOW)
        assert bool(row_flags & FLAG_OVERWRITE) == bool(flags & fpisa.ELEMENT_OVERWRITE)
        special = fpisa.ELEMENT_POS_INF | fpisa.ELEMENT_NEG_INF | fpisa.ELEMENT_NAN
        assert bool(row_flags & FLAG_SPECIAL) == bool(flags & special)


@pytest.mark.parametrize("mode", FPISA_MODES)
def test_first_arrival_resets_flags_and_counts(mode):
    """A row that saw Inf, overflow and overwrites is clean after first=True."""
    regs = fpisa.SlotRegisters(mode, 1, 3, fmt="fp32", register_bits=26)
    dirty = np.array([[np.inf, 1.5, 1.0], [1.0, 1.5, 2.0**20], [-np.inf, 1.5, 1.0]], np.float32)
    for i, packet in enumerate(dirty):
        regs.accumulate(0, packet.view(np.uint32), first=i == 0)
    assert regs.row_flags(0) != 0
    clean = np.array([[1.0, 2.0, 3.0], [0.5, 0.25, 0.125]], np.float32)
    for i, packet in enumerate(clean):
        regs.accumulate(0, packet.view(np.uint32), first=i == 0)
    assert regs.row_flags(0) == 0
    np.testing.assert_array_equal(regs.read(0).view(np.float32), [1.5, 2.25, 3.125])


def test_rows_are_independent():
    regs = fpisa.SlotRegisters("fpisa", 2, 2)
    one = np.array([1.0, 2.0], np.float32).view(np.uint32)
    regs.accumulate(0, one, first=True)
    regs.accumulate(1, one, first=True)
    regs.accumulate(1, one, first=False)
    np.testing.assert_array_equal(regs.read(0).view(np.float32), [1.0, 2.0])
    np.testing.assert_array_equal(regs.read(1).view(np.float32), [2.0, 4.0])


def test_integer_modes():
    """switchml: int32 sum, wrapping like the switch's ALU; int-max: max."""
    rng = np.random.default_rng(37)
    packets = rng.integers(-(2**31), 2**31, (5, 100)).astype(np.int32)
    for mode, reduce in (("switchml", lambda p: p.astype(np.int64).sum(axis=0)),
                         ("int-max", lambda p: p.max(axis=0))):
        regs = fpisa.SlotRegisters(mode, 1, 100)
        for i, packet in enumerate(packets):
            regs.accumulate(0, packet, first=i == 0)
        expected = reduce(packets).astype(np.int64)
        expected = ((expected + 2**31) % 2**32 - 2**31).astype(np.int32)
        got = regs.read(0)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", ["fpisa", "fpisa-a"])
@pytest.mark.parametrize("fmt,W", [("fp32", 32), ("fp32", 31), ("fp32", 26), ("fp16", 16), ("fp16", 24),
                                   ("bf16", 16), ("bf16", 32)])
def test_int32_registers_hold_the_same_state_as_int64(mode, fmt, W):
    """SlotRegisters stores W <= 32 registers in int32 (the row kernels run
    twice as fast on them): every register, flag and read-out equals that of
    the same kernels on int64 rows, on values with specials, cancellation
    and saturation."""
    from fpisa import _kernels as kernels
    from fpisa.formats import get_format
    from fpisa.protocol import WireMode

    f = get_format(fmt)
    wire = WireMode.FPISA if mode == "fpisa" else WireMode.FPISA_A
    regs = fpisa.SlotRegisters(wire, 1, 64, fmt=fmt, register_bits=W)
    assert regs.mantissa_register.dtype == np.int32
    E64, A64 = np.zeros(64, np.int64), np.zeros(64, np.int64)
    F64, OW64 = np.zeros(64, np.uint8), np.zeros(64, np.int64)
    rng = np.random.default_rng(hash((mode, fmt, W)) % 2**32)
    specials = np.array([0, 1, f.bits_dtype(~0 & ((1 << f.storage_bits) - 1))], f.bits_dtype)
    for t in range(60):
        x = rng.integers(0, 1 << f.storage_bits, 64, dtype=np.uint64).astype(f.bits_dtype)
        x[rng.random(64) < 0.05] = rng.choice(specials)
        if t % 3 == 0:  # cancellation: a value and its negation in the same row
            x[:32] = x[32:] ^ f.bits_dtype(1 << (f.storage_bits - 1))
        first = t % 10 == 0
        regs.accumulate(0, x, first)
        if mode == "fpisa":
            kernels.accumulate_row_fpisa(E64, A64, F64, x, first, f.exponent_bits, f.fraction_bits, W)
        else:
            kernels.accumulate_row_fpisa_a(E64, A64, F64, OW64, x, first, f.exponent_bits,
                                           f.fraction_bits, W)
        assert np.array_equal(regs.exponent_register[0], E64)
        assert np.array_equal(regs.mantissa_register[0], A64)
        assert np.array_equal(regs.element_flags[0], F64)
        out = np.empty(64, f.bits_dtype)
        kernels.normalize_array(E64, A64, F64, f.exponent_bits, f.fraction_bits, False, out)
        assert np.array_equal(regs.read(0), out)
        raw_mantissa, raw_exponent = regs.raw(0)
        assert raw_mantissa.dtype == np.int64 and np.array_equal(raw_mantissa, A64)
