"""The package's layers import one way: config/data <- modeling <- weights <- factory <- inference
<- evaluation / analysis / engine / export <- benchmarking <- cli, with no imports placed inside functions to
dodge a cycle; nothing in the package reaches into the source checkout (tools/, refport/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "effdet"

# layer of each top-level part; a module may import only parts of its own layer or lower ones
LAYERS = {"config": 0, "fileio": 0, "runtime": 0, "data": 0, "modeling": 1, "weights": 2, "factory": 3,
          "inference": 4, "evaluation": 5, "analysis": 5, "engine": 5, "export": 5, "benchmarking": 6, "cli": 7,
          "__init__": 8, "__main__": 8}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported effdet part, inside a function) for every import of effdet in ``path``."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            names = []
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [child.module]
            elif isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "effdet" and len(parts) > 1:
                    found.append((parts[1], nested))
            visit(child, nested)

    visit(tree, False)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_point_one_way(path: Path) -> None:
    part = _part(path)
    for imported, in_function in _imports(path):
        assert imported in LAYERS, f"{path}: imports unknown part effdet.{imported}"
        assert LAYERS[imported] <= LAYERS[part], f"{path} ({part}) imports the higher layer effdet.{imported}"
        assert not in_function, f"{path}: imports effdet.{imported} inside a function"
    if part == "data":
        assert all(imported in ("config", "fileio", "runtime", "data") for imported, _ in _imports(path))
    if part in ("evaluation", "analysis"):  # libraries of their own, usable without the training engine
        assert all(imported not in ("engine", "export", "cli") for imported, _ in _imports(path)), \
            f"{path} ({part}) imports the training engine, export or the CLI"


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_the_package_does_not_reach_into_the_checkout(path: Path) -> None:
    """The installed package has no tools/ or refport/ beside it: no import of them, and no path built
    from the module's own location (``Path(__file__).parents[2] / "tools"``). ``effdet benchmark
    --compare-reference`` looks for the harness by module name only (effdet.cli.benchmark.HARNESS)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                 [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        assert not any(n.split(".")[0] in ("tools", "refport") for n in names), f"{path} imports {names}"
        assert not (isinstance(node, ast.Name) and node.id == "__file__"), f"{path} locates files from __file__"
