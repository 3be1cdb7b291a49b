"""The package's layers (README, "Layout"): a module imports only its own layer or those below.

0 the basics (types, errors, limits); 1 imaging and models (vision), video files (video:
decoding, cuts, tracking, scanning) and settings (config);
2 storage; 3 services, governance, media, evaluation; 4 the composition root (service.py) and
the faces to the world (api, cli, web, and shapes: the JSON shapes they share). Imports under
``TYPE_CHECKING`` are annotations only and may name any layer, but no import, those and the
deferred ones included, may close a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "facesearch"

LAYERS = {
    "types": 0, "errors": 0, "limits": 0,
    "vision": 1, "video": 1, "config": 1,
    "storage": 2,
    "services": 3, "governance": 3, "media": 3, "evaluation": 3,
    "service": 4, "shapes": 4, "api": 4, "cli": 4, "web": 4, "__main__": 4, "__init__": 4,
}


def _part(module: str) -> str:
    """The top-level part of the package a dotted ``facesearch...`` name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name).is_dir()


def _imports(path: Path, *, annotations: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` of each run-time import of facesearch in ``path`` (with
    ``annotations``, those under ``TYPE_CHECKING`` too)."""
    tree = ast.parse(path.read_text())
    type_only = set() if annotations else {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
        and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "facesearch":  # from facesearch import limits: the submodule
                out += [(node.lineno, f"facesearch.{a.name}" if _is_module(a.name)
                         else "facesearch") for a in node.names]
            elif node.module.startswith("facesearch."):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names
                    if a.name.startswith("facesearch.")]
    return out


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in MODULES}
    assert parts <= set(LAYERS), f"give these a layer: {sorted(parts - set(LAYERS))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_its_layer_or_lower(path: Path) -> None:
    mine = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    upward = [f"line {line}: {module} (layer {LAYERS.get(_part(module))})"
              for line, module in _imports(path)
              if LAYERS.get(_part(module), 9) > LAYERS[mine]]
    assert upward == [], f"{path.name} is in layer {LAYERS[mine]}"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(("facesearch", *parts))


def _resolve(module: str, known: set[str]) -> str | None:
    """The package module ``module`` names (a name imported from a module: that module)."""
    while module and module not in known:
        module = module.rpartition(".")[0]
    return module or None


def import_graph() -> dict[str, set[str]]:
    """Each module's imports of other facesearch modules: those inside functions and those
    for annotations only included (a deferred import is still a dependency, and a module
    whose types name each other's cannot be read alone)."""
    names = {_module_name(p): p for p in MODULES}
    known = set(names)
    return {name: {target for _, module in _imports(path, annotations=True)
                   if (target := _resolve(module, known)) not in (None, name, "facesearch")}
            for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


@pytest.mark.parametrize(("graph", "expected"), [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
])
def test_cycles_finds_every_loop(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_the_graph_sees_deferred_imports() -> None:
    graph = import_graph()
    assert "facesearch.vision.pipeline" in graph["facesearch.service"]
    assert all(target in graph for targets in graph.values() for target in targets)


def test_no_module_imports_itself_back() -> None:
    """No import cycle, deferred and annotation-only imports included: each module can be
    read (and tested) knowing only what it imports."""
    assert cycles(import_graph()) == []
