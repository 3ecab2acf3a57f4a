"""The generated P4 sources are up to date and say what Python says."""

import functools
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
    entries = re.findall(r"0x([0-9A-F]{8}) &&& 0x([0-9A-F]{8}) : set_leading_one\((\d+)\);", text)
    assert len(entries) == 32
    for value, mask, p in entries:
        value, mask, p = int(value, 16), int(mask, 16), int(p)
        # every magnitude whose leading one is p matches this entry only
        for magnitude in (1 << p, (1 << (p + 1)) - 1):
            hits = [q for v, m, q in entries if magnitude & int(m, 16) == int(v, 16)]
            assert hits == [str(p)]
    assert "default_action = set_leading_one(0);" in text  # a zero magnitude


def _control(text: str, name: str) -> str:
    return text[text.index(f"control {name}("):].split("\n}\n", 1)[0]


def _actions(control: str) -> dict:
    """action name -> a function of the value (the P4 expression in Python
    syntax: the same operators; 64w0 / 32w0 are zeros), 64 bits."""
    out = {}
    for name, body in re.findall(r"action (\w+)\(\) \{ ?(.*?) ?\}", control):
        if not body:
            out[name] = lambda v: v
            continue
        target, expr = body.rstrip(";").split(" = ", 1)
        expr = re.sub(r"\b\d+w0\b", "0", expr)
        out[name] = (lambda e, t: lambda v: eval(e, {t: v}) & (2**64 - 1))(compile(expr, name, "eval"), target)
    return out


def _lookup(control: str, *keys: int) -> str:
    """The action a table of the control picks for the key values (exact,
    `&&&` ternary, `field & mask` keys), else its default."""
    table = re.search(r"key = \{(.*?)\}", control).group(1)
    masks = [int(m.group(1), 0) if (m := re.search(r"& (\w+) :", k + " :")) else None
             for k in table.split(";") if k.strip()]
    consts = {n: int(c) for n, c in re.findall(r"const bit<8> ALIGN_(\w+) = (\d+);", generate.shift_tables())}
    for entry, action in re.findall(r"^\s*\(?([^:{}]*?)\)? : (\w+)\(\);", control, re.M):
        parts = [p.strip() for p in entry.split(",")]
        ok = True
        for part, key, mask in zip(parts, keys, masks):
            key = key & mask if mask is not None else key
            if "&&&" in part:
                v, m = (int(x, 0) for x in part.split("&&&"))
                ok &= key & m == v
            else:
                ok &= key == (consts[part[6:]] if part.startswith("ALIGN_") else int(part, 0))
        if ok:
            return action
    return re.search(r"default_action = (\w+)\(", control).group(1)


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


@pytest.mark.parametrize("fmt", FORMATS)
def test_align_tables_shift_by_the_distance_of_each_alignment(fmt):
    # fpisa_a: (alignment, distance = (E - e) mod 256) -> a coarse then a fine
    # constant shift of the 64-bit incoming value (shift_tables_<fmt>.p4)
    text = generate.shift_tables(fmt)
    codes = {name: int(code) for name, code in re.findall(r"const bit<8> ALIGN_(\w+) = (\d+);", text)}
    assert codes == generate.ALIGNMENTS
    coarse, fine = _control(text, "AlignCoarse"), _control(text, "AlignFine")
    coarse_actions, fine_actions = _actions(coarse), _actions(fine)
    m = fpisa.FORMATS[fmt].fraction_bits
    values = [0, 1, -1, (1 << m), -(1 << m), (1 << (m + 1)) - 1, -((1 << (m + 1)) - 1), 0x5A5 & ((1 << m) - 1),
              -(0x5A5 & ((1 << m) - 1))]

    lookup = functools.cache(_lookup)

    def align(kind: str, distance: int, value: int) -> int:
        v = value & (2**64 - 1)
        v = coarse_actions[lookup(coarse, codes[kind], distance)](v)
        v = fine_actions[lookup(fine, codes[kind], distance)](v)
        return _signed64(v)

    for s in values:
        for d in range(256):  # e <= E: right by d (any longer shift gives the same 0 or -1)
            assert align("RIGHT", d, s) == s >> d, (s, d)
        for k in range(1, p4.P4_FORMATS[fmt].headroom_bits + 1):  # 0 < e - E <= h: left by k
            assert align("LEFT", (-k) % 256, s) == s << k, (s, k)
        for kind in ("WRITE", "OVERWRITE"):  # the value unshifted
            for d in range(256):
                assert align(kind, d, s) == s


@pytest.mark.parametrize("fmt", FORMATS)
def test_normalize_tables_shift_the_magnitude_by_the_key(fmt):
    # fpisa_a read-out: key = s + NORMALIZE_OFFSET -> |A| * 2^s, truncating
    text = generate.shift_tables(fmt)
    offset = int(re.search(r"const bit<8> NORMALIZE_OFFSET = (\d+);", text).group(1))
    fine, coarse = _control(text, "NormalizeFine"), _control(text, "NormalizeCoarse")
    fine_actions, coarse_actions = _actions(fine), _actions(coarse)
    m, w = fpisa.FORMATS[fmt].fraction_bits, p4.REGISTER_BITS
    for s in range(-(w - 1 - m), m + 1):
        key = s + offset
        for magnitude in (1, 3, 0x00ABCDEF, (1 << (w - 1)), (1 << w) - 1):
            if magnitude.bit_length() - 1 + s > m:  # never asked: the leading one lands above bit m
                continue
            v = fine_actions[_lookup(fine, key)](magnitude)
            v = coarse_actions[_lookup(coarse, key)](v)
            want = magnitude << s if s >= 0 else magnitude >> -s
            assert v == want, (s, magnitude)


@pytest.mark.parametrize("distance", range(64))
def test_arithmetic_shift_right_statements(distance):
    statement = generate.arithmetic_shift_right(distance, 64)
    expr = statement.removeprefix("value = ").removesuffix(";").replace("64w0", "0")
    for signed in (0, 1, -1, 5, -5, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 0x00ABCDEF, -0x00ABCDEF):
        assert eval(expr, {"value": signed & (2**64 - 1)}) & (2**64 - 1) == (signed >> distance) & (2**64 - 1)


def _wire_macros(fmt: str) -> dict:
    """name -> a Python function of format.p4's WIRE_* / BITS_TO_WIRE /
    RESULT_SIGN macros for ``fmt`` (the P4 expression in Python syntax; a cast
    to bit<N> is a mask, applied where the cast is), and the WIRE_ constants."""
    block = generate.wire_macros(p4.P4_FORMATS[fmt])
    consts = {n: int(v, 0) for line in block for n, v in re.findall(r"const bit<32> (\w+) = (\w+);", line)}
    out = dict(consts)
    for line in block:
        m = re.match(r"#define (\w+)\((\w)\) (.*?)(  //.*)?$", line)
        if not m:
            continue
        name, arg, expr = m.group(1), m.group(2), m.group(3)
        # (bit<N>)(...) -> _cast(N, ...): the cast applies to the parenthesized operand
        expr = re.sub(r"\(bit<(\d+)>\)\(", r"_cast(\1, ", expr)
        assert "bit<" not in expr, expr
        env = {"_cast": lambda n, x: x & ((1 << n) - 1), **consts}
        out[name] = (lambda e, a, env: lambda v: eval(e, {**env, a: v}) & 0xFFFFFFFF)(
            compile(expr, name, "eval"), arg, env)
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_wire_macros_decode_and_encode_every_value_like_the_numerics_core(fmt):
    # decode.p4 and normalize.p4 read the fields straight from the wire word
    # (the element header field: the little-endian bytes read big-endian)
    f = fpisa.FORMATS[fmt]
    n, m, e = f.storage_bytes, f.fraction_bits, f.exponent_bits
    macros = _wire_macros(fmt)
    rng = np.random.default_rng(13)
    bits_values = (range(1 << 16) if n == 2 else
                   [int(x) for x in rng.integers(0, 1 << 32, 20_000)]
                   + [0, 1, 0x7F800000, 0xFF800000, 0x7FC00000, 0x007FFFFF, 0x80000000, 0x00800000])
    for bits in bits_values:
        wire = int.from_bytes(bits.to_bytes(n, "little"), "big")
        biased = (bits >> m) & ((1 << e) - 1)
        assert macros["WIRE_BIASED"](wire) == biased
        assert macros["WIRE_FRACTION_BITS"](wire) == bits & ((1 << m) - 1)
        assert macros["WIRE_SIGN_TWICE"](wire) == 2 * (bits >> (8 * n - 1))
        assert bool(macros["WIRE_IS_SPECIAL"](wire)) == (biased == f.exponent_all_ones)
        assert bool(macros["WIRE_FRACTION_NONZERO"](wire)) == (bits & ((1 << m) - 1) != 0)
        assert macros["BITS_TO_WIRE"](bits) == wire
        assert (wire >> 7) & 1 == bits >> (8 * n - 1)  # SpecialElement's w[7:7]
    for register in (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x12345678, 0x87654321):
        assert macros["RESULT_SIGN"](register) == (register >> 31) << (8 * n - 1)


def test_lanes_instantiate_one_lane_per_element():
    for name in p4.SOURCES:
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
        assert f"hdr.elements.value_{p4.N_ELEMENTS - 1}" in text


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
