"""The GPU recipe command of docs/scale_out.md, run against local stubs of three vLLM servers."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("langchain_openai")

from typer.testing import CliRunner

from langchain_trim.cli import app

from .stubs import StubServer, WordTokenizer
from .test_openai_compatible import reply, strong_usage


def pooling(ids: Any) -> list[list[float]]:
    """The PRM head's row at every token (the stub's STEP pooler keeps the step tags')."""
    wrong = WordTokenizer().token_id("WRONG")
    rows = [[0.5, 0.5]]
    for prev in ids[:-1]:
        p = 0.1 if prev == wrong else 0.9
        rows.append([1 - p, p])
    return rows


def test_trim_solve_against_vllm_servers() -> None:
    with StubServer(chat=reply, pooling=pooling) as server:
        result = CliRunner().invoke(
            app,
            [
                "solve", "How many apples?", "--json", "--threshold", "0.5",
                "--weak", "stub-weak", "--weak-url", f"{server.url}/v1",
                "--strong", "stub-strong", "--strong-url", f"{server.url}/v1",
                "--prm", "prm", "--prm-url", server.url,
            ],
        )  # fmt: skip
        chats = server.bodies("/v1/chat/completions")
        rejected = server.rejected
    assert result.exit_code == 0, result.output
    assert rejected == []  # every request passed vLLM's request models
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["final_answer"] == "13"
    assert record["steps"] == 4 and record["escalated_steps"] == 1
    assert record["spend"]["strong_tokens"] == strong_usage(1)  # from the server's usage
    assert all(  # vLLM's prefill extras, at the top level where vLLM reads them
        body["continue_final_message"] is True and body["add_generation_prompt"] is False
        for body in chats
    )
