"""Step-level baseline policies for evaluations: always-weak with scores, and random routing.

* :class:`ScoreOnlyPolicy` (``"weakscored"``) never escalates but asks the PRM for every
  draft, so an always-weak run also records the scores that post-hoc query-level routers
  (difficulty routing, AutoMix-PRM, see :mod:`langchain_trim.eval.query_routers`) and
  simulator calibration need.  It costs PRM calls, not strong tokens.
* :class:`RandomPolicy` (``"random:p"``) escalates each step with probability ``p``: the
  floor any score-driven policy must beat at the same cost.  Its coin is a hash of
  ``(seed, question key, step index)``, so a re-run makes the same choices.

Importing this module registers both names with
:func:`~langchain_trim.policies.registry.make_policy`.
"""

from __future__ import annotations

import hashlib
import math

from langchain_trim.policies.base import RouteDecision, RouteObservation
from langchain_trim.policies.registry import number_policy, register_policy


class ScoreOnlyPolicy:
    """Always keep the weak draft, but have the PRM score it first.

    >>> from langchain_trim.policies import RouteObservation
    >>> obs = RouteObservation(0, 0.2, (), 10, (), 0, None, 30)
    >>> p = ScoreOnlyPolicy()
    >>> p.needs_score(obs), p.decide(obs).action, p.name
    (True, 'continue', 'weakscored')
    """

    name = "weakscored"

    def needs_score(self, observation: RouteObservation) -> bool:
        return True

    def decide(self, observation: RouteObservation) -> RouteDecision:
        score = observation.score
        shown = "unscored" if score is None else f"score {score:.3f}"
        return RouteDecision("continue", f"always weak ({shown} recorded)")

    def __repr__(self) -> str:
        return "ScoreOnlyPolicy()"


class FirstStepPolicy:
    """TRIM-Thr allowed to escalate the first step only (``"step0:k"``).

    The ablation's "escalate step 0 only" arm: it separates what step routing gains on
    later steps from what routing the opening of a solution (close to routing the whole
    question) gains.  Later drafts are kept unscored.

    >>> from langchain_trim.policies import RouteObservation
    >>> p = FirstStepPolicy(0.5)
    >>> p.decide(RouteObservation(0, 0.2, (), 10, (), 0, None, 30)).action
    'escalate'
    >>> later = RouteObservation(3, None, (0.9,) * 3, 10, (5,) * 3, 0, None, 30)
    >>> p.needs_score(later), p.decide(later).action
    (False, 'continue')
    """

    def __init__(self, threshold: float) -> None:
        if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = threshold
        self.name = f"step0:{threshold:g}"

    def needs_score(self, observation: RouteObservation) -> bool:
        return observation.step_index == 0 and 0.0 < self.threshold < 1.0

    def decide(self, observation: RouteObservation) -> RouteDecision:
        if observation.step_index > 0 or self.threshold <= 0.0:
            return RouteDecision("continue", "only the first step is routed")
        score = observation.score
        if self.threshold >= 1.0 or score is None or score < self.threshold:
            return RouteDecision("escalate", f"step 0 score {score} < {self.threshold:g}")
        return RouteDecision("continue", f"step 0 score {score:.3f} >= {self.threshold:g}")

    def __repr__(self) -> str:
        return f"FirstStepPolicy({self.threshold:g})"


def uniform(*parts: object) -> float:
    """A reproducible uniform number in [0, 1) from any printable parts (sha256).

    >>> uniform(0, "q1", 3) == uniform(0, "q1", 3), 0 <= uniform("x") < 1
    (True, True)
    """
    text = "\x1f".join(str(p) for p in parts)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()  # any str
    return int.from_bytes(digest[:8], "big") / 2.0**64


class RandomPolicy:
    """Escalate each step with probability ``p``, without looking at any score.

    The coin of step ``t`` is :func:`uniform` of ``(seed, key, t)``.  ``key`` names the
    question: the evaluation runner binds it with :meth:`for_question`.  Unbound, the key
    is the trajectory so far (step index and token counts), which is still reproducible
    because the embedded models are seeded.

    >>> from langchain_trim.policies import RouteObservation
    >>> obs = RouteObservation(0, None, (), 10, (), 0, None, 30)
    >>> RandomPolicy(1.0).decide(obs).action, RandomPolicy(0.0).decide(obs).action
    ('escalate', 'continue')
    >>> p = RandomPolicy(0.5, seed=3).for_question("gsm8k-7")
    >>> [p.decide(obs).action for _ in range(3)] == [p.decide(obs).action] * 3
    True
    """

    def __init__(self, p: float, seed: int = 0, key: str | None = None) -> None:
        if isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"p must be a number in [0, 1], got {p!r}")
        if math.isnan(p) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.seed = int(seed)
        self.key = key

    @property
    def name(self) -> str:
        return f"random:{self.p:g}"

    def for_question(self, key: str) -> RandomPolicy:
        """The same policy with its coins tied to question ``key``."""
        return RandomPolicy(self.p, self.seed, key)

    def needs_score(self, observation: RouteObservation) -> bool:
        return False

    def decide(self, observation: RouteObservation) -> RouteDecision:
        key = self.key
        if key is None:
            key = f"{observation.previous_step_tokens}|{observation.step_tokens}"
        u = uniform(self.seed, key, observation.step_index)
        if u < self.p:
            return RouteDecision("escalate", f"coin {u:.3f} < p={self.p:g}")
        return RouteDecision("continue", f"coin {u:.3f} >= p={self.p:g}")

    def __repr__(self) -> str:
        return f"RandomPolicy({self.p:g}, seed={self.seed})"


register_policy("weakscored", lambda _: ScoreOnlyPolicy())  # always weak, PRM-scored
# escalate each step with probability p (seeded)
register_policy("random", number_policy("random", RandomPolicy, "an escalation probability", "0.2"))
# TRIM-Thr on the first step only (ablation)
register_policy("step0", number_policy("step0", FirstStepPolicy, "a threshold", "0.9"))

__all__ = ["FirstStepPolicy", "RandomPolicy", "ScoreOnlyPolicy", "uniform"]
