"""vLLM PRM backends against a local HTTP stub and a fake ``vllm.LLM`` (no GPU, no network).

The stub's classifier reports, at every token, ``P(correct) = token_score(previous token)``
(its STEP pooler keeps the rows at the step tags, as vLLM's does), and its Math-Shepherd-like
LM puts ``P(+) / (P(+) + P(-)) = token_score(word before the tag)`` after every tag, so the
expected score of a step is ``token_score(id of the step's last word)`` in both cases:
computed here without any of the backend's position logic.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import socket
import subprocess
import sys
import time
import types
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
from langchain_trim.prm.vllm_prm import VLLM_MIN_VERSION, VLLMOfflinePRM, VLLMServerPRM

from .stubs import (
    BOS_ID,
    SPECIAL_IDS,
    StubServer,
    WordTokenizer,
    default_pooling_rows,
    logit_rows,
    render_chatml,
    serve,
    shepherd_logprobs,
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


PLUS, MINUS = SPECIAL_IDS["+"], SPECIAL_IDS["-"]


@pytest.fixture
def server() -> Iterator[StubServer]:
    yield from serve()


@pytest.fixture
def shepherd_server() -> Iterator[StubServer]:
    """A vLLM serving Math-Shepherd as what it is, a generative model (no pooling runner)."""
    yield from serve(pooling=None, logprobs=shepherd_logprobs)


def shepherd_ids(question: str, steps: Sequence[str]) -> list[int]:
    return TOK.encode(math_shepherd_prm_prompt(question, steps))


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


def test_server_pooling_answers_one_row_per_step_like_vllm(server: StubServer) -> None:
    """vLLM's Qwen2ForProcessRewardModel pools with STEP: one row per step, not per token."""
    prm = VLLMServerPRM(server.url, "prm", tokenizer=TOK)
    assert prm.score(QUESTION, STEPS) == pytest.approx(expected(STEPS), abs=1e-9)
    import httpx

    (body,) = server.bodies("/pooling")
    answer = httpx.post(server.url + "/pooling", json=body).json()
    assert [len(entry["data"]) for entry in answer["data"]] == [len(STEPS)]


def test_server_math_shepherd_reads_label_logprobs(shepherd_server: StubServer) -> None:
    """Math-Shepherd is served generatively and scored from the +/- prompt logprobs."""
    prm = VLLMServerPRM(shepherd_server.url, "shepherd", style="math_shepherd", batch_size=8)
    assert prm.step_tag_id == MATH_SHEPHERD_STEP_TAG_ID
    assert prm.label_token_ids == (PLUS, MINUS)
    results = prm.score_batch(ITEMS)
    assert results == [pytest.approx(expected(steps), abs=1e-9) for _, steps in ITEMS]
    assert len({round(s, 3) for s in results[0]}) == 4  # distinct, so order is checked
    tok_body = shepherd_server.bodies("/tokenize")[0]
    assert tok_body == {
        "model": "shepherd",
        "prompt": math_shepherd_prm_prompt(QUESTION, STEPS),
        "add_special_tokens": True,
    }
    assert shepherd_server.bodies("/pooling") == []
    (body,) = shepherd_server.bodies("/v1/completions")
    assert body["model"] == "shepherd"
    assert body["max_tokens"] == 1 and body["prompt_logprobs"] == 20
    assert len(body["prompt"]) == 4  # the empty trajectory is not sent
    ids = shepherd_ids(QUESTION, STEPS)
    assert ids[0] == BOS_ID
    assert body["prompt"][0] == [*ids, PLUS]  # one token after the last tag
    assert shepherd_server.rejected == []


def test_server_math_shepherd_with_local_tokenizer_and_async(shepherd_server: StubServer) -> None:
    prm = VLLMServerPRM(
        shepherd_server.url, "shepherd", style="math_shepherd", tokenizer=TOK, batch_size=2
    )
    got = asyncio.run(prm.ascore_batch(ITEMS))
    assert got == [pytest.approx(expected(steps), abs=1e-9) for _, steps in ITEMS]
    assert shepherd_server.bodies("/tokenize") == []
    assert len(shepherd_server.bodies("/v1/completions")) == 2


def test_server_math_shepherd_truncates_to_fit_the_prompt_and_one_token() -> None:
    ids = shepherd_ids(QUESTION, STEPS)
    tags = [i for i, t in enumerate(ids) if t == MATH_SHEPHERD_STEP_TAG_ID]
    keep = len(ids) - (tags[1] + 1)  # the first two step tags fall off
    with StubServer(pooling=None, logprobs=shepherd_logprobs, max_model_len=keep + 2) as server:
        prm = VLLMServerPRM(server.url, "shepherd", style="math_shepherd")
        s = expected(STEPS)
        assert prm.score(QUESTION, STEPS) == pytest.approx([s[2], s[2], s[2], s[3]], abs=1e-9)
        (body,) = server.bodies("/v1/completions")
        assert body["prompt"] == [[*ids[tags[1] + 1 :], PLUS]]  # + 1 generated = max_model_len
    with StubServer(pooling=None, logprobs=shepherd_logprobs) as server:
        prm = VLLMServerPRM(
            server.url, "shepherd", style="math_shepherd", tokenizer=TOK, max_length=keep + 1
        )
        assert prm.score(QUESTION, STEPS) == pytest.approx([s[2], s[2], s[2], s[3]], abs=1e-9)


def test_server_math_shepherd_label_outside_top_logprobs_raises() -> None:
    def crowded(ids: Sequence[int]) -> list[dict[int, float] | None]:
        dists = shepherd_logprobs(ids)
        for j, dist in enumerate(dists):
            if dist is not None and PLUS in dist:  # after a tag: 3 fillers above +/-
                dists[j] = {**dist, 11: -0.01, 12: -0.02, 13: -0.03}
        return dists

    with StubServer(pooling=None, logprobs=crowded) as server:
        prm = VLLMServerPRM(server.url, "shepherd", style="math_shepherd", top_logprobs=3)
        with pytest.raises(PRMScoreError, match="token 648 is not among the top 3"):
            prm.score(QUESTION, STEPS)
        big = VLLMServerPRM(server.url, "shepherd", style="math_shepherd", top_logprobs=20)
        assert big.score(QUESTION, STEPS) == pytest.approx(expected(STEPS), abs=1e-9)


def test_server_math_shepherd_top_logprobs_over_server_limit_is_a_clear_error(
    shepherd_server: StubServer,
) -> None:
    prm = VLLMServerPRM(shepherd_server.url, "shepherd", style="math_shepherd", top_logprobs=21)
    with pytest.raises(PRMError, match="HTTP 400: Requested prompt logprobs of 21"):
        prm.score(QUESTION, STEPS)


def test_server_math_shepherd_against_a_pooling_only_server_is_a_clear_error(
    server: StubServer,
) -> None:
    prm = VLLMServerPRM(server.url, "shepherd", style="math_shepherd", tokenizer=TOK)
    with pytest.raises(PRMError, match="HTTP 404"):
        prm.score(QUESTION, STEPS)


def test_math_shepherd_arguments() -> None:
    with pytest.raises(ValueError, match="positive_index"):
        VLLMServerPRM("http://x", "m", style="math_shepherd", positive_index=0)
    with pytest.raises(ValueError, match="top_logprobs"):
        VLLMServerPRM("http://x", "m", style="math_shepherd", top_logprobs=0)
    with pytest.raises(ValueError, match="max_length"):
        VLLMServerPRM("http://x", "m", style="math_shepherd", max_length=1)
    prm = VLLMServerPRM("http://x", "m", style="math_shepherd", label_token_ids=(5, 6))
    assert prm.label_token_ids == (5, 6)


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


def test_server_all_pooler_rows_per_token() -> None:
    with StubServer(pooler="ALL") as server:
        prm = VLLMServerPRM(server.url, "prm", tokenizer=TOK)
        assert prm.score(QUESTION, STEPS) == pytest.approx(expected(STEPS), abs=1e-9)


def test_server_row_count_mismatch_raises() -> None:
    rows = lambda ids: default_pooling_rows(ids)[:-1]  # noqa: E731
    with StubServer(pooling=rows, pooler="ALL") as server:
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


class _Logprob:
    """``vllm.logprobs.Logprob``: what offline prompt-logprob rows hold."""

    def __init__(self, logprob: float, rank: int | None) -> None:
        self.logprob = logprob
        self.rank = rank


class _GenerateOutput:
    def __init__(self, ids: list[int], prompt_logprobs: list[Any]) -> None:
        self.prompt_token_ids = ids
        self.prompt_logprobs = prompt_logprobs


class FakeSamplingParams:
    """``vllm.SamplingParams``: keeps its arguments."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.prompt_logprobs = kwargs.get("prompt_logprobs")


class FakeLLM:
    """Mimics ``vllm.LLM``: ``get_tokenizer``, ``encode`` (pooling runner) and ``generate``
    (generate runner, with vLLM's top-k prompt logprobs)."""

    def __init__(
        self,
        rows: Any = default_pooling_rows,
        fail: bool = False,
        dists: Any = shepherd_logprobs,
        **kwargs: Any,
    ) -> None:
        self.rows = rows
        self.dists = dists
        self.fail = fail
        self.kwargs = kwargs
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
            rows = [r for r, t in zip(self.rows(ids), ids, strict=False) if t == QWEN_STEP_TAG_ID]
            out.append(_RequestOutput(ids, rows))  # vLLM's STEP pooler
        return out

    def generate(
        self, prompts: list[dict[str, Any]], params: Any, **kwargs: Any
    ) -> list[_GenerateOutput]:
        self.calls.append({"prompts": prompts, "params": params, **kwargs})
        if self.fail:
            raise RuntimeError("engine dead")
        k = params.prompt_logprobs
        out = []
        for prompt in prompts:
            ids = prompt["prompt_token_ids"]
            rows: list[Any] = []
            for j, dist in enumerate(self.dists(ids)):
                if dist is None:
                    rows.append(None)
                    continue
                ranked = sorted(dist.items(), key=lambda kv: -kv[1])
                keep = {tok: _Logprob(lp, r) for r, (tok, lp) in enumerate(ranked[:k], 1)}
                keep.setdefault(ids[j], _Logprob(dist.get(ids[j], -20.0), None))
                rows.append(keep)
            out.append(_GenerateOutput(ids, rows))
        return out


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in ``vllm`` module: ``LLM`` builds a :class:`FakeLLM`, ``SamplingParams``
    keeps its arguments, ``__version__`` is the floor."""
    module = types.ModuleType("vllm")
    module.__version__ = VLLM_MIN_VERSION  # type: ignore[attr-defined]
    module.LLM = FakeLLM  # type: ignore[attr-defined]
    module.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


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


async def test_offline_math_shepherd_reads_label_logprobs(fake_vllm: types.ModuleType) -> None:
    llm = FakeLLM()
    prm = VLLMOfflinePRM(llm=llm, style="math_shepherd", max_length=10_000)
    assert prm.label_token_ids == (PLUS, MINUS)
    assert await prm.ascore(QUESTION, STEPS) == pytest.approx(expected(STEPS), abs=1e-9)
    assert prm.score_batch(ITEMS) == [pytest.approx(expected(s), abs=1e-9) for _, s in ITEMS]
    call = llm.calls[0]
    assert call["prompts"][0]["prompt_token_ids"] == [*shepherd_ids(QUESTION, STEPS), PLUS]
    assert call["params"].kwargs == {
        "max_tokens": 1,
        "temperature": 0.0,
        "prompt_logprobs": 20,
        "detokenize": False,
    }
    assert call["use_tqdm"] is False


def test_offline_builds_the_runner_each_style_needs(fake_vllm: types.ModuleType) -> None:
    qwen = VLLMOfflinePRM("Qwen/Qwen2.5-Math-PRM-7B", gpu_memory_utilization=0.5)
    assert qwen.llm.kwargs == {
        "model": "Qwen/Qwen2.5-Math-PRM-7B",
        "runner": "pooling",
        "gpu_memory_utilization": 0.5,
    }
    shepherd = VLLMOfflinePRM("peiyi9979/math-shepherd-mistral-7b-prm", style="math_shepherd")
    assert shepherd.llm.kwargs["runner"] == "generate"
    assert "max_logprobs" not in shepherd.llm.kwargs
    wide = VLLMOfflinePRM("m", style="math_shepherd", top_logprobs=50)
    assert wide.llm.kwargs["max_logprobs"] == 50
    assert "trust_remote_code" not in qwen.llm.kwargs | shepherd.llm.kwargs


@pytest.mark.parametrize("version", ["0.11.0", "0.10.2", "0.11.0rc1"])
def test_offline_refuses_vllm_older_than_the_floor(
    fake_vllm: types.ModuleType, version: str
) -> None:
    fake_vllm.__version__ = version  # type: ignore[attr-defined]
    with pytest.raises(PRMError, match=rf"vLLM {version} is too old.*>= 0\.11\.1"):
        VLLMOfflinePRM("Qwen/Qwen2.5-Math-PRM-7B")


def test_offline_refuses_an_llm_of_an_old_vllm(fake_vllm: types.ModuleType) -> None:
    fake_vllm.__version__ = "0.11.0"  # type: ignore[attr-defined]
    with pytest.raises(PRMError, match="too old"):
        VLLMOfflinePRM(llm=FakeLLM())


@pytest.mark.parametrize("version", ["0.11.1", "0.11.2", "0.33.0", "1.0.0.dev3+gabc", "dev"])
def test_offline_accepts_vllm_at_or_above_the_floor(
    fake_vllm: types.ModuleType, version: str
) -> None:
    fake_vllm.__version__ = version  # type: ignore[attr-defined]
    assert VLLMOfflinePRM("Qwen/Qwen2.5-Math-PRM-7B").score(QUESTION, STEPS) == pytest.approx(
        expected(STEPS), abs=1e-9
    )


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
    with pytest.raises(ValueError, match="pooling_task"):
        VLLMOfflinePRM(llm=FakeLLM(), pooling_task=None)  # type: ignore[arg-type]


def test_offline_math_shepherd_errors(fake_vllm: types.ModuleType) -> None:
    with pytest.raises(PRMError, match="generate failed: RuntimeError: engine dead"):
        VLLMOfflinePRM(llm=FakeLLM(fail=True), style="math_shepherd").score(QUESTION, STEPS)
    nan = FakeLLM(dists=lambda ids: [None] + [{PLUS: math.nan, MINUS: -1.0}] * (len(ids) - 1))
    with pytest.raises(PRMScoreError, match="non-finite"):
        VLLMOfflinePRM(llm=nan, style="math_shepherd").score(QUESTION, STEPS)
    short = FakeLLM(dists=lambda ids: shepherd_logprobs(ids)[:-1])
    with pytest.raises(PRMScoreError, match="prompt-logprob rows"):
        VLLMOfflinePRM(llm=short, style="math_shepherd").score(QUESTION, STEPS)


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


def test_both_backends_take_the_prompt_options_with_one_set_of_defaults() -> None:
    """The server PRM takes :class:`VLLMPromptOptions` as they are; the offline one lists
    them (it also forwards ``**llm_kwargs`` to vLLM) with the defaults of ``_setup``."""
    import inspect

    from langchain_trim.prm.vllm_prm import VLLMPromptOptions, _VLLMBase

    keys = set(VLLMPromptOptions.__annotations__)
    setup = inspect.signature(_VLLMBase._setup).parameters
    offline = inspect.signature(VLLMOfflinePRM.__init__).parameters
    assert keys == set(setup) - {"self"}
    for key in keys:
        assert offline[key].default == setup[key].default, key
    server = inspect.signature(VLLMServerPRM.__init__).parameters
    assert server["prompt"].kind is inspect.Parameter.VAR_KEYWORD
    prm = VLLMServerPRM(
        "http://localhost:1",
        "m",
        style="math_shepherd",
        step_tag="ки",
        step_tag_id=7,
        label_token_ids=(1, 2),
        top_logprobs=5,
        max_length=64,
    )
    assert (prm.style, prm.step_tag, prm.step_tag_id) == ("math_shepherd", "ки", 7)
    assert (prm.label_token_ids, prm.top_logprobs, prm.max_length) == ((1, 2), 5, 64)
    with pytest.raises(TypeError):
        VLLMServerPRM("http://localhost:1", "m", stye="qwen")  # type: ignore[call-arg]
    with pytest.raises(
        TypeError, match=r"VLLMServerPRM\(\) got unexpected keyword arguments \['stye'\]"
    ):
        VLLMServerPRM("http://localhost:1", "m", stye="qwen")  # type: ignore[call-arg]
