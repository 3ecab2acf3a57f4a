"""What BMv2 walks per packet: pipeline nodes and primitives in a compiled program.

``simple_switch`` executes a control as a graph of nodes: tables (each
applies one action, a list of primitives) and conditionals (an expression,
then the true or the false branch). p4c makes a conditional of every ``if``
in an apply block and a table (with a synthesized action) of every run of
statements between them and of every direct action call; an ``if`` inside
an action becomes conditional expressions instead (predication). Each node
costs BMv2 a lookup or an evaluation plus logging and locking; each primitive
one interpreted statement. This module counts both in p4c-bm2-ss's JSON:

- totals per pipeline (ingress, egress): tables, conditionals, the actions
  those tables can run, and those actions' primitives;
- the longest path a packet can take through a pipeline: the most nodes it
  visits and the most primitives it executes (a bound over all branches, the
  read-out path included).

Run: python -m p4.pipeline_nodes p4/build/fpisa.json [...]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["PipelineCounts", "count_pipeline_nodes", "format_counts"]


@dataclass(frozen=True)
class PipelineCounts:
    pipeline: str
    tables: int
    conditionals: int
    #: distinct actions the pipeline's tables can run
    actions: int
    #: primitives of those actions
    primitives: int
    #: the most nodes (tables + conditionals) one packet can visit
    path_nodes: int
    #: the most primitives one packet can execute
    path_primitives: int

    def as_dict(self) -> dict:
        return asdict(self)


def _pipeline_counts(pipeline: dict, primitives_of: dict[int, int]) -> PipelineCounts:
    tables = {t["name"]: t for t in pipeline.get("tables", [])}
    conditionals = {c["name"]: c for c in pipeline.get("conditionals", [])}
    action_ids = {a for t in tables.values() for a in t.get("action_ids", [])}

    # longest path over the node graph (a DAG), memoized, iterative so a
    # program with thousands of chained nodes cannot hit Python's recursion limit
    memo: dict[str, tuple[int, int]] = {}

    def successors(name: str) -> list[tuple[str | None, int]]:
        """(next node, primitives executed on the way) per way out of a node."""
        if name in tables:
            t = tables[name]
            nexts = t.get("next_tables", {})
            ways = []
            for action_name, action_id in zip(t.get("actions", []), t.get("action_ids", [])):
                cost = primitives_of.get(action_id, 0)
                if action_name in nexts:
                    ways.append((nexts[action_name], cost))
                else:  # next by hit / miss ("__HIT__", "__MISS__")
                    ways += [(n, cost) for n in nexts.values()] or [(t.get("base_default_next"), cost)]
            return ways or [(t.get("base_default_next"), 0)]
        c = conditionals[name]
        return [(c.get("true_next"), 0), (c.get("false_next"), 0)]

    def longest(start: str | None) -> tuple[int, int]:
        if start is None:
            return (0, 0)
        stack = [start]
        while stack:
            name = stack[-1]
            if name in memo:
                stack.pop()
                continue
            ways = successors(name)
            pending = [n for n, _ in ways if n is not None and n not in memo]
            if pending:
                stack += pending
                continue
            nodes = max(1 + (memo[n][0] if n else 0) for n, _ in ways)
            prims = max(cost + (memo[n][1] if n else 0) for n, cost in ways)
            memo[name] = (nodes, prims)
            stack.pop()
        return memo[start]

    path_nodes, path_primitives = longest(pipeline.get("init_table"))
    return PipelineCounts(
        pipeline=pipeline["name"],
        tables=len(tables),
        conditionals=len(conditionals),
        actions=len(action_ids),
        primitives=sum(primitives_of.get(a, 0) for a in action_ids),
        path_nodes=path_nodes,
        path_primitives=path_primitives,
    )


def count_pipeline_nodes(spec: dict | str | Path) -> dict[str, PipelineCounts]:
    """Per pipeline name (``ingress``, ``egress``): its node and primitive counts.
    ``spec``: the compiled JSON (a dict, or the path of the file)."""
    if not isinstance(spec, dict):
        spec = json.loads(Path(spec).read_text())
    primitives_of = {a["id"]: len(a.get("primitives", [])) for a in spec.get("actions", [])}
    return {p["name"]: _pipeline_counts(p, primitives_of) for p in spec.get("pipelines", [])}


def format_counts(counts: dict[str, PipelineCounts]) -> str:
    parts = []
    for c in counts.values():
        parts.append(f"{c.pipeline}: {c.tables} tables, {c.conditionals} conditionals, "
                     f"{c.actions} actions ({c.primitives} primitives); longest path "
                     f"{c.path_nodes} nodes, {c.path_primitives} primitives")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m p4.pipeline_nodes",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="+", type=Path, help="p4c-bm2-ss output (p4/build/<program>.json)")
    args = parser.parse_args(argv)
    for path in args.json:
        print(f"{path}: {format_counts(count_pipeline_nodes(path))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
