"""Bad input gets a clear, typed error; model and PRM failures a recorded fallback."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import pytest
from langgraph.types import RetryPolicy

from langchain_trim import (
    InvalidInputError,
    PRMError,
    PRMScoreError,
    RouteDecision,
    RouteObservation,
    StepGenerationError,
    StepTimeoutError,
    ThresholdPolicy,
    TrimError,
    TrimWarning,
    create_trim_graph,
)
from langchain_trim.prm import FunctionPRM, validate_scores
from langchain_trim.testing import FakeStepModel, KeywordPRM

from .conftest import STRONG_STEPS, WEAK_STEPS

FAST_RETRY = RetryPolicy(max_attempts=2, initial_interval=0.0, jitter=False)


def graph(**kw: Any) -> Any:
    args: dict[str, Any] = {
        "draft_model": FakeStepModel(steps=WEAK_STEPS),
        "strong_model": FakeStepModel(steps=STRONG_STEPS),
        "prm": KeywordPRM({"WRONG": 0.1}),
        "policy": ThresholdPolicy(0.5),
    }
    args.update(kw)
    return create_trim_graph(
        args.pop("draft_model"),
        args.pop("strong_model"),
        args.pop("prm"),
        args.pop("policy"),
        **args,
    ).compile()


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"question": ""}, "empty"),
        ({"question": "   \n"}, "empty"),
        ({"question": "x" * 50_001}, "max_question_chars"),
        ({}, "no question"),
        ({"question": 42}, "must be a string"),
        ({"question": "q", "trim_budget": 0}, "positive"),
        ({"question": "q", "trim_budget": -5}, "positive"),
        ({"question": "q", "trim_budget": 2.5}, "integer"),
    ],
)
def test_bad_input_is_a_typed_error(inputs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        graph(max_question_chars=50_000).invoke(inputs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": 0}, "positive"),
        ({"max_steps": 0}, "max_steps"),
        ({"step_max_tokens": -1}, "step_max_tokens"),
        ({"on_prm_error": "ignore"}, "on_prm_error"),
        ({"on_strong_error": "skip"}, "on_strong_error"),
        ({"output_mode": "everything"}, "output_mode"),
        ({"strong_retry": RetryPolicy(max_attempts=0)}, "max_attempts"),
        ({"strong_max_retries": -1}, "strong_max_retries"),
        ({"budget": 100, "step_max_tokens": 512}, "step_max_tokens"),
        ({"strong_model": "local:no-such-model"}, "unknown embedded model"),
        ({"strong_model": "local:/no/such/file.gguf"}, "does not exist"),
        ({"strong_model": "opneai:gpt-4o-mini"}, "strong model 'opneai:gpt-4o-mini'"),
        ({"step_timeout": 0}, "step_timeout"),
        ({"policy": object()}, "RoutingPolicy"),
        ({"prm": object()}, "ProcessRewardModel"),
        ({"draft_model": 3}, "draft model"),
        ({"draft_model": ""}, "empty"),
    ],
)
def test_bad_factory_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((InvalidInputError, ValueError), match=match):
        graph(**kwargs)


def test_threshold_validation() -> None:
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError):
            ThresholdPolicy(bad)
    with pytest.raises(TypeError):
        ThresholdPolicy("0.5")  # type: ignore[arg-type]


def test_policy_without_prm_is_caught_before_any_model_call() -> None:
    weak = FakeStepModel(steps=WEAK_STEPS)
    with pytest.raises(InvalidInputError, match="needs PRM scores"):
        graph(prm=None, draft_model=weak).invoke({"question": "q"})
    assert weak.calls == []


def bad_prm(value: Any) -> FunctionPRM:
    return FunctionPRM(lambda q, steps: [0.9] * (len(steps) - 1) + [value])


@pytest.mark.parametrize(
    "prm",
    [
        bad_prm(math.nan),
        bad_prm(1.7),
        bad_prm(-0.2),
        bad_prm("high"),
        FunctionPRM(lambda q, steps: [0.5]),  # wrong length after step 0
        FunctionPRM(lambda q, steps: 1 / 0),  # raises
    ],
)
@pytest.mark.parametrize("use_async", [False, True])
def test_prm_failure_keeps_draft_and_says_so(prm: FunctionPRM, use_async: bool) -> None:
    g = graph(prm=prm)
    with pytest.warns(TrimWarning, match="PRM failed"):
        out = (
            asyncio.run(g.ainvoke({"question": "q"})) if use_async else g.invoke({"question": "q"})
        )
    failed = [s for s in out["trim_steps"] if s["fallback"]]
    assert failed, "a PRM failure must be recorded"
    for s in failed:
        assert s["fallback"].startswith("prm_error:")
        assert s["author"] == "weak" and s["draft_score"] is None
    assert out["trim_spend"]["fallbacks"] == len(failed) == out["trim_spend"]["prm_errors"]


def test_prm_failure_raises_when_asked() -> None:
    with pytest.raises(PRMScoreError, match="non-finite"):
        graph(prm=bad_prm(math.nan), on_prm_error="raise").invoke({"question": "q"})
    with pytest.raises(PRMError, match=r"ZeroDivisionError|division"):
        graph(prm=FunctionPRM(lambda q, s: 1 / 0), on_prm_error="raise").invoke({"question": "q"})


def test_validate_scores() -> None:
    assert validate_scores([0, 1], 2) == [0.0, 1.0]
    with pytest.raises(PRMScoreError, match="2 scores for 3"):
        validate_scores([0.1, 0.2], 3)


@pytest.mark.parametrize("use_async", [False, True])
def test_strong_failure_after_retries_keeps_draft(use_async: bool) -> None:
    strong = FakeStepModel(steps=STRONG_STEPS, fail_on_steps=frozenset({1}))
    g = graph(strong_model=strong, strong_retry=FAST_RETRY._replace(max_attempts=3))
    with pytest.warns(TrimWarning, match="strong model failed to rewrite step 1"):
        out = (
            asyncio.run(g.ainvoke({"question": "q"})) if use_async else g.invoke({"question": "q"})
        )
    step = out["trim_steps"][1]
    assert step["author"] == "weak" and step["decision"] == "escalate"
    assert step["fallback"].startswith("strong_error:") and "failed at step 1" in step["fallback"]
    assert strong.calls == [1, 1, 1]
    assert out["trim_spend"]["strong_calls"] == 3 and out["trim_spend"]["strong_tokens"] == 0
    assert out["trim_spend"]["strong_errors"] == 1


def test_strong_retry_succeeds() -> None:
    strong = FakeStepModel(steps=STRONG_STEPS, fail_on_steps=frozenset({1}), failures_left=1)
    out = graph(strong_model=strong, strong_retry=FAST_RETRY).invoke({"question": "q"})
    assert out["trim_steps"][1]["author"] == "strong" and out["trim_steps"][1]["fallback"] is None


def test_strong_returns_nothing_keeps_draft() -> None:
    strong = FakeStepModel(steps=[])
    with pytest.warns(TrimWarning, match="strong_empty"):
        out = graph(strong_model=strong).invoke({"question": "q"})
    step = out["trim_steps"][1]
    assert step["author"] == "weak" and step["fallback"].startswith("strong_empty")


@pytest.mark.parametrize("use_async", [False, True])
def test_timeouts(use_async: bool) -> None:
    slow_strong = FakeStepModel(steps=STRONG_STEPS, hang_on_steps=frozenset({1}), hang_seconds=2)
    g = graph(strong_model=slow_strong, step_timeout=0.2, strong_max_retries=0)
    with pytest.warns(TrimWarning, match="StepTimeoutError"):
        out = (
            asyncio.run(g.ainvoke({"question": "q"})) if use_async else g.invoke({"question": "q"})
        )
    assert out["trim_steps"][1]["fallback"].startswith("strong_error: StepTimeoutError")

    slow_weak = FakeStepModel(steps=WEAK_STEPS, hang_on_steps=frozenset({0}), hang_seconds=2)
    g = graph(draft_model=slow_weak, step_timeout=0.2)
    with pytest.raises(StepTimeoutError, match="timed out"):
        asyncio.run(g.ainvoke({"question": "q"})) if use_async else g.invoke({"question": "q"})


def test_weak_model_failures_are_typed() -> None:
    with pytest.raises(StepGenerationError, match="returned no text") as info:
        graph(draft_model=FakeStepModel(steps=[])).invoke({"question": "q"})
    assert info.value.role == "draft" and isinstance(info.value, TrimError)
    with pytest.raises(StepGenerationError, match="RuntimeError"):
        graph(draft_model=FakeStepModel(steps=WEAK_STEPS, fail_on_steps=frozenset({0}))).invoke(
            {"question": "q"}
        )


class BrokenPolicy:
    name = "broken"

    def needs_score(self, observation: RouteObservation) -> bool:
        return False

    def decide(self, observation: RouteObservation) -> Any:
        return "escalate"


def test_policy_must_return_a_decision() -> None:
    with pytest.raises(TypeError, match="RouteDecision"):
        graph(policy=BrokenPolicy()).invoke({"question": "q"})


class LastTwoPolicy:
    """A custom policy: escalate when the last two scores both fall below 0.5."""

    name = "last-two"

    def needs_score(self, observation: RouteObservation) -> bool:
        return True

    def decide(self, observation: RouteObservation) -> RouteDecision:
        prev: Sequence[float | None] = observation.previous_scores[-1:]
        low = [s for s in [*prev, observation.score] if s is not None and s < 0.5]
        return RouteDecision("escalate" if len(low) == 2 else "continue", f"{len(low)} low")


def test_custom_policy_protocol() -> None:
    prm = KeywordPRM({"WRONG": 0.1, "13 / 1": 0.2})
    out = graph(policy=LastTwoPolicy(), prm=prm).invoke({"question": "q"})
    # step 1 (0.1) is kept: only one low score; step 2 (0.2) follows it: escalate
    assert [s["author"] for s in out["trim_steps"]] == ["weak", "weak", "strong", "weak"]


class _HangingPRM(KeywordPRM):
    """Scores like ``KeywordPRM`` but never answers the second call (issue 13, point 3)."""

    def __init__(self) -> None:
        super().__init__({"WRONG": 0.1}, default=0.9)
        self.n = 0

    def score_batch(self, items: Any) -> list[list[float]]:
        self.n += 1
        if self.n == 2:
            import time

            time.sleep(3)
        return super().score_batch(items)

    async def ascore_batch(self, items: Any) -> list[list[float]]:
        self.n += 1
        if self.n == 2:
            await asyncio.sleep(3)
        return await super().ascore_batch(items)


@pytest.mark.parametrize("use_async", [False, True])
def test_a_prm_that_never_answers_is_bounded_by_step_timeout(use_async: bool) -> None:
    import time

    g = graph(prm=_HangingPRM(), step_timeout=0.3)
    t0 = time.perf_counter()
    out = asyncio.run(g.ainvoke({"question": "q"})) if use_async else g.invoke({"question": "q"})
    assert time.perf_counter() - t0 < 2.5
    step = out["trim_steps"][1]
    assert step["fallback"].startswith("prm_error") and "did not answer" in step["fallback"]
    with pytest.raises(PRMError, match="did not answer"):
        g2 = graph(prm=_HangingPRM(), step_timeout=0.3, on_prm_error="raise")
        asyncio.run(g2.ainvoke({"question": "q"})) if use_async else g2.invoke({"question": "q"})


@pytest.mark.parametrize("use_async", [False, True])
def test_a_timed_out_strong_call_is_charged_its_cap(use_async: bool) -> None:
    slow_strong = FakeStepModel(steps=STRONG_STEPS, hang_on_steps=frozenset({1}), hang_seconds=2)
    g = graph(strong_model=slow_strong, step_timeout=0.2, strong_max_retries=0, budget=10_000)
    out = asyncio.run(g.ainvoke({"question": "q"})) if use_async else g.invoke({"question": "q"})
    spend = out["trim_spend"]
    assert out["trim_steps"][1]["fallback"].startswith("strong_error: StepTimeoutError")
    # the abandoned call may have decoded up to its max_tokens: the budget is charged that
    assert spend["strong_tokens"] >= 512 and spend["strong_tokens_estimated"]


def test_an_over_reporting_strong_model_is_flagged_and_stops_escalating() -> None:
    class OverReporting(FakeStepModel):
        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            result = super()._generate(messages, stop, run_manager, **kw)
            message = result.generations[0].message
            message.usage_metadata = {"input_tokens": 1, "output_tokens": 10**6, "total_tokens": 1}
            return result

    weak = FakeStepModel(steps=["WRONG a", "WRONG b", "WRONG c", r"\boxed{1}"])
    strong = OverReporting(steps=["s a", "s b", "s c", r"\boxed{2}"], model_name="liar")
    out = graph(draft_model=weak, strong_model=strong).invoke({"question": "q"})
    spend = out["trim_spend"]
    assert spend["strong_untrusted"] and spend["usage_flags"] >= 1
    assert spend["strong_tokens"] <= 512  # charged the cap, not the reported million
    authors = [s["author"] for s in out["trim_steps"]]
    assert authors.count("strong") == 1
    assert any("did not honour max_tokens" in s["reason"] for s in out["trim_steps"][1:])
