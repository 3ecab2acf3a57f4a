"""The mapper: what fits where, and Domino-style rejections with reasons."""

from dataclasses import replace

import pytest

from hw_model.atoms import STATEFUL_ATOMS, StatefulFeature
from hw_model.machine import get_machine
from hw_model.mapper import NOT_EXPRESSIVE, TOO_SMALL, MappingError, map_program, plan_packet
from hw_model.programs import build_program


@pytest.fixture(scope="module")
def tofino():
    return get_machine("tofino1")


@pytest.fixture(scope="module")
def extended():
    return get_machine("fpisa-extended")


def value_lane_stages(mapping):
    """Stage -> stateful ALUs used by element lanes (not the prologue)."""
    out = {}
    for p in mapping.placements:
        if p.lane is not None:
            out[p.stage] = out.get(p.stage, 0) + 1
    return out


# ------------------------------------------------------------- SwitchML
def test_switchml_on_tofino_64_elements_per_pass_on_8_stages_of_4_pair_alus(tofino):
    plan = plan_packet("switchml", tofino, 64)
    assert plan.elements_per_pass == 64
    assert plan.passes == 1
    mapping = plan.mapping
    assert mapping.program.elements_per_lane == 2  # one 64-bit pair = 2 int32
    assert StatefulFeature.PAIR in mapping.program.lane[0].ops[0].needs
    lanes = value_lane_stages(mapping)
    assert len(lanes) == 8
    assert set(lanes.values()) == {4}
    assert mapping.lanes == 32


def test_switchml_1kb_payload_takes_4_passes(tofino):
    plan = plan_packet("switchml", tofino, 256)  # 1 KB of int32
    assert plan.elements_per_pass == 64
    assert plan.passes == 4
    assert plan.capacity_per_pass >= 64


def test_switchml_without_pair_atoms_adds_one_element_per_alu(tofino):
    single = replace(tofino, stateful_atom=STATEFUL_ATOMS["nested"])
    mapping = map_program("switchml", single)
    assert mapping.program.elements_per_lane == 1
    assert mapping.elements_per_pass == mapping.lanes
    paired = map_program("switchml", tofino)
    assert paired.elements_per_pass == 2 * mapping.elements_per_pass


def test_switchml_exponent_max_needs_two_predicates():
    banzai = get_machine("banzai", stateful_atom=STATEFUL_ATOMS["if-else-raw"])
    with pytest.raises(MappingError) as e:
        map_program("switchml", banzai)
    assert e.value.reason == NOT_EXPRESSIVE
    assert "exponent_max" in e.value.detail and "two-predicates" in e.value.detail


# ------------------------------------------------------------ FPISA-A
def test_fpisa_a_needs_the_table_workaround_on_tofino(tofino):
    """Written with variable shifts, FPISA-A does not map onto Tofino's ALUs."""
    with pytest.raises(MappingError) as e:
        map_program("fpisa-a-varshift", tofino)
    assert e.value.reason == NOT_EXPRESSIVE
    assert "var-shift" in e.value.detail
    assert "shift-stored" not in e.value.detail  # FPISA-A never shifts the stored value


def test_fpisa_a_with_tables_maps_on_tofino_one_element_per_pass(tofino):
    """The paper: ~32 constant-shift instructions saturate a stage; one element."""
    mapping = map_program("fpisa-a", tofino)
    assert mapping.elements_per_pass == 1
    assert mapping.max_instructions == tofino.instruction_slots_per_stage == 32
    align = next(op for s in mapping.program.lane for op in s.ops if op.name == "align")
    assert align.instructions == 32


def test_fpisa_a_maps_on_the_extended_machine_both_ways(extended):
    tables = map_program("fpisa-a", extended)
    variable = map_program("fpisa-a-varshift", extended)
    assert tables.elements_per_pass == 1
    # the two-operand shift replaces ~32 actions by one per direction
    align = next(op for s in variable.program.lane for op in s.ops if op.name == "align")
    assert align.instructions == 2
    assert variable.elements_per_pass > tables.elements_per_pass


def test_fpisa_a_on_banzai_lacks_tables_and_saturation():
    with pytest.raises(MappingError) as e:
        map_program("fpisa-a", get_machine("banzai"))
    assert e.value.reason == NOT_EXPRESSIVE
    assert "ternary" in e.value.detail and "saturate" in e.value.detail


# -------------------------------------------------------------- FPISA
@pytest.mark.parametrize("machine", ["banzai", "tofino1"])
def test_fpisa_rsaw_does_not_map_without_the_extension(machine):
    with pytest.raises(MappingError) as e:
        map_program("fpisa", get_machine(machine))
    assert e.value.reason == NOT_EXPRESSIVE
    assert "mantissa_register" in e.value.detail and "shift-stored" in e.value.detail


def test_fpisa_maps_on_the_extended_machine(extended):
    mapping = map_program("fpisa", extended)
    assert mapping.elements_per_pass >= 1
    rsaw = next(op for s in mapping.program.lane for op in s.ops if op.name == "mantissa_register")
    assert StatefulFeature.SHIFT_STORED in rsaw.needs
    # each element needs an exponent and a mantissa register
    assert mapping.stateful_alus_used == 2 * mapping.lanes + 1


def test_tofino_with_only_a_variable_shift_still_rejects_fpisa(tofino, extended):
    """Both proposed changes matter: the shift alone does not give RSAW."""
    half = replace(tofino, stateless_alu=extended.stateless_alu)
    map_program("fpisa-a-varshift", half)
    with pytest.raises(MappingError, match="shift-stored"):
        map_program("fpisa", half)


# ------------------------------------------------------ pipeline too small
def test_short_pipeline_is_too_small_for_a_lane(extended):
    short = replace(extended, stages=8)
    with pytest.raises(MappingError) as e:
        map_program("fpisa", short)
    assert e.value.reason == TOO_SMALL
    assert "8 stages" in e.value.detail


def test_no_recirculation_limits_packet_size():
    with pytest.raises(MappingError) as e:
        plan_packet("switchml", get_machine("banzai"), 256)
    assert e.value.reason == TOO_SMALL
    assert "recirculation" in e.value.detail


def test_phv_budget_limits_lanes(tofino):
    small = replace(tofino, parser=replace(tofino.parser, phv_bits=tofino.parser.header_bits + 32 * 20))
    mapping = map_program("switchml", small)
    assert mapping.phv_peak_bits <= 32 * 20
    assert mapping.elements_per_pass < map_program("switchml", tofino).elements_per_pass


def test_requested_lanes_beyond_capacity_are_rejected(tofino):
    capacity = map_program("switchml", tofino).lanes
    with pytest.raises(MappingError, match=TOO_SMALL):
        map_program("switchml", tofino, lanes=capacity + 1)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_bad_elements_per_packet(tofino, bad):
    with pytest.raises(ValueError):
        plan_packet("switchml", tofino, bad)


def test_unknown_program(tofino):
    with pytest.raises(ValueError, match="unknown program"):
        build_program("fpu", tofino)


def test_mappings_respect_every_stage_budget(tofino, extended):
    for machine in (tofino, extended):
        for name in ("switchml", "fpisa-a"):
            mapping = map_program(name, machine)
            for usage in mapping.usage:
                assert usage.stateful_alus <= machine.stateful_alus_per_stage
                assert usage.stateless_alus <= machine.stateless_alus_per_stage
                assert usage.instructions <= machine.instruction_slots_per_stage
                assert usage.tcam_blocks <= machine.tcam_blocks_per_stage
            # a lane's steps run in strictly increasing stages
            for lane in range(mapping.lanes):
                stages = mapping.lane_stages(lane)
                assert stages == sorted(set(stages))


def test_narrow_registers_are_not_expressive_enough():
    narrow = get_machine("tofino1", register_bits=16)
    assert narrow.register_bits == 16
    with pytest.raises(MappingError) as e:
        map_program("fpisa-a", narrow)
    assert e.value.reason == NOT_EXPRESSIVE and "32-bit registers" in e.value.detail


def test_host_normalization_frees_stages_for_more_lanes(tofino, extended):
    in_switch = map_program("fpisa", extended)
    raw = map_program("fpisa-raw", extended)
    assert len(raw.program.lane) == len(in_switch.program.lane) - 5
    assert raw.lanes > in_switch.lanes
    with pytest.raises(MappingError, match="shift-stored"):
        map_program("fpisa-raw", tofino)


def test_balanced_strategy_fits_lanes_that_alap_strands(extended):
    """ALAP piles FPISA's stateful steps into stages 3-6 and strands stage 2;
    the load-balanced placement uses it, and a request for that many lanes
    still maps."""
    from hw_model.mapper import _place_lane_alap, _replicate

    alap_lanes = _replicate(build_program("fpisa", extended), extended, None, _place_lane_alap)[2]
    best = map_program("fpisa", extended)
    assert best.lanes > alap_lanes
    assert map_program("fpisa", extended, lanes=best.lanes).lanes == best.lanes
    # whole stages of SwitchML lanes are still what the layout shows
    assert set(value_lane_stages(plan_packet("switchml", get_machine("tofino1"), 64).mapping).values()) == {4}
