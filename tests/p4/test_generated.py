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
        out[name] = (lambda e, t: lambda v: eval(e, {t: v}) & (2**64 - 1))(expr, target)
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


def test_align_tables_shift_by_the_distance_of_each_alignment():
    # fpisa_a: (alignment, distance = (E - e) mod 256) -> a coarse then a fine
    # constant shift of the 64-bit incoming value (shift_tables.p4)
    text = generate.shift_tables()
    codes = {name: int(code) for name, code in re.findall(r"const bit<8> ALIGN_(\w+) = (\d+);", text)}
    assert codes == generate.ALIGNMENTS
    coarse, fine = _control(text, "AlignCoarse"), _control(text, "AlignFine")
    coarse_actions, fine_actions = _actions(coarse), _actions(fine)
    m = generate.FRACTION_BITS
    values = [0, 1, -1, (1 << m), -(1 << m), (1 << (m + 1)) - 1, -((1 << (m + 1)) - 1), 0x00ABCDEF, -0x00ABCDEF]

    def align(kind: str, distance: int, value: int) -> int:
        v = value & (2**64 - 1)
        v = coarse_actions[_lookup(coarse, codes[kind], distance)](v)
        v = fine_actions[_lookup(fine, codes[kind], distance)](v)
        return _signed64(v)

    for s in values:
        for d in range(256):  # e <= E: right by d (any longer shift gives the same 0 or -1)
            assert align("RIGHT", d, s) == s >> d, (s, d)
        for k in range(1, p4.HEADROOM_BITS + 1):  # 0 < e - E <= h: left by k
            assert align("LEFT", (-k) % 256, s) == s << k, (s, k)
        for kind in ("WRITE", "OVERWRITE"):  # the value unshifted
            for d in range(256):
                assert align(kind, d, s) == s


def test_normalize_tables_shift_the_magnitude_by_the_key():
    # fpisa_a read-out: key = s + NORMALIZE_OFFSET -> |A| * 2^s, truncating
    text = generate.shift_tables()
    offset = int(re.search(r"const bit<8> NORMALIZE_OFFSET = (\d+);", text).group(1))
    fine, coarse = _control(text, "NormalizeFine"), _control(text, "NormalizeCoarse")
    fine_actions, coarse_actions = _actions(fine), _actions(coarse)
    m, w = generate.FRACTION_BITS, p4.REGISTER_BITS
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
