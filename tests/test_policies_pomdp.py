"""TRIM-POMDP: transitions, belief updates by hand, solver actions, solve time, cache."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import langchain_trim.policies.named  # noqa: F401  (registers pomdp)
from langchain_trim.lab.sim import SimEnv
from langchain_trim.lab.sim.labelled import fit_observation_model
from langchain_trim.policies import RouteObservation
from langchain_trim.policies.calibration import synthetic_calibration
from langchain_trim.policies.pomdp import PomdpPolicy
from langchain_trim.policies.pomdp_model import (
    PomdpModel,
    accepted_transition,
    parametric_observation,
    table_distance,
    transition,
)
from langchain_trim.policies.pomdp_solver import solve
from langchain_trim.policies.registry import make_policy

OFFICIAL = Path("/work/shared/data/trim_reference/pomdp_calibration.json")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Solves that use the default cache write to a temporary directory."""
    monkeypatch.setenv("TRIM_CACHE_DIR", str(tmp_path / "cache"))


def obs(t: int, score: float | None, prev: tuple[float | None, ...] = ()) -> RouteObservation:
    return RouteObservation(
        step_index=t,
        score=score,
        previous_scores=prev,
        step_tokens=50,
        previous_step_tokens=(50,) * len(prev),
        strong_tokens_spent=0,
        budget=None,
        max_steps=30,
    )


@pytest.mark.parametrize("p_w,p_s", [(0.866, 0.97), (0.5, 0.5), (1.0, 1.0), (0.01, 0.99)])
def test_transition_rows_sum_to_one(p_w: float, p_s: float) -> None:
    for action in (0, 1):
        t = transition(action, p_w, p_s)
        assert t.shape == (3, 3) and (t >= 0).all()
        assert np.allclose(t.sum(axis=1), 1.0)
    assert np.allclose(accepted_transition(p_w).sum(axis=1), 1.0)
    esc = transition(1, p_w, p_s)
    assert esc[0].tolist() == pytest.approx([p_w * p_s, 1 - p_s, p_s * (1 - p_w)])
    assert transition(0, p_w, p_s)[2].tolist() == [0.0, 1.0, 0.0]  # a kept error derails


@pytest.fixture(scope="module")
def model() -> PomdpModel:
    return PomdpModel.from_calibration(synthetic_calibration())


def test_filter_belief_by_hand(model: PomdpModel) -> None:
    p = model.p_weak
    prev, cur = 0.83, 0.12  # raw scale (score_power 1): bins 16 and 2
    table = model.observation
    cond = table / table.sum(axis=2, keepdims=True)  # P(c | m, s)
    b = np.array([p, 0.0, 1 - p]) * cond[:, 19, 16]  # first step, min previous = 1.0
    b /= b.sum()
    b = np.array([b[0] * p, b[1] + b[2], b[0] * (1 - p)]) * cond[:, 16, 2]
    b /= b.sum()
    assert np.allclose(model.filter_belief([prev], cur), b)
    # an unscored previous step only moves the prior
    b2 = np.array([p * p, 1 - p, p * (1 - p)]) * cond[:, 19, 2]
    assert np.allclose(model.filter_belief([None], cur), b2 / b2.sum())


def test_reset_belief_by_hand(model: PomdpModel) -> None:
    b = model.observation[:, 16, 2]
    assert np.allclose(model.reset_belief([0.9, 0.83], 0.12), b / b.sum())


def test_filtering_remembers_an_earlier_error(model: PomdpModel) -> None:
    assert model.filter_belief([0.95, 0.95], 0.9).argmax() == 0  # on track
    assert model.filter_belief([0.95, 0.05], 0.9).argmax() == 1  # derailed despite 0.9
    assert model.filter_belief([0.95, 0.95], 0.2).argmax() == 2  # only this step wrong


def test_solver_actions_on_obvious_cases() -> None:
    cal = synthetic_calibration()
    cheap = PomdpPolicy(cal, lam=1e-5, cache_dir=False)
    assert cheap.decide(obs(0, 0.02)).action == "escalate"
    assert cheap.decide(obs(3, 0.02, (0.95, 0.9, 0.97))).action == "escalate"
    assert cheap.decide(obs(3, 0.98, (0.95, 0.9, 0.97))).action == "continue"
    assert cheap.decide(obs(3, None, (0.95,))).action == "continue"
    pricey = PomdpPolicy(cal, lam=10.0, cache_dir=False)
    assert not pricey.solution.ever_escalates
    assert not pricey.needs_score(obs(0, None))
    for s in (0.0, 0.02, 0.5):
        assert pricey.decide(obs(0, s)).action == "continue"


def test_lower_price_buys_more_strong_tokens() -> None:
    cal = synthetic_calibration()
    env = SimEnv(cal)
    spent = [
        env.run(PomdpPolicy(cal, lam, cache_dir=False), 300, seed=1).mean_strong_tokens
        for lam in (3e-3, 1e-3, 2e-4)
    ]
    assert spent[0] <= spent[1] <= spent[2] and spent[2] > spent[0]


def test_full_problem_solves_within_ten_seconds() -> None:
    if OFFICIAL.exists():
        from langchain_trim.policies.calibration import official_calibration

        cal = official_calibration()
    else:
        cal = synthetic_calibration()
    model = PomdpModel.from_calibration(cal)
    assert model.max_steps == 30 and model.n_bins == 20
    start = time.perf_counter()
    solution = solve(model, 8e-4, cache_dir=False)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, elapsed
    assert len(solution.alphas) == 31 and 0.0 < solution.start_value() < 1.0


def test_cache_round_trip_is_npz_without_pickle(tmp_path: Path) -> None:
    model = PomdpModel.from_calibration(synthetic_calibration(max_steps=10))
    first = solve(model, 1e-3, cache_dir=tmp_path, resolution=12)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not first.cached
    with np.load(files[0], allow_pickle=False) as data:
        assert set(data.files) == {"alphas", "counts", "meta"}
    second = solve(model, 1e-3, cache_dir=tmp_path, resolution=12)
    assert second.cached and second.ever_escalates == first.ever_escalates
    for a, b in zip(first.alphas, second.alphas, strict=True):
        assert np.array_equal(a, b)
    other = solve(model, 2e-3, cache_dir=tmp_path, resolution=12)  # another λ: new entry
    assert not other.cached and len(list(tmp_path.glob("*.npz"))) == 2


def test_fit_observation_model_recovers_first_step_tables() -> None:
    cal = synthetic_calibration(p_weak=0.7)
    env = SimEnv(cal)
    solutions = []
    for r in env.run(make_policy("weak"), 3000, seed=5, record_steps=True, score_all=True).episodes:
        steps = r.trace["steps"]  # type: ignore[index]
        states = [s["sim_state"] for s in steps]
        first_error = next((i for i, s in enumerate(states) if s != "S0"), -1)
        solutions.append(([s["score"] for s in steps], first_error))
    fitted = fit_observation_model(solutions, smoothing_bins=0.0, pseudo_count=0.0)
    truth = np.asarray(cal.observation)
    for s in (0, 2):  # the first step always has min previous = 1.0 (bin 19)
        got, want = fitted[s, 19] / fitted[s, 19].sum(), truth[s, 19] / truth[s, 19].sum()
        assert 0.5 * np.abs(got - want).sum() < 0.12


def test_parametric_default_is_a_valid_model() -> None:
    tables = parametric_observation()
    assert tables.shape == (3, 20, 20) and np.allclose(tables.sum(axis=(1, 2)), 1.0)
    # on track: high current scores; only this step wrong: low ones
    assert tables[0].sum(axis=0)[-5:].sum() > 0.5 > tables[2].sum(axis=0)[-5:].sum()
    assert table_distance(tables, tables) == [0.0, 0.0, 0.0]


def test_registry_spec_parsing(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    synthetic_calibration().save(path)
    policy = make_policy(f"pomdp:0.002:reset@{path}")
    assert policy.name == "pomdp:0.002:reset"
    assert make_policy(f"pomdp:1e-3@{path}").name == "pomdp:0.001"


def test_plan_beats_every_threshold_on_its_own_objective() -> None:
    """The plan maximises accuracy − λ × strong tokens in the simulator it models, so no
    threshold may do better on that objective (the bound in benchmarks/policy_bound)."""
    from langchain_trim.policies import RoutingPolicy, ThresholdPolicy

    cal = synthetic_calibration()
    env = SimEnv(cal)
    lam = 1e-3

    def objective(policy: RoutingPolicy) -> float:
        r = env.run(policy, 1500, seed=3)
        return r.accuracy - lam * r.mean_strong_tokens

    plan = objective(PomdpPolicy(cal, lam, cache_dir=False))
    thresholds = [objective(ThresholdPolicy(k)) for k in (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)]
    assert plan >= max(thresholds) - 0.002, (plan, thresholds)


def test_pomdp_model_warns_on_a_per_question_difficulty() -> None:
    """The POMDP's belief has no difficulty axis: it must say so, and plan with the
    independent step accuracies that give the same endpoint accuracies."""
    cal = synthetic_calibration(p_weak=0.7, p_strong=0.9, mean_steps=4).model_copy(
        update={"difficulty_sd": 2.0}
    )
    with pytest.warns(UserWarning, match="independent, identical steps"):
        model = PomdpModel.from_calibration(cal)
    same = synthetic_calibration(p_weak=model.p_weak, p_strong=model.p_strong, mean_steps=4)
    assert abs(same.expected_accuracy("weak") - cal.expected_accuracy("weak")) < 1e-6
    assert abs(same.expected_accuracy("strong") - cal.expected_accuracy("strong")) < 1e-6
    assert model.p_weak != cal.p_weak
