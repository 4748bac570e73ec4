"""TRIM-Agg / TRIM-Seq: features, numpy = torch, save/load without pickle, PPO, replay."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import langchain_trim.policies.named  # noqa: F401  (registers agg, seq, pomdp)
from langchain_trim.lab.ppo import MissingBranchError, PPOConfig, evaluate, train_ppo
from langchain_trim.lab.replay import ReplayEnv
from langchain_trim.lab.sim import SimEnv
from langchain_trim.policies import RouteDecision, RouteObservation, ThresholdPolicy
from langchain_trim.policies.agg import AggPolicy
from langchain_trim.policies.calibration import synthetic_calibration
from langchain_trim.policies.features import agg_features, budget_feature, seq_history
from langchain_trim.policies.learned import CONFIG_KEY
from langchain_trim.policies.registry import make_policy
from langchain_trim.policies.seq import SeqPolicy

ROOT = Path(__file__).resolve().parent.parent


def obs(
    t: int,
    score: float | None,
    prev: tuple[float | None, ...] = (),
    tokens: int = 60,
    prev_tokens: tuple[int, ...] | None = None,
    spent: int = 0,
    budget: int | None = None,
) -> RouteObservation:
    return RouteObservation(
        step_index=t,
        score=score,
        previous_scores=prev,
        step_tokens=tokens,
        previous_step_tokens=prev_tokens if prev_tokens is not None else (40,) * len(prev),
        strong_tokens_spent=spent,
        budget=budget,
        max_steps=30,
    )


def test_agg_features_by_hand() -> None:
    first = agg_features(obs(0, 0.7, tokens=150))
    assert first.tolist() == pytest.approx([1.0, 1.0, 0.7, 0.5, 0.0, 1.0])
    later = agg_features(obs(3, 0.2, (0.9, 0.6, None), tokens=30, spent=100, budget=1124))
    assert later.tolist() == pytest.approx([0.6, 0.54, 0.2, 0.1, 0.1, 1024 / 2048])
    assert later.dtype == np.float32
    # unscored current draft counts as 1.0; an exhausted budget as 0
    assert agg_features(obs(1, None, (0.5,), spent=900, budget=900))[[2, 5]].tolist() == [1, 0]
    assert budget_feature(obs(0, 0.5, spent=10, budget=10_000)) == 1.0


def test_seq_history_by_hand() -> None:
    hist = seq_history(obs(2, 0.3, (0.8, None), prev_tokens=(30, 90)))
    assert np.allclose(hist, [[0.8, 1.0, 0.1], [0.0, 0.0, 0.3]])
    assert seq_history(obs(0, 0.3)).shape == (0, 3)


def fresh(kind: str, **kwargs: Any) -> Any:
    """A freshly initialised TRIM-Agg/Seq (the lab's torch init)."""
    pytest.importorskip("torch")
    from langchain_trim.lab.nets import init_policy

    return init_policy(kind, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [AggPolicy, SeqPolicy])
def test_numpy_inference_matches_torch(cls: type[AggPolicy] | type[SeqPolicy]) -> None:
    torch = pytest.importorskip("torch")
    policy = fresh(cls.kind, seed=1)
    rng = np.random.default_rng(0)
    policy.params["actor.weight"] = rng.normal(size=policy.params["actor.weight"].shape).astype(
        np.float32
    )
    policy.set_params(policy.params)
    observations = [
        obs(t, 0.1 * (t + 1), tuple(0.9 - 0.1 * i for i in range(t)), budget=2000) for t in range(6)
    ]
    x = np.stack([policy.encode(o) for o in observations])
    logits, values = policy.forward(x)
    from langchain_trim.lab.nets import torch_module

    t_logits, t_values = torch_module(policy)(torch.from_numpy(x))
    assert np.allclose(logits, t_logits.detach().numpy(), atol=1e-5)
    assert np.allclose(values, t_values.detach().numpy(), atol=1e-5)
    for i, o in enumerate(observations):  # the cached single-observation path agrees
        _, one, value = policy.evaluate_one(o)
        assert np.allclose(one, logits[i], atol=1e-5) and math.isclose(
            value, values[i], abs_tol=1e-5
        )


@pytest.mark.parametrize("cls", [AggPolicy, SeqPolicy])
def test_save_load_round_trip_without_pickle(
    cls: type[AggPolicy] | type[SeqPolicy], tmp_path: Path
) -> None:
    from safetensors import safe_open

    policy = fresh(cls.kind, seed=2, lam=1e-3, label=f"{cls.kind}-test")
    path = policy.save(tmp_path / "p", record={"note": "hi"})
    assert path.suffix == ".safetensors" and path.with_suffix(".json").exists()
    raw = path.read_bytes()
    assert b"\x80\x04" not in raw[:16] and b"pickle" not in raw  # safetensors, not pickle
    with safe_open(str(path), framework="numpy") as f:
        assert json.loads(f.metadata()[CONFIG_KEY])["kind"] == cls.kind
    assert json.loads(path.with_suffix(".json").read_text())["record"] == {"note": "hi"}
    loaded = cls.load(path)
    assert loaded.name == f"{cls.kind}-test" and loaded.config["lam"] == 1e-3
    for k, v in policy.params.items():
        assert np.array_equal(v, loaded.params[k])
    o = obs(2, 0.3, (0.9, 0.5))
    assert np.allclose(policy.probabilities(o), loaded.probabilities(o))
    other = SeqPolicy if cls is AggPolicy else AggPolicy
    with pytest.raises(ValueError, match="policy, not"):
        other.load(path)


def test_unscored_draft_is_kept() -> None:
    decision = fresh("agg", seed=0).decide(obs(0, None))
    assert decision.action == "continue" and "unscored" in decision.reason


def test_ppo_improves_a_policy_quickly_and_reproducibly() -> None:
    pytest.importorskip("torch")
    env = SimEnv(synthetic_calibration(separation=0.7, mean_steps=5, max_steps=12))
    cfg = PPOConfig(
        lam=2e-3,
        epochs=4,
        train_questions=256,
        val_questions=300,
        eval_every=4,
        seed=3,
        budget_prob=0.0,
    )
    start = fresh("agg", seed=3)
    before = evaluate(start, env, range(300), seed=2_000_003, lam=cfg.lam)
    result = train_ppo(start, env, cfg, progress=False)
    assert result.seconds < 30
    assert result.best.objective > before.objective + 0.03
    # the selected policy is no worse than always-weak or always-strong
    for fixed in (ThresholdPolicy(0.0), ThresholdPolicy(1.0)):
        ev = evaluate(fixed, env, range(300), seed=2_000_003, lam=cfg.lam)
        assert result.best.objective >= ev.objective - 0.01
    again = train_ppo(fresh("agg", seed=3), env, cfg, progress=False)
    for k, v in result.policy.params.items():
        assert np.array_equal(v, again.policy.params[k])


def test_default_weights_route_sensibly() -> None:
    for spec in ("agg", "seq"):
        policy = make_policy(spec)
        assert policy.decide(obs(1, 0.01, (0.95,))).action == "escalate"
        assert policy.decide(obs(1, 0.99, (0.95,))).action == "continue"
    record = json.loads((ROOT / "langchain_trim/data/agg_official.json").read_text())
    assert record["config"]["lam"] == pytest.approx(8e-4)
    assert record["config"]["env"] == "sim:official"


def test_registry_loads_a_path(tmp_path: Path) -> None:
    path = fresh("seq", seed=0, label="mine").save(tmp_path / "mine.safetensors")
    assert make_policy(f"seq:{path}").name == "mine"


def test_official_correction_matches_sim_fidelity_result() -> None:
    from langchain_trim.policies.calibration import OFFICIAL_CORRECTION

    result = ROOT / "benchmarks/results/sim_fidelity.json"
    if not result.exists():
        pytest.skip("sim_fidelity result not present")
    fit = json.loads(result.read_text())["after"]["fit"]
    for key, value in OFFICIAL_CORRECTION.items():
        assert fit[key] == value, key


def _trace(qid: str, authors: str, correct: bool, draft: float = 0.2) -> dict[str, object]:
    steps = []
    for i, a in enumerate(authors):
        strong = a == "s"
        steps.append(
            {
                "author": "strong" if strong else "weak",
                "tokens": 50 if strong else 20,
                "score": 0.9 if strong else draft,
                "draft_score": draft,
                "draft_tokens": 20,
                "index": i,
            }
        )
    return {"question_id": qid, "steps": steps, "correct": correct}


def test_replay_follows_recorded_branches_and_reports_missing_ones() -> None:
    env = ReplayEnv([_trace("q", "ww", False), _trace("q", "ss", True), _trace("q", "sw", False)])
    assert len(env) == 1 and env.conflicts == 0
    strong = env.episode(ThresholdPolicy(1.0), record_steps=True)
    assert strong.correct and strong.strong_tokens == 100 and strong.escalations == 2
    assert [s["author"] for s in strong.trace["steps"]] == ["strong", "strong"]  # type: ignore[index]
    weak = env.episode(ThresholdPolicy(0.0))
    assert not weak.correct and weak.strong_tokens == 0
    # the budget rule applies as in the graph: the second escalation is blocked
    blocked = env.episode(ThresholdPolicy(1.0), budget=560, record_steps=True)
    assert blocked.budget_blocked == 1 and blocked.strong_tokens == 50

    with pytest.raises(MissingBranchError):  # nobody kept step 0 and escalated step 1
        env.episode(Scripted(["continue", "escalate"]))


class Scripted:
    """Takes the given actions in order."""

    name = "scripted"

    def __init__(self, actions: list[str]) -> None:
        self.actions = actions

    def needs_score(self, observation: RouteObservation) -> bool:
        return True

    def decide(self, observation: RouteObservation) -> RouteDecision:
        return RouteDecision(self.actions[observation.step_index])  # type: ignore[arg-type]


def test_train_policy_writes_files(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from langchain_trim.lab.train import train_policy

    cal = tmp_path / "cal.json"
    synthetic_calibration(max_steps=10).save(cal)
    out = tmp_path / "agg.safetensors"
    result = train_policy(
        "agg",
        lam=1e-3,
        env=f"sim:{cal}",
        out=out,
        epochs=1,
        train_questions=64,
        val_questions=50,
        progress=False,
    )
    assert out.exists() and result.batches == 1
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["record"]["env"] == f"sim:{cal}" and sidecar["record"]["ppo"]["lam"] == 1e-3


def test_train_command_runs_under_typer(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from langchain_trim.cli import app

    cal = tmp_path / "cal.json"
    synthetic_calibration(max_steps=8).save(cal)
    out = tmp_path / "seq.safetensors"
    args = ["train", "seq", "--lam", "1e-3", "--env", f"sim:{cal}", "--out", str(out)]
    args += ["--epochs", "1", "--train-questions", "64", "--val-questions", "40", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "validation accuracy" in result.output and SeqPolicy.load(out).config["lam"] == 1e-3
    bad = CliRunner().invoke(app, ["train", "thr"])
    assert bad.exit_code != 0
