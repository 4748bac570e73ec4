"""Replay recorded TRIM runs as an environment, for evaluation and (limited) training.

A trace is one graph run on one question: ``{"question_id": ..., "steps": [StepRecord
dicts], "correct": bool}``.  Several runs of the same question (always-weak,
always-strong, a threshold sweep...) form a tree: with seeded decoding (the release
samples with a fixed seed) the same accepted prefix gives the same next draft, so two
runs that took the same actions up to step t share everything up to step t.

What a replay can answer: the draft at step t after any recorded action prefix, and
what follows an action that some run took after that same prefix.  What it cannot:
"what if we escalated step t" when no run escalated step t after exactly that prefix —
that needs the strong rewrite *and* every weak continuation after it.  Such a step
raises :class:`~langchain_trim.lab.ppo.MissingBranchError`; PPO skips the
episode and counts it, evaluation reports how many were skipped.  So a replay trains
only policies that stay close to the recorded ones (a dense threshold sweep covers
threshold-like behaviour); train on a simulator fitted to the same traces
(:func:`~langchain_trim.lab.sim.fit_calibration`) for anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_trim.lab.ppo import MissingBranchError
from langchain_trim.lab.sim.env import EpisodeEnv, _Episode
from langchain_trim.policies.base import RoutingPolicy
from langchain_trim.policies.rule import decide_step

ActionPath = tuple[int, ...]
"""Actions so far: 0 kept the weak draft, 1 the strong model wrote the step."""


@dataclass(frozen=True)
class _Outcome:
    author: str
    tokens: int
    score: float | None
    end: bool
    correct: bool


@dataclass
class _Question:
    drafts: dict[ActionPath, tuple[float | None, int]]
    outcomes: dict[ActionPath, _Outcome]


class ReplayEnv(EpisodeEnv):
    """Recorded runs as a :class:`~langchain_trim.lab.ppo.TrainingEnv`.

    >>> weak = {"question_id": "q", "correct": False, "steps": [
    ...     {"author": "weak", "tokens": 30, "score": 0.2, "draft_score": 0.2,
    ...      "draft_tokens": 30}]}
    >>> strong = {"question_id": "q", "correct": True, "steps": [
    ...     {"author": "strong", "tokens": 40, "score": 0.9, "draft_score": 0.2,
    ...      "draft_tokens": 30}]}
    >>> from langchain_trim.policies import ThresholdPolicy
    >>> env = ReplayEnv([weak, strong])
    >>> env.episode(ThresholdPolicy(0.5)).correct, env.episode(ThresholdPolicy(0.1)).correct
    (True, False)
    """

    def __init__(
        self,
        traces: Iterable[Mapping[str, Any]],
        *,
        step_max_tokens: int = 512,
        max_steps: int = 30,
        question_key: str = "question_id",
    ) -> None:
        self.step_max_tokens = step_max_tokens
        self.max_steps = max_steps
        self.conflicts = 0
        """Recorded runs that disagreed with an earlier one on a shared prefix."""
        questions: dict[str, _Question] = {}
        for trace in traces:
            qid = str(trace.get(question_key, trace.get("question", "")))
            q = questions.setdefault(qid, _Question({}, {}))
            self._add(q, trace)
        self.question_ids = sorted(questions)
        self._questions = [questions[k] for k in self.question_ids]

    def __len__(self) -> int:
        return len(self._questions)

    def _add(self, q: _Question, trace: Mapping[str, Any]) -> None:
        steps = list(trace.get("steps") or [])[: self.max_steps]
        path: ActionPath = ()
        for t, step in enumerate(steps):
            draft_score = step.get("draft_score")
            if draft_score is None and step.get("author") == "weak":
                draft_score = step.get("score")
            draft = (draft_score, int(step.get("draft_tokens") or step.get("tokens") or 0))
            if q.drafts.setdefault(path, draft) != draft:
                self.conflicts += 1
            action = 1 if step.get("author") == "strong" else 0
            path = (*path, action)
            end = t == len(steps) - 1
            outcome = _Outcome(
                author=str(step.get("author")),
                tokens=int(step.get("tokens") or 0),
                score=step.get("score"),
                end=end,
                correct=bool(trace.get("correct")) if end else False,
            )
            if q.outcomes.setdefault(path, outcome) != outcome:
                self.conflicts += 1

    def _play(self, policy: RoutingPolicy, run: _Episode) -> tuple[bool, int]:
        """Replay question ``run.index`` (``run.seed`` is unused: a replay is deterministic)."""
        index = run.index
        q = self._questions[index % len(self._questions)]
        path: ActionPath = ()
        scores: list[float | None] = []
        tokens: list[int] = []
        correct = False
        for t in range(self.max_steps):
            if path not in q.drafts:
                raise MissingBranchError(f"question {index}: no recorded draft after {path}")
            draft_score, draft_tokens = q.drafts[path]
            run.weak_tokens += draft_tokens
            obs = self._observe(run, t, scores, draft_tokens, tokens)
            if policy.needs_score(obs):
                run.prm_calls += 1
                obs = obs.with_score(draft_score)
            decision = decide_step(policy, obs, step_max_tokens=self.step_max_tokens)
            action = 1 if decision.action == "escalate" else 0
            was_blocked = decision.budget_blocked
            run.budget_blocked += was_blocked
            path = (*path, action)
            outcome = q.outcomes.get(path)
            if outcome is None:
                raise MissingBranchError(f"question {index}: no recorded run took {path}")
            if action:
                run.escalated(draft_tokens, outcome.tokens)
            scores.append(outcome.score)
            tokens.append(outcome.tokens)
            if run.record_steps:
                run.records.append(
                    {
                        "index": t,
                        "author": outcome.author,
                        "tokens": outcome.tokens,
                        "score": outcome.score,
                        "draft_score": draft_score,
                        "draft_tokens": draft_tokens,
                        "decision": "escalate" if action else "continue",
                        "reason": decision.reason,
                        "budget_blocked": was_blocked,
                    }
                )
            if outcome.end:
                correct = outcome.correct
                break
        return correct, len(tokens)


__all__ = ["ReplayEnv"]
