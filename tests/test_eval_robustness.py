"""Eval runs under damage: a shared output folder, a corrupt cache, a full disk, bad problems.

Each test here failed before the fix it guards (issue 13, point 5): see
``docs/reliability.md`` for the table of cases.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from typer.testing import CliRunner

from langchain_trim.cli import EXIT_BAD_INPUT, EXIT_FAILED, app
from langchain_trim.errors import EvalStorageError, RunLockedError
from langchain_trim.eval import runner as runner_module
from langchain_trim.eval.cache import SQLiteLLMCache
from langchain_trim.eval.datasets import Problem
from langchain_trim.eval.fake import FakeSetting, fake_setting
from langchain_trim.eval.runner import (
    LOCK_FILE,
    load_traces,
    problem_filename,
    read_config,
    read_trace_file,
    run_eval,
    trace_path,
)

PROBLEMS = [Problem(f"q{i}", f"Question {i}: what is {i} + {i}?", str(2 * i)) for i in range(1, 5)]
cli = CliRunner()


def setting(problems: Sequence[Problem] = PROBLEMS) -> FakeSetting:
    return fake_setting({p.question: p.answer for p in problems})


def run(out: Path, problems: Sequence[Problem] = PROBLEMS, **kwargs: Any) -> Any:
    kwargs.setdefault("setting", setting(problems))
    policies = kwargs.pop("policies", ["weak", "thr:0.5"])
    return run_eval(problems, policies, out_dir=out, progress=False, **kwargs)


def write_problems(path: Path, problems: Sequence[Problem]) -> Path:
    rows = [{"id": p.id, "question": p.question, "answer": f"#### {p.answer}"} for p in problems]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def eval_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--data", str(data), "--out", str(out), "--fake", "-q", "-p", "weak", *extra]


# -- one folder, one run ------------------------------------------------------------------------
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from langchain_trim._filelock import exclusive_lock
    with exclusive_lock(Path(sys.argv[1])):
        Path(sys.argv[2]).write_text("held")
        time.sleep(60)
    """
)


def hold_lock(out: Path) -> subprocess.Popen[bytes]:
    """Another process holding the folder's lock, as a running ``trim eval`` does."""
    out.mkdir(parents=True, exist_ok=True)
    ready = out.parent / "holder.ready"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out / LOCK_FILE), str(ready)])
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "holder did not start"
        time.sleep(0.05)
    return proc


def test_a_second_run_on_a_busy_folder_fails_clearly_and_touches_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        with pytest.raises(RunLockedError, match=rf"another trim eval \(process {holder.pid}\)"):
            run(out)
        assert not (out / "traces").exists() and not (out / "config.json").exists()
        data = write_problems(tmp_path / "p.jsonl", PROBLEMS)
        result = cli.invoke(app, eval_args(data, out))
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert "another trim eval" in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel drops the lock of a killed process: the next run just works
    assert run(out).ran == 2 * len(PROBLEMS)
    assert not (out / LOCK_FILE).exists()


def test_a_run_started_while_another_is_in_flight_cannot_break_it(tmp_path: Path) -> None:
    """The second run used to delete the first one's in-flight temp files."""
    out = tmp_path / "run"
    second: list[BaseException] = []

    def start_another(_: dict[str, Any]) -> None:
        if not second:
            try:
                run(out)
            except RunLockedError as exc:
                second.append(exc)

    summary = run(out, on_result=start_another)
    assert len(second) == 1
    assert (summary.ran, summary.errors) == (2 * len(PROBLEMS), 0)
    assert all(len(ts) == len(PROBLEMS) for ts in load_traces(out).values())


# -- the cache ----------------------------------------------------------------------------------
def test_a_garbage_cache_file_is_moved_aside_with_a_warning(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "cache.sqlite").write_bytes(b"this is not a database" * 100)
    data = write_problems(tmp_path / "p.jsonl", PROBLEMS)
    result = cli.invoke(app, eval_args(data, out))
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "damaged" in result.output
    moved = list(out.glob("cache.sqlite.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes().startswith(b"this is not")
    assert all(t["error"] is None for ts in load_traces(out).values() for t in ts)
    assert read_config(out)["warnings_last_run"]
    again = cli.invoke(app, eval_args(data, out, "--retry-errors"))
    assert again.exit_code == 0 and "warning" not in again.output


def _damage_pages(path: Path) -> None:
    """Overwrite the middle of a SQLite file, keeping its header (opens fine, reads fail)."""
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.seek(size // 3)
        fh.write(b"\xde\xad\xbe\xef" * (size // 12))


def test_a_cache_with_damaged_pages_is_never_blamed_on_the_model(tmp_path: Path) -> None:
    cache_path = tmp_path / "run" / "cache.sqlite"
    filler = SQLiteLLMCache(cache_path)
    from langchain_core.outputs import Generation

    for i in range(400):
        filler.update(f"prompt {i}", "llm", [Generation(text="x" * 500)])
    filler.close()
    run(tmp_path / "warm", cache=cache_path)  # real entries for these problems
    _damage_pages(cache_path)
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(cache_path).execute("SELECT count(*), max(generations) FROM llm_cache")

    summary = run(tmp_path / "run", cache=cache_path)
    assert summary.errors == 0, summary.failed
    assert summary.warnings and "damaged" in summary.warnings[0]
    assert list(cache_path.parent.glob("cache.sqlite.corrupt-*"))
    # later runs on the folder work (they used to crash at open)
    assert run(tmp_path / "run", cache=cache_path).skipped == 2 * len(PROBLEMS)


def test_on_corrupt_raise_gives_a_typed_error_with_the_no_cache_hint(tmp_path: Path) -> None:
    from langchain_trim.errors import CacheCorruptError

    path = tmp_path / "c.sqlite"
    path.write_bytes(b"garbage" * 200)
    with pytest.raises(CacheCorruptError, match="--no-cache"):
        SQLiteLLMCache(path, on_corrupt="raise")
    assert path.read_bytes().startswith(b"garbage")  # left for the user to look at


class _FailingConnection:
    """A sqlite3 connection whose statements fail after ``ok`` of them (disk gone bad)."""

    def __init__(self, conn: sqlite3.Connection, ok: int) -> None:
        self.conn, self.ok = conn, ok

    def execute(self, *args: Any) -> Any:
        self.ok -= 1
        if self.ok < 0:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return self.conn.execute(*args)

    def commit(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


def test_a_cache_failing_mid_run_turns_itself_off_and_the_run_goes_on(tmp_path: Path) -> None:
    cache = SQLiteLLMCache(tmp_path / "c.sqlite")
    cache._conn = _FailingConnection(cache._conn, ok=5)  # type: ignore[assignment]
    summary = run(tmp_path / "run", cache=cache)
    assert summary.errors == 0, summary.failed
    assert cache.failure is not None and "malformed" in cache.failure
    assert any("--no-cache" in w for w in summary.warnings)
    assert all(t["error"] is None for ts in load_traces(tmp_path / "run").values() for t in ts)


def test_infrastructure_errors_stop_the_run_and_are_not_recorded(tmp_path: Path) -> None:
    """A cache of someone else's that raises a SQLite error is the run's failure."""

    class BrokenCache(InMemoryCache):
        def lookup(self, prompt: str, llm_string: str) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(EvalStorageError, match="disk I/O error"):
        run(tmp_path, cache=BrokenCache(), policies=["weak"])
    assert not list(tmp_path.glob("traces/*/*.jsonl"))  # nothing blamed on the model


def test_disk_full_while_writing_traces_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    data = write_problems(tmp_path / "p.jsonl", PROBLEMS)
    out = tmp_path / "run"
    assert cli.invoke(app, eval_args(data, out, "--no-cache")).exit_code == 0
    monkeypatch.setattr(runner_module, "write_atomic", full)
    result = cli.invoke(app, eval_args(data, out, "--no-cache", "-p", "strong"))
    assert result.exit_code == EXIT_FAILED
    assert isinstance(result.exception, SystemExit), result.exception
    assert "EvalStorageError" in result.output and "No space left" in result.output


# -- bad problems -------------------------------------------------------------------------------
LONG_ID = "x" * 300
BAD = [
    Problem(LONG_ID, "Question L: what is 5 + 5?", "10"),
    Problem("lone-\ud800-id", "What is \udc80 1 + 2?", "3"),
]


def test_bad_problems_are_isolated_and_resume_gets_past_them(tmp_path: Path) -> None:
    problems = [*PROBLEMS[:2], *BAD, *PROBLEMS[2:]]
    summary = run(tmp_path, problems, cache=tmp_path / "cache.sqlite")
    assert summary.ran == 2 * len(problems), summary.failed
    assert len(problem_filename(LONG_ID)) < 150
    for spec in ("weak", "thr:0.5"):
        for p in problems:
            data = read_trace_file(trace_path(tmp_path, spec, p.id))
            assert data is not None and data["result"]["problem_id"] == p.id
    assert [t["problem_id"] for t in load_traces(tmp_path)["weak"]] == [p.id for p in problems]
    assert run(tmp_path, problems).skipped == 2 * len(problems)


def test_a_failing_problem_is_recorded_by_name_and_the_rest_continue(tmp_path: Path) -> None:
    base = setting()
    assert base.weak.responder is not None
    respond = base.weak.responder

    def weak(question: str, accepted: Sequence[str]) -> str | None:
        if question == PROBLEMS[1].question:
            raise RuntimeError("this one problem breaks the model")
        return respond(question, accepted)

    broken = FakeSetting(
        weak=type(base.weak)(responder=weak, model_name="fake-weak"),
        strong=base.strong,
        prm=base.prm,
    )
    summary = run(tmp_path, setting=broken, policies=["weak"])
    assert (summary.ran, summary.errors) == (len(PROBLEMS), 1)
    (line,) = summary.failed
    assert line.startswith(f"weak {PROBLEMS[1].id}: StepGenerationError: ")
    assert "this one problem breaks the model" in line
    failed = read_trace_file(trace_path(tmp_path, "weak", PROBLEMS[1].id))
    assert failed is not None and "this one problem" in failed["result"]["error"]


def test_cli_eval_names_each_failed_problem(tmp_path: Path, monkeypatch: Any) -> None:
    import langchain_trim.eval.fake as fake

    real = fake.fake_setting

    def broken(*args: Any, **kwargs: Any) -> FakeSetting:
        s = real(*args, **kwargs)
        respond = s.weak.responder
        assert respond is not None

        def weak(question: str, accepted: Sequence[str]) -> str | None:
            if "3 + 3" in question:
                raise RuntimeError("boom")
            return respond(question, accepted)

        return FakeSetting(type(s.weak)(responder=weak, model_name="w"), s.strong, s.prm)

    monkeypatch.setattr(fake, "fake_setting", broken)
    data = write_problems(tmp_path / "p.jsonl", PROBLEMS)
    result = cli.invoke(app, eval_args(data, tmp_path / "run"))
    assert result.exit_code == EXIT_FAILED
    assert "error: weak q3: StepGenerationError" in result.output
    assert "1 problems failed" in result.output


def test_cli_eval_with_a_lone_surrogate_and_a_long_id(tmp_path: Path) -> None:
    data = tmp_path / "p.jsonl"
    rows = [
        '{"id": "' + LONG_ID + '", "question": "What is 2 + 2?", "answer": "#### 4"}',
        '{"id": "s\\ud800", "question": "What is \\udc80 3 + 3?", "answer": "#### 6"}',
        '{"id": "ok", "question": "What is 1 + 1?", "answer": "#### 2"}',
    ]
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    result = cli.invoke(app, eval_args(data, out))
    assert result.exit_code == 0, result.output
    assert "ran 3, skipped 0" in result.output
    assert cli.invoke(app, eval_args(data, out)).output.count("ran 0, skipped 3") == 1
    assert os.listdir(out / "traces" / "weak")  # every name fits the file system


# -- trim solve --file ---------------------------------------------------------------------------
def cli_setting(fake: FakeSetting) -> Any:
    """The scripted models in the shape ``trim solve`` builds (``LocalSetting``)."""
    from langchain_trim.local.setting import LocalSetting

    return LocalSetting(weak=fake.weak, strong=fake.strong, prm=fake.prm)


def test_solve_file_keeps_going_past_bad_rows(tmp_path: Path, monkeypatch: Any) -> None:
    import langchain_trim.cli as cli_module

    questions = {"What is 2 + 2?": "4", "What is 3 + 4?": "7"}
    fakes = cli_setting(fake_setting(questions, slip_rate=0.0))
    monkeypatch.setattr(cli_module, "_setting", lambda *a, **k: fakes)
    path = tmp_path / "p.jsonl"
    path.write_text(
        "\n".join(
            [
                '{"id": "a", "question": "What is 2 + 2?", "answer": "4"}',
                "not json",
                '{"id": "b", "question": "", "problem": "What is 3 + 4?", "answer": "7"}',
                '{"id": "c", "answer": 3}',
                "[1, 2]",
            ]
        )
        + "\n"
    )
    result = cli.invoke(app, ["solve", "--file", str(path), "--json", "--policy", "weak"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    solved = {r["id"]: r for r in records if "error" not in r}
    assert set(solved) == {"a", "b"}
    assert sorted(r["line"] for r in records if "error" in r) == [2, 4, 5]
    assert solved["b"]["final_answer"] == "7" and solved["b"]["correct"] is True
    assert "p.jsonl:2: not JSON" in result.output
    assert "p.jsonl:4: needs a non-empty" in result.output
    assert "p.jsonl:5: not a JSON object" in result.output
    assert "3 bad rows, 0 problems failed of 5" in result.output


def test_solve_file_isolates_a_problem_the_graph_rejects(tmp_path: Path, monkeypatch: Any) -> None:
    import langchain_trim.cli as cli_module

    fakes = cli_setting(fake_setting({"What is 1+1?": "2"}))
    monkeypatch.setattr(cli_module, "_setting", lambda *a, **k: fakes)
    path = tmp_path / "p.jsonl"
    huge = "x " * 200_000
    path.write_text(
        json.dumps({"id": "huge", "question": huge})
        + "\n"
        + json.dumps({"id": "fine", "question": "What is 1+1?"})
        + "\n"
    )
    result = cli.invoke(app, ["solve", "--file", str(path), "--policy", "weak", "-q"])
    assert result.exit_code == EXIT_FAILED, result.output
    assert "line 1 (id huge): InvalidInputError" in result.output
    assert "answer:" in result.output and "0 bad rows, 1 problems failed of 2" in result.output


@pytest.mark.parametrize("value", ["nan", "inf", "-0.5"])
def test_temperature_must_be_finite_and_non_negative(value: str, tmp_path: Path) -> None:
    for args in (
        ["solve", "q", "--temperature", value],
        ["eval", "--fake", "--out", str(tmp_path / "r"), "--temperature", value],
    ):
        result = cli.invoke(app, args)
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert "--temperature must be a finite number" in result.output
