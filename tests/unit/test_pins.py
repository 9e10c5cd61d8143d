"""The pins tell the truth: what pyproject.toml declares is what the lock files pin and what CI installs."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins(name: str) -> dict[str, Version]:
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        if line and not line.startswith("#"):
            package, version = line.split("==")
            found[canonicalize_name(package)] = Version(version)
    return found


def declared(*extras: str) -> list[Requirement]:
    requirements = [Requirement(text) for text in PROJECT["dependencies"]]
    for extra in extras:
        requirements += [Requirement(text) for text in PROJECT["optional-dependencies"][extra]]
    return [requirement for requirement in requirements if canonicalize_name(requirement.name) != "batchinfer"]


def test_runtime_and_test_pins_are_apart() -> None:
    runtime, test = pins("constraints.txt"), pins("constraints-test.txt")
    assert not runtime.keys() & test.keys()
    for requirement in declared("timm"):
        assert canonicalize_name(requirement.name) in runtime, requirement
    for requirement in declared("test", "demo"):
        assert canonicalize_name(requirement.name) in runtime | test, requirement
    assert "pytest" not in runtime and "moto" not in runtime  # the image installs constraints.txt alone


def test_lower_bounds_are_the_tested_versions() -> None:
    """Every declared range holds its pin, and its lower bound is the pinned (tested) version."""
    every = pins("constraints.txt") | pins("constraints-test.txt")
    for requirement in declared("timm", "test", "demo"):
        pinned = every[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pinned), (requirement, pinned)
        lower = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==")]
        assert lower == [pinned], f"{requirement}: its lower bound is not the tested {pinned}"


def test_requires_python_is_what_runs() -> None:
    """The tests', the venv's and the image's Python (docker/Dockerfile asserts it) — and nothing wider."""
    allowed = SpecifierSet(PROJECT["requires-python"])
    running = Version(".".join(map(str, sys.version_info[:3])))
    image = re.search(r"sys.version_info\[:2\] == \((\d+), (\d+)\)", (ROOT / "docker/Dockerfile").read_text())
    assert running in allowed and Version(f"{image[1]}.{image[2]}.0") in allowed
    assert Version(f"{image[1]}.{int(image[2]) + 1}") not in allowed and Version(f"{image[1]}.{int(image[2]) - 1}") not in allowed
