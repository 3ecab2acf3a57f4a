"""p4.bmv2_opt changes no value: checked against an evaluator of BMv2's
expression semantics (unbounded integers, floor shifts, two's-complement
bitwise operators, bm_sim/data.h's two_comp_mod, destinations that keep their
low width bits), on random expression trees and, when p4c is there, on every
expression of the compiled programs."""

from __future__ import annotations

import copy
import json
import random
import shutil

import pytest

import p4
from p4.bmv2_opt import count_ops, optimize


def _two_comp_mod(x: int, width: int) -> int:
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if lo <= x <= hi:
        return x
    x &= (1 << width) - 1
    return x - (1 << width) if x > hi else x


def evaluate(node, env: dict, runtime: list[int] | None = None):
    """BMv2's value of a typed expression node (ints for data, bools for bools)."""
    kind = node["type"]
    if kind == "field":
        return env[tuple(node["value"])]
    if kind == "hexstr":
        return int(node["value"], 16)
    if kind == "bool":
        return bool(node["value"])
    if kind == "runtime_data":
        return runtime[node["value"]]
    assert kind == "expression", kind
    v = node["value"]
    if "op" not in v:
        return evaluate(v, env, runtime)
    op = v["op"]
    if op == "?":
        return evaluate(v["left"] if evaluate(v["cond"], env, runtime) else v["right"], env, runtime)
    a = evaluate(v["left"], env, runtime) if v.get("left") is not None else None
    b = evaluate(v["right"], env, runtime) if v.get("right") is not None else None
    if op in ("and", "or"):
        return (a and b) if op == "and" else (a or b)
    table = {
        "+": lambda: b if a is None else a + b,
        "-": lambda: -b if a is None else a - b,
        "*": lambda: a * b, "<<": lambda: a << b, ">>": lambda: a >> b,
        "&": lambda: a & b, "|": lambda: a | b, "^": lambda: a ^ b, "~": lambda: ~b,
        "two_comp_mod": lambda: _two_comp_mod(a, b),
        "==": lambda: a == b, "!=": lambda: a != b, ">": lambda: a > b, ">=": lambda: a >= b,
        "<": lambda: a < b, "<=": lambda: a <= b,
        "not": lambda: not b, "d2b": lambda: b != 0, "b2d": lambda: int(bool(b)),
    }
    return table[op]()


# -- random programs ----------------------------------------------------------------

WIDTHS = {"a": 8, "b": 16, "c": 32, "d": 1, "e": 48, "f": 64, "s": 5}


def _field(name):
    return {"type": "field", "value": ["h", name]}


def _hex(value):
    return {"type": "hexstr", "value": ("-0x%x" % -value) if value < 0 else ("0x%x" % value)}


def _op(op, left, right, cond=None):
    value = {"op": op, "left": left, "right": right}
    if cond is not None:
        value["cond"] = cond
    return {"type": "expression", "value": value}


def _mask(rng):
    return _hex(rng.choice([(1 << rng.choice([1, 5, 8, 16, 23, 31, 32, 48, 64])) - 1,
                            0x7F00, 0xFF00, 0x80000000, 0x2, 0x00FF0000, rng.randrange(1 << 32)]))


def random_data(rng, depth):
    if depth == 0 or rng.random() < 0.2:
        if rng.random() < 0.7:
            return _field(rng.choice(sorted(WIDTHS)))
        return _hex(rng.choice([0, 1, 2, 0x17, 0xFF, 0xFFE8, 0x7F800000, rng.randrange(1 << 32)]))
    kind = rng.random()
    sub = lambda: random_data(rng, depth - 1)  # noqa: E731
    if kind < 0.35:  # the p4c pattern: an operation and its mask
        op = rng.choice(["+", "-", "*", "<<", ">>", "|", "^", "&"])
        # shift distances: constants or a 5-bit field (as in the programs)
        right = (rng.choice([_hex(rng.randrange(0, 40)), _field("s")]) if op in ("<<", ">>")
                 else _hex(rng.randrange(0, 40)) if rng.random() < 0.5 else sub())
        return _op("&", _op(op, sub(), right), _mask(rng))
    if kind < 0.5:
        return _op("&", sub(), _mask(rng))
    if kind < 0.6:
        return _op("two_comp_mod", sub(), _hex(rng.choice([7, 8, 16, 23, 31, 32, 48, 64])))
    if kind < 0.7:
        return _op(rng.choice([">>", "<<"]), sub(), rng.choice([_field("s"), _hex(rng.randrange(0, 33))]))
    if kind < 0.8:
        return _op("?", sub(), sub(), cond=_op(rng.choice([">", "==", "!=", ">="]), sub(), sub()))
    if kind < 0.83:  # headers.p4's SELECT(W, c, a, b) = b + (a - b) * (bit<W>)(bit<1>)c, p4c's masks
        bit = _op("?", _hex(1), _hex(0), cond=_op(rng.choice([">", "=="]), sub(), sub()))
        a, b = sub(), sub()
        diff = _op("-", a, b) if rng.random() < 0.7 else _op("-", b, a)  # b - a: not a select
        w = _hex(rng.choice([0xFF, 0xFFFF, 0xFFFFFFFF]))
        return _op("&", _op("+", b, _op("&", _op("*", _op("&", diff, w), _op("&", bit, w)), w)), w)
    if kind < 0.85:
        return _op("~", None, sub())
    if kind < 0.9:
        return _op("-", None, sub())
    return _op(rng.choice(["+", "-", "*", "|", "^", "&"]), sub(), sub())


def random_spec(rng, n=40):
    primitives = []
    for _ in range(n):
        src = {"type": "expression", "value": random_data(rng, 5)}
        if rng.random() < 0.2:
            primitives.append({"op": "register_write", "parameters": [
                {"type": "register_array", "value": "r"}, _field("s"), src]})
        else:
            dst = rng.choice(sorted(WIDTHS))
            primitives.append({"op": "assign", "parameters": [_field(dst), src]})
    cond = _op(">", random_data(rng, 4), random_data(rng, 4))
    return {
        "header_types": [{"name": "h_t", "id": 0,
                          "fields": [[name, width, False] for name, width in sorted(WIDTHS.items())]}],
        "headers": [{"name": "h", "id": 0, "header_type": "h_t"}],
        "register_arrays": [{"name": "r", "id": 0, "size": 32, "bitwidth": 24}],
        "actions": [{"name": "act", "id": 0, "runtime_data": [], "primitives": primitives}],
        "pipelines": [{"name": "ingress", "conditionals": [{"name": "c", "id": 0, "expression": cond}]}],
    }


def _widths(spec) -> dict:
    """(header, field) -> width of every fixed-width field, and BMv2's own
    one-bit $valid$ field of every header."""
    types = {t["name"]: t for t in spec["header_types"]}
    widths = {(h["name"], f[0]): f[1] for h in spec["headers"] for f in types[h["header_type"]]["fields"]
              if isinstance(f[1], int)}
    return widths | {(h["name"], "$valid$"): 1 for h in spec["headers"]}


def _destination_bits(spec, prim) -> int | None:
    params = prim["parameters"]
    if prim["op"] == "register_write":
        name = params[0]["value"]
        return next(r["bitwidth"] for r in spec["register_arrays"] if r["name"] == name)
    if prim["op"] == "assign" and params[0]["type"] == "field":
        return _widths(spec)[tuple(params[0]["value"])]
    return None


def stored(spec, prim, env, runtime=None):
    """What each expression parameter of a primitive puts where it goes: the
    destination's low bits for assign / register_write, else the value."""
    bits = _destination_bits(spec, prim)
    values = []
    for i, param in enumerate(prim["parameters"]):
        if param.get("type") != "expression":
            continue
        value = evaluate(param, env, runtime)
        is_source = (prim["op"] == "assign" and i == 1) or (prim["op"] == "register_write" and i == 2)
        values.append(value & ((1 << bits) - 1) if bits is not None and is_source
                      and not isinstance(value, bool) else value)
    return values


def random_env(rng, fields):
    env = {}
    for key, width in fields.items():
        pick = rng.random()
        env[key] = ((1 << width) - 1 if pick < 0.15 else 0 if pick < 0.25
                    else 1 << (width - 1) if pick < 0.35 else rng.randrange(1 << width))
    return env


def _check_same(spec, out, rng, trials):
    fields = _widths(spec)
    for action, new_action in zip(spec["actions"], out["actions"]):
        assert len(action["primitives"]) == len(new_action["primitives"])
        widths = [d.get("bitwidth", 32) for d in action.get("runtime_data", [])]
        for prim, new_prim in zip(action["primitives"], new_action["primitives"]):
            for _ in range(trials):
                env = random_env(rng, fields)
                runtime = [rng.randrange(1 << w) for w in widths]
                try:
                    before = stored(spec, prim, env, runtime)
                except (ValueError, OverflowError, MemoryError):  # a shift by a huge field
                    continue
                assert stored(out, new_prim, env, runtime) == before, (action["name"], prim)


@pytest.mark.parametrize("seed", range(30))
def test_random_programs_keep_their_values(seed):
    rng = random.Random(seed)
    spec = random_spec(rng)
    original = copy.deepcopy(spec)
    out, stats = optimize(spec)
    assert spec == original, "optimize must not change its input"
    _check_same(spec, out, rng, trials=40)
    cond, new_cond = (p["conditionals"][0]["expression"] for p in (spec["pipelines"][0], out["pipelines"][0]))
    for _ in range(200):
        env = random_env(rng, {("h", n): w for n, w in WIDTHS.items()})
        assert evaluate(new_cond, env) == evaluate(cond, env)
    assert stats.ops_after <= stats.ops_before


def test_the_masks_p4c_adds_are_removed():
    # (x >> 15) & 0xffffffff of a 32-bit field, and (bit<8>)(bit<1>)c as (c ? 1 : 0) & 0xff
    shifted = _op("&", _op(">>", _field("c"), _hex(15)), _hex(0xFFFFFFFF))
    as_bit = _op("&", _op("?", _hex(1), _hex(0), cond=_op(">", _field("a"), _field("b"))), _hex(0xFF))
    wrapped = _op("&", _op("+", _field("a"), _field("a")), _hex(0xFF))  # may wrap: kept in an 8-bit compare
    spec = random_spec(random.Random(0), n=0)
    spec["actions"][0]["primitives"] = [
        {"op": "assign", "parameters": [_field("e"), {"type": "expression", "value": _op("|", shifted, as_bit)}]},
        {"op": "assign", "parameters": [_field("a"), {"type": "expression", "value": wrapped}]},
    ]
    spec["pipelines"][0]["conditionals"][0]["expression"] = _op("==", wrapped, _hex(0))
    out, stats = optimize(spec)
    first, second = (p["parameters"][1] for p in out["actions"][0]["primitives"])
    assert count_ops(first) == 4  # |, >>, ?, >: both masks gone
    assert count_ops(second) == 1  # an 8-bit destination keeps the low 8 bits anyway
    assert count_ops(out["pipelines"][0]["conditionals"][0]["expression"]) == 3  # ==, &, +: kept
    assert stats.masks_removed == 3


def test_negative_values_keep_their_masks():
    # a - b can be negative: its mask is needed wherever all its bits matter
    diff = _op("&", _op("-", _field("a"), _field("b")), _hex(0xFF))
    spec = random_spec(random.Random(0), n=0)
    spec["pipelines"][0]["conditionals"][0]["expression"] = _op(">", _op(">>", diff, _hex(1)), _hex(3))
    out, _ = optimize(spec)
    assert count_ops(out["pipelines"][0]["conditionals"][0]["expression"]) == 4


needs_p4c = pytest.mark.skipif(shutil.which("p4c-bm2-ss") is None,
                               reason="p4c-bm2-ss not on PATH (docs/p4.md: P4 toolchain)")


@needs_p4c
@pytest.mark.parametrize("name", ["switchml", "fpisa_fp16", "fpisa_a"])
def test_compiled_programs_keep_their_values(name):
    """Each build's p4c output, before the optimizer, against the optimized JSON
    the build keeps: every action's every expression on random inputs."""
    from emulator.bmv2.build import build_program

    raw = build_program(name, out_dir=p4.BUILD_DIR / "raw", optimize=False)
    assert raw.ok, raw.output
    spec = json.loads(raw.json_path.read_text())
    rng = random.Random(name)
    # every expression, primitive by primitive (without the inlining, which
    # changes the primitives)
    out, stats = optimize(spec, inline=False)
    assert stats.ops_after < 0.8 * stats.ops_before, stats
    _check_same(spec, out, rng, trials=3)
    # with it: each action's effect on everything but its temporaries
    from p4.bmv2_opt import _local_temporaries
    out, stats = optimize(spec)
    assert stats.temporaries_inlined > 0, stats
    temps = _local_temporaries(spec)
    widths = _widths(spec)
    checked = 0
    for action, new_action in zip(spec["actions"], out["actions"]):
        if {p["op"] for p in action["primitives"]} - {"assign", "register_read", "register_write"} \
                or action["runtime_data"] or action["primitives"] == new_action["primitives"]:
            continue
        for _ in range(3):
            env = {k: rng.randrange(1 << w) for k, w in widths.items()}
            env |= {k: 1 for k in widths if k[1] == "$valid$"}  # every header valid
            before = run_action(spec, action, env, {})
            after = run_action(out, new_action, env, {})
            assert {k: v for k, v in after[0].items() if k not in temps} == \
                   {k: v for k, v in before[0].items() if k not in temps}, action["name"]
            assert after[1] == before[1], action["name"]
        checked += 1
    assert checked > 0


# -- action-local temporaries ------------------------------------------------------

TEMPS = {"t8": 8, "t32": 32, "t1": 1}


def _temp(name):
    return {"type": "field", "value": ["m", name]}


def random_temp_action(rng, n=30):
    """An action whose metadata temporaries are always written before they are read."""
    defined, prims = [], []

    def operand():
        if defined and rng.random() < 0.5:
            return _temp(rng.choice(defined))
        return random_data(rng, 2)

    def expr():
        return {"type": "expression", "value": _op(rng.choice(["+", "-", "|", "^", "&", ">>"]), operand(),
                                                     operand() if rng.random() < 0.6 else _hex(3))}

    for _ in range(n):
        kind = rng.random()
        if kind < 0.45:
            name = rng.choice(sorted(TEMPS))
            prims.append({"op": "assign", "parameters": [_temp(name), expr()]})
            defined.append(name)
        elif kind < 0.7:
            prims.append({"op": "assign", "parameters": [_field(rng.choice([k for k in WIDTHS if k != "s"])), expr()]})
        elif kind < 0.85:
            src = _temp(rng.choice(defined)) if defined and rng.random() < 0.7 else expr()
            prims.append({"op": "register_write", "parameters": [
                {"type": "register_array", "value": "r"}, _field("s"), src]})
        else:
            dst = _temp(rng.choice(sorted(TEMPS))) if rng.random() < 0.6 else _field("a")
            prims.append({"op": "register_read", "parameters": [
                dst, {"type": "register_array", "value": "r"}, _field("s")]})
            if dst["value"][0] == "m":
                defined.append(dst["value"][1])
    spec = random_spec(rng, n=0)
    spec["header_types"].append({"name": "m_t", "id": 1, "fields": [[k, w, False] for k, w in sorted(TEMPS.items())]})
    spec["headers"].append({"name": "m", "id": 1, "header_type": "m_t", "metadata": True})
    spec["actions"][0]["primitives"] = prims
    spec["pipelines"][0]["conditionals"][0]["expression"] = _op(">", _field("a"), _hex(3))
    return spec


def run_action(spec, action, env, registers):
    """Execute assign / register_read / register_write as BMv2 does (writes keep
    their destination's width; registers: a list for the one array of the
    random specs, else {(array, index): value}, unset cells read as their index
    mixed with the array's name); returns the new state."""
    env = dict(env)
    registers = list(registers) if isinstance(registers, list) else dict(registers)
    widths = _widths(spec)
    reg_bits = {r["name"]: r["bitwidth"] for r in spec["register_arrays"]}

    def cell(name, index):
        if isinstance(registers, list):
            return index
        return (name, index)

    for prim in action["primitives"]:
        p = prim["parameters"]
        if prim["op"] == "assign":
            key = tuple(p[0]["value"])
            env[key] = evaluate(p[1], env) & ((1 << widths[key]) - 1)
        elif prim["op"] == "register_read":
            key = tuple(p[0]["value"])
            where = cell(p[1]["value"], evaluate(p[2], env))
            stored = registers[where] if isinstance(registers, list) else registers.get(
                where, hash(where) & ((1 << reg_bits[p[1]["value"]]) - 1))
            env[key] = stored & ((1 << widths[key]) - 1)
        else:
            registers[cell(p[0]["value"], evaluate(p[1], env))] = \
                evaluate(p[2], env) & ((1 << reg_bits[p[0]["value"]]) - 1)
    return env, registers


@pytest.mark.parametrize("seed", range(40))
def test_inlined_temporaries_leave_the_same_state(seed):
    rng = random.Random(seed)
    spec = random_temp_action(rng)
    out, stats = optimize(spec)
    fields = {("h", k): w for k, w in WIDTHS.items()}
    for _ in range(60):
        env = random_env(rng, fields) | {("m", k): rng.randrange(1 << w) for k, w in TEMPS.items()}
        registers = [rng.randrange(1 << 24) for _ in range(32)]
        try:
            before = run_action(spec, spec["actions"][0], env, registers)
        except (ValueError, OverflowError, MemoryError):
            continue
        after = run_action(out, out["actions"][0], env, registers)
        # everything but the temporaries, whose values never leave the action
        assert {k: v for k, v in after[0].items() if k[0] == "h"} == \
               {k: v for k, v in before[0].items() if k[0] == "h"}
        assert after[1] == before[1]


def test_temporaries_are_inlined_only_when_nothing_else_sees_them():
    rng = random.Random(3)
    spec = random_temp_action(rng, n=60)
    _, stats = optimize(spec)
    assert stats.temporaries_inlined + stats.dead_assigns > 0
    # a condition that reads t8, and an action that reads t32 before writing it
    seen = copy.deepcopy(spec)
    seen["pipelines"][0]["conditionals"][0]["expression"] = _op(">", _temp("t8"), _hex(3))
    seen["actions"].append({"name": "other", "id": 1, "runtime_data": [], "primitives": [
        {"op": "assign", "parameters": [_field("a"), {"type": "expression", "value": _op("+", _temp("t32"), _hex(1))}]}]})
    from p4.bmv2_opt import _local_temporaries
    assert _local_temporaries(seen) == {("m", "t1")}
    assert _local_temporaries(spec) == {("m", k) for k in TEMPS}
    out, _ = optimize(seen)
    writes = lambda s, name: sum(1 for p in s["actions"][0]["primitives"]  # noqa: E731
                                 if p["op"] in ("assign", "register_read") and p["parameters"][0] == _temp(name))
    assert writes(out, "t8") == writes(seen, "t8") and writes(out, "t32") == writes(seen, "t32")


def test_selects_become_ternaries_and_nothing_else_does():
    bit = _op("?", _hex(1), _hex(0), cond=_op(">", _field("a"), _field("b")))
    a, b = _field("c"), _field("b")
    select = _op("+", b, _op("*", _op("-", a, b), bit))       # SELECT(W, a > b, c, b)
    not_select = _op("+", b, _op("*", _op("-", b, a), bit))   # b + (b - c) * bit
    spec = random_spec(random.Random(0), n=0)
    spec["actions"][0]["primitives"] = [
        {"op": "assign", "parameters": [_field("c"), {"type": "expression", "value": e}]}
        for e in (select, not_select)]
    out, stats = optimize(spec)
    first, second = (p["parameters"][1]["value"]["value"] for p in out["actions"][0]["primitives"])
    assert first["op"] == "?" and first["left"] == a and first["right"] == b
    assert second["op"] == "+"  # only its multiplication by the bit became a ternary
    assert stats.selects == 3  # two multiplications by the bit, then the first select
    _check_same(spec, out, random.Random(1), trials=200)


@pytest.mark.parametrize("width", [1, 4, 5, 7, 8, 9, 16, 31, 32, 33, 64])
def test_two_comp_mod_of_every_field_width(width):
    # as a shift's operand every bit matters: the rewrite must equal two_comp_mod itself
    spec = random_spec(random.Random(0), n=0)
    spec["actions"][0]["primitives"] = [
        {"op": "assign", "parameters": [_field("f"), {"type": "expression", "value": _op(
            ">>", _op("two_comp_mod", source, _hex(width)), _hex(1))}]}
        for source in [*(_field(n) for n in sorted(WIDTHS)), _op("-", _field("a"), _field("c"))]]
    out, stats = optimize(spec)
    assert stats.mods_rewritten + stats.mods_removed == len(spec["actions"][0]["primitives"])
    _check_same(spec, out, random.Random(width), trials=300)


def test_a_boolean_temporary_is_not_inlined():
    # BMv2 masks numbers only: a temporary holding a comparison stays an assign
    spec = random_temp_action(random.Random(0), n=0)
    spec["actions"][0]["primitives"] = [
        {"op": "assign", "parameters": [_temp("t1"), {"type": "expression", "value": _op(">", _field("a"), _field("b"))}]},
        {"op": "assign", "parameters": [_field("c"), {"type": "expression", "value": _op("+", _temp("t1"), _hex(1))}]},
    ]
    out, stats = optimize(spec)
    assert stats.temporaries_inlined == 0 and len(out["actions"][0]["primitives"]) == 2
