"""The package's shape, as issue 27 set it: layers that import only downward, small units, the CLI a parser.

Read from the source with ``ast`` (nothing is imported), so a new module that breaks a rule fails here with its
name and line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "segfix"

# Each unit may import its own layer's modules and any lower layer; never a higher one, never a sibling unit.
LAYERS = {
    "_version": 0,
    "_lazy": 0,
    "limits": 0,
    "checks": 1,
    "synthetic": 1,
    "ops": 2,
    "metrics": 3,
    "data": 3,
    "viz": 3,
    "network": 4,
    "hub": 5,
    "prediction": 6,
    "training": 7,
    "jobs": 7,
    "commands": 8,
    "cli": 9,
    "__main__": 10,
    "__init__": 10,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def _unit(module: str) -> str:
    return module.split(".")[0]


def _imports(module: str, path: Path) -> list[tuple[str, int, str | None]]:
    """(imported segfix module, line, imported name) for every import in the file, lazy ones included."""
    package = module.split(".")[:-1] if not module.endswith("__init__") else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                found.append((target, node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segfix"):
            target = node.module.removeprefix("segfix").lstrip(".")
            for alias in node.names:
                found.append((target, node.lineno, alias.name))
    return found


def _resolve(target: str, name: str | None, modules: dict[str, Path]) -> str:
    """The module an import reaches: ``from .ops import shift`` reaches ops.shift."""
    candidate = f"{target}.{name}" if target else (name or "")
    if candidate in modules:
        return candidate
    return target or "__init__"


def test_top_level_holds_at_most_twelve_modules_and_the_rest_sits_in_subpackages():
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert len(top) <= 12, top
    packages = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())
    assert packages == ["data", "hub", "jobs", "metrics", "network", "ops", "prediction", "training"]


def test_every_unit_imports_only_downward():
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        here = _unit(module)
        for target, line, name in _imports(module, path):
            there = _unit(_resolve(target, name, modules))
            if there == here:
                continue
            if LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{path.relative_to(SRC)}:{line} ({here}) imports {there}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph = {m: {_resolve(t, n, modules) for t, _, n in _imports(m, p)} - {m} for m, p in modules.items()}
    # __init__ files re-export their package; only cycles through plain modules are mistakes
    graph = {
        m: {t for t in targets if not t.endswith("__init__") and "." in t or t in modules}
        for m, targets in graph.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt.endswith("__init__") or nxt == "__init__" or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                pytest.fail(f"import cycle: {' -> '.join([*stack, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def _sizes(kind: type) -> list[tuple[str, int]]:
    found = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, kind) or (kind is ast.FunctionDef and isinstance(node, ast.AsyncFunctionDef)):
                found.append((f"{module}.{node.name}:{node.lineno}", node.end_lineno - node.lineno + 1))
    return found


def test_no_function_over_80_lines_and_no_class_over_300():
    long_functions = [f"{name} ({n} lines)" for name, n in _sizes(ast.FunctionDef) if n > 80]
    long_classes = [f"{name} ({n} lines)" for name, n in _sizes(ast.ClassDef) if n > 300]
    assert not long_functions and not long_classes, long_functions + long_classes


def test_cli_parses_arguments_only():
    cli = SRC / "cli.py"
    assert len(cli.read_text().splitlines()) <= 700
    tree = ast.parse(cli.read_text())
    heavy = {"torch", "timm", "numba", "numpy", "scipy", "PIL"}
    top_level = [
        node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
    ]  # lazy imports inside functions are the point
    names = {alias.name.split(".")[0] for node in top_level for alias in node.names if isinstance(node, ast.Import)}
    names |= {
        (node.module or "").split(".")[0] for node in top_level if isinstance(node, ast.ImportFrom) and not node.level
    }
    assert not names & heavy, names & heavy


def test_at_most_three_reaches_into_another_modules_private_names():
    modules = _modules()
    reaches = []
    for module, path in modules.items():
        for target, line, name in _imports(module, path):
            reached = _resolve(target, name, modules)
            if name and name.startswith("_") and not name.startswith("__") and reached == (target or "__init__"):
                reaches.append(f"{path.relative_to(SRC)}:{line} {target}.{name}")
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id not in ("self", "cls")
                and any(node.value.id == m.split(".")[-1] for m in modules)
            ):
                reaches.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value.id}.{node.attr}")
    assert len(reaches) <= 3, reaches


TESTS = SRC.parents[1] / "tests"


def _holds_logic(path: Path) -> bool:
    return any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in ast.parse(path.read_text()).body)


def test_tests_mirror_the_package():
    """Every public module that holds logic has its own test module at the mirrored path (segfix/ops/vote.py ->
    tests/ops/test_vote.py). Private helper modules (a leading underscore) are tested through the module that
    calls them, which the dict below names."""
    tested_through = {"_lazy": "test_architecture", "_version": "test_cli", "jobs._coco": "jobs.test_refine",
                      "jobs._output_folder": "jobs.test_refine", "jobs._pictures": "jobs.test_refine",
                      "jobs._runner": "jobs.test_refine", "ops.kernels": "ops.test_kernels"}  # fmt: skip
    missing = []
    for module, path in _modules().items():
        name = module.split(".")[-1]
        if name in ("__init__", "__main__") or not _holds_logic(path):
            continue
        if module in tested_through:
            target = TESTS.joinpath(*tested_through[module].split(".")).with_suffix(".py")
        else:
            target = TESTS.joinpath(*module.split(".")[:-1], f"test_{name}.py")
        if not target.is_file():
            missing.append(f"{module} -> {target.relative_to(TESTS)}")
    assert not missing, "\n".join(missing)


def test_no_test_reaches_into_private_names():
    """Tests use what a user can use: no segfix name or module with a leading underscore, no argparse internals."""
    reaches = []
    for path in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segfix"):
                private = [p for p in node.module.split(".") if p.startswith("_") and not p.startswith("__")]
                private += [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private:
                    reaches.append(f"{path.relative_to(TESTS)}:{node.lineno} {node.module} {private}")
            elif isinstance(node, ast.Attribute) and node.attr in ("_actions", "_SubParsersAction"):
                reaches.append(f"{path.relative_to(TESTS)}:{node.lineno} .{node.attr}")
            elif (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id
                in {"segfix", "inference", "memory", "pretrained", "registry", "checks", "io", "files"}
            ):
                reaches.append(f"{path.relative_to(TESTS)}:{node.lineno} {node.value.id}.{node.attr}")
    assert not reaches, "\n".join(reaches)


def test_api_page_documents_the_public_faces_and_nothing_private():
    """docs/api.md shows what users build or receive (every name of segfix.__all__ and of each subpackage's
    __all__, itself or through its documented module) and no private module or name."""
    import importlib

    page = (SRC.parents[1] / "docs" / "api.md").read_text()
    documented = re.findall(r"^::: ([\w.]+)$", page, re.M)
    private = [d for d in documented if any(p.startswith("_") for p in d.split("."))]
    assert not private, private
    faces = ["segfix", "segfix.ops", "segfix.prediction", "segfix.hub", "segfix.network", "segfix.jobs",
             "segfix.training", "segfix.metrics"]  # fmt: skip
    undocumented = []
    for face in faces:
        package = importlib.import_module(face)
        for name in package.__all__:
            if name in ("__version__", "metrics", "ImageInput"):
                continue
            home = getattr(getattr(package, name), "__module__", None) or face
            if not any(d.endswith(f".{name}") or d == home for d in documented):
                undocumented.append(f"{face}.{name}")
    assert not undocumented, undocumented
