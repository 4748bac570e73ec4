"""The functional twin of the graph: :func:`solve` / :func:`asolve` answer one question with
TRIM for scripts that do not use graphs, and return a :class:`TrimResult`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_trim.errors import InvalidInputError
from langchain_trim.state import StepRecord, Termination, TrimSpend, new_spend


@dataclass
class TrimResult:
    """The outcome of one TRIM solve."""

    question: str
    final_answer: str | None
    solution: str
    termination: Termination | None
    steps: list[StepRecord] = field(default_factory=list)
    spend: TrimSpend = field(default_factory=new_spend)

    @classmethod
    def from_state(cls, state: Mapping[str, Any], question: str | None = None) -> TrimResult:
        """From a TRIM graph's output (which does not echo the question back)."""
        return cls(
            question=question if question is not None else state.get("question", ""),
            final_answer=state.get("trim_final_answer"),
            solution=state.get("trim_solution") or "",
            termination=state.get("trim_termination"),
            steps=list(state.get("trim_steps") or []),
            spend=state.get("trim_spend") or new_spend(),
        )

    @property
    def escalated_steps(self) -> int:
        return sum(s["author"] == "strong" for s in self.steps)


def _graph(kwargs: dict[str, Any]) -> Any:
    from langchain_trim.graph import create_trim_graph

    missing = [k for k in ("draft_model", "strong_model", "prm", "policy") if k not in kwargs]
    if missing:
        raise InvalidInputError(
            f"solve() needs {', '.join(missing)} (create_trim_graph's arguments; prm may be None)"
        )
    return create_trim_graph(
        kwargs.pop("draft_model"),
        kwargs.pop("strong_model"),
        kwargs.pop("prm"),
        kwargs.pop("policy"),
        **kwargs,
    ).compile(name="trim")


def solve(question: str, *, budget: int | None = None, **graph_kwargs: Any) -> TrimResult:
    """Solve one question with TRIM, no graph plumbing needed.

    ``graph_kwargs`` are :func:`~langchain_trim.create_trim_graph`'s arguments
    (``draft_model``, ``strong_model``, ``prm``, ``policy``, ...).

    >>> from langchain_trim.policies import ThresholdPolicy
    >>> from langchain_trim.testing import FakeStepModel
    >>> r = solve("1+1?", draft_model=FakeStepModel(steps=[r"\\boxed{2}"]),
    ...           strong_model=FakeStepModel(steps=[r"\\boxed{2}"]), prm=None,
    ...           policy=ThresholdPolicy(0))
    >>> r.final_answer, r.spend["strong_tokens"]
    ('2', 0)
    """
    graph = _graph(dict(graph_kwargs))
    state = graph.invoke({"question": question, "trim_budget": budget})
    return TrimResult.from_state(state, question)


async def asolve(question: str, *, budget: int | None = None, **graph_kwargs: Any) -> TrimResult:
    """Async :func:`solve`."""
    graph = _graph(dict(graph_kwargs))
    state = await graph.ainvoke({"question": question, "trim_budget": budget})
    return TrimResult.from_state(state, question)


__all__ = ["TrimResult", "asolve", "solve"]
