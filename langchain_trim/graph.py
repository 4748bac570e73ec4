"""``create_trim_graph``: TRIM as an uncompiled LangGraph ``StateGraph``.

The loop, one step at a time::

    prepare → draft ─┬─(policy needs a score)→ score → route ─┬─ continue → accept ─┬→ draft
                     └──────────────────────────────→ route   └─ escalate → escalate ┴→ finish

``draft`` asks the weak model for the next step, ``score`` asks the PRM, ``route`` asks
the policy and enforces the budget, ``escalate`` has the strong model rewrite the step
from the same accepted prefix (the weak draft is never shown to it), ``accept`` keeps the
draft.  Every node writes only ``trim_*`` keys (plus ``question`` and, at the end,
``messages``), so the graph nests in any parent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from langchain_core.callbacks import BaseCallbackManager
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph._internal._runnable import RunnableCallable
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from langchain_trim.context import TrimContext, TrimSettings, check_budget
from langchain_trim.errors import InvalidInputError, PRMError, StepGenerationError
from langchain_trim.generation import (
    GenerationMode,
    StepGenerator,
    StepOutput,
    as_step_generator,
)
from langchain_trim.models import ChatModelLike
from langchain_trim.policies.base import RouteDecision, RouteObservation, RoutingPolicy
from langchain_trim.prm.base import ProcessRewardModel, StepObserver, validate_scores
from langchain_trim.state import (
    PendingDraft,
    StepRecord,
    Termination,
    TrimInput,
    TrimOutput,
    TrimSpend,
    TrimState,
    new_spend,
)
from langchain_trim.step_format import StepFormat, get_step_format
from langchain_trim.steps import extract_boxed, has_final_answer, logical_steps, render_solution

PRMErrorMode = Literal["keep_draft", "raise"]

logger = logging.getLogger("langchain_trim")


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


class _TrimNodes:
    """The node functions, closed over the models, the PRM, the policy and settings."""

    def __init__(
        self,
        *,
        draft: StepGenerator,
        strong: StepGenerator,
        prm: ProcessRewardModel | None,
        policy: RoutingPolicy,
        settings: TrimSettings,
        delimiter: str,
        on_prm_error: PRMErrorMode,
        strong_max_retries: int,
        timeout: float | None = None,
    ) -> None:
        self.timeout = timeout
        self.draft_gen = draft
        self.strong_gen = strong
        self.prm = prm
        self.policy = policy
        self.defaults = settings
        self.delimiter = delimiter
        self.on_prm_error = on_prm_error
        self.strong_max_retries = strong_max_retries
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

    def prefix(self, state: TrimState) -> tuple[list[str], bool]:
        """The accepted steps as the models see them, and whether the last one is open."""
        steps = state.get("trim_steps") or []
        return logical_steps(
            [s["text"] for s in steps], [s["stop"] == "length" for s in steps], self.delimiter
        )

    @staticmethod
    def chunks(state: TrimState) -> list[str]:
        """Accepted step texts as recorded (what the PRM scores, one per record)."""
        return [s["text"] for s in state.get("trim_steps") or []]

    @staticmethod
    def _gen_kwargs(
        settings: TrimSettings, open_step: bool, config: RunnableConfig
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_tokens": settings.step_max_tokens, "config": config}
        if open_step:  # only then: generators written before continuation keep working
            kwargs["continue_last"] = True
        return kwargs

    def observation(
        self, state: TrimState, draft: PendingDraft, settings: TrimSettings
    ) -> RouteObservation:
        steps = state.get("trim_steps") or []
        return RouteObservation(
            step_index=draft["index"],
            score=draft.get("score"),
            previous_scores=tuple(s["score"] for s in steps),
            step_tokens=draft["tokens"],
            previous_step_tokens=tuple(s["tokens"] for s in steps),
            strong_tokens_spent=self.spend(state)["strong_tokens"],
            budget=state.get("trim_budget"),
            max_steps=settings.max_steps,
            previous_authors=tuple(s["author"] for s in steps),
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
        budget = state["trim_budget"] if state.get("trim_budget") is not None else settings.budget
        budget = check_budget(budget)
        if self.prm is None and self.policy.needs_score(
            RouteObservation(0, None, (), 0, (), 0, budget, settings.max_steps)
        ):
            raise InvalidInputError(f"policy {self.policy.name} needs PRM scores but prm is None")
        return {
            "question": question,
            "trim_budget": budget,
            "trim_steps": Overwrite([]),
            "trim_draft": None,
            "trim_spend": new_spend(),
            "trim_final_answer": None,
            "trim_solution": None,
            "trim_termination": None,
        }

    # -- draft -------------------------------------------------------------------------
    def _after_weak(
        self, state: TrimState, out: StepOutput, settings: TrimSettings
    ) -> dict[str, Any]:
        spend = self.spend(state)
        spend["weak_calls"] += 1
        self._check_usage(spend, out, "draft", None)
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
            spend["fallbacks"] += 1
        else:
            assert isinstance(scores, list)
            draft["score"] = scores[-1]
            # Fill in scores of accepted steps that had none (strong rewrites).
            filled = [
                StepRecord(**{**s, "score": scores[i]})
                for i, s in enumerate(steps)
                if s["score"] is None
            ]
            if filled:
                update["trim_steps"] = filled
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
        decision = self.policy.decide(obs)
        if not isinstance(decision, RouteDecision) or decision.action not in (
            "continue",
            "escalate",
        ):
            raise TypeError(f"policy {self.policy.name} returned {decision!r}, not a RouteDecision")
        blocked = False
        reason = decision.reason
        left = obs.budget_left
        untrusted = bool(self.spend(state).get("strong_untrusted"))
        if decision.action == "escalate" and untrusted:
            blocked = True
            reason = f"{reason}; blocked: the strong model did not honour max_tokens"
            decision = RouteDecision("continue", reason)
        elif decision.action == "escalate" and left is not None and left < settings.step_max_tokens:
            blocked = True
            reason = (
                f"{reason}; budget blocked: {left} strong tokens left < step cap "
                f"{settings.step_max_tokens}"
            )
            decision = RouteDecision("continue", reason)
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
        return None

    def _commit(
        self,
        state: TrimState,
        record: StepRecord,
        spend: TrimSpend,
        runtime: Runtime[Any],
    ) -> dict[str, Any]:
        settings = self.settings(runtime)
        termination = self._termination(state, record, settings)
        budget = state.get("trim_budget")
        runtime.stream_writer(
            {
                "trim_event": "step",
                "index": record["index"],
                "author": record["author"],
                "model": record["model"],
                "score": record["draft_score"],
                "decision": record["decision"],
                "budget_blocked": record["budget_blocked"],
                "fallback": record["fallback"],
                "tokens": record["tokens"],
                "strong_tokens": spend["strong_tokens"],
                "budget": budget,
                "budget_left": None if budget is None else budget - spend["strong_tokens"],
                "overspent": bool(spend.get("overspent", False)),
                "text": record["text"],
            }
        )
        return {
            "trim_steps": [record],
            "trim_draft": None,
            "trim_spend": spend,
            "trim_termination": termination,
        }

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
    def _check_usage(spend: TrimSpend, out: StepOutput, role: str, budget: int | None) -> None:
        """Count untrusted usage; a strong model that overran ``max_tokens`` is distrusted.

        Once distrusted, the route node keeps every later draft of the question (the hard
        budget cannot be guaranteed for a model that does not honour its cap).
        """
        if out.usage_note is None and not out.overran:
            return
        spend["usage_flags"] = spend.get("usage_flags", 0) + 1
        if role == "strong" and (out.overran or "over_cap" in (out.usage_note or "")):
            spend["strong_untrusted"] = True

    def accept(self, state: TrimState, runtime: Runtime[Any]) -> dict[str, Any]:
        draft = state["trim_draft"]
        assert draft is not None
        return self._commit(state, self._weak_record(draft, None), self.spend(state), runtime)

    def _after_strong(
        self,
        state: TrimState,
        outcome: StepOutput | BaseException,
        attempts: int,
        failed_tokens: int,
        runtime: Runtime[Any],
    ) -> dict[str, Any]:
        draft = state["trim_draft"]
        assert draft is not None
        spend = self.spend(state)
        spend["strong_calls"] += attempts
        if failed_tokens:
            # Failed or abandoned attempts may have decoded tokens: they count.
            spend["strong_tokens"] += failed_tokens
            spend["strong_tokens_estimated"] = True
        if not isinstance(outcome, BaseException):
            self._check_usage(spend, outcome, "strong", state.get("trim_budget"))
        if isinstance(outcome, BaseException):
            spend["fallbacks"] += 1
            fallback = f"strong_error: {type(outcome).__name__}: {outcome}"
            return self._commit(state, self._weak_record(draft, fallback), spend, runtime)
        spend["strong_tokens"] += outcome.tokens
        spend["strong_tokens_estimated"] = (
            spend["strong_tokens_estimated"] or outcome.tokens_estimated
        )
        budget = state.get("trim_budget")
        if budget is not None and spend["strong_tokens"] > budget:
            spend["overspent"] = True
            logger.warning(
                "strong model %s overspent the budget: %d > %d strong tokens",
                outcome.model,
                spend["strong_tokens"],
                budget,
            )
        if not outcome.text:
            spend["fallbacks"] += 1
            fallback = "strong_empty: the strong model returned no text; draft kept"
            return self._commit(state, self._weak_record(draft, fallback), spend, runtime)
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
        return self._commit(state, record, spend, runtime)

    def escalate(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        settings = self.settings(runtime)
        outcome: StepOutput | BaseException = RuntimeError("not attempted")
        attempts = failed_tokens = 0
        prefix, open_step = self.prefix(state)
        for attempts in range(1, self.strong_max_retries + 2):  # noqa: B007
            try:
                outcome = self.strong_gen.generate(
                    state["question"], prefix, **self._gen_kwargs(settings, open_step, config)
                )
                break
            except StepGenerationError as exc:
                outcome = exc
                failed_tokens += exc.tokens
        return self._after_strong(state, outcome, attempts, failed_tokens, runtime)

    async def aescalate(
        self, state: TrimState, config: RunnableConfig, runtime: Runtime[Any]
    ) -> dict[str, Any]:
        settings = self.settings(runtime)
        outcome: StepOutput | BaseException = RuntimeError("not attempted")
        attempts = failed_tokens = 0
        prefix, open_step = self.prefix(state)
        for attempts in range(1, self.strong_max_retries + 2):  # noqa: B007
            try:
                outcome = await self.strong_gen.agenerate(
                    state["question"], prefix, **self._gen_kwargs(settings, open_step, config)
                )
                break
            except StepGenerationError as exc:
                outcome = exc
                failed_tokens += exc.tokens
        return self._after_strong(state, outcome, attempts, failed_tokens, runtime)

    @staticmethod
    def after_commit(state: TrimState) -> Literal["draft", "finish"]:
        return "finish" if state.get("trim_termination") else "draft"

    # -- finish ------------------------------------------------------------------------
    def finish(self, state: TrimState, runtime: Runtime[Any]) -> dict[str, Any]:
        steps = state.get("trim_steps") or []
        solution = render_solution(
            [s["text"] for s in steps], [s["stop"] == "length" for s in steps], self.delimiter
        )
        answer = extract_boxed(solution)
        spend = self.spend(state)
        termination = state.get("trim_termination") or "end_of_text"
        runtime.stream_writer(
            {
                "trim_event": "done",
                "final_answer": answer,
                "termination": termination,
                "spend": spend,
            }
        )
        message = AIMessage(
            content=solution,
            name="trim",
            response_metadata={
                "trim": {
                    "final_answer": answer,
                    "termination": termination,
                    "steps": len(steps),
                    "escalated_steps": sum(s["author"] == "strong" for s in steps),
                    "spend": dict(spend),
                }
            },
        )
        return {
            "messages": [message],
            "trim_final_answer": answer,
            "trim_solution": solution,
            "trim_termination": termination,
            "trim_draft": None,
        }


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


def recursion_limit(max_steps: int = 30) -> int:
    """A LangGraph ``recursion_limit`` that fits a TRIM run of ``max_steps`` steps.

    Each step takes up to four super-steps (draft, score, route, accept/escalate).
    ``invoke``/``stream`` use LangGraph's generous default, but ``batch``/``abatch`` get
    LangChain's default of 25, which stops a run after about six steps: pass
    ``config={"recursion_limit": recursion_limit(max_steps)}`` there.

    >>> recursion_limit(30)
    130
    """
    return 4 * max_steps + 10


def create_trim_graph(
    draft_model: ChatModelLike | StepGenerator,
    strong_model: ChatModelLike | StepGenerator,
    prm: ProcessRewardModel | None,
    policy: RoutingPolicy,
    *,
    budget: int | None = None,
    max_steps: int = 30,
    step_max_tokens: int = 512,
    max_total_tokens: int | None = None,
    step_format: str | StepFormat | None = None,
    strong_step_format: str | StepFormat | None = None,
    delimiter: str | None = None,
    mode: GenerationMode = "auto",
    strong_mode: GenerationMode | None = None,
    step_timeout: float | None = None,
    strong_max_retries: int = 1,
    on_prm_error: PRMErrorMode = "keep_draft",
    token_counter: Callable[[str], int] | None = None,
    max_question_chars: int = 20_000,
    state_schema: type[Any] = TrimState,
    context_schema: type[Any] = TrimContext,
) -> StateGraph[Any, Any, Any, Any]:
    """Build the TRIM subgraph (uncompiled): weak drafts, PRM scores, targeted escalation.

    Args:
        draft_model: the cheap model that drafts every step (chat model, init string or
            :class:`~langchain_trim.generation.StepGenerator`).
        strong_model: the expensive model that rewrites escalated steps.
        prm: process reward model scoring each draft; may be ``None`` only for policies
            that never need scores (``ThresholdPolicy(0)`` / ``ThresholdPolicy(1)``).
        policy: a :class:`~langchain_trim.policies.RoutingPolicy`.
        budget: default hard cap on strong output tokens per question (state key
            ``trim_budget`` overrides it per question).  A step is escalated only while
            the budget still covers ``step_max_tokens``; otherwise the draft is kept and
            the step is marked ``budget_blocked``.
        max_steps: trajectory length limit in steps (the paper uses 30).
        step_max_tokens: per-step output cap sent to both models as ``max_tokens``.  A
            step that reaches it is kept and the next call continues it.
        max_total_tokens: optional cap on the accepted solution's output tokens; the
            trajectory ends with termination ``"token_cap"`` once it is reached.
        step_format: how the models are asked for steps and how a step is cut: a
            :class:`~langchain_trim.step_format.StepFormat` or a registered name
            (``"paragraphs"``, the default, or the release's ``"release"``).
        strong_step_format: the strong model's format when it differs (defaults to
            ``step_format``); both must cut steps at the same delimiter.
        delimiter: overrides the format's step separator (a blank line).
        mode / strong_mode: ``"prefill"``, ``"instruct"`` or ``"auto"`` step generation
            for the draft / strong model (``strong_mode`` defaults to ``mode``).
        step_timeout: seconds per model or PRM call.  A draft timeout raises
            :class:`~langchain_trim.errors.StepTimeoutError`; a strong timeout keeps the
            draft (recorded as ``fallback``) and charges the budget the call's
            ``max_tokens``; a PRM timeout is a PRM error (``on_prm_error``).
        strong_max_retries: extra attempts for a failing strong call before the fallback.
        on_prm_error: ``"keep_draft"`` (record the failure, keep the unscored draft) or
            ``"raise"`` (:class:`~langchain_trim.errors.PRMError`).
        token_counter: counts tokens of models that report no ``usage_metadata``.
        max_question_chars: longer questions are rejected.

    Returns:
        An uncompiled ``StateGraph``; compile it with your checkpointer and ``name``.

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
    if on_prm_error not in ("keep_draft", "raise"):
        raise InvalidInputError(
            f"on_prm_error must be 'keep_draft' or 'raise', got {on_prm_error!r}"
        )
    if not isinstance(strong_max_retries, int) or strong_max_retries < 0:
        raise InvalidInputError(f"strong_max_retries must be >= 0, got {strong_max_retries!r}")
    if not hasattr(policy, "decide") or not hasattr(policy, "needs_score"):
        raise InvalidInputError(f"policy must implement RoutingPolicy, got {type(policy).__name__}")
    if prm is not None and not (hasattr(prm, "score") and hasattr(prm, "ascore")):
        raise InvalidInputError(f"prm must implement ProcessRewardModel, got {type(prm).__name__}")
    if step_timeout is not None and (not math.isfinite(step_timeout) or step_timeout <= 0):
        raise InvalidInputError(f"step_timeout must be positive, got {step_timeout}")
    settings = TrimSettings(
        budget=budget,
        max_steps=max_steps,
        step_max_tokens=step_max_tokens,
        max_total_tokens=max_total_tokens,
        max_question_chars=max_question_chars,
    )
    draft_format = get_step_format(step_format)
    strong_format = get_step_format(strong_step_format or draft_format)
    if delimiter is None and strong_format.delimiter != draft_format.delimiter:
        raise InvalidInputError(
            f"step formats {draft_format.name!r} and {strong_format.name!r} cut steps at "
            "different delimiters; pass delimiter= to choose one"
        )
    delimiter = delimiter or draft_format.delimiter
    common: dict[str, Any] = {
        "delimiter": delimiter,
        "token_counter": token_counter,
        "timeout": step_timeout,
    }
    nodes = _TrimNodes(
        draft=as_step_generator(
            draft_model,
            role="draft",
            run_name="trim.draft",
            mode=mode,
            step_format=draft_format,
            **common,
        ),
        strong=as_step_generator(
            strong_model,
            role="strong",
            run_name="trim.strong",
            mode=strong_mode or mode,
            step_format=strong_format,
            **common,
        ),
        prm=prm,
        policy=policy,
        settings=settings,
        delimiter=delimiter,
        on_prm_error=on_prm_error,
        strong_max_retries=strong_max_retries,
        timeout=step_timeout,
    )
    builder: StateGraph[Any, Any, Any, Any] = StateGraph(
        state_schema,
        context_schema=context_schema,
        input_schema=TrimInput,
        output_schema=TrimOutput,
    )

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


__all__ = ["create_trim_graph", "recursion_limit"]
