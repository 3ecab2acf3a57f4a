"""The layering rule of README "How the code is laid out", checked on imports.

- ``fpisa`` (numerics, wire format, job description) imports no other
  project package; only ``fpisa/cli.py`` names the others (as strings).
- ``emulator`` (the switch) imports ``fpisa`` and ``p4``, never ``hosts``.
- ``hosts/worker.py`` (the client a worker host runs) imports ``fpisa`` only.
- ``hw_model`` stands alone (it imports ``fpisa`` only to check itself).
- the testbed (``hosts/allreduce.py``, ``hosts/cli.py``, ``hosts/mininet``)
  composes switch and workers and may import both.
- ``hosts/query``: its worker side (``hosts/query/worker.py``) imports
  ``fpisa``, the worker client and the query modules below only; its
  query/table/numerics modules ``fpisa`` and each other only; its
  orchestrator (``hosts/query/run.py``, ``cli.py``, ``check.py``) is testbed.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fpisa", "emulator", "hosts", "hw_model", "p4")


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.add(path.relative_to(ROOT).parts[0])  # relative: its own package
    return names & set(PACKAGES)


RULES = [
    ("fpisa", {"fpisa"}, {"fpisa/cli.py"}),
    ("emulator", {"fpisa", "emulator", "p4"}, set()),
    ("hw_model", {"fpisa", "hw_model"}, set()),
    ("p4", {"fpisa", "p4"}, set()),
    ("hosts/worker.py", {"fpisa", "hosts"}, set()),
    ("hosts/pipelined.py", {"fpisa", "hosts"}, set()),
]


@pytest.mark.parametrize("where,allowed,exempt", RULES, ids=[r[0] for r in RULES])
def test_imports_point_down_the_layers(where, allowed, exempt):
    target = ROOT / where
    files = [target] if target.is_file() else sorted(target.rglob("*.py"))
    assert files
    bad = {}
    for f in files:
        rel = str(f.relative_to(ROOT))
        if rel in exempt:
            continue
        extra = imported_packages(f) - allowed
        if extra:
            bad[rel] = sorted(extra)
    assert not bad, f"imports that reach up a layer: {bad}"


def project_modules(path: Path) -> set[str]:
    """The project modules ``path`` imports, by full name (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
    return {n for n in names if n.split(".")[0] in PACKAGES}


QUERY_CORE = {"hosts.query.sql", "hosts.query.table", "hosts.query.partial", "hosts.query.exact"}


@pytest.mark.parametrize("module", ["sql", "table", "partial", "exact", "worker"])
def test_query_hosts_stay_below_the_testbed(module):
    """The query modules a worker runs import fpisa, each other and (the
    worker) the allreduce client: never the orchestrator or the switch."""
    allowed = QUERY_CORE | ({"hosts.worker", "hosts.query"} if module == "worker" else set())
    got = project_modules(ROOT / "hosts" / "query" / f"{module}.py")
    bad = {m for m in got if m.split(".")[0] != "fpisa" and m not in allowed}
    assert not bad, f"hosts/query/{module}.py reaches up a layer: {sorted(bad)}"


def test_worker_module_does_not_import_the_switch():
    # and hosts/worker.py in particular imports nothing from hosts but itself
    assert imported_packages(ROOT / "hosts" / "worker.py") <= {"fpisa"}


def test_pipelined_worker_builds_on_the_worker_client_only():
    # a worker host's client too: fpisa, and of hosts only hosts/worker.py
    tree = ast.parse((ROOT / "hosts" / "pipelined.py").read_text())
    local = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level > 0}
    assert local <= {"worker"}
    assert imported_packages(ROOT / "hosts" / "pipelined.py") <= {"fpisa", "hosts"}
