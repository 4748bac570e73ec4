"""``create_trim_graph``: TRIM as an uncompiled LangGraph ``StateGraph``.

The loop, one step at a time::

    prepare → draft ─┬─(policy needs a score)→ score → route ─┬─ continue → accept ─┬→ draft
                     └──────────────────────────────→ route   └─ escalate → escalate ┴→ finish

``draft`` asks the weak model for the next step, ``score`` asks the PRM, ``route`` asks
the policy and enforces the budget, ``escalate`` has the strong model rewrite the step
from the same accepted prefix (the weak draft is never shown to it), ``accept`` keeps the
draft.  Only the output schema's keys (``trim_*`` and, by ``output_mode``, ``messages``)
reach a caller or parent graph, so the graph nests in any parent.

The builder compiles to a :class:`CompiledTrimGraph`: a ``CompiledStateGraph`` that needs
no ``recursion_limit`` from its callers and checkpoints every step before the next one
starts (``durability="sync"``) when a checkpointer is in use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import math
import random
import sys
import time
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config, var_child_runnable_config
from langchain_core.tools import BaseTool
from langgraph._internal._constants import CONFIG_KEY_CHECKPOINTER, CONFIG_KEY_DURABILITY
from langgraph._internal._runnable import RunnableCallable
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.func import task
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, RetryPolicy

from langchain_trim.budget import BudgetedStepGenerator, GlobalBudget, GlobalBudgetPolicy
from langchain_trim.context import TrimContext, TrimSettings, check_budget
from langchain_trim.errors import (
    InvalidInputError,
    PRMError,
    StepGenerationError,
    StepTimeoutError,
    TrimWarning,
)
from langchain_trim.events import DoneEvent, StepEvent, TrimEvent
from langchain_trim.generation import (
    GenerationMode,
    StepGenerator,
    StepOutput,
    as_step_generator,
)
from langchain_trim.models import ChatModelLike
from langchain_trim.policies.base import RouteObservation, RoutingPolicy
from langchain_trim.policies.rule import decide_step
from langchain_trim.prm.base import ProcessRewardModel, StepObserver, validate_scores
from langchain_trim.state import (
    OutputMode,
    PendingDraft,
    StepRecord,
    Termination,
    TrimInput,
    TrimOnlyOutput,
    TrimOutput,
    TrimSpend,
    TrimState,
    new_spend,
)
from langchain_trim.step_format import StepFormat, get_step_format
from langchain_trim.steps import extract_boxed, has_final_answer, logical_steps, render_solution

FailureMode = Literal["raise", "warn", "keep_draft"]
"""What a strong-model or PRM failure does: ``"raise"`` a typed error, ``"warn"`` (keep the
draft, record it, and ``warnings.warn`` + log it) or ``"keep_draft"`` (record and log it)."""

PRMErrorMode = FailureMode  # the name of earlier versions

_FAILURE_MODES = ("raise", "warn", "keep_draft")
_OUTPUT_MODES = ("full", "last_message", "trim_only")
SUPER_STEPS_PER_STEP = 4
"""LangGraph super-steps one TRIM step takes at most (draft, score, route, accept/escalate)."""
# a commit with fewer super-steps left ends the solution: the next step and ``finish``
# must still fit under the recursion limit
_MIN_REMAINING = SUPER_STEPS_PER_STEP + 2
# Python < 3.11 does not carry context variables into asyncio tasks, and LangGraph's
# stream writer and task calls read the config from one: set it around them there.
_SET_CONFIG_VAR = sys.version_info < (3, 11)

logger = logging.getLogger("langchain_trim")
_task: Any = task  # LangGraph's decorator, typed loosely: closures of any signature


def _retry_any(exc: BaseException) -> bool:
    return True


DEFAULT_STRONG_RETRY = RetryPolicy(
    max_attempts=2, initial_interval=0.5, backoff_factor=2.0, max_interval=8.0, retry_on=_retry_any
)
"""Two attempts per escalation, 0.5 s (+ up to 1 s jitter) apart, whatever the failure."""


def recursion_limit(max_steps: int = 30) -> int:
    """A LangGraph ``recursion_limit`` that fits a TRIM run of ``max_steps`` steps.

    A compiled TRIM graph raises a smaller limit to this one by itself, so callers need
    not pass it (``batch``/``abatch`` and LCEL chains pass LangChain's default of 25).

    >>> recursion_limit(30)
    130
    """
    return SUPER_STEPS_PER_STEP * max_steps + 10


def _call_with_timeout(fn: Callable[[], Any], timeout: float | None) -> Any:
    """Run ``fn`` and give up after ``timeout`` seconds (the caller's context kept)."""
    if timeout is None:
        return fn()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(contextvars.copy_context().run, fn).result(timeout=timeout)
    except concurrent.futures.TimeoutError as exc:
        raise PRMError(f"PRM did not answer within {timeout}s") from exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _fall_back(
    spend: TrimSpend,
    counter: Literal["prm_errors", "strong_errors"],
    mode: FailureMode,
    message: str,
) -> None:
    """Count a kept-draft fallback (in all and under ``counter``) and make it loud: warn
    and log (``"warn"``) or log (``"keep_draft"``)."""
    spend["fallbacks"] += 1
    spend[counter] = spend.get(counter, 0) + 1
    if mode == "warn":
        logger.warning(message)
        warnings.warn(message, TrimWarning, stacklevel=3)
    else:
        logger.info(message)


@contextmanager
def _in_runnable_context(config: RunnableConfig | None) -> Iterator[None]:
    """Make ``config`` what ``langgraph.config.get_config()`` returns (Python < 3.11 only)."""
    if not _SET_CONFIG_VAR or config is None:
        yield
        return
    token = var_child_runnable_config.set(config)
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)


def _spend_view(state: TrimState) -> Mapping[str, Any]:
    """The spend so far, read-only (empty before ``prepare``)."""
    return state.get("trim_spend") or {}


def _checkpointed(config: RunnableConfig | None) -> bool:
    """Whether this run persists checkpoints (its own checkpointer or a parent's)."""
    conf = (config or {}).get("configurable") or {}
    return conf.get(CONFIG_KEY_CHECKPOINTER) is not None


def _retryable(policy: RetryPolicy, exc: BaseException) -> bool:
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


def _backoff(policy: RetryPolicy, failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts, as LangGraph's RetryPolicy does."""
    interval = min(
        policy.max_interval, policy.initial_interval * policy.backoff_factor ** (failures - 1)
    )
    return interval + (random.uniform(0, 1) if policy.jitter else 0.0)


@dataclass
class _Escalation:
    """What the attempts of one escalation cost and produced."""

    calls: int = 0
    failed_tokens: int = 0
    abandoned: int = 0
    output: StepOutput | None = None
    error: StepGenerationError | None = None
    error_record: dict[str, Any] | None = None
    stopped: str | None = None
    """Why no further attempt was made although the last one failed (the budget)."""


_Attempted = tuple[dict[str, Any], StepOutput | StepGenerationError | None, bool]
"""An attempt's record, its live outcome (``None`` when replayed) and whether an earlier
attempt was abandoned."""


@dataclass(frozen=True)
class _Attempt:
    """One strong attempt the escalation loop asks for."""

    state: TrimState
    esc: _Escalation
    settings: TrimSettings
    question: str
    prefix: Sequence[str]
    kwargs: dict[str, Any]
    durable: bool


@dataclass
class _Live:
    """What the two tasks of one durable attempt did in this process (a task whose result
    was saved by an earlier run is not run again)."""

    request: _Attempt
    began: bool = False
    called: bool = False
    outcome: StepOutput | StepGenerationError | None = None

    def begin(self) -> bool:
        self.began = True
        return True

    def blocked(self, nodes: _TrimNodes, resumed: bool) -> dict[str, Any] | None:
        """Mark the call made; the record of a resumed call the budget no longer covers."""
        self.called = True
        state, esc, settings = self.request.state, self.request.esc, self.request.settings
        if resumed and not nodes._can_attempt(state, _abandon(esc, settings), settings):
            return {"skipped": "budget"}
        return None

    def keep(
        self, attempted: tuple[dict[str, Any], StepOutput | StepGenerationError]
    ) -> dict[str, Any]:
        record, self.outcome = attempted
        return record

    def result(self, record: dict[str, Any]) -> _Attempted:
        # A call made by this run after a begin marker it did not write: one was abandoned.
        return record, self.outcome, not self.began and self.called


def _output_record(out: StepOutput) -> dict[str, Any]:
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


def _error_record(exc: StepGenerationError, retry: bool) -> dict[str, Any]:
    return {
        "ok": False,
        "type": type(exc).__name__,
        "message": str(exc),
        "step_index": exc.step_index,
        "tokens": int(exc.tokens),
        "retry": retry,
    }


def _from_record(record: dict[str, Any]) -> StepOutput | StepGenerationError:
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


def _error_text(exc: StepGenerationError, record: dict[str, Any] | None) -> str:
    kind = record["type"] if record is not None and not record["ok"] else type(exc).__name__
    return f"{kind}: {exc}"


@dataclass(kw_only=True, eq=False)
class _TrimNodes:
    """The node functions, closed over the models, the PRM, the policy and settings."""

    draft_gen: StepGenerator
    strong_gen: StepGenerator
    prm: ProcessRewardModel | None
    policy: RoutingPolicy
    defaults: TrimSettings
    delimiter: str
    on_prm_error: FailureMode
    on_strong_error: FailureMode
    strong_retry: RetryPolicy
    output_mode: OutputMode
    timeout: float | None = None

    def __post_init__(self) -> None:
        # RunnableCallable, not RunnableLambda: same traced runs, but it inspects the
        # function signature once instead of on every call (~0.2 ms/step of router time).
        self.prm_runnable = RunnableCallable(self._prm_call, self._aprm_call, name="trim.prm")
        self.route_runnable = RunnableCallable(_identity, name="trim.route")

    # -- shared helpers ------------------------------------------------------------
    def settings(self, runtime: Runtime[Any] | None) -> TrimSettings:
        return self.defaults.with_context(runtime.context if runtime is not None else None)

    @staticmethod
    def spend(state: TrimState) -> TrimSpend:
        return TrimSpend(**(state.get("trim_spend") or new_spend()))

    @staticmethod
    def budget(state: TrimState) -> int | None:
        """The budget the current question runs under (resolved by ``prepare``)."""
        return _spend_view(state).get("budget")

    @staticmethod
    def write(runtime: Runtime[Any], config: RunnableConfig | None, event: TrimEvent) -> None:
        """``runtime.stream_writer(event)``, made to work in async code on Python 3.10."""
        if not _SET_CONFIG_VAR:
            runtime.stream_writer(event)
            return
        with _in_runnable_context(config):
            runtime.stream_writer(event)

    def prefix(self, state: TrimState) -> tuple[list[str], bool]:
        """The accepted steps as the models see them, and whether the last one is open."""
        steps = state.get("trim_steps") or []
        return logical_steps([s["text"] for s in steps], [s["stop"] == "length" for s in steps])

    @staticmethod
    def chunks(state: TrimState) -> list[str]:
        """Accepted step texts as recorded (what the PRM scores, one per record)."""
        return [s["text"] for s in state.get("trim_steps") or []]

    @staticmethod
    def _gen_kwargs(
        settings: TrimSettings, open_step: bool, config: RunnableConfig, *, strong: bool = False
    ) -> dict[str, Any]:
        cap = settings.strong_max_tokens if strong else settings.step_max_tokens
        kwargs: dict[str, Any] = {"max_tokens": cap, "config": config}
        if open_step:  # only then: generators written before continuation keep working
            kwargs["continue_last"] = True
        return kwargs

    def observation(
        self, state: TrimState, draft: PendingDraft, settings: TrimSettings
    ) -> RouteObservation:
        steps = state.get("trim_steps") or []
        spend = _spend_view(state)
        return RouteObservation(
            step_index=draft["index"],
            score=draft.get("score"),
            previous_scores=tuple(s["score"] for s in steps),
            step_tokens=draft["tokens"],
            previous_step_tokens=tuple(s["tokens"] for s in steps),
            strong_tokens_spent=spend.get("strong_tokens", 0),
            budget=spend.get("budget"),
            max_steps=settings.max_steps,
            previous_authors=tuple(s["author"] for s in steps),
            step_max_tokens=settings.strong_max_tokens,
        )

    def _prm_call(self, inputs: dict[str, Any]) -> list[float]:
        assert self.prm is not None
        return self.prm.score(inputs["question"], inputs["steps"])

    async def _aprm_call(self, inputs: dict[str, Any]) -> list[float]:
        assert self.prm is not None
        return await self.prm.ascore(inputs["question"], inputs["steps"])

    @staticmethod
    def _child_config(config: RunnableConfig | None, **metadata: Any) -> RunnableConfig:
        cfg: RunnableConfig = {"metadata": {**metadata}}
        if config:
            cfg = {**config, "metadata": {**(config.get("metadata") or {}), **metadata}}
            callbacks = cfg.get("callbacks")
            if isinstance(callbacks, BaseCallbackManager):
                # RunnableCallable adds the metadata to the manager in place: keep the
                # node's own manager clean.
                cfg["callbacks"] = callbacks.copy()
        return cfg

    # -- prepare ---------------------------------------------------------------------
    def prepare(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        """Validate the question and budget, and reset every per-question key."""
        settings = self.settings(runtime)
        question = state.get("question")
        messages = state.get("messages") or []
        if messages and isinstance(messages[-1], HumanMessage):
            question = str(messages[-1].text)
        if question is None:
            raise InvalidInputError(
                "no question: pass {'question': ...} or messages ending in a HumanMessage"
            )
        if not isinstance(question, str):
            raise InvalidInputError(f"question must be a string, got {type(question).__name__}")
        question = question.strip()
        if not question:
            raise InvalidInputError("question is empty")
        if len(question) > settings.max_question_chars:
            raise InvalidInputError(
                f"question has {len(question)} characters, more than max_question_chars="
                f"{settings.max_question_chars}"
            )
        # ``trim_budget`` is an ephemeral input: only this question's own value is seen.
        given = state.get("trim_budget")
        budget = check_budget(given if given is not None else settings.budget)
        _check_budget_covers_a_step(budget, settings.strong_max_tokens)
        if self.prm is None and self.policy.needs_score(
            RouteObservation(0, None, (), 0, (), 0, budget, settings.max_steps)
        ):
            raise InvalidInputError(f"policy {self.policy.name} needs PRM scores but prm is None")
        spend = new_spend()
        spend["budget"] = budget
        return {
            "question": question,
            "trim_steps": Overwrite([]),
            "trim_draft": None,
            "trim_spend": spend,
            "trim_final_answer": None,
            "trim_solution": None,
            "trim_termination": None,
            "trim_overspent": False,
        }

    # -- draft -------------------------------------------------------------------------
    def _after_weak(
        self, state: TrimState, out: StepOutput, settings: TrimSettings
    ) -> dict[str, Any]:
        spend = self.spend(state)
        spend["weak_calls"] += 1
        self._check_usage(spend, out, "draft")
        spend["weak_tokens"] += out.tokens
        spend["weak_tokens_estimated"] = spend["weak_tokens_estimated"] or out.tokens_estimated
        index = len(state.get("trim_steps") or [])
        if not out.text:
            if index == 0:
                raise StepGenerationError(
                    f"draft model {out.model} returned no text for the first step",
                    role="draft",
                    step_index=0,
                )
            return {"trim_spend": spend, "trim_draft": None, "trim_termination": "end_of_text"}
        draft = PendingDraft(
            index=index,
            text=out.text,
            model=out.model,
            tokens=out.tokens,
            tokens_estimated=out.tokens_estimated,
            stop=out.stop,
            logprobs=list(out.logprobs) if out.logprobs else None,
        )
        return {"trim_spend": spend, "trim_draft": draft}

    def draft(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        settings = self.settings(runtime)
        prefix, open_step = self.prefix(state)
        out = self.draft_gen.generate(
            state["question"], prefix, **self._gen_kwargs(settings, open_step, config)
        )
        return self._after_weak(state, out, settings)

    async def adraft(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        settings = self.settings(runtime)
        prefix, open_step = self.prefix(state)
        out = await self.draft_gen.agenerate(
            state["question"], prefix, **self._gen_kwargs(settings, open_step, config)
        )
        return self._after_weak(state, out, settings)

    def after_draft(
        self, state: TrimState, runtime: Runtime[Any]
    ) -> Literal["score", "route", "finish"]:
        draft = state.get("trim_draft")
        if draft is None:
            return "finish"
        obs = self.observation(state, draft, self.settings(runtime))
        return "score" if self.policy.needs_score(obs) else "route"

    # -- score -------------------------------------------------------------------------
    def _observe(self, question: str, text: str, logprobs: Sequence[float] | None) -> None:
        if isinstance(self.prm, StepObserver):
            self.prm.observe_step(question, text, logprobs)

    def _score_inputs(self, state: TrimState) -> dict[str, Any]:
        draft = state["trim_draft"]
        assert draft is not None
        self._observe(state["question"], draft["text"], draft.get("logprobs"))
        return {"question": state["question"], "steps": [*self.chunks(state), draft["text"]]}

    def _after_score(self, state: TrimState, scores: list[float] | BaseException) -> dict[str, Any]:
        draft = PendingDraft(**state["trim_draft"])  # type: ignore[typeddict-item]
        spend = self.spend(state)
        spend["prm_calls"] += 1
        steps = state.get("trim_steps") or []
        update: dict[str, Any] = {"trim_spend": spend}
        if isinstance(scores, BaseException):
            error = scores
        else:
            try:
                scores = validate_scores(scores, len(steps) + 1)
                error = None
            except PRMError as exc:
                error = exc
        if error is not None:
            if self.on_prm_error == "raise":
                if isinstance(error, PRMError):
                    raise error
                raise PRMError(f"PRM failed at step {draft['index']}: {error}") from error
            draft["score"] = None
            draft["fallback"] = f"prm_error: {type(error).__name__}: {error}"
            _fall_back(
                spend,
                "prm_errors",
                self.on_prm_error,
                f"PRM failed at step {draft['index']} ({type(error).__name__}: {error}); "
                "the draft is routed unscored",
            )
        else:
            assert isinstance(scores, list)
            draft["score"] = scores[-1]
            # Fill in scores of accepted steps that had none (strong rewrites): the whole
            # trajectory goes back, since an update from step 0 replaces (merge_steps).
            if any(s["score"] is None for s in steps):
                update["trim_steps"] = [
                    StepRecord(**{**s, "score": scores[i]}) if s["score"] is None else s
                    for i, s in enumerate(steps)
                ]
        update["trim_draft"] = draft
        return update

    def score(self, state: TrimState, config: RunnableConfig) -> dict[str, Any]:
        inputs = self._score_inputs(state)
        cfg = self._child_config(config, trim_step=state["trim_draft"]["index"])  # type: ignore[index]
        try:
            result: list[float] | BaseException = _call_with_timeout(
                lambda: self.prm_runnable.invoke(inputs, cfg), self.timeout
            )
        except Exception as exc:
            result = exc
        return self._after_score(state, result)

    async def ascore(self, state: TrimState, config: RunnableConfig) -> dict[str, Any]:
        inputs = self._score_inputs(state)
        cfg = self._child_config(config, trim_step=state["trim_draft"]["index"])  # type: ignore[index]
        try:
            call = self.prm_runnable.ainvoke(inputs, cfg)
            result: list[float] | BaseException = await (
                call if self.timeout is None else asyncio.wait_for(call, self.timeout)
            )
        except asyncio.TimeoutError as exc:
            result = PRMError(f"PRM did not answer within {self.timeout}s")
            result.__cause__ = exc
        except Exception as exc:
            result = exc
        return self._after_score(state, result)

    # -- route -------------------------------------------------------------------------
    def route(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        settings = self.settings(runtime)
        draft = PendingDraft(**state["trim_draft"])  # type: ignore[typeddict-item]
        obs = self.observation(state, draft, settings)
        decision = decide_step(
            self.policy,
            obs,
            step_max_tokens=settings.strong_max_tokens,
            strong_trusted=not _spend_view(state).get("strong_untrusted"),
        )
        blocked, reason, left = decision.budget_blocked, decision.reason, obs.budget_left
        draft["decision"] = decision.action
        draft["reason"] = reason
        draft["budget_blocked"] = blocked
        metadata = {
            "trim_step": draft["index"],
            "trim_score": draft.get("score"),
            "trim_decision": decision.action,
            "trim_budget_blocked": blocked,
            "trim_strong_tokens": obs.strong_tokens_spent,
            "trim_budget": obs.budget,
            "trim_budget_left": left,
            "trim_policy": self.policy.name,
        }
        self.route_runnable.invoke(
            {"observation": obs.__dict__, "decision": decision.action, "reason": reason},
            self._child_config(config, **metadata),
        )
        update: dict[str, Any] = {"trim_draft": draft}
        if blocked:
            spend = self.spend(state)
            spend["budget_blocked"] += 1
            update["trim_spend"] = spend
        return update

    @staticmethod
    def after_route(state: TrimState) -> Literal["escalate", "accept"]:
        draft = state.get("trim_draft")
        return "escalate" if draft and draft.get("decision") == "escalate" else "accept"

    # -- commit (accept / escalate) ----------------------------------------------------
    def _termination(
        self, state: TrimState, record: StepRecord, settings: TrimSettings
    ) -> Termination | None:
        """Why the trajectory ends after ``record``, or ``None`` to go on.

        A step cut by the token cap does not end it: the next call continues the step.
        """
        if has_final_answer(record["text"]) and record["stop"] != "length":
            return "final_answer"
        if record["stop"] == "eos":
            return "end_of_text"
        if record["index"] + 1 >= settings.max_steps:
            return "max_steps"
        if settings.max_total_tokens is not None:
            total = sum(s["tokens"] for s in state.get("trim_steps") or []) + record["tokens"]
            if total >= settings.max_total_tokens:
                return "token_cap"
        remaining = state.get("trim_remaining_steps")
        if remaining is not None and remaining < _MIN_REMAINING:
            message = (
                f"the LangGraph recursion limit leaves {remaining} super-steps after step "
                f"{record['index']}: the solution ends here (termination 'recursion_limit'); "
                f"a TRIM run of max_steps={settings.max_steps} needs "
                f"recursion_limit >= {recursion_limit(settings.max_steps)}"
            )
            logger.warning(message)
            warnings.warn(message, TrimWarning, stacklevel=2)
            return "recursion_limit"
        return None

    def _commit(
        self,
        state: TrimState,
        record: StepRecord,
        spend: TrimSpend,
        runtime: Runtime[Any],
        config: RunnableConfig | None,
    ) -> dict[str, Any]:
        settings = self.settings(runtime)
        termination = self._termination(state, record, settings)
        budget = spend.get("budget")
        overspent = bool(spend.get("overspent", False))
        self.write(
            runtime,
            config,
            StepEvent(
                trim_event="step",
                index=record["index"],
                author=record["author"],
                model=record["model"],
                score=record["draft_score"],
                decision=record["decision"],
                budget_blocked=record["budget_blocked"],
                fallback=record["fallback"],
                tokens=record["tokens"],
                strong_tokens=spend["strong_tokens"],
                budget=budget,
                budget_left=None if budget is None else budget - spend["strong_tokens"],
                overspent=overspent,
                text=record["text"],
            ),
        )
        update: dict[str, Any] = {
            "trim_steps": [record],
            "trim_draft": None,
            "trim_spend": spend,
            "trim_termination": termination,
        }
        if overspent:
            update["trim_overspent"] = True
        return update

    @staticmethod
    def _weak_record(draft: PendingDraft, fallback: str | None) -> StepRecord:
        return StepRecord(
            index=draft["index"],
            text=draft["text"],
            author="weak",
            model=draft["model"],
            tokens=draft["tokens"],
            tokens_estimated=draft["tokens_estimated"],
            stop=draft["stop"],
            score=draft.get("score"),
            draft_score=draft.get("score"),
            decision=draft.get("decision", "continue"),
            reason=draft.get("reason", ""),
            draft=None,
            draft_tokens=draft["tokens"],
            budget_blocked=draft.get("budget_blocked", False),
            fallback=fallback if fallback is not None else draft.get("fallback"),
        )

    @staticmethod
    def _check_usage(spend: TrimSpend, out: StepOutput, role: str) -> None:
        """Count untrusted usage; a strong model that overran ``max_tokens`` is distrusted.

        Once distrusted, the route node keeps every later draft of the question (the hard
        budget cannot be guaranteed for a model that does not honour its cap).
        """
        if out.usage_note is None and not out.overran:
            return
        spend["usage_flags"] = spend.get("usage_flags", 0) + 1
        if role == "strong" and (out.overran or "over_cap" in (out.usage_note or "")):
            spend["strong_untrusted"] = True

    def accept(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        draft = state["trim_draft"]
        assert draft is not None
        record = self._weak_record(draft, None)
        return self._commit(state, record, self.spend(state), runtime, config)

    # -- escalate ----------------------------------------------------------------------
    def _can_attempt(self, state: TrimState, esc: _Escalation, settings: TrimSettings) -> bool:
        """Whether the budget still covers one more strong call of this escalation."""
        budget = self.budget(state)
        if budget is None or esc.calls == 0:
            return True  # the route node checked the first attempt
        spent = _spend_view(state).get("strong_tokens", 0) + esc.failed_tokens
        return budget - spent >= settings.strong_max_tokens

    def _settle(
        self,
        esc: _Escalation,
        record: dict[str, Any],
        live: StepOutput | StepGenerationError | None,
        abandoned: bool,
        settings: TrimSettings,
        index: int,
    ) -> bool:
        """Fold one attempt into ``esc``; return whether another attempt may follow."""
        if abandoned:
            # An attempt began before the process stopped and left no result: the call was
            # probably made and billed.  Charge it as a whole step, estimated.
            esc.calls += 1
            esc.abandoned += 1
            esc.failed_tokens += settings.strong_max_tokens
            logger.warning(
                "a strong call for step %d was in flight when the run stopped; charged its "
                "max_tokens=%d on resume",
                index,
                settings.strong_max_tokens,
            )
        if record.get("skipped"):
            esc.stopped = record["skipped"]
            return False
        esc.calls += 1
        outcome = live if live is not None else _from_record(record)
        if isinstance(outcome, StepOutput):
            esc.output, esc.error = outcome, None
            return False
        esc.error, esc.error_record = outcome, record
        esc.failed_tokens += outcome.tokens
        return bool(record["retry"])

    def _attempt(
        self, request: _Attempt
    ) -> tuple[dict[str, Any], StepOutput | StepGenerationError]:
        try:
            out = self.strong_gen.generate(request.question, request.prefix, **request.kwargs)
        except StepGenerationError as exc:
            return _error_record(exc, _retryable(self.strong_retry, exc)), exc
        return _output_record(out), out

    async def _aattempt(
        self, request: _Attempt
    ) -> tuple[dict[str, Any], StepOutput | StepGenerationError]:
        try:
            out = await self.strong_gen.agenerate(
                request.question, request.prefix, **request.kwargs
            )
        except StepGenerationError as exc:
            return _error_record(exc, _retryable(self.strong_retry, exc)), exc
        return _output_record(out), out

    def _durable_attempt(self, request: _Attempt) -> _Attempted:
        """One strong attempt as two LangGraph tasks: a marker, then the call.

        A task's result is saved when it returns, and a resumed run gets saved results
        back instead of running the task again.  A marker saved by an earlier run with no
        call result after it is a call that was in flight when that run died: it is
        reported as abandoned (and the new call is made only if the budget still covers
        it).  Returns the attempt's record, its live outcome (``None`` when replayed) and
        whether an earlier attempt was abandoned.
        """
        live = _Live(request)

        def begin() -> bool:
            return live.begin()

        def call(resumed: bool) -> dict[str, Any]:
            return live.blocked(self, resumed) or live.keep(self._attempt(request))

        _task(name="trim.strong_attempt_begin")(begin)().result()
        called = _task(name="trim.strong_attempt")(call)(not live.began)
        return live.result(called.result())

    async def _adurable_attempt(self, request: _Attempt, config: RunnableConfig) -> _Attempted:
        """Async :meth:`_durable_attempt`."""
        live = _Live(request)

        async def begin() -> bool:
            return live.begin()

        async def call(resumed: bool) -> dict[str, Any]:
            return live.blocked(self, resumed) or live.keep(await self._aattempt(request))

        with _in_runnable_context(config):
            began = _task(name="trim.strong_attempt_begin")(begin)()
        await began
        with _in_runnable_context(config):
            called = _task(name="trim.strong_attempt")(call)(not live.began)
        return live.result(await called)

    def _escalation(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> Generator[_Attempt | float | dict[str, Any], Any, None]:
        """The retry loop of :meth:`escalate` without I/O, for the sync and async nodes.

        Yields each attempt to make (and is sent its record, live outcome and whether an
        earlier attempt was abandoned) and the seconds to back off between attempts, then
        the node's update.
        """
        settings = self.settings(runtime)
        prefix, open_step = self.prefix(state)
        kwargs = self._gen_kwargs(settings, open_step, config, strong=True)
        index = state["trim_draft"]["index"]  # type: ignore[index]
        durable = _checkpointed(config)
        esc = _Escalation()
        for attempt in range(1, self.strong_retry.max_attempts + 1):
            if not self._can_attempt(state, esc, settings):
                esc.stopped = "budget"
                break
            record, outcome, abandoned = yield _Attempt(
                state, esc, settings, state["question"], prefix, kwargs, durable
            )
            again = self._settle(esc, record, outcome, abandoned, settings, index)
            if not again or attempt == self.strong_retry.max_attempts:
                break
            yield _backoff(self.strong_retry, attempt)
        yield self._after_strong(state, esc, runtime, config)

    def _run_attempt(self, request: _Attempt | float) -> _Attempted | None:
        if not isinstance(request, _Attempt):
            time.sleep(request)
            return None
        if request.durable:
            return self._durable_attempt(request)
        return (*self._attempt(request), False)

    async def _arun_attempt(
        self, request: _Attempt | float, config: RunnableConfig
    ) -> _Attempted | None:
        if not isinstance(request, _Attempt):
            await asyncio.sleep(request)
            return None
        if request.durable:
            return await self._adurable_attempt(request, config)
        return (*await self._aattempt(request), False)

    def escalate(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        """Have the strong model write the step: up to ``strong_retry.max_attempts`` calls.

        With a checkpointer each attempt runs as LangGraph tasks
        (:meth:`_durable_attempt`), so a resumed run never pays again for an attempt
        that returned, and charges one that was in flight when the process died.
        """
        steps = self._escalation(state, config, runtime)
        request = next(steps)
        while not isinstance(request, dict):
            request = steps.send(self._run_attempt(request))
        return request

    async def aescalate(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        steps = self._escalation(state, config, runtime)
        request = next(steps)
        while not isinstance(request, dict):
            request = steps.send(await self._arun_attempt(request, config))
        return request

    def _strong_failed(
        self,
        state: TrimState,
        draft: PendingDraft,
        spend: TrimSpend,
        fallback: str,
        error: StepGenerationError,
        runtime: Runtime[Any],
        config: RunnableConfig | None,
    ) -> dict[str, Any]:
        if self.on_strong_error == "raise":
            raise error
        _fall_back(
            spend,
            "strong_errors",
            self.on_strong_error,
            f"strong model failed to rewrite step {draft['index']} ({fallback}); "
            "the weak draft is kept",
        )
        return self._commit(state, self._weak_record(draft, fallback), spend, runtime, config)

    def _after_strong(
        self,
        state: TrimState,
        esc: _Escalation,
        runtime: Runtime[Any],
        config: RunnableConfig | None,
    ) -> dict[str, Any]:
        draft = state["trim_draft"]
        assert draft is not None
        spend = self.spend(state)
        spend["strong_calls"] += esc.calls
        spend["abandoned_strong_calls"] = spend.get("abandoned_strong_calls", 0) + esc.abandoned
        if esc.failed_tokens:
            # Failed, abandoned or timed-out attempts may have decoded tokens: they count.
            spend["strong_tokens"] += esc.failed_tokens
            spend["strong_tokens_estimated"] = True
        outcome = esc.output
        if outcome is not None:
            self._check_usage(spend, outcome, "strong")
            spend["strong_tokens"] += outcome.tokens
            spend["strong_tokens_estimated"] = (
                spend["strong_tokens_estimated"] or outcome.tokens_estimated
            )
        budget = spend.get("budget")
        if budget is not None and spend["strong_tokens"] > budget and not spend.get("overspent"):
            spend["overspent"] = True
            message = (
                f"the strong model overspent the budget: {spend['strong_tokens']} > {budget} "
                "strong tokens (it does not honour max_tokens); no further step is escalated"
            )
            logger.warning(message)
            warnings.warn(message, TrimWarning, stacklevel=2)
        if outcome is None:
            error = esc.error or StepGenerationError(
                f"strong model not called for step {draft['index']}: the budget left cannot "
                "cover another attempt",
                role="strong",
                step_index=draft["index"],
            )
            fallback = "strong_error: " + _error_text(error, esc.error_record)
            if esc.stopped == "budget" and esc.error is not None:
                fallback += "; no retry: the budget left cannot cover another attempt"
            return self._strong_failed(state, draft, spend, fallback, error, runtime, config)
        if not outcome.text:
            fallback = "strong_empty: the strong model returned no text; draft kept"
            error = StepGenerationError(
                f"strong model {outcome.model} returned no text for step {draft['index']}",
                role="strong",
                step_index=draft["index"],
            )
            return self._strong_failed(state, draft, spend, fallback, error, runtime, config)
        spend["escalations"] += 1
        spend["discarded_draft_tokens"] += draft["tokens"]
        self._observe(state["question"], outcome.text, outcome.logprobs)
        record = StepRecord(
            index=draft["index"],
            text=outcome.text,
            author="strong",
            model=outcome.model,
            tokens=outcome.tokens,
            tokens_estimated=outcome.tokens_estimated,
            stop=outcome.stop,
            score=None,
            draft_score=draft.get("score"),
            decision="escalate",
            reason=draft.get("reason", ""),
            draft=draft["text"],
            draft_tokens=draft["tokens"],
            budget_blocked=False,
            fallback=draft.get("fallback"),
        )
        return self._commit(state, record, spend, runtime, config)

    @staticmethod
    def after_commit(state: TrimState) -> Literal["draft", "finish"]:
        return "finish" if state.get("trim_termination") else "draft"

    # -- finish ------------------------------------------------------------------------
    def finish(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        steps = state.get("trim_steps") or []
        solution = render_solution(
            [s["text"] for s in steps], [s["stop"] == "length" for s in steps], self.delimiter
        )
        answer = extract_boxed(solution)
        spend = self.spend(state)
        overspent = bool(spend.get("overspent", False))
        termination = state.get("trim_termination") or "end_of_text"
        self.write(
            runtime,
            config,
            DoneEvent(
                trim_event="done",
                final_answer=answer,
                termination=termination,
                overspent=overspent,
                spend=spend,
            ),
        )
        update: dict[str, Any] = {
            "trim_final_answer": answer,
            "trim_solution": solution,
            "trim_termination": termination,
            "trim_overspent": overspent,
            "trim_draft": None,
        }
        if self.output_mode != "trim_only":
            message = AIMessage(
                content=solution,
                name="trim",
                response_metadata={
                    "trim": {
                        "final_answer": answer,
                        "termination": termination,
                        "steps": len(steps),
                        "escalated_steps": sum(s["author"] == "strong" for s in steps),
                        "overspent": overspent,
                        "spend": dict(spend),
                    }
                },
            )
            # "last_message": the conversation that came in is not handed back.
            update["messages"] = [message] if self.output_mode == "full" else Overwrite([message])
        return update


def _abandon(esc: _Escalation, settings: TrimSettings) -> _Escalation:
    """``esc`` with one abandoned attempt charged (for the budget check before re-calling)."""
    return _Escalation(
        calls=esc.calls + 1, failed_tokens=esc.failed_tokens + settings.strong_max_tokens
    )


def _identity(value: Any) -> Any:
    return value


def _node(name: str, func: Callable[..., Any], afunc: Any = None) -> RunnableCallable:
    """A node runnable, untraced as ``StateGraph.add_node`` makes plain functions.

    LangGraph already traces every node as a run; a traced wrapper would only add an empty
    run of the same name inside it (and, on the async path, one more task per node).
    """
    return RunnableCallable(func, afunc, name=name, trace=False)


def _inline(path: Callable[..., Any]) -> RunnableCallable:
    """A routing function LangGraph calls inline on the async path too.

    A plain sync function given to ``add_conditional_edges`` is run in a worker thread
    by ``ainvoke``: three thread hops per step for a dict lookup.  Same name, same
    traced run, no hop.
    """
    return RunnableCallable(path, name=path.__name__)


def _check_budget_covers_a_step(budget: int | None, strong_max_tokens: int) -> None:
    if budget is not None and budget < strong_max_tokens:
        raise InvalidInputError(
            f"budget {budget} < the strong step cap {strong_max_tokens}: no step could ever "
            "be escalated (a strong call may cost its cap); raise the budget, lower "
            "step_max_tokens or strong_step_max_tokens, or use ThresholdPolicy(0) for "
            "always-weak"
        )


class CompiledTrimGraph(CompiledStateGraph[Any, Any, Any, Any]):
    """A compiled TRIM graph: a ``CompiledStateGraph`` with two defaults of its own.

    * **Recursion limit.**  A ``recursion_limit`` below what ``max_steps`` needs
      (:func:`recursion_limit`) is raised to it: ``batch``/``abatch``, LCEL chains and
      parent graphs pass LangChain's default of 25, which would stop a run after about six
      steps.  ``max_steps`` (or ``TrimContext(max_steps=...)``) bounds the loop instead.
    * **Durability.**  With a checkpointer and no ``durability`` chosen by the caller (or
      a parent graph), every step is checkpointed before the next one starts
      (``durability="sync"``), so a strong call whose step completed is never made again
      after a crash.
    """

    def _trim_defaults(
        self, config: RunnableConfig | None, kwargs: dict[str, Any]
    ) -> tuple[RunnableConfig | None, dict[str, Any]]:
        """``config`` and the stream keywords with the recursion limit and durability set."""
        settings: TrimSettings | None = getattr(self.builder, "trim_settings", None)
        if settings is not None:
            with suppress(InvalidInputError):  # the prepare node reports it
                settings = settings.with_context(kwargs.get("context"))
            need = recursion_limit(settings.max_steps)
            limit = (config or {}).get("recursion_limit")
            if limit is None:
                limit = (self.config or {}).get("recursion_limit")
            if limit is None:
                parent = var_child_runnable_config.get()
                limit = parent.get("recursion_limit") if parent else None
            if limit is not None and limit < need:
                config = {**(config or {}), "recursion_limit": need}
        if kwargs.get("durability") is None:
            conf = ensure_config(config).get("configurable") or {}
            if CONFIG_KEY_DURABILITY not in conf and self._persists(conf):
                kwargs = {**kwargs, "durability": "sync"}
        return config, kwargs

    def _persists(self, conf: dict[str, Any]) -> bool:
        """Whether the run will have a checkpointer (resolved as ``Pregel`` does)."""
        if self.checkpointer is False:
            return False
        if CONFIG_KEY_CHECKPOINTER in conf:
            return isinstance(conf[CONFIG_KEY_CHECKPOINTER], BaseCheckpointSaver)
        return isinstance(self.checkpointer, BaseCheckpointSaver)

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config, kwargs = self._trim_defaults(config, kwargs)
        return super().stream(input, config, **kwargs)

    def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config, kwargs = self._trim_defaults(config, kwargs)
        return super().astream(input, config, **kwargs)

    def as_tool(
        self,
        args_schema: Any = None,
        *,
        name: str | None = None,
        description: str | None = None,
        arg_types: Any = None,
    ) -> BaseTool:
        """The TRIM tool for agents (:func:`~langchain_trim.tools.create_trim_tool`).

        Its one argument is ``question``; ``args_schema``/``arg_types`` are not supported.
        """
        from langchain_trim.tools import DEFAULT_DESCRIPTION, DEFAULT_NAME, create_trim_tool

        if args_schema is not None or arg_types is not None:
            raise InvalidInputError("a TRIM tool takes one argument, 'question': no args_schema")
        return create_trim_tool(
            self, name=name or DEFAULT_NAME, description=description or DEFAULT_DESCRIPTION
        )


class TrimStateGraph(StateGraph[Any, Any, Any, Any]):
    """The uncompiled TRIM graph; :meth:`compile` returns a :class:`CompiledTrimGraph`."""

    trim_settings: TrimSettings | None = None

    def compile(self, *args: Any, **kwargs: Any) -> CompiledTrimGraph:
        """``StateGraph.compile``, same arguments (checkpointer, ``name``, ...)."""
        compiled = super().compile(*args, **kwargs)
        attrs = {k: v for k, v in compiled.__dict__.items() if k != "__orig_class__"}
        return CompiledTrimGraph(**attrs)


_REQUIRED_KEYS = (
    "question",
    "messages",
    "trim_budget",
    "trim_steps",
    "trim_spend",
    "trim_draft",
    "trim_final_answer",
    "trim_solution",
    "trim_termination",
    "trim_overspent",
    "trim_remaining_steps",
)


def _check_state_schema(state_schema: type[Any]) -> None:
    """A custom ``state_schema`` must declare the keys the nodes read and write."""
    import typing

    try:
        hints = typing.get_type_hints(state_schema, include_extras=True)
    except Exception as exc:  # unresolvable annotations
        raise InvalidInputError(
            f"state_schema {getattr(state_schema, '__name__', state_schema)!r}: {exc}"
        ) from exc
    missing = [key for key in _REQUIRED_KEYS if key not in hints]
    if missing:
        raise InvalidInputError(
            f"state_schema {state_schema.__name__} lacks the keys {missing}; subclass "
            "langchain_trim.TrimState to add your own"
        )


def create_trim_graph(
    draft_model: ChatModelLike | StepGenerator,
    strong_model: ChatModelLike | StepGenerator,
    prm: ProcessRewardModel | None,
    policy: RoutingPolicy,
    *,
    budget: int | None = None,
    global_budget: GlobalBudget | None = None,
    max_steps: int = 30,
    step_max_tokens: int = 512,
    strong_step_max_tokens: int | None = None,
    max_total_tokens: int | None = None,
    step_format: str | StepFormat | None = None,
    strong_step_format: str | StepFormat | None = None,
    delimiter: str | None = None,
    mode: GenerationMode = "auto",
    strong_mode: GenerationMode | None = None,
    step_timeout: float | None = None,
    strong_retry: RetryPolicy | None = None,
    strong_max_retries: int | None = None,
    on_strong_error: FailureMode = "warn",
    on_prm_error: FailureMode = "warn",
    output_mode: OutputMode = "last_message",
    token_counter: Callable[[str], int] | None = None,
    max_question_chars: int = 20_000,
    state_schema: type[Any] = TrimState,
    context_schema: type[Any] = TrimContext,
) -> TrimStateGraph:
    """Build the TRIM subgraph (uncompiled): weak drafts, PRM scores, targeted escalation.

    Args:
        draft_model: the cheap model that drafts every step (chat model, init string or
            :class:`~langchain_trim.generation.StepGenerator`).
        strong_model: the expensive model that rewrites escalated steps.
        prm: process reward model scoring each draft; may be ``None`` only for policies
            that never need scores (``ThresholdPolicy(0)`` / ``ThresholdPolicy(1)``).
        policy: a :class:`~langchain_trim.policies.RoutingPolicy`.
        budget: default hard cap on strong output tokens per question (input key
            ``trim_budget`` overrides it for one question).  A step is escalated only
            while the budget still covers one strong call (``step_max_tokens``, or
            ``strong_step_max_tokens`` when lower); otherwise the draft is kept and the
            step is marked ``budget_blocked``.  A budget below that cap could never
            escalate anything and is rejected.
        global_budget: strong tokens shared by every run of this graph (and of any other
            graph given the same :class:`~langchain_trim.budget.GlobalBudget`), never
            exceeded however many runs are in flight: each escalation reserves one strong
            call's worst case and the strong model settles it with what it used.  Its
            ``step_tokens`` must equal the strong call cap (``strong_step_max_tokens``,
            else ``step_max_tokens``); a mismatch is rejected here.
        max_steps: trajectory length limit in steps (the paper uses 30).
        step_max_tokens: per-step output cap sent to both models as ``max_tokens``.  A
            step that reaches it is kept and the next call continues it.
        strong_step_max_tokens: a lower cap for one strong call (default: none).  A
            capped rewrite is kept with the step left open, and the next draft continues
            it: the strong model corrects the start of a step at a bounded price.
        max_total_tokens: optional cap on the accepted solution's output tokens; the
            trajectory ends with termination ``"token_cap"`` once it is reached.
        step_format: how the models are asked for steps and how a step is cut: a
            :class:`~langchain_trim.step_format.StepFormat` or a registered name
            (``"paragraphs"``, the default, or the release's ``"release"``).
        strong_step_format: the strong model's format when it differs (defaults to
            ``step_format``).  Each model is cut at its own format's delimiter (e.g. the
            strong model rewrites one line where the draft writes paragraphs); the final
            solution joins steps with the draft format's.
        delimiter: overrides both formats' step separator (a blank line by default).
        mode / strong_mode: ``"prefill"``, ``"instruct"`` or ``"auto"`` step generation
            for the draft / strong model (``strong_mode`` defaults to ``mode``).
        step_timeout: seconds per model or PRM call.  A draft timeout raises
            :class:`~langchain_trim.errors.StepTimeoutError`; a strong timeout is a
            strong failure charged the call's ``max_tokens``; a PRM timeout is a PRM
            failure.
        strong_retry: LangGraph's ``RetryPolicy`` for the strong call of an escalation:
            ``max_attempts``, backoff (``initial_interval``, ``backoff_factor``,
            ``max_interval``, ``jitter``) and ``retry_on`` (tested on the error and the
            model error it wraps).  Every attempt's tokens are charged, and no retry is
            made when the budget left cannot cover one.  Default
            :data:`DEFAULT_STRONG_RETRY` (two attempts).
        strong_max_retries: shorthand for ``strong_retry`` with ``max_attempts`` of
            ``strong_max_retries + 1`` and the default backoff.
        on_strong_error: when the strong model fails every attempt or returns nothing:
            ``"warn"`` (default: keep the draft, record ``fallback`` and
            ``trim_spend["strong_errors"]``, ``warnings.warn`` a
            :class:`~langchain_trim.errors.TrimWarning` and log it), ``"keep_draft"``
            (the same, logged at INFO only) or ``"raise"`` the
            :class:`~langchain_trim.errors.StepGenerationError`.
        on_prm_error: the same choice for a PRM that raises, times out or returns NaN,
            out-of-range or the wrong number of scores (counted in
            ``trim_spend["prm_errors"]``; ``"raise"`` raises
            :class:`~langchain_trim.errors.PRMError`).
        output_mode: what reaches the caller or a parent graph besides the ``trim_*``
            keys: ``"last_message"`` (default) only the solution ``AIMessage`` in
            ``messages``, ``"full"`` the incoming conversation with it appended,
            ``"trim_only"`` no ``messages``.
        token_counter: counts tokens of models that report no ``usage_metadata``.
        max_question_chars: longer questions are rejected.
        state_schema: a subclass of :class:`~langchain_trim.TrimState` with your own keys.
        context_schema: the run-time settings schema (:class:`~langchain_trim.TrimContext`).

    Returns:
        An uncompiled :class:`TrimStateGraph`; compile it with your checkpointer and
        ``name``.  Its input schema is :class:`~langchain_trim.state.TrimInput`
        (``question`` or ``messages``, ``trim_budget``), its output schema
        :class:`~langchain_trim.state.TrimOutput` (:class:`~langchain_trim.state.TrimOnlyOutput`
        with ``output_mode="trim_only"``).

    Example:
        >>> from langchain_trim import create_trim_graph
        >>> from langchain_trim.policies import ThresholdPolicy
        >>> from langchain_trim.testing import FakeStepModel, KeywordPRM
        >>> weak = FakeStepModel(steps=["2 + 2 = 5", r"So \\boxed{5}"], model_name="weak")
        >>> strong = FakeStepModel(steps=["2 + 2 = 4", r"So \\boxed{4}"], model_name="strong")
        >>> graph = create_trim_graph(weak, strong, KeywordPRM({"5": 0.1}), ThresholdPolicy(0.5))
        >>> out = graph.compile(name="trim").invoke({"question": "What is 2 + 2?"})
        >>> out["trim_final_answer"], [s["author"] for s in out["trim_steps"]]
        ('4', ['strong', 'strong'])
    """
    for name, value in (("on_prm_error", on_prm_error), ("on_strong_error", on_strong_error)):
        if value not in _FAILURE_MODES:
            raise InvalidInputError(f"{name} must be one of {_FAILURE_MODES}, got {value!r}")
    if output_mode not in _OUTPUT_MODES:
        raise InvalidInputError(f"output_mode must be one of {_OUTPUT_MODES}, got {output_mode!r}")
    if strong_max_retries is not None:
        if strong_retry is not None:
            raise InvalidInputError("pass strong_retry or strong_max_retries, not both")
        if (
            isinstance(strong_max_retries, bool)
            or not isinstance(strong_max_retries, int)
            or strong_max_retries < 0
        ):
            raise InvalidInputError(f"strong_max_retries must be >= 0, got {strong_max_retries!r}")
        strong_retry = DEFAULT_STRONG_RETRY._replace(max_attempts=strong_max_retries + 1)
    strong_retry = strong_retry or DEFAULT_STRONG_RETRY
    if not isinstance(strong_retry, RetryPolicy) or strong_retry.max_attempts < 1:
        raise InvalidInputError(
            f"strong_retry must be a langgraph.types.RetryPolicy with max_attempts >= 1, "
            f"got {strong_retry!r}"
        )
    if not hasattr(policy, "decide") or not hasattr(policy, "needs_score"):
        raise InvalidInputError(f"policy must implement RoutingPolicy, got {type(policy).__name__}")
    if prm is not None and not (hasattr(prm, "score") and hasattr(prm, "ascore")):
        raise InvalidInputError(f"prm must implement ProcessRewardModel, got {type(prm).__name__}")
    if step_timeout is not None and (not math.isfinite(step_timeout) or step_timeout <= 0):
        raise InvalidInputError(f"step_timeout must be positive, got {step_timeout}")
    _check_state_schema(state_schema)
    settings = TrimSettings(
        budget=budget,
        max_steps=max_steps,
        step_max_tokens=step_max_tokens,
        strong_step_max_tokens=strong_step_max_tokens,
        max_total_tokens=max_total_tokens,
        max_question_chars=max_question_chars,
    )
    _check_budget_covers_a_step(settings.budget, settings.strong_max_tokens)
    if global_budget is not None:
        if not isinstance(global_budget, GlobalBudget):
            raise InvalidInputError(
                f"global_budget must be a GlobalBudget, got {type(global_budget).__name__}"
            )
        global_budget.check_step_cap(settings.strong_max_tokens)
    draft_format = get_step_format(step_format)
    strong_format = get_step_format(strong_step_format or draft_format)
    # Each model is asked for and cut at its own format's delimiter (a strong model may
    # rewrite one line of a paragraph); the solution is laid out in the draft's.
    common: dict[str, Any] = {"token_counter": token_counter, "timeout": step_timeout}
    if delimiter is not None:
        common["delimiter"] = delimiter
    delimiter = delimiter or draft_format.delimiter
    strong_gen = as_step_generator(
        strong_model,
        role="strong",
        run_name="trim.strong",
        mode=strong_mode or mode,
        step_format=strong_format,
        **common,
    )
    if global_budget is not None:  # the policy reserves, the strong model settles
        strong_gen = BudgetedStepGenerator(strong_gen, global_budget)
        policy = GlobalBudgetPolicy(policy, global_budget)
    nodes = _TrimNodes(
        draft_gen=as_step_generator(
            draft_model,
            role="draft",
            run_name="trim.draft",
            mode=mode,
            step_format=draft_format,
            **common,
        ),
        strong_gen=strong_gen,
        prm=prm,
        policy=policy,
        defaults=settings,
        delimiter=delimiter,
        on_prm_error=on_prm_error,
        on_strong_error=on_strong_error,
        strong_retry=strong_retry,
        output_mode=output_mode,
        timeout=step_timeout,
    )
    builder = TrimStateGraph(
        state_schema,
        context_schema=context_schema,
        input_schema=TrimInput,
        output_schema=TrimOnlyOutput if output_mode == "trim_only" else TrimOutput,
    )
    builder.trim_settings = settings

    builder.add_node("prepare", _node("prepare", nodes.prepare))
    builder.add_node("draft", _node("draft", nodes.draft, nodes.adraft))
    builder.add_node("score", _node("score", nodes.score, nodes.ascore))
    builder.add_node("route", _node("route", nodes.route))
    builder.add_node("escalate", _node("escalate", nodes.escalate, nodes.aescalate))
    builder.add_node("accept", _node("accept", nodes.accept))
    builder.add_node("finish", _node("finish", nodes.finish))
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "draft")
    builder.add_conditional_edges(
        "draft",
        _inline(nodes.after_draft),
        {"score": "score", "route": "route", "finish": "finish"},
    )
    builder.add_edge("score", "route")
    builder.add_conditional_edges(
        "route", _inline(nodes.after_route), {"escalate": "escalate", "accept": "accept"}
    )
    for node in ("accept", "escalate"):
        builder.add_conditional_edges(
            node, _inline(nodes.after_commit), {"draft": "draft", "finish": "finish"}
        )
    builder.add_edge("finish", END)
    return builder


__all__ = [
    "DEFAULT_STRONG_RETRY",
    "CompiledTrimGraph",
    "FailureMode",
    "TrimStateGraph",
    "create_trim_graph",
    "recursion_limit",
]
