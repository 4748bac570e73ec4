"""Scoring a draft: one traced PRM call (``trim.prm``) under the graph's PRM failure policy.

The PRM sees the accepted steps and the draft and answers one score per step.  A PRM that
raises, times out or answers NaN, out-of-range or the wrong number of scores either raises
:class:`~langchain_trim.errors.PRMError` or leaves the draft unscored, counted and warned
about (:mod:`langchain_trim.fallback`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._runnable import RunnableCallable

from langchain_trim.errors import PRMError
from langchain_trim.fallback import FailureMode, fall_back
from langchain_trim.prm.base import ProcessRewardModel, StepObserver, validate_scores
from langchain_trim.state import PendingDraft, StepRecord, TrimSpend

Scores = list[float] | BaseException
"""A PRM's answer, or why there is none."""


def _call_with_timeout(fn: Callable[[], Any], timeout: float | None) -> Any:
    """Run ``fn`` and give up after ``timeout`` seconds (the caller's context kept)."""
    if timeout is None:
        return fn()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(contextvars.copy_context().run, fn).result(timeout=timeout)
    except concurrent.futures.TimeoutError as exc:
        raise PRMError(f"PRM did not answer within {timeout}s") from exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@dataclass(eq=False)
class DraftScorer:
    """The graph's PRM, called as a traced runnable with a timeout and a failure policy."""

    prm: ProcessRewardModel | None
    on_error: FailureMode
    timeout: float | None = None

    def __post_init__(self) -> None:
        # RunnableCallable, not RunnableLambda: same traced runs, but it inspects the
        # function signature once instead of on every call (~0.2 ms/step of router time).
        self.runnable = RunnableCallable(self._call, self._acall, name="trim.prm")

    def _call(self, inputs: dict[str, Any]) -> list[float]:
        assert self.prm is not None
        return self.prm.score(inputs["question"], inputs["steps"])

    async def _acall(self, inputs: dict[str, Any]) -> list[float]:
        assert self.prm is not None
        return await self.prm.ascore(inputs["question"], inputs["steps"])

    def observe(self, question: str, text: str, logprobs: Sequence[float] | None) -> None:
        """Show a step to a PRM that reads the model's own signals (a :class:`StepObserver`)."""
        if isinstance(self.prm, StepObserver):
            self.prm.observe_step(question, text, logprobs)

    def score(self, question: str, steps: list[str], config: RunnableConfig) -> Scores:
        inputs = {"question": question, "steps": steps}
        try:
            result: Scores = _call_with_timeout(
                lambda: self.runnable.invoke(inputs, config), self.timeout
            )
        except Exception as exc:
            result = exc
        return result

    async def ascore(self, question: str, steps: list[str], config: RunnableConfig) -> Scores:
        inputs = {"question": question, "steps": steps}
        try:
            call = self.runnable.ainvoke(inputs, config)
            result: Scores = await (
                call if self.timeout is None else asyncio.wait_for(call, self.timeout)
            )
        except asyncio.TimeoutError as exc:
            result = PRMError(f"PRM did not answer within {self.timeout}s")
            result.__cause__ = exc
        except Exception as exc:
            result = exc
        return result

    def apply(
        self,
        draft: PendingDraft,
        steps: Sequence[StepRecord],
        spend: TrimSpend,
        scores: Scores,
    ) -> dict[str, Any]:
        """The state update of a scored (or, after a failure, unscored) draft."""
        draft = PendingDraft(**draft)
        spend["prm_calls"] += 1
        update: dict[str, Any] = {"trim_spend": spend}
        if isinstance(scores, BaseException):
            error: BaseException | None = scores
        else:
            try:
                scores = validate_scores(scores, len(steps) + 1)
                error = None
            except PRMError as exc:
                error = exc
        if error is not None:
            if self.on_error == "raise":
                if isinstance(error, PRMError):
                    raise error
                raise PRMError(f"PRM failed at step {draft['index']}: {error}") from error
            draft["score"] = None
            draft["fallback"] = f"prm_error: {type(error).__name__}: {error}"
            fall_back(
                spend,
                "prm_errors",
                self.on_error,
                f"PRM failed at step {draft['index']} ({type(error).__name__}: {error}); "
                "the draft is routed unscored",
            )
        else:
            assert isinstance(scores, list)
            draft["score"] = scores[-1]
            # Fill in scores of accepted steps that had none (strong rewrites): the whole
            # trajectory goes back, since an update from step 0 replaces (merge_steps).
            if any(s["score"] is None for s in steps):
                update["trim_steps"] = [
                    StepRecord(**{**s, "score": scores[i]}) if s["score"] is None else s
                    for i, s in enumerate(steps)
                ]
        update["trim_draft"] = draft
        return update


__all__ = ["DraftScorer"]
