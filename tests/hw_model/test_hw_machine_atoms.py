"""Machine presets, their validation, and the atoms' word semantics."""

from dataclasses import replace

import pytest

from hw_model.atoms import (
    STATEFUL_ATOMS,
    STATELESS_ALUS,
    StatefulFeature,
    StatelessFeature,
    add,
    saturating_add,
    shift_left,
    shift_right,
    shift_right_logical,
    wrap,
)
from hw_model.machine import PRESETS, get_machine


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_cite_sources_and_describe_themselves(name):
    machine = get_machine(name)
    assert machine.sources
    summary = machine.summary()
    assert summary["name"] == name
    assert summary["stateful_atom"] == machine.stateful_atom.name


def test_tofino_preset_facts():
    t = get_machine("tofino1")
    assert (t.stages, t.stateful_alus_per_stage, t.register_bits) == (12, 4, 32)
    assert t.stateful_atom.words == 2  # 64-bit pairs
    assert StatelessFeature.VAR_SHIFT not in t.stateless_alu.features
    assert StatefulFeature.SHIFT_STORED not in t.stateful_atom.features
    assert t.ternary_tables and t.recirculation
    assert t.clock_hz == pytest.approx(1.27e9)
    assert (t.ports, t.port_gbps) == (16, 100.0)


def test_extended_preset_is_tofino_plus_the_two_changes():
    t, x = get_machine("tofino1"), get_machine("fpisa-extended")
    assert x.stateless_alu.features - t.stateless_alu.features == {StatelessFeature.VAR_SHIFT}
    assert x.stateful_atom.features - t.stateful_atom.features == {StatefulFeature.SHIFT_STORED}
    assert replace(x, name=t.name, description=t.description, sources=t.sources,
                   stateless_alu=t.stateless_alu, stateful_atom=t.stateful_atom) == t


def test_banzai_preset():
    b = get_machine("banzai")
    assert b.clock_hz == 1e9
    assert StatelessFeature.VAR_SHIFT in b.stateless_alu.features
    assert not b.ternary_tables and not b.recirculation


def test_fpisa_paper_areas_are_the_defaults():
    assert STATELESS_ALUS["tofino-vliw"].area_um2 == 505.4
    assert STATELESS_ALUS["fpisa-alu"].area_um2 == 618.6
    assert STATEFUL_ATOMS["raw"].area_um2 == 468.8
    assert STATEFUL_ATOMS["fpisa-rsaw"].area_um2 == 633.0


def test_domino_templates_grow_in_expressiveness():
    chain = ["write", "raw", "praw", "if-else-raw", "sub", "nested", "pairs", "tofino-salu", "fpisa-rsaw"]
    for weaker, stronger in zip(chain, chain[1:]):
        assert STATEFUL_ATOMS[weaker].features < STATEFUL_ATOMS[stronger].features


@pytest.mark.parametrize("override", [
    {"stages": 0}, {"clock_hz": -1.0}, {"stateful_alus_per_stage": 2.5},
    {"instruction_slots_per_stage": 0}, {"recirculation_gbps": 0.0},
])
def test_invalid_parameters_are_refused(override):
    with pytest.raises(ValueError):
        get_machine("tofino1", **override)


def test_unknown_machine_and_parameter():
    with pytest.raises(ValueError, match="unknown machine"):
        get_machine("tofino9")
    with pytest.raises(ValueError, match="unknown machine parameter"):
        get_machine("tofino1", warp_drive=True)


def test_overrides_apply():
    assert get_machine("tofino1", stages=20).stages == 20


# ------------------------------------------------------------ word semantics
def test_wrap_and_add_are_twos_complement():
    assert wrap(2**31) == -(2**31)
    assert add(2**31 - 1, 1) == -(2**31)
    assert add(-5, 3) == -2


def test_saturating_add_clamps_both_ways():
    assert saturating_add(2**31 - 1, 5) == 2**31 - 1
    assert saturating_add(-(2**31), -5) == -(2**31)
    assert saturating_add(7, -9) == -2


def test_shifts_clamp_and_keep_the_sign():
    assert shift_right(-5, 1) == -3  # arithmetic: floor(-5 / 2)
    assert shift_right(-5, 200) == -1
    assert shift_right(5, 200) == 0
    assert shift_right_logical(2**31, 8) == 2**23  # magnitudes stay unsigned
    assert shift_left(3, 30) == -(2**30)
    with pytest.raises(ValueError):
        shift_right(1, -1)
