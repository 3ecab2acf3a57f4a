"""Rewrite a p4c-bm2-ss JSON program into fewer, cheaper BMv2 operations with the same values.

p4c's BMv2 back end puts a mask (``& 0xff..``) after every arithmetic
operator and cast whose result might not fit its type, and it cannot see
that most of them never change a value: ``(x >> 15) & 0xffffffff`` of a
32-bit field, ``(bit<8>)(bit<1>)c`` as ``((c ? 1 : 0) & 0xff)``, a mask of
a value already masked narrower. Half of all the operations in the
aggregation programs are such ``&`` (fpisa: 74 k of 150 k). BMv2 interprets
every operation on arbitrary-precision numbers, so each one costs about as
much as any other (docs/p4.md, "Speed on BMv2").

:func:`optimize` rewrites only what is equal for every input:

0. Action-local temporaries (:func:`inline_temporaries`): a metadata field
   that only actions use, each writing it before reading it, never carries
   a value out of an action. Its ``assign`` is folded into the one
   primitive that reads it, as the expression masked to its width, when
   nothing in between writes what the expression reads; an ``assign`` that
   nothing reads is dropped. One primitive and one field write fewer each.
1. Bottom up, an interval that contains every value an expression can take
   (fields by their declared width and signedness, constants exactly, each
   operator by BMv2's semantics on unbounded integers: floor shifts,
   two's-complement bitwise operators, ``two_comp_mod`` as in
   ``bm_sim/data.h``). ``x & m`` -> ``x`` when 0 <= x and every bit x can
   have is in m; ``(x & m1) & m2`` -> ``x & (m1 & m2)``;
   ``two_comp_mod(x, w)`` -> ``x`` when x is already in w's signed range.
2. Top down, the bits that matter: a field or register keeps only its low
   width bits of what is assigned to it (BMv2 masks on every write), and
   the low k bits of +, -, *, bitwise operators and a left shift's left
   operand depend only on the operands' low k bits. So a mask that keeps
   at least those bits, or a ``two_comp_mod`` at least that wide, goes.
   Right shifts, comparisons and conditions need every bit.
3. Selects: ``b + (a - b) * (c ? 1 : 0)`` (headers.p4's SELECT after
   step 2) -> ``c ? a : b`` and ``x * (c ? 1 : 0)`` -> ``c ? x : 0``;
   BMv2's ternary evaluates the condition and one branch.
4. The ``two_comp_mod`` left: ``((x & (2^w - 1)) ^ 2^(w-1)) - 2^(w-1)``,
   the mask left out for an unsigned field no wider than w. BMv2's
   two_comp_mod builds three numbers on the heap per call (callgrind: about
   1,300 instructions, several operations' worth).

Every rewrite gives the same value for every input, so the program's
behaviour, and so every output bit, is unchanged; the conformance vectors
check that on BMv2 (tests/conformance), and tests/p4/test_bmv2_opt.py
checks each rewrite against an evaluator of BMv2's semantics on random
trees and on the compiled programs' own expressions.

``python -m p4.bmv2_opt in.json [out.json]`` prints what it removed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["optimize", "optimize_file", "OptStats", "count_ops"]

Range = tuple[int, int] | None

#: shifts by more than this are left alone (the interval would need huge numbers)
_MAX_SHIFT = 4096


@dataclass
class OptStats:
    ops_before: int = 0
    ops_after: int = 0
    masks_removed: int = 0
    masks_merged: int = 0
    mods_removed: int = 0
    selects: int = 0
    mods_rewritten: int = 0
    temporaries_inlined: int = 0
    dead_assigns: int = 0

    def __str__(self) -> str:
        return (f"expression operations {self.ops_before} -> {self.ops_after}: "
                f"{self.masks_removed} masks removed, {self.masks_merged} merged, "
                f"{self.mods_removed} two_comp_mod removed, {self.selects} selects made ternary, "
                f"{self.mods_rewritten} two_comp_mod as xor and subtraction; "
                f"{self.temporaries_inlined} temporaries inlined, {self.dead_assigns} dead assigns dropped")


def _field_widths(spec: dict) -> dict[tuple[str, str], tuple[int, bool]]:
    """(header, field) -> (width, signed) of every fixed-width field."""
    types = {t["name"]: t for t in spec.get("header_types", [])}
    widths = {}
    for header in spec.get("headers", []):
        for name, width, *rest in types[header["header_type"]]["fields"]:
            if isinstance(width, int):  # not "*", a variable-length field
                widths[(header["name"], name)] = (width, bool(rest[0]) if rest else False)
    return widths


def _op_value(node) -> dict | None:
    """The operation inside an expression node, else None."""
    if isinstance(node, dict) and node.get("type") == "expression":
        value = node["value"]
        if isinstance(value, dict) and "op" in value:
            return value
    return None


def _bit_of(node) -> dict | None:
    """c for a node ``c ? 1 : 0`` (a bool made a number), else None."""
    value = _op_value(node)
    if value is not None and value.get("op") == "?" and _const(value.get("left")) == 1 \
            and _const(value.get("right")) == 0:
        return value["cond"]
    return None


def _product_with_bit(node) -> tuple[dict, dict] | None:
    """(x, c) for a node ``x * (c ? 1 : 0)`` (either order) or ``c ? x : 0``
    (what :meth:`_Optimizer.select` makes of the first), else None."""
    value = _op_value(node)
    if value is not None and value.get("op") == "?" and _const(value.get("right")) == 0:
        return value["left"], value["cond"]
    if value is None or value.get("op") != "*":
        return None
    for x, bit in ((value["left"], value["right"]), (value["right"], value["left"])):
        cond = _bit_of(bit)
        if cond is not None and x is not None:
            return x, cond
    return None


def _ternary(cond: dict, left: dict, right: dict) -> dict:
    return {"type": "expression", "value": {"op": "?", "left": left, "right": right, "cond": cond}}


def _const(node) -> int | None:
    """The value of a constant node, else None (also for None and non-nodes)."""
    if isinstance(node, dict) and node.get("type") == "hexstr":
        return int(node["value"], 16)
    return None


def _hexstr(value: int) -> dict:
    return {"type": "hexstr", "value": ("-0x%x" % -value) if value < 0 else ("0x%x" % value)}


def _ones_cover(hi: int) -> int:
    """The smallest all-ones number >= hi (hi >= 0)."""
    return (1 << hi.bit_length()) - 1


def _corners(f, a: Range, b: Range) -> Range:
    if a is None or b is None:
        return None
    values = [f(x, y) for x in a for y in b]
    return min(values), max(values)


class _Optimizer:
    def __init__(self, spec: dict, stats: OptStats):
        self.stats = stats
        self.widths = _field_widths(spec)
        self.fields: dict[tuple[str, str], Range] = {
            key: (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed and width > 0
            else (0, (1 << width) - 1)
            for key, (width, signed) in self.widths.items()}
        self.runtime_widths: list[int] = []
        self.register_widths = {r["name"]: r["bitwidth"] for r in spec.get("register_arrays", [])}

    # -- ranges and rewrites -------------------------------------------------
    def node(self, node):
        """Simplify a typed node (``{"type": ..., "value": ...}``); return (node, range)."""
        if not isinstance(node, dict):
            return node, None
        kind = node.get("type")
        if kind == "field":
            return node, self.fields.get(tuple(node["value"]))
        if kind == "hexstr":
            value = _const(node)
            return node, (value, value)
        if kind == "runtime_data":
            index = node["value"]
            if 0 <= index < len(self.runtime_widths):
                return node, (0, (1 << self.runtime_widths[index]) - 1)
            return node, None
        if kind == "expression":
            value = node["value"]
            if isinstance(value, dict) and "op" in value:
                return self.op(node, value)
            # a wrapper around a typed node (a primitive's or conditional's parameter)
            inner, rng = self.node(value)
            return {**node, "value": inner}, rng
        return node, None

    def op(self, node: dict, expr: dict):
        op = expr["op"]
        expr = dict(expr)
        ranges = {}
        for side in ("left", "right", "cond"):
            if side in expr and expr[side] is not None:
                expr[side], ranges[side] = self.node(expr[side])
            else:
                ranges[side] = None
        a, b = ranges["left"], ranges["right"]
        left, right = expr.get("left"), expr.get("right")
        result: Range = None

        if op == "&":
            for this, other, r_this, r_other in ((left, right, a, b), (right, left, b, a)):
                m = _const(other)
                if m is not None and m >= 0 and r_this is not None and r_this[0] >= 0 \
                        and _ones_cover(r_this[1]) & m == _ones_cover(r_this[1]):
                    self.stats.masks_removed += 1
                    return this, r_this
            # (x & m1) & m2 -> x & (m1 & m2)
            for this, other in ((left, right), (right, left)):
                m2 = _const(other)
                inner = _op_value(this)
                if m2 is not None and m2 >= 0 and inner is not None and inner.get("op") == "&":
                    for x, c in ((inner["left"], inner["right"]), (inner["right"], inner["left"])):
                        m1 = _const(c)
                        if m1 is not None and m1 >= 0:
                            self.stats.masks_merged += 1
                            merged = {"type": "expression",
                                      "value": {"op": "&", "left": x, "right": _hexstr(m1 & m2)}}
                            return self.node(merged)
            if a is not None and a[0] >= 0 and b is not None and b[0] >= 0:
                result = (0, min(a[1], b[1]))
            elif a is not None and a[0] >= 0:
                result = (0, a[1])
            elif b is not None and b[0] >= 0:
                result = (0, b[1])
        elif op in ("|", "^"):
            if a is not None and b is not None and a[0] >= 0 and b[0] >= 0:
                result = (0, _ones_cover(max(a[1], b[1])))
        elif op == "+":
            if left is None:
                result = b
            elif a is not None and b is not None:
                result = (a[0] + b[0], a[1] + b[1])
        elif op == "-":
            if left is None:
                result = (-b[1], -b[0]) if b is not None else None
            elif a is not None and b is not None:
                result = (a[0] - b[1], a[1] - b[0])
        elif op == "*":
            result = _corners(lambda x, y: x * y, a, b)
        elif op == "<<":
            if b is not None and b[0] >= 0 and b[1] <= _MAX_SHIFT:
                result = _corners(lambda x, s: x << s, a, b)
        elif op == ">>":
            if b is not None and b[0] >= 0:
                # shifting further only moves x >> s toward 0 (x >= 0) or -1, which the range then takes in
                hi_shift = min(b[1], _MAX_SHIFT)
                result = _corners(lambda x, s: x >> s, a, (b[0], hi_shift)) if a is not None else None
                if result is not None and b[1] > _MAX_SHIFT:
                    lo, hi = result
                    result = (min(lo, 0 if a[0] >= 0 else -1), max(hi, 0))
        elif op == "~":
            if b is not None:
                result = (-b[1] - 1, -b[0] - 1)
        elif op == "two_comp_mod":
            width = _const(right)
            if width is not None and width > 0:
                lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
                if a is not None and lo <= a[0] and a[1] <= hi:
                    self.stats.mods_removed += 1
                    return left, a
                result = (lo, hi)
        elif op == "?":
            if a is not None and b is not None:
                result = (min(a[0], b[0]), max(a[1], b[1]))
        elif op == "b2d":
            result = (0, 1)
        # comparisons, and/or/not, d2b, valid...: booleans or unknown
        return {**node, "value": expr}, result

    # -- demanded bits (top down) --------------------------------------------
    def demand(self, node, k: int | None):
        """Simplify node knowing that only its low ``k`` bits matter (None: all).

        Low bits of +, -, *, bitwise operators and a left shift's left operand
        depend only on the operands' low bits, so a mask that keeps at least
        those bits, or a ``two_comp_mod`` at least that wide, changes nothing
        the consumer sees."""
        if not isinstance(node, dict) or node.get("type") != "expression":
            return node
        value = node["value"]
        if not (isinstance(value, dict) and "op" in value):
            return {**node, "value": self.demand(value, k)}
        op = value["op"]
        expr = dict(value)
        left, right = expr.get("left"), expr.get("right")
        if k is not None and op == "&":
            for this, other in ((left, right), (right, left)):
                m = _const(other)
                low = (1 << k) - 1
                if m is not None and m & low == low:
                    self.stats.masks_removed += 1
                    return self.demand(this, k)
        if k is not None and op == "two_comp_mod":
            width = _const(right)
            if width is not None and width >= k:
                self.stats.mods_removed += 1
                return self.demand(left, k)
        if op in ("+", "-", "*", "&", "|", "^", "~"):
            sides = {"left": k, "right": k}
        elif op == "<<":
            sides = {"left": k, "right": None}
        elif op == "?":
            sides = {"left": k, "right": k, "cond": None}
        elif op == "two_comp_mod":
            width = _const(right)
            sides = {"left": width if width is not None and (k is None or width < k) else k,
                     "right": None}
        else:
            sides = {"left": None, "right": None, "cond": None}
        for side, bits in sides.items():
            if side in expr and expr[side] is not None:
                expr[side] = self.demand(expr[side], bits)
        if "cond" in expr and "cond" not in sides:
            expr["cond"] = self.demand(expr["cond"], None)
        if op == "two_comp_mod":
            return self.sign_extend({**node, "value": expr})
        return self.select({**node, "value": expr})

    def sign_extend(self, node: dict) -> dict:
        """``two_comp_mod(x, w)`` as ``((x & (2^w - 1)) ^ 2^(w-1)) - 2^(w-1)``,
        equal for every integer x, the mask left out when x is an unsigned
        field no wider than w. BMv2's two_comp_mod builds three numbers on the
        heap per call (bm_sim/data.h), about as costly as five operations."""
        expr = node["value"]
        width = _const(expr.get("right"))
        if width is None or width <= 0:
            return node
        x = expr["left"]
        rng = self.fields.get(tuple(x["value"])) if x.get("type") == "field" else None
        if rng is None or rng[0] < 0 or rng[1] >= 1 << width:
            x = {"type": "expression", "value": {"op": "&", "left": x, "right": _hexstr((1 << width) - 1)}}
        top = _hexstr(1 << (width - 1))
        self.stats.mods_rewritten += 1
        flipped = {"type": "expression", "value": {"op": "^", "left": x, "right": top}}
        return {"type": "expression", "value": {"op": "-", "left": flipped, "right": top}}

    # -- selects -------------------------------------------------------------
    def select(self, node: dict) -> dict:
        """Selects written as arithmetic, back as BMv2's ternary operator,
        which evaluates its condition and one branch: exact for every value.

        - ``b + (a - b) * (c ? 1 : 0)`` -> ``c ? a : b`` (headers.p4's SELECT);
        - ``x * (c ? 1 : 0)`` -> ``c ? x : 0``."""
        expr = node["value"]
        op = expr.get("op")
        if op == "+" and expr.get("left") is not None:
            for base, product in ((expr["left"], expr["right"]), (expr["right"], expr["left"])):
                factors = _product_with_bit(product)
                if factors is None:
                    continue
                other, cond = factors
                inner = _op_value(other)
                if inner is not None and inner.get("op") == "-" and inner.get("left") is not None \
                        and inner["right"] == base:
                    self.stats.selects += 1
                    return _ternary(cond, inner["left"], base)
        if op == "*":
            factors = _product_with_bit(node)
            if factors is not None:
                other, cond = factors
                self.stats.selects += 1
                return _ternary(cond, other, _hexstr(0))
        return node

    def width_of(self, target: dict) -> int | None:
        """Bits a primitive's destination keeps (BMv2 masks what it stores)."""
        if target.get("type") == "field":
            width, signed = self.widths.get(tuple(target["value"]), (None, True))
            return None if signed else width
        if target.get("type") == "register_array":
            return self.register_widths.get(target["value"])
        return None

    def primitive(self, prim: dict) -> dict:
        params = prim.get("parameters", [])
        if prim.get("op") == "assign" and len(params) == 2:
            dst, src = params[0], params[1]
        elif prim.get("op") == "register_write" and len(params) == 3:
            dst, src = params[0], params[2]
        else:
            return prim
        bits = self.width_of(dst)
        if bits is None or not isinstance(src, dict) or src.get("type") != "expression":
            return prim
        new_src = self.demand(src, bits)
        return {**prim, "parameters": [new_src if p is src else p for p in params]}

    # -- the program ---------------------------------------------------------
    def walk(self, obj):
        """Simplify every expression inside obj (lists and dicts of any shape)."""
        if isinstance(obj, list):
            return [self.walk(x) for x in obj]
        if isinstance(obj, dict):
            if obj.get("type") == "expression":
                return self.node(obj)[0]
            return {k: self.walk(v) for k, v in obj.items()}
        return obj

    def program(self, spec: dict) -> dict:
        out = dict(spec)
        actions = []
        for action in spec.get("actions", []):
            self.runtime_widths = [d.get("bitwidth", 0) for d in action.get("runtime_data", [])]
            action = self.walk(action)
            action = {**action, "primitives": [self.primitive(p) for p in action.get("primitives", [])]}
            actions.append(action)
        self.runtime_widths = []
        out["actions"] = actions
        for key in ("pipelines", "parsers", "deparsers", "calculations", "checksums"):
            if key in spec:
                out[key] = self.walk(spec[key])
        return out


# -- action-local temporaries -----------------------------------------------------

def _fields_in(obj, out: set) -> set:
    """Every (header, field) obj refers to: typed field nodes, and the
    [header, field] pairs of table keys, field lists and the like."""
    if isinstance(obj, dict):
        if obj.get("type") == "field" and isinstance(obj.get("value"), list):
            out.add(tuple(obj["value"]))
        for v in obj.values():
            _fields_in(v, out)
    elif isinstance(obj, list):
        if len(obj) == 2 and all(isinstance(x, str) for x in obj):
            out.add(tuple(obj))
        for v in obj:
            _fields_in(v, out)
    return out


def _field_key(node) -> tuple | None:
    if isinstance(node, dict) and node.get("type") == "field":
        return tuple(node["value"])
    return None


#: primitive -> (index of the parameter it writes, indexes of the parameters it reads
#: as values); any other primitive counts as reading every field it names
_DEFS_USES = {"assign": (0, (1,)), "register_read": (0, (2,)), "register_write": (None, (1, 2))}


def _defs_uses(prim: dict) -> tuple[tuple | None, set, bool]:
    """(field the primitive writes, fields it reads, whether every read is a value
    parameter that may become an expression)."""
    params = prim.get("parameters", [])
    shape = _DEFS_USES.get(prim.get("op"))
    if shape is None or len(params) <= max((shape[0] or 0), *shape[1]):
        return None, _fields_in(params, set()), False
    d, uses = shape
    return (_field_key(params[d]) if d is not None else None,
            set().union(*(_fields_in(params[i], set()) for i in uses)), True)


def _local_temporaries(spec: dict) -> set:
    """Metadata fields that only actions use, and that every action writes
    before it reads them: their value never outlives the action that set it
    (no table key, condition, parser, deparser, checksum or other action sees it)."""
    metadata = {h["name"] for h in spec.get("headers", []) if h.get("metadata")} - {"standard_metadata"}
    outside = _fields_in({k: v for k, v in spec.items() if k != "actions"}, set())
    live_in = set()
    for action in spec.get("actions", []):
        defined = set()
        for prim in action.get("primitives", []):
            d, uses, _ = _defs_uses(prim)
            live_in |= uses - defined
            if d is not None:
                defined.add(d)
    candidates = {key for key in _field_widths(spec) if key[0] in metadata}
    return candidates - outside - live_in


def _substitute(node, key: tuple, replacement: dict):
    """node with every field node ``key`` replaced (a copy)."""
    if isinstance(node, dict):
        if _field_key(node) == key:
            return replacement
        return {k: _substitute(v, key, replacement) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, key, replacement) for v in node]
    return node


def _count_refs(node, key: tuple) -> int:
    if isinstance(node, dict):
        return int(_field_key(node) == key) + sum(_count_refs(v, key) for v in node.values())
    if isinstance(node, list):
        return sum(_count_refs(v, key) for v in node)
    return 0


_BOOLEAN_OPS = {"==", "!=", "<", ">", "<=", ">=", "and", "or", "not", "d2b", "valid", "valid_union"}


def _is_boolean(node) -> bool:
    if isinstance(node, dict) and node.get("type") == "bool":
        return True
    value = _op_value(node)
    return value is not None and value.get("op") in _BOOLEAN_OPS


def _read_before_write(prims: list, key: tuple) -> bool:
    """Whether a primitive of prims reads key before one writes it."""
    for prim in prims:
        d, uses, _ = _defs_uses(prim)
        if key in uses:
            return True
        if d == key:
            return False
    return False


def inline_temporaries(spec: dict, stats: OptStats) -> dict:
    """Fold ``assign(t, E)`` into the one later primitive of the same action
    that reads t, as ``E & mask(t)`` (what t would have held), when t is an
    action-local temporary (:func:`_local_temporaries`) and nothing in
    between writes a field E reads; drop an ``assign`` to such a t that no
    primitive reads before t is written again. BMv2 pays for every primitive
    and every field write (callgrind: ~770 instructions per assign besides its
    expression); the expression is evaluated once either way."""
    temps = _local_temporaries(spec)
    widths = {key: width for key, (width, _) in _field_widths(spec).items()}
    actions = []
    for action in spec.get("actions", []):
        prims = list(action.get("primitives", []))
        i = 0
        while i < len(prims):
            prim = prims[i]
            target, reads, _ = _defs_uses(prim)
            if prim.get("op") != "assign" or target not in temps or target in reads:
                i += 1
                continue
            source = prim["parameters"][1]
            value = source["value"] if source.get("type") == "expression" else source
            if _is_boolean(value):
                i += 1  # a mask needs a number
                continue
            # the first later primitive that reads t, writes t, or writes a field of E
            j, action_taken = i + 1, None
            while j < len(prims):
                d, uses, simple = _defs_uses(prims[j])
                if not simple:
                    break  # another primitive: it may write fields it does not name (mark_to_drop)
                if target in uses:
                    refs = _count_refs(prims[j]["parameters"], target)
                    # (a primitive that also writes t names it twice: refs > 1)
                    if refs == 1 and not _read_before_write(prims[j + 1:], target):
                        action_taken = "inline"
                    break
                if d == target:
                    action_taken = "dead"
                    break
                if d in reads:
                    break
                j += 1
            else:
                action_taken = "dead"  # never read again in this action, and not after it
            if action_taken is None:
                i += 1
                continue
            if action_taken == "inline":
                masked = {"type": "expression", "value": {
                    "op": "&", "left": value, "right": _hexstr((1 << widths[target]) - 1)}}
                use = prims[j]
                params = []
                for param in use["parameters"]:
                    if _field_key(param) == target:
                        param = {"type": "expression", "value": masked}
                    elif _count_refs(param, target):
                        param = _substitute(param, target, masked)
                    params.append(param)
                prims[j] = {**use, "parameters": params}
                stats.temporaries_inlined += 1
            else:
                stats.dead_assigns += 1
            del prims[i]
        actions.append({**action, "primitives": prims})
    return {**spec, "actions": actions}


def optimize(spec: dict, inline: bool = True) -> tuple[dict, OptStats]:
    """A copy of the compiled program with the redundant operations removed."""
    stats = OptStats()
    out = _Optimizer(spec, stats).program(inline_temporaries(spec, stats) if inline else spec)
    stats.ops_before, stats.ops_after = count_ops(spec), count_ops(out)
    return out, stats


def optimize_file(src: Path, dst: Path | None = None) -> OptStats:
    spec = json.loads(Path(src).read_text())
    out, stats = optimize(spec)
    Path(dst or src).write_text(json.dumps(out, indent=1))
    return stats


def count_ops(obj) -> int:
    """Expression operations in a compiled program (or any part of one)."""
    if isinstance(obj, list):
        return sum(count_ops(x) for x in obj)
    if isinstance(obj, dict):
        own = 1 if isinstance(obj.get("op"), str) and ("left" in obj or "right" in obj) else 0
        return own + sum(count_ops(v) for v in obj.values())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", type=Path, help="p4c-bm2-ss output")
    parser.add_argument("out", type=Path, nargs="?", help="where to write (default: print the counts only)")
    args = parser.parse_args(argv)
    spec = json.loads(args.json.read_text())
    out, stats = optimize(spec)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    print(stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
