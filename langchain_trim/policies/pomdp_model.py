"""The TRIM-POMDP: hidden states, transitions, rewards, observation model and belief.

The hidden state describes the current weak draft: S0 (prefix on track, draft right),
S1 (derailed by an earlier step, irrecoverable), S2 (prefix on track, only this draft
wrong).  With ``p_w``/``p_s`` the step accuracies of the weak/strong model:

* ``continue`` — S0 → S0 w.p. p_w, else S2; S1 and S2 → S1;
* ``escalate`` (the strong step, then the next weak draft) — from S0 or S2: S0 w.p.
  p_w·p_s, S1 w.p. 1 − p_s, S2 w.p. p_s(1 − p_w); S1 stays S1.

After the step the solution ends with the length hazard of its author (as the
simulator does; ``termination="weak"`` uses the weak model's for both, as the release
does); ending on track pays 1 (``continue`` from S0, or a right strong step from S0/S2,
probability p_s).  An escalation costs λ × the strong step's expected tokens, which
depend on the draft's length when the calibration correlates lengths.

Observations are (min previous score, current score) in 0.05 bins, with one table per
state (:func:`langchain_trim.lab.sim.labelled.fit_observation_model` fits them from
labelled solutions such as ProcessBench's; :func:`parametric_observation` is a
Beta-shaped default).  The planner treats each step's pair as a fresh observation, as
the release does.  At run time the belief is filtered properly across steps
(:meth:`PomdpModel.filter_belief`: the current score is weighed by
``P(score | min previous, state)``, since the min previous score is already known from
the history), or, as in the release, restarted from a uniform prior every step
(:meth:`PomdpModel.reset_belief`).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from langchain_trim.policies.calibration import Calibration

S0, S1, S2 = 0, 1, 2
Termination = Literal["author", "weak"]

PARAMETRIC_BETAS: dict[int, tuple[tuple[float, float], tuple[float, float]]] = {
    S0: ((1.98, 0.23), (2.81, 0.20)),
    S1: ((0.38, 1.42), (0.71, 0.44)),
    S2: ((1.52, 0.33), (0.43, 1.03)),
}
"""Per state, Beta (a, b) of the min previous score and of the current score: the moments
of the official ProcessBench tables (Qwen2.5-Math-PRM-7B on MATH)."""


def transition(action: int, p_weak: float, p_strong: float) -> np.ndarray:
    """Row-stochastic 3×3 matrix ``T[s, s']`` for ``action`` 0 (continue) / 1 (escalate).

    >>> transition(1, 0.8, 0.9).round(3).tolist()
    [[0.72, 0.1, 0.18], [0.0, 1.0, 0.0], [0.72, 0.1, 0.18]]
    """
    if action == 0:
        return np.array([[p_weak, 0.0, 1 - p_weak], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    on = [p_weak * p_strong, 1 - p_strong, p_strong * (1 - p_weak)]
    return np.array([on, [0.0, 1.0, 0.0], on])


def accepted_transition(p: float) -> np.ndarray:
    """Hidden state of an accepted step whose author has step accuracy ``p``, from the last."""
    return np.array([[p, 0.0, 1 - p], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])


def parametric_observation(n_bins: int = 20) -> np.ndarray:
    """``(3, n, n)`` tables from independent Betas (:data:`PARAMETRIC_BETAS`) per state."""
    from scipy.stats import beta

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out = np.zeros((3, n_bins, n_bins))
    for s, ((am, bm), (ac, bc)) in PARAMETRIC_BETAS.items():
        pm = np.diff(beta.cdf(edges, am, bm))
        pc = np.diff(beta.cdf(edges, ac, bc))
        out[s] = np.outer(pm, pc)
        out[s] /= out[s].sum()
    return out


def table_distance(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Total-variation distance between two sets of per-state tables, one per state."""
    return [0.5 * float(np.abs(a[s] / a[s].sum() - b[s] / b[s].sum()).sum()) for s in range(3)]


@dataclass(frozen=True)
class PomdpModel:
    """All POMDP parameters as numpy arrays (built from a :class:`Calibration`)."""

    p_weak: float
    p_strong: float
    observation: np.ndarray
    """``(3, n, n)`` joint P(min-previous bin, current bin | state), on the PRM's raw scale."""
    hazard_weak: np.ndarray
    hazard_strong: np.ndarray
    score_power: float
    weak_log: tuple[float, float]
    strong_log: tuple[float, float]
    length_corr: float
    """Correlation of the log lengths of a draft and its strong rewrite."""
    step_max_tokens: int

    @property
    def max_steps(self) -> int:
        return len(self.hazard_weak) - 1

    @property
    def n_bins(self) -> int:
        return int(self.observation.shape[1])

    @classmethod
    def from_calibration(
        cls,
        cal: Calibration,
        *,
        termination: Termination = "author",
        step_max_tokens: int = 512,
        observation: np.ndarray | None = None,
    ) -> PomdpModel:
        """Read every parameter from ``cal`` (observation tables after its mix).

        The length correlation is ``length_score_corr²``: in the calibration both the
        draft's and the rewrite's log length load on the same latent doubt.  A per-question
        difficulty (``difficulty_sd``) and final-step accuracies or lengths are not planned
        over (the belief would need a difficulty axis, the plan the solution's end in
        advance): the model warns and uses the equivalent independent accuracies.
        """
        obs = np.asarray(cal.effective_observation() if observation is None else observation)
        hw = np.asarray(cal.hazard("weak"))
        if cal.difficulty_sd or cal.has_final_step_accuracy:
            warnings.warn(
                "the TRIM-POMDP plans with independent, identical steps: the calibration's "
                f"per-question difficulty (sd {cal.difficulty_sd:.3g}) and final-step "
                "accuracies and lengths are replaced by the step accuracies that give the same "
                "always-weak/always-strong accuracies",
                UserWarning,
                stacklevel=2,
            )
        return cls(
            p_weak=cal.independent_step_accuracy("weak"),
            p_strong=cal.independent_step_accuracy("strong"),
            observation=obs / obs.sum(axis=(1, 2), keepdims=True),
            hazard_weak=hw,
            hazard_strong=np.asarray(cal.hazard("strong")) if termination == "author" else hw,
            score_power=cal.score_power,
            weak_log=cal.weak_tokens.log_params,
            strong_log=cal.strong_tokens.log_params,
            length_corr=cal.length_score_corr**2,
            step_max_tokens=step_max_tokens,
        )

    def fingerprint(self) -> str:
        """Hash of every parameter (the solver's cache key)."""
        h = hashlib.sha256()
        for arr in (self.observation, self.hazard_weak, self.hazard_strong):
            h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        scalars = [
            self.p_weak,
            self.p_strong,
            self.score_power,
            *self.weak_log,
            *self.strong_log,
            self.length_corr,
            self.step_max_tokens,
        ]
        h.update(json.dumps([float(x) for x in scalars]).encode())
        return h.hexdigest()[:16]

    # -- costs -------------------------------------------------------------------------------
    def expected_strong_tokens(self, draft_tokens: float | None) -> float:
        """E[strong rewrite tokens | draft tokens] under correlated lognormal lengths."""
        mu_s, sd_s = self.strong_log
        if draft_tokens is None or self.length_corr == 0.0:
            z, rho = 0.0, 0.0
        else:
            mu_w, sd_w = self.weak_log
            z = (math.log(max(draft_tokens, 1.0)) - mu_w) / sd_w if sd_w > 0 else 0.0
            rho = self.length_corr
        mean = math.exp(mu_s + sd_s * rho * z + sd_s**2 * (1 - rho**2) / 2)
        return min(mean, float(self.step_max_tokens))

    def token_nodes(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``k`` equiprobable draft-length nodes: expected strong tokens and weights."""
        mu_w, sd_w = self.weak_log
        nd = NormalDist()
        draft = [math.exp(mu_w + sd_w * nd.inv_cdf((i + 0.5) / k)) for i in range(k)]
        cost = np.array([self.expected_strong_tokens(d) for d in draft])
        return cost, np.full(k, 1.0 / k)

    # -- belief ------------------------------------------------------------------------------
    def raw_bin(self, reported: float) -> int:
        """Bin of a reported PRM score on the tables' raw scale (undoing ``score_power``)."""
        raw = min(max(reported, 0.0), 1.0) ** (1.0 / self.score_power)
        return min(int(raw * self.n_bins), self.n_bins - 1)

    def conditional(self, m_bin: int, c_bin: int) -> np.ndarray:
        """``P(current bin | min-previous bin, state)`` for the three states."""
        rows = self.observation[:, m_bin, :]
        totals = rows.sum(axis=1)
        marg = self.observation.sum(axis=1)
        out = np.empty(3)
        for s in range(3):
            if totals[s] > 1e-9:
                out[s] = rows[s, c_bin] / totals[s]
            else:  # a min-previous bin this state never shows: its marginal, as the sim does
                out[s] = marg[s, c_bin] / marg[s].sum()
        return out

    def filter_belief(
        self,
        previous_scores: Sequence[float | None],
        score: float,
        previous_strong: Sequence[bool] | None = None,
    ) -> np.ndarray:
        """Bayesian filter over the accepted steps and the current draft.

        Starts on track, moves each accepted step through :func:`accepted_transition`
        (strong steps with ``p_s`` when ``previous_strong`` says so, else ``p_w``),
        weighs known scores by :meth:`conditional`, and returns the belief over the
        current draft's state.

        >>> from langchain_trim.policies.calibration import synthetic_calibration
        >>> model = PomdpModel.from_calibration(synthetic_calibration())
        >>> [int(model.filter_belief([0.9], s).argmax()) for s in (0.05, 0.95)]
        [2, 0]
        """
        b = np.array([1.0, 0.0, 0.0])
        known: list[int] = []
        for i, s in enumerate(previous_scores):
            strong = previous_strong is not None and i < len(previous_strong) and previous_strong[i]
            b = b @ accepted_transition(self.p_strong if strong else self.p_weak)
            if s is not None:
                c = self.raw_bin(s)
                b = b * self.conditional(min(known) if known else self.n_bins - 1, c)
                b = b / b.sum() if b.sum() > 0 else np.full(3, 1 / 3)
                known.append(c)
        b = b @ accepted_transition(self.p_weak)
        b = b * self.conditional(min(known) if known else self.n_bins - 1, self.raw_bin(score))
        return b / b.sum() if b.sum() > 0 else np.full(3, 1 / 3)

    def reset_belief(self, previous_scores: Sequence[float | None], score: float) -> np.ndarray:
        """The release's belief: the joint likelihood of (min previous, current) under a
        uniform prior, forgetting everything else."""
        known = [self.raw_bin(s) for s in previous_scores if s is not None]
        m = min(known) if known else self.n_bins - 1
        b = self.observation[:, m, self.raw_bin(score)].copy()
        return b / b.sum() if b.sum() > 0 else np.full(3, 1 / 3)


__all__ = [
    "PARAMETRIC_BETAS",
    "S0",
    "S1",
    "S2",
    "PomdpModel",
    "Termination",
    "accepted_transition",
    "parametric_observation",
    "table_distance",
    "transition",
]
