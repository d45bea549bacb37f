"""The package's modules: no import cycle among them (imports inside functions included), no ML library
loaded with the code location, and none over 400 lines."""

import ast
import subprocess
import sys
from pathlib import Path

import real_assets

PACKAGE = Path(next(iter(real_assets.__path__)))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: package modules it imports}, read from the source with ast."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:
                    anchor = name.split(".")[: -node.level] if path.name != "__init__.py" else name.split(".")
                    base = ".".join([*anchor, node.module])
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_package_modules():
    graph = import_graph()
    assert "real_assets.definitions" in graph["real_assets.cli"]  # the graph sees function-level imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


HEAVY = ("torch", "transformers", "datasets", "trl", "sentence_transformers", "scipy", "mlflow", "ray")
"""Imported by the steps that need them, never by loading the code location: every Dagster process (the
code server, each run worker, `dagster dev` reloads) loads it before doing anything."""


def test_loading_the_code_location_imports_no_ml_library():
    probe = (
        "import sys, real_assets.definitions as d; d.defs.resolve_asset_graph(); "
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == []


MAX_MODULE_LINES = 400
"""Issue 22: a module over this length mixes concerns; split it by what it holds."""


def test_no_module_of_the_package_is_over_400_lines():
    lengths = {p.relative_to(PACKAGE.parent): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {str(path): n for path, n in lengths.items() if n > MAX_MODULE_LINES} == {}
