"""Cycle simulation vs the numerics core: bit for bit, for every program."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fpisa
from fpisa.formats import FORMATS
from hw_model.machine import get_machine
from hw_model.mapper import map_program
from hw_model.programs import build_program
from hw_model.simulate import (
    arrival_schedule,
    check_against_numerics,
    simulate_fpisa,
    simulate_switchml,
)

#: (machine, program) pairs that map
MAPPED = [
    ("tofino1", "switchml"),
    ("banzai", "switchml"),
    ("tofino1", "fpisa-a"),
    ("fpisa-extended", "fpisa-a"),
    ("fpisa-extended", "fpisa-a-varshift"),
    ("fpisa-extended", "fpisa"),
    ("fpisa-extended", "fpisa-raw"),
]


def random_values(rng, workers, n, spread):
    """Gaussian values scaled over 2^-spread..2^spread, some zeros and subnormals."""
    x = rng.standard_normal((workers, n)) * np.exp2(rng.integers(-spread, spread + 1, (workers, n)))
    x[rng.random((workers, n)) < 0.05] = 0.0
    x[rng.random((workers, n)) < 0.03] *= 1e-40  # subnormal inputs
    return x.astype(np.float32)


@pytest.mark.parametrize("machine,program", MAPPED)
@pytest.mark.parametrize("seed,spread", [(0, 2), (1, 12), (2, 40)])
def test_cycle_model_matches_numerics_bit_for_bit(machine, program, seed, spread):
    rng = np.random.default_rng(seed)
    workers, n, per_packet = 5, 24, 8
    values = random_values(rng, workers, n, spread)
    order = np.stack([rng.permutation(workers) for _ in range(n // per_packet)])
    result = check_against_numerics(get_machine(machine), program, values, per_packet, order)
    assert result.ok, result.mismatches


def random_bits(rng, workers, n, fmt):
    """Finite bit patterns of ``fmt`` with exponents clustered (alignment,
    headroom, overwrite) or anywhere (subnormals, overflow to Inf)."""
    f = FORMATS[fmt]
    base = int(rng.integers(1, f.exponent_all_ones))
    near = rng.integers(base - 8, base + 8, (workers, n)).clip(0, f.exponent_all_ones - 1)
    anywhere = rng.integers(0, f.exponent_all_ones, (workers, n))
    e = np.where(rng.random((workers, n)) < 0.7, near, anywhere)
    sign = rng.integers(0, 2, (workers, n))
    frac = rng.integers(0, 1 << f.fraction_bits, (workers, n))
    bits = (sign << (f.storage_bits - 1)) | (e << f.fraction_bits) | frac
    return bits.astype(f.bits_dtype)


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("machine,program", [m for m in MAPPED if m[1] != "switchml"] + [("tofino1", "switchml")])
def test_every_format_is_bit_exact(fmt, machine, program):
    rng = np.random.default_rng(21)
    workers, n, per_packet = 6, 16, 8
    bits = random_bits(rng, workers, n, fmt)
    order = np.stack([rng.permutation(workers) for _ in range(n // per_packet)])
    result = check_against_numerics(get_machine(machine), program, bits, per_packet, order, fmt=fmt)
    assert result.ok, result.mismatches


def test_fpisa_a_stays_one_element_per_pass_on_tofino_in_every_format():
    """Right shifts up to p plus left shifts up to h = W - 1 - p: always 32 actions."""
    tofino = get_machine("tofino1")
    for fmt in ("fp16", "bf16", "fp32"):
        mapping = map_program(build_program("fpisa-a", tofino, fmt), tofino)
        assert mapping.elements_per_pass == 1, fmt
        align = next(op for s in mapping.program.lane for op in s.ops if op.name == "align")
        assert align.instructions == 32, fmt


@pytest.mark.parametrize("program,mode", [("fpisa", "fpisa"), ("fpisa-a", "fpisa-a")])
def test_registers_and_result_equal_aggregate_detailed(program, mode):
    """The same comparison written out, including cancellation and overflow."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal(16).astype(np.float32)
    values = np.stack([
        base,
        -base,  # exact cancellation: tiny or zero sums, subnormal read-outs
        rng.standard_normal(16).astype(np.float32) * np.float32(1e-30),
        np.full(16, 3.0e38, np.float32),  # sum overflows to Inf on read-out
        np.full(16, 2.9e38, np.float32),
    ])
    values[3:, :8] = 1.5  # half the elements stay finite
    run = simulate_fpisa(get_machine("fpisa-extended"), program, values.view(np.uint32), 8, order=[4, 0, 2, 1, 3])
    ref = fpisa.aggregate_detailed(values.view(np.uint32), mode, fmt="fp32", order=run.element_order)
    np.testing.assert_array_equal(run.result_bits, ref.result)
    np.testing.assert_array_equal(run.exponent_register, ref.exponent_register)
    np.testing.assert_array_equal(run.mantissa_register, ref.mantissa_register)
    assert np.isinf(run.result_bits.view(np.float32)[8:]).all()


def test_fpisa_a_saturation_and_overwrite_match():
    """Values past the headroom overwrite; shifted-up values saturate the add."""
    n = 8
    values = np.stack([
        np.full(n, 1.0, np.float32),
        np.full(n, 255.9, np.float32),  # e - E = 7 = h: shifted into the headroom
        np.full(n, 250.0, np.float32),
        np.full(n, 2.0**20, np.float32),  # e - E > h: overwrite
    ])
    run = simulate_fpisa(get_machine("tofino1"), "fpisa-a", values.view(np.uint32), n)
    ref = fpisa.aggregate_detailed(values.view(np.uint32), "fpisa-a", fmt="fp32", order=run.element_order)
    assert ref.overwrite_count > 0 and ref.overflow_count > 0  # both error sources occur
    np.testing.assert_array_equal(run.result_bits, ref.result)
    np.testing.assert_array_equal(run.mantissa_register, ref.mantissa_register)


def test_multi_pass_recirculation_is_bit_exact_and_counted():
    """FPISA-A on Tofino holds one element per pass: 4 elements = 4 passes."""
    rng = np.random.default_rng(3)
    values = random_values(rng, 3, 8, 6)
    result = check_against_numerics(get_machine("tofino1"), "fpisa-a", values, 4)
    assert result.ok, result.mismatches
    run = simulate_fpisa(get_machine("tofino1"), "fpisa-a", values.view(np.uint32), 4)
    assert run.plan.passes == 4
    assert run.run.passes == run.run.packets * 4


def test_order_matters_and_the_check_sees_it():
    """The comparison can fail: a different arrival order changes FPISA's bits."""
    rng = np.random.default_rng(11)
    values = random_values(rng, 4, 32, 30)
    machine = get_machine("fpisa-extended")
    run = simulate_fpisa(machine, "fpisa", values.view(np.uint32), 8, order=[3, 2, 1, 0])
    same = fpisa.aggregate(values.view(np.uint32), "fpisa", order=[3, 2, 1, 0])
    other = fpisa.aggregate(values.view(np.uint32), "fpisa", order=[0, 1, 2, 3])
    np.testing.assert_array_equal(run.result_bits, same)
    assert np.count_nonzero(run.result_bits != other) > 0


def test_switchml_int_sums_and_exponent_max():
    rng = np.random.default_rng(5)
    ints = rng.integers(-2**29, 2**29, (4, 20), dtype=np.int64).astype(np.int32)
    exps = rng.integers(-20, 20, (4, 3))
    run = simulate_switchml(get_machine("tofino1"), ints, exps, 8, order=[2, 0, 3, 1])
    np.testing.assert_array_equal(run.int_sums, ints.sum(axis=0, dtype=np.int32))
    np.testing.assert_array_equal(run.max_exponents, exps.max(axis=0))


def test_switchml_sums_wrap_like_int32_hardware():
    ints = np.full((3, 4), 2**31 - 1, dtype=np.int32)
    run = simulate_switchml(get_machine("tofino1"), ints, np.zeros((3, 1)), 4)
    np.testing.assert_array_equal(run.int_sums, ints.sum(axis=0, dtype=np.int32))


def test_one_packet_per_cycle_latency_equals_stages():
    machine = get_machine("tofino1")
    ints = np.ones((4, 64), dtype=np.int32)
    run = simulate_switchml(machine, ints, np.zeros((4, 1)), 64)
    # 4 packets enter on consecutive cycles; the last leaves `stages` later
    assert run.run.cycles == 4 + machine.stages - 1


def test_inf_and_nan_inputs_are_refused_with_a_reason():
    values = np.ones((2, 8), np.float32)
    values[1, 3] = np.inf
    with pytest.raises(ValueError, match="Inf/NaN"):
        simulate_fpisa(get_machine("fpisa-extended"), "fpisa", values.view(np.uint32), 8)


def test_bad_orders_are_refused():
    with pytest.raises(ValueError, match="permutation"):
        arrival_schedule(3, 2, [0, 0, 1])
    with pytest.raises(ValueError, match="shape"):
        arrival_schedule(3, 2, np.zeros((5, 3), dtype=int))
    with pytest.raises(ValueError, match="not an FPISA program"):
        simulate_fpisa(get_machine("tofino1"), "switchml", np.zeros((2, 8), np.uint32), 8)


# ------------------------------------------------------------ properties
@st.composite
def finite_cases(draw):
    """A format, workers' finite bit patterns, packet size and per-slot orders.

    Exponents are drawn near a common base most of the time so that
    alignment, headroom, overwrite and cancellation paths all get exercised.
    """
    fmt = draw(st.sampled_from(["fp32", "fp16", "bf16"]))
    f = FORMATS[fmt]
    workers = draw(st.integers(1, 5))
    n = draw(st.integers(1, 10))
    per_packet = draw(st.integers(1, 4))
    top = f.exponent_all_ones - 1
    base = draw(st.integers(1, top))
    exponent = st.one_of(st.integers(max(0, base - 10), min(top, base + 10)), st.integers(0, top))
    word = st.builds(lambda s, e, x: (s << (f.storage_bits - 1)) | (e << f.fraction_bits) | x,
                     st.integers(0, 1), exponent, st.integers(0, (1 << f.fraction_bits) - 1))
    bits = np.array(draw(st.lists(st.lists(word, min_size=n, max_size=n),
                                  min_size=workers, max_size=workers)), dtype=f.bits_dtype)
    slots = -(-n // per_packet)
    order = np.array([draw(st.permutations(range(workers))) for _ in range(slots)])
    return fmt, bits, per_packet, order


@settings(max_examples=40)
@given(case=finite_cases(),
       target=st.sampled_from([("fpisa-extended", "fpisa"), ("tofino1", "fpisa-a"),
                               ("fpisa-extended", "fpisa-a-varshift"), ("fpisa-extended", "fpisa-raw")]))
def test_property_fpisa_programs_bit_exact(case, target):
    fmt, bits, per_packet, order = case
    result = check_against_numerics(get_machine(target[0]), target[1], bits, per_packet, order, fmt=fmt)
    assert result.ok, result.mismatches


@settings(max_examples=25)
@given(case=finite_cases())
def test_property_switchml_bit_exact(case):
    fmt, bits, per_packet, order = case
    result = check_against_numerics(get_machine("tofino1"), "switchml", bits, per_packet, order, fmt=fmt)
    assert result.ok, result.mismatches


@pytest.mark.parametrize("rounding", ["rz", "rne"])
def test_raw_registers_let_the_host_round_to_nearest(rounding):
    rng = np.random.default_rng(9)
    values = random_values(rng, 6, 16, 25)
    result = check_against_numerics(get_machine("fpisa-extended"), "fpisa-raw", values, 8, rounding=rounding)
    assert result.ok, result.mismatches


def test_in_switch_normalization_only_truncates():
    values = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="truncates"):
        simulate_fpisa(get_machine("fpisa-extended"), "fpisa", values.view(np.uint32), 8, rounding="rne")
