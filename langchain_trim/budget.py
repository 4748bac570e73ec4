"""Budget control: hit a target strong-token share, and never exceed a batch-wide budget.

Two tools, for two questions a deployment asks:

* **"Spend about x% of always-strong's tokens."**  :func:`calibrate_threshold` and
  :func:`calibrate_lambda` bisect TRIM-Thr's threshold (or a policy's price per token λ)
  until the mean strong-token share on a calibration set hits the target, as RouteLLM
  calibrates its threshold on a share of strong calls.  The calibration set is a
  simulator (:func:`sim_strong_fraction`) or recorded traces
  (:func:`trace_strong_fraction`).
* **"These 10 000 questions may use at most N strong tokens, together."**
  :class:`GlobalBudget` is shared by all concurrent graph runs.  Before a step is
  escalated, :class:`GlobalBudgetPolicy` reserves the step's worst case
  (``step_max_tokens``) and keeps the draft when the reservation fails; after the
  strong call, :class:`BudgetedStepGenerator` (wrapping the strong model) settles the
  reservation with the tokens actually used, releasing the rest.  ``spent + reserved
  <= total`` holds at every moment, so the batch never exceeds its budget.  Without the
  generator wrapper every escalation is charged its worst case: still safe, just
  pessimistic.  The graph needs no change, but the budget's ``step_tokens`` must be
  its ``step_max_tokens``: a mismatch would overrun the budget and is refused with
  :class:`~langchain_trim.errors.InvalidInputError` wherever the cap is seen.

>>> budget = GlobalBudget(total=1000, step_tokens=512)
>>> budget.reserve(), budget.reserve()
(True, False)
>>> budget.settle(used=200)
>>> budget.spent, budget.reserved, budget.available
(200, 0, 800)
"""

from __future__ import annotations

import contextvars
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from langchain_trim.errors import InvalidInputError, StepGenerationError
from langchain_trim.generation import DelegatingStepGenerator, StepGenerator, StepOutput
from langchain_trim.policies.base import RouteDecision, RouteObservation, RoutingPolicy
from langchain_trim.policies.rule import budget_covers, decide_step
from langchain_trim.policies.threshold import ThresholdPolicy

logger = logging.getLogger(__name__)

StrongFraction = Callable[[RoutingPolicy], float]
"""Mean strong tokens of a policy as a share of always-strong's, on a calibration set."""


# -- calibration to a target share ---------------------------------------------------------
@dataclass(frozen=True)
class CalibrationResult:
    """The calibrated knob, the share it reaches, and the bisection's trail."""

    value: float
    fraction: float
    target: float
    iterations: int
    trail: tuple[tuple[float, float], ...]
    """Every ``(knob, share)`` tried, in order."""

    @property
    def error(self) -> float:
        return self.fraction - self.target


def bisect_monotone(
    share: Callable[[float], float],
    target: float,
    lo: float,
    hi: float,
    *,
    increasing: bool = True,
    log_scale: bool = False,
    tol: float = 0.005,
    max_iter: int = 30,
) -> CalibrationResult:
    """Bisect a (roughly) monotone ``share(knob)`` for ``target``; the closest knob wins.

    Sampled shares need not be exactly monotone or continuous; the best point tried is
    returned, so a target between two achievable shares gets the nearer one.

    >>> r = bisect_monotone(lambda k: k**2, 0.25, 0.0, 1.0, tol=1e-6)
    >>> round(r.value, 4), r.fraction <= 0.25 + 1e-6
    (0.5, True)
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target share must be in [0, 1], got {target}")
    if log_scale and (lo <= 0 or hi <= 0):
        raise ValueError("log-scale bisection needs positive bounds")
    trail: list[tuple[float, float]] = []

    def probe(x: float) -> float:
        y = share(x)
        trail.append((x, y))
        return y

    a, b = (math.log(lo), math.log(hi)) if log_scale else (lo, hi)

    def knob(u: float) -> float:
        return math.exp(u) if log_scale else u

    for end in (lo, hi):
        if abs(probe(end) - target) <= tol:
            break
    else:
        for _ in range(max_iter):
            mid = (a + b) / 2
            y = probe(knob(mid))
            if abs(y - target) <= tol:
                break
            if (y < target) == increasing:
                a = mid
            else:
                b = mid
    best_x, best_y = min(trail, key=lambda p: abs(p[1] - target))
    return CalibrationResult(best_x, best_y, target, len(trail), tuple(trail))


def calibrate_threshold(
    share: StrongFraction, target: float, *, tol: float = 0.005, max_iter: int = 30
) -> CalibrationResult:
    """The TRIM-Thr threshold whose strong-token share is ``target`` (share rises with it).

    >>> from langchain_trim.lab.sim import SimEnv
    >>> from langchain_trim.policies.calibration import synthetic_calibration
    >>> share = sim_strong_fraction(SimEnv(synthetic_calibration()), n_episodes=300)
    >>> r = calibrate_threshold(share, 0.3, tol=0.02)
    >>> abs(r.fraction - 0.3) <= 0.02
    True
    """
    return bisect_monotone(
        lambda k: share(ThresholdPolicy(min(max(k, 0.0), 1.0))),
        target,
        0.0,
        1.0,
        increasing=True,
        tol=tol,
        max_iter=max_iter,
    )


def calibrate_lambda(
    make_policy: Callable[[float], RoutingPolicy],
    share: StrongFraction,
    target: float,
    *,
    lo: float = 1e-5,
    hi: float = 3e-2,
    tol: float = 0.005,
    max_iter: int = 25,
) -> CalibrationResult:
    """The price per strong token λ at which ``make_policy(λ)`` spends ``target``.

    Bisects on a log scale; the share falls as λ rises.  Suits policies that are cheap
    to rebuild for a new λ (TRIM-POMDP: one solve, cached); for TRIM-Agg/Seq every λ is
    a training run, so calibrate their budget with :class:`GlobalBudget` instead.
    """
    return bisect_monotone(
        lambda lam: share(make_policy(lam)),
        target,
        lo,
        hi,
        increasing=False,
        log_scale=True,
        tol=tol,
        max_iter=max_iter,
    )


def sim_strong_fraction(env: Any, n_episodes: int = 2000, *, seed: int = 0) -> StrongFraction:
    """Share measured in a :class:`~langchain_trim.lab.sim.SimEnv` (common random numbers)."""
    strong = env.run(ThresholdPolicy(1.0), n_episodes, seed=seed).mean_strong_tokens
    if strong <= 0:
        raise ValueError("always-strong spends no strong tokens in this simulator")

    def share(policy: RoutingPolicy) -> float:
        return float(env.run(policy, n_episodes, seed=seed).mean_strong_tokens / strong)

    return share


def trace_strong_fraction(
    traces: Iterable[Mapping[str, Any]],
    *,
    strong_step_tokens: float,
    strong_tokens_per_question: float,
    max_steps: int = 30,
) -> StrongFraction:
    """Share estimated offline on recorded weak trajectories whose every step is scored.

    Each trace (the graph's ``trim_steps``, e.g. always-weak runs scored afterwards) is
    walked step by step; the policy sees the observation it would have seen, and each
    step it would escalate is charged ``strong_step_tokens``.  The walk stays on the
    recorded weak path (an escalation would change what follows), like RouteLLM's
    calibration; use it for the share of the first escalations, a simulator for more.
    """
    walks = [list(t.get("steps") or []) for t in traces]
    walks = [w for w in walks if w]
    if not walks or strong_tokens_per_question <= 0:
        raise ValueError("need non-empty traces and a positive strong_tokens_per_question")

    def share(policy: RoutingPolicy) -> float:
        total = 0.0
        for steps in walks:
            scores: list[float | None] = []
            tokens: list[int] = []
            spent = 0.0
            for i, step in enumerate(steps[:max_steps]):
                score = step.get("draft_score", step.get("score"))
                obs = RouteObservation(
                    step_index=i,
                    score=None if score is None else float(score),
                    previous_scores=tuple(scores),
                    step_tokens=int(step.get("draft_tokens") or step.get("tokens") or 0),
                    previous_step_tokens=tuple(tokens),
                    strong_tokens_spent=int(spent),
                    budget=None,
                    max_steps=max_steps,
                )
                rule = decide_step(policy, obs, step_max_tokens=max(1, round(strong_step_tokens)))
                if rule.action == "escalate":
                    spent += strong_step_tokens
                scores.append(obs.score)
                tokens.append(obs.step_tokens)
            total += spent
        return total / len(walks) / strong_tokens_per_question

    return share


# -- a budget shared by a batch --------------------------------------------------------------
class GlobalBudget:
    """Strong tokens for a whole batch of questions, safe across threads and asyncio tasks.

    Every escalation reserves ``step_tokens`` (the worst case of one strong step) before
    the strong model runs; :meth:`settle` turns a reservation into the tokens used.  The
    lock is held only for a few arithmetic operations and never across an ``await``.

    ``step_tokens`` must be the graph's ``step_max_tokens``: a larger cap could spend more
    than was reserved, a smaller one makes :class:`GlobalBudgetPolicy` let escalations the
    graph does not block go through unreserved.  Both overrun the budget, so a mismatch is
    refused (:meth:`check_step_cap`) where the cap is seen: by the policy when the
    observation carries it, and by :class:`BudgetedStepGenerator` on every call.
    """

    def __init__(self, total: int, step_tokens: int = 512) -> None:
        if total < 0 or step_tokens < 1:
            raise ValueError(f"need total >= 0 and step_tokens >= 1, got {total}, {step_tokens}")
        self.total = int(total)
        self.step_tokens = int(step_tokens)
        self._lock = threading.Lock()
        self._spent = 0
        self._outstanding = 0
        self.refused = 0
        """Reservations refused because the budget could not cover them."""
        self.unreserved_calls = 0
        """Settlements that had no reservation (the strong model was called past the policy)."""
        self.overshoots = 0
        """Settlements that used more than they reserved (a model ignoring ``max_tokens``)."""

    @property
    def spent(self) -> int:
        return self._spent

    @property
    def reserved(self) -> int:
        return self._outstanding * self.step_tokens

    @property
    def outstanding(self) -> int:
        """Reservations not settled yet."""
        return self._outstanding

    @property
    def available(self) -> int:
        return self.total - self._spent - self.reserved

    def check_step_cap(self, max_tokens: int) -> None:
        """Refuse a strong step cap other than ``step_tokens`` (it would overrun the budget).

        >>> GlobalBudget(60, step_tokens=20).check_step_cap(30)
        Traceback (most recent call last):
        ...
        langchain_trim.errors.InvalidInputError: GlobalBudget(step_tokens=20) ...
        """
        if int(max_tokens) != self.step_tokens:
            raise InvalidInputError(
                f"GlobalBudget(step_tokens={self.step_tokens}) does not match the strong step "
                f"cap max_tokens={max_tokens}: each escalation reserves step_tokens, so the "
                "batch budget could be overrun; build the budget with step_tokens equal to "
                "the graph's strong call cap (strong_step_max_tokens, else step_max_tokens)"
            )

    def reserve(self) -> bool:
        """Reserve one step's worst case; ``False`` (nothing reserved) when it does not fit."""
        with self._lock:
            if self._spent + (self._outstanding + 1) * self.step_tokens > self.total:
                self.refused += 1
                return False
            self._outstanding += 1
            return True

    def settle(self, used: int, steps: int = 1) -> None:
        """``steps`` reservations are done and used ``used`` tokens; the rest is released.

        ``used`` above the reserved amount would break the guarantee (it is counted in
        :attr:`overshoots` and logged); the generator wrapper asks for no more than
        ``step_tokens`` per step so that a model honouring ``max_tokens`` cannot.
        """
        if used < 0 or steps < 0:
            raise ValueError("used and steps must be >= 0")
        with self._lock:
            unreserved = max(steps - self._outstanding, 0)
            self.unreserved_calls += unreserved
            steps -= unreserved
            over = used > steps * self.step_tokens
            if over:
                self.overshoots += 1
            self._outstanding -= steps
            self._spent += int(used)
            spent = self._spent
        if over:
            logger.warning(
                "GlobalBudget: %d strong tokens used against %d reserved (%s); spent %d of %d",
                used,
                steps * self.step_tokens,
                f"{unreserved} call(s) had no reservation"
                if unreserved
                else "the model did not honour max_tokens",
                spent,
                self.total,
            )

    def cancel(self, steps: int = 1) -> None:
        """Release reservations that were not used (e.g. the strong call failed for good)."""
        self.settle(0, steps)

    def cancel_outstanding(self) -> int:
        """Release every open reservation (call when the batch is over); returns how many."""
        with self._lock:
            n, self._outstanding = self._outstanding, 0
            return n

    def snapshot(self) -> dict[str, int]:
        """A consistent copy of the counters."""
        with self._lock:
            return {
                "total": self.total,
                "spent": self._spent,
                "reserved": self._outstanding * self.step_tokens,
                "available": self.total - self._spent - self._outstanding * self.step_tokens,
                "refused": self.refused,
            }

    def __repr__(self) -> str:
        return f"GlobalBudget(total={self.total}, spent={self._spent}, reserved={self.reserved})"


class GlobalBudgetPolicy:
    """Wrap a policy so that its escalations draw on a :class:`GlobalBudget`.

    The inner policy decides; an escalation goes through only if a worst-case step can
    be reserved, else the draft is kept (reason says so).  An escalation that the
    graph's per-question budget will block anyway reserves nothing.  Once the global
    budget cannot cover a step the PRM is not called any more.  The budget's
    ``step_tokens`` must be the graph's ``step_max_tokens``: an observation that carries
    another cap raises :class:`~langchain_trim.errors.InvalidInputError`.  Wrap the
    strong model with :class:`BudgetedStepGenerator` to get unused tokens back.
    """

    def __init__(self, inner: RoutingPolicy, budget: GlobalBudget) -> None:
        self.inner = inner
        self.budget = budget

    @property
    def name(self) -> str:
        return f"{self.inner.name}+global"

    def _check(self, observation: RouteObservation) -> None:
        cap = getattr(observation, "step_max_tokens", None)
        if cap is not None:
            self.budget.check_step_cap(cap)

    def needs_score(self, observation: RouteObservation) -> bool:
        self._check(observation)
        if self.budget.available < self.budget.step_tokens:
            return False
        return self.inner.needs_score(observation)

    def decide(self, observation: RouteObservation) -> RouteDecision:
        self._check(observation)
        if self.budget.available < self.budget.step_tokens:
            return RouteDecision(
                "continue",
                f"global budget exhausted ({self.budget.available} strong tokens left < step "
                f"cap {self.budget.step_tokens}); draft kept without a PRM call",
            )
        decision = self.inner.decide(observation)
        if decision.action != "escalate":
            return decision
        if not budget_covers(observation.budget_left, self.budget.step_tokens):
            return decision  # the routing rule blocks it: nothing to reserve
        if self.budget.reserve():
            return decision
        return RouteDecision(
            "continue",
            f"{decision.reason}; global budget exhausted "
            f"({self.budget.available} strong tokens left < step cap {self.budget.step_tokens})",
        )

    def __repr__(self) -> str:
        return f"GlobalBudgetPolicy({self.inner!r}, {self.budget!r})"


_UNFUNDED: contextvars.ContextVar[tuple[int, str, int] | None] = contextvars.ContextVar(
    "trim_global_budget_unfunded", default=None
)
"""The step whose reservation a failed attempt used up: its retry must reserve anew."""


def spent_tokens(exc: BaseException) -> int:
    """Output tokens a failed model call reports it spent (``tokens`` on it or its causes).

    :class:`~langchain_trim.errors.ModelTimeoutError` and step errors that carry a
    ``tokens`` count are read; the largest count in the chain wins, so nothing is
    under-charged.  0 when none says.
    """
    most = 0
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tokens = getattr(current, "tokens", None)
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > most:
            most = tokens
        current = current.__cause__ or current.__context__
    return most


class BudgetedStepGenerator(DelegatingStepGenerator):
    """The strong model's step generator, settling :class:`GlobalBudget` reservations.

    Every call is checked against the reservation: ``max_tokens`` must be the budget's
    ``step_tokens`` (else :class:`~langchain_trim.errors.InvalidInputError`: the graph's
    step cap and the budget disagree, which would overrun it), and each call is settled
    with the tokens it reports.  A call that fails having spent nothing keeps its
    reservation for the graph's retry; one that fails after spending tokens (an
    abandoned, timed-out call: ``tokens`` on the error or its cause) is charged them, and
    its retry must reserve again or is refused without calling the model.  Call
    :meth:`GlobalBudget.cancel_outstanding` after the batch to release leftovers.
    """

    def __init__(self, inner: StepGenerator, budget: GlobalBudget) -> None:
        self.inner = inner
        self.budget = budget
        self.name = inner.name

    def _begin(self, question: str, prefix: Sequence[str], max_tokens: int) -> tuple[int, str, int]:
        """Check the call against the budget; fund a retry whose reservation was used."""
        self.budget.check_step_cap(max_tokens)
        key = (id(self), question, len(prefix))
        if _UNFUNDED.get() == key and not self.budget.reserve():
            raise StepGenerationError(
                f"strong model {self.name} not called again: its failed attempt spent "
                "the step's reservation and the global budget cannot cover a retry",
                role="strong",
                step_index=len(prefix),
            )
        _UNFUNDED.set(None)
        return key

    @contextmanager
    def _delegate(
        self, question: str, prefix: Sequence[str], max_tokens: int
    ) -> Iterator[StepGenerator]:
        key = self._begin(question, prefix, max_tokens)
        try:
            yield self.inner
        except Exception as exc:
            spent = spent_tokens(exc)
            if spent > 0:  # the attempt used its reservation up
                self.budget.settle(spent)
                _UNFUNDED.set(key)
            raise

    def _settle(self, out: StepOutput) -> StepOutput:
        self.budget.settle(out.tokens)
        return out


__all__ = [
    "BudgetedStepGenerator",
    "CalibrationResult",
    "GlobalBudget",
    "GlobalBudgetPolicy",
    "StrongFraction",
    "bisect_monotone",
    "calibrate_lambda",
    "calibrate_threshold",
    "sim_strong_fraction",
    "spent_tokens",
    "trace_strong_fraction",
]
