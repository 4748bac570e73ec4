"""Report metrics against hand computations, post-hoc baselines, and the baseline policies."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from langchain_trim.errors import InvalidInputError
from langchain_trim.eval.query_routers import (
    automix_prm,
    difficulty_router,
    first_error,
    oracle_step_router,
    pair_traces,
)
from langchain_trim.eval.report import compute_metrics, family_of, render_markdown, write_report
from langchain_trim.eval.runner import load_traces, trace_path, write_atomic
from langchain_trim.lab.sim import SimEnv
from langchain_trim.policies import ThresholdPolicy
from langchain_trim.policies.baselines import RandomPolicy, ScoreOnlyPolicy
from langchain_trim.policies.calibration import synthetic_calibration
from langchain_trim.policies.registry import make_policy


def write_trace(
    out: Path,
    spec: str,
    pid: str,
    correct: bool,
    strong_tokens: int,
    scores: tuple[float | None, ...] = (None, None),
) -> None:
    """Two steps; the second is strong when the problem cost strong tokens."""
    steps = []
    for i, score in enumerate(scores):
        strong = strong_tokens > 0 and i == 1
        steps.append(
            {
                "type": "step",
                "index": i,
                "text": f"step {i}",
                "author": "strong" if strong else "weak",
                "model": "s" if strong else "w",
                "tokens": strong_tokens if strong else 10,
                "score": score,
                "draft_score": score,
                "decision": "escalate" if strong else "continue",
                "draft_tokens": 10,
                "budget_blocked": False,
            }
        )
    spend = {
        "strong_tokens": strong_tokens,
        "weak_tokens": 20,
        "escalations": int(strong_tokens > 0),
        "prm_calls": sum(s is not None for s in scores),
        "discarded_draft_tokens": 10 * int(strong_tokens > 0),
    }
    result = {
        "type": "result",
        "policy": spec,
        "problem_id": pid,
        "gold": "1",
        "final_answer": "1" if correct else "2",
        "correct": correct,
        "spend": spend,
        "seconds": 1.0,
        "error": None,
    }
    text = "".join(json.dumps(r) + "\n" for r in [*steps, result])
    write_atomic(trace_path(out, spec, pid), text)


@pytest.fixture
def hand_run(tmp_path: Path) -> Path:
    """4 problems: weak 1/4 right, strong 4/4 at 100 tokens, thr:0.5 3/4 at 20 tokens."""
    first = (0.9, 0.2, 0.6, 0.1)
    second = (0.8, 0.9, 0.3, 0.7)
    for i in range(4):
        pid = f"p{i}"
        write_trace(tmp_path, "weak", pid, i == 0, 0)
        write_trace(tmp_path, "weakscored", pid, i == 0, 0, (first[i], second[i]))
        write_trace(tmp_path, "strong", pid, True, 100)
        write_trace(tmp_path, "thr:0.5", pid, i < 3, 40 if i in (1, 2) else 0, (first[i], 0.9))
    write_trace(tmp_path, "thr:0.5", "p4", True, 0)  # only one policy has p4
    return tmp_path


def test_metrics_match_a_hand_computation(hand_run: Path) -> None:
    files = write_report(hand_run)
    metrics = json.loads(files.metrics.read_text())
    assert metrics["n_problems"] == 4 and metrics["dropped"] == {"thr:0.5": 1}
    assert metrics["endpoints"] == {"weak": "weak", "strong": "strong"}
    thr = metrics["policies"]["thr:0.5"]
    assert thr["accuracy"] == 0.75 and thr["strong_tokens"] == 20.0
    assert thr["normalized_cost"] == pytest.approx(0.2)
    assert thr["pgr"] == pytest.approx(2 / 3)
    # IBC = (0.75 - 0.25) / 20; base = (1 - 0.25) / 100; ΔIBC = IBC / base - 1
    assert thr["delta_ibc"] == pytest.approx((0.5 / 20) / (0.75 / 100) - 1)
    assert thr["escalations"] == 0.5 and thr["prm_calls"] == 2.0
    fam = metrics["families"]["TRIM-Thr"]
    assert fam["policies"] == ["thr:0.5"] and fam["kind"] == "policy"
    # frontier (0, 0) → (0.2, 2/3) → (1, 1)
    assert fam["cpt"]["50"] == pytest.approx(0.2 * 0.5 / (2 / 3))
    assert fam["cpt"]["80"] == pytest.approx(0.2 + 0.8 * (0.8 - 2 / 3) / (1 / 3))
    assert fam["cpt"]["95"] == pytest.approx(0.2 + 0.8 * (0.95 - 2 / 3) / (1 / 3))
    assert fam["apgr"] == pytest.approx(0.2 * (2 / 3) / 2 + 0.8 * (2 / 3 + 1) / 2)
    difficulty = metrics["families"]["Difficulty (1st-step PRM)"]
    assert [(p["accuracy"], p["strong_tokens"]) for p in difficulty["points"]] == [
        (0.25, 0.0),
        (0.5, 25.0),
        (0.75, 50.0),
        (1.0, 75.0),
        (1.0, 100.0),
    ]
    assert difficulty["kind"] == "baseline"
    assert not [f for f in metrics["families"] if f.startswith("Oracle")]  # no step labels
    assert any("left out: thr:0.5 1" in n for n in metrics["notes"])
    markdown = files.markdown.read_text()
    assert "| `thr:0.5` | 4 | 75.0% | 20.0 | 20.0% | 66.7% | 2.33 |" in markdown
    assert "| TRIM-Thr | policy | 1 | 15.0% | 52.0% | 88.0% | 0.733 |" in markdown
    names = sorted(p.name for p in files.figures)
    assert names == [
        "curves.png",
        "curves.svg",
        "timeline_thr_0.5_p1.png",
        "timeline_thr_0.5_p1.svg",
    ]
    assert all(p.stat().st_size > 1000 for p in files.figures)
    assert metrics["timeline"] == {"policy": "thr:0.5", "problem_id": "p1"}


def test_timeline_of_a_chosen_problem(hand_run: Path) -> None:
    files = write_report(hand_run, problem="p3", policy="weakscored", formats=("svg",))
    assert [p.name for p in files.figures] == ["curves.svg", "timeline_weakscored_p3.svg"]
    with pytest.raises(FileNotFoundError, match="no trace of problem"):
        write_report(hand_run, problem="nope")


def test_report_without_endpoints_still_tabulates(tmp_path: Path) -> None:
    write_trace(tmp_path, "thr:0.5", "p0", True, 10, (0.3, 0.9))
    metrics = compute_metrics(load_traces(tmp_path))
    assert metrics["families"] == {} and metrics["policies"]["thr:0.5"]["accuracy"] == 1.0
    assert any("no always-weak" in n for n in metrics["notes"])
    assert "`thr:0.5`" in render_markdown(metrics)


def test_family_names() -> None:
    assert family_of("thr:0.05") == "TRIM-Thr" and family_of("agg:1e-3") == "TRIM-Agg"
    assert family_of("strong") == "strong" and family_of("mine:3") == "mine"


# -- post-hoc baselines ---------------------------------------------------------------------
def _trace(pid: Any, correct: bool, scores: list[float], strong: int = 0) -> dict[str, Any]:
    author = "strong" if strong else "weak"
    steps = [
        {"index": i, "author": author, "draft_score": s, "tokens": 5, "draft_tokens": 5}
        for i, s in enumerate(scores)
    ]
    return {
        "problem_id": pid,
        "correct": correct,
        "steps": steps,
        "spend": {"strong_tokens": strong, "weak_tokens": 5 * len(scores) * (not strong)},
    }


def test_automix_uses_the_whole_solution_and_charges_weak_tokens() -> None:
    weak = [_trace(0, False, [0.9, 0.1]), _trace(1, True, [0.5, 0.6]), _trace(2, True, [0.7])]
    strong = [_trace(i, True, [1.0], strong=50) for i in (2, 1, 0)]  # order does not matter
    by_min = automix_prm(weak, strong)
    assert [(p.accuracy, p.strong_tokens, p.escalated) for p in by_min] == [
        (2 / 3, 0.0, 0.0),
        (1.0, 50 / 3, 1 / 3),
        (1.0, 100 / 3, 2 / 3),
        (1.0, 50.0, 1.0),
    ]
    assert all(p.weak_tokens == 25 / 3 for p in by_min)  # weak solution paid for either way
    by_mean = automix_prm(weak, strong, aggregate="mean")
    assert by_mean[1].strong_tokens == 50 / 3 and by_mean[1].threshold == pytest.approx(0.5)
    fixed = automix_prm(weak, strong, thresholds=[0.55])
    assert len(fixed) == 1 and fixed[0].accuracy == 1.0 and fixed[0].escalated == 2 / 3
    with pytest.raises(ValueError, match="aggregate"):
        automix_prm(weak, strong, aggregate="max")  # type: ignore[arg-type]


def test_unscored_questions_escalate_and_failed_runs_are_dropped() -> None:
    weak = [_trace(0, False, [0.9]), _trace(1, True, [0.9])]
    weak[0]["steps"][0]["draft_score"] = None
    strong = [_trace(0, True, [1.0], strong=10), {**_trace(1, True, [1.0], 10), "error": "x"}]
    assert len(pair_traces(weak, strong)) == 1
    points = difficulty_router(weak, strong)
    assert points[0].escalated == 1.0 and points[0].accuracy == 1.0


def test_oracle_on_simulated_traces() -> None:
    env = SimEnv(synthetic_calibration())
    weak = env.run(ScoreOnlyPolicy(), 300, seed=4, record_steps=True).traces()
    strong = env.run(ThresholdPolicy(1), 300, seed=4, record_steps=True).traces()
    wrong = [t for t in weak if not t["correct"]]
    assert wrong and all(first_error(t) is not None for t in wrong)
    assert all(first_error(t) is None for t in weak if t["correct"])
    points = oracle_step_router(weak, strong)
    accs = [p.accuracy for p in points]
    costs = [p.strong_tokens for p in points]
    assert accs == sorted(accs) and costs == sorted(costs)
    assert accs[0] == pytest.approx(sum(t["correct"] for t in weak) / 300)
    assert accs[-1] == 1.0 and len(points) == len(wrong) + 1
    # one strong step per repaired question: far cheaper than always-strong
    always_strong = sum(sum(s["tokens"] for s in t["steps"]) for t in strong) / 300
    assert costs[-1] < always_strong
    handover = oracle_step_router(weak, strong, mode="handover")
    expected = sum(
        w["correct"] or (not w["correct"] and s["correct"])
        for w, s in zip(weak, strong, strict=True)
    )
    assert handover[-1].accuracy == pytest.approx(expected / 300)
    assert len(handover) == len(wrong) + 1 and handover[-1].strong_tokens < always_strong
    assert handover[-1].strong_tokens > costs[-1]  # finishing costs more than one step
    with pytest.raises(ValueError, match="mode"):
        oracle_step_router(weak, strong, mode="magic")  # type: ignore[arg-type]
    # query-level routers work on simulator traces too (matched by position)
    assert difficulty_router(weak, strong)[-1].accuracy == pytest.approx(
        sum(t["correct"] for t in strong) / 300
    )


def test_oracle_uses_gold_labels_and_needs_them() -> None:
    weak = [{**_trace(0, False, [0.9, 0.9]), "label": 1}, {**_trace(1, True, [0.9]), "label": -1}]
    strong = [_trace(0, True, [1.0, 1.0], strong=10)]
    points = oracle_step_router(weak, strong)
    assert [(p.accuracy, p.strong_tokens) for p in points] == [(0.5, 0.0), (1.0, 2.5)]
    unlabelled = [_trace(0, False, [0.9])]
    assert oracle_step_router(unlabelled, strong) == []


# -- baseline policies ---------------------------------------------------------------------------
def test_registry_names() -> None:
    assert make_policy("weakscored").name == "weakscored"
    assert make_policy("random:0.25").name == "random:0.25"
    with pytest.raises(InvalidInputError, match="p must be in"):
        make_policy("random:1.5")
    with pytest.raises(InvalidInputError, match="needs an escalation probability"):
        make_policy("random")


def test_score_only_policy_scores_every_step_and_never_escalates() -> None:
    env = SimEnv(synthetic_calibration())
    run = env.run(ScoreOnlyPolicy(), 200, seed=1, record_steps=True)
    weak = env.run(ThresholdPolicy(0), 200, seed=1)
    assert run.mean_strong_tokens == 0 and run.mean_prm_calls == run.mean_steps
    assert run.accuracy == weak.accuracy  # same trajectories as always-weak
    assert all(s["draft_score"] is not None for t in run.traces() for s in t["steps"])


def test_random_policy_rate_and_reproducibility() -> None:
    env = SimEnv(synthetic_calibration())
    run = env.run(RandomPolicy(0.3, seed=2), 1500, seed=3)
    steps = run.mean_steps * run.n
    rate = run.mean_escalations * run.n / steps
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / steps)
    assert run.mean_prm_calls == 0
    again = env.run(RandomPolicy(0.3, seed=2), 1500, seed=3)
    assert again.mean_strong_tokens == run.mean_strong_tokens
    other = env.run(RandomPolicy(0.3, seed=5), 1500, seed=3)
    assert other.mean_strong_tokens != run.mean_strong_tokens
    with pytest.raises(TypeError):
        RandomPolicy("0.3")  # type: ignore[arg-type]


def test_trim_fit_chooses_on_dev_traces_and_the_file_drives_a_policy(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from langchain_trim.cli import app
    from langchain_trim.eval.datasets import Problem
    from langchain_trim.eval.fake import fake_setting
    from langchain_trim.eval.fit import read_policy_file
    from langchain_trim.eval.runner import run_eval
    from langchain_trim.policies.registry import make_policy

    probs = [Problem(f"p{i}", f"{i} + {i}?", str(2 * i)) for i in range(12)]
    setting = fake_setting({p.question: p.answer for p in probs}, slip_rate=0.5)
    run_eval(
        probs,
        ["weakscored", "strong", "thr:0.3", "thr:0.6", "thr:0.9"],
        setting=setting,
        out_dir=tmp_path / "dev",
        progress=False,
    )
    out = tmp_path / "policy.json"
    result = CliRunner().invoke(app, ["fit", str(tmp_path / "dev"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = read_policy_file(out)
    assert data["policy"].startswith("thr:") and data["n_problems"] == 12
    assert make_policy(f"fit:{out}").name == data["policy"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "something else"}')
    result = CliRunner().invoke(app, ["fit", str(tmp_path / "nowhere"), "--out", str(bad)])
    assert result.exit_code == 2
    with pytest.raises(InvalidInputError):
        make_policy(f"fit:{bad}")


def test_trim_calibrate_fits_the_simulator_on_dev_traces(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from langchain_trim.cli import app
    from langchain_trim.eval.datasets import Problem
    from langchain_trim.eval.fake import fake_setting
    from langchain_trim.eval.runner import run_eval
    from langchain_trim.policies.calibration import Calibration

    probs = [Problem(f"p{i}", f"{i} + {i}?", str(2 * i)) for i in range(12)]
    setting = fake_setting({p.question: p.answer for p in probs}, slip_rate=0.5)
    run_eval(probs, ["weakscored", "strong", "thr:0.5"], setting=setting,
             out_dir=tmp_path / "dev", progress=False)  # fmt: skip
    out = tmp_path / "cal.json"
    result = CliRunner().invoke(app, ["calibrate", str(tmp_path / "dev"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert Calibration.load(out).max_steps >= 1
    only_weak = tmp_path / "weak_only"
    run_eval(probs, ["weak"], setting=setting, out_dir=only_weak, progress=False)
    result = CliRunner().invoke(app, ["calibrate", str(only_weak), "--out", str(out)])
    assert result.exit_code == 2 and "always-strong" in result.output


def test_trim_calibrate_question_difficulty(tmp_path: Any) -> None:
    """``--question-difficulty`` reaches the fit, and too few paired questions is a clear
    input error, not a traceback."""
    from typer.testing import CliRunner

    from langchain_trim.cli import app
    from langchain_trim.eval.datasets import Problem
    from langchain_trim.eval.fake import fake_setting
    from langchain_trim.eval.runner import run_eval
    from langchain_trim.policies.calibration import Calibration

    probs = [Problem(f"p{i}", f"{i} + {i}?", str(2 * i)) for i in range(24)]
    setting = fake_setting({p.question: p.answer for p in probs}, slip_rate=0.5)
    run_eval(probs[:10], ["weakscored", "strong"], setting=setting,
             out_dir=tmp_path / "few", progress=False)  # fmt: skip
    out = tmp_path / "cal.json"
    args = ["calibrate", "--question-difficulty", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, str(tmp_path / "few")])
    assert result.exit_code == 2 and "questions with both" in result.output
    run_eval(probs, ["weakscored", "strong"], setting=setting,
             out_dir=tmp_path / "dev", progress=False)  # fmt: skip
    result = CliRunner().invoke(app, [*args, str(tmp_path / "dev")])
    assert result.exit_code == 0, result.output
    cal = Calibration.load(out)
    assert cal.difficulty_sd >= 0 and any("paired questions" in n for n in cal.notes)
    result = CliRunner().invoke(app, [*args[:1], "--final-step", *args[2:], str(tmp_path / "dev")])
    assert result.exit_code == 2 and "pass both" in result.output
    result = CliRunner().invoke(
        app, [*args, "--final-step", "--length-score", str(tmp_path / "dev")]
    )
    assert result.exit_code == 0, result.output
    cal = Calibration.load(out)
    assert cal.strong_final_tokens is not None
    assert any("length_score_corr" in n for n in cal.notes)


def _trained_policy(tmp_path: Path, accuracy: float) -> str:
    """A real Agg policy file whose sidecar says it reached ``accuracy`` in its simulator."""
    from langchain_trim.policies.agg import AggPolicy

    path = AggPolicy.default().save(
        tmp_path / "agg.safetensors",
        record={"best": {"accuracy": accuracy, "mean_strong_tokens": 50.0}},
    )
    return f"agg:{path}"


@pytest.mark.parametrize(("promised", "warned"), [(0.95, True), (0.5, False)])
def test_report_sets_a_trained_policy_beside_its_simulator(
    tmp_path: Path, promised: float, warned: bool
) -> None:
    """A policy that does far worse than its simulator promised is flagged, visibly."""
    run = tmp_path / "run"
    spec = _trained_policy(tmp_path, promised)
    for i in range(20):
        write_trace(run, "weakscored", f"p{i}", False, 0, (0.5, 0.5))
        write_trace(run, "strong", f"p{i}", True, 100)
        write_trace(run, spec, f"p{i}", i % 2 == 0, 40, (0.5, 0.5))  # 50% right
    metrics = compute_metrics(load_traces(run))
    row = metrics["simulated_vs_real"][spec]
    assert row["simulated_accuracy"] == promised
    assert row["accuracy"] == 0.5
    lo, hi = row["accuracy_ci"]
    assert lo < 0.5 < hi
    assert row["inside"] is not warned
    flagged = [n for n in metrics["notes"] if "simulator does not stand" in n]
    assert bool(flagged) is warned
    md = render_markdown(metrics)
    assert "Trained policies: their simulator vs these traces" in md
    assert ("⚠" in md) is warned


def test_simulated_point_reads_and_validates_the_sidecar(tmp_path: Path) -> None:
    from langchain_trim.errors import PolicyFileError
    from langchain_trim.policies.learned import simulated_point

    spec = _trained_policy(tmp_path, 0.7)
    path = Path(spec.partition(":")[2])
    assert simulated_point(path) == (0.7, 50.0)
    sidecar = path.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    data["record"]["best"]["accuracy"] = 1.5
    sidecar.write_text(json.dumps(data))
    with pytest.raises(PolicyFileError, match=r"record.best"):
        simulated_point(path)
    sidecar.write_text("{not json")
    with pytest.raises(PolicyFileError, match="not readable JSON"):
        simulated_point(path)
    sidecar.unlink()
    assert simulated_point(path) is None


def test_an_unreadable_sidecar_is_a_note_not_a_crash(tmp_path: Path) -> None:
    run = tmp_path / "run"
    spec = _trained_policy(tmp_path, 0.7)
    Path(spec.partition(":")[2]).with_suffix(".json").write_text("{not json")
    for i in range(3):
        write_trace(run, "weakscored", f"p{i}", False, 0, (0.5, 0.5))
        write_trace(run, "strong", f"p{i}", True, 100)
        write_trace(run, spec, f"p{i}", True, 40, (0.5, 0.5))
    metrics = compute_metrics(load_traces(run))
    assert metrics["simulated_vs_real"] == {}
    assert any("no simulated point" in n for n in metrics["notes"])
    Path(spec.partition(":")[2]).unlink()  # the report read from elsewhere: no file
    metrics = compute_metrics(load_traces(run))
    assert any("not found from here" in n for n in metrics["notes"])


def test_cli_report_prints_the_simulated_and_real_points(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from langchain_trim.cli import app

    run = tmp_path / "run"
    spec = _trained_policy(tmp_path, 0.95)
    for i in range(20):
        write_trace(run, "weakscored", f"p{i}", False, 0, (0.5, 0.5))
        write_trace(run, "strong", f"p{i}", True, 100)
        write_trace(run, spec, f"p{i}", i % 2 == 0, 40, (0.5, 0.5))
    result = CliRunner().invoke(app, ["report", str(run)], terminal_width=400)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert f"{spec}: simulated 95.0% @ 50, here 50.0% [" in out
    assert "(outside: see the note)" in out and "simulator does not stand" in out


def test_policy_stats_and_router_points_are_points_on_the_curve() -> None:
    """One rule makes both an :class:`OperatingPoint`, each labelled by its own name."""
    from langchain_trim.eval.metrics import OperatingPoint
    from langchain_trim.eval.query_routers import RouterPoint
    from langchain_trim.eval.report import policy_stats

    trace = {"correct": True, "steps": [{}], "spend": {"strong_tokens": 40}}
    assert policy_stats("thr:0.5", [trace]).operating_point() == OperatingPoint(
        1.0, 40.0, "thr:0.5"
    )
    point = RouterPoint("difficulty 0.3", 0.3, 0.5, 12.0, 80.0, 0.25, 4)
    assert point.operating_point() == OperatingPoint(0.5, 12.0, "difficulty 0.3")
    assert "curve_label" not in point.to_dict()
