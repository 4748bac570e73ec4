"""A GlobalBudget cannot be overrun by a mismatched step cap or by abandoned strong calls."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.runnables import RunnableConfig

from langchain_trim import create_trim_graph
from langchain_trim.budget import (
    BudgetedStepGenerator,
    GlobalBudget,
    GlobalBudgetPolicy,
    spent_tokens,
)
from langchain_trim.errors import (
    InvalidInputError,
    ModelTimeoutError,
    StepGenerationError,
    StepTimeoutError,
)
from langchain_trim.generation import StepOutput, as_step_generator
from langchain_trim.lab.sim import SimEnv
from langchain_trim.policies import RouteObservation, ThresholdPolicy
from langchain_trim.policies.calibration import synthetic_calibration
from langchain_trim.prm import FunctionPRM
from langchain_trim.testing import FakeStepModel


def _words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def _graph(
    budget: GlobalBudget, step_cap: int, *, wrap: bool = True, strong_words: int = 12
) -> Any:
    weak = FakeStepModel(steps=[_words(8, f"w{i}_") for i in range(5)] + [r"\boxed{1}"])
    strong = FakeStepModel(
        steps=[_words(strong_words, f"s{i}_") for i in range(5)] + [r"\boxed{2}"]
    )
    strong_gen: Any = as_step_generator(strong, role="strong", run_name="trim.strong")
    if wrap:
        strong_gen = BudgetedStepGenerator(strong_gen, budget)

    def score(question: str, steps: Sequence[str]) -> list[float]:
        return [0.1 if text.startswith("w") else 0.9 for text in steps]

    return create_trim_graph(
        weak,
        strong_gen,
        FunctionPRM(score),
        GlobalBudgetPolicy(ThresholdPolicy(0.5), budget),
        step_max_tokens=step_cap,
    ).compile()


def _batch(graph: Any, n: int, per_question: int | None = None) -> list[dict[str, Any]]:
    inputs: list[dict[str, Any]] = [{"question": f"q{i}"} for i in range(n)]
    if per_question is not None:
        for item in inputs:
            item["trim_budget"] = per_question
    return graph.batch(inputs, config={"max_concurrency": 4, "recursion_limit": 100})


@pytest.mark.parametrize(
    ("step_tokens", "step_cap", "per_question"),
    [
        (10, 20, None),  # smaller reservation: steps were silently cut to 10 tokens
        (30, 12, 40),  # larger: escalations the graph allows went through unreserved
    ],
)
def test_mismatched_step_cap_is_refused(
    step_tokens: int, step_cap: int, per_question: int | None
) -> None:
    budget = GlobalBudget(60, step_tokens=step_tokens)
    graph = _graph(budget, step_cap)
    with pytest.raises(InvalidInputError, match="step_tokens"):
        _batch(graph, 8, per_question)


def test_matched_step_cap_never_overruns() -> None:
    budget = GlobalBudget(60, step_tokens=20)
    outs = _batch(_graph(budget, 20), 8, per_question=40)
    spent = sum(o["trim_spend"]["strong_tokens"] for o in outs)
    assert spent == budget.spent <= 60
    assert budget.unreserved_calls == 0 and budget.overshoots == 0


def test_policy_refuses_an_observation_with_another_cap() -> None:
    budget = GlobalBudget(60, step_tokens=10)
    policy = GlobalBudgetPolicy(ThresholdPolicy(1.0), budget)
    obs = RouteObservation(0, 0.2, (), 10, (), 0, None, 30, step_max_tokens=20)
    with pytest.raises(InvalidInputError):
        policy.decide(obs)
    with pytest.raises(InvalidInputError):
        policy.needs_score(obs)
    assert budget.outstanding == 0
    ok = RouteObservation(0, 0.2, (), 10, (), 0, None, 30, step_max_tokens=10)
    assert policy.decide(ok).action == "escalate" and budget.outstanding == 1


def test_simulator_with_a_mismatched_budget_is_refused() -> None:
    """Without the generator wrapper the batch spent 72 of a total of 60 (issue 13)."""
    env = SimEnv(synthetic_calibration(strong_tokens=200), step_max_tokens=256)
    policy = GlobalBudgetPolicy(ThresholdPolicy(1.0), GlobalBudget(600, step_tokens=100))
    with pytest.raises(InvalidInputError):
        env.episode(policy, 0, seed=1)


def test_graph_without_wrapper_refuses_a_mismatched_budget() -> None:
    budget = GlobalBudget(60, step_tokens=10)
    with pytest.raises(InvalidInputError):
        _batch(_graph(budget, 20, wrap=False), 8)  # on main: 72 strong tokens spent


class _FlakyStrong:
    """A strong step generator whose first call times out after decoding ``abandoned``."""

    name = "flaky"

    def __init__(self, abandoned: int, used: int = 12) -> None:
        self.abandoned = abandoned
        self.used = used
        self.calls = 0
        self.kwargs: dict[str, Any] = {}

    def _step(self, max_tokens: int, kwargs: dict[str, Any]) -> StepOutput:
        self.calls += 1
        self.kwargs = kwargs
        if self.calls == 1:
            try:
                raise ModelTimeoutError("deadline", tokens=self.abandoned)
            except ModelTimeoutError as exc:
                raise StepTimeoutError("timed out", role="strong", step_index=0) from exc
        return StepOutput("s", min(self.used, max_tokens), False, "delimiter", self.name)

    def generate(
        self,
        question: str,
        prefix: Sequence[str],
        *,
        max_tokens: int,
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> StepOutput:
        return self._step(max_tokens, kwargs)

    async def agenerate(
        self,
        question: str,
        prefix: Sequence[str],
        *,
        max_tokens: int,
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> StepOutput:
        return self._step(max_tokens, kwargs)


def test_abandoned_attempt_is_charged_and_its_retry_reserves_again() -> None:
    budget = GlobalBudget(40, step_tokens=20)
    inner = _FlakyStrong(abandoned=20)
    gen = BudgetedStepGenerator(inner, budget)
    assert budget.reserve()  # what the policy does before escalating
    with pytest.raises(StepTimeoutError):
        gen.generate("q", [], max_tokens=20)
    assert budget.spent == 20 and budget.outstanding == 0  # charged, reservation used up
    out = gen.generate("q", [], max_tokens=20)  # the graph's retry funds itself
    assert out.tokens == 12 and budget.spent == 32 and budget.outstanding == 0
    assert budget.unreserved_calls == 0 and budget.overshoots == 0


def test_retry_the_budget_cannot_cover_is_refused_without_a_call() -> None:
    budget = GlobalBudget(20, step_tokens=20)
    inner = _FlakyStrong(abandoned=15)
    gen = BudgetedStepGenerator(inner, budget)

    async def run() -> None:
        assert budget.reserve()
        with pytest.raises(StepTimeoutError):
            await gen.agenerate("q", [], max_tokens=20)
        with pytest.raises(StepGenerationError, match="cannot cover a retry"):
            await gen.agenerate("q", [], max_tokens=20)

    asyncio.run(run())
    assert inner.calls == 1 and budget.spent == 15 <= budget.total


def test_wrapper_passes_new_protocol_keywords_through() -> None:
    budget = GlobalBudget(40, step_tokens=20)
    inner = _FlakyStrong(abandoned=0)
    inner.calls = 1  # no failure
    gen = BudgetedStepGenerator(inner, budget)
    budget.reserve()
    gen.generate("q", ["a"], max_tokens=20, continue_last=True)
    assert inner.kwargs == {"continue_last": True} and budget.spent == 12


def test_spent_tokens_reads_the_error_chain() -> None:
    try:
        try:
            raise ModelTimeoutError("x", tokens=7)
        except ModelTimeoutError as exc:
            raise StepTimeoutError("y", role="strong", step_index=0) from exc
    except StepTimeoutError as outer:
        assert spent_tokens(outer) == 7
    assert spent_tokens(RuntimeError("no count")) == 0


@settings(max_examples=20, deadline=None)
@given(
    total=st.integers(0, 200),
    step_tokens=st.integers(5, 30),
    step_cap=st.integers(5, 30),
    per_question=st.one_of(st.none(), st.integers(1, 80)),
    strong_words=st.integers(1, 30),
)
def test_global_budget_is_never_overrun_or_the_config_is_refused(
    total: int, step_tokens: int, step_cap: int, per_question: int | None, strong_words: int
) -> None:
    budget = GlobalBudget(total, step_tokens=step_tokens)
    graph = _graph(budget, step_cap, strong_words=strong_words)
    try:
        outs = _batch(graph, 4, per_question)
    except InvalidInputError as exc:
        refused_step = "step_tokens" in str(exc) and step_tokens != step_cap
        # a per-question budget below the step cap could never escalate: rejected too
        small = per_question is not None and per_question < step_cap
        assert refused_step or (small and "step_max_tokens" in str(exc))
        return
    spent = sum(o["trim_spend"]["strong_tokens"] for o in outs)
    assert spent == budget.spent <= total
    assert budget.unreserved_calls == 0 and budget.overshoots == 0


def test_a_shared_budget_reserves_the_strong_cap() -> None:
    """With ``strong_step_max_tokens`` the pool's ``step_tokens`` is that cap, not the
    step cap: the cap is what one escalation can cost."""
    from langchain_trim.generation import ChatStepGenerator

    text = "a b c d e f\n\ng h i j\n\n\\boxed{1}"

    def graph(pool: GlobalBudget) -> Any:
        strong = ChatStepGenerator(FakeStepModel(solution=text), role="strong", run_name="s")
        return create_trim_graph(
            FakeStepModel(solution=text),
            BudgetedStepGenerator(strong, pool),
            None,
            GlobalBudgetPolicy(ThresholdPolicy(1), pool),
            step_max_tokens=64,
            strong_step_max_tokens=3,
        ).compile()

    pool = GlobalBudget(total=10, step_tokens=3)
    outs = graph(pool).batch([{"question": f"q{i}"} for i in range(4)])
    assert 0 < pool.spent <= 10
    assert sum(o["trim_spend"]["strong_tokens"] for o in outs) == pool.spent
    with pytest.raises(InvalidInputError, match="strong step cap"):
        graph(GlobalBudget(total=10, step_tokens=64)).batch([{"question": "q"}])


def test_the_graph_wraps_policy_and_strong_model_for_a_shared_budget() -> None:
    """``global_budget=`` does the two wraps a user had to get right by hand."""
    weak = FakeStepModel(steps=[_words(8, f"w{i}_") for i in range(5)] + [r"\boxed{1}"])
    strong = FakeStepModel(steps=[_words(12, f"s{i}_") for i in range(5)] + [r"\boxed{2}"])
    prm = FunctionPRM(lambda q, steps: [0.1 if s.startswith("w") else 0.9 for s in steps])
    pool = GlobalBudget(60, step_tokens=20)
    graph = create_trim_graph(
        weak, strong, prm, ThresholdPolicy(0.5), global_budget=pool, step_max_tokens=20
    ).compile()
    outs = _batch(graph, 8)
    spent = sum(o["trim_spend"]["strong_tokens"] for o in outs)
    assert 0 < spent == pool.spent <= 60
    assert pool.unreserved_calls == 0 and pool.overshoots == 0
    assert any(s["reason"].startswith("global budget") for o in outs for s in o["trim_steps"])


@pytest.mark.parametrize(
    ("step_tokens", "caps"),
    [(20, {"step_max_tokens": 30}), (30, {"step_max_tokens": 30, "strong_step_max_tokens": 10})],
)
def test_a_global_budget_with_another_cap_is_refused_when_the_graph_is_built(
    step_tokens: int, caps: dict[str, int]
) -> None:
    strong = FakeStepModel(steps=["s"])
    with pytest.raises(InvalidInputError, match="strong call cap"):
        create_trim_graph(
            strong,
            strong,
            None,
            ThresholdPolicy(1),
            global_budget=GlobalBudget(60, step_tokens),
            **caps,
        )
    with pytest.raises(InvalidInputError, match="must be a GlobalBudget"):
        create_trim_graph(strong, strong, None, ThresholdPolicy(1), global_budget=60)  # type: ignore[arg-type]
