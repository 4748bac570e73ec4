"""The strong model's attempts at one escalated step: retries, backoff and durability.

An escalation makes up to ``RetryPolicy.max_attempts`` strong calls.  Every attempt's
tokens are charged, no retry is made once the budget left cannot cover one, and with a
checkpointer each attempt runs as two LangGraph tasks, so a resumed run never pays again
for an attempt that returned and charges one that was in flight when the process died.
:class:`StrongAttempts` holds these rules; the graph's escalate node runs it and turns
the :class:`Escalation` it returns into the step's record.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._constants import CONFIG_KEY_CHECKPOINTER
from langgraph.func import task
from langgraph.types import RetryPolicy

from langchain_trim._py310 import in_runnable_context
from langchain_trim.errors import StepGenerationError, StepTimeoutError, TrimWarning
from langchain_trim.generation import StepGenerator, StepOutput
from langchain_trim.state import TrimSpend
from langchain_trim.usage import flag_usage

logger = logging.getLogger("langchain_trim")
_task: Any = task  # LangGraph's decorator, typed loosely: closures of any signature


def _retry_any(exc: BaseException) -> bool:
    return True


DEFAULT_STRONG_RETRY = RetryPolicy(
    max_attempts=2, initial_interval=0.5, backoff_factor=2.0, max_interval=8.0, retry_on=_retry_any
)
"""Two attempts per escalation, 0.5 s (+ up to 1 s jitter) apart, whatever the failure."""


def checkpointed(config: RunnableConfig | None) -> bool:
    """Whether this run persists checkpoints (its own checkpointer or a parent's)."""
    conf = (config or {}).get("configurable") or {}
    return conf.get(CONFIG_KEY_CHECKPOINTER) is not None


def retryable(policy: RetryPolicy, exc: BaseException) -> bool:
    """``policy.retry_on`` applied to the error or the model error it wraps."""
    candidates = [exc]
    if isinstance(exc.__cause__, Exception):
        candidates.append(exc.__cause__)
    rule: Any = policy.retry_on
    for candidate in candidates:
        if isinstance(rule, type) and issubclass(rule, BaseException):
            hit = isinstance(candidate, rule)
        elif isinstance(rule, Sequence):
            hit = isinstance(candidate, tuple(rule))
        else:
            hit = bool(rule(candidate))
        if hit:
            return True
    return False


def backoff(policy: RetryPolicy, failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts, as LangGraph's RetryPolicy does."""
    interval = min(
        policy.max_interval, policy.initial_interval * policy.backoff_factor ** (failures - 1)
    )
    return interval + (random.uniform(0, 1) if policy.jitter else 0.0)


@dataclass
class Escalation:
    """What the attempts of one escalation cost and produced."""

    calls: int = 0
    failed_tokens: int = 0
    abandoned: int = 0
    output: StepOutput | None = None
    error: StepGenerationError | None = None
    error_record: dict[str, Any] | None = None
    stopped: str | None = None
    """Why no further attempt was made although the last one failed (the budget)."""

    def charge(self, spend: TrimSpend) -> None:
        """Add what the attempts cost to ``spend``; flag (and warn of) an overspent budget.

        Failed, abandoned or timed-out attempts may have decoded tokens: they count.
        """
        spend["strong_calls"] += self.calls
        spend["abandoned_strong_calls"] = spend.get("abandoned_strong_calls", 0) + self.abandoned
        if self.failed_tokens:
            spend["strong_tokens"] += self.failed_tokens
            spend["strong_tokens_estimated"] = True
        if self.output is not None:
            flag_usage(spend, self.output, "strong")
            spend["strong_tokens"] += self.output.tokens
            spend["strong_tokens_estimated"] = (
                spend["strong_tokens_estimated"] or self.output.tokens_estimated
            )
        budget = spend.get("budget")
        if budget is not None and spend["strong_tokens"] > budget and not spend.get("overspent"):
            spend["overspent"] = True
            message = (
                f"the strong model overspent the budget: {spend['strong_tokens']} > {budget} "
                "strong tokens (it does not honour max_tokens); no further step is escalated"
            )
            logger.warning(message)
            warnings.warn(message, TrimWarning, stacklevel=3)


@dataclass(frozen=True)
class Attempt:
    """One strong attempt the escalation asks for, with what its budget check needs."""

    question: str
    prefix: Sequence[str]
    kwargs: dict[str, Any]
    esc: Escalation
    budget: int | None
    spent: int
    """The question's strong tokens before this escalation."""
    cap: int
    """The strong call cap: what one attempt may cost."""
    durable: bool


Attempted = tuple[dict[str, Any], StepOutput | StepGenerationError | None, bool]
"""An attempt's record, its live outcome (``None`` when replayed) and whether an earlier
attempt was abandoned."""


def can_attempt(budget: int | None, spent: int, esc: Escalation, cap: int) -> bool:
    """Whether the budget still covers one more strong call of this escalation."""
    if budget is None or esc.calls == 0:
        return True  # the route node checked the first attempt
    return budget - (spent + esc.failed_tokens) >= cap


def _abandon(esc: Escalation, cap: int) -> Escalation:
    """``esc`` with one abandoned attempt charged (for the budget check before re-calling)."""
    return Escalation(calls=esc.calls + 1, failed_tokens=esc.failed_tokens + cap)


def output_record(out: StepOutput) -> dict[str, Any]:
    return {
        "ok": True,
        "text": out.text,
        "tokens": out.tokens,
        "tokens_estimated": out.tokens_estimated,
        "stop": out.stop,
        "model": out.model,
        "logprobs": list(out.logprobs) if out.logprobs is not None else None,
        "usage_note": out.usage_note,
        "overran": out.overran,
    }


def error_record(exc: StepGenerationError, retry: bool) -> dict[str, Any]:
    return {
        "ok": False,
        "type": type(exc).__name__,
        "message": str(exc),
        "step_index": exc.step_index,
        "tokens": int(exc.tokens),
        "retry": retry,
    }


def from_record(record: dict[str, Any]) -> StepOutput | StepGenerationError:
    """Rebuild an attempt's outcome from its (JSON-safe, checkpointed) record."""
    if record["ok"]:
        fields = {k: v for k, v in record.items() if k != "ok"}
        if fields["logprobs"] is not None:
            fields["logprobs"] = tuple(fields["logprobs"])
        return StepOutput(**fields)
    cls = StepTimeoutError if record["type"] == "StepTimeoutError" else StepGenerationError
    error = cls(record["message"], role="strong", step_index=record["step_index"])
    error.tokens = record["tokens"]
    return error


def error_text(exc: StepGenerationError, record: dict[str, Any] | None) -> str:
    kind = record["type"] if record is not None and not record["ok"] else type(exc).__name__
    return f"{kind}: {exc}"


def settle(
    esc: Escalation,
    record: dict[str, Any],
    live: StepOutput | StepGenerationError | None,
    abandoned: bool,
    cap: int,
    index: int,
) -> bool:
    """Fold one attempt into ``esc``; return whether another attempt may follow."""
    if abandoned:
        # An attempt began before the process stopped and left no result: the call was
        # probably made and billed.  Charge it as a whole step, estimated.
        esc.calls += 1
        esc.abandoned += 1
        esc.failed_tokens += cap
        logger.warning(
            "a strong call for step %d was in flight when the run stopped; charged its "
            "max_tokens=%d on resume",
            index,
            cap,
        )
    if record.get("skipped"):
        esc.stopped = record["skipped"]
        return False
    esc.calls += 1
    outcome = live if live is not None else from_record(record)
    if isinstance(outcome, StepOutput):
        esc.output, esc.error = outcome, None
        return False
    esc.error, esc.error_record = outcome, record
    esc.failed_tokens += outcome.tokens
    return bool(record["retry"])


@dataclass
class _Live:
    """What the two tasks of one durable attempt did in this process (a task whose result
    was saved by an earlier run is not run again)."""

    request: Attempt
    began: bool = False
    called: bool = False
    outcome: StepOutput | StepGenerationError | None = None

    def begin(self) -> bool:
        self.began = True
        return True

    def blocked(self, resumed: bool) -> dict[str, Any] | None:
        """Mark the call made; the record of a resumed call the budget no longer covers."""
        self.called = True
        r = self.request
        if resumed and not can_attempt(r.budget, r.spent, _abandon(r.esc, r.cap), r.cap):
            return {"skipped": "budget"}
        return None

    def keep(
        self, attempted: tuple[dict[str, Any], StepOutput | StepGenerationError]
    ) -> dict[str, Any]:
        record, self.outcome = attempted
        return record

    def result(self, record: dict[str, Any]) -> Attempted:
        # A call made by this run after a begin marker it did not write: one was abandoned.
        return record, self.outcome, not self.began and self.called


@dataclass(frozen=True)
class StrongAttempts:
    """The attempts of an escalation: the strong model, called under ``retry``."""

    strong_gen: StepGenerator
    retry: RetryPolicy

    def plan(
        self,
        question: str,
        prefix: Sequence[str],
        kwargs: dict[str, Any],
        *,
        budget: int | None,
        spent: int,
        cap: int,
        index: int,
        durable: bool,
    ) -> Generator[Attempt | float, Attempted | None, Escalation]:
        """The retry loop without I/O, for the sync and async drivers alike.

        Yields each attempt to make (and is sent its record, live outcome and whether an
        earlier attempt was abandoned) and the seconds to back off between attempts;
        returns the escalation.
        """
        esc = Escalation()
        for attempt in range(1, self.retry.max_attempts + 1):
            if not can_attempt(budget, spent, esc, cap):
                esc.stopped = "budget"
                break
            answer = yield Attempt(question, prefix, kwargs, esc, budget, spent, cap, durable)
            assert answer is not None
            record, outcome, abandoned = answer
            if not settle(esc, record, outcome, abandoned, cap, index) or (
                attempt == self.retry.max_attempts
            ):
                break
            yield backoff(self.retry, attempt)
        return esc

    def run(self, question: str, prefix: Sequence[str], **plan: Any) -> Escalation:
        steps = self.plan(question, prefix, **plan)
        try:
            request = next(steps)
            while True:
                request = steps.send(self._run(request))
        except StopIteration as done:
            return done.value

    async def arun(
        self, question: str, prefix: Sequence[str], config: RunnableConfig, **plan: Any
    ) -> Escalation:
        steps = self.plan(question, prefix, **plan)
        try:
            request = next(steps)
            while True:
                request = steps.send(await self._arun(request, config))
        except StopIteration as done:
            return done.value

    # -- one attempt -------------------------------------------------------------------
    def _run(self, request: Attempt | float) -> Attempted | None:
        if not isinstance(request, Attempt):
            time.sleep(request)
            return None
        if request.durable:
            return self._durable(request)
        return (*self._call(request), False)

    async def _arun(self, request: Attempt | float, config: RunnableConfig) -> Attempted | None:
        if not isinstance(request, Attempt):
            await asyncio.sleep(request)
            return None
        if request.durable:
            return await self._adurable(request, config)
        return (*await self._acall(request), False)

    def _call(self, request: Attempt) -> tuple[dict[str, Any], StepOutput | StepGenerationError]:
        try:
            out = self.strong_gen.generate(request.question, request.prefix, **request.kwargs)
        except StepGenerationError as exc:
            return error_record(exc, retryable(self.retry, exc)), exc
        return output_record(out), out

    async def _acall(
        self, request: Attempt
    ) -> tuple[dict[str, Any], StepOutput | StepGenerationError]:
        try:
            out = await self.strong_gen.agenerate(
                request.question, request.prefix, **request.kwargs
            )
        except StepGenerationError as exc:
            return error_record(exc, retryable(self.retry, exc)), exc
        return output_record(out), out

    def _durable(self, request: Attempt) -> Attempted:
        """One strong attempt as two LangGraph tasks: a marker, then the call.

        A task's result is saved when it returns, and a resumed run gets saved results
        back instead of running the task again.  A marker saved by an earlier run with no
        call result after it is a call that was in flight when that run died: it is
        reported as abandoned (and the new call is made only if the budget still covers
        it).
        """
        live = _Live(request)

        def begin() -> bool:
            return live.begin()

        def call(resumed: bool) -> dict[str, Any]:
            return live.blocked(resumed) or live.keep(self._call(request))

        _task(name="trim.strong_attempt_begin")(begin)().result()
        called = _task(name="trim.strong_attempt")(call)(not live.began)
        return live.result(called.result())

    async def _adurable(self, request: Attempt, config: RunnableConfig) -> Attempted:
        """Async :meth:`_durable`."""
        live = _Live(request)

        async def begin() -> bool:
            return live.begin()

        async def call(resumed: bool) -> dict[str, Any]:
            return live.blocked(resumed) or live.keep(await self._acall(request))

        with in_runnable_context(config):
            began = _task(name="trim.strong_attempt_begin")(begin)()
        await began
        with in_runnable_context(config):
            called = _task(name="trim.strong_attempt")(call)(not live.began)
        return live.result(await called)


__all__ = ["DEFAULT_STRONG_RETRY", "Escalation", "StrongAttempts"]
