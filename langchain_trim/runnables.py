"""LCEL glue and the functional twin of the graph.

``prompt | trim_input | graph | trim_answer`` chains a TRIM graph like any runnable;
:func:`solve` / :func:`asolve` serve scripts that do not use graphs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableLambda

from langchain_trim.errors import InvalidInputError
from langchain_trim.state import StepRecord, Termination, TrimSpend, new_spend


def _to_input(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"question": value}
    if isinstance(value, PromptValue):
        return {"messages": value.to_messages()}
    if isinstance(value, BaseMessage):
        return {"messages": [value]}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and value and all(isinstance(m, BaseMessage) for m in value):
        return {"messages": list(value)}
    raise InvalidInputError(
        f"cannot turn {type(value).__name__} into TRIM input; pass a question string, a "
        "prompt value, messages, or a dict with 'question'/'messages'"
    )


trim_input: RunnableLambda[Any, dict[str, Any]] = RunnableLambda(_to_input, name="trim_input")
"""Coerce a string, prompt value, message list or dict into the graph's input."""


def _to_answer(state: Mapping[str, Any]) -> str | None:
    return state.get("trim_final_answer")


trim_answer: RunnableLambda[Mapping[str, Any], str | None] = RunnableLambda(
    _to_answer, name="trim_answer"
)
"""Pick the final answer (content of the last ``\\boxed{}``) out of the graph output."""


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


__all__ = ["TrimResult", "asolve", "solve", "trim_answer", "trim_input"]
