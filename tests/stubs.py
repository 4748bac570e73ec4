"""A local HTTP stub of a vLLM server and an OpenAI-compatible chat endpoint.

:class:`StubServer` binds 127.0.0.1 on a free port, serves from a background thread, and
is a context manager that always shuts down.  It speaks:

* vLLM ``POST /tokenize`` (``prompt`` or chat ``messages``);
* vLLM ``POST /pooling`` as vLLM serves Qwen2.5-Math-PRM (``Qwen2ForProcessRewardModel``):
  the ``pooling`` callable gives the classifier's row at every token, and the default
  ``STEP`` pooler answers only the rows at the step tag (id 151651), one per step, as
  vLLM's ``StepPool`` does; ``pooler="ALL"`` answers every row;
* vLLM ``POST /v1/completions`` with ``prompt_logprobs``, as vLLM serves a causal LM such
  as Math-Shepherd: the ``logprobs`` callable gives each position's next-token
  distribution, and the answer holds its top ``prompt_logprobs`` entries plus the prompt's
  own token, with vLLM's ranks;
* OpenAI ``POST /v1/chat/completions`` (non-streaming), answered by a Python callable.

Every request body is validated like vLLM does: against vLLM's own pydantic models when
``vllm`` imports, and always against the mirrors in :mod:`tests.vllm_protocol` (which also
refuse unknown fields); a body that fails gets vLLM's HTTP 400 and is listed in
:attr:`StubServer.rejected`.  Limits vLLM enforces in its serving code are enforced too
(``max_model_len``, ``max_logprobs``, the pooling tasks the model supports), and every
answer is checked against the response mirrors.

Every request is recorded (:attr:`StubServer.requests`), and :meth:`StubServer.fail` makes
the next N matching requests fail with a status code (500 to test retries, 400 to test
client errors).  :class:`WordTokenizer` is a dependency-free tokenizer with the same ids as
the stub's ``/tokenize``, and :func:`token_score` the per-token score its default pooler
reports, so tests can compute expected PRM scores by hand.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from pydantic import ValidationError

from . import vllm_protocol

# -- a tiny deterministic tokenizer ---------------------------------------------------------
SPECIAL_IDS = {
    "<extra_0>": 151651,  # Qwen2.5's step tag id
    "ки": 12902,  # Math-Shepherd's step tag id
    "+": 648,
    "-": 387,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
}
BOS_ID = 1
_SPLIT = re.compile(r"(<extra_0>|<\|im_start\|>|<\|im_end\|>)|\s+")


class WordTokenizer:
    """Whitespace tokenizer; the special tokens split words, other words hash to stable ids.

    It quacks like the parts of a Hugging Face tokenizer the PRM backends use.
    """

    chat_template = None
    unk_token_id = None
    pad_token_id = 0

    def tokenize(self, text: str) -> list[str]:
        return [part for part in _SPLIT.split(text) if part]

    def token_id(self, token: str) -> int:
        if token in SPECIAL_IDS:
            return SPECIAL_IDS[token]
        return 1000 + zlib.crc32(token.encode()) % 100_000

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.token_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.token_id(tok) for tok in self.tokenize(text)]
        return [BOS_ID, *ids] if add_special_tokens else ids


def render_chatml(messages: Sequence[dict[str, Any]]) -> str:
    """The stub server's chat template (ChatML, no generation prompt)."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def token_score(token_id: int) -> float:
    """The probability of "correct" that the default pooler reports after ``token_id``."""
    return round(0.05 + 0.9 * ((token_id * 7919) % 1000) / 1000, 6)


def default_pooling_rows(ids: Sequence[int]) -> list[list[float]]:
    """One ``[P(bad), P(good)]`` row per token; the row at ``i`` depends on token ``i-1``."""
    rows = [[0.5, 0.5]]
    for prev in ids[:-1]:
        p = token_score(prev)
        rows.append([1 - p, p])
    return rows


def logit_rows(ids: Sequence[int]) -> list[list[float]]:
    """Like :func:`default_pooling_rows` but as raw logits ``[0, log(p / (1 - p))]``."""
    return [[0.0, math.log(p / (1 - p))] for _, p in default_pooling_rows(ids)]


def shepherd_logprobs(ids: Sequence[int]) -> list[dict[int, float] | None]:
    """A causal Math-Shepherd-like LM: the next-token distribution at every position.

    Entry ``j`` predicts token ``j`` from ``ids[:j]`` (``None`` for ``j = 0``, as vLLM's
    ``prompt_logprobs``).  Right after a step tag (``ки``), ``"+"`` and ``"-"`` take 90% of
    the mass with ``P(+) / (P(+) + P(-)) = token_score(the word before the tag)``; two
    filler tokens take the rest.  Elsewhere the prompt's own token is the likely one.
    """
    dists: list[dict[int, float] | None] = [None]
    for j in range(1, len(ids)):
        if ids[j - 1] == SPECIAL_IDS["ки"] and j >= 2:
            p = token_score(ids[j - 2])
            dists.append(
                {
                    SPECIAL_IDS["+"]: math.log(0.9 * p),
                    SPECIAL_IDS["-"]: math.log(0.9 * (1 - p)),
                    7: math.log(0.06),
                    8: math.log(0.04),
                }
            )
        else:
            dists.append({ids[j]: math.log(0.7), 7: math.log(0.2), 8: math.log(0.1)})
    return dists


# -- chat completions -----------------------------------------------------------------------
@dataclass
class ChatReply:
    """What ``/v1/chat/completions`` answers (before stop sequences and ``max_tokens``)."""

    content: str
    finish_reason: str | None = None
    """``None``: ``"stop"``, or ``"length"`` when ``max_tokens`` cut the reply."""
    completion_tokens: int | None = None
    """``None``: the number of whitespace-separated words returned."""
    prompt_tokens: int = 7
    logprobs: Sequence[tuple[str, float]] | None = None


ChatHandler = Callable[[dict[str, Any]], "ChatReply | str"]


class _Reject(Exception):
    """An error answer vLLM's serving code gives (not a request-validation 400)."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def _error(status: int, message: str, kind: str = "BadRequestError") -> dict[str, Any]:
    """vLLM's ``ErrorResponse`` body."""
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class _Failure:
    times: int
    status: int
    message: str
    path: str | None
    when: Callable[[Any], bool] | None


@dataclass
class StubServer:
    """A threaded local server; use as ``with StubServer(...) as server: server.url``.

    Args:
        chat: ``handler(request_json) -> ChatReply | str`` for chat completions.
        tokenizer: used by ``/tokenize`` and for string inputs of ``/pooling``.
        pooling: ``rows(token_ids) -> one row per token`` (the classifier head's output);
            ``None``: the served model has no pooling runner (``/pooling`` answers 501).
        pooler: ``"STEP"`` keeps the rows at ``step_tag_id`` only (vLLM's default for
            Qwen2.5-Math-PRM); ``"ALL"`` answers one row per token.
        pooling_tasks: the tasks ``/pooling`` accepts (a ``task`` left out means the
            first); Qwen2.5-Math-PRM supports ``token_classify`` only.
        logprobs: ``dists(token_ids) -> next-token distribution per position`` for
            ``/v1/completions``; ``None``: the served model is not generative (404).
        max_model_len: reported by ``/tokenize`` and enforced on every prompt.
        max_logprobs: vLLM's ``--max-logprobs`` (default 20), enforced on
            ``prompt_logprobs``.
        delay: seconds to wait before answering any request (to test timeouts).
    """

    chat: ChatHandler | None = None
    tokenizer: WordTokenizer = field(default_factory=WordTokenizer)
    pooling: Callable[[Sequence[int]], list[list[float]]] | None = default_pooling_rows
    pooler: Literal["STEP", "ALL"] = "STEP"
    step_tag_id: int = SPECIAL_IDS["<extra_0>"]
    pooling_tasks: tuple[str, ...] = ("token_classify",)
    logprobs: Callable[[Sequence[int]], list[dict[int, float] | None]] | None = None
    max_model_len: int = 4096
    max_logprobs: int = 20
    delay: float = 0.0
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    rejected: list[tuple[str, str]] = field(default_factory=list, init=False)
    """``(path, message)`` of every request answered with a validation 400."""
    _failures: list[_Failure] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _server: ThreadingHTTPServer | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _real: dict[str, Any] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._real = vllm_protocol.real_models()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StubServer:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True
            wbufsize = 1 << 16  # headers and body leave in one write

            def do_POST(self) -> None:
                stub._handle(self)

            def do_GET(self) -> None:
                stub._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- controls ----------------------------------------------------------------------------
    def fail(
        self,
        times: int = 1,
        *,
        status: int = 500,
        message: str = "stub failure",
        path: str | None = None,
        when: Callable[[Any], bool] | None = None,
    ) -> None:
        """Make the next ``times`` requests fail with ``status`` and ``message``.

        Only requests to ``path`` (any when ``None``) whose JSON body satisfies ``when``
        (e.g. ``lambda body: body["model"] == "strong"``) count.
        """
        with self._lock:
            self._failures.append(_Failure(times, status, message, path, when))

    def bodies(self, path: str) -> list[Any]:
        """JSON bodies of the recorded requests to ``path``, in order."""
        with self._lock:
            return [r.body for r in self.requests if r.path == path]

    # -- dispatch ----------------------------------------------------------------------------
    def _take_failure(self, path: str, body: Any) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if (
                    failure.times > 0
                    and failure.path in (None, path)
                    and (failure.when is None or failure.when(body))
                ):
                    failure.times -= 1
                    return failure
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        path = handler.path
        with self._lock:
            self.requests.append(RecordedRequest(path, body, dict(handler.headers.items())))
        if self.delay:
            self._stopping.wait(self.delay)
        failure = self._take_failure(path, body)
        if failure is not None:
            self._send(
                handler, failure.status, _error(failure.status, failure.message, "StubError")
            )
            return
        routes: dict[str, Callable[[Any], Any]] = {
            "/tokenize": self._tokenize,
            "/pooling": self._pooling,
            "/v1/completions": self._completions,
            "/v1/chat/completions": self._chat,
        }
        route = routes.get(path)
        if route is None:
            self._send(handler, 404, _error(404, f"no route {path}", "NotFoundError"))
            return
        problem = self._invalid(path, body)
        if problem is not None:
            with self._lock:
                self.rejected.append((path, problem))
            self._send(handler, 400, _error(400, problem))
            return
        try:
            answer = route(body)
        except _Reject as exc:
            self._send(handler, exc.status, _error(exc.status, str(exc), exc.kind))
            return
        except Exception as exc:  # a bug in a test handler: surface it as a 500
            self._send(handler, 500, _error(500, repr(exc), "InternalServerError"))
            return
        response_model = vllm_protocol.RESPONSE_MODELS.get(path)
        if response_model is not None:
            try:
                response_model.model_validate(answer)
            except ValidationError as exc:  # the stub itself left vLLM's protocol
                message = f"stub answer outside vLLM's protocol: {exc}"
                self._send(handler, 500, _error(500, message, "InternalServerError"))
                return
        self._send(handler, 200, answer)

    def _invalid(self, path: str, body: Any) -> str | None:
        """Why vLLM (or its mirror, which also refuses unknown fields) rejects ``body``."""
        if not isinstance(body, dict):
            return "the request body must be a JSON object"
        mirror = vllm_protocol.request_model(path, body)
        if mirror is not None:
            try:
                mirror.model_validate(body)
            except ValidationError as exc:
                return vllm_protocol.validation_message(exc)
        if self._real is not None:
            real = vllm_protocol.real_request_model(self._real, path, body)
            if real is not None:
                try:
                    real.model_validate(body)
                except Exception as exc:  # ValidationError, or 0.33's VLLMValidationError
                    return f"vLLM: {exc}"
        return None

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    # -- vLLM --------------------------------------------------------------------------------
    def _check_length(self, ids: Sequence[int], max_tokens: int = 0) -> None:
        """vLLM's serving check: prompt plus requested tokens within ``max_model_len``."""
        if len(ids) + max_tokens > self.max_model_len:
            raise _Reject(
                400,
                f"This model's maximum context length is {self.max_model_len} tokens. "
                f"However, you requested {len(ids) + max_tokens} tokens ({len(ids)} in the "
                f"messages, {max_tokens} in the completion).",
            )

    def _tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        if "messages" in body:
            text = render_chatml(body["messages"])
            special = bool(body.get("add_special_tokens", False))
        else:
            text = body["prompt"]
            special = bool(body.get("add_special_tokens", True))
        ids = self.tokenizer.encode(text, add_special_tokens=special)
        return {"count": len(ids), "max_model_len": self.max_model_len, "tokens": ids}

    def _token_inputs(self, raw: Any, special: bool) -> list[list[int]]:
        if isinstance(raw, str):
            return [self.tokenizer.encode(raw, add_special_tokens=special)]
        if raw and all(isinstance(x, int) for x in raw):
            return [list(raw)]
        return [
            self.tokenizer.encode(x, add_special_tokens=special) if isinstance(x, str) else list(x)
            for x in raw
        ]

    def _pooling(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.pooling is None:
            raise _Reject(501, "The model does not support Pooling API", "NotImplementedError")
        task = body.get("task") or self.pooling_tasks[0]
        if task not in self.pooling_tasks:
            raise _Reject(
                400, f"Task {task} is not supported, it must be one of {self.pooling_tasks}."
            )
        inputs = self._token_inputs(body["input"], bool(body.get("add_special_tokens", True)))
        data = []
        for i, ids in enumerate(inputs):
            self._check_length(ids)
            rows = self.pooling(ids)
            if self.pooler == "STEP":  # vLLM's StepPool: the rows at the step tag only
                rows = [row for row, tok in zip(rows, ids, strict=False) if tok == self.step_tag_id]
            data.append({"index": i, "object": "pooling", "data": rows})
        n = sum(len(ids) for ids in inputs)
        return {
            "id": "pool-stub",
            "object": "list",
            "created": int(time.time()),
            "model": body.get("model") or "stub",
            "data": data,
            "usage": {"prompt_tokens": n, "total_tokens": n, "completion_tokens": 0},
        }

    def _completions(self, body: dict[str, Any]) -> dict[str, Any]:
        """vLLM's ``/v1/completions`` for a generative model: one greedy token per prompt
        and, when asked, the prompt logprobs of every position."""
        if self.logprobs is None:
            raise _Reject(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        k = body.get("prompt_logprobs")
        if k is not None and (k == -1 or k > self.max_logprobs):
            raise _Reject(
                400,
                f"Requested prompt logprobs of {k}, which is greater than max allowed: "
                f"{self.max_logprobs}",
            )
        max_tokens = body.get("max_tokens", 16)
        prompts = self._token_inputs(body["prompt"], bool(body.get("add_special_tokens", True)))
        choices = []
        for i, ids in enumerate(prompts):
            self._check_length(ids, max_tokens or 0)
            dists = self.logprobs(ids)
            choice: dict[str, Any] = {
                "index": i,
                "text": "+",
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
                "prompt_logprobs": None,
            }
            if k is not None:
                choice["prompt_logprobs"] = [
                    None if dist is None else _top_logprobs(dist, ids[j], k)
                    for j, dist in enumerate(dists)
                ]
            choices.append(choice)
        n = sum(len(ids) for ids in prompts)
        return {
            "id": f"cmpl-stub-{len(self.requests)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model") or "stub",
            "choices": choices,
            "usage": {
                "prompt_tokens": n,
                "completion_tokens": len(prompts),
                "total_tokens": n + len(prompts),
            },
        }

    # -- OpenAI chat -------------------------------------------------------------------------
    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.chat is None:
            raise RuntimeError("no chat handler configured")
        reply = self.chat(body)
        if isinstance(reply, str):
            reply = ChatReply(reply)
        content, finish = reply.content, "stop"
        stop = body.get("stop") or []
        for s in [stop] if isinstance(stop, str) else stop:
            if s in content:
                content = content.split(s, 1)[0]
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        words = content.split(" ") if content else []
        if isinstance(limit, int) and len(words) > limit:
            content, finish = " ".join(words[:limit]), "length"
        completion = reply.completion_tokens
        if completion is None:
            completion = len(content.split())
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": reply.finish_reason or finish,
            "logprobs": None,
        }
        if reply.logprobs is not None:
            choice["logprobs"] = {
                "content": [
                    {"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": []}
                    for tok, lp in reply.logprobs
                ]
            }
        return {
            "id": f"chatcmpl-stub-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "stub"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": reply.prompt_tokens + completion,
            },
        }


def _top_logprobs(dist: dict[int, float], actual: int, k: int) -> dict[str, dict[str, Any]]:
    """vLLM's prompt-logprob row: the top ``k`` tokens and the prompt's own token, ranked.

    Ranks are 1-based positions in the whole distribution; a token the distribution lacks
    has (almost) no mass.  ``-inf`` becomes ``-9999.0``, as ``clamp_prompt_logprobs`` does.
    """
    ranked = sorted(dist.items(), key=lambda kv: -kv[1])
    rank = {tok: r for r, (tok, _) in enumerate(ranked, 1)}
    keep = dict(ranked[:k])
    keep[actual] = dist.get(actual, math.log(1e-9))
    return {
        str(tok): {
            "logprob": max(lp, -9999.0),
            "rank": rank.get(tok, len(ranked) + 1),
            "decoded_token": None,
        }
        for tok, lp in keep.items()
    }


def serve(**kwargs: Any) -> Iterator[StubServer]:
    """Generator form for pytest fixtures: ``yield from serve(chat=...)``."""
    with StubServer(**kwargs) as server:
        yield server


__all__ = [
    "BOS_ID",
    "SPECIAL_IDS",
    "ChatReply",
    "RecordedRequest",
    "StubServer",
    "WordTokenizer",
    "default_pooling_rows",
    "logit_rows",
    "render_chatml",
    "serve",
    "shepherd_logprobs",
    "token_score",
]
