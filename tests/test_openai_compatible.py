"""TRIM with real ``langchain_openai.ChatOpenAI`` models against a local OpenAI-compatible stub.

The stub answers ``/v1/chat/completions`` by reading the accepted steps back out of the
request (the inverse of :func:`langchain_trim.generation.build_messages`), so these tests
check what actually goes over the wire: message layout in instruct and prefill mode, vLLM's
``extra_body`` flags, ``stop`` and ``max_tokens``, and that reported ``usage`` becomes the
recorded strong-token spend.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("langchain_openai")

from langchain_core.messages import convert_to_messages
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from langchain_trim import ThresholdPolicy, create_trim_graph, vllm_prefill
from langchain_trim.generation import (
    INSTRUCT_SYSTEM,
    USER_PROMPT,
    ChatStepGenerator,
    parse_prefix,
)
from langchain_trim.prm.transformers_prm import QWEN_STEP_TAG_ID
from langchain_trim.prm.vllm_prm import VLLMServerPRM
from langchain_trim.testing import KeywordPRM

from .conftest import STRONG_STEPS, WEAK_STEPS
from .stubs import ChatReply, StubServer, WordTokenizer

CHAT = "/v1/chat/completions"
QUESTION = "How many apples?"
STEP_MAX_TOKENS = 64
SCRIPTS = {"stub-weak": WEAK_STEPS, "stub-strong": STRONG_STEPS}


def strong_usage(index: int) -> int:
    """What the stub reports as completion_tokens for a strong step: not a word count."""
    return 40 + index


def reply(body: dict[str, Any]) -> ChatReply:
    messages = convert_to_messages(
        [{"role": m["role"], "content": m["content"]} for m in body["messages"]]
    )
    _, accepted = parse_prefix(messages)
    script = SCRIPTS[body["model"]]
    i = len(accepted)
    if i >= len(script):
        return ChatReply("", completion_tokens=0)
    tokens = strong_usage(i) if body["model"] == "stub-strong" else None
    # A real server keeps going past the step; the stop sequence must cut it.
    return ChatReply(script[i] + "\n\nThen something else.", completion_tokens=tokens)


def chat(server: StubServer, model: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.url + "/v1", api_key=SecretStr("x"), model=model, max_retries=0, **kwargs
    )


def solve(
    weak: Any, strong: Any, use_async: bool = False, prm: Any = None, **kwargs: Any
) -> dict[str, Any]:
    prm = prm or KeywordPRM({"WRONG": 0.1, "13": 0.4}, default=0.9)
    kwargs.setdefault("step_format", "release")  # byte-identical to the official release
    graph = create_trim_graph(
        weak, strong, prm, ThresholdPolicy(0.3), step_max_tokens=STEP_MAX_TOKENS, **kwargs
    ).compile(name="trim")
    if use_async:
        return asyncio.run(graph.ainvoke({"question": QUESTION}))
    return graph.invoke({"question": QUESTION})


def check_routing_and_spend(out: dict[str, Any]) -> None:
    steps = out["trim_steps"]
    assert [s["author"] for s in steps] == ["weak", "strong", "weak", "weak"]
    assert [s["text"] for s in steps] == [WEAK_STEPS[0], STRONG_STEPS[1], *WEAK_STEPS[2:]]
    assert steps[1]["draft"] == WEAK_STEPS[1]
    assert steps[1]["tokens"] == strong_usage(1)
    assert steps[1]["tokens_estimated"] is False
    spend = out["trim_spend"]
    assert spend["strong_tokens"] == strong_usage(1)  # from usage, not estimated
    assert spend["strong_tokens_estimated"] is False
    assert spend["weak_tokens"] == sum(len(s.split()) for s in WEAK_STEPS)
    assert spend["strong_calls"] == spend["escalations"] == 1
    assert out["trim_final_answer"] == "13"


@pytest.mark.parametrize("use_async", [False, True])
def test_instruct_mode_over_http(use_async: bool) -> None:
    with StubServer(chat=reply) as server:
        out = solve(chat(server, "stub-weak"), chat(server, "stub-strong"), use_async)
        bodies = server.bodies(CHAT)
    check_routing_and_spend(out)
    assert [b["model"] for b in bodies] == ["stub-weak"] * 2 + ["stub-strong"] + ["stub-weak"] * 2
    for body in bodies:
        assert body["stop"] == ["\n\n"]
        assert body["max_completion_tokens"] == STEP_MAX_TOKENS
        assert "continue_final_message" not in body
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert body["messages"][0]["content"] == INSTRUCT_SYSTEM
    strong_prompt = bodies[2]["messages"][1]["content"]
    assert strong_prompt.startswith(f"Question: {QUESTION}\n\nSteps so far:\n<steps>\n")
    assert WEAK_STEPS[0] in strong_prompt
    assert "WRONG" not in strong_prompt  # the discarded draft never reaches the strong model
    assert strong_prompt.endswith("Write step 2 only.")


@pytest.mark.parametrize("use_async", [False, True])
def test_prefill_mode_over_http_sends_vllm_continuation_flags(use_async: bool) -> None:
    with StubServer(chat=reply) as server:
        weak = vllm_prefill(chat(server, "stub-weak"))
        strong = vllm_prefill(chat(server, "stub-strong"))
        out = solve(weak, strong, use_async)
        bodies = server.bodies(CHAT)
    check_routing_and_spend(out)
    assert len(bodies) == 5
    for body in bodies:
        assert body["continue_final_message"] is True
        assert body["add_generation_prompt"] is False
        assert body["stop"] == ["\n\n"]
        assert body["max_completion_tokens"] == STEP_MAX_TOKENS
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["user", "assistant"]
        assert body["messages"][0]["content"] == USER_PROMPT.format(question=QUESTION)
    assert bodies[0]["messages"][-1]["content"] == "Solution: "
    strong_body = bodies[2]
    assert strong_body["model"] == "stub-strong"
    assert strong_body["messages"][-1]["content"] == f"Solution: {WEAK_STEPS[0]}\n\n"
    last = bodies[-1]["messages"][-1]["content"]
    assert (
        last == "Solution: " + "\n\n".join([WEAK_STEPS[0], STRONG_STEPS[1], WEAK_STEPS[2]]) + "\n\n"
    )


def test_strong_server_error_keeps_the_draft() -> None:
    with StubServer(chat=reply) as server:
        server.fail(2, status=500, message="upstream down", when=lambda b: "strong" in b["model"])
        out = solve(chat(server, "stub-weak"), chat(server, "stub-strong"), strong_max_retries=1)
        strong_requests = [b for b in server.bodies(CHAT) if b["model"] == "stub-strong"]
    steps = out["trim_steps"]
    assert [s["author"] for s in steps] == ["weak"] * 4
    assert steps[1]["text"] == WEAK_STEPS[1]
    assert steps[1]["fallback"].startswith("strong_error:")
    assert len(strong_requests) == 2
    assert out["trim_spend"]["strong_calls"] == 2
    assert out["trim_spend"]["strong_tokens"] == 0


def test_step_generator_reads_logprobs_length_and_usage() -> None:
    def answer(body: dict[str, Any]) -> ChatReply:
        return ChatReply(
            "x = 1 and y = 2", completion_tokens=3, logprobs=[("x", -0.5), (" =", -0.25)]
        )

    with StubServer(chat=answer) as server:
        gen = ChatStepGenerator(chat(server, "stub", logprobs=True), mode="instruct")
        out = gen.generate("q", [], max_tokens=3)
        (body,) = server.bodies(CHAT)
    assert body["logprobs"] is True
    assert body["max_completion_tokens"] == 3
    assert out.text == "x = 1"  # the stub honoured max_tokens
    assert out.stop == "length"
    assert out.tokens == 3 and out.tokens_estimated is False
    assert out.logprobs == (-0.5, -0.25)


@pytest.mark.parametrize("use_async", [False, True])
def test_whole_loop_over_http_with_a_vllm_server_prm(use_async: bool) -> None:
    """Draft, strong model and PRM all behind HTTP: the PRM flags the step ending in WRONG."""
    wrong = WordTokenizer().token_id("WRONG")

    def pooling(ids: Any) -> list[list[float]]:
        rows = [[0.5, 0.5]]
        for prev in ids[:-1]:
            p = 0.1 if prev == wrong else 0.9
            rows.append([1 - p, p])
        return rows

    with StubServer(chat=reply, pooling=pooling) as server:
        prm = VLLMServerPRM(server.url, "prm", max_retries=0)
        out = solve(chat(server, "stub-weak"), chat(server, "stub-strong"), use_async, prm=prm)
        pooled = server.bodies("/pooling")
        tokenized = server.bodies("/tokenize")
    steps = out["trim_steps"]
    assert [s["author"] for s in steps] == ["weak", "strong", "weak", "weak"]
    assert [s["draft_score"] for s in steps] == pytest.approx([0.9, 0.1, 0.9, 0.9])
    assert steps[1]["score"] == pytest.approx(0.9)  # the strong step, scored by the next call
    assert out["trim_spend"]["prm_calls"] == len(pooled) == len(tokenized) == 4
    assert [len(t["messages"][2]["content"].split("<extra_0>")) - 1 for t in tokenized] == [
        1, 2, 3, 4,
    ]  # fmt: skip
    assert [b["input"][0].count(QWEN_STEP_TAG_ID) for b in pooled] == [1, 2, 3, 4]
    assert out["trim_final_answer"] == "13"
