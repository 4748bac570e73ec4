"""The simulator: one TRIM episode per question, routed by any :class:`RoutingPolicy`.

Per step (TRIM-POMDP, arXiv:2601.10245): the weak model drafts from the accepted prefix;
from an on-track prefix the draft is right with probability ``p_weak`` (state S0) or
wrong (S2), from a derailed prefix the state is S1.  The PRM score of the draft is drawn
from the state's observation table conditioned on the current min previous score.  The
policy sees a :class:`RouteObservation` built exactly as the graph builds it (accepted
steps' scores, ``None`` for steps no PRM call has scored yet; ``needs_score`` asked
first; the PRM call reveals every earlier score), and the graph's budget rule applies:
an escalation goes through only while ``budget_left >= step_max_tokens``.  A strong
rewrite from an on-track prefix is right with probability ``p_strong``.  After each
accepted step the solution ends with the length hazard of that step's author (or always
the weak model's, ``termination="weak"``, as the release does).  The answer is correct
iff no accepted step was wrong.  Step lengths are lognormal per model; the calibration's
corrections act here too: ``score_power`` changes what the PRM reports (the tables are
still indexed by the raw score), ``length_score_corr`` lengthens low-scored steps and
their strong rewrites.

Every episode ``i`` draws a fixed block of uniforms from ``seed`` and ``i``, so runs with
the same seed share their randomness (common random numbers): differences between
policies are not sampling noise, and results are reproducible.  With a calibration's
``difficulty_sd`` each episode first draws its question's difficulty (one more uniform
after the block, so runs without it are unchanged), which sets both step accuracies.
Whether a step ends the solution is drawn with the step (the same uniform decides it for
either author), so a calibration's final-step accuracies can apply to it.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal, overload

from langchain_trim.policies.base import RouteObservation, RoutingPolicy
from langchain_trim.policies.calibration import STATES, Calibration, TokenModel
from langchain_trim.policies.rule import decide_step

_AUTHORS = ("weak", "strong")
_SLOTS = 9
"""Uniforms per step: weak right/score bin/score jitter/tokens, strong the same, end."""
_STD_NORMAL = NormalDist()


def _normal(u: float) -> float:
    return _STD_NORMAL.inv_cdf(min(max(u, 1e-12), 1 - 1e-12))


@dataclass(frozen=True)
class EpisodeResult:
    """Outcome of one simulated question."""

    index: int
    correct: bool
    strong_tokens: int
    weak_tokens: int
    """Weak tokens decoded, discarded drafts included."""
    discarded_draft_tokens: int
    steps: int
    escalations: int
    budget_blocked: int
    prm_calls: int
    trace: dict[str, Any] | None = None
    """``{"steps": [...], "correct": ..., "policy": ...}`` when ``record_steps``."""


class _Mean:
    """A :class:`SimSummary` attribute: the mean of one :class:`EpisodeResult` field."""

    def __init__(self, field: str) -> None:
        self.field = field

    @overload
    def __get__(self, summary: None, owner: type | None = None) -> _Mean: ...

    @overload
    def __get__(self, summary: SimSummary, owner: type | None = None) -> float: ...

    def __get__(self, summary: SimSummary | None, owner: type | None = None) -> _Mean | float:
        if summary is None:
            return self
        episodes = summary.episodes
        if not episodes:
            return 0.0
        return math.fsum(float(getattr(e, self.field)) for e in episodes) / len(episodes)


@dataclass(frozen=True)
class SimSummary:
    """All episodes of one policy and their aggregates."""

    policy: str
    episodes: tuple[EpisodeResult, ...] = field(repr=False)

    @property
    def n(self) -> int:
        return len(self.episodes)

    accuracy = _Mean("correct")
    mean_strong_tokens = _Mean("strong_tokens")
    mean_weak_tokens = _Mean("weak_tokens")
    mean_discarded_draft_tokens = _Mean("discarded_draft_tokens")
    mean_escalations = _Mean("escalations")
    mean_steps = _Mean("steps")
    mean_prm_calls = _Mean("prm_calls")

    def traces(self) -> list[dict[str, Any]]:
        """Recorded traces (run with ``record_steps=True``), the input of ``fit_calibration``."""
        return [e.trace for e in self.episodes if e.trace is not None]

    def to_dict(self) -> dict[str, float | int | str]:
        """Aggregates only, JSON-ready."""
        return {
            "policy": self.policy,
            "n": self.n,
            "accuracy": self.accuracy,
            "mean_strong_tokens": self.mean_strong_tokens,
            "mean_weak_tokens": self.mean_weak_tokens,
            "mean_discarded_draft_tokens": self.mean_discarded_draft_tokens,
            "mean_escalations": self.mean_escalations,
            "mean_steps": self.mean_steps,
            "mean_prm_calls": self.mean_prm_calls,
        }


@dataclass(slots=True)
class _Episode:
    """One question being routed: the call's settings and what has been counted so far."""

    index: int
    seed: int
    budget: int | None
    record_steps: bool
    score_all: bool
    strong_tokens: int = 0
    weak_tokens: int = 0
    discarded_draft_tokens: int = 0
    escalations: int = 0
    budget_blocked: int = 0
    prm_calls: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    def escalated(self, draft_tokens: int, strong_tokens: int) -> None:
        """The strong model wrote the step: the draft is discarded, its tokens spent."""
        self.escalations += 1
        self.discarded_draft_tokens += draft_tokens
        self.strong_tokens += strong_tokens

    def result(self, policy: RoutingPolicy, correct: bool, steps: int) -> EpisodeResult:
        trace = None
        if self.record_steps:
            trace = {"steps": self.records, "correct": correct, "policy": policy.name}
        return EpisodeResult(
            index=self.index,
            correct=correct,
            strong_tokens=self.strong_tokens,
            weak_tokens=self.weak_tokens,
            discarded_draft_tokens=self.discarded_draft_tokens,
            steps=steps,
            escalations=self.escalations,
            budget_blocked=self.budget_blocked,
            prm_calls=self.prm_calls,
            trace=trace,
        )


class EpisodeEnv:
    """The :class:`~langchain_trim.lab.ppo.TrainingEnv` side of the simulator and the replay.

    :meth:`episode` is theirs alike; each says in ``_play`` how one question unfolds.
    """

    max_steps: int

    def episode(
        self,
        policy: RoutingPolicy,
        index: int = 0,
        *,
        seed: int = 0,
        budget: int | None = None,
        record_steps: bool = False,
        score_all: bool = False,
    ) -> EpisodeResult:
        """Route question ``index`` with ``policy``, budget rule included, as the graph does.

        ``seed`` picks a simulator's randomness (a replay is deterministic); ``budget``
        caps the strong tokens; ``record_steps`` keeps a trace.  ``score_all`` records
        every step's PRM score in a simulator's trace as if the trajectory were scored
        offline afterwards; the policy still sees only what it asked for.
        """
        run = _Episode(index, seed, budget, record_steps, score_all)
        correct, steps = self._play(policy, run)
        return run.result(policy, correct, steps)

    def _play(self, policy: RoutingPolicy, run: _Episode) -> tuple[bool, int]:
        """Route ``run``'s question, counting in ``run``: whether it ends right, and its steps."""
        raise NotImplementedError

    def _observe(
        self,
        run: _Episode,
        t: int,
        scores: Sequence[float | None],
        draft_tokens: int,
        tokens: Sequence[int],
        authors: Sequence[str] = (),
        step_max_tokens: int | None = None,
        score: float | None = None,
    ) -> RouteObservation:
        """What the policy sees of step ``t``'s draft, ``score`` once scored (as in the graph)."""
        return RouteObservation(
            step_index=t,
            score=score,
            previous_scores=tuple(scores),
            step_tokens=draft_tokens,
            previous_step_tokens=tuple(tokens),
            previous_authors=tuple(authors),
            strong_tokens_spent=run.strong_tokens,
            budget=run.budget,
            max_steps=self.max_steps,
            step_max_tokens=step_max_tokens,
        )


class SimEnv(EpisodeEnv):
    """A calibrated TRIM environment.

    >>> from langchain_trim.policies import ThresholdPolicy
    >>> from langchain_trim.policies.calibration import synthetic_calibration
    >>> env = SimEnv(synthetic_calibration())
    >>> weak, strong = env.run(ThresholdPolicy(0), 200), env.run(ThresholdPolicy(1), 200)
    >>> weak.mean_strong_tokens, weak.accuracy < strong.accuracy
    (0.0, True)
    """

    def __init__(
        self,
        calibration: Calibration,
        *,
        step_max_tokens: int = 512,
        termination: Literal["author", "weak"] = "author",
        score_model: Literal["conditional", "marginal"] = "conditional",
    ) -> None:
        if step_max_tokens < 1:
            raise ValueError(f"step_max_tokens must be >= 1, got {step_max_tokens}")
        if termination not in ("author", "weak"):
            raise ValueError(f"termination must be 'author' or 'weak', got {termination!r}")
        if score_model not in ("conditional", "marginal"):
            raise ValueError(
                f"score_model must be 'conditional' or 'marginal', got {score_model!r}"
            )
        self.calibration = calibration
        self.step_max_tokens = step_max_tokens
        self.termination = termination
        self.score_model = score_model
        self.max_steps = calibration.max_steps
        self._bin = calibration.bin_size
        self._n = calibration.n_bins
        self._cdf = self._score_cdfs(calibration, score_model)
        self._power = calibration.score_power
        self._rho = calibration.length_score_corr
        self._hazard_weak = calibration.hazard("weak")
        self._hazard_strong = (
            calibration.hazard("strong") if termination == "author" else self._hazard_weak
        )

    # -- precomputation ----------------------------------------------------------------------
    @staticmethod
    def _score_cdfs(cal: Calibration, score_model: str) -> list[list[list[float]]]:
        """``cdf[state][m_bin]``: cumulative P(current bin | min-previous bin, state)."""
        out = []
        for table in cal.effective_observation():
            n = len(table)
            marginal = [math.fsum(table[i][j] for i in range(n)) for j in range(n)]
            rows = []
            for i in range(n):
                row = table[i] if score_model == "conditional" else marginal
                total = math.fsum(row)
                if total < 1e-9:  # a min-previous bin this state never shows: use the marginal
                    row, total = marginal, math.fsum(marginal)
                acc, cdf = 0.0, []
                for v in row:
                    acc += v / total
                    cdf.append(acc)
                cdf[-1] = 1.0
                rows.append(cdf)
            out.append(rows)
        return out

    def _score(self, state: int, min_prev: float, u_bin: float, u_jitter: float) -> float:
        m_bin = min(int(min_prev / self._bin), self._n - 1)
        j = min(bisect.bisect_right(self._cdf[state][m_bin], u_bin), self._n - 1)
        return min(1.0, max(0.0, (j + u_jitter) * self._bin))

    def _reported(self, raw: float) -> float:
        return raw if self._power == 1.0 else raw**self._power

    def _tokens(self, model: TokenModel, u: float, doubt: float) -> int:
        """Lognormal length; ``doubt`` (standard normal, high = low score) shifts it."""
        mu, sigma = model.log_params
        z = _normal(u)
        if self._rho:
            z = self._rho * doubt + math.sqrt(1 - self._rho**2) * z
        return max(1, min(self.step_max_tokens, round(math.exp(mu + sigma * z))))

    # -- episodes ---------------------------------------------------------------------------
    def _play(self, policy: RoutingPolicy, run: _Episode) -> tuple[bool, int]:
        """Simulate question ``run.index``."""
        cal = self.calibration
        rng = random.Random(run.seed * 1_000_003 + run.index)
        u = [rng.random() for _ in range(_SLOTS * self.max_steps)]
        z = cal.difficulty_sd * _normal(rng.random()) if cal.difficulty_sd else 0.0
        # step accuracies [weak, strong][ends the solution]; z: this question's difficulty
        acc = [[cal.step_accuracy(m, z, final=f) for f in (False, True)] for m in _AUTHORS]
        prefix_ok = True
        hidden: list[float] = []  # PRM scores of accepted steps on the tables' scale
        reported: list[float] = []  # the same as the PRM reports them (score_power)
        shown: list[float | None] = []  # what the graph's trim_steps would hold
        authors: list[str] = []
        step_tokens: list[int] = []
        for t in range(self.max_steps):
            b = t * _SLOTS
            last = t + 1 >= self.max_steps
            ends = (  # would a weak / a strong step here end the solution? (one uniform)
                last or u[b + 8] < self._hazard_weak[t + 1],
                last or u[b + 8] < self._hazard_strong[t + 1],
            )
            if prefix_ok:
                draft_ok = u[b] < acc[0][ends[0]]
                state = 0 if draft_ok else 2
            else:
                draft_ok, state = False, 1
            min_prev = min(hidden) if hidden else 1.0
            draft_raw = self._score(state, min_prev, u[b + 1], u[b + 2])
            draft_score = self._reported(draft_raw)
            doubt = -_normal(u[b + 1]) if self._rho else 0.0
            draft_tokens = self._tokens(cal.step_tokens("weak", final=ends[0]), u[b + 3], doubt)
            run.weak_tokens += draft_tokens
            limit = self.step_max_tokens
            obs = self._observe(run, t, shown, draft_tokens, step_tokens, authors, limit)
            scored = policy.needs_score(obs)
            if scored:
                run.prm_calls += 1
                shown = list(reported)  # one PRM call scores the whole prefix
                obs = self._observe(
                    run, t, shown, draft_tokens, step_tokens, authors, limit, draft_score
                )
            decision = decide_step(policy, obs, step_max_tokens=self.step_max_tokens)
            action, was_blocked = decision.action, decision.budget_blocked
            run.budget_blocked += was_blocked
            if action == "escalate":
                if prefix_ok:
                    prefix_ok = u[b + 4] < acc[1][ends[1]]
                    after = 0 if prefix_ok else 2
                else:
                    after = 1
                tokens = self._tokens(cal.step_tokens("strong", final=ends[1]), u[b + 7], doubt)
                run.escalated(draft_tokens, tokens)
                hidden.append(self._score(after, min_prev, u[b + 5], u[b + 6]))
                reported.append(self._reported(hidden[-1]))
                shown.append(None)
                author = "strong"
            else:
                prefix_ok = prefix_ok and draft_ok
                tokens = draft_tokens
                hidden.append(draft_raw)
                reported.append(draft_score)
                shown.append(draft_score if scored else None)
                author = "weak"
            step_tokens.append(tokens)
            authors.append(author)
            if run.record_steps:
                run.records.append(
                    {
                        "index": t,
                        "author": author,
                        "model": f"sim-{author}",
                        "tokens": tokens,
                        "draft_score": draft_score if (scored or run.score_all) else None,
                        "decision": action,
                        "reason": decision.reason,
                        "draft_tokens": draft_tokens,
                        "budget_blocked": was_blocked,
                        "sim_state": STATES[state],
                    }
                )
            if ends[author == "strong"]:
                break
        if run.record_steps:
            final = reported if run.score_all else shown
            for rec, score in zip(run.records, final, strict=True):
                rec["score"] = score
        return prefix_ok, len(step_tokens)

    def run(
        self,
        policy: RoutingPolicy,
        n_episodes: int = 500,
        *,
        seed: int = 0,
        budget: int | Sequence[int | None] | None = None,
        record_steps: bool = False,
        score_all: bool = False,
    ) -> SimSummary:
        """Simulate ``n_episodes`` questions; ``budget`` is one cap or one per question."""
        if n_episodes < 0:
            raise ValueError(f"n_episodes must be >= 0, got {n_episodes}")
        if budget is None or isinstance(budget, int):
            budgets: Sequence[int | None] = [budget] * n_episodes
        else:
            budgets = list(budget)
            if len(budgets) != n_episodes:
                raise ValueError(f"{len(budgets)} budgets for {n_episodes} episodes")
        episodes = tuple(
            self.episode(
                policy,
                i,
                seed=seed,
                budget=budgets[i],
                record_steps=record_steps,
                score_all=score_all,
            )
            for i in range(n_episodes)
        )
        return SimSummary(policy=policy.name, episodes=episodes)

    def sweep(
        self, policies: Iterable[RoutingPolicy], n_episodes: int = 500, **kwargs: Any
    ) -> list[SimSummary]:
        """:meth:`run` for each policy with the same seed (common random numbers)."""
        return [self.run(p, n_episodes, **kwargs) for p in policies]


__all__ = ["EpisodeEnv", "EpisodeResult", "SimEnv", "SimSummary"]
