"""TRIM-Agg: an actor-critic MLP over aggregate features of the trajectory so far.

The inputs are the release's five aggregates (min and product of the previous scores,
the current score, step tokens / 300, step index / 30) plus the strong tokens left, so
that a per-question budget can change the decision (see
:mod:`langchain_trim.policies.features`).  The network is the release's: two
Linear(·→64)+LayerNorm+Tanh layers with actor and critic heads.  It is trained with PPO
(:mod:`langchain_trim.lab.ppo`) for one cost per token λ; greedy at evaluation.

>>> policy = AggPolicy.default()
>>> obs = RouteObservation(step_index=1, score=0.02, previous_scores=(0.95,),
...     step_tokens=80, previous_step_tokens=(50,), strong_tokens_spent=0,
...     budget=None, max_steps=30)
>>> policy.decide(obs).action
'escalate'
"""

from __future__ import annotations

import numpy as np

from langchain_trim.policies.base import RouteObservation
from langchain_trim.policies.features import AGG_FEATURES, BUDGET_SCALE, agg_features
from langchain_trim.policies.learned import (
    LearnedPolicy,
    Shapes,
    config_int,
    mlp_heads,
    trunk_shapes,
)


class AggPolicy(LearnedPolicy):
    """TRIM-Agg with numpy inference; build with :meth:`load` or :meth:`default` (a fresh one
    for training: :func:`langchain_trim.lab.nets.init_policy`)."""

    kind = "agg"

    @property
    def input_size(self) -> int:
        return len(AGG_FEATURES)

    def expected_shapes(self, source: str = "policy weights") -> Shapes:
        return trunk_shapes(self.input_size, config_int(self.config, "hidden", 64, source))

    def encode(self, observation: RouteObservation) -> np.ndarray:
        return agg_features(observation, float(self.config.get("budget_scale", BUDGET_SCALE)))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return mlp_heads(self.params, x)


DEFAULT_WEIGHTS = AggPolicy.official_weights()
"""Trained by ``trim train agg`` on ``sim:official`` with λ = 8e-4 (see the ``.json``)."""

__all__ = ["DEFAULT_WEIGHTS", "AggPolicy"]
