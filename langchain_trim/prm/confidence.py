"""Self-confidence PRM: score a step by the drafting model's own token probabilities.

Free: the log-probabilities come with the draft (the graph hands every generated step to
:meth:`SelfConfidencePRM.observe_step`), so no model is called to score.  The score is
the geometric-mean token probability of the step (``exp(mean logprob)``), or the least
token probability with ``reduce="min"``.  A step whose log-probabilities were never
observed gets a :class:`~langchain_trim.errors.PRMScoreError`, which the graph records
as an unscored step.  An earlier step that was never observed (a strong step written
before a process restart) gets ``missing_score`` (default 1.0: treated as correct), so
resuming a checkpointed run keeps working.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

from langchain_trim.errors import PRMScoreError
from langchain_trim.prm.base import BaseProcessRewardModel, PRMItem


def confidence(logprobs: Sequence[float], reduce: Literal["mean", "min"] = "mean") -> float:
    """Map token log-probabilities to [0, 1].

    >>> round(confidence([-0.1, -0.3]), 4)
    0.8187
    >>> round(confidence([-0.1, -2.0], "min"), 4)
    0.1353
    """
    if not logprobs:
        raise PRMScoreError("no token logprobs to score")
    value = min(logprobs) if reduce == "min" else sum(logprobs) / len(logprobs)
    return min(1.0, max(0.0, math.exp(value)))


class SelfConfidencePRM(BaseProcessRewardModel):
    """Scores steps from the log-probabilities their writer reported (no extra call)."""

    def __init__(
        self,
        *,
        reduce: Literal["mean", "min"] = "mean",
        missing_score: float = 1.0,
        cache_size: int = 16384,
    ) -> None:
        if reduce not in ("mean", "min"):
            raise ValueError(f"reduce must be 'mean' or 'min', got {reduce!r}")
        if not 0.0 <= missing_score <= 1.0:
            raise ValueError(f"missing_score must be in [0, 1], got {missing_score}")
        self.missing_score = missing_score
        self.reduce: Literal["mean", "min"] = reduce
        self.name = f"confidence:{reduce}"
        self._scores: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._cache_size = cache_size

    def observe_step(self, question: str, text: str, logprobs: Sequence[float] | None) -> None:
        """Remember the confidence of a generated step (called by the graph)."""
        if not logprobs:
            return
        key = (question, text.strip())
        self._scores[key] = confidence(logprobs, self.reduce)
        self._scores.move_to_end(key)
        while len(self._scores) > self._cache_size:
            self._scores.popitem(last=False)

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        out: list[list[float]] = []
        for question, steps in items:
            row = []
            for i, step in enumerate(steps):
                key = (question, step.strip())
                if key not in self._scores and i < len(steps) - 1:
                    row.append(self.missing_score)
                    continue
                if key not in self._scores:
                    raise PRMScoreError(
                        f"no logprobs were observed for step {i}; SelfConfidencePRM needs a "
                        "draft model that reports token logprobs (e.g. the embedded models)"
                    )
                row.append(self._scores[key])
            out.append(row)
        return out


__all__ = ["SelfConfidencePRM", "confidence"]
