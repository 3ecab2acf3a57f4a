"""The generated P4 sources are up to date and say what Python says."""

import re

import pytest

import p4
from fpisa import protocol, registers
from p4 import generate


def test_generated_files_are_up_to_date():
    stale = generate.stale_files()
    assert not stale, f"run `fpisa p4 constants` (python -m p4.generate): stale {stale}"


def test_constants_file_is_the_protocol_definition():
    assert (p4.INCLUDE_DIR / "constants.p4").read_text() == protocol.p4_constants()


def test_agg_header_has_the_protocol_field_widths_in_order():
    text = generate.agg_header()
    widths = [int(w) for w in re.findall(r"bit<(\d+)>", text)]
    assert sum(widths) == 8 * protocol.HEADER_BYTES
    names = re.findall(r"bit<\d+> (\w+);", text)
    flat = []
    for name, *_ in protocol.HEADER_FIELDS:
        flat += [sub for sub, _ in generate._SPLIT_FIELDS.get(name, [(name, 0)])]
    assert names == flat


def test_configuration_constants():
    text = generate.configuration()
    assert f"#define N_ELEMENTS {p4.N_ELEMENTS}" in text
    assert f"DATA_UDP_LENGTH = {8 + protocol.HEADER_BYTES + 4 * p4.N_ELEMENTS};" in text
    for i, name in enumerate(p4.SWITCH_COUNTERS):
        assert f"const bit<32> C_{name.upper()} = {i};" in text
    for flag in ("POS_INF", "NEG_INF", "NAN", "OVERFLOW", "OVERWRITE"):
        assert f"ELEMENT_{flag} = {getattr(registers, 'ELEMENT_' + flag)};" in text


def test_counter_zero_is_received_so_zero_means_not_dropped():
    # ingress uses drop_counter == 0 for "goes on"
    assert p4.SWITCH_COUNTERS[0] == "received"
    assert len(set(p4.SWITCH_COUNTERS)) == len(p4.SWITCH_COUNTERS)


def test_leading_one_table_covers_every_position_once():
    text = generate.shift_tables()
    entries = re.findall(r"0x([0-9A-F]{8}) &&& 0x([0-9A-F]{8}) : leading_one_(\d+)\(\);", text)
    assert len(entries) == 32
    for value, mask, p in entries:
        value, mask, p = int(value, 16), int(mask, 16), int(p)
        # every magnitude whose leading one is p matches this entry only
        for magnitude in (1 << p, (1 << (p + 1)) - 1):
            hits = [q for v, m, q in entries if magnitude & int(m, 16) == int(v, 16)]
            assert hits == [str(p)]


def _eval_shift_right(statement: str, value: int) -> int:
    """Evaluate the generated P4 statement on a 32-bit value (Python syntax
    is the same for these operators; 32w0 is a 32-bit zero)."""
    expr = statement.removeprefix("value = ").removesuffix(";").replace("32w0", "0")
    return eval(expr, {"value": value}) & 0xFFFFFFFF


@pytest.mark.parametrize("distance", range(32))
def test_align_right_actions_are_arithmetic_shifts(distance):
    statement = generate.arithmetic_shift_right(distance)
    assert f"action shift_right_{distance}() {{ {statement} }}" in generate.shift_tables()
    for signed in (0, 1, -1, 5, -5, 2**31 - 1, -(2**31), 0x00ABCDEF, -0x00ABCDEF, 1 << 24):
        want = (signed >> distance) & 0xFFFFFFFF  # Python >> is arithmetic
        assert _eval_shift_right(statement, signed & 0xFFFFFFFF) == want


def test_lanes_instantiate_one_lane_per_element():
    for name, program in p4.PROGRAMS.items():
        text = generate.lanes(name)
        instances = re.findall(r"\) (\w+?)_(\d+);", text)
        kinds = {kind for kind, _ in instances}
        assert kinds, name
        for kind in kinds:
            # every lane control (and register) exists once per element
            assert sorted(int(i) for k, i in instances if k == kind) == list(range(p4.N_ELEMENTS)), (name, kind)
            applied = re.findall(rf"\b{kind}_(\d+)\.apply\(", text)
            if applied:
                assert sorted(set(int(i) for i in applied)) == list(range(p4.N_ELEMENTS)), (name, kind)
        assert f"hdr.elements[{p4.N_ELEMENTS - 1}]" in text


def test_every_include_exists():
    for program in p4.PROGRAMS.values():
        seen, todo = set(), [program.source]
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            for inc in re.findall(r'#include "([^"]+)"', path.read_text()):
                target = path.parent / inc
                assert target.exists(), f"{path}: #include {inc} does not exist"
                todo.append(target)
        assert program.lanes_file in seen


def test_align_table_selects_the_constant_shift_of_each_alignment_and_distance():
    text = generate.shift_tables()
    codes = {name: int(code) for name, code in re.findall(r"const bit<8> ALIGN_(\w+) = (\d+);", text)}
    assert codes == generate.ALIGNMENTS
    entries = re.findall(r"\(ALIGN_(\w+), (\d+)\) : shift_(right|left)_(\d+)\(\);", text)
    table = {(kind, int(d)): (direction, int(n)) for kind, d, direction, n in entries}
    assert len(table) == len(entries)
    assert table == {**{("RIGHT", d): ("right", d) for d in range(p4.REGISTER_BITS - 1)},
                     **{("LEFT", d): ("left", d) for d in range(1, p4.HEADROOM_BITS + 1)}}
    # distances >= 31 (and the alignments that use no shift) take the default
    assert f"default_action = shift_right_{p4.REGISTER_BITS - 1}();" in text
    for d in range(1, p4.HEADROOM_BITS + 1):
        assert f"action shift_left_{d}() {{ value = value << {d}; }}" in text
