"""The layout rules, checked on the source: the Flower apps never import the experiment tools, the tools
import each other without a circle, benchmarks never import tests, nothing in the package imports
benchmarks or tests, and no code calls a Flower entry point that Flower marks deprecated."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fedetf", "strategies", "simulations", "data_prep")
TOOLS = "simulations.experiments"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any level (top, function or ``if``), as dotted names."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _graph(folders: tuple[str, ...]) -> nx.DiGraph:
    """Module -> imported module, for the modules under ``folders`` (imports of other code left out)."""
    files = [p for f in folders for p in (ROOT / f).rglob("*.py")]
    modules = {_module(p): p for p in files}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        graph.add_edges_from((name, target) for target in _imports(path) if target in modules)
    return graph


def test_the_apps_never_import_the_experiment_tools() -> None:
    graph = _graph(PACKAGES)
    components = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"]
    apps = {ref.split(":")[0] for ref in components.values()}
    assert apps == {"simulations.server_app", "simulations.client_app"}
    reached = set().union(*(nx.descendants(graph, a) | {a} for a in apps))
    tools = {m for m in reached if m.startswith(TOOLS) or m == "simulations.local"}
    assert not tools, f"the apps import experiment tools: {sorted(tools)}"
    assert any(m.startswith("simulations.experiments.") for m in graph), "the tools' package is where it should be"


def test_the_tools_import_each_other_without_a_circle() -> None:
    graph = _graph(PACKAGES)
    simulations = graph.subgraph(m for m in graph if m.startswith("simulations."))
    cycles = list(nx.simple_cycles(simulations))
    assert cycles == [], cycles
    assert nx.has_path(graph, "simulations.experiments.sweep", "simulations.experiments.report")  # --report
    assert not nx.has_path(graph, "simulations.experiments.report", "simulations.experiments.sweep")


def test_benchmarks_never_import_tests_and_the_package_imports_neither() -> None:
    for path in (ROOT / "benchmarks").glob("*.py"):
        bad = {m for m in _imports(path) if m == "tests" or m.startswith("tests.")}
        assert not bad, f"{path.name} imports {sorted(bad)}"
    for folder in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            bad = {m for m in _imports(path) if m.split(".")[0] in ("tests", "benchmarks")}
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_commands_are_sweep_and_report() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {
        "fedetf-sweep": "simulations.experiments.sweep:main",
        "fedetf-report": "simulations.experiments.report:main",
    }


def test_no_deprecated_flower_entry_point_is_used() -> None:
    deprecated = {"flwr.simulation.run_simulation", "flwr.simulation.start_simulation"}
    for folder in (*PACKAGES, "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            used = deprecated & _imports(path)
            assert not used, f"{path.relative_to(ROOT)} imports {sorted(used)} (deprecated in flwr 1.42)"
