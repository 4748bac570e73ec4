"""LCEL glue: ``prompt | trim_input | graph | trim_answer`` chains a TRIM graph like any
runnable.  Scripts that do not use graphs call :func:`langchain_trim.solve`
(:mod:`langchain_trim.functional`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableLambda

from langchain_trim.errors import InvalidInputError


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


__all__ = ["trim_answer", "trim_input"]
