"""The process-reward-model seam.

A PRM reads a question and the steps of a (partial) solution and returns, for every
step, the probability that the step is correct.  The graph only needs the score of the
newest step, but returning all of them lets backends that score every separator in one
forward pass (Qwen2.5-Math-PRM, probes) also fill in the scores of strong steps for free.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from langchain_trim.errors import PRMScoreError

PRMItem = tuple[str, Sequence[str]]
"""One scoring request: ``(question, steps)``."""


@runtime_checkable
class ProcessRewardModel(Protocol):
    """Scores every step of a partial solution; the last score is for the newest step."""

    def score(self, question: str, steps: Sequence[str]) -> list[float]:
        """One score in [0, 1] per step, in order."""
        ...

    async def ascore(self, question: str, steps: Sequence[str]) -> list[float]:
        """Async :meth:`score`."""
        ...

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        """Score many trajectories at once; results in input order."""
        ...

    async def ascore_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        """Async :meth:`score_batch`."""
        ...


@runtime_checkable
class StepObserver(Protocol):
    """Optional PRM hook: see every generated step with its token logprobs.

    The graph calls it for each weak draft (before scoring) and each strong step, so
    scorers such as :class:`~langchain_trim.prm.confidence.SelfConfidencePRM` score for
    free from what the generator already computed.
    """

    def observe_step(self, question: str, text: str, logprobs: Sequence[float] | None) -> None: ...


def validate_scores(scores: Sequence[float], n_steps: int, *, source: str = "PRM") -> list[float]:
    """Check a PRM answer: ``n_steps`` finite floats in [0, 1].  Raise :class:`PRMScoreError`.

    >>> validate_scores([0.5, 1], 2)
    [0.5, 1.0]
    >>> validate_scores([float("nan")], 1)
    Traceback (most recent call last):
    ...
    langchain_trim.errors.PRMScoreError: PRM returned a non-finite score nan for step 0
    """
    if len(scores) != n_steps:
        raise PRMScoreError(f"{source} returned {len(scores)} scores for {n_steps} steps")
    out: list[float] = []
    for i, raw in enumerate(scores):
        try:
            value = float(raw)
        except (TypeError, ValueError) as exc:
            raise PRMScoreError(
                f"{source} returned a non-numeric score {raw!r} for step {i}"
            ) from exc
        if not math.isfinite(value):
            raise PRMScoreError(f"{source} returned a non-finite score {value} for step {i}")
        if not 0.0 <= value <= 1.0:
            raise PRMScoreError(f"{source} returned score {value} outside [0, 1] for step {i}")
        out.append(value)
    return out


class BaseProcessRewardModel:
    """Convenience base: implement :meth:`score_batch`; the rest is derived.

    Subclasses with a native async or batched path override the matching method.  The
    default async methods run the sync batch in a worker thread so the event loop stays
    free.
    """

    name: str = "prm"

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        raise NotImplementedError

    def score(self, question: str, steps: Sequence[str]) -> list[float]:
        return self.score_batch([(question, steps)])[0]

    async def ascore(self, question: str, steps: Sequence[str]) -> list[float]:
        return (await self.ascore_batch([(question, steps)]))[0]

    async def ascore_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        return await asyncio.to_thread(self.score_batch, items)


class FunctionPRM(BaseProcessRewardModel):
    """Wrap a plain function ``fn(question, steps) -> scores`` as a PRM.

    Handy for heuristics and tests.

    >>> prm = FunctionPRM(lambda q, steps: [0.9 for _ in steps])
    >>> prm.score("1+1?", ["1+1=2", r"\\boxed{2}"])
    [0.9, 0.9]
    """

    def __init__(
        self, fn: Callable[[str, Sequence[str]], Sequence[float]], *, name: str = "function"
    ) -> None:
        self._fn = fn
        self.name = name

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        return [list(self._fn(q, steps)) for q, steps in items]


__all__ = [
    "BaseProcessRewardModel",
    "FunctionPRM",
    "PRMItem",
    "ProcessRewardModel",
    "validate_scores",
]
