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


def _destination_bits(spec, prim) -> int | None:
    params = prim["parameters"]
    if prim["op"] == "register_write":
        name = params[0]["value"]
        return next(r["bitwidth"] for r in spec["register_arrays"] if r["name"] == name)
    if prim["op"] == "assign" and params[0]["type"] == "field":
        header = next(h for h in spec["headers"] if h["name"] == params[0]["value"][0])
        fields = next(t for t in spec["header_types"] if t["name"] == header["header_type"])["fields"]
        return next(f[1] for f in fields if f[0] == params[0]["value"][1])
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
    fields = {}
    for header in spec["headers"]:
        t = next(t for t in spec["header_types"] if t["name"] == header["header_type"])
        for f in t["fields"]:
            if isinstance(f[1], int):
                fields[(header["name"], f[0])] = f[1]
        fields[(header["name"], "$valid$")] = 1  # BMv2's own field of every header
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
    out, stats = optimize(spec)
    assert stats.ops_after < 0.8 * stats.ops_before, stats
    rng = random.Random(name)
    # the actions with the most expressions first; every action a few times
    _check_same(spec, out, rng, trials=3)


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
