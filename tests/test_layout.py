"""The package layout: subpackages per stage of the method, imports flowing one way, no cycles.

The import contracts live in pyproject.toml ([tool.importlinter]); import-linter checks every
import statement, including those inside functions.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest

import memseg_lite

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "memseg_lite"
SUBPACKAGES = (
    "core",
    "datasets",
    "simulation",
    "network",
    "evaluation",
    "training",
    "experiments",
    "deployment",
    "teaching",
)


def test_import_contracts_hold():
    importlinter_cli = pytest.importorskip("importlinter.cli")
    exit_code = importlinter_cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    assert exit_code == 0, "an import breaks the layer contracts in pyproject.toml (see the report above)"


def test_contracts_name_every_subpackage():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    on_disk = {info.name for info in pkgutil.iter_modules([str(PACKAGE)]) if info.name != "__init__"}
    assert named == on_disk, f"layers in pyproject.toml {sorted(named)} != top-level modules {sorted(on_disk)}"


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_each_subpackage_says_what_it_is_and_may_import(name):
    init = PACKAGE / name / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text()))
    assert docstring, f"{init} needs a docstring saying what the subpackage is"
    assert "May import:" in docstring, f"{init}'s docstring must say what the subpackage may import"
    for module in pkgutil.iter_modules([str(PACKAGE / name)]):
        assert module.name in docstring, f"{init}'s docstring does not mention its module {module.name}"


def test_no_flat_modules_left_at_the_top():
    flat = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in {"__init__.py", "cli.py"})
    assert not flat, f"modules outside a subpackage: {flat}"


def test_package_docstring_lists_every_subpackage():
    for name in SUBPACKAGES:
        assert f"``{name}``" in memseg_lite.__doc__
