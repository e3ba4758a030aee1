"""The layering is checked: the import contracts hold, fail on a climbing import, no module imports a
private name from another package, and no chain of imports (function-level ones included) comes back round."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "gradaudit"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")], cwd=source_root,
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contract_holds_and_breaks_on_a_climbing_import(tmp_path):
    assert LINT_IMPORTS.exists(), "lint-imports is missing: import-linter is installed by the test extra"
    assert _lint_imports(ROOT / "src").returncode == 0
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "gradaudit", ignore=shutil.ignore_patterns("__pycache__"))
    roar = copy / "gradaudit" / "audit" / "roar.py"
    roar.write_text(roar.read_text() + "\nfrom ..report import write_report  # climbs: audit -> report\n")
    broken = _lint_imports(copy)
    assert broken.returncode != 0
    assert "gradaudit.audit is not allowed to import gradaudit.report" in broken.stdout


def _package_of(module: str) -> str:
    """``gradaudit.audit.roar`` -> ``gradaudit.audit``; a top-level module is its own package."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_module_imports_a_private_name_from_another_package():
    offences = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = here[:len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("gradaudit") or _package_of(target) == _package_of(module):
                continue
            offences += [f"{module} imports {alias.name} from {target}" for alias in node.names
                         if alias.name.startswith("_")]
    assert offences == []


def _module_of(path: Path, package: Path) -> str:
    return ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")


def _import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, read from the source of every module: imports inside
    functions count as much as those at the top. ``from X import name`` imports the module X.name where
    there is one, else X (as import-linter reads it)."""
    paths = {_module_of(path, package): path for path in package.rglob("*.py")}
    graph = {}
    for module, path in paths.items():
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = (".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
                        if node.level else node.module or "")
                found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base for alias in node.names}
        graph[module] = {target for target in found if target in paths and target != module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One chain of imports that comes back to where it started (depth first), or None."""
    state, path = {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycle_among_the_package_modules_function_level_imports_included(tmp_path):
    assert _cycle(_import_graph(PACKAGE)) is None
    copy = tmp_path / "gradaudit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    attention = copy / "engine" / "attention.py"
    attention.write_text(attention.read_text() + "\n\ndef _late():\n    from .backprop import backprop\n\n"
                         "    return backprop\n")       # the cut the engine once had: backprop -> rules -> ...
    found = _cycle(_import_graph(copy))
    assert found is not None and {"gradaudit.engine.attention", "gradaudit.engine.backprop"} <= set(found)


def test_every_subpackage_the_readme_uses_as_ga_name_is_reachable_so():
    import re
    import types

    import gradaudit as ga

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    used = set(re.findall(r"\bga\.([a-z_]+)\.", "\n".join(page.read_text() for page in pages)))
    assert "data" in used
    for name in used | set(ga.SUBPACKAGES):
        assert getattr(ga, name) is not None, name          # ga.config is an object, the rest subpackages
    for name in ga.SUBPACKAGES:
        assert isinstance(getattr(ga, name), types.ModuleType), name
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        ga.nothing  # noqa: B018
