"""What the ``trim`` command line prints: user and model text verbatim, every ``-p`` kept,
no progress-bar frames when nobody watches (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import langchain_trim.cli as cli_module
from langchain_trim.cli import EXIT_BAD_INPUT, EXIT_NO_MODEL, app
from langchain_trim.errors import InvalidInputError, ModelNotFoundError
from langchain_trim.eval.datasets import Problem
from langchain_trim.eval.fake import fake_setting
from langchain_trim.eval.runner import run_eval
from langchain_trim.local.setting import LocalSetting

cli = CliRunner()
QUESTION = "Is [/x] a tag? Keep [a, b], :smile: and [bold]this[/bold]: what is 1 + 1?"


def fake_cli(monkeypatch: pytest.MonkeyPatch, answers: dict[str, str]) -> None:
    fake = fake_setting(answers, slip_rate=0.0)
    setting = LocalSetting(weak=fake.weak, strong=fake.strong, prm=fake.prm)
    monkeypatch.setattr(cli_module, "_setting", lambda *a, **k: setting)


def test_solve_prints_a_question_with_brackets_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    """``[/x]`` used to crash ``trim solve`` (a rich MarkupError) and ``[a, b]`` vanished."""
    fake_cli(monkeypatch, {QUESTION: "2"})
    result = cli.invoke(app, ["solve", QUESTION, "--policy", "weak"])
    assert result.exit_code == 0, result.output
    assert QUESTION in result.output.replace("\n", " ")
    assert "answer: 2" in result.output


def test_solve_prints_a_gold_answer_with_brackets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_cli(monkeypatch, {"What is [b]?": "[b]", "And [i]?": "[i]"})
    rows = [{"id": "[b]", "question": "What is [b]?", "answer": "[b]"}]
    rows.append({"id": "[i]", "question": "And [i]?", "answer": "[i]"})
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = cli.invoke(app, ["solve", "--file", str(path), "--policy", "weak"])
    assert result.exit_code == 0, result.output
    assert "answer: [b]" in result.output and "answer: [i]" in result.output
    assert "problem [b]" in result.output and "problem [i]" in result.output


@pytest.mark.parametrize("error", [InvalidInputError, ModelNotFoundError])
def test_error_messages_keep_install_hints(
    monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    """``pip install 'langchain-trim[local]'`` lost its ``[local]`` on the way out."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error("llama-cpp-python is not installed: pip install 'langchain-trim[local]'")

    monkeypatch.setattr(cli_module, "_setting", fail)
    result = cli.invoke(app, ["solve", "q [/x]", "--policy", "weak"])
    assert result.exit_code in (EXIT_BAD_INPUT, EXIT_NO_MODEL), result.output
    assert "pip install 'langchain-trim[local]'" in result.output


def write_problems(path: Path, problems: list[Problem]) -> Path:
    rows = [{"id": p.id, "question": p.question, "answer": p.answer} for p in problems]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


PROBLEMS = [Problem(id="p1", question="What is 2 + 2?", answer="4")]


def test_repeated_policy_options_accumulate(tmp_path: Path) -> None:
    """``-p weak -p strong`` used to run only ``strong``."""
    data = write_problems(tmp_path / "p.jsonl", PROBLEMS)
    out = tmp_path / "run"
    args = ["eval", "--data", str(data), "--out", str(out), "--fake", "-q"]
    result = cli.invoke(app, [*args, "-p", "weak", "-p", "strong", "--policies", "thr:0.3,0.5"])
    assert result.exit_code == 0, result.output
    assert "ran 4, skipped 0" in result.output
    assert {p.name for p in (out / "traces").iterdir()} == {"weak", "strong", "thr_0.3", "thr_0.5"}


def test_eval_prints_policy_specs_and_paths_verbatim(tmp_path: Path) -> None:
    data = write_problems(tmp_path / "p.jsonl", PROBLEMS)
    out = tmp_path / "[run]"
    result = cli.invoke(app, ["eval", "--data", str(data), "--out", str(out), "--fake"])
    assert result.exit_code == 0, result.output
    assert f"next: trim report {out}" in result.output.replace("\n", "")


def test_no_progress_frames_when_stderr_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    setting = fake_setting({p.question: p.answer for p in PROBLEMS})
    summary = run_eval(PROBLEMS, ["weak"], out_dir=tmp_path / "run", setting=setting)
    assert summary.ran == 1
    assert "\r" not in capsys.readouterr().err


def test_no_training_progress_frames_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("tqdm")
    from langchain_trim.lab.nets import init_policy
    from langchain_trim.lab.ppo import PPOConfig, train_ppo
    from langchain_trim.lab.sim import SimEnv
    from langchain_trim.policies.calibration import synthetic_calibration

    env = SimEnv(synthetic_calibration(mean_steps=3, max_steps=6))
    cfg = PPOConfig(epochs=1, train_questions=32, batch_questions=32, val_questions=16)
    train_ppo(init_policy("agg", seed=0), env, cfg, progress=True)
    assert "\r" not in capsys.readouterr().err


def test_eval_without_data_names_both_ways_to_give_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``--data`` and no ``$TRIM_SHARED_DATA``: the package used to read the developer's
    ``<repo>/../shared/data``; now the Hub is its only guess, and when that cannot load
    the error says how to give the data."""
    import sys

    monkeypatch.delenv("TRIM_SHARED_DATA", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # the Hub loader is not installed
    result = cli.invoke(app, ["eval", "--fake", "-q", "-p", "weak", "--out", str(tmp_path / "r")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "--data PATH or set TRIM_SHARED_DATA" in result.output
    assert "gsm8k_test.jsonl" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_solve_refuses_a_repeated_policy_instead_of_keeping_the_last() -> None:
    from typer.testing import CliRunner

    from langchain_trim.cli import app

    result = CliRunner().invoke(app, ["solve", "1+1?", "--policy", "weak", "--policy", "strong"])
    assert result.exit_code == 2
    assert "--policy given 2 times" in result.output
