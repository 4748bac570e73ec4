"""TRIM-POMDP: escalate when the solved POMDP values a strong rewrite above keeping the draft.

The policy builds a belief over the hidden state of the current draft (S0 on track,
S1 derailed earlier, S2 only this step wrong) from the scores it sees, and compares
``Q(continue)`` with ``Q(escalate)`` from the solved value function
(:mod:`langchain_trim.policies.pomdp_solver`) at the current step, pricing the
escalation with the draft's length.  Nothing is trained: λ (the price of one strong
token in correct answers) is the only knob, and changing it means a new solve
(seconds, cached).  The model comes from a
:class:`~langchain_trim.policies.calibration.Calibration`.

The observation a policy gets does not say which earlier steps the strong model wrote;
the filter assumes weak ones (slightly pessimistic) unless ``previous_strong`` is known.
Unscored previous steps (``None``) are skipped; an unscored draft is kept.

>>> from langchain_trim.policies.calibration import synthetic_calibration
>>> policy = PomdpPolicy(synthetic_calibration(), lam=1e-4, cache_dir=False)
>>> obs = RouteObservation(step_index=0, score=0.05, previous_scores=(),
...     step_tokens=50, previous_step_tokens=(), strong_tokens_spent=0,
...     budget=None, max_steps=30)
>>> policy.decide(obs).action
'escalate'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from langchain_trim.policies.base import RouteDecision, RouteObservation
from langchain_trim.policies.calibration import Calibration
from langchain_trim.policies.pomdp_model import PomdpModel, Termination
from langchain_trim.policies.pomdp_solver import PomdpSolution, solve
from langchain_trim.state import Action

BeliefMode = Literal["filter", "reset"]
DEFAULT_LAMBDA = 8e-4


class PomdpPolicy:
    """TRIM-POMDP for one calibration and one λ.

    ``belief="filter"`` updates the belief across steps (Bayes); ``"reset"`` restarts
    from a uniform prior at every step, as the official release does.
    """

    def __init__(
        self,
        calibration: Calibration | PomdpModel,
        lam: float = DEFAULT_LAMBDA,
        *,
        belief: BeliefMode = "filter",
        termination: Termination = "author",
        step_max_tokens: int = 512,
        resolution: int = 24,
        token_bins: int = 8,
        cache_dir: str | Path | bool | None = None,
    ) -> None:
        if belief not in ("filter", "reset"):
            raise ValueError(f"belief must be 'filter' or 'reset', got {belief!r}")
        if isinstance(calibration, PomdpModel):
            self.model = calibration
        else:
            self.model = PomdpModel.from_calibration(
                calibration, termination=termination, step_max_tokens=step_max_tokens
            )
        self.lam = float(lam)
        self.belief_mode: BeliefMode = belief
        self.solution: PomdpSolution = solve(
            self.model,
            self.lam,
            resolution=resolution,
            token_bins=token_bins,
            cache_dir=cache_dir,
        )

    @property
    def name(self) -> str:
        suffix = "" if self.belief_mode == "filter" else ":reset"
        return f"pomdp:{self.lam:g}{suffix}"

    def belief(self, observation: RouteObservation) -> np.ndarray:
        """Belief over (S0, S1, S2) for the current draft (its score must be known)."""
        assert observation.score is not None
        if self.belief_mode == "reset":
            return self.model.reset_belief(observation.previous_scores, observation.score)
        strong = [a == "strong" for a in observation.previous_authors] or None
        return self.model.filter_belief(
            observation.previous_scores, observation.score, previous_strong=strong
        )

    def needs_score(self, observation: RouteObservation) -> bool:
        return self.solution.ever_escalates

    def decide(self, observation: RouteObservation) -> RouteDecision:
        if observation.score is None:
            return RouteDecision("continue", "unscored draft is kept")
        b = self.belief(observation)
        q = self.solution.q_values(observation.step_index, b, observation.step_tokens)
        action: Action = "escalate" if q[1] > q[0] else "continue"
        reason = (
            f"belief S0/S1/S2 {b[0]:.2f}/{b[1]:.2f}/{b[2]:.2f}; "
            f"Q continue {q[0]:.3f} vs escalate {q[1]:.3f}"
        )
        return RouteDecision(action, reason)

    def __repr__(self) -> str:
        return f"PomdpPolicy(lam={self.lam:g}, belief={self.belief_mode!r})"


__all__ = ["DEFAULT_LAMBDA", "BeliefMode", "PomdpPolicy"]
