"""The README's examples run, its commands exist, and its links lead somewhere.

Python blocks run in order in one namespace (later how-tos reuse the quickstart's
``weak``/``strong``/``prm``/``graph``), except the few that need model weights, a GPU
server or an API key (:data:`NEEDS_MODELS`).  Shell lines are checked, not run: every
``trim`` line names a real subcommand and real options, every ``make`` target exists.
Relative links of the README and ``docs/`` resolve to files and headings.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NEEDS_MODELS = ("local_setting(",)
"""Markers of blocks that load the embedded weights (run by ``make demo``, not here)."""


def blocks(lang: str) -> list[str]:
    return [
        body for kind, body in FENCE.findall(README.read_text(encoding="utf-8")) if kind == lang
    ]


def test_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numpy")  # make_policy("agg") loads the shipped weights
    pytest.importorskip("safetensors")
    from langchain_trim import step_format
    from langchain_trim.prm import registry

    monkeypatch.chdir(tmp_path)
    # the how-tos register a step format and a PRM: keep them out of the other tests
    monkeypatch.setattr(step_format, "STEP_FORMATS", dict(step_format.STEP_FORMATS))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    code = blocks("python")
    runnable = [b for b in code if not any(m in b for m in NEEDS_MODELS)]
    assert len(runnable) >= 5 and len(code) - len(runnable) <= 1
    namespace: dict[str, Any] = {"__name__": "readme"}
    for n, body in enumerate(runnable):
        try:
            exec(compile(body, f"README python block {n}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"README python block {n} failed:\n{body}") from exc
    assert namespace["out"]["trim_final_answer"] == "12"
    assert namespace["pool"].spent <= namespace["pool"].total


def shell_lines() -> list[list[str]]:
    out = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(shlex.split(line))
    return out


def test_trim_commands_and_options_exist() -> None:
    pytest.importorskip("typer")
    import typer

    from langchain_trim.cli import app

    group: Any = typer.main.get_command(app)
    lines = [argv for argv in shell_lines() if argv[0] == "trim"]
    assert len(lines) >= 6
    for argv in lines:
        command = group.commands.get(argv[1])
        assert command is not None, f"no `trim {argv[1]}`: {shlex.join(argv)}"
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for word in argv[2:]:
            if word.startswith("-"):
                assert word.split("=", 1)[0] in known, f"`trim {argv[1]}` has no {word}"


def test_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    lines = [argv for argv in shell_lines() if argv[0] == "make"]
    assert ["make", "demo"] in lines and ["make", "test"] in lines
    for argv in lines:
        assert argv[1] in targets, shlex.join(argv)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize(
    "page", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_relative_links_resolve(page: Path) -> None:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: broken link {target}"
        if anchor and dest.suffix == ".md":
            headings = re.findall(
                r"^#+ (.+)$", FENCE.sub("", dest.read_text(encoding="utf-8")), re.M
            )
            assert anchor in {slug(h) for h in headings}, f"{page.name}: no heading #{anchor}"
