"""Local models that run offline on a CPU: llama.cpp over GGUF files shipped in wheels."""

from __future__ import annotations

from typing import Any

from langchain_trim.local.registry import (
    EMBEDDED_MODELS,
    EmbeddedModel,
    get_embedded,
    resolve_model_path,
)


def load_local_chat_model(name: str, **kwargs: Any) -> Any:
    """``local:<name>`` model strings: an embedded model name or a ``.gguf`` path.

    The name is checked now (an unknown embedded name or a missing file raises
    :class:`~langchain_trim.errors.ModelNotFoundError`); the weights load on first use.
    """
    import os
    from pathlib import Path

    from langchain_trim.errors import ModelNotFoundError
    from langchain_trim.local.llama import LlamaCppChatModel

    path = Path(os.path.expanduser(name))
    if path.suffix == ".gguf" or os.sep in name:
        if not path.is_file():
            raise ModelNotFoundError(f"model file {path} does not exist")
    else:
        get_embedded(name)
    return LlamaCppChatModel(model=name, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "LlamaCppChatModel":
        from langchain_trim.local.llama import LlamaCppChatModel

        return LlamaCppChatModel
    raise AttributeError(name)


__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "LlamaCppChatModel",
    "get_embedded",
    "load_local_chat_model",
    "resolve_model_path",
]
