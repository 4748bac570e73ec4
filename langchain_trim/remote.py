"""Models behind OpenAI-compatible servers (vLLM, SGLang, llama.cpp server, hosted APIs)."""

from __future__ import annotations

import os
from typing import Any

from langchain_trim.models import vllm_prefill


def openai_compatible(
    model: str,
    base_url: str,
    *,
    prefill: bool = True,
    api_key: str | None = None,
    temperature: float = 0.7,
    top_p: float = 0.8,
    timeout: float = 120.0,
    max_retries: int = 2,
) -> Any:
    """A ``ChatOpenAI`` pointed at ``base_url``, bound for vLLM prefill by default.

    ``stream_usage=True`` keeps token usage reported by servers with a custom base URL;
    ``prefill=False`` gives a plain chat model (TRIM then uses the instructed mode).
    """
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",  # type: ignore[arg-type]
        temperature=temperature,
        top_p=top_p,
        timeout=timeout,
        max_retries=max_retries,
        stream_usage=True,
    )
    return vllm_prefill(chat) if prefill else chat


__all__ = ["openai_compatible"]
