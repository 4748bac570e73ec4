"""A reference-solution "oracle" PRM for the ablation of issue 12 (benchmark-only).

It knows each GSM8K problem's worked reference solution and scores a step 0 when the
step writes a false equation or states a result that is none of the question's or the
reference's numbers (:func:`langchain_trim.lab.weak_labels.contradicts`, the rule of
``weak_first_error`` applied step by step), else 1.  It separates "the PRM cannot tell"
from "step routing cannot help": TRIM-Thr with this scorer is what a near-perfect number
checker buys.  It never ships in the package: it needs the answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from langchain_trim.lab.weak_labels import ALWAYS_ALLOWED, contradicts, reference_values
from langchain_trim.prm.base import BaseProcessRewardModel, PRMItem


class ReferencePRM(BaseProcessRewardModel):
    """Scores steps against each question's reference solution (1 consistent, 0 not)."""

    def __init__(self, references: Mapping[str, str], *, unknown: float = 0.5) -> None:
        self.values = {
            q: reference_values(q, ref) | set(ALWAYS_ALLOWED) for q, ref in references.items()
        }
        self.unknown = unknown
        self.name = "oracle:reference"

    def _score(self, question: str, step: str) -> float:
        values = self.values.get(question.strip())
        if values is None:
            return self.unknown
        return 0.0 if contradicts(step, values) else 1.0

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        return [[self._score(q, s) for s in steps] for q, steps in items]


__all__ = ["ReferencePRM"]
