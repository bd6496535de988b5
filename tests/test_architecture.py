"""The layering of the three packages, read from the source with ``ast``.

``dicom_node -> ichnet_core <- training``: the core knows nothing of the node or of training,
training nothing of the node (../shared/DESIGN.md, layers), and no module imports itself
through others. Every import statement counts, including ``TYPE_CHECKING`` blocks and the lazy
imports inside functions: a circle that only a type checker or one code path walks is still a
circle a reader has to untangle. Importing ``a.b.c`` also runs the ``a`` and ``a.b`` package
files; those implicit edges are left out, because a package file re-exporting its modules is
the usual Python layout, not a circle between modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

ROOT: Final[Path] = Path(__file__).resolve().parents[1]
PACKAGES: Final[tuple[str, ...]] = ("dicom_node", "ichnet_core", "training")
#: Which packages each package may import (besides itself).
ALLOWED_LAYERS: Final[Mapping[str, frozenset[str]]] = {
    "dicom_node": frozenset({"ichnet_core"}),
    "training": frozenset({"ichnet_core"}),
    "ichnet_core": frozenset(),
}
#: The project's limit on module size (helper rules: small modules).
MAX_MODULE_LINES: Final[int] = 600


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


MODULES: Final[dict[str, Path]] = _module_files()


def _imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name ``module``'s import statements refer to (relative ones resolved)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name``
                # imports mod.
                submodule = f"{source}.{alias.name}"
                yield submodule if submodule in MODULES else source


def _project_module(name: str) -> str | None:
    """The project module that ``name`` (a module or a name inside one) lives in, if any."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = {_project_module(name) for name in _imported_names(module, path)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_graph_sees_every_package_and_real_edges() -> None:
    graph = import_graph()
    assert {module.split(".")[0] for module in graph} == set(PACKAGES)
    # Known edges of each import form: absolute, module-from-package, TYPE_CHECKING, lazy.
    assert "ichnet_core.durable" in graph["dicom_node.storage"]
    assert "dicom_node.results.device" in graph["dicom_node.results"]
    assert "ichnet_core.inference.torch_engine" in graph["ichnet_core.inference.engine"]
    assert "ichnet_core.models.weights" in graph["ichnet_core.inference.base"]


def test_find_cycles_reports_a_circle_and_only_the_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_upward_imports() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if (layer := target.split(".")[0]) != module.split(".")[0]
        and layer not in ALLOWED_LAYERS[module.split(".")[0]]
    ]
    assert upward == []


def test_modules_stay_small() -> None:
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > MAX_MODULE_LINES} == {}
