"""LLM-as-judge and self-confidence PRMs on fake models (real-model runs are slow tests)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from langchain_trim import PRMScoreError, ThresholdPolicy, create_trim_graph
from langchain_trim.prm import ChatJudgePRM, SelfConfidencePRM
from langchain_trim.prm.confidence import confidence
from langchain_trim.testing import FakeStepModel

from .conftest import STRONG_STEPS, WEAK_STEPS


class FakeJudge(BaseChatModel):
    """Says Yes with probability p_yes unless the new step contains 'WRONG'."""

    p_yes: float = 0.8
    seen: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fake-judge"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.seen.append(kw)
        new_step = str(messages[-1].content).split("New step:\n", 1)[1]
        p = 0.1 if "WRONG" in new_step.split("\n\nIs the new step")[0] else self.p_yes
        top = [
            {"token": "Yes", "logprob": math.log(p * 0.9)},
            {"token": " yes", "logprob": math.log(p * 0.1)},
            {"token": "No", "logprob": math.log(1 - p)},
        ]
        meta = {
            "logprobs": {
                "content": [{"token": "Yes", "logprob": top[0]["logprob"], "top_logprobs": top}]
            }
        }
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage("Yes", response_metadata=meta))]
        )


def test_judge_scores_each_step_once_and_in_order() -> None:
    judge = FakeJudge(seen=[])
    prm = ChatJudgePRM(judge)
    scores = prm.score("q", WEAK_STEPS[:3])
    assert scores == pytest.approx([0.8, 0.1, 0.8])
    assert prm.calls == 3
    assert judge.seen[0]["max_tokens"] == 1 and judge.seen[0]["logprobs"] is True
    prm.score("q", WEAK_STEPS[:4])  # the first three are memoised
    assert prm.calls == 4
    batch = asyncio.run(prm.ascore_batch([("q2", WEAK_STEPS[:2]), ("q", WEAK_STEPS[:1])]))
    assert batch == [pytest.approx([0.8, 0.1]), pytest.approx([0.8])]


def test_judge_without_yes_or_no_is_a_typed_error() -> None:
    class Mute(FakeJudge):
        def _generate(
            self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            meta = {
                "logprobs": {
                    "content": [
                        {
                            "token": "Maybe",
                            "logprob": -0.1,
                            "top_logprobs": [{"token": "Maybe", "logprob": -0.1}],
                        }
                    ]
                }
            }
            return ChatResult(
                generations=[ChatGeneration(message=AIMessage("Maybe", response_metadata=meta))]
            )

    with pytest.raises(PRMScoreError, match="neither Yes nor No"):
        ChatJudgePRM(Mute(seen=[])).score("q", ["a"])
    with pytest.raises(PRMScoreError, match="no logprobs"):
        ChatJudgePRM(FakeStepModel(steps=["x"])).score("q", ["a"])


def test_judge_drives_the_graph() -> None:
    graph = create_trim_graph(
        FakeStepModel(steps=WEAK_STEPS),
        FakeStepModel(steps=STRONG_STEPS),
        ChatJudgePRM(FakeJudge(seen=[])),
        ThresholdPolicy(0.5),
    ).compile()
    out = graph.invoke({"question": "q"})
    assert [s["author"] for s in out["trim_steps"]] == ["weak", "strong", "weak", "weak"]


def test_confidence_is_free_and_separates() -> None:
    # the weak model is unsure of the words of its wrong step
    weak = FakeStepModel(
        steps=WEAK_STEPS, token_logprob=lambda w: -3.0 if w in ("13", "WRONG") else -0.05
    )
    strong = FakeStepModel(steps=STRONG_STEPS, token_logprob=lambda w: -0.01)
    prm = SelfConfidencePRM()
    out = (
        create_trim_graph(weak, strong, prm, ThresholdPolicy(0.6))
        .compile()
        .invoke({"question": "q"})
    )
    steps = out["trim_steps"]
    assert [s["author"] for s in steps] == ["weak", "strong", "weak", "weak"]
    assert steps[0]["draft_score"] == pytest.approx(math.exp(-0.05))
    assert steps[1]["score"] == pytest.approx(math.exp(-0.01))  # strong step observed too
    assert out["trim_spend"]["prm_calls"] == 4


def test_confidence_without_logprobs_falls_back_to_unscored() -> None:
    out = (
        create_trim_graph(
            FakeStepModel(steps=WEAK_STEPS),
            FakeStepModel(steps=STRONG_STEPS),
            SelfConfidencePRM(),
            ThresholdPolicy(0.5),
        )
        .compile()
        .invoke({"question": "q"})
    )
    assert all(
        s["fallback"] and "no logprobs were observed" in s["fallback"] for s in out["trim_steps"]
    )
    assert all(s["author"] == "weak" for s in out["trim_steps"])


def test_confidence_reductions() -> None:
    assert confidence([-0.1, -0.3]) == pytest.approx(math.exp(-0.2))
    assert confidence([-0.1, -2.0], "min") == pytest.approx(math.exp(-2.0))
    with pytest.raises(PRMScoreError):
        confidence([])
    with pytest.raises(ValueError):
        SelfConfidencePRM(reduce="max")  # type: ignore[arg-type]
