"""vLLM PRM backends against a local HTTP stub and a fake ``vllm.LLM`` (no GPU, no network).

The stub's pooler reports, at every token, ``P(correct) = token_score(previous token)``, so
the expected score of a step is ``token_score(id of the step's last word)``: computed here
without any of the backend's position logic.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from langchain_trim.errors import PRMError, PRMScoreError
from langchain_trim.prm import ProcessRewardModel
from langchain_trim.prm.transformers_prm import (
    MATH_SHEPHERD_STEP_TAG_ID,
    QWEN_STEP_TAG_ID,
    math_shepherd_prm_prompt,
    qwen_prm_messages,
)
from langchain_trim.prm.vllm_prm import VLLMOfflinePRM, VLLMServerPRM

from .stubs import (
    BOS_ID,
    StubServer,
    WordTokenizer,
    default_pooling_rows,
    logit_rows,
    render_chatml,
    serve,
    token_score,
)

TOK = WordTokenizer()
QUESTION = "What is 1 + 2 ?"
STEPS = ["We add 1 + 2", "so the sum is three", "check: 3 - 2 = 1 ok", "answer is 3"]
ITEMS: list[tuple[str, list[str]]] = [
    (QUESTION, STEPS),
    ("What is 6 * 7 ?", ["6 * 7 = 42", "answer 42"]),
    (QUESTION, []),
    ("Is 9 prime ?", ["9 = 3 * 3", "so no", "final: no"]),
    ("x ?", ["just x"]),
]


def expected(steps: Sequence[str]) -> list[float]:
    return [token_score(TOK.token_id(step.split()[-1])) for step in steps]


def step_rows(ids: Sequence[int]) -> list[list[float]]:
    """A Math-Shepherd STEP pooler: one [P(+), P(-)] row per step tag only."""
    rows = []
    for i, tok in enumerate(ids):
        if tok == MATH_SHEPHERD_STEP_TAG_ID:
            p = token_score(ids[i - 1])
            rows.append([p, 1 - p])
    return rows


@pytest.fixture
def server() -> Iterator[StubServer]:
    yield from serve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- server: scores and requests --------------------------------------------------------------
def test_server_scores_via_tokenize_and_pooling(server: StubServer) -> None:
    prm = VLLMServerPRM(server.url, "prm", batch_size=2, retry_backoff=0)
    assert isinstance(prm, ProcessRewardModel)
    results = prm.score_batch(ITEMS)
    assert results == [pytest.approx(expected(steps), abs=1e-9) for _, steps in ITEMS]
    assert len({round(s, 3) for s in results[0]}) == 4  # distinct, so order is checked
    tokenize = server.bodies("/tokenize")
    assert len(tokenize) == 4  # one per non-empty trajectory
    assert tokenize[0] == {
        "model": "prm",
        "messages": qwen_prm_messages(QUESTION, STEPS),
        "add_generation_prompt": False,
        "continue_final_message": False,
        "add_special_tokens": False,
    }
    pooling = server.bodies("/pooling")
    assert len(pooling) == 2  # 4 trajectories, batch_size=2
    assert all(b["model"] == "prm" and b["task"] == "token_classify" for b in pooling)
    first_ids = TOK.encode(render_chatml(qwen_prm_messages(QUESTION, STEPS)), False)
    assert pooling[0]["input"][0] == first_ids
    assert first_ids.count(QWEN_STEP_TAG_ID) == 4
    prm.close()


def test_server_with_local_tokenizer_skips_tokenize(server: StubServer) -> None:
    with VLLMServerPRM(server.url + "/v1/", "prm", tokenizer=TOK, batch_size=8) as prm:
        assert prm.score_batch(ITEMS) == [
            pytest.approx(expected(steps), abs=1e-9) for _, steps in ITEMS
        ]
    assert server.bodies("/tokenize") == []
    (body,) = server.bodies("/pooling")
    assert len(body["input"]) == 4
    assert body["input"][0] == TOK.encode(render_chatml(qwen_prm_messages(QUESTION, STEPS)), False)


def test_server_softmaxes_logit_rows() -> None:
    with StubServer(pooling=logit_rows) as server:
        prm = VLLMServerPRM(server.url, "prm", tokenizer=TOK)
        assert prm.score(QUESTION, STEPS) == pytest.approx(expected(STEPS), abs=1e-9)
        raw = VLLMServerPRM(server.url, "prm", tokenizer=TOK, activation="none")
        with pytest.raises(PRMScoreError, match="outside"):
            raw.score(QUESTION, STEPS)


def test_server_math_shepherd_step_rows() -> None:
    with StubServer(pooling=step_rows) as server:
        prm = VLLMServerPRM(server.url, "shepherd", style="math_shepherd", pooling_task=None)
        assert prm.step_tag_id == MATH_SHEPHERD_STEP_TAG_ID
        assert prm.score(QUESTION, STEPS) == pytest.approx(expected(STEPS), abs=1e-9)
        (tok_body,) = server.bodies("/tokenize")
        assert tok_body["prompt"] == math_shepherd_prm_prompt(QUESTION, STEPS)
        assert tok_body["add_special_tokens"] is True
        (pool_body,) = server.bodies("/pooling")
        assert "task" not in pool_body
        assert pool_body["input"][0][0] == BOS_ID


def test_server_left_truncates_to_max_model_len() -> None:
    ids = TOK.encode(render_chatml(qwen_prm_messages(QUESTION, STEPS)), False)
    tags = [i for i, t in enumerate(ids) if t == QWEN_STEP_TAG_ID]
    keep = len(ids) - (tags[1] + 1)  # the first two step tags fall off
    with StubServer(max_model_len=keep) as server:
        prm = VLLMServerPRM(server.url, "prm")
        s = expected(STEPS)
        assert prm.score(QUESTION, STEPS) == pytest.approx([s[2], s[2], s[2], s[3]], abs=1e-9)
        (body,) = server.bodies("/pooling")
        assert body["input"] == [ids[tags[1] + 1 :]]
        assert len(body["input"][0]) == keep
    # the same rule with a local tokenizer and max_length
    with StubServer() as server:
        prm = VLLMServerPRM(server.url, "prm", tokenizer=TOK, max_length=keep)
        assert prm.score(QUESTION, STEPS) == pytest.approx([s[2], s[2], s[2], s[3]], abs=1e-9)


def test_server_row_count_mismatch_raises() -> None:
    with StubServer(pooling=lambda ids: default_pooling_rows(ids)[:-1]) as server:
        prm = VLLMServerPRM(server.url, "prm", tokenizer=TOK)
        with pytest.raises(PRMScoreError, match="rows for an input of"):
            prm.score(QUESTION, STEPS)


def test_server_step_tag_in_text_raises(server: StubServer) -> None:
    prm = VLLMServerPRM(server.url, "prm")
    with pytest.raises(PRMScoreError, match="found 3 step tags"):
        prm.score(QUESTION, ["a <extra_0> b", "c"])


def test_server_sends_api_key(server: StubServer) -> None:
    prm = VLLMServerPRM(server.url, "prm", tokenizer=TOK, api_key="sk-test")
    prm.score(QUESTION, STEPS[:1])
    assert server.requests[-1].headers.get("Authorization") == "Bearer sk-test"


# -- server: failures --------------------------------------------------------------------------
def test_server_retries_5xx_then_succeeds(server: StubServer) -> None:
    server.fail(2, status=500, message="CUDA out of memory", path="/pooling")
    prm = VLLMServerPRM(server.url, "prm", tokenizer=TOK, max_retries=2, retry_backoff=0)
    assert prm.score(QUESTION, STEPS) == pytest.approx(expected(STEPS), abs=1e-9)
    assert len(server.bodies("/pooling")) == 3


def test_server_gives_up_after_retries(server: StubServer) -> None:
    server.fail(5, status=503, message="overloaded")
    prm = VLLMServerPRM(server.url, "prm", max_retries=1, retry_backoff=0)
    with pytest.raises(PRMError, match=r"/tokenize failed after 2 attempts: HTTP 503.*overloaded"):
        prm.score(QUESTION, STEPS)
    assert len(server.requests) == 2


def test_server_4xx_raises_with_message_without_retry(server: StubServer) -> None:
    server.fail(1, status=400, message="This model's maximum context length is 4096")
    prm = VLLMServerPRM(server.url, "prm", tokenizer=TOK, max_retries=3, retry_backoff=0)
    with pytest.raises(PRMError, match="HTTP 400: This model's maximum context length is 4096"):
        prm.score(QUESTION, STEPS)
    assert len(server.requests) == 1


def test_server_timeout_raises_promptly() -> None:
    with StubServer(delay=2.0) as server:
        prm = VLLMServerPRM(server.url, "prm", tokenizer=TOK, timeout=0.2, max_retries=2)
        start = time.monotonic()
        with pytest.raises(PRMError, match=r"timed out after 0\.2s"):
            prm.score(QUESTION, STEPS)
        assert time.monotonic() - start < 1.5  # read timeouts are not retried


def test_server_connection_refused_is_retried_then_raises() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    prm = VLLMServerPRM(url, "prm", tokenizer=TOK, max_retries=2, retry_backoff=0)
    with pytest.raises(PRMError, match="failed after 3 attempts: ConnectError"):
        prm.score(QUESTION, STEPS)


async def test_async_connection_refused_raises() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    prm = VLLMServerPRM(url, "prm", tokenizer=TOK, max_retries=1, retry_backoff=0)
    with pytest.raises(PRMError, match="failed after 2 attempts"):
        await prm.ascore(QUESTION, STEPS)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="style"):
        VLLMServerPRM("http://x", "m", style="orm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        VLLMServerPRM("http://x", "m", batch_size=0)
    with pytest.raises(ValueError, match="activation"):
        VLLMServerPRM("http://x", "m", activation="sigmoid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency"):
        VLLMServerPRM("http://x", "m", max_concurrency=0)


# -- server: async -----------------------------------------------------------------------------
async def test_async_matches_sync_and_keeps_order(server: StubServer) -> None:
    prm = VLLMServerPRM(server.url, "prm", batch_size=1, retry_backoff=0)
    got = await prm.ascore_batch(ITEMS)
    assert got == [pytest.approx(expected(steps), abs=1e-9) for _, steps in ITEMS]
    assert got == prm.score_batch(ITEMS)
    assert await prm.ascore(QUESTION, STEPS[:2]) == pytest.approx(expected(STEPS[:2]))
    await prm.aclose()


async def test_async_retries_5xx(server: StubServer) -> None:
    server.fail(1, status=502, path="/pooling")
    prm = VLLMServerPRM(server.url, "prm", tokenizer=TOK, retry_backoff=0)
    assert await prm.ascore(QUESTION, STEPS) == pytest.approx(expected(STEPS), abs=1e-9)
    assert len(server.bodies("/pooling")) == 2


async def test_async_4xx_raises(server: StubServer) -> None:
    server.fail(1, status=404, message="The model `nope` does not exist.")
    prm = VLLMServerPRM(server.url, "nope", tokenizer=TOK)
    with pytest.raises(PRMError, match="HTTP 404: The model `nope` does not exist"):
        await prm.ascore(QUESTION, STEPS)


async def test_async_requests_run_concurrently_within_the_bound() -> None:
    items = [(f"q{i} ?", [f"step {i}"]) for i in range(4)]
    with StubServer(delay=0.25) as server:
        wide = VLLMServerPRM(server.url, "prm", tokenizer=TOK, batch_size=1, max_concurrency=4)
        start = time.monotonic()
        got = await wide.ascore_batch(items)
        concurrent = time.monotonic() - start
        assert got == [pytest.approx(expected(s), abs=1e-9) for _, s in items]
        narrow = VLLMServerPRM(server.url, "prm", tokenizer=TOK, batch_size=1, max_concurrency=1)
        start = time.monotonic()
        await narrow.ascore_batch(items)
        sequential = time.monotonic() - start
    assert len(server.bodies("/pooling")) == 8
    assert concurrent < 0.75 < 1.0 <= sequential


def test_async_client_survives_new_event_loops(server: StubServer) -> None:
    prm = VLLMServerPRM(server.url, "prm", tokenizer=TOK)
    first = asyncio.run(prm.ascore(QUESTION, STEPS))
    second = asyncio.run(prm.ascore(QUESTION, STEPS))  # a fresh loop: a fresh client
    assert first == second == pytest.approx(expected(STEPS), abs=1e-9)


# -- offline -----------------------------------------------------------------------------------
class _Tensorish:
    def __init__(self, rows: list[list[float]]) -> None:
        self.rows = rows

    def tolist(self) -> list[list[float]]:
        return self.rows


class _PoolingOutput:
    def __init__(self, rows: list[list[float]]) -> None:
        self.data = _Tensorish(rows)


class _RequestOutput:
    def __init__(self, ids: list[int], rows: list[list[float]]) -> None:
        self.prompt_token_ids = ids
        self.outputs = _PoolingOutput(rows)


class FakeLLM:
    """Mimics ``vllm.LLM(runner="pooling")``: ``get_tokenizer`` and ``encode``."""

    def __init__(self, rows: Any = default_pooling_rows, fail: bool = False) -> None:
        self.rows = rows
        self.fail = fail
        self.calls: list[dict[str, Any]] = []

    def get_tokenizer(self) -> WordTokenizer:
        return TOK

    def encode(self, prompts: list[dict[str, Any]], **kwargs: Any) -> list[_RequestOutput]:
        self.calls.append({"prompts": prompts, **kwargs})
        if self.fail:
            raise RuntimeError("engine dead")
        out = []
        for prompt in prompts:
            ids = prompt["prompt_token_ids"]
            out.append(_RequestOutput(ids, self.rows(ids)))
        return out


def test_offline_scores_token_rows_in_order() -> None:
    llm = FakeLLM()
    prm = VLLMOfflinePRM(llm=llm)
    assert prm.tokenizer is TOK
    assert prm.step_tag_id == QWEN_STEP_TAG_ID
    got = prm.score_batch(ITEMS)
    assert got == [pytest.approx(expected(steps), abs=1e-9) for _, steps in ITEMS]
    (call,) = llm.calls
    assert call["pooling_task"] == "token_classify"
    assert call["use_tqdm"] is False
    assert len(call["prompts"]) == 4  # the empty trajectory is not sent
    assert call["prompts"][0] == {
        "prompt_token_ids": TOK.encode(render_chatml(qwen_prm_messages(QUESTION, STEPS)), False)
    }


async def test_offline_async_and_math_shepherd_step_rows() -> None:
    llm = FakeLLM(rows=step_rows)
    prm = VLLMOfflinePRM(llm=llm, style="math_shepherd", pooling_task=None, max_length=10_000)
    assert await prm.ascore(QUESTION, STEPS) == pytest.approx(expected(STEPS), abs=1e-9)
    assert "pooling_task" not in llm.calls[0]
    assert llm.calls[0]["prompts"][0]["prompt_token_ids"][0] == BOS_ID


def test_offline_logits_and_truncation() -> None:
    ids = TOK.encode(render_chatml(qwen_prm_messages(QUESTION, STEPS)), False)
    tags = [i for i, t in enumerate(ids) if t == QWEN_STEP_TAG_ID]
    llm = FakeLLM(rows=logit_rows)
    prm = VLLMOfflinePRM(llm=llm, max_length=len(ids) - tags[0] - 1)
    s = expected(STEPS)
    assert prm.score(QUESTION, STEPS) == pytest.approx([s[1], s[1], s[2], s[3]], abs=1e-9)
    assert llm.calls[0]["prompts"][0]["prompt_token_ids"] == ids[tags[0] + 1 :]


def test_offline_errors() -> None:
    with pytest.raises(PRMError, match="encode failed: RuntimeError: engine dead"):
        VLLMOfflinePRM(llm=FakeLLM(fail=True)).score(QUESTION, STEPS)
    nan = FakeLLM(rows=lambda ids: [[math.nan, math.nan] for _ in ids])
    with pytest.raises(PRMScoreError, match="non-finite"):
        VLLMOfflinePRM(llm=nan).score(QUESTION, STEPS)
    with pytest.raises(ValueError, match="model name"):
        VLLMOfflinePRM()
    with pytest.raises(ValueError, match="llm_kwargs"):
        VLLMOfflinePRM(llm=FakeLLM(), gpu_memory_utilization=0.5)


def test_offline_imports_vllm_only_when_building_an_llm() -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed; building an LLM would load a model")
    with pytest.raises(ImportError, match="vllm"):
        VLLMOfflinePRM("Qwen/Qwen2.5-Math-PRM-7B")


def test_modules_import_no_heavy_dependencies() -> None:
    code = (
        "import sys, langchain_trim\n"
        "before = set(sys.modules)\n"
        "import langchain_trim.prm.transformers_prm, langchain_trim.prm.vllm_prm\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "heavy = new & {'torch', 'transformers', 'vllm', 'httpx', 'tokenizers', 'numpy'}\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
