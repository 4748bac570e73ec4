"""The `trim` command line: exit codes and messages (no model is loaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from langchain_trim.cli import EXIT_BAD_INPUT, EXIT_NO_MODEL, app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["solve"], EXIT_BAD_INPUT, "give a question or --file"),
        (["solve", "q", "--file", "x.jsonl"], EXIT_BAD_INPUT, "not both"),
        (["solve", "--file", "/nonexistent/problems.jsonl"], EXIT_BAD_INPUT, "does not exist"),
        (["solve", "q", "--threshold", "1.5"], EXIT_BAD_INPUT, "threshold must be in"),
        (["solve", "q", "--policy", "magic"], EXIT_BAD_INPUT, "unknown policy"),
        (["solve", "q", "--weak", "/nonexistent/w.gguf"], EXIT_NO_MODEL, "does not exist"),
        (["solve", "q", "--strong", "gpt-5"], EXIT_NO_MODEL, "unknown embedded model"),
    ],
)
def test_exit_codes(args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.output.replace("\n", " ")


def test_bad_jsonl_lines(tmp_path: Path) -> None:
    """Every bad row is named (the good ones would still be solved, see
    test_eval_robustness); a file with no usable row stops before loading a model."""
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"question": "  "}\nnot json\n')
    result = runner.invoke(app, ["solve", "--file", str(bad)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "p.jsonl:1: needs a non-empty" in result.output and "p.jsonl:2" in result.output
    bad.write_text('{"answer": 3}\n')
    result = runner.invoke(app, ["solve", "--file", str(bad)])
    assert result.exit_code == EXIT_BAD_INPUT and "needs a non-empty" in result.output


def test_the_embedded_pair_cuts_the_strong_model_at_lines_unless_a_format_is_asked() -> None:
    """The embedded default is the pair chosen on dev (weak: paragraphs, strong: lines); a
    user who names another format or another strong model gets the same format for both
    unless they name the strong one."""
    from langchain_trim.cli import _setting
    from langchain_trim.local.setting import local_setting
    from langchain_trim.step_format import STEP_FORMATS

    def formats(*steps: str | None, strong: str = "strong") -> tuple[str | None, str | None]:
        s = _setting(("weak", None), (strong, None), ("none", None), 0.0, *steps)
        return s.step_format, s.strong_step_format

    assert formats() == formats("paragraphs") == ("paragraphs", "lines")
    assert formats("release") == ("release", None)
    assert formats(None, "paragraphs") == ("paragraphs", "paragraphs")
    assert formats(strong="tiny") == ("paragraphs", None)  # chosen for the embedded pair only
    assert local_setting(prm="none").strong_step_format == "lines"
    assert local_setting(prm="none", strong="tiny").strong_step_format is None
    lines = STEP_FORMATS["lines"]
    assert lines.delimiter == "\n" and lines.system == STEP_FORMATS["paragraphs"].system
