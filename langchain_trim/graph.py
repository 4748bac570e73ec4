"""``create_trim_graph``: TRIM as an uncompiled LangGraph ``StateGraph``.

The loop, one step at a time::

    prepare → draft ─┬─(policy needs a score)→ score → route ─┬─ continue → accept ─┬→ draft
                     └──────────────────────────────→ route   └─ escalate → escalate ┴→ finish

``draft`` asks the weak model for the next step, ``score`` asks the PRM, ``route`` asks
the policy and enforces the budget, ``escalate`` has the strong model rewrite the step
from the same accepted prefix (the weak draft is never shown to it), ``accept`` keeps the
draft.  Only the output schema's keys (``trim_*`` and, by ``output_mode``, ``messages``)
reach a caller or parent graph, so the graph nests in any parent.  The PRM call lives in
:mod:`langchain_trim.scoring`, the strong attempts (retries, durability) in
:mod:`langchain_trim.escalation`, the routing rule in :mod:`langchain_trim.policies.rule`.

The builder compiles to a :class:`CompiledTrimGraph`: a ``CompiledStateGraph`` that needs
no ``recursion_limit`` from its callers and checkpoints every step before the next one
starts (``durability="sync"``) when a checkpointer is in use.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping
from contextlib import suppress
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
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, RetryPolicy

from langchain_trim import _py310
from langchain_trim._py310 import in_runnable_context
from langchain_trim.budget import BudgetedStepGenerator, GlobalBudget, GlobalBudgetPolicy
from langchain_trim.context import TrimContext, TrimSettings, check_budget
from langchain_trim.errors import (
    InvalidInputError,
    StepGenerationError,
    TrimWarning,
)
from langchain_trim.escalation import (
    DEFAULT_STRONG_RETRY,
    Escalation,
    StrongAttempts,
    checkpointed,
    error_text,
)
from langchain_trim.events import DoneEvent, StepEvent, TrimEvent
from langchain_trim.fallback import FAILURE_MODES, FailureMode, fall_back
from langchain_trim.generation import (
    GenerationMode,
    StepGenerator,
    StepOutput,
    as_step_generator,
)
from langchain_trim.models import ChatModelLike
from langchain_trim.policies.base import RouteObservation, RoutingPolicy
from langchain_trim.policies.rule import decide_step
from langchain_trim.prm.base import ProcessRewardModel
from langchain_trim.scoring import DraftScorer
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
from langchain_trim.usage import flag_usage

PRMErrorMode = FailureMode  # the name of earlier versions

_OUTPUT_MODES = ("full", "last_message", "trim_only")
SUPER_STEPS_PER_STEP = 4
"""LangGraph super-steps one TRIM step takes at most (draft, score, route, accept/escalate)."""
# a commit with fewer super-steps left ends the solution: the next step and ``finish``
# must still fit under the recursion limit
_MIN_REMAINING = SUPER_STEPS_PER_STEP + 2

logger = logging.getLogger("langchain_trim")


def recursion_limit(max_steps: int = 30) -> int:
    """A LangGraph ``recursion_limit`` that fits a TRIM run of ``max_steps`` steps.

    A compiled TRIM graph raises a smaller limit to this one by itself, so callers need
    not pass it (``batch``/``abatch`` and LCEL chains pass LangChain's default of 25).

    >>> recursion_limit(30)
    130
    """
    return SUPER_STEPS_PER_STEP * max_steps + 10


def _spend_view(state: TrimState) -> Mapping[str, Any]:
    """The spend so far, read-only (empty before ``prepare``)."""
    return state.get("trim_spend") or {}


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
        self.route_runnable = RunnableCallable(_identity, name="trim.route")
        self.scorer = DraftScorer(self.prm, self.on_prm_error, self.timeout)
        self.attempts = StrongAttempts(self.strong_gen, self.strong_retry)

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
        if not _py310.SET_CONFIG_VAR:
            runtime.stream_writer(event)
            return
        with in_runnable_context(config):
            runtime.stream_writer(event)

    def prefix(self, state: TrimState) -> tuple[list[str], bool]:
        """The accepted steps as the models see them, and whether the last one is open."""
        steps = state.get("trim_steps") or []
        return logical_steps([s["text"] for s in steps], [s["stop"] == "length" for s in steps])

    @staticmethod
    def chunks(state: TrimState) -> list[str]:
        """Accepted step texts as recorded (what the PRM scores, one per record)."""
        return [s["text"] for s in state.get("trim_steps") or []]

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

    # -- prepare ---------------------------------------------------------------------
    def prepare(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        """Validate the question and budget, and reset every per-question key."""
        settings = self.settings(runtime)
        question = _read_question(state, settings.max_question_chars)
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
        flag_usage(spend, out, "draft")
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
            state["question"], prefix, **_gen_kwargs(settings, open_step, config)
        )
        return self._after_weak(state, out, settings)

    async def adraft(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        settings = self.settings(runtime)
        prefix, open_step = self.prefix(state)
        out = await self.draft_gen.agenerate(
            state["question"], prefix, **_gen_kwargs(settings, open_step, config)
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
    def score(self, state: TrimState, config: RunnableConfig) -> dict[str, Any]:
        draft, steps = self._to_score(state)
        cfg = _child_config(config, trim_step=draft["index"])
        result = self.scorer.score(state["question"], steps, cfg)
        return self.scorer.apply(draft, state.get("trim_steps") or [], self.spend(state), result)

    async def ascore(self, state: TrimState, config: RunnableConfig) -> dict[str, Any]:
        draft, steps = self._to_score(state)
        cfg = _child_config(config, trim_step=draft["index"])
        result = await self.scorer.ascore(state["question"], steps, cfg)
        return self.scorer.apply(draft, state.get("trim_steps") or [], self.spend(state), result)

    def _to_score(self, state: TrimState) -> tuple[PendingDraft, list[str]]:
        """The draft and the step texts the PRM scores (the accepted ones, then the draft)."""
        draft = state["trim_draft"]
        assert draft is not None
        self.scorer.observe(state["question"], draft["text"], draft.get("logprobs"))
        return draft, [*self.chunks(state), draft["text"]]

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
            _child_config(config, **metadata),
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

    def accept(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        draft = state["trim_draft"]
        assert draft is not None
        record = _weak_record(draft, None)
        return self._commit(state, record, self.spend(state), runtime, config)

    # -- escalate ----------------------------------------------------------------------
    def _plan(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        """What :class:`~langchain_trim.escalation.StrongAttempts` needs for this step."""
        settings = self.settings(runtime)
        prefix, open_step = self.prefix(state)
        return {
            "question": state["question"],
            "prefix": prefix,
            "kwargs": _gen_kwargs(settings, open_step, config, strong=True),
            "budget": self.budget(state),
            "spent": _spend_view(state).get("strong_tokens", 0),
            "cap": settings.strong_max_tokens,
            "index": state["trim_draft"]["index"],  # type: ignore[index]
            "durable": checkpointed(config),
        }

    def escalate(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        """Have the strong model write the step: up to ``strong_retry.max_attempts`` calls.

        With a checkpointer each attempt runs as LangGraph tasks, so a resumed run never
        pays again for an attempt that returned, and charges one that was in flight when
        the process died (:mod:`langchain_trim.escalation`).
        """
        esc = self.attempts.run(**self._plan(state, config, runtime))
        return self._after_strong(state, esc, runtime, config)

    async def aescalate(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        esc = await self.attempts.arun(config=config, **self._plan(state, config, runtime))
        return self._after_strong(state, esc, runtime, config)

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
        fall_back(
            spend,
            "strong_errors",
            self.on_strong_error,
            f"strong model failed to rewrite step {draft['index']} ({fallback}); "
            "the weak draft is kept",
        )
        return self._commit(state, _weak_record(draft, fallback), spend, runtime, config)

    def _after_strong(
        self,
        state: TrimState,
        esc: Escalation,
        runtime: Runtime[Any],
        config: RunnableConfig | None,
    ) -> dict[str, Any]:
        draft = state["trim_draft"]
        assert draft is not None
        spend = self.spend(state)
        esc.charge(spend)
        outcome = esc.output
        if outcome is None:
            error = esc.error or StepGenerationError(
                f"strong model not called for step {draft['index']}: the budget left cannot "
                "cover another attempt",
                role="strong",
                step_index=draft["index"],
            )
            fallback = "strong_error: " + error_text(error, esc.error_record)
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
        self.scorer.observe(state["question"], outcome.text, outcome.logprobs)
        record = _strong_record(draft, outcome)
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


def _gen_kwargs(
    settings: TrimSettings, open_step: bool, config: RunnableConfig, *, strong: bool = False
) -> dict[str, Any]:
    cap = settings.strong_max_tokens if strong else settings.step_max_tokens
    kwargs: dict[str, Any] = {"max_tokens": cap, "config": config}
    if open_step:  # only then: generators written before continuation keep working
        kwargs["continue_last"] = True
    return kwargs


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


def _weak_record(draft: PendingDraft, fallback: str | None) -> StepRecord:
    """The record of a kept draft (``fallback`` says why when a failure kept it)."""
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


def _strong_record(draft: PendingDraft, outcome: StepOutput) -> StepRecord:
    """The record of a strong rewrite; the next PRM call fills in its score."""
    return StepRecord(
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


def _read_question(state: TrimState, max_chars: int) -> str:
    """The question: the last ``HumanMessage`` if the input ends in one, else ``question``."""
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
    if len(question) > max_chars:
        raise InvalidInputError(
            f"question has {len(question)} characters, more than max_question_chars={max_chars}"
        )
    return question


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
        if value not in FAILURE_MODES:
            raise InvalidInputError(f"{name} must be one of {FAILURE_MODES}, got {value!r}")
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
