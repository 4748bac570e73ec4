"""LLM-as-judge PRM: any chat model with token log-probabilities scores the newest step.

The judge is asked "is the new step correct? Yes or No" and the score is
``P(Yes) / (P(Yes) + P(No))`` read from the first output token's ``top_logprobs``, so
users without a trained PRM still get TRIM.  Each (question, prefix) is judged once and
memoised, so re-scoring a trajectory costs one call per new step.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable

from langchain_trim.errors import PRMScoreError
from langchain_trim.models import ChatModelLike, model_display_name, resolve_chat_model
from langchain_trim.prm.base import BaseProcessRewardModel, PRMItem

JUDGE_SYSTEM = (
    "You are a meticulous math teacher checking a student's solution one step at a time. "
    "Judge only the NEW step: is its reasoning and arithmetic correct, given the question "
    "and the previous steps? Answer with a single word: Yes or No."
)
JUDGE_USER = (
    "Question: {question}\n\nPrevious steps:\n{previous}\n\nNew step:\n{step}\n\n"
    "Is the new step correct? Answer Yes or No."
)


def judge_messages(question: str, steps: Sequence[str]) -> list[BaseMessage]:
    """The judge prompt for the last step of ``steps``."""
    previous = "\n\n".join(steps[:-1]) if len(steps) > 1 else "(none)"
    return [
        SystemMessage(JUDGE_SYSTEM),
        HumanMessage(JUDGE_USER.format(question=question, previous=previous, step=steps[-1])),
    ]


def yes_probability(message: BaseMessage, yes: Sequence[str], no: Sequence[str]) -> float:
    """``P(yes) / (P(yes) + P(no))`` from the first token's top log-probabilities."""
    logprobs = (message.response_metadata or {}).get("logprobs") or {}
    content = logprobs.get("content") if isinstance(logprobs, dict) else logprobs
    if not content:
        raise PRMScoreError("judge response carries no logprobs (ask the model for logprobs)")
    first = content[0]
    candidates = list(first.get("top_logprobs") or []) or [first]
    p_yes = p_no = 0.0
    for cand in candidates:
        word = str(cand.get("token", "")).strip().lower()
        prob = math.exp(float(cand["logprob"]))
        if word in yes:
            p_yes += prob
        elif word in no:
            p_no += prob
    if p_yes + p_no <= 0.0:
        raise PRMScoreError(
            f"judge's top tokens {[c.get('token') for c in candidates]} contain neither Yes nor No"
        )
    return p_yes / (p_yes + p_no)


class ChatJudgePRM(BaseProcessRewardModel):
    """A PRM made of a chat model asked whether each step is correct.

    Args:
        model: chat model (instance or init string) that returns token logprobs:
            ``ChatOpenAI`` (``logprobs=True`` is sent), the embedded llama.cpp models, or
            any model filling ``response_metadata["logprobs"]["content"]``.
        top_logprobs: how many alternatives of the first token to read.
        max_concurrency: parallel judge calls in :meth:`ascore_batch`.
        cache_size: memoised (question, prefix) judgements.

    >>> from langchain_core.messages import AIMessage
    >>> msg = AIMessage("Yes", response_metadata={"logprobs": {"content": [{"token": "Yes",
    ...     "logprob": -0.1, "top_logprobs": [{"token": "Yes", "logprob": -0.1},
    ...     {"token": "No", "logprob": -2.4}]}]}})
    >>> round(yes_probability(msg, ("yes",), ("no",)), 3)
    0.909
    """

    def __init__(
        self,
        model: ChatModelLike,
        *,
        top_logprobs: int = 10,
        max_concurrency: int = 4,
        cache_size: int = 4096,
        yes_tokens: Sequence[str] = ("yes",),
        no_tokens: Sequence[str] = ("no",),
        run_name: str = "trim.judge",
    ) -> None:
        self.model: Runnable[Any, Any] = resolve_chat_model(model, role="judge")
        self.name = f"judge:{model_display_name(self.model)}"
        self.top_logprobs = top_logprobs
        self.max_concurrency = max_concurrency
        self.yes = tuple(t.lower() for t in yes_tokens)
        self.no = tuple(t.lower() for t in no_tokens)
        self.run_name = run_name
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], float] = OrderedDict()
        self._cache_size = cache_size
        self.calls = 0

    def _kwargs(self) -> dict[str, Any]:
        return {"max_tokens": 1, "logprobs": True, "top_logprobs": self.top_logprobs}

    def _remember(self, key: tuple[str, tuple[str, ...]], value: float) -> float:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value

    def _judge(self, question: str, prefix: tuple[str, ...]) -> float:
        key = (question, prefix)
        if key in self._cache:
            return self._cache[key]
        self.calls += 1
        message = self.model.invoke(
            judge_messages(question, prefix), {"run_name": self.run_name}, **self._kwargs()
        )
        return self._remember(key, yes_probability(message, self.yes, self.no))

    async def _ajudge(
        self, question: str, prefix: tuple[str, ...], sem: asyncio.Semaphore
    ) -> float:
        key = (question, prefix)
        if key in self._cache:
            return self._cache[key]
        async with sem:
            self.calls += 1
            message = await self.model.ainvoke(
                judge_messages(question, prefix), {"run_name": self.run_name}, **self._kwargs()
            )
        return self._remember(key, yes_probability(message, self.yes, self.no))

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        return [
            [self._judge(q, tuple(steps[: i + 1])) for i in range(len(steps))] for q, steps in items
        ]

    async def ascore_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        sem = asyncio.Semaphore(self.max_concurrency)

        async def one(q: str, steps: Sequence[str]) -> list[float]:
            return list(
                await asyncio.gather(
                    *(self._ajudge(q, tuple(steps[: i + 1]), sem) for i in range(len(steps)))
                )
            )

        return list(await asyncio.gather(*(one(q, s) for q, s in items)))


__all__ = ["JUDGE_SYSTEM", "JUDGE_USER", "ChatJudgePRM", "judge_messages", "yes_probability"]
