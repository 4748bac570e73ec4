"""The simulator: calibration I/O, graph-equivalent observations, budget rule, fitting."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from langchain_trim.lab.sim import Calibration, SimEnv, TokenModel, fit_calibration
from langchain_trim.lab.sim.fit import smooth_table, solve_step_accuracy
from langchain_trim.policies import RouteDecision, RouteObservation, ThresholdPolicy
from langchain_trim.policies.calibration import synthetic_calibration
from langchain_trim.state import StepRecord

OFFICIAL = Path("/work/shared/data/trim_reference/pomdp_calibration.json")
needs_official = pytest.mark.skipif(not OFFICIAL.exists(), reason="official tables not present")


class Recorder:
    """Escalates every ``every``-th step, asks for scores, and keeps what it saw."""

    def __init__(self, every: int = 2, needs: bool = True) -> None:
        self.every, self.needs = every, needs
        self.asked: list[RouteObservation] = []
        self.seen: list[RouteObservation] = []

    @property
    def name(self) -> str:
        return f"recorder:{self.every}"

    def needs_score(self, observation: RouteObservation) -> bool:
        self.asked.append(observation)
        return self.needs

    def decide(self, observation: RouteObservation) -> RouteDecision:
        self.seen.append(observation)
        escalate = observation.step_index % self.every == 0
        return RouteDecision("escalate" if escalate else "continue", "test")


@pytest.fixture(scope="module")
def cal() -> Calibration:
    return synthetic_calibration()


def test_calibration_json_round_trip(cal: Calibration, tmp_path: Path) -> None:
    tuned = cal.model_copy(update={"observation_mix": 0.3, "score_power": 1.5})
    path = tmp_path / "cal.json"
    tuned.save(path)
    assert json.loads(path.read_text())["observation_mix"] == 0.3
    assert Calibration.load(path) == tuned


def test_calibration_validation(cal: Calibration) -> None:
    data = cal.model_dump()
    with pytest.raises(ValueError):
        Calibration(**{**data, "observation": data["observation"][:2]})
    with pytest.raises(ValueError):
        Calibration(**{**data, "bin_size": 0.1})  # 20x20 tables need 0.05 bins
    with pytest.raises(ValueError):
        Calibration(**{**data, "termination_weak": [0.0, -1.0]})
    with pytest.raises(ValueError):
        Calibration(**{**data, "p_weak": 1.5})
    with pytest.raises(ValueError):
        Calibration(**{**data, "unknown": 1})
    scaled = Calibration(
        **{**data, "observation": [[[2 * v for v in r] for r in t] for t in data["observation"]]}
    )
    assert math.isclose(sum(map(sum, scaled.observation[0])), 1.0)
    mixed = cal.model_copy(update={"observation_mix": 1.0}).effective_observation()
    assert mixed[0] == mixed[1] == mixed[2]


@needs_official
def test_from_official() -> None:
    cal = Calibration.from_official(OFFICIAL)
    raw = json.loads(OFFICIAL.read_text())
    assert cal.p_weak == pytest.approx(0.866, abs=1e-3)
    assert cal.p_strong == pytest.approx(0.970, abs=1e-3)
    assert cal.max_steps == 30 and cal.termination_weak[0] == 0.0
    assert cal.termination_weak[1] == pytest.approx(
        raw["termination_pmf"]["weak_qwen2.5-1.5b"]["pmf_by_step"][0]
    )
    assert cal.mean_steps("weak") == pytest.approx(7.84, abs=0.01)
    assert cal.expected_accuracy("weak") == pytest.approx(0.367, abs=0.002)
    # always-strong tokens per question are reproduced by construction
    assert cal.strong_tokens.mean * cal.mean_steps("strong") == pytest.approx(494.84)
    assert all(math.isclose(sum(map(sum, t)), 1.0) for t in cal.observation)


def test_reproducible_and_seeded(cal: Calibration) -> None:
    env = SimEnv(cal)
    a = env.run(ThresholdPolicy(0.5), 200, seed=3)
    b = env.run(ThresholdPolicy(0.5), 200, seed=3)
    c = env.run(ThresholdPolicy(0.5), 200, seed=4)
    assert a.episodes == b.episodes
    assert a.episodes != c.episodes


def test_endpoints_match_the_calibration(cal: Calibration) -> None:
    env = SimEnv(cal)
    n = 4000
    weak, strong = env.run(ThresholdPolicy(0), n), env.run(ThresholdPolicy(1), n)
    assert weak.mean_strong_tokens == 0 and weak.mean_prm_calls == 0 and strong.mean_prm_calls == 0
    assert all(e.escalations == e.steps for e in strong.episodes)
    for run, model in ((weak, "weak"), (strong, "strong")):
        p = cal.expected_accuracy(model)
        assert abs(run.accuracy - p) < 3.5 * math.sqrt(p * (1 - p) / n)
        assert run.mean_steps == pytest.approx(cal.mean_steps(model), abs=0.15)
    assert strong.mean_strong_tokens == pytest.approx(
        cal.strong_tokens.mean * cal.mean_steps("strong"), rel=0.05
    )


@pytest.mark.parametrize(
    "update",
    [
        {"difficulty_sd": 1.5},
        {"p_weak_final": 0.6, "p_strong_final": 0.8},
        {"difficulty_sd": 2.0, "p_strong": 1.0, "p_strong_final": 0.7},
    ],
)
def test_endpoints_match_the_calibration_with_difficulty_and_final_steps(
    cal: Calibration, update: dict[str, float]
) -> None:
    """The simulator and :meth:`Calibration.expected_accuracy` (quadrature over the
    difficulty, final step apart) agree; the planner's independent accuracies reproduce it."""
    cal = cal.model_copy(update=update)
    env, n = SimEnv(cal), 6000
    for policy, model in ((ThresholdPolicy(0), "weak"), (ThresholdPolicy(1), "strong")):
        p = cal.expected_accuracy(model)
        assert abs(env.run(policy, n, seed=7).accuracy - p) < 3.5 * math.sqrt(p * (1 - p) / n)
        q = cal.independent_step_accuracy(model)
        alike = cal.model_copy(
            update={
                "difficulty_sd": 0.0,
                "p_weak_final": None,
                "p_strong_final": None,
                "p_weak": q,
                "p_strong": q,
            }
        )
        assert alike.expected_accuracy(model) == pytest.approx(p, abs=1e-6)


def test_observations_are_built_like_the_graph(cal: Calibration) -> None:
    policy = Recorder(every=2)
    env = SimEnv(cal, step_max_tokens=300)
    result = env.episode(policy, 0, seed=11, budget=10_000, record_steps=True)
    assert result.steps >= 2
    asked, seen = policy.asked, policy.seen
    assert [o.step_index for o in seen] == list(range(result.steps))
    for before, after in zip(asked, seen, strict=True):
        assert before.score is None and after.score is not None
        assert len(after.previous_scores) == len(after.previous_step_tokens) == after.step_index
        assert after.budget == 10_000 and after.max_steps == cal.max_steps
        assert 1 <= after.step_tokens <= 300
    # step 0 is escalated: its strong score is unknown until the step-1 PRM call
    assert asked[1].previous_scores == (None,)
    assert seen[1].previous_scores[0] is not None
    spent = 0
    assert result.trace is not None
    for obs, step in zip(seen, result.trace["steps"], strict=True):
        assert obs.strong_tokens_spent == spent
        spent += step["tokens"] if step["author"] == "strong" else 0
        assert set(StepRecord.__annotations__) >= set(step) - {"sim_state"}
    assert spent == result.strong_tokens
    last = result.trace["steps"][-1]
    if last["author"] == "strong":
        assert last["score"] is None  # never re-scored, as in the graph


def test_needs_score_is_honoured(cal: Calibration) -> None:
    policy = Recorder(every=3, needs=False)
    result = SimEnv(cal).episode(policy, 1, seed=2)
    assert result.prm_calls == 0
    assert all(o.score is None for o in policy.seen)
    assert all(s is None for o in policy.seen for s in o.previous_scores)


def test_budget_rule(cal: Calibration) -> None:
    env = SimEnv(cal, step_max_tokens=100)
    capped = env.run(ThresholdPolicy(1), 300, budget=250, record_steps=True)
    assert all(e.strong_tokens <= 250 for e in capped.episodes)
    for trace in capped.traces():  # escalate only while budget_left >= step_max_tokens
        spent = 0
        for step in trace["steps"]:
            assert (step["author"] == "strong") == (250 - spent >= 100)
            assert step["budget_blocked"] == (step["author"] == "weak")
            spent += step["tokens"] if step["author"] == "strong" else 0
    assert sum(e.budget_blocked for e in capped.episodes) > 0
    none = env.run(ThresholdPolicy(1), 50, budget=99)
    assert none.mean_strong_tokens == 0 and none.mean_escalations == 0
    per_question = env.run(ThresholdPolicy(1), 3, budget=[0, None, 100])
    assert per_question.episodes[0].strong_tokens == 0
    assert per_question.episodes[1].budget_blocked == 0
    with pytest.raises(ValueError):
        env.run(ThresholdPolicy(1), 3, budget=[1, 2])


def test_bad_policy_answer_raises(cal: Calibration) -> None:
    class Bad:
        name = "bad"

        def needs_score(self, observation: RouteObservation) -> bool:
            return False

        def decide(self, observation: RouteObservation) -> str:
            return "escalate"

    with pytest.raises(TypeError, match="not a RouteDecision"):
        SimEnv(cal).episode(Bad(), 0)  # type: ignore[arg-type]


def test_threshold_sweep_is_monotone(cal: Calibration) -> None:
    # (its speed is measured in benchmarks/, not asserted: a wall-clock bound failed on a
    # loaded 2-core machine)
    env = SimEnv(cal)
    runs = env.sweep([ThresholdPolicy(k / 10) for k in range(11)], 500, seed=0)
    tokens = [r.mean_strong_tokens for r in runs]
    assert tokens[0] == 0 and tokens == sorted(tokens)
    assert runs[5].accuracy > runs[0].accuracy
    assert runs[3].to_dict()["policy"] == "thr:0.3"


def test_corrections_change_what_they_should(cal: Calibration) -> None:
    base = SimEnv(cal).episode(Recorder(every=1), 0, seed=5, record_steps=True, score_all=True)
    squared = SimEnv(cal.model_copy(update={"score_power": 2.0})).episode(
        Recorder(every=1), 0, seed=5, record_steps=True, score_all=True
    )
    assert base.trace is not None and squared.trace is not None
    for a, b in zip(base.trace["steps"], squared.trace["steps"], strict=True):
        assert b["draft_score"] == pytest.approx(a["draft_score"] ** 2)
    thr = ThresholdPolicy(0.5)
    plain = SimEnv(cal).run(thr, 1000, seed=1)
    coupled = SimEnv(cal.model_copy(update={"length_score_corr": 0.7})).run(thr, 1000, seed=1)
    assert coupled.accuracy == plain.accuracy  # decisions do not depend on lengths
    per_escalation = coupled.mean_strong_tokens / coupled.mean_escalations
    assert per_escalation > 1.2 * plain.mean_strong_tokens / plain.mean_escalations
    blurred = SimEnv(cal.model_copy(update={"observation_mix": 0.8})).run(thr, 1000, seed=1)
    assert blurred.accuracy < plain.accuracy  # a less discriminative PRM helps less


def test_solve_step_accuracy_and_smoothing() -> None:
    assert solve_step_accuracy([3, 3, 3], 0.125) == pytest.approx(0.5)
    assert solve_step_accuracy([5], 1.0) == 1.0
    with pytest.raises(ValueError):
        solve_step_accuracy([], 0.5)
    table = smooth_table([[0, 0, 0], [0, 9, 0], [0, 0, 0]], 1.0, 0.0)
    assert sum(map(sum, table)) == pytest.approx(9.0)  # mirrored edges keep the mass
    assert table[1][1] == max(max(r) for r in table)


def test_fit_recovers_the_parameters(cal: Calibration) -> None:
    env = SimEnv(cal)
    traces = []
    for i, (k, score_all) in enumerate(((0.0, True), (1.0, False), (0.5, False))):
        run = env.run(
            ThresholdPolicy(k), 1200, seed=100 + i, record_steps=True, score_all=score_all
        )
        traces += run.traces()
    fit = fit_calibration(traces)
    assert fit.p_weak == pytest.approx(cal.p_weak, abs=0.015)
    assert fit.p_strong == pytest.approx(cal.p_strong, abs=0.01)
    assert fit.mean_steps("weak") == pytest.approx(cal.mean_steps("weak"), abs=0.3)
    assert fit.mean_steps("strong") == pytest.approx(cal.mean_steps("strong"), abs=0.3)
    assert fit.weak_tokens.mean == pytest.approx(cal.weak_tokens.mean, rel=0.05)
    assert fit.strong_tokens.mean == pytest.approx(cal.strong_tokens.mean, rel=0.05)
    assert fit.weak_tokens.cv == pytest.approx(cal.weak_tokens.cv, abs=0.1)

    def mean_score(c: Calibration, state: int) -> float:
        t = c.observation[state]
        n = len(t)
        return sum(t[i][j] * (j + 0.5) / n for i in range(n) for j in range(n))

    assert mean_score(fit, 0) == pytest.approx(mean_score(cal, 0), abs=0.05)
    assert mean_score(fit, 1) == pytest.approx(mean_score(cal, 1), abs=0.08)
    assert mean_score(fit, 0) > mean_score(fit, 1) and mean_score(fit, 0) > mean_score(fit, 2)
    # the refit simulator reproduces the endpoints
    refit = SimEnv(fit)
    for k in (0.0, 1.0):
        a = env.run(ThresholdPolicy(k), 3000, seed=9).accuracy
        b = refit.run(ThresholdPolicy(k), 3000, seed=9).accuracy
        assert b == pytest.approx(a, abs=0.04)
    # mid-curve: the PRM-located first error biases S2 low (documented), so only loosely
    a = env.run(ThresholdPolicy(0.5), 3000, seed=9).accuracy
    assert refit.run(ThresholdPolicy(0.5), 3000, seed=9).accuracy == pytest.approx(a, abs=0.1)


def test_fit_needs_both_endpoint_runs(cal: Calibration) -> None:
    traces = SimEnv(cal).run(ThresholdPolicy(0), 20, record_steps=True, score_all=True).traces()
    with pytest.raises(ValueError, match="always-weak and always-strong"):
        fit_calibration(traces)
    # an always-weak-looking trace from a threshold run is not an always-weak run
    mixed = SimEnv(cal).run(ThresholdPolicy(0.5), 50, record_steps=True).traces()
    strong = SimEnv(cal).run(ThresholdPolicy(1), 20, record_steps=True).traces()
    with pytest.raises(ValueError, match="0 weak-only"):
        fit_calibration(mixed + strong)


def test_token_model() -> None:
    mu, sigma = TokenModel(mean=50.0, cv=0.5).log_params
    assert math.exp(mu + sigma**2 / 2) == pytest.approx(50.0)


def test_first_step_scores_keep_their_own_distribution() -> None:
    """A PRM that scores every first step ~0.94 (the embedded probe does) must not be
    simulated with first-step scores spread like the later steps' (the 2-D blur mixed the
    "no previous step" row with its neighbours; a state without first steps fell back to a
    near-uniform row)."""
    import random

    rng = random.Random(0)

    def step(author: str, score: float | None) -> dict[str, object]:
        return {
            "author": author,
            "tokens": 40,
            "score": score,
            "draft_score": score,
            "draft_tokens": 40,
            "decision": "continue",
        }

    traces: list[dict[str, object]] = []
    for i in range(300):
        n = rng.randint(3, 7)
        scores = [0.94] + [rng.uniform(0.3, 0.8) for _ in range(n - 1)]
        traces.append(
            {
                "policy": "weakscored",
                "correct": i % 3 == 0,
                "steps": [step("weak", s) for s in scores],
            }
        )
        traces.append(
            {"policy": "strong", "correct": i % 3 != 2, "steps": [step("strong", None)] * n}
        )
    fit = fit_calibration(traces)
    episodes = (
        SimEnv(fit)
        .run(ThresholdPolicy(0), 1000, seed=3, record_steps=True, score_all=True)
        .traces()
    )
    first = sorted(float(t["steps"][0]["draft_score"]) for t in episodes)
    assert first[len(first) // 20] >= 0.8  # 5th percentile: first steps stay near 0.94


def _paired_traces(sd: float, n: int, seed: int = 0) -> list[dict[str, object]]:
    """Always-weak/always-strong traces of the same questions from the difficulty model."""
    import random

    rng = random.Random(seed)
    cal = synthetic_calibration(p_weak=0.75, p_strong=0.92).model_copy(update={"difficulty_sd": sd})
    out: list[dict[str, object]] = []
    for i in range(n):
        z = rng.gauss(0.0, sd) if sd else 0.0
        for policy, model in (("weakscored", "weak"), ("strong", "strong")):
            steps = rng.randint(2, 7)
            p = cal.step_accuracy(model, z)
            right = all(rng.random() < p for _ in range(steps))
            step = {"author": model, "tokens": 40, "score": 0.5, "draft_tokens": 40}
            out.append(
                {"policy": policy, "problem_id": f"q{i}", "correct": right, "steps": [step] * steps}
            )
    return out


def test_fit_difficulty_recovers_a_shared_difficulty() -> None:
    """Questions that are hard for both models are a fact of the paired outcomes; the
    maximum-likelihood fit finds the spread, and finds none where there is none."""
    from langchain_trim.lab.sim.fit import _paired_outcomes, fit_difficulty

    def fit(sd: float) -> object:
        traces = _paired_traces(sd, 3000, seed=1)
        weak = [t for t in traces if t["policy"] == "weakscored"]
        strong = [t for t in traces if t["policy"] == "strong"]
        return fit_difficulty(_paired_outcomes(weak, strong))  # type: ignore[arg-type]

    spread = fit(2.0)
    assert 1.6 < spread.difficulty_sd < 2.4  # type: ignore[attr-defined]
    assert abs(spread.p_weak - 0.75) < 0.05 and abs(spread.p_strong - 0.92) < 0.03  # type: ignore[attr-defined]
    assert spread.log_likelihood > spread.independent_log_likelihood + 10  # type: ignore[attr-defined]
    alike = fit(0.0)
    assert alike.difficulty_sd < 0.6  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="questions with both"):
        fit_difficulty([(3, True, 3, True)] * 5)


def test_fit_calibration_question_difficulty() -> None:
    traces = _paired_traces(2.0, 400, seed=2)
    plain = fit_calibration(traces)
    paired = fit_calibration(traces, question_difficulty=True)
    assert plain.difficulty_sd == 0.0 and paired.difficulty_sd > 1.0
    assert any("paired questions" in n for n in paired.notes)
    # both reproduce the endpoint accuracies they were fit to
    weak_acc = sum(bool(t["correct"]) for t in traces if t["policy"] == "weakscored") / 400
    assert abs(paired.expected_accuracy("weak") - weak_acc) < 0.05


def test_simulated_difficulty_makes_errors_cluster() -> None:
    """With a per-question difficulty the weak model fails mostly where the strong model
    fails (common random numbers: episode i is one question for every policy)."""
    base = synthetic_calibration(p_weak=0.8, p_strong=0.93, mean_steps=4)

    def conditional(cal: Calibration) -> tuple[float, float]:
        from langchain_trim.policies.registry import make_policy

        env = SimEnv(cal)
        weak = env.run(make_policy("weak"), 3000, seed=5).episodes
        strong = env.run(make_policy("strong"), 3000, seed=5).episodes
        pairs = [(w.correct, s.correct) for w, s in zip(weak, strong, strict=True)]
        given = [w for w, s in pairs if s]
        given_not = [w for w, s in pairs if not s]
        return sum(given) / len(given), sum(given_not) / max(len(given_not), 1)

    right_right, right_wrong = conditional(base.model_copy(update={"difficulty_sd": 2.0}))
    alike_rr, alike_rw = conditional(base)  # shared lengths alone correlate them a little
    assert (right_right - right_wrong) - (alike_rr - alike_rw) > 0.15
    # runs without a difficulty draw the same randomness as before the field existed
    assert SimEnv(base).run(ThresholdPolicy(0.5), 50, seed=1) == SimEnv(
        Calibration.model_validate_json(base.model_dump_json())
    ).run(ThresholdPolicy(0.5), 50, seed=1)


def test_calibration_without_difficulty_field_loads(tmp_path: Path) -> None:
    raw = json.loads(synthetic_calibration().model_dump_json())
    del raw["difficulty_sd"]  # files written before the field existed
    path = tmp_path / "old.json"
    path.write_text(json.dumps(raw))
    assert Calibration.load(path).difficulty_sd == 0.0
    with pytest.raises(ValueError):
        Calibration.model_validate({**raw, "difficulty_sd": -1.0})


def test_final_step_accuracy_makes_accuracy_flat_in_length() -> None:
    """A model whose errors sit in the step that ends its solution (the embedded strong
    model: as often right in one paragraph as in six) is simulated as such, the fit finds
    it from paired outcomes, and with the fields unset nothing changes."""
    import random

    from langchain_trim.lab.sim.fit import fit_difficulty
    from langchain_trim.policies.registry import make_policy

    cal = synthetic_calibration(p_weak=0.9, p_strong=1.0, mean_steps=4).model_copy(
        update={"p_strong_final": 0.6, "strong_final_tokens": TokenModel(mean=150.0, cv=0.3)}
    )
    episodes = SimEnv(cal).run(make_policy("strong"), 4000, seed=2, record_steps=True).traces()
    by_length: dict[bool, list[bool]] = {}
    for t in episodes:
        by_length.setdefault(len(t["steps"]) <= 3, []).append(bool(t["correct"]))
    short, long = (sum(v) / len(v) for v in (by_length[True], by_length[False]))
    assert abs(short - 0.6) < 0.04 and abs(long - 0.6) < 0.04
    assert abs(cal.expected_accuracy("strong") - 0.6) < 1e-9
    last = [t["steps"][-1]["tokens"] for t in episodes]
    assert 130 < sum(last) / len(last) < 170  # the final step's own length model
    # fit: weak errors compound, strong errors only at the end
    rng = random.Random(4)
    pairs = []
    for _ in range(3000):
        lw, ls = rng.randint(2, 8), rng.randint(1, 7)
        w_ok = all(rng.random() < 0.9 for _ in range(lw))
        pairs.append((lw, w_ok, ls, rng.random() < 0.6))
    fit = fit_difficulty(pairs, final_step=True)
    assert fit.p_strong > 0.97 and fit.p_strong_final is not None
    assert abs(fit.p_strong_final - 0.6) < 0.05
    assert fit.log_likelihood > fit_difficulty(pairs).log_likelihood + 10
    with pytest.raises(ValueError, match="pass both"):
        fit_calibration(_paired_traces(0.0, 30), final_step=True)


def test_length_score_correlation_is_recovered() -> None:
    """Longer drafts score lower on the embedded probe (dev: 0.78); the fit reads the
    simulator's own link back (attenuated), and finds none where there is none."""
    from langchain_trim.lab.sim.fit import length_score_correlation

    base = synthetic_calibration(p_weak=0.85, mean_steps=6)

    def fitted(rho: float) -> float:
        cal = base.model_copy(update={"length_score_corr": rho})
        traces = (
            SimEnv(cal)
            .run(ThresholdPolicy(0), 1500, seed=4, record_steps=True, score_all=True)
            .traces()
        )
        return length_score_correlation(traces)

    # ranked over all drafts, not within the hidden state: attenuated, still ordered
    low, high = fitted(0.6), fitted(0.9)
    assert 0.2 < low < 0.6 and low < high < 0.9
    assert fitted(0.0) < 0.15
    assert length_score_correlation([]) == 0.0
    weak = {"author": "weak", "tokens": 5, "score": 0.5, "draft_score": 0.5}
    traces = [{"policy": "weakscored", "steps": [weak]}]
    assert (
        fit_calibration(
            [
                *traces,
                {"policy": "strong", "correct": True, "steps": [{"author": "strong", "tokens": 9}]},
            ]
            * 3,
            length_score=True,
        ).length_score_corr
        == 0.0
    )
