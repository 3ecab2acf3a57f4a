"""p4.pipeline_nodes counts BMv2 pipeline nodes and primitives (no tools needed:
a hand-written JSON in p4c-bm2-ss's format)."""

from p4.pipeline_nodes import count_pipeline_nodes, format_counts


def _spec():
    # ingress: t0 -> c0 ? (t1 [a1: 3 prims | a2: 1 prim] -> c1 ? t2 : end) : t3 -> end
    actions = [
        {"name": "a0", "id": 0, "primitives": [{}, {}]},
        {"name": "a1", "id": 1, "primitives": [{}, {}, {}]},
        {"name": "a2", "id": 2, "primitives": [{}]},
        {"name": "a3", "id": 3, "primitives": [{}] * 10},
        {"name": "a4", "id": 4, "primitives": [{}] * 4},
        {"name": "unused", "id": 5, "primitives": [{}] * 100},
    ]
    ingress = {
        "name": "ingress",
        "init_table": "t0",
        "tables": [
            {"name": "t0", "actions": ["a0"], "action_ids": [0], "next_tables": {"a0": "c0"},
             "base_default_next": "c0"},
            {"name": "t1", "actions": ["a1", "a2"], "action_ids": [1, 2],
             "next_tables": {"a1": "c1", "a2": None}, "base_default_next": "c1"},
            {"name": "t2", "actions": ["a3"], "action_ids": [3], "next_tables": {"a3": None},
             "base_default_next": None},
            # next by hit/miss instead of by action
            {"name": "t3", "actions": ["a4"], "action_ids": [4],
             "next_tables": {"__HIT__": None, "__MISS__": None}, "base_default_next": None},
        ],
        "conditionals": [
            {"name": "c0", "true_next": "t1", "false_next": "t3"},
            {"name": "c1", "true_next": "t2", "false_next": None},
        ],
    }
    egress = {"name": "egress", "init_table": None, "tables": [], "conditionals": []}
    return {"actions": actions, "pipelines": [ingress, egress]}


def test_counts_totals_and_the_longest_path():
    counts = count_pipeline_nodes(_spec())
    ingress = counts["ingress"]
    assert (ingress.tables, ingress.conditionals, ingress.actions) == (4, 2, 5)
    assert ingress.primitives == 2 + 3 + 1 + 10 + 4  # the unused action is not counted
    # t0 c0 t1(a1) c1 t2: 5 nodes, 2 + 3 + 10 primitives
    assert (ingress.path_nodes, ingress.path_primitives) == (5, 15)
    egress = counts["egress"]
    assert (egress.tables, egress.path_nodes, egress.path_primitives) == (0, 0, 0)
    assert "ingress: 4 tables, 2 conditionals" in format_counts(counts)


def test_a_long_chain_does_not_recurse():
    n = 5000
    tables = [{"name": f"t{i}", "actions": ["a"], "action_ids": [0],
               "next_tables": {"a": f"t{i + 1}" if i + 1 < n else None}} for i in range(n)]
    spec = {"actions": [{"name": "a", "id": 0, "primitives": [{}]}],
            "pipelines": [{"name": "ingress", "init_table": "t0", "tables": tables,
                           "conditionals": []}]}
    counts = count_pipeline_nodes(spec)["ingress"]
    assert (counts.path_nodes, counts.path_primitives) == (n, n)
