"""The query form: a small SQL subset, parsed by sqlglot (DuckDB dialect).

::

    SELECT key, ..., AGG(expr) [AS name], ...
    FROM table
    [WHERE predicate]
    [GROUP BY key, ...]
    [ORDER BY output [ASC|DESC], ...]

- AGG: ``SUM``, ``AVG``, ``MIN``, ``MAX`` of a float expression; ``COUNT(*)``
  or ``COUNT(column)`` (the same: NULLs are refused when the table is read).
- a float expression: float columns, numeric literals, ``+ - * /`` and
  parentheses, evaluated in float32 on the workers as DuckDB evaluates
  ``REAL`` arithmetic (literals cast to REAL).
- keys: integer or string columns (each also listed in GROUP BY).
- predicate: comparisons (``= <> != < <= > >=``), ``BETWEEN``, ``IN (...)``,
  ``AND``/``OR``/``NOT`` over columns and literals; ``DATE 'yyyy-mm-dd'`` and
  ``DATE '...' +/- INTERVAL 'n' DAY``; strings compare with ``=``, ``<>``
  and ``IN`` only.

Anything else (joins, subqueries, HAVING, LIMIT, DISTINCT, other functions)
is a :class:`QueryError` naming it; the CLI exits 2. :func:`parse` checks
the names against the table's schema (:func:`bind`).

The parse result is plain tuples (picklable: the worker processes get it):
``("col", name)``, ``("lit", value)`` (float/int/str; a date as days since
1970-01-01 via ``("date", days)``), ``("arith", op, a, b)``, ``("neg", a)``,
``("cmp", op, a, b)``, ``("between", a, lo, hi)``, ``("in", a, values)``,
``("and", a, b)``, ``("or", a, b)``, ``("not", a)``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

__all__ = ["QueryError", "Aggregate", "QuerySpec", "parse", "TPCH", "expand_named"]

AGGREGATES = ("sum", "count", "avg", "min", "max")


class QueryError(ValueError):
    """A query outside the supported form, or naming what the table lacks.
    A ValueError: the ``fpisa`` command reports it and exits 2."""


@dataclass(frozen=True)
class Aggregate:
    func: str  #: one of AGGREGATES
    expr: tuple | None  #: None: COUNT(*)
    name: str  #: the output column's name
    sql: str  #: the expression's SQL text (for reports)


@dataclass(frozen=True)
class QuerySpec:
    sql: str
    table: str
    keys: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]
    where: tuple | None
    #: output columns in SELECT order: ("key", name) or ("agg", index)
    outputs: tuple[tuple[str, object], ...]
    order_by: tuple[tuple[str, bool], ...] = field(default=())  #: (output name, descending)

    @property
    def output_names(self) -> list[str]:
        return [name if kind == "key" else self.aggregates[name].name for kind, name in self.outputs]

    def columns(self) -> set[str]:
        """Every column the query reads."""
        cols = set(self.keys)
        for a in self.aggregates:
            if a.expr is not None:
                cols |= _columns(a.expr)
        if self.where is not None:
            cols |= _columns(self.where)
        return cols

    def float_columns(self) -> set[str]:
        cols = set()
        for a in self.aggregates:
            if a.expr is not None:
                cols |= _columns(a.expr)
        return cols


def _columns(node) -> set[str]:
    if node[0] == "col":
        return {node[1]}
    out = set()
    for part in node[1:]:
        if isinstance(part, tuple):
            out |= _columns(part)
        elif isinstance(part, list):
            for p in part:
                out |= _columns(p)
    return out


#: the TPC-H queries this toolkit runs by name (Q1 as in the spec, with
#: delta = 90 days; Q6 with its validation parameters)
TPCH = {
    "q1": """
SELECT l_returnflag, l_linestatus,
       SUM(l_quantity) AS sum_qty,
       SUM(l_extendedprice) AS sum_base_price,
       SUM(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
       SUM(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
       AVG(l_quantity) AS avg_qty,
       AVG(l_extendedprice) AS avg_price,
       AVG(l_discount) AS avg_disc,
       COUNT(*) AS count_order
FROM lineitem
WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL '90' DAY
GROUP BY l_returnflag, l_linestatus
ORDER BY l_returnflag, l_linestatus""",
    "q6": """
SELECT SUM(l_extendedprice * l_discount) AS revenue
FROM lineitem
WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01'
  AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24""",
}


def expand_named(text: str) -> str:
    """``q1`` / ``q6`` -> their SQL; anything else is returned as it is."""
    return TPCH.get(text.strip().lower(), text).strip()


_EPOCH = dt.date(1970, 1, 1)


def _days(text: str) -> int:
    try:
        return (dt.date.fromisoformat(text) - _EPOCH).days
    except ValueError:
        raise QueryError(f"bad DATE literal {text!r} (expected yyyy-mm-dd)") from None


def parse(sql: str, schema: dict[str, str] | None = None, table: str | None = None) -> QuerySpec:
    """Parse ``sql``; with ``schema`` (column -> "float" | "int" | "string" |
    "date") and ``table`` (its name) also check every name and type."""
    import sqlglot
    from sqlglot import exp

    try:
        trees = sqlglot.parse(sql, read="duckdb")
    except sqlglot.errors.ParseError as e:
        raise QueryError(f"cannot parse the query: {str(e).splitlines()[0]}") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1 or not isinstance(trees[0], exp.Select):
        raise QueryError("expected one SELECT statement")
    q = trees[0]
    for key, what in (("joins", "JOIN"), ("having", "HAVING"), ("limit", "LIMIT"),
                      ("distinct", "DISTINCT"), ("with_", "WITH"), ("with", "WITH"),
                      ("offset", "OFFSET"), ("qualify", "QUALIFY"), ("windows", "WINDOW")):
        if q.args.get(key):
            raise QueryError(f"{what} is not supported (docs/query.md: the query form)")
    source = q.args.get("from_") or q.args.get("from")
    if source is None or not isinstance(source.this, exp.Table):
        raise QueryError("expected FROM <table>")
    table_name = source.this.name

    def col_name(node) -> str:
        if node.table:
            if node.table != table_name:
                raise QueryError(f"unknown table {node.table!r} in {node.sql()!r}")
        return node.name

    def value(node) -> tuple:
        """A float expression / operand."""
        if isinstance(node, exp.Paren):
            return value(node.this)
        if isinstance(node, exp.Column):
            return ("col", col_name(node))
        if isinstance(node, exp.Literal):
            if node.is_string:
                return ("lit", node.this)
            text = node.this
            try:
                return ("lit", int(text)) if text.lstrip("-").isdigit() else ("lit", float(text))
            except ValueError:
                raise QueryError(f"bad number {text!r}") from None
        if isinstance(node, exp.Neg):
            inner = value(node.this)
            if inner[0] == "lit" and not isinstance(inner[1], str):
                return ("lit", -inner[1])
            return ("neg", inner)
        if isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.DATE \
                and isinstance(node.this, exp.Literal) and node.this.is_string:
            return ("date", _days(node.this.this))
        if isinstance(node, (exp.Add, exp.Sub)) and isinstance(node.expression, exp.Interval):
            base = value(node.this)
            iv = node.expression
            unit = (iv.args.get("unit").name if iv.args.get("unit") is not None else "").upper()
            if base[0] != "date" or unit not in ("DAY", "DAYS"):
                raise QueryError(f"only DATE '...' +/- INTERVAL 'n' DAY is supported, got {node.sql()!r}")
            try:
                n = int(str(iv.this.this if isinstance(iv.this, exp.Literal) else iv.this.sql()))
            except ValueError:
                raise QueryError(f"bad interval {iv.sql()!r}") from None
            return ("date", base[1] + (n if isinstance(node, exp.Add) else -n))
        ops = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/"}
        for cls, op in ops.items():
            if type(node) is cls:
                return ("arith", op, value(node.this), value(node.expression))
        raise QueryError(f"unsupported expression {node.sql()!r}")

    def predicate(node) -> tuple:
        if isinstance(node, exp.Paren):
            return predicate(node.this)
        if isinstance(node, exp.And):
            return ("and", predicate(node.this), predicate(node.expression))
        if isinstance(node, exp.Or):
            return ("or", predicate(node.this), predicate(node.expression))
        if isinstance(node, exp.Not):
            return ("not", predicate(node.this))
        cmps = {exp.EQ: "=", exp.NEQ: "<>", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">="}
        for cls, op in cmps.items():
            if type(node) is cls:
                return ("cmp", op, value(node.this), value(node.expression))
        if isinstance(node, exp.Between):
            return ("between", value(node.this), value(node.args["low"]), value(node.args["high"]))
        if isinstance(node, exp.In):
            if node.args.get("query") is not None:
                raise QueryError("IN (subquery) is not supported")
            return ("in", value(node.this), [value(v) for v in node.expressions])
        raise QueryError(f"unsupported predicate {node.sql()!r}")

    group = q.args.get("group")
    keys = tuple(col_name(c) if isinstance(c, exp.Column) else _bad_key(c)
                 for c in (group.expressions if group else []))
    if len(set(keys)) != len(keys):
        raise QueryError("a GROUP BY column is listed twice")
    aggregates: list[Aggregate] = []
    outputs: list[tuple[str, object]] = []
    names: list[str] = []
    for item in q.expressions:
        alias = None
        node = item
        if isinstance(item, exp.Alias):
            alias, node = item.alias, item.this
        if isinstance(node, exp.Column):
            name = col_name(node)
            if name not in keys:
                raise QueryError(f"column {name!r} is selected but neither grouped nor aggregated")
            outputs.append(("key", name))
            names.append(alias or name)
            continue
        func = type(node).__name__.lower()
        if func not in AGGREGATES:
            raise QueryError(f"unsupported select item {item.sql()!r}: expected a GROUP BY column "
                             f"or one of {', '.join(a.upper() for a in AGGREGATES)}")
        if node.args.get("distinct") or isinstance(node.this, exp.Distinct):
            raise QueryError(f"{func.upper()}(DISTINCT ...) is not supported")
        arg = node.this
        if func == "count" and (arg is None or isinstance(arg, exp.Star)):
            expr = None
        elif func == "count" and isinstance(arg, exp.Column):
            expr = ("col", col_name(arg))
        elif isinstance(arg, exp.Star) or arg is None:
            raise QueryError(f"{func.upper()}(*) is not an aggregate")
        else:
            expr = value(arg)
        name = alias or item.sql()
        aggregates.append(Aggregate(func, expr, name, arg.sql() if arg is not None else "*"))
        outputs.append(("agg", len(aggregates) - 1))
        names.append(name)
    if not aggregates:
        raise QueryError("the query aggregates nothing (no SUM/COUNT/AVG/MIN/MAX)")
    unselected = [k for k in keys if ("key", k) not in outputs]
    if unselected:
        raise QueryError(f"GROUP BY columns must also be selected: {unselected}")
    if len(set(names)) != len(names):
        raise QueryError(f"output names repeat: {names}")
    order = []
    if q.args.get("order"):
        for o in q.args["order"].expressions:
            target = o.this
            name = target.name if isinstance(target, exp.Column) else target.sql()
            if name not in names:
                raise QueryError(f"ORDER BY {target.sql()!r}: order by an output column "
                                 f"({', '.join(names)})")
            order.append((name, bool(o.args.get("desc"))))
    where = predicate(q.args["where"].this) if q.args.get("where") else None
    spec = QuerySpec(sql, table_name, keys, tuple(aggregates), where,
                     tuple(("key", n) if k == "key" else ("agg", n) for k, n in outputs),
                     tuple(order))
    if schema is not None:
        bind(spec, schema, table)
    return spec


def _bad_key(node):
    raise QueryError(f"GROUP BY {node.sql()!r}: group by columns only")


def bind(spec: QuerySpec, schema: dict[str, str], table: str | None) -> None:
    """Check names and types against the table (QueryError otherwise)."""
    if table is not None and spec.table.lower() != table.lower():
        raise QueryError(f"unknown table {spec.table!r}: the table given is {table!r}")
    for c in sorted(spec.columns()):
        if c not in schema:
            raise QueryError(f"unknown column {c!r}; the table has {', '.join(sorted(schema))}")
    for k in spec.keys:
        if schema[k] not in ("int", "string"):
            raise QueryError(f"GROUP BY {k!r}: keys must be integer or string columns, "
                             f"{k!r} is {schema[k]}")
    for a in spec.aggregates:
        if a.expr is None or a.func == "count":
            continue
        for c in sorted(_columns(a.expr)):
            if schema[c] != "float":
                raise QueryError(f"{a.func.upper()}({a.sql}): {c!r} is {schema[c]}, not a float "
                                 "column (the switch aggregates float32/fp16/bf16)")
    if spec.where is not None:
        _check_predicate(spec.where, schema)


def _kind(node, schema) -> str:
    tag = node[0]
    if tag == "col":
        return schema[node[1]]
    if tag == "lit":
        return "string" if isinstance(node[1], str) else "number"
    if tag == "date":
        return "date"
    if tag in ("arith", "neg"):
        for part in node[2:] if tag == "arith" else node[1:]:
            if _kind(part, schema) not in ("float", "int", "number"):
                raise QueryError(f"arithmetic on a {_kind(part, schema)} value")
        return "float"
    raise QueryError(f"unexpected operand {tag}")


def _check_predicate(node, schema) -> None:
    tag = node[0]
    if tag in ("and", "or"):
        _check_predicate(node[1], schema)
        _check_predicate(node[2], schema)
    elif tag == "not":
        _check_predicate(node[1], schema)
    else:
        parts = {"cmp": lambda: [node[2], node[3]], "between": lambda: list(node[1:4]),
                 "in": lambda: [node[1], *node[2]]}[tag]()
        kinds = {_kind(p, schema) for p in parts}
        numeric = {"float", "int", "number"}
        if kinds <= numeric or kinds <= {"date"} or kinds <= {"string"}:
            pass
        else:
            raise QueryError(f"comparison mixes types {sorted(kinds)}")
        if "string" in kinds and not (tag == "in" or (tag == "cmp" and node[1] in ("=", "<>"))):
            raise QueryError("strings compare with =, <> and IN only")
