"""The routing-policy seam: what a policy sees and what it may answer.

A policy is anything with ``needs_score`` and ``decide``.  The graph builds a
:class:`RouteObservation` for each weak draft, asks the PRM only when
``needs_score`` says so, and then follows ``decide``.  The budget check happens after the
policy, in the graph, so a policy can never overspend.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from langchain_trim.state import Action


@dataclass(frozen=True)
class RouteObservation:
    """Everything a routing policy may look at for the current step.

    Scores are PRM probabilities that a step is correct, in [0, 1]; ``None`` where a
    step was not scored (no PRM call was needed, or the PRM failed).
    """

    step_index: int
    """0-based index of the step being decided."""
    score: float | None
    """PRM score of the current weak draft."""
    previous_scores: tuple[float | None, ...]
    """Scores of the accepted steps before this one, oldest first."""
    step_tokens: int
    """Tokens of the current weak draft."""
    previous_step_tokens: tuple[int, ...]
    """Tokens of the accepted steps before this one."""
    strong_tokens_spent: int
    """Strong-model output tokens already spent on this question."""
    budget: int | None
    """Per-question cap on strong tokens (``None``: unlimited)."""
    max_steps: int
    """Step limit of the trajectory."""
    previous_authors: tuple[str, ...] = ()
    """``"weak"``/``"strong"`` for each accepted step (empty when unknown)."""
    step_max_tokens: int | None = None
    """The ``max_tokens`` cap a strong step will be asked for (``None`` when unknown);
    a budget that reserves per escalation checks its reservation against it."""

    @property
    def budget_left(self) -> int | None:
        """Strong tokens still available, or ``None`` when unlimited."""
        if self.budget is None:
            return None
        return max(self.budget - self.strong_tokens_spent, 0)

    def with_score(self, score: float | None) -> RouteObservation:
        """Copy with the current step's score filled in."""
        return replace(self, score=score)


@dataclass(frozen=True)
class RouteDecision:
    """A policy's answer: the action and a short reason for traces and logs."""

    action: Action
    reason: str = ""


@runtime_checkable
class RoutingPolicy(Protocol):
    """Decides ``continue`` (keep the weak draft) or ``escalate`` (strong rewrite)."""

    @property
    def name(self) -> str:
        """Short identifier used in traces and reports."""
        ...

    def needs_score(self, observation: RouteObservation) -> bool:
        """Whether the PRM must score the draft before :meth:`decide`.

        ``observation.score`` is ``None`` when this is asked.  Returning ``False`` skips
        the PRM call (e.g. always-weak and always-strong).
        """
        ...

    def decide(self, observation: RouteObservation) -> RouteDecision:
        """Choose the action for the current step."""
        ...


__all__ = ["RouteDecision", "RouteObservation", "RoutingPolicy"]
