"""Deterministic fakes for tests, notebooks and benchmarks: no network, no weights.

:class:`FakeStepModel` is a real ``BaseChatModel`` that answers step requests from a
script, reports ``usage_metadata`` and ``model_name`` like a real provider, honours
``stop`` and ``max_tokens``, and can be told to fail, stall or go silent.  Use it to test
code built on TRIM graphs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from langchain_trim.generation import parse_prefix
from langchain_trim.prm.base import BaseProcessRewardModel, PRMItem
from langchain_trim.step_format import parse_request

Responder = Callable[[str, Sequence[str]], str | None]
"""``responder(question, accepted_steps) -> next step`` (``None`` = end of text)."""


class FakeStepModel(BaseChatModel):
    """A scripted chat model that writes solution steps.

    It reads the accepted steps back from the prompt (prefill or instruct format) and
    answers with ``steps[len(accepted)]``, or with ``responder(question, accepted)``.
    Tokens are whitespace-separated words.  Past the end of the script it returns an
    empty message with ``finish_reason="eos"``.

    >>> m = FakeStepModel(steps=["a = 1", "b = 2"])
    >>> from langchain_trim.generation import build_messages
    >>> m.invoke(build_messages("q", "a = 1", 1, mode="prefill")).content
    'b = 2'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    steps: Sequence[str] | Mapping[str, Sequence[str]] = Field(default_factory=list)
    """The script: one list for every question, or a mapping question → list."""
    responder: Responder | None = None
    solution: str | None = None
    """When set, the model continues this fixed solution text from wherever the request's
    solution-so-far ends (so a step cut by ``max_tokens`` is continued exactly)."""
    model_name: str = "fake-step-model"
    supports_prefill: bool = True
    report_usage: bool = True
    latency: float = 0.0
    """Seconds slept per call (``asyncio.sleep`` on the async path)."""
    fail_on_steps: frozenset[int] = frozenset()
    """Step indices at which the call raises ``RuntimeError``."""
    failures_left: int = -1
    """How many more calls may fail (``-1``: every call at ``fail_on_steps``)."""
    hang_on_steps: frozenset[int] = frozenset()
    """Step indices at which the call sleeps for ``hang_seconds`` (to test timeouts)."""
    hang_seconds: float = 5.0
    token_logprob: Callable[[str], float] | None = None
    """When set, report OpenAI-style token logprobs: ``token_logprob(word)`` per word."""
    ignore_max_tokens: bool = False
    """Write the whole step whatever ``max_tokens`` says (and report it), as a provider
    that does not honour the cap would."""

    _calls: list[int] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fake-step-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        # distinct models must not share LangChain cache entries
        return {"model_name": self.model_name, "steps": repr(self.steps)}

    @property
    def calls(self) -> list[int]:
        """Step index of every call made so far, in order."""
        return self._calls

    def _script(self, question: str, accepted: Sequence[str]) -> str | None:
        if self.responder is not None:
            return self.responder(question, accepted)
        steps = self.steps
        if isinstance(steps, Mapping):
            steps = steps.get(question, [])
        i = len(accepted)
        return steps[i] if i < len(steps) else None

    @staticmethod
    def _continues(messages: list[BaseMessage], delimiter: str = "\n\n") -> bool:
        """Whether the request asks to continue a step cut by the token cap."""
        if messages and isinstance(messages[-1], HumanMessage):
            return "was cut off: continue it" in str(messages[-1].content)
        so_far = parse_request(messages)[1]
        return bool(so_far) and not so_far.endswith(delimiter)

    def _answer(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[ChatResult, float]:
        delimiter = stop[0] if stop else "\n\n"  # the caller's step delimiter
        question, accepted = parse_prefix(messages, delimiter)
        index = len(accepted)
        self._calls.append(index)
        delay = self.latency
        if index in self.hang_on_steps:
            delay = max(delay, self.hang_seconds)
        if index in self.fail_on_steps and self.failures_left != 0:
            if self.failures_left > 0:
                self.failures_left -= 1
            raise RuntimeError(f"{self.model_name} failed at step {index}")
        text: str | None
        if self.solution is not None:
            so_far = parse_request(messages)[1]
            rest = self.solution[len(so_far) :] if self.solution.startswith(so_far) else ""
            text = rest or None
        elif self._continues(messages, delimiter) and accepted:
            # Continue the step that the token cap cut, as a real model would.
            full = self._script(question, accepted[:-1]) or ""
            cut = accepted[-1]
            text = full[len(cut) :] if full.startswith(cut) and len(full) > len(cut) else None
        else:
            text = self._script(question, accepted)
        finish = "stop"
        if text is None:
            text, finish = "", "eos"
        for s in stop or []:
            if s in text:
                text = text.split(s, 1)[0]
        words = text.split(" ") if text else []
        max_tokens = kwargs.get("max_tokens")
        if isinstance(max_tokens, int) and len(words) > max_tokens and not self.ignore_max_tokens:
            words, finish = words[:max_tokens], "length"
            text = " ".join(words)
        meta: dict[str, Any] = {"model_name": self.model_name, "finish_reason": finish}
        if self.token_logprob is not None:
            meta["logprobs"] = {
                "content": [{"token": w, "logprob": self.token_logprob(w)} for w in words]
            }
        message = AIMessage(content=text, response_metadata=meta)
        if self.report_usage:
            message.usage_metadata = {
                "input_tokens": sum(len(str(m.content).split()) for m in messages),
                "output_tokens": len(words),
                "total_tokens": len(words) + sum(len(str(m.content).split()) for m in messages),
            }
        return ChatResult(generations=[ChatGeneration(message=message)]), delay

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result, delay = self._answer(messages, stop, kwargs)
        if delay:
            time.sleep(delay)
        return result

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result, delay = self._answer(messages, stop, kwargs)
        if delay:
            await asyncio.sleep(delay)
        return result


class KeywordPRM(BaseProcessRewardModel):
    """A PRM that scores a step by the first keyword it contains (``default`` otherwise).

    >>> KeywordPRM({"wrong": 0.1}, default=0.9).score("q", ["fine", "this is wrong"])
    [0.9, 0.1]
    """

    def __init__(
        self, scores: Mapping[str, float], *, default: float = 0.9, latency: float = 0.0
    ) -> None:
        self.scores = dict(scores)
        self.default = default
        self.latency = latency
        self.name = "keyword"
        self.calls: list[int] = []
        """Number of steps of every scoring request, in order."""

    def _one(self, steps: Sequence[str]) -> list[float]:
        out = []
        for step in steps:
            value = self.default
            for key, score in self.scores.items():
                if key in step:
                    value = score
                    break
            out.append(value)
        return out

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        self.calls.extend(len(steps) for _, steps in items)
        if self.latency:
            time.sleep(self.latency)
        return [self._one(steps) for _, steps in items]

    async def ascore_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        self.calls.extend(len(steps) for _, steps in items)
        if self.latency:
            await asyncio.sleep(self.latency)
        return [self._one(steps) for _, steps in items]


__all__ = ["FakeStepModel", "KeywordPRM", "Responder"]
