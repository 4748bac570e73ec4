"""TRIM-Seq: a GRU over the whole history of (score, tokens) pairs, then actor and critic.

The paper's TRIM-Seq reads the full sequence ((r_1, c_1), ..., (r_t, c_t)) with a
transformer; it is not in the release.  A GRU is used here: the sequences are at most
30 steps of three numbers, the recurrence is cheap in numpy at inference, and it trains
in minutes on CPU.  The GRU's last state over the previous accepted steps is joined to
the current draft's score, tokens, step index and strong tokens left, and fed to the
same trunk and heads as TRIM-Agg.

>>> policy = SeqPolicy.default()
>>> def after_three_good_steps(score):
...     return RouteObservation(step_index=3, score=score, previous_scores=(0.95, 0.92, 0.9),
...         step_tokens=60, previous_step_tokens=(50, 50, 50), strong_tokens_spent=0,
...         budget=None, max_steps=30)
>>> [policy.decide(after_three_good_steps(s)).action for s in (0.9, 0.3)]
['continue', 'escalate']
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from langchain_trim.policies.base import RouteObservation
from langchain_trim.policies.features import (
    BUDGET_SCALE,
    SEQ_CURRENT_FEATURES,
    SEQ_STEP_FEATURES,
    seq_current,
    seq_history,
)
from langchain_trim.policies.learned import (
    LearnedPolicy,
    Shapes,
    config_int,
    mlp_heads,
    trunk_shapes,
)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class SeqPolicy(LearnedPolicy):
    """TRIM-Seq with numpy inference; build with :meth:`load` or :meth:`default` (a fresh one
    for training: :func:`langchain_trim.lab.nets.init_policy`).

    The encoded input is the current features, the history length, then ``max_history``
    zero-padded rows of :data:`SEQ_STEP_FEATURES` (the most recent steps if longer).
    """

    kind = "seq"
    _CACHE_LIMIT = 20_000

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        super().set_params(params)
        self._hidden_cache: dict[bytes, np.ndarray] = {}

    @property
    def max_history(self) -> int:
        return int(self.config.get("max_history", 32))

    @property
    def input_size(self) -> int:
        return len(SEQ_CURRENT_FEATURES) + 1 + self.max_history * len(SEQ_STEP_FEATURES)

    def expected_shapes(self, source: str = "policy weights") -> Shapes:
        config_int(self.config, "max_history", 32, source)
        gru = config_int(self.config, "gru_hidden", 32, source)
        n_step = len(SEQ_STEP_FEATURES)
        return {
            **trunk_shapes(
                gru + len(SEQ_CURRENT_FEATURES), config_int(self.config, "hidden", 64, source)
            ),
            "gru.weight_ih_l0": (3 * gru, n_step),
            "gru.weight_hh_l0": (3 * gru, gru),
            "gru.bias_ih_l0": (3 * gru,),
            "gru.bias_hh_l0": (3 * gru,),
        }

    def encode(self, observation: RouteObservation) -> np.ndarray:
        scale = float(self.config.get("budget_scale", BUDGET_SCALE))
        hist = seq_history(observation)[-self.max_history :]
        padded = np.zeros((self.max_history, len(SEQ_STEP_FEATURES)), dtype=np.float32)
        padded[: len(hist)] = hist
        return np.concatenate(
            [seq_current(observation, scale), np.array([len(hist)], np.float32), padded.ravel()]
        )

    def _cell(self, x: np.ndarray, h: np.ndarray) -> np.ndarray:
        """One PyTorch GRU step for a batch: inputs ``[N, 3]``, state ``[N, H]``."""
        p = self.params
        gi = x @ p["gru.weight_ih_l0"].T + p["gru.bias_ih_l0"]
        gh = h @ p["gru.weight_hh_l0"].T + p["gru.bias_hh_l0"]
        size = h.shape[1]
        r = _sigmoid(gi[:, :size] + gh[:, :size])
        z = _sigmoid(gi[:, size : 2 * size] + gh[:, size : 2 * size])
        n = np.tanh(gi[:, 2 * size :] + r * gh[:, 2 * size :])
        return (1.0 - z) * n + z * h

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_cur, n_step = len(SEQ_CURRENT_FEATURES), len(SEQ_STEP_FEATURES)
        length = x[:, n_cur].astype(np.int64)
        hist = x[:, n_cur + 1 :].reshape(x.shape[0], self.max_history, n_step)
        h = np.zeros((x.shape[0], self.params["gru.weight_hh_l0"].shape[1]), dtype=np.float32)
        for t in range(int(length.max()) if x.shape[0] else 0):
            h = np.where((t < length)[:, None], self._cell(hist[:, t], h), h)
        return mlp_heads(self.params, np.concatenate([h, x[:, :n_cur]], axis=-1))

    def _hidden(self, hist: np.ndarray) -> np.ndarray:
        """GRU state after ``hist`` (``[t, 3]``), reusing the state of its prefix."""
        if len(hist) == 0:
            return np.zeros((1, self.params["gru.weight_hh_l0"].shape[1]), dtype=np.float32)
        key = hist.tobytes()
        h = self._hidden_cache.get(key)
        if h is None:
            h = self._cell(hist[-1:], self._hidden(hist[:-1]))
            if len(self._hidden_cache) >= self._CACHE_LIMIT:
                self._hidden_cache.clear()
            self._hidden_cache[key] = h
        return h

    def evaluate_one(self, observation: RouteObservation) -> tuple[np.ndarray, np.ndarray, float]:
        x = self.encode(observation)
        n_cur = len(SEQ_CURRENT_FEATURES)
        length = int(x[n_cur])
        hist = x[n_cur + 1 :].reshape(self.max_history, len(SEQ_STEP_FEATURES))[:length]
        h = self._hidden(np.ascontiguousarray(hist))
        logits, value = mlp_heads(self.params, np.concatenate([h, x[None, :n_cur]], axis=-1))
        return x, logits[0], float(value[0])


DEFAULT_WEIGHTS = SeqPolicy.official_weights()
"""Trained by ``trim train seq`` on ``sim:official`` with λ = 8e-4 (see the ``.json``)."""

__all__ = ["DEFAULT_WEIGHTS", "SeqPolicy"]
