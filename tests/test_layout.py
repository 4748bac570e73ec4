"""How the package is laid out: no machine paths (issue 15)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "langchain_trim"

_ABSOLUTE = re.compile(
    r"""(?<![\w.:/~-])/(?:work|home|Users|root|mnt|srv|opt|scratch|data|shared|nfs|var|tmp)/"""
    r"""|[A-Za-z]:\\\\[A-Za-z]"""
)
"""An absolute path of some machine (``/work/...``, ``/home/...``, ``C:\\Users``)."""


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix in (".py", ".json"))


def test_the_package_names_no_machine_path() -> None:
    """Data comes by argument or environment variable (``langchain_trim.paths``), never
    from where a developer's data lay (``/work/shared/data``, ``<repo>/../shared/data``)."""
    offenders = []
    for path in _sources():
        rel = path.relative_to(ROOT)
        text = path.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            if "shared/data" in line or _ABSOLUTE.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
            if re.search(r"""["']shared["']\s*/\s*["']data["']""", line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
            # Path(__file__).parents[k] at or above the repository root leaves the package
            for k in re.findall(r"parents\[(\d+)\]", line):
                if int(k) >= len(rel.parts) - 1:
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []


def test_official_tables_come_only_from_the_environment_or_a_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from langchain_trim.errors import DataNotFoundError, InvalidInputError
    from langchain_trim.paths import reference_dir
    from langchain_trim.policies.registry import make_policy
    from langchain_trim.sim.official import official_calibration

    monkeypatch.delenv("TRIM_REFERENCE", raising=False)
    monkeypatch.delenv("TRIM_SHARED_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match="set TRIM_REFERENCE") as info:
        official_calibration()
    assert "\n" not in str(info.value) and isinstance(info.value, FileNotFoundError)
    with pytest.raises(InvalidInputError, match=r"pomdp needs the official reference tables"):
        make_policy("pomdp")
    monkeypatch.setenv("TRIM_SHARED_DATA", str(tmp_path))
    assert reference_dir() == tmp_path / "trim_reference"
    with pytest.raises(DataNotFoundError, match=r"trim_reference/pomdp_calibration.json does not"):
        official_calibration()
    monkeypatch.setenv("TRIM_REFERENCE", str(tmp_path / "ref"))
    assert reference_dir() == tmp_path / "ref"
