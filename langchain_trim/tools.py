"""``create_trim_tool``: TRIM as a LangChain tool that any agent can call.

The tool takes one argument, ``question``, solves it with a TRIM graph (sync or async)
and answers with the final answer and a one-line spend summary; the full outcome (steps,
spend, solution) rides along as the tool message's ``artifact``::

    from langchain.agents import create_agent

    tool = create_trim_tool(create_trim_graph(weak, strong, prm, ThresholdPolicy(0.5)))
    agent = create_agent(model, tools=[tool])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from pydantic import BaseModel, Field

from langchain_trim.errors import InvalidInputError

DEFAULT_NAME = "solve_with_trim"
DEFAULT_DESCRIPTION = (
    "Solve a math or multi-step reasoning question step by step. A cheap model drafts "
    "each step and an expensive model rewrites only the steps judged wrong. Pass the whole "
    "question, self-contained. Returns the final answer and what it cost."
)


class TrimToolInput(BaseModel):
    """The tool's arguments."""

    question: str = Field(description="The question to solve, with every number it needs.")


def summarize(state: Mapping[str, Any]) -> str:
    """One line on how a TRIM run went: steps, escalations, strong tokens, termination.

    >>> print(summarize({"trim_steps": [{"author": "weak"}, {"author": "strong"}],
    ...                  "trim_spend": {"strong_tokens": 12, "budget": 400},
    ...                  "trim_termination": "final_answer"}))  # doctest: +NORMALIZE_WHITESPACE
    TRIM: 2 steps, 1 rewritten by the strong model, 12 strong tokens of a 400 budget, ended by
    final_answer.
    """
    steps = state.get("trim_steps") or []
    spend = state.get("trim_spend") or {}
    strong = sum(s.get("author") == "strong" for s in steps)
    budget = spend.get("budget")
    of = f" of a {budget} budget" if budget is not None else ""
    notes = []
    if state.get("trim_overspent"):
        notes.append("the strong model overspent the budget")
    failures = spend.get("strong_errors", 0) + spend.get("prm_errors", 0)
    if failures:
        notes.append(f"{failures} model/PRM failures kept drafts")
    tail = f" Note: {'; '.join(notes)}." if notes else ""
    return (
        f"TRIM: {len(steps)} steps, {strong} rewritten by the strong model, "
        f"{spend.get('strong_tokens', 0)} strong tokens{of}, ended by "
        f"{state.get('trim_termination')}.{tail}"
    )


def _content_and_artifact(
    state: Mapping[str, Any], include_solution: bool
) -> tuple[str, dict[str, Any]]:
    answer = state.get("trim_final_answer")
    lines = [f"Answer: {answer}" if answer is not None else "No boxed final answer."]
    if include_solution or answer is None:
        lines.append(f"Solution:\n{state.get('trim_solution') or ''}")
    lines.append(summarize(state))
    artifact = {
        "final_answer": answer,
        "solution": state.get("trim_solution"),
        "termination": state.get("trim_termination"),
        "overspent": bool(state.get("trim_overspent")),
        "spend": dict(state.get("trim_spend") or {}),
        "steps": list(state.get("trim_steps") or []),
    }
    return "\n".join(lines), artifact


def create_trim_tool(
    graph: StateGraph[Any, Any, Any, Any] | Pregel[Any, Any, Any, Any],
    *,
    name: str = DEFAULT_NAME,
    description: str = DEFAULT_DESCRIPTION,
    include_solution: bool = False,
) -> BaseTool:
    """A LangChain tool that solves its ``question`` argument with a TRIM graph.

    Args:
        graph: :func:`~langchain_trim.create_trim_graph`'s builder (compiled here) or a
            compiled TRIM graph.  Each call is a fresh run without a checkpointer of its
            own (the agent's checkpointer records the tool's answer), so parallel tool
            calls never share state.
        name / description: what the agent's model sees.
        include_solution: put the whole step-by-step solution in the tool's answer, not
            only the final answer (it is always in the ``artifact``).

    Returns:
        A ``StructuredTool`` (sync and async) whose content is the final answer and a spend
        summary, and whose ``artifact`` holds ``final_answer``, ``solution``,
        ``termination``, ``overspent``, ``spend`` and ``steps``.

    >>> from langchain_trim import ThresholdPolicy, create_trim_graph
    >>> from langchain_trim.testing import FakeStepModel
    >>> weak = FakeStepModel(steps=["1 + 1 = 2", r"So \\boxed{2}"])
    >>> tool = create_trim_tool(create_trim_graph(weak, weak, None, ThresholdPolicy(0)))
    >>> print(tool.invoke({"question": "What is 1 + 1?"}))
    Answer: 2
    TRIM: 2 steps, 0 rewritten by the strong model, 0 strong tokens, ended by final_answer.
    """
    if isinstance(graph, StateGraph):
        compiled: Pregel[Any, Any, Any, Any] = graph.compile(checkpointer=False, name=name)
    elif isinstance(graph, Pregel):
        compiled = graph.copy(update={"checkpointer": False})
    else:
        raise InvalidInputError(
            f"create_trim_tool needs a TRIM graph (create_trim_graph(...)), got "
            f"{type(graph).__name__}"
        )
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise InvalidInputError(f"tool name must be letters, digits, '_' or '-', got {name!r}")

    def solve(question: str, config: RunnableConfig) -> tuple[str, dict[str, Any]]:
        state = compiled.invoke({"question": question}, config)
        return _content_and_artifact(state, include_solution)

    async def asolve(question: str, config: RunnableConfig) -> tuple[str, dict[str, Any]]:
        state = await compiled.ainvoke({"question": question}, config)
        return _content_and_artifact(state, include_solution)

    return StructuredTool.from_function(
        func=solve,
        coroutine=asolve,
        name=name,
        description=description,
        args_schema=TrimToolInput,
        response_format="content_and_artifact",
    )


__all__ = ["DEFAULT_DESCRIPTION", "DEFAULT_NAME", "TrimToolInput", "create_trim_tool", "summarize"]
