"""The vLLM request and response models that the stub server checks its traffic against.

vLLM's own pydantic models are used when ``vllm`` imports (:func:`real_models`); they
import without a GPU, but installing vLLM pulls a multi-GB CUDA torch, so the test
environment does not have it.  The classes below are therefore faithful mirrors of the
fields we use, written from vLLM's source:

* vLLM 0.11.1 (the floor in pyproject): ``vllm/entrypoints/openai/protocol.py``
  (``TokenizeCompletionRequest``, ``TokenizeChatRequest``, ``TokenizeResponse``,
  ``PoolingCompletionRequest``, ``PoolingResponse``, ``CompletionRequest``,
  ``CompletionResponse``, ``ChatCompletionRequest``, ``UsageInfo``) and
  ``vllm/tasks.py`` (``PoolingTask``);
* vLLM 0.33.0: the same classes in ``vllm/entrypoints/serve/tokenize/protocol.py``,
  ``vllm/entrypoints/pooling/pooling/protocol.py`` and ``pooling/base/protocol.py``,
  ``vllm/entrypoints/openai/completion/protocol.py``,
  ``vllm/entrypoints/openai/chat_completion/protocol.py``,
  ``vllm/entrypoints/serve/engine/protocol.py`` and ``vllm/tasks.py``.

Where the two versions differ a mirror takes what *both* accept (``PoolingTask`` without
0.11's ``"score"``/``"encode"`` and 0.33's ``"embed&token_classify"``; no ``normalize``,
which 0.33 rejects).  vLLM itself ignores unknown fields (its ``OpenAIBaseModel`` has
``extra="allow"``); the mirrors forbid them, so a misspelt field fails a test instead of
being dropped silently by a real server.  ``tests/test_vllm_contract.py`` checks the
mirrors against vLLM's classes whenever those import.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PoolingTask = Literal["embed", "classify", "token_embed", "token_classify", "plugin"]
"""vllm/tasks.py ``PoolingTask``: the values 0.11.1 and 0.33.0 both accept."""

NonNegInt = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    """vLLM's ``OpenAIBaseModel``, but unknown fields are errors (see the module docs)."""

    model_config = ConfigDict(extra="forbid")


class _Loose(BaseModel):
    """For responses: vLLM adds fields over versions; the ones we read are typed."""

    model_config = ConfigDict(extra="allow")


def _no_prefill_and_generation_prompt(data: Any) -> Any:
    """``check_generation_prompt`` of vLLM's chat-like requests."""
    if (
        isinstance(data, dict)
        and data.get("continue_final_message")
        and data.get("add_generation_prompt")
    ):
        raise ValueError(
            "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
        )
    return data


class ChatMessage(BaseModel):
    """``ChatCompletionMessageParam``, reduced to the text messages we send."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


# -- /tokenize -------------------------------------------------------------------------------
class TokenizeCompletionRequest(_Strict):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class TokenizeChatRequest(_Strict):
    model: str | None = None
    messages: list[ChatMessage]
    add_generation_prompt: bool = True
    return_token_strs: bool | None = False
    continue_final_message: bool = False
    add_special_tokens: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None

    _check = model_validator(mode="before")(_no_prefill_and_generation_prompt)


class TokenizeResponse(_Loose):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


# -- /pooling --------------------------------------------------------------------------------
class PoolingCompletionRequest(_Strict):
    model: str | None = None
    input: list[int] | list[list[int]] | str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    truncate_prompt_tokens: Annotated[int, Field(ge=-1)] | None = None
    add_special_tokens: bool = True
    priority: int = 0
    request_id: str | None = None
    task: PoolingTask | None = None
    use_activation: bool | None = None


class UsageInfo(_Loose):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0


class PoolingResponseData(_Loose):
    index: int
    object: str = "pooling"
    data: list[list[float]] | list[float] | str


class PoolingResponse(_Loose):
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[PoolingResponseData]
    usage: UsageInfo


# -- /v1/completions -------------------------------------------------------------------------
class CompletionRequest(_Strict):
    model: str | None = None
    prompt: list[NonNegInt] | list[list[NonNegInt]] | str | list[str] | None = None
    echo: bool | None = False
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: int | None = None
    max_tokens: int | None = 16
    n: int = 1
    presence_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    suffix: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    top_k: int | None = None
    prompt_logprobs: int | None = None
    add_special_tokens: bool = True

    @model_validator(mode="before")
    @classmethod
    def _check_logprobs(cls, data: Any) -> Any:
        """``check_logprobs`` of vLLM's CompletionRequest."""
        if isinstance(data, dict):
            prompt_logprobs = data.get("prompt_logprobs")
            if isinstance(prompt_logprobs, int) and not isinstance(prompt_logprobs, bool):
                if data.get("stream") and (prompt_logprobs > 0 or prompt_logprobs == -1):
                    raise ValueError("`prompt_logprobs` are not available when `stream=True`.")
                if prompt_logprobs < 0 and prompt_logprobs != -1:
                    raise ValueError("`prompt_logprobs` must be a positive value or -1.")
            logprobs = data.get("logprobs")
            if isinstance(logprobs, int) and logprobs < 0:  # 0.33 also takes -1, 0.11 not
                raise ValueError("`logprobs` must be a positive value.")
            prompt = data.get("prompt")
            if prompt is None or prompt == "":  # validate_prompt_and_prompt_embeds
                raise ValueError("Either prompt or prompt_embeds must be provided and non-empty.")
        return data


class Logprob(_Loose):
    """``vllm/logprobs.py`` ``Logprob`` as JSON."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class CompletionResponseChoice(_Loose):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None


class CompletionResponse(_Loose):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionResponseChoice]
    usage: UsageInfo


# -- /v1/chat/completions --------------------------------------------------------------------
class ChatCompletionRequest(_Strict):
    messages: list[ChatMessage]
    model: str | None = None
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = 1
    presence_penalty: float | None = 0.0
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = True
    user: str | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    echo: bool = False
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    _check = model_validator(mode="before")(_no_prefill_and_generation_prompt)

    @model_validator(mode="before")
    @classmethod
    def _check_logprobs(cls, data: Any) -> Any:
        """``check_logprobs`` of vLLM's ChatCompletionRequest (``top_logprobs`` part)."""
        if isinstance(data, dict) and (top := data.get("top_logprobs")) is not None:
            if isinstance(top, int) and top < 0 and top != -1:
                raise ValueError("`top_logprobs` must be a positive value or -1.")
            if top and not data.get("logprobs"):
                raise ValueError("when using `top_logprobs`, `logprobs` must be set to true.")
        return data


# -- routing ---------------------------------------------------------------------------------
def request_model(path: str, body: Any) -> type[BaseModel] | None:
    """The mirror that vLLM's route ``path`` parses ``body`` with (``None``: no route)."""
    chat = isinstance(body, dict) and "messages" in body
    if path == "/tokenize":
        return TokenizeChatRequest if chat else TokenizeCompletionRequest
    if path == "/pooling":
        return PoolingCompletionRequest
    if path == "/v1/completions":
        return CompletionRequest
    if path == "/v1/chat/completions":
        return ChatCompletionRequest
    return None


RESPONSE_MODELS: dict[str, type[BaseModel]] = {
    "/tokenize": TokenizeResponse,
    "/pooling": PoolingResponse,
    "/v1/completions": CompletionResponse,
}


def validation_message(error: ValidationError) -> str:
    """A one-line summary like vLLM's 400 ``BadRequestError`` message."""
    parts = []
    for err in error.errors()[:10]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)


def real_models() -> dict[str, Any] | None:
    """vLLM's own request classes by route, when ``vllm`` imports (any supported layout)."""
    try:
        from vllm.entrypoints.openai.chat_completion.protocol import (  # vLLM 0.33
            ChatCompletionRequest as RealChat,
        )
        from vllm.entrypoints.openai.completion.protocol import (
            CompletionRequest as RealCompletion,
        )
        from vllm.entrypoints.pooling.pooling.protocol import (
            PoolingCompletionRequest as RealPooling,
        )
        from vllm.entrypoints.serve.tokenize.protocol import (
            TokenizeChatRequest as RealTokChat,
        )
        from vllm.entrypoints.serve.tokenize.protocol import (
            TokenizeCompletionRequest as RealTokCompletion,
        )
    except ImportError:
        try:
            from vllm.entrypoints.openai.protocol import (  # vLLM 0.11
                ChatCompletionRequest as RealChat,
            )
            from vllm.entrypoints.openai.protocol import (
                CompletionRequest as RealCompletion,
            )
            from vllm.entrypoints.openai.protocol import (
                PoolingCompletionRequest as RealPooling,
            )
            from vllm.entrypoints.openai.protocol import (
                TokenizeChatRequest as RealTokChat,
            )
            from vllm.entrypoints.openai.protocol import (
                TokenizeCompletionRequest as RealTokCompletion,
            )
        except ImportError:
            return None
    return {
        "/tokenize/chat": RealTokChat,
        "/tokenize": RealTokCompletion,
        "/pooling": RealPooling,
        "/v1/completions": RealCompletion,
        "/v1/chat/completions": RealChat,
    }


def real_response_models() -> dict[str, Any] | None:
    """vLLM's own response classes by route, when ``vllm`` imports."""
    try:
        from vllm.entrypoints.openai.completion.protocol import (  # vLLM 0.33
            CompletionResponse as RealCompletion,
        )
        from vllm.entrypoints.pooling.pooling.protocol import PoolingResponse as RealPooling
        from vllm.entrypoints.serve.tokenize.protocol import TokenizeResponse as RealTokenize
    except ImportError:
        try:
            from vllm.entrypoints.openai.protocol import (  # vLLM 0.11
                CompletionResponse as RealCompletion,
            )
            from vllm.entrypoints.openai.protocol import PoolingResponse as RealPooling
            from vllm.entrypoints.openai.protocol import TokenizeResponse as RealTokenize
        except ImportError:
            return None
    return {"/tokenize": RealTokenize, "/pooling": RealPooling, "/v1/completions": RealCompletion}


def real_request_model(models: dict[str, Any], path: str, body: Any) -> Any:
    """vLLM's class for ``path`` and ``body`` from :func:`real_models`."""
    if path == "/tokenize" and isinstance(body, dict) and "messages" in body:
        return models["/tokenize/chat"]
    return models.get(path)


__all__ = [
    "RESPONSE_MODELS",
    "ChatCompletionRequest",
    "CompletionRequest",
    "CompletionResponse",
    "PoolingCompletionRequest",
    "PoolingResponse",
    "TokenizeChatRequest",
    "TokenizeCompletionRequest",
    "TokenizeResponse",
    "real_models",
    "real_request_model",
    "real_response_models",
    "request_model",
    "validation_message",
]
