"""Step generation: ask a chat model for exactly one more step of a solution.

Two ways to get one step out of any chat model:

* **prefill** (the paper's): the assistant turn is pre-filled with ``"Solution: "`` and
  the accepted steps, and the model continues it until the step delimiter.  Local
  models, Anthropic and vLLM (``continue_final_message``) support it.
* **instruct**: plain chat APIs get the accepted steps in the user turn and are told to
  write only the next step.

Either way generation stops at the delimiter; the strong model never sees a discarded
weak draft because only accepted steps are ever put in the prompt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig

from langchain_trim.errors import StepGenerationError, StepTimeoutError
from langchain_trim.models import (
    ChatModelLike,
    model_display_name,
    resolve_chat_model,
    supports_prefill,
)
from langchain_trim.state import StopReason
from langchain_trim.steps import DEFAULT_DELIMITER, approx_token_count, is_blank_step

GenerationMode = Literal["auto", "prefill", "instruct"]

USER_PROMPT = (
    "Solve the following math problem step by step, given in LaTeX format, clearly and "
    "concisely, and present the final answer as \\boxed{{X}}, where X is the fully "
    "simplified solution.\nQuestion: {question}"
)
"""The user turn of the official release (prefill mode)."""

PREFILL_PREFIX = "Solution: "

INSTRUCT_SYSTEM = (
    "You write solutions to math problems one step at a time. Steps are separated by a "
    "blank line. When asked for the next step, reply with that single step only: no "
    "preamble, no step number, no later steps. When the step reaches the final answer, "
    "write it as \\boxed{X}."
)

INSTRUCT_USER = (
    "Question: {question}\n\nSteps so far:\n<steps>\n{steps}\n</steps>\n\nWrite step {number} only."
)

_LENGTH_REASONS = {"length", "max_tokens", "MAX_TOKENS", "model_length_limit"}
_EOS_REASONS = {"eos", "end_turn", "end_of_text", "eos_token"}


@dataclass(frozen=True)
class StepOutput:
    """One generated step."""

    text: str
    """The step without the delimiter (may be empty at end of text)."""
    tokens: int
    """Output tokens decoded for this step (blank chunks that were continued included)."""
    tokens_estimated: bool
    stop: StopReason
    model: str
    logprobs: tuple[float, ...] | None = None
    """Token log-probabilities of ``text`` when the backend returns them."""


@runtime_checkable
class StepGenerator(Protocol):
    """Writes the next step of a solution from the accepted prefix."""

    name: str

    def generate(
        self,
        question: str,
        prefix: Sequence[str],
        *,
        max_tokens: int,
        config: RunnableConfig | None = None,
    ) -> StepOutput: ...

    async def agenerate(
        self,
        question: str,
        prefix: Sequence[str],
        *,
        max_tokens: int,
        config: RunnableConfig | None = None,
    ) -> StepOutput: ...


def build_messages(
    question: str,
    prefix_text: str,
    n_steps: int,
    *,
    mode: Literal["prefill", "instruct"],
    delimiter: str = DEFAULT_DELIMITER,
) -> list[BaseMessage]:
    """The chat messages that ask for the step after ``prefix_text``.

    ``prefix_text`` is the accepted steps joined by the delimiter ("" at the start).
    """
    if mode == "prefill":
        filled = PREFILL_PREFIX + (prefix_text + delimiter if prefix_text else "")
        return [HumanMessage(USER_PROMPT.format(question=question)), AIMessage(filled)]
    steps = prefix_text if prefix_text else "(none yet)"
    return [
        SystemMessage(INSTRUCT_SYSTEM),
        HumanMessage(INSTRUCT_USER.format(question=question, steps=steps, number=n_steps + 1)),
    ]


def parse_prefix(
    messages: Sequence[BaseMessage], delimiter: str = DEFAULT_DELIMITER
) -> tuple[str, list[str]]:
    """Inverse of :func:`build_messages`: recover ``(question, accepted steps)``.

    Fake and scripted models use it to know which step they are asked for.
    """
    question = ""
    steps_text = ""
    for msg in messages:
        content = msg.content if isinstance(msg.content, str) else str(msg.content)
        if isinstance(msg, HumanMessage):
            if "\nQuestion: " in content:
                question = content.split("\nQuestion: ", 1)[1]
            elif content.startswith("Question: "):
                body = content[len("Question: ") :]
                question = body.split("\n\nSteps so far:", 1)[0]
                if "<steps>\n" in body:
                    inner = body.split("<steps>\n", 1)[1].split("\n</steps>", 1)[0]
                    steps_text = "" if inner == "(none yet)" else inner
        elif isinstance(msg, AIMessage) and content.startswith(PREFILL_PREFIX):
            steps_text = content[len(PREFILL_PREFIX) :].removesuffix(delimiter)
    # Blank chunks that were continued past count as chunks: the model saw them.
    return question, steps_text.split(delimiter) if steps_text else []


def _stop_reason(message: BaseMessage) -> StopReason:
    meta = message.response_metadata or {}
    reason = meta.get("finish_reason") or meta.get("stop_reason") or meta.get("done_reason")
    if reason in _LENGTH_REASONS:
        return "length"
    if reason in _EOS_REASONS:
        return "eos"
    return "delimiter"


def _logprobs(message: BaseMessage) -> tuple[float, ...] | None:
    content = (message.response_metadata or {}).get("logprobs")
    if isinstance(content, dict):
        content = content.get("content")
    if not isinstance(content, list) or not content:
        return None
    try:
        return tuple(float(tok["logprob"]) for tok in content)
    except (KeyError, TypeError, ValueError):
        return None


class ChatStepGenerator:
    """A :class:`StepGenerator` over any LangChain chat model.

    Args:
        model: a ``BaseChatModel``, a bound one, or an ``init_chat_model`` string.
        mode: ``"prefill"``, ``"instruct"`` or ``"auto"`` (prefill when the model
            supports it, see :func:`langchain_trim.models.supports_prefill`).
        run_name: name of the model call in traces (``trim.draft`` / ``trim.strong``).
        token_counter: counts tokens when the model reports no ``usage_metadata``; such
            counts are marked estimated.  Defaults to a ~4-characters-per-token estimate.
        timeout: seconds per call; ``None`` waits forever.
        max_blank_retries: how many blank/punctuation-only chunks are continued before
            the model is taken to have ended.
        pass_max_tokens: send the per-step ``max_tokens`` cap with each call.

    >>> from langchain_trim.testing import FakeStepModel
    >>> gen = ChatStepGenerator(FakeStepModel(steps=["2 + 2 = 4", r"\\boxed{4}"]))
    >>> gen.generate("2+2?", [], max_tokens=64).text
    '2 + 2 = 4'
    """

    def __init__(
        self,
        model: ChatModelLike,
        *,
        mode: GenerationMode = "auto",
        delimiter: str = DEFAULT_DELIMITER,
        run_name: str = "trim.step",
        role: str = "step",
        token_counter: Callable[[str], int] | None = None,
        timeout: float | None = None,
        max_blank_retries: int = 2,
        pass_max_tokens: bool = True,
        tags: Sequence[str] = ("nostream",),
    ) -> None:
        if mode not in ("auto", "prefill", "instruct"):
            raise ValueError(f"mode must be 'auto', 'prefill' or 'instruct', got {mode!r}")
        if not delimiter:
            raise ValueError("delimiter must be a non-empty string")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.model: Runnable[Any, Any] = resolve_chat_model(model, role=role)
        self.mode: Literal["prefill", "instruct"]
        if mode == "auto":
            self.mode = "prefill" if supports_prefill(self.model) else "instruct"
        else:
            self.mode = mode
        self.delimiter = delimiter
        self.run_name = run_name
        self.role = role
        self.name = model_display_name(self.model)
        self.token_counter = token_counter
        self.timeout = timeout
        self.max_blank_retries = max_blank_retries
        self.pass_max_tokens = pass_max_tokens
        self.tags = list(tags)

    # -- helpers -----------------------------------------------------------------
    def _call_kwargs(self, max_tokens: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"stop": [self.delimiter]}
        if self.pass_max_tokens:
            kwargs["max_tokens"] = max_tokens
        return kwargs

    def _config(self, config: RunnableConfig | None, metadata: dict[str, Any]) -> RunnableConfig:
        cfg: RunnableConfig = dict(config or {})  # type: ignore[assignment]
        cfg["run_name"] = self.run_name
        cfg["tags"] = [*cfg.get("tags", []), *self.tags]
        cfg["metadata"] = {**cfg.get("metadata", {}), **metadata}
        return cfg

    def _count(self, message: BaseMessage, text: str) -> tuple[int, bool]:
        usage = getattr(message, "usage_metadata", None)
        if usage and usage.get("output_tokens") is not None:
            return int(usage["output_tokens"]), False
        if self.token_counter is not None:
            return int(self.token_counter(text)), True
        return approx_token_count(text), True

    def _accumulate(self, message: Any, prefix_text: str, acc: dict[str, Any]) -> tuple[bool, str]:
        """Fold one model answer into ``acc``; return (done, new prefix_text)."""
        if not isinstance(message, BaseMessage):
            raise StepGenerationError(
                f"{self.role} model returned {type(message).__name__}, not a message",
                role=self.role,
                step_index=acc["index"],
            )
        text = str(message.text)
        stop = _stop_reason(message)
        if self.delimiter in text:  # the backend ignored the stop sequence
            text = text.split(self.delimiter, 1)[0]
            stop = "delimiter"
        tokens, estimated = self._count(message, text)
        acc["tokens"] += tokens
        acc["estimated"] = acc["estimated"] or estimated
        acc["model"] = (message.response_metadata or {}).get("model_name") or self.name
        acc["logprobs"] = _logprobs(message)
        clean = text.strip()
        if not is_blank_step(clean) or stop != "delimiter":
            acc["text"], acc["stop"] = clean, stop
            return True, prefix_text
        acc["blank"] += 1
        if acc["blank"] > self.max_blank_retries:
            acc["text"], acc["stop"] = "", "eos"
            return True, prefix_text
        # Continue past the blank chunk with the same model.
        return False, prefix_text + (self.delimiter if prefix_text else "") + clean

    def _finish(self, acc: dict[str, Any]) -> StepOutput:
        return StepOutput(
            text=acc["text"],
            tokens=acc["tokens"],
            tokens_estimated=acc["estimated"],
            stop=acc["stop"],
            model=acc["model"],
            logprobs=acc["logprobs"] if acc["text"] else None,
        )

    def _new_acc(self, prefix: Sequence[str]) -> dict[str, Any]:
        return {
            "index": len(prefix),
            "tokens": 0,
            "estimated": False,
            "blank": 0,
            "model": self.name,
            "logprobs": None,
            "text": "",
            "stop": "eos",
        }

    def _error(self, exc: BaseException, index: int) -> StepGenerationError:
        if isinstance(exc, StepGenerationError):
            return exc
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)):
            return StepTimeoutError(
                f"{self.role} model {self.name} timed out after {self.timeout}s at step {index}",
                role=self.role,
                step_index=index,
            )
        return StepGenerationError(
            f"{self.role} model {self.name} failed at step {index}: {type(exc).__name__}: {exc}",
            role=self.role,
            step_index=index,
        )

    # -- protocol ------------------------------------------------------------------
    def generate(
        self,
        question: str,
        prefix: Sequence[str],
        *,
        max_tokens: int,
        config: RunnableConfig | None = None,
    ) -> StepOutput:
        acc = self._new_acc(prefix)
        prefix_text = self.delimiter.join(prefix)
        cfg = self._config(config, {"trim_step": len(prefix), "trim_role": self.role})
        while True:
            messages = build_messages(
                question, prefix_text, len(prefix), mode=self.mode, delimiter=self.delimiter
            )
            try:
                if self.timeout is None:
                    message = self.model.invoke(messages, cfg, **self._call_kwargs(max_tokens))
                else:
                    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
                    try:
                        future = pool.submit(
                            self.model.invoke, messages, cfg, **self._call_kwargs(max_tokens)
                        )
                        message = future.result(timeout=self.timeout)
                    finally:
                        pool.shutdown(wait=False, cancel_futures=True)
            except Exception as exc:
                raise self._error(exc, len(prefix)) from exc
            done, prefix_text = self._accumulate(message, prefix_text, acc)
            if done:
                return self._finish(acc)

    async def agenerate(
        self,
        question: str,
        prefix: Sequence[str],
        *,
        max_tokens: int,
        config: RunnableConfig | None = None,
    ) -> StepOutput:
        acc = self._new_acc(prefix)
        prefix_text = self.delimiter.join(prefix)
        cfg = self._config(config, {"trim_step": len(prefix), "trim_role": self.role})
        while True:
            messages = build_messages(
                question, prefix_text, len(prefix), mode=self.mode, delimiter=self.delimiter
            )
            try:
                call = self.model.ainvoke(messages, cfg, **self._call_kwargs(max_tokens))
                message = await (
                    call if self.timeout is None else asyncio.wait_for(call, self.timeout)
                )
            except Exception as exc:
                raise self._error(exc, len(prefix)) from exc
            done, prefix_text = self._accumulate(message, prefix_text, acc)
            if done:
                return self._finish(acc)


def as_step_generator(
    model: ChatModelLike | StepGenerator, *, role: str, run_name: str, **kwargs: Any
) -> StepGenerator:
    """Use ``model`` as is when it already is a :class:`StepGenerator`, else wrap it."""
    if isinstance(model, StepGenerator) and not isinstance(model, Runnable):
        return model
    return ChatStepGenerator(model, role=role, run_name=run_name, **kwargs)


__all__ = [
    "INSTRUCT_SYSTEM",
    "INSTRUCT_USER",
    "USER_PROMPT",
    "ChatStepGenerator",
    "GenerationMode",
    "StepGenerator",
    "StepOutput",
    "as_step_generator",
    "build_messages",
    "parse_prefix",
]
