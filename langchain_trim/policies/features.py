"""What the learned policies see: fixed-size numbers computed from a RouteObservation.

TRIM-Agg uses the release's five aggregates plus the strong tokens left; TRIM-Seq uses
the whole history of (score, tokens) pairs.  Both are computed from the observation
alone, so the same code serves the graph, the simulator and training.  Unscored
previous steps (``None``) are left out of the aggregates and flagged in the sequence.
"""

from __future__ import annotations

import math

import numpy as np

from langchain_trim.policies.base import RouteObservation

TOKEN_SCALE = 300.0
"""Step tokens are divided by this (the release's scale)."""
STEP_SCALE = 30.0
"""The step index is divided by this (the paper's 30-step limit)."""
BUDGET_SCALE = 2048.0
"""Strong tokens left are divided by this and capped at 1 (1.0 = unlimited or plenty)."""

AGG_FEATURES = (
    "min_previous_score",
    "product_previous_scores",
    "score",
    "step_tokens",
    "step_index",
    "budget_left",
)
SEQ_STEP_FEATURES = ("score", "scored", "tokens")
"""Per previous accepted step: its score (0 when unscored), 1 if scored, tokens / 300."""
SEQ_CURRENT_FEATURES = ("score", "step_tokens", "step_index", "budget_left")


def budget_feature(observation: RouteObservation, scale: float = BUDGET_SCALE) -> float:
    """Strong tokens left over ``scale``, capped at 1; 1.0 when the budget is unlimited."""
    left = observation.budget_left
    return 1.0 if left is None else min(left / scale, 1.0)


def agg_features(observation: RouteObservation, budget_scale: float = BUDGET_SCALE) -> np.ndarray:
    """The six TRIM-Agg inputs (:data:`AGG_FEATURES`) as a float32 vector.

    >>> obs = RouteObservation(step_index=2, score=0.4, previous_scores=(0.9, None, 0.5),
    ...     step_tokens=60, previous_step_tokens=(10, 20, 30), strong_tokens_spent=1024,
    ...     budget=3072, max_steps=30)
    >>> [round(float(x), 4) for x in agg_features(obs)]
    [0.5, 0.45, 0.4, 0.2, 0.0667, 1.0]
    """
    known = [s for s in observation.previous_scores if s is not None]
    score = observation.score if observation.score is not None else 1.0
    return np.array(
        [
            min(known) if known else 1.0,
            math.prod(known) if known else 1.0,
            score,
            observation.step_tokens / TOKEN_SCALE,
            observation.step_index / STEP_SCALE,
            budget_feature(observation, budget_scale),
        ],
        dtype=np.float32,
    )


def seq_history(observation: RouteObservation) -> np.ndarray:
    """``(t, 3)`` float32 array of the previous accepted steps (:data:`SEQ_STEP_FEATURES`).

    >>> obs = RouteObservation(step_index=2, score=0.4, previous_scores=(0.9, None),
    ...     step_tokens=60, previous_step_tokens=(30, 60), strong_tokens_spent=0,
    ...     budget=None, max_steps=30)
    >>> seq_history(obs).tolist()
    [[0.8999999761581421, 1.0, 0.10000000149011612], [0.0, 0.0, 0.20000000298023224]]
    """
    scores = observation.previous_scores
    tokens = observation.previous_step_tokens
    n = min(len(scores), len(tokens))
    out = np.zeros((n, 3), dtype=np.float32)
    for i in range(n):
        s = scores[i]
        out[i] = (0.0 if s is None else s, 0.0 if s is None else 1.0, tokens[i] / TOKEN_SCALE)
    return out


def seq_current(observation: RouteObservation, budget_scale: float = BUDGET_SCALE) -> np.ndarray:
    """The current step's inputs for TRIM-Seq (:data:`SEQ_CURRENT_FEATURES`)."""
    score = observation.score if observation.score is not None else 1.0
    return np.array(
        [
            score,
            observation.step_tokens / TOKEN_SCALE,
            observation.step_index / STEP_SCALE,
            budget_feature(observation, budget_scale),
        ],
        dtype=np.float32,
    )


__all__ = [
    "AGG_FEATURES",
    "BUDGET_SCALE",
    "SEQ_CURRENT_FEATURES",
    "SEQ_STEP_FEATURES",
    "STEP_SCALE",
    "TOKEN_SCALE",
    "agg_features",
    "budget_feature",
    "seq_current",
    "seq_history",
]
