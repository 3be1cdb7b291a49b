"""The package's layers (README, "Layout"): a module imports only its own layer or those below.

0 the basics (types, errors, limits); 1 imaging and models (vision) and settings (config);
2 storage; 3 services, governance, media, evaluation; 4 the composition root (service.py) and
the faces to the world (api, cli, web, and shapes: the JSON shapes they share). Imports under
``TYPE_CHECKING`` are annotations only and may name any layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "facesearch"

LAYERS = {
    "types": 0, "errors": 0, "limits": 0,
    "vision": 1, "config": 1,
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


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of each run-time import of facesearch in ``path``."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
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
