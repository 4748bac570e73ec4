"""Scale-out against local HTTP stubs: two "vLLM servers" each serving draft, strong and PRM.

The eval runner spreads questions over both (each question sticks to one server), a 5xx
on either is retried, and the traces are exactly those of a single-server run.
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

import pytest

pytest.importorskip("langchain_openai")

from langchain_core.messages import convert_to_messages

from langchain_trim.errors import StepGenerationError
from langchain_trim.eval.datasets import Problem
from langchain_trim.eval.runner import arun_eval
from langchain_trim.generation import parse_prefix
from langchain_trim.local.setting import LocalSetting
from langchain_trim.pool import (
    EndpointPool,
    PooledPRM,
    PooledStepGenerator,
    openai_compatible_pool,
    vllm_prm_pool,
)
from langchain_trim.prm.batching import MicroBatchingPRM
from langchain_trim.prm.vllm_prm import VLLMServerPRM
from langchain_trim.remote import openai_compatible
from langchain_trim.testing import FakeStepModel, KeywordPRM

from .stubs import ChatReply, StubServer, WordTokenizer

CHAT = "/v1/chat/completions"
PROBLEMS = [Problem(f"p{i}", f"What is {i} plus {i}?", str(2 * i)) for i in range(8)]
GOLD = {p.question: p.answer for p in PROBLEMS}
WRONG = WordTokenizer().token_id("WRONG")


def script(model: str, question: str, accepted: list[str]) -> list[str]:
    """Three steps; on half the questions the weak model slips at step 2 and, unless that
    step was rewritten, boxes a wrong answer."""
    answer = GOLD[question]
    if model == "stub-strong":
        return ["Read the question.", f"Double it: {answer}.", rf"So \boxed{{{answer}}}."]
    slip = int(answer) % 4 == 2
    second = "Add them up: WRONG" if slip else f"Double it: {answer}."
    derailed = len(accepted) > 1 and "WRONG" in accepted[1]
    return ["Read the question.", second, rf"So \boxed{{{'-1' if derailed else answer}}}."]


def reply(body: dict[str, Any]) -> ChatReply:
    messages = convert_to_messages(
        [{"role": m["role"], "content": m["content"]} for m in body["messages"]]
    )
    question, accepted = parse_prefix(messages)
    steps = script(body["model"], question, accepted)
    if len(accepted) >= len(steps):
        return ChatReply("", completion_tokens=0)
    return ChatReply(steps[len(accepted)] + "\n\nand more", completion_tokens=None)


def pooling(ids: Any) -> list[list[float]]:
    """P(correct) 0.1 after the WRONG token, 0.9 elsewhere."""
    rows = [[0.5, 0.5]]
    for prev in ids[:-1]:
        p = 0.1 if prev == WRONG else 0.9
        rows.append([1 - p, p])
    return rows


async def arun(setting: Any) -> dict[str, list[tuple[Any, ...]]]:
    with tempfile.TemporaryDirectory() as out:
        summary = await arun_eval(
            PROBLEMS,
            ["thr:0.5", "weak"],
            out_dir=out,
            setting=setting,
            concurrency=4,
            max_steps=6,
            step_max_tokens=32,
            progress=False,
            on_error="raise",
        )
    return {
        spec: sorted(
            (
                r["problem_id"],
                r["final_answer"],
                r["correct"],
                r["n_steps"],
                r["escalated_steps"],
                r["spend"]["strong_tokens"],
                r["spend"]["prm_calls"],
            )
            for r in rows
        )
        for spec, rows in summary.results.items()
    }


def questions_on(server: StubServer, model: str) -> set[str]:
    out = set()
    for body in server.bodies(CHAT):
        if body["model"] == model:
            msgs = convert_to_messages([(m["role"], m["content"]) for m in body["messages"]])
            out.add(parse_prefix(msgs)[0])
    return out


def test_eval_spreads_over_two_servers_with_unchanged_results() -> None:
    with (
        StubServer(chat=reply, pooling=pooling) as one,
        StubServer(chat=reply, pooling=pooling) as two,
    ):
        single = LocalSetting(
            weak=openai_compatible("stub-weak", one.url + "/v1", max_retries=0),
            strong=openai_compatible("stub-strong", one.url + "/v1", max_retries=0),
            prm=VLLMServerPRM(one.url, "prm", max_retries=0),
        )
        urls = [one.url + "/v1", two.url + "/v1"]
        pooled = LocalSetting(
            weak=openai_compatible_pool("stub-weak", urls, role="draft", max_retries=2),
            strong=openai_compatible_pool("stub-strong", urls, role="strong", max_retries=2),
            prm=MicroBatchingPRM(
                vllm_prm_pool([one.url, two.url], "prm", retry_backoff=0.01),
                max_batch=8,
                max_wait_ms=5,
                max_concurrency=2,
            ),
        )

        async def both() -> tuple[Any, Any]:
            # one event loop: langchain-openai shares an async HTTP client per base URL
            expected = await arun(single)
            for server in (one, two):
                server.requests.clear()
            # one transient failure per server: retried by each member's own client
            two.fail(1, status=503, path=CHAT)
            one.fail(1, status=500, path="/pooling")
            return expected, await arun(pooled)

        expected, got = asyncio.run(both())
        weak_one, weak_two = questions_on(one, "stub-weak"), questions_on(two, "stub-weak")
        pooling_calls = [len(s.bodies("/pooling")) for s in (one, two)]
        strong_calls = [len(questions_on(s, "stub-strong")) for s in (one, two)]
    assert got == expected
    assert any(escalated for rows in got.values() for *_, escalated, _, _ in rows)
    # both servers got traffic, and each question stayed on one server
    assert weak_one and weak_two
    assert not weak_one & weak_two
    assert weak_one | weak_two == set(GOLD)
    assert all(pooling_calls) and sum(strong_calls) > 0


def test_pools_balance_and_stick() -> None:
    pool: EndpointPool[str] = EndpointPool(["a", "b", "c"])
    first = [pool.acquire(f"q{i}") for i in range(6)]  # nothing released: least busy rotates
    assert first == [0, 1, 2, 0, 1, 2]
    for i in first:
        pool.release(i)
    assert [pool.acquire(f"q{i}") for i in range(6)] == first  # sticky
    assert pool.stats()["pinned"] == [2, 2, 2]
    rr: EndpointPool[str] = EndpointPool(["a", "b"], strategy="round_robin", sticky=False)
    assert [rr.acquire("same") for _ in range(4)] == [0, 1, 0, 1]
    small: EndpointPool[str] = EndpointPool(["a", "b"], max_keys=2)
    for q in ("x", "y", "z"):
        small.release(small.acquire(q))
    assert sum(small.stats()["pinned"]) == 2
    with pytest.raises(ValueError, match="at least one"):
        EndpointPool([])
    with pytest.raises(ValueError, match="strategy"):
        EndpointPool(["a"], strategy="random")  # type: ignore[arg-type]


def test_least_busy_skips_a_member_with_calls_in_flight() -> None:
    pool: EndpointPool[str] = EndpointPool(["a", "b"])
    held = pool.acquire("slow question")  # member 0 stays busy
    picked = []
    for i in range(3):
        picked.append(pool.acquire(f"q{i}"))
        pool.release(picked[-1])
    assert picked == [1, 1, 1]
    pool.release(held)
    assert pool.acquire("q3") == 0


def test_pooled_generator_and_prm_are_drop_in() -> None:
    from langchain_trim import ThresholdPolicy, create_trim_graph

    steps = ["x = 1", "x + 1 = 3 WRONG", r"\boxed{3}"]
    fixed = ["x = 1", "x + 1 = 2", r"\boxed{2}"]
    weak = [FakeStepModel(steps=steps, model_name="w") for _ in range(2)]
    strong = [FakeStepModel(steps=fixed, model_name="s") for _ in range(2)]
    prms = [KeywordPRM({"WRONG": 0.1}) for _ in range(2)]
    graph = create_trim_graph(
        PooledStepGenerator(weak, role="draft"),
        PooledStepGenerator(strong, role="strong"),
        PooledPRM(prms),
        ThresholdPolicy(0.5),
    ).compile()
    outs = asyncio.run(graph.abatch([{"question": f"q{i}"} for i in range(4)]))
    assert [[s["author"] for s in o["trim_steps"]] for o in outs] == [
        ["weak", "strong", "weak"]
    ] * 4
    assert all(len(m.calls) == 2 * 3 for m in weak)  # two questions, three drafts each
    assert all(len(p.calls) == 2 * 3 for p in prms)
    assert PooledStepGenerator(weak).name == "w"


def test_a_slow_server_times_out_within_the_request_timeout() -> None:
    with StubServer(chat=reply, delay=3.0) as slow:
        gen = openai_compatible_pool(
            "stub-weak", slow.url + "/v1", timeout=0.3, max_retries=0, role="draft"
        )
        with pytest.raises(StepGenerationError, match=r"(?i)timed? ?out"):
            gen.generate(PROBLEMS[0].question, [], max_tokens=8)


def test_pooled_generator_continues_a_step_cut_at_the_cap() -> None:
    """The graph continues a step cut by the token cap (``continue_last=True``); a pool
    hands that on to its member instead of failing with a TypeError."""
    member = FakeStepModel(steps=["x = 1", r"\boxed{1}"])
    gen = PooledStepGenerator([member])
    out = gen.generate("q", ["x ="], max_tokens=8, continue_last=True)
    assert out.text and out.stop != "length"
    assert asyncio.run(gen.agenerate("q", ["x ="], max_tokens=8, continue_last=True)).text
