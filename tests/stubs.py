"""A local HTTP stub of a vLLM server and an OpenAI-compatible chat endpoint.

:class:`StubServer` binds 127.0.0.1 on a free port, serves from a background thread, and
is a context manager that always shuts down.  It speaks:

* vLLM ``POST /tokenize`` (``prompt`` or chat ``messages``) and ``POST /pooling``;
* OpenAI ``POST /v1/chat/completions`` (non-streaming), answered by a Python callable.

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
from typing import Any

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
        pooling: ``rows(token_ids) -> list of rows`` for each ``/pooling`` input.
        max_model_len: reported by ``/tokenize``.
        delay: seconds to wait before answering any request (to test timeouts).
    """

    chat: ChatHandler | None = None
    tokenizer: WordTokenizer = field(default_factory=WordTokenizer)
    pooling: Callable[[Sequence[int]], list[list[float]]] = default_pooling_rows
    max_model_len: int = 4096
    delay: float = 0.0
    requests: list[RecordedRequest] = field(default_factory=list, init=False)
    _failures: list[_Failure] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _server: ThreadingHTTPServer | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

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
            error = {"message": failure.message, "type": "StubError", "code": failure.status}
            self._send(handler, failure.status, {"error": error})
            return
        routes: dict[str, Callable[[Any], Any]] = {
            "/tokenize": self._tokenize,
            "/pooling": self._pooling,
            "/v1/chat/completions": self._chat,
        }
        route = routes.get(path)
        if route is None:
            self._send(handler, 404, {"error": {"message": f"no route {path}", "code": 404}})
            return
        try:
            answer = route(body)
        except Exception as exc:  # a bug in a test handler: surface it as a 500
            self._send(handler, 500, {"error": {"message": repr(exc), "code": 500}})
            return
        self._send(handler, 200, answer)

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
    def _tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        if "messages" in body:
            text = render_chatml(body["messages"])
            special = bool(body.get("add_special_tokens", False))
        else:
            text = body["prompt"]
            special = bool(body.get("add_special_tokens", True))
        ids = self.tokenizer.encode(text, add_special_tokens=special)
        return {"count": len(ids), "max_model_len": self.max_model_len, "tokens": ids}

    def _pooling(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body["input"]
        if isinstance(raw, str):
            inputs = [self.tokenizer.encode(raw)]
        elif raw and all(isinstance(x, int) for x in raw):
            inputs = [list(raw)]
        else:
            inputs = [self.tokenizer.encode(x) if isinstance(x, str) else list(x) for x in raw]
        data = [
            {"index": i, "object": "pooling", "data": self.pooling(ids)}
            for i, ids in enumerate(inputs)
        ]
        n = sum(len(ids) for ids in inputs)
        return {
            "id": "pool-stub",
            "object": "list",
            "created": int(time.time()),
            "model": body.get("model"),
            "data": data,
            "usage": {"prompt_tokens": n, "total_tokens": n, "completion_tokens": 0},
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
    "token_score",
]
