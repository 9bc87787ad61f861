"""The structure the code promises: a pure core, an operator that needs no plotting, no test scaffolding in the
product, no import cycles, a control loop that reads in one screen."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.paths import REPO

PACKAGE = REPO / "operator" / "kilowatt"


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _module(path) -> str:
    return ".".join(path.relative_to(REPO / "operator").with_suffix("").parts).removesuffix(".__init__")


def test_the_operator_starts_without_the_twin_extra():
    """``kilowatt run``'s import chain loads neither matplotlib nor rich (the `twin` extra)."""
    code = ("import sys, kilowatt.runner, kilowatt.cli; "
            "print(sorted(m for m in ('matplotlib', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_product_imports_no_test_scaffolding():
    for path in PACKAGE.rglob("*.py"):
        bad = {m for m in _imports(path) if m == "tests" or m.startswith("tests.") or m.startswith("kilowatt.testing")}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"
    assert not (PACKAGE / "testing").exists()


def test_the_pure_core_imports_nothing_from_kubernetes_or_prometheus():
    for part in ("economics", "performance", "planner"):
        for path in (PACKAGE / part).rglob("*.py"):
            bad = {m for m in _imports(path) if m.split(".")[0] in ("kubernetes", "kopf", "prometheus_api_client")
                   or m.startswith("kilowatt.controller") or m.startswith("kilowatt.metrics.prometheus")}
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_no_import_cycle_between_modules():
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    # Importing a package runs its __init__: an edge to a.b.c is an edge to a.b too (when a.b is ours).
    for m, targets in graph.items():
        for t in list(targets):
            parent = t.rsplit(".", 1)[0]
            if parent in modules and parent != m and not m.startswith(parent + "."):
                targets.add(parent)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_control_loop_reads_in_one_screen():
    lines = (PACKAGE / "controller" / "loop.py").read_text(encoding="utf-8").count("\n")
    assert lines < 250, f"controller/loop.py has {lines} lines"


def test_no_module_level_caches_or_globals():
    """Caches belong to the object that uses them (CapacityTable, a model's own memo): a module-level one can
    hand one caller's figures to another, and outlives what it was keyed on."""
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            assert not isinstance(node, ast.Global), f"{path.relative_to(REPO)}:{node.lineno}: global statement"
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for d in node.decorator_list:
                    name = ast.unparse(d)
                    assert "lru_cache" not in name and name not in ("cache", "functools.cache"), \
                        f"{path.relative_to(REPO)}:{node.lineno}: @{name}"
