"""Resolve model arguments: a ``BaseChatModel`` instance or an ``init_chat_model`` string."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable

from langchain_trim.errors import InvalidInputError

ChatModelLike = BaseChatModel | Runnable[Any, Any] | str
"""A chat model, a bound chat model (``model.bind(...)``), or an init string."""


def resolve_chat_model(model: ChatModelLike, *, role: str) -> Runnable[Any, Any]:
    """Turn ``model`` into a runnable chat model.

    Strings go through LangChain's ``init_chat_model`` (``"openai:gpt-4o-mini"``,
    ``"anthropic:claude-3-7-sonnet-latest"``, ...), except ``"local:<name>"`` which
    loads one of the embedded llama.cpp models (see :mod:`langchain_trim.local`).  A string
    that names no provider, no embedded model and no existing ``.gguf`` file fails here,
    at build time, with :class:`~langchain_trim.errors.InvalidInputError` — not later as
    a strong model that fails every call.
    """
    if isinstance(model, str):
        spec = model.strip()
        if not spec:
            raise InvalidInputError(f"{role} model string is empty")
        if spec.startswith("local:"):
            from langchain_trim.local import load_local_chat_model

            try:
                return load_local_chat_model(spec.removeprefix("local:"))
            except (ValueError, FileNotFoundError) as exc:
                raise InvalidInputError(f"{role} model {spec!r}: {exc}") from exc
        try:
            from langchain.chat_models import init_chat_model
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise InvalidInputError(
                f"{role} model {spec!r} is a string, which needs the `langchain` package "
                "for init_chat_model: pip install 'langchain-trim[openai]' (or pass a "
                "BaseChatModel instance)"
            ) from exc
        try:
            return init_chat_model(spec)
        except ValueError as exc:  # unknown provider / model: the string is mistyped
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise InvalidInputError(
                f"{role} model {spec!r} cannot be initialised: {first} (expected "
                "'<provider>:<model>', e.g. 'openai:gpt-4o-mini', or 'local:<embedded name>')"
            ) from exc
    if isinstance(model, Runnable):
        return model
    raise InvalidInputError(
        f"{role} model must be a BaseChatModel, a bound chat model or an init_chat_model "
        f"string, got {type(model).__name__}"
    )


def model_display_name(model: Any) -> str:
    """A readable name for a chat model or a binding of one."""
    inner = getattr(model, "bound", model)
    for attr in ("model_name", "model", "model_id", "name"):
        value = getattr(inner, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(inner).__name__


def supports_prefill(model: Any) -> bool:
    """Whether a chat model continues a trailing assistant message (prefill).

    True for models that say so (``supports_prefill = True``, as the embedded llama.cpp
    models and the test fakes do) and for Anthropic's chat models.  OpenAI-compatible
    servers need ``continue_final_message`` (see :func:`langchain_trim.vllm_prefill`), so
    they default to the instructed mode.
    """
    bound_kwargs = getattr(model, "kwargs", None)
    if isinstance(bound_kwargs, dict):
        extra = bound_kwargs.get("extra_body") or {}
        if isinstance(extra, dict) and extra.get("continue_final_message"):
            return True
    inner = getattr(model, "bound", model)
    flag = getattr(inner, "supports_prefill", None)
    if isinstance(flag, bool):
        return flag
    return type(inner).__name__ in {"ChatAnthropic", "ChatAnthropicVertex"}


def vllm_prefill(model: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """Bind an OpenAI-compatible chat model to vLLM's prefill continuation.

    vLLM continues the trailing assistant message when asked with
    ``continue_final_message=True`` and ``add_generation_prompt=False``; TRIM then uses
    the paper's prefill mode with it.

    >>> from langchain_trim.testing import FakeStepModel
    >>> supports_prefill(vllm_prefill(FakeStepModel(steps=["x"], supports_prefill=False)))
    True
    """
    return model.bind(extra_body={"continue_final_message": True, "add_generation_prompt": False})


__all__ = [
    "ChatModelLike",
    "model_display_name",
    "resolve_chat_model",
    "supports_prefill",
    "vllm_prefill",
]
