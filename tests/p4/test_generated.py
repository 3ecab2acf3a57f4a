"""The generated P4 sources are up to date and say what Python says."""

import re

import pytest

import numpy as np

import fpisa
import p4
from fpisa import protocol, registers
from fpisa.formats import RegisterLayout
from p4 import generate

FORMATS = list(p4.P4_FORMATS)


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
    for i, name in enumerate(p4.SWITCH_COUNTERS):
        assert f"const bit<32> C_{name.upper()} = {i};" in text
    for flag in ("POS_INF", "NEG_INF", "NAN", "OVERFLOW", "OVERWRITE"):
        assert f"ELEMENT_{flag} = {getattr(registers, 'ELEMENT_' + flag)};" in text


def _format_block(fmt: str) -> dict[str, int]:
    """The constants of ``fmt``'s block in generated/format.p4 (name -> value)."""
    text = generate.format_constants()
    define = p4.P4_FORMATS[fmt].define
    if fmt == p4.DEFAULT_FORMAT:
        block = text.split("#else")[1].split("#endif")[0]
    else:
        block = text.split(f"defined({define})\n", 1)[1].split("#elif")[0].split("#else")[0]
    values = {name: int(v, 0) for name, v in re.findall(r"#define (\w+) (\d+)\n", block)}
    values.update({name: int(v, 0) for name, v in re.findall(r"const bit<\d+> (\w+) = (\w+);", block)})
    return values


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_constants_are_the_numerics_core_s(fmt):
    f = fpisa.FORMATS[fmt]
    c = _format_block(fmt)
    assert c["ELEMENT_BITS"] == f.storage_bits
    assert c["EXPONENT_BITS"] == f.exponent_bits
    assert c["FRACTION_BITS"] == f.fraction_bits
    assert c["EXPONENT_ALL_ONES"] == f.exponent_all_ones
    assert c["FRACTION_MASK"] == (1 << f.fraction_bits) - 1
    assert c["FORMAT_CODE"] == protocol.format_code(fmt)
    assert c["HEADROOM_BITS"] == RegisterLayout.of(fmt, p4.REGISTER_BITS).headroom_bits
    assert c["DATA_UDP_LENGTH"] == 8 + protocol.HEADER_BYTES + f.storage_bytes * p4.N_ELEMENTS
    # the special results are what the numerics core reads out of the flags
    flags = np.array([registers.ELEMENT_NAN, registers.ELEMENT_POS_INF | registers.ELEMENT_NEG_INF,
                      registers.ELEMENT_POS_INF, registers.ELEMENT_NEG_INF], np.uint8)
    got = fpisa.normalize(np.ones(4, np.int64), np.zeros(4, np.int64), fmt, element_flags=flags)
    assert [int(x) for x in got] == [c["RESULT_NAN"], c["RESULT_NAN"], c["RESULT_POS_INF"],
                                     c["RESULT_NEG_INF"]]


def test_format_blocks_are_selected_by_one_define_each():
    text = generate.format_constants()
    for fmt, f in p4.P4_FORMATS.items():
        if fmt != p4.DEFAULT_FORMAT:
            assert f"defined({f.define})" in text
            assert f"-D{f.define}" in " ".join(
                f"-D{d}" for p in p4.PROGRAMS.values() if p.fmt == fmt for d in p.defines)
    assert "#error" in text  # two formats at once


def test_every_float_source_is_built_for_every_format():
    for source in ("fpisa", "fpisa_a"):
        builds = {fmt: p4.program_for(source, fmt) for fmt in FORMATS}
        assert {b.fmt for b in builds.values()} == set(FORMATS)
        assert {b.source for b in builds.values()} == {p4.P4_DIR / f"{source}.p4"}
        assert len({b.json_path for b in builds.values()}) == len(FORMATS)
        assert builds["fp32"].name == source and builds["fp32"].defines == ()
    # switchml's payload is int32 whatever the job's format
    assert p4.program_for("switchml", "fp16") is p4.PROGRAMS["switchml"]
    with pytest.raises(ValueError, match="unknown P4 source"):
        p4.program_for("nope")
    with pytest.raises(ValueError, match="unknown format"):
        p4.program_for("fpisa", "fp8")


def test_counter_zero_is_received_so_zero_means_not_dropped():
    # ingress uses drop_counter == 0 for "goes on"
    assert p4.SWITCH_COUNTERS[0] == "received"
    assert len(set(p4.SWITCH_COUNTERS)) == len(p4.SWITCH_COUNTERS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_leading_one_table_covers_every_position_once(fmt):
    text = generate.shift_tables(fmt)
    m = fpisa.FORMATS[fmt].fraction_bits
    entries = re.findall(r"0x([0-9A-F]{8}) &&& 0x([0-9A-F]{8}) : leading_one_(\d+)\(\);", text)
    assert len(entries) == 32
    actions = dict(re.findall(r"action leading_one_(\d+)\(\) \{ significand = ([^;]+);", text))
    for value, mask, p in entries:
        value, mask, p = int(value, 16), int(mask, 16), int(p)
        # every magnitude whose leading one is p matches this entry only
        for magnitude in (1 << p, (1 << (p + 1)) - 1):
            hits = [q for v, m, q in entries if magnitude & int(m, 16) == int(v, 16)]
            assert hits == [str(p)]
            # and its action moves the leading one to bit m (the format's implied one)
            significand = eval(actions[str(p)], {"magnitude": magnitude}) & 0xFFFFFFFF
            assert significand.bit_length() - 1 == m


@pytest.mark.parametrize("fmt", FORMATS)
def test_subnormal_shift_table_covers_the_format_s_fraction(fmt):
    m = fpisa.FORMATS[fmt].fraction_bits
    text = generate.shift_tables(fmt).split("control SubnormalShift")[1]
    assert re.findall(r"(\d+) : shift_left_(\d+)\(\);", text) == [(str(d), str(d)) for d in range(m)]


def _eval_shift_right(statement: str, value: int) -> int:
    """Evaluate the generated P4 statement on a 32-bit value (Python syntax
    is the same for these operators; 32w0 is a 32-bit zero)."""
    expr = statement.removeprefix("value = ").removesuffix(";").replace("32w0", "0")
    return eval(expr, {"value": value}) & 0xFFFFFFFF


@pytest.mark.parametrize("distance", range(32))
def test_align_right_actions_are_arithmetic_shifts(distance):
    statement = generate.arithmetic_shift_right(distance)
    for fmt in FORMATS:
        assert f"action shift_right_{distance}() {{ {statement} }}" in generate.shift_tables(fmt)
    for signed in (0, 1, -1, 5, -5, 2**31 - 1, -(2**31), 0x00ABCDEF, -0x00ABCDEF, 1 << 24):
        want = (signed >> distance) & 0xFFFFFFFF  # Python >> is arithmetic
        assert _eval_shift_right(statement, signed & 0xFFFFFFFF) == want


def test_lanes_instantiate_one_lane_per_element():
    for name in p4.SOURCES:
        text = generate.lanes(name)
        assert len(re.findall(r"\) lane_\d+;", text)) == p4.N_ELEMENTS
        assert len(re.findall(r"lane_\d+\.apply\(", text)) == p4.N_ELEMENTS
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


@pytest.mark.parametrize("fmt", FORMATS)
def test_align_table_selects_the_constant_shift_of_each_alignment_and_distance(fmt):
    text = generate.shift_tables(fmt)
    headroom = p4.P4_FORMATS[fmt].headroom_bits
    codes = {name: int(code) for name, code in re.findall(r"const bit<8> ALIGN_(\w+) = (\d+);", text)}
    assert codes == generate.ALIGNMENTS
    entries = re.findall(r"\(ALIGN_(\w+), (\d+)\) : shift_(right|left)_(\d+)\(\);", text)
    table = {(kind, int(d)): (direction, int(n)) for kind, d, direction, n in entries}
    assert len(table) == len(entries)
    assert table == {**{("RIGHT", d): ("right", d) for d in range(p4.REGISTER_BITS - 1)},
                     **{("LEFT", d): ("left", d) for d in range(1, headroom + 1)}}
    # distances >= 31 (and the alignments that use no shift) take the default
    assert f"default_action = shift_right_{p4.REGISTER_BITS - 1}();" in text
    for d in range(1, headroom + 1):
        assert f"action shift_left_{d}() {{ value = value << {d}; }}" in text
