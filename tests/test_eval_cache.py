"""The SQLite LLM cache: LangChain's keying, persistence, counters, and cost accounting on hits."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration

from langchain_trim import ThresholdPolicy, create_trim_graph
from langchain_trim.eval.cache import SQLiteLLMCache, llm_cache
from langchain_trim.eval.fake import ScriptedModel
from langchain_trim.testing import KeywordPRM
from tests.conftest import STRONG_STEPS, WEAK_STEPS


def _gen(text: str, tokens: int) -> ChatGeneration:
    usage = {"input_tokens": 1, "output_tokens": tokens, "total_tokens": tokens + 1}
    meta = {"model_name": "m", "logprobs": {"content": [{"token": text, "logprob": -0.5}]}}
    return ChatGeneration(
        message=AIMessage(content=text, usage_metadata=usage, response_metadata=meta)
    )


def test_round_trip_persists_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.sqlite"
    cache = SQLiteLLMCache(path)
    cache.update("p", "llm", [_gen("four", 7)])
    cache.close()
    again = SQLiteLLMCache(path)
    hit = again.lookup("p", "llm")
    assert hit is not None and len(hit) == 1
    message = hit[0].message  # type: ignore[attr-defined]
    assert message.content == "four"
    assert message.usage_metadata["output_tokens"] == 7
    assert message.response_metadata["logprobs"]["content"][0]["logprob"] == -0.5
    assert (again.hits, again.misses, len(again)) == (1, 0, 1)
    assert again.lookup("p", "llm-other") is None and again.lookup("q", "llm") is None
    assert again.stats().misses == 2 and again.stats().hit_rate == 1 / 3
    again.clear()
    assert len(again) == 0 and again.lookup("p", "llm") is None


async def test_async_variants(tmp_path: Path) -> None:
    cache = SQLiteLLMCache(tmp_path / "c.sqlite")
    assert await cache.alookup("p", "l") is None
    await cache.aupdate("p", "l", [_gen("x", 1)])
    assert (await cache.alookup("p", "l")) is not None
    await cache.aclear()
    assert len(cache) == 0


def test_threads_share_one_cache(tmp_path: Path) -> None:
    cache = SQLiteLLMCache(tmp_path / "c.sqlite")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                cache.update(f"p{i}-{j}", "l", [_gen(str(j), j)])
                assert cache.lookup(f"p{i}-{j}", "l") is not None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) == 120 and cache.hits == 120 and cache.writes == 120


def test_key_includes_stop_max_tokens_and_model_identity(tmp_path: Path) -> None:
    cache = SQLiteLLMCache(tmp_path / "c.sqlite")
    a = ScriptedModel(steps=["one two three four"], model_name="a", cache=cache)
    b = ScriptedModel(steps=["different words here"], model_name="b", cache=cache)
    msgs = [HumanMessage("q")]
    first = a.invoke(msgs, stop=["\n\n"], max_tokens=10)
    assert a.invoke(msgs, stop=["\n\n"], max_tokens=10).content == first.content
    assert cache.hits == 1 and len(a.calls) == 1
    a.invoke(msgs, stop=["\n\n"], max_tokens=2)  # another step cap: a new entry
    a.invoke(msgs, stop=["\n"], max_tokens=10)  # another stop: a new entry
    assert b.invoke(msgs, stop=["\n\n"], max_tokens=10).content == "different words here"
    assert cache.hits == 1 and len(cache) == 4 and len(a.calls) == 3


def test_cached_generations_are_still_charged_to_the_policy(tmp_path: Path) -> None:
    """A cache hit keeps ``usage_metadata``: strong tokens are counted as on a miss."""
    cache = SQLiteLLMCache(tmp_path / "c.sqlite")
    weak = ScriptedModel(steps=WEAK_STEPS, model_name="weak")
    strong = ScriptedModel(steps=STRONG_STEPS, model_name="strong")
    prm = KeywordPRM({"WRONG": 0.1, "13": 0.4}, default=0.9)
    graph = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.5)).compile()
    with llm_cache(cache):
        cold = graph.invoke({"question": "How many apples?"})
        calls = (len(weak.calls), len(strong.calls))
        warm = graph.invoke({"question": "How many apples?"})
    assert (len(weak.calls), len(strong.calls)) == calls  # nothing was generated again
    assert cache.hits == sum(calls) and cache.misses == sum(calls)
    assert cold["trim_spend"]["strong_tokens"] > 0
    assert warm["trim_spend"] == cold["trim_spend"]
    assert warm["trim_steps"] == cold["trim_steps"]
    assert not warm["trim_spend"]["strong_tokens_estimated"]


def test_cached_prm_scores_a_shared_prefix_once_across_runs(tmp_path: Any) -> None:
    import asyncio

    from langchain_trim.eval.prm_cache import CachedPRM
    from langchain_trim.prm import FunctionPRM

    calls: list[tuple[str, int]] = []

    def fn(q: str, steps: Any) -> list[float]:
        calls.append((q, len(steps)))
        return [0.25 * (i + 1) for i in range(len(steps))]

    path = tmp_path / "prm.sqlite"
    first = CachedPRM(FunctionPRM(fn, name="f"), path)
    assert first.score("q", ["a"]) == [0.25]
    assert first.score_batch([("q", ["a"]), ("q", ["a", "b"])]) == [[0.25], [0.25, 0.5]]
    assert calls == [("q", 1), ("q", 2)] and (first.hits, first.misses) == (1, 2)
    second = CachedPRM(FunctionPRM(fn, name="f"), path)  # a later run: read from the file
    assert asyncio.run(second.ascore("q", ["a", "b"])) == [0.25, 0.5]
    assert len(calls) == 2
    other = CachedPRM(FunctionPRM(fn, name="g"), path)  # another PRM never shares scores
    other.score("q", ["a"])
    assert len(calls) == 3
