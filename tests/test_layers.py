"""The package's layers point one way: no module imports a layer above its own (``LAYERS``, lowest first, which
``docs/architecture.md`` lists), and only ``cloud/`` imports MLflow; the plugins (their own distribution) sit on
top.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import tfp_mlflow

PACKAGE = Path(tfp_mlflow.__file__).parent

#: Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS = [
    {"errors", "_version", "_paths", "_npz", "_json", "_threads", "_compat", "progress", "cloud.schema",
     "cloud.context"},
    {"spec", "fingerprint", "builder", "task", "policies", "scenarios", "keywords", "noise"},
    {"extract", "selectors", "ranking", "transferability", "reference", "public_datasets", "plots"},
    {"cloud"},
    {"recommend", "advice", "recommendation", "evidence", "knowledge_map", "prepared", "readiness", "guard", "remote",
     "reference_import"},
    {"train", "tune"},
    {"evaluation"},
    {"demo", "workflows", "lightning"},
    {"cli", "testing", "__init__", "__main__"},
]


def _layer(module: str) -> int:
    """Layer of a dotted module path relative to the package (the longest listed prefix decides)."""
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        prefix = ".".join(parts[:size])
        for rank, layer in enumerate(LAYERS):
            if prefix in layer:
                return rank
    raise AssertionError(f"tfp_mlflow.{module} is in no layer of tests/test_layers.py: add it")


@functools.cache
def _modules() -> tuple[tuple[str, ast.Module], ...]:
    """Every module of the package, parsed once per test session."""
    parsed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        name = ".".join(p for p in relative.parts if p != "__init__") or "__init__"
        parsed.append((name, ast.parse(path.read_text(), str(path))))
    return tuple(parsed)


@functools.cache
def _imports(tree: ast.AST) -> tuple[tuple[str, int], ...]:
    """Every module a parsed module imports, with its line."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
    return tuple(found)


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for name, tree in _modules():
        own = _layer(name)
        for imported, line in _imports(tree):
            if imported.startswith("tfp_mlflow."):
                target = _layer(imported.removeprefix("tfp_mlflow."))
                if target > own:
                    upward.append(f"tfp_mlflow.{name}:{line} imports {imported}")
    assert upward == []


def test_only_the_cloud_package_imports_mlflow():
    """(and ``_compat.mlflow``, which names MLflow's private names for it)"""
    outside = [f"tfp_mlflow.{name}:{line} imports {imported}" for name, tree in _modules()
               if not name.startswith("cloud") and name != "_compat.mlflow"
               for imported, line in _imports(tree) if imported == "mlflow" or imported.startswith("mlflow.")]
    assert outside == []


def test_the_cloud_is_storage_and_imports_no_selector():
    """``cloud/`` stores runs, artifacts, knowledge and studies; what is derived from them (prepared stacks, rankings)
    lives above it."""
    above = ("tfp_mlflow.selectors", "tfp_mlflow.ranking")
    found = [f"tfp_mlflow.{name}:{line} imports {imported}" for name, tree in _modules() if name.startswith("cloud")
             for imported, line in _imports(tree) if imported.startswith(above)]
    assert found == []


def test_the_plugins_are_not_part_of_the_core_package():
    assert not (PACKAGE / "plugins").exists()


#: The longest a function of the package may be; a longer one is split where its steps are (see docs/architecture.md).
MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_the_house_limit():
    long = []
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"tfp_mlflow.{name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"split these at their steps: {long}"


def test_the_architecture_page_lists_these_layers():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    block = page.split("```text\n", 1)[1].split("```", 1)[0]
    listed = [set(line.split("  ", 1)[1].split(", ")) for line in block.strip().splitlines()]
    assert listed == LAYERS, "docs/architecture.md's layer list differs from LAYERS: redraw it from this file"


def test_importing_the_package_stays_light():
    """``import tfp_mlflow`` (every ``tfp`` command, the server plugin) loads no torch, MLflow or scipy.stats."""
    import subprocess
    import sys

    heavy = ["torch", "mlflow", "scipy.stats", "optuna", "timm"]
    done = subprocess.run([sys.executable, "-c", "import sys, tfp_mlflow; "
                           f"print([m for m in {heavy!r} if m in sys.modules])"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
