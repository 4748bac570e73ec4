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
import logging
import math
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, runtime_checkable

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from typing_extensions import Required, TypedDict, Unpack

from langchain_trim.errors import StepGenerationError, StepTimeoutError
from langchain_trim.models import (
    ChatModelLike,
    model_display_name,
    resolve_chat_model,
    supports_prefill,
)
from langchain_trim.state import StopReason
from langchain_trim.step_format import (
    INSTRUCT_RULES,
    INSTRUCT_USER,
    RELEASE,
    RELEASE_USER,
    StepFormat,
    get_step_format,
    parse_request,
)
from langchain_trim.steps import DEFAULT_DELIMITER, approx_token_count, is_blank_step

logger = logging.getLogger("langchain_trim")

GenerationMode = Literal["auto", "prefill", "instruct"]

# Kept for callers of earlier versions: the release format's prompt and the instruct rules.
USER_PROMPT = RELEASE_USER
INSTRUCT_SYSTEM = INSTRUCT_RULES
PREFILL_PREFIX = RELEASE.prefill

_LENGTH_REASONS = {"length", "max_tokens", "MAX_TOKENS", "model_length_limit"}
_EOS_REASONS = {"eos", "end_turn", "end_of_text", "eos_token"}


@dataclass(frozen=True)
class StepOutput:
    """One generated step."""

    text: str
    """The step without the delimiter (may be empty at end of text)."""
    tokens: int
    """Output tokens decoded for this step, over every call it took (blank chunks that
    were continued included); never more than the ``max_tokens`` it was asked for unless
    ``usage_note`` says the model overran."""
    tokens_estimated: bool
    stop: StopReason
    model: str
    logprobs: tuple[float, ...] | None = None
    """Token log-probabilities of ``text`` when the backend returns them."""
    usage_note: str | None = None
    """Set when the model's reported usage could not be trusted (negative, non-finite,
    more than asked) or the model wrote past ``max_tokens``; ``tokens`` is then counted
    locally and ``tokens_estimated`` is true."""
    overran: bool = False
    """The model produced more than ``max_tokens`` (it does not honour the cap)."""


class StepOptions(TypedDict, total=False):
    """The keyword arguments of one step request, shared by every step generator."""

    max_tokens: Required[int]
    """The step's token cap."""
    config: RunnableConfig | None
    """The run config of the call (callbacks, tags, metadata)."""
    continue_last: bool
    """The last prefix step was cut by the cap: continue it instead of starting a new one."""


@runtime_checkable
class StepGenerator(Protocol):
    """Writes the next step of a solution from the accepted prefix.

    ``prefix`` holds the accepted steps as the model should see them; when
    ``continue_last`` is true its last step was cut by the token cap and the generator
    continues it instead of starting a new step.
    """

    name: str

    def generate(
        self, question: str, prefix: Sequence[str], **options: Unpack[StepOptions]
    ) -> StepOutput: ...

    async def agenerate(
        self, question: str, prefix: Sequence[str], **options: Unpack[StepOptions]
    ) -> StepOutput: ...


class DelegatingStepGenerator:
    """A step generator that hands each call to another one.

    Wrappers (a pool, a budget guard) say which generator writes the step and what
    happens around the call in :meth:`_delegate` and :meth:`_settle`; the sync and async
    paths share both, and every keyword argument reaches the inner generator.
    """

    name: str

    def _delegate(
        self, question: str, prefix: Sequence[str], max_tokens: int
    ) -> AbstractContextManager[StepGenerator]:
        """The generator to call, in a context that sees the call's failure."""
        raise NotImplementedError

    def _settle(self, out: StepOutput) -> StepOutput:
        """What the wrapper does with a step once written."""
        return out

    def generate(
        self, question: str, prefix: Sequence[str], **options: Unpack[StepOptions]
    ) -> StepOutput:
        with self._delegate(question, prefix, options["max_tokens"]) as gen:
            out = gen.generate(question, prefix, **options)
        return self._settle(out)

    async def agenerate(
        self, question: str, prefix: Sequence[str], **options: Unpack[StepOptions]
    ) -> StepOutput:
        with self._delegate(question, prefix, options["max_tokens"]) as gen:
            out = await gen.agenerate(question, prefix, **options)
        return self._settle(out)


def build_messages(
    question: str,
    prefix_text: str,
    n_steps: int,
    *,
    mode: Literal["prefill", "instruct"],
    delimiter: str = DEFAULT_DELIMITER,
    step_format: str | StepFormat = "release",
    continue_last: bool = False,
) -> list[BaseMessage]:
    """The chat messages that ask for the step after ``prefix_text``.

    ``prefix_text`` is the accepted steps joined by the delimiter ("" at the start).
    """
    fmt = get_step_format(step_format)
    if delimiter != fmt.delimiter:
        fmt = replace(fmt, delimiter=delimiter)
    return fmt.messages(question, prefix_text, n_steps, mode=mode, continue_last=continue_last)


def parse_prefix(
    messages: Sequence[BaseMessage], delimiter: str = DEFAULT_DELIMITER
) -> tuple[str, list[str]]:
    """Inverse of :func:`build_messages`: recover ``(question, accepted steps)``.

    Fake and scripted models use it to know which step they are asked for; any
    registered step format is recognised.
    """
    question, steps_text = parse_request(messages)
    steps_text = steps_text.removesuffix(delimiter)
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


@dataclass(frozen=True)
class _Call:
    """One model call of a step, and what its failure is charged against."""

    messages: list[BaseMessage]
    config: RunnableConfig
    kwargs: dict[str, Any]
    acc: dict[str, Any]
    asked: int


class ChatStepGenerator:
    """A :class:`StepGenerator` over any LangChain chat model.

    Args:
        model: a ``BaseChatModel``, a bound one, or an ``init_chat_model`` string.
        step_format: a :class:`~langchain_trim.step_format.StepFormat` or the name of a
            registered one (``"paragraphs"``, ``"release"``); see
            :mod:`langchain_trim.step_format`.
        mode: ``"prefill"``, ``"instruct"`` or ``"auto"`` (prefill when the model
            supports it, see :func:`langchain_trim.models.supports_prefill`).
        delimiter: overrides the format's step delimiter.
        run_name: name of the model call in traces (``trim.draft`` / ``trim.strong``).
        token_counter: counts tokens when the model reports no usable ``usage_metadata``;
            such counts are marked estimated.  Defaults to ~4 characters per token.
        timeout: seconds per call; ``None`` waits forever.  A call that times out is
            charged its whole ``max_tokens`` (the model may have spent it) on the
            :class:`~langchain_trim.errors.StepTimeoutError` it raises.
        max_blank_retries: how many blank/punctuation-only chunks are continued before
            the model is taken to have ended.  Every continuation is asked for only what
            is left of ``max_tokens``, so a step never costs more than its cap.
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
        step_format: str | StepFormat | None = None,
        mode: GenerationMode = "auto",
        delimiter: str | None = None,
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
        if delimiter is not None and not delimiter:
            raise ValueError("delimiter must be a non-empty string")
        if timeout is not None and (not math.isfinite(timeout) or timeout <= 0):
            raise ValueError(f"timeout must be positive, got {timeout}")
        fmt = get_step_format(step_format)
        if delimiter is not None and delimiter != fmt.delimiter:
            fmt = replace(fmt, delimiter=delimiter)
        self.step_format = fmt
        self.model: Runnable[Any, Any] = resolve_chat_model(model, role=role)
        self.mode: Literal["prefill", "instruct"]
        if mode == "auto":
            self.mode = "prefill" if supports_prefill(self.model) else "instruct"
        else:
            self.mode = mode
        self.delimiter = fmt.delimiter
        self.run_name = run_name
        self.role = role
        self.name = model_display_name(self.model)
        self.token_counter = token_counter
        self.timeout = timeout
        self.max_blank_retries = max_blank_retries
        self.pass_max_tokens = pass_max_tokens
        self.tags = list(tags)
        inner = getattr(self.model, "bound", self.model)
        self._deadline_aware = bool(getattr(inner, "supports_deadline", False))

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

    def _estimate(self, text: str) -> int:
        if self.token_counter is not None:
            return int(self.token_counter(text))
        return approx_token_count(text)

    def _count(
        self, message: BaseMessage, text: str, asked: int
    ) -> tuple[int, bool, str | None, bool]:
        """Tokens of one answer: the reported usage when it can be trusted.

        Reported output tokens must be a finite, non-negative whole number and no more
        than ``asked``; otherwise the text is counted locally and the reason returned.
        Returns ``(tokens, estimated, note, overran)``; ``overran`` means the text itself
        is longer than ``asked`` (beyond the slack of a ~4-characters-per-token estimate
        when no exact ``token_counter`` is given): the model ignores ``max_tokens``.
        """
        usage = getattr(message, "usage_metadata", None)
        reported = usage.get("output_tokens") if usage else None
        measured = self._estimate(text)
        slack = 1.0 if self.token_counter is not None else 1.5
        overran = self.pass_max_tokens and measured > slack * asked
        # A rough local count never charges more than was asked unless the text proves an
        # overrun, so a model that honours max_tokens cannot overrun a budget on it.
        estimate = measured if (overran or not self.pass_max_tokens) else min(measured, asked)
        if reported is None:
            return estimate, True, None, overran
        ok = (
            isinstance(reported, (int, float))
            and not isinstance(reported, bool)
            and math.isfinite(reported)
            and reported >= 0
            and float(reported).is_integer()
        )
        if not ok:
            return estimate, True, f"usage_invalid: output_tokens={reported!r}", overran
        if self.pass_max_tokens and reported > asked:
            # The usage lies (charge the cap) or the model wrote past it (charge the text).
            note = f"usage_over_cap: reported {int(reported)} output tokens for max_tokens={asked}"
            return (estimate if overran else asked), True, note, overran
        return int(reported), False, None, False

    def _accumulate(
        self, message: Any, prefix_text: str, acc: dict[str, Any], asked: int
    ) -> tuple[bool, str]:
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
        if stop == "eos" and self.mode == "instruct" and text.strip():
            # Asked for one step in a turn of its own, a model ends the turn when the step
            # is written: that ends the step, not the solution (an empty turn still does).
            stop = "delimiter"
        tokens, estimated, note, overran = self._count(message, text, asked)
        if note is not None:
            acc["note"] = note
        acc["overran"] = acc["overran"] or overran
        acc["tokens"] += tokens
        acc["estimated"] = acc["estimated"] or estimated
        acc["model"] = (message.response_metadata or {}).get("model_name") or self.name
        acc["logprobs"] = _logprobs(message)
        # A continuation keeps its leading space and a capped chunk its trailing one, so
        # that gluing the chunks back (steps.render_solution) restores the text exactly.
        clean = text.rstrip() if acc["continuing"] else text.strip()
        if stop == "length":
            clean = text if acc["continuing"] else text.lstrip()
        if not is_blank_step(clean) or stop != "delimiter":
            acc["text"], acc["stop"] = acc["lead"] + clean, stop
            return True, prefix_text
        acc["blank"] += 1
        if acc["continuing"]:
            # The cut step ended right at the cap: what follows is a new paragraph.
            acc["continuing"] = False
            acc["lead"] = self.delimiter
            return False, prefix_text
        if acc["blank"] > self.max_blank_retries:
            acc["text"], acc["stop"] = "", "eos"
            return True, prefix_text
        # Continue past the blank chunk with the same model.
        return False, prefix_text + (self.delimiter if prefix_text else "") + clean

    def _finish(self, acc: dict[str, Any]) -> StepOutput:
        if acc["note"] is not None:
            logger.warning("%s model %s: %s", self.role, self.name, acc["note"])
        return StepOutput(
            text=acc["text"],
            tokens=acc["tokens"],
            tokens_estimated=acc["estimated"],
            stop=acc["stop"],
            model=acc["model"],
            logprobs=acc["logprobs"] if acc["text"] else None,
            usage_note=acc["note"],
            overran=acc["overran"],
        )

    def _new_acc(self, prefix: Sequence[str], continue_last: bool) -> dict[str, Any]:
        return {
            "index": len(prefix) - 1 if continue_last else len(prefix),
            "tokens": 0,
            "estimated": False,
            "blank": 0,
            "model": self.name,
            "logprobs": None,
            "text": "",
            "stop": "eos",
            "note": None,
            "overran": False,
            "continuing": continue_last,
            "lead": "",
        }

    def _messages(
        self, question: str, prefix_text: str, n_steps: int, acc: dict[str, Any]
    ) -> list[BaseMessage]:
        return self.step_format.messages(
            question, prefix_text, n_steps, mode=self.mode, continue_last=acc["continuing"]
        )

    def _error(self, exc: BaseException, acc: dict[str, Any], asked: int) -> StepGenerationError:
        index = acc["index"]
        if isinstance(exc, StepGenerationError):
            return exc
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)):
            spent = getattr(exc, "tokens", None)
            error = StepTimeoutError(
                f"{self.role} model {self.name} timed out after {self.timeout}s at step {index}",
                role=self.role,
                step_index=index,
            )
            # The abandoned call may have decoded up to what it was asked for.
            error.tokens = acc["tokens"] + (spent if isinstance(spent, int) else asked)
            error.tokens_estimated = not isinstance(spent, int)
            return error
        if acc["tokens"]:
            failed = StepGenerationError(
                f"{self.role} model {self.name} failed at step {index}: "
                f"{type(exc).__name__}: {exc}",
                role=self.role,
                step_index=index,
            )
            failed.tokens = acc["tokens"]
            return failed
        return StepGenerationError(
            f"{self.role} model {self.name} failed at step {index}: {type(exc).__name__}: {exc}",
            role=self.role,
            step_index=index,
        )

    def _steps(
        self,
        question: str,
        prefix: Sequence[str],
        *,
        max_tokens: int,
        config: RunnableConfig | None = None,
        continue_last: bool = False,
    ) -> Generator[_Call | StepOutput, Any, None]:
        """The step loop without I/O, for the sync and async paths alike.

        Yields each model call to make (and is sent its answer), then the step.
        """
        acc = self._new_acc(prefix, continue_last)
        prefix_text = self.delimiter.join(prefix)
        cfg = self._config(config, {"trim_step": acc["index"], "trim_role": self.role})
        while True:
            asked = max_tokens - acc["tokens"]
            if asked <= 0:  # blank continuations used up the step's cap
                acc["stop"] = "length"
                break
            messages = self._messages(question, prefix_text, len(prefix), acc)
            message = yield _Call(messages, cfg, self._call_kwargs(asked), acc, asked)
            done, prefix_text = self._accumulate(message, prefix_text, acc, asked)
            if done:
                break
        yield self._finish(acc)

    def _deadline(self, call: _Call) -> dict[str, Any]:
        """The call's keyword arguments, with the deadline a deadline-aware model stops at."""
        if self.timeout is not None and self._deadline_aware:
            # The model stops itself at the deadline and frees its lock; the error it
            # raises carries the tokens it decoded.
            return {**call.kwargs, "deadline": time.monotonic() + self.timeout}
        return call.kwargs

    def _invoke(self, call: _Call) -> Any:
        kwargs = self._deadline(call)
        try:
            if self.timeout is None or self._deadline_aware:
                return self.model.invoke(call.messages, call.config, **kwargs)
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            try:
                future = pool.submit(self.model.invoke, call.messages, call.config, **kwargs)
                return future.result(timeout=self.timeout)
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
        except Exception as exc:
            raise self._error(exc, call.acc, call.asked) from exc

    async def _ainvoke(self, call: _Call) -> Any:
        kwargs = self._deadline(call)
        try:
            answer = self.model.ainvoke(call.messages, call.config, **kwargs)
            return await (
                answer if self.timeout is None else asyncio.wait_for(answer, self.timeout)
            )
        except Exception as exc:
            raise self._error(exc, call.acc, call.asked) from exc

    # -- protocol ------------------------------------------------------------------
    def generate(
        self, question: str, prefix: Sequence[str], **options: Unpack[StepOptions]
    ) -> StepOutput:
        steps = self._steps(question, prefix, **options)
        request = next(steps)
        while isinstance(request, _Call):
            request = steps.send(self._invoke(request))
        return request

    async def agenerate(
        self, question: str, prefix: Sequence[str], **options: Unpack[StepOptions]
    ) -> StepOutput:
        steps = self._steps(question, prefix, **options)
        request = next(steps)
        while isinstance(request, _Call):
            request = steps.send(await self._ainvoke(request))
        return request


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
    "StepOptions",
    "StepOutput",
    "as_step_generator",
    "build_messages",
    "parse_prefix",
]
