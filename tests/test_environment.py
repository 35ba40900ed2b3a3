"""pyproject.toml, environment.yml and constraints.txt must describe the same environment."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def pyproject_requirements() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines.extend(extra)
    requirements = {}
    for line in lines:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == "memseg-lite":  # the dev extra pulls in the workbook extra
            continue
        requirements[name] = requirement.specifier
    return requirements


def environment_requirements() -> tuple[list, dict[str, SpecifierSet]]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = [], {}
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            for line in entry["pip"]:
                requirement = Requirement(line)
                pip[canonicalize_name(requirement.name)] = requirement.specifier
        else:
            conda.append(entry)
    return conda, pip


def test_same_packages_and_versions():
    expected = pyproject_requirements()
    _, listed = environment_requirements()
    assert sorted(listed) == sorted(expected), (
        "environment.yml and pyproject.toml list different packages: "
        f"only in environment.yml {sorted(set(listed) - set(expected))}, "
        f"only in pyproject.toml {sorted(set(expected) - set(listed))}"
    )
    for name, specifier in expected.items():
        assert listed[name] == specifier, f"{name}: pyproject {specifier} vs environment.yml {listed[name]}"


def test_python_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda, _ = environment_requirements()
    python = [entry for entry in conda if re.match(r"python\b", entry)]
    assert python, "environment.yml must pin python"
    conda_spec = SpecifierSet(python[0].removeprefix("python"))
    assert conda_spec == SpecifierSet(project["requires-python"])
    for version in ("3.11", "3.12", "3.13"):
        assert version in conda_spec


def test_tested_torch_pair_satisfies_the_requirements():
    """constraints.txt pins the torch pair that installs offline here; pyproject must admit it."""
    requirements = pyproject_requirements()
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = requirement.specifier
    assert set(pins) == {"torch", "torchvision"}
    for name, pin in pins.items():
        (version,) = [spec.version for spec in pin]
        assert version in requirements[name], f"{name}=={version} does not satisfy pyproject's {requirements[name]}"


def test_no_exact_pins_in_pyproject():
    """Exact pins break on newer Pythons; pyproject keeps lower bounds (constraints.txt pins)."""
    for name, specifier in pyproject_requirements().items():
        assert all(spec.operator not in ("==", "===") for spec in specifier), f"{name} is pinned exactly: {specifier}"
