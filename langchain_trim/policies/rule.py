"""The routing rule: the policy's decision, then the budget, in one place.

The graph's route node, the simulator that trains policies, trace replay and the global
budget all ask this module, so a policy trained in the simulator meets the same rule in
the graph.  The policy proposes; an escalation goes through only while the strong model
is trusted and the question's budget still covers a whole strong step
(``step_max_tokens``), which is what makes the budget hard.
"""

from __future__ import annotations

from dataclasses import dataclass

from langchain_trim.policies.base import RouteDecision, RouteObservation, RoutingPolicy
from langchain_trim.state import Action

DISTRUSTED = "blocked: the strong model did not honour max_tokens"


@dataclass(frozen=True)
class StepDecision:
    """What happens to the current draft, and whether a block overrode the policy."""

    action: Action
    reason: str
    budget_blocked: bool
    """The policy asked to escalate but the rule kept the draft."""


def budget_covers(budget_left: int | None, step_max_tokens: int) -> bool:
    """Whether ``budget_left`` strong tokens pay for a whole strong step.

    >>> budget_covers(None, 512), budget_covers(511, 512), budget_covers(512, 512)
    (True, False, True)
    """
    return budget_left is None or budget_left >= step_max_tokens


def decide_step(
    policy: RoutingPolicy,
    observation: RouteObservation,
    *,
    step_max_tokens: int,
    strong_trusted: bool = True,
) -> StepDecision:
    """The policy's decision for ``observation`` after the trust and budget checks.

    A distrusted strong model is not even asked about: a policy may reserve shared
    budget for an escalation (:class:`~langchain_trim.budget.GlobalBudgetPolicy`).

    >>> from langchain_trim.policies.threshold import ThresholdPolicy
    >>> obs = RouteObservation(1, 0.2, (0.9,), 10, (12,), 100, 150, 30)
    >>> decide_step(ThresholdPolicy(0.5), obs, step_max_tokens=64).budget_blocked
    True
    >>> decide_step(ThresholdPolicy(0.5), obs, step_max_tokens=32).action
    'escalate'
    """
    if not strong_trusted:
        return StepDecision("continue", DISTRUSTED, True)
    decision = policy.decide(observation)
    if not isinstance(decision, RouteDecision) or decision.action not in ("continue", "escalate"):
        raise TypeError(f"policy {policy.name} returned {decision!r}, not a RouteDecision")
    left = observation.budget_left
    if decision.action == "escalate" and not budget_covers(left, step_max_tokens):
        reason = (
            f"{decision.reason}; budget blocked: {left} strong tokens left < step cap "
            f"{step_max_tokens}"
        )
        return StepDecision("continue", reason, True)
    return StepDecision(decision.action, decision.reason, False)


__all__ = ["DISTRUSTED", "StepDecision", "budget_covers", "decide_step"]
