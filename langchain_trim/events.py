"""Typed custom stream events of the TRIM graph (``stream_mode="custom"``).

The graph writes one :class:`StepEvent` per accepted step and one :class:`DoneEvent` at
the end; the CLI, the eval runner and user code read them.  A ``TypedDict`` keeps them
plain dicts on the wire (LangGraph Server, JSON) while giving readers checked keys.
"""

from __future__ import annotations

from typing import Any, Literal

from typing_extensions import TypedDict, TypeGuard

from langchain_trim.state import Action, Author, Termination, TrimSpend


class StepEvent(TypedDict):
    """An accepted step, with who wrote it, why, and the spend so far."""

    trim_event: Literal["step"]
    index: int
    author: Author
    model: str
    score: float | None
    """PRM score of the weak draft the router saw."""
    decision: Action
    budget_blocked: bool
    fallback: str | None
    tokens: int
    strong_tokens: int
    """Strong tokens spent on the question so far."""
    budget: int | None
    budget_left: int | None
    overspent: bool
    text: str


class DoneEvent(TypedDict):
    """The end of a question: its answer, why it ended, and the spend."""

    trim_event: Literal["done"]
    final_answer: str | None
    termination: Termination
    spend: TrimSpend


TrimEvent = StepEvent | DoneEvent


def is_step_event(chunk: Any) -> TypeGuard[StepEvent]:
    """True for a step event of a TRIM graph (other custom events pass through)."""
    return isinstance(chunk, dict) and chunk.get("trim_event") == "step"


def is_done_event(chunk: Any) -> TypeGuard[DoneEvent]:
    """True for the final event of a TRIM graph."""
    return isinstance(chunk, dict) and chunk.get("trim_event") == "done"


__all__ = ["DoneEvent", "StepEvent", "TrimEvent", "is_done_event", "is_step_event"]
