"""The README's GPU recipe command, run against local stubs of three vLLM servers."""

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
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["final_answer"] == "13"
    assert record["steps"] == 4 and record["escalated_steps"] == 1
    assert record["spend"]["strong_tokens"] == strong_usage(1)  # from the server's usage
    assert all(
        body["extra_body" if "extra_body" in body else "continue_final_message"] for body in chats
    )
