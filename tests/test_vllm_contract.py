"""The vLLM contract: what the stub server accepts and answers is what vLLM does, the
``vllm`` extra's floor is the version the code needs, and the serve recipes do not ask for
remote code.

Tests marked with ``needs_vllm`` check the request mirrors and the PRM traffic against
vLLM's own pydantic models; they run where ``vllm`` imports (its protocol modules import
without a GPU) and are skipped elsewhere.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from langchain_trim.prm.vllm_prm import VLLM_MIN_VERSION, VLLMServerPRM, check_vllm_version

from . import vllm_protocol
from .stubs import StubServer, WordTokenizer, render_chatml, shepherd_logprobs, token_score

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
TOK = WordTokenizer()
QUESTION = "What is 1 + 2 ?"
STEPS = ["We add 1 + 2", "so the sum is three", "answer is 3"]
REAL = vllm_protocol.real_models()
needs_vllm = pytest.mark.skipif(REAL is None, reason="vllm's protocol models do not import")


def post(server: StubServer, path: str, body: Any) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=10)


# -- the stub refuses what vLLM refuses --------------------------------------------------------
IDS = TOK.encode(render_chatml([{"role": "user", "content": "a <extra_0> b <extra_0>"}]), False)
BAD_REQUESTS = [
    ("/pooling", {"model": "prm", "input": [IDS], "task": "encode"}),  # removed in 0.33
    ("/pooling", {"model": "prm", "input": [IDS], "task": "score"}),  # removed in 0.33
    ("/pooling", {"model": "prm", "input": [IDS], "normalize": True}),  # removed in 0.33
    ("/pooling", {"model": "prm", "input": [[1.5, 2]]}),
    ("/pooling", {"model": "prm"}),
    ("/pooling", {"model": "prm", "input": [IDS], "task": "token_classify", "typo": 1}),
    (
        "/tokenize",
        {
            "model": "prm",
            "messages": [{"role": "user", "content": "x"}],
            "continue_final_message": True,
            "add_generation_prompt": True,
        },
    ),
    ("/tokenize", {"model": "prm"}),
    ("/v1/completions", {"model": "m", "prompt": [[1, 2]], "prompt_logprobs": -2}),
    ("/v1/completions", {"model": "m", "prompt": [[1, -2]], "max_tokens": 1}),
    ("/v1/completions", {"model": "m", "prompt": "", "max_tokens": 1}),
    ("/v1/completions", {"model": "m", "prompt": [[1, 2]], "stream": True, "prompt_logprobs": 1}),
    (
        "/v1/chat/completions",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "continue_final_message": True,
            "add_generation_prompt": True,
        },
    ),
    (
        "/v1/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 3},
    ),
    ("/v1/chat/completions", {"model": "m", "messages": [], "extra_body": {"x": 1}}),
]


@pytest.mark.parametrize(("path", "body"), BAD_REQUESTS)
def test_stub_refuses_invalid_requests_with_vllms_400(path: str, body: dict[str, Any]) -> None:
    with StubServer(chat=lambda body: "ok", logprobs=shepherd_logprobs) as server:
        response = post(server, path, body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == 400 and error["type"] == "BadRequestError" and error["message"]
        assert [p for p, _ in server.rejected] == [path]


@pytest.mark.parametrize(
    ("stub", "path", "body", "status", "message"),
    [
        ({}, "/pooling", {"model": "prm", "input": [IDS], "task": "embed"}, 400, "not supported"),
        ({"max_model_len": 5}, "/pooling", {"model": "prm", "input": [IDS]}, 400, "context"),
        ({"pooling": None}, "/pooling", {"model": "m", "input": [IDS]}, 501, "Pooling API"),
        ({}, "/v1/completions", {"model": "m", "prompt": [[1, 2]]}, 404, "does not exist"),
        (
            {"logprobs": shepherd_logprobs},
            "/v1/completions",
            {"model": "m", "prompt": [[1, 2]], "prompt_logprobs": 21},
            400,
            "greater than max allowed: 20",
        ),
        (
            {"logprobs": shepherd_logprobs, "max_model_len": 4},
            "/v1/completions",
            {"model": "m", "prompt": [[1, 2, 3]], "max_tokens": 2, "prompt_logprobs": 1},
            400,
            "maximum context length is 4",
        ),
    ],
)
def test_stub_applies_vllms_serving_limits(
    stub: dict[str, Any], path: str, body: dict[str, Any], status: int, message: str
) -> None:
    with StubServer(**stub) as server:
        response = post(server, path, body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


def test_stub_pooling_answers_one_row_per_step_and_validates_its_answers() -> None:
    with StubServer() as server:
        step = post(server, "/pooling", {"model": "prm", "input": [IDS, IDS[:-3]]}).json()
    assert [len(d["data"]) for d in step["data"]] == [2, 1]  # tags, not tokens
    vllm_protocol.PoolingResponse.model_validate(step)
    with StubServer(pooler="ALL") as server:
        every = post(server, "/pooling", {"model": "prm", "input": [IDS]}).json()
    assert len(every["data"][0]["data"]) == len(IDS)


def test_stub_prompt_logprobs_hold_top_k_and_the_prompt_token_like_vllm() -> None:
    ids = [1, 2000, 12902, 3000]
    with StubServer(pooling=None, logprobs=shepherd_logprobs) as server:
        answer = post(
            server,
            "/v1/completions",
            {"model": "m", "prompt": [ids], "max_tokens": 1, "prompt_logprobs": 1},
        ).json()
    vllm_protocol.CompletionResponse.model_validate(answer)
    rows = answer["choices"][0]["prompt_logprobs"]
    assert rows[0] is None and len(rows) == len(ids)
    top = "648" if token_score(2000) > 0.5 else "387"  # "+" or "-" leads after the tag
    assert set(rows[3]) == {top, "3000"}  # the top 1, and the prompt's own token
    assert rows[3][top]["rank"] == 1 and rows[3]["3000"]["rank"] > 1


# -- the mirrors are vLLM's models -------------------------------------------------------------
MIRRORS = {
    "/tokenize": vllm_protocol.TokenizeCompletionRequest,
    "/tokenize/chat": vllm_protocol.TokenizeChatRequest,
    "/pooling": vllm_protocol.PoolingCompletionRequest,
    "/v1/completions": vllm_protocol.CompletionRequest,
    "/v1/chat/completions": vllm_protocol.ChatCompletionRequest,
}


@needs_vllm
@pytest.mark.parametrize("route", sorted(MIRRORS))
def test_mirror_fields_are_vllms(route: str) -> None:
    assert REAL is not None
    real = REAL[route]
    mirror = MIRRORS[route]
    assert set(mirror.model_fields) <= set(real.model_fields), sorted(
        set(mirror.model_fields) - set(real.model_fields)
    )


def _refused_since_0_11(path: str, body: dict[str, Any]) -> bool:
    """Bodies vLLM 0.11 takes and 0.33 refuses: the 'score' task, ``normalize``, negative
    token ids."""
    if path == "/pooling":
        return body.get("task") == "score" or "normalize" in body
    prompt = body.get("prompt")
    return path == "/v1/completions" and isinstance(prompt, list) and "-" in str(prompt)


@needs_vllm
@pytest.mark.parametrize(("path", "body"), BAD_REQUESTS)
def test_vllm_refuses_what_the_mirrors_refuse(path: str, body: dict[str, Any]) -> None:
    """Except unknown fields, which vLLM ignores and the mirrors refuse on purpose."""
    assert REAL is not None
    real = vllm_protocol.real_request_model(REAL, path, body)
    mirror = vllm_protocol.request_model(path, body)
    assert mirror is not None
    unknown = set(body) - set(real.model_fields)
    if unknown:
        pytest.skip(f"vLLM ignores unknown fields {sorted(unknown)}")
    if real.__module__ == "vllm.entrypoints.openai.protocol" and _refused_since_0_11(path, body):
        pytest.skip("0.11 accepts it, later vLLM refuses it; the mirror takes the narrower")
    with pytest.raises(Exception):  # noqa: B017  (0.33's VLLMValidationError is no ValueError)
        real.model_validate(body)


@needs_vllm
def test_prm_traffic_is_accepted_by_vllms_models() -> None:
    assert REAL is not None
    with StubServer(logprobs=shepherd_logprobs) as server:
        VLLMServerPRM(server.url, "prm").score(QUESTION, STEPS)
        VLLMServerPRM(server.url, "prm", tokenizer=TOK).score(QUESTION, STEPS)
        VLLMServerPRM(server.url, "shep", style="math_shepherd").score(QUESTION, STEPS)
        requests = list(server.requests)
        assert server.rejected == []
    paths = {r.path for r in requests}
    assert paths == {"/tokenize", "/pooling", "/v1/completions"}
    for request in requests:
        real = vllm_protocol.real_request_model(REAL, request.path, request.body)
        real.model_validate(request.body)


@needs_vllm
def test_stub_answers_parse_as_vllms_responses() -> None:
    responses = vllm_protocol.real_response_models()
    assert responses is not None
    with StubServer(logprobs=shepherd_logprobs) as server:
        VLLMServerPRM(server.url, "prm").score(QUESTION, STEPS)
        VLLMServerPRM(server.url, "shep", style="math_shepherd").score(QUESTION, STEPS)
        for request in list(server.requests):
            answer = post(server, request.path, request.body)
            assert answer.status_code == 200
            parsed = responses[request.path].model_validate(answer.json())
            if request.path == "/v1/completions":  # int token ids, Logprob objects
                row = parsed.choices[0].prompt_logprobs[-1]
                assert all(isinstance(k, int) for k in row)


@needs_vllm
def test_vllm_has_what_the_floor_promises() -> None:
    import vllm
    from vllm import SamplingParams
    from vllm.tasks import PoolingTask

    check_vllm_version(vllm.__version__)
    assert "token_classify" in get_args(PoolingTask)
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=20, detokenize=False)
    assert params.prompt_logprobs == 20


# -- packaging and recipes ---------------------------------------------------------------------
def test_pyproject_vllm_floor_matches_the_code() -> None:
    """vLLM 0.11.0 refuses ``token_classify``; the extra must not allow it."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (spec,) = [r for r in extras["vllm"] if re.match(r"vllm\b", r)]
    assert spec.replace(" ", "") == f"vllm>={VLLM_MIN_VERSION}"
    check_vllm_version(VLLM_MIN_VERSION)
    with pytest.raises(Exception, match="too old"):
        check_vllm_version("0.11.0")


def recipe_lines() -> list[tuple[str, str]]:
    """``(where, line)`` of the docs, README, package sources and CLI help, with shell
    continuation lines joined."""
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    files += (ROOT / "langchain_trim").rglob("*.py")
    out = []
    for path in files:
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for n, line in enumerate(text.splitlines(), 1):
            out.append((f"{path.relative_to(ROOT)}:{n}", line))
    return out


def test_serve_recipes_do_not_ask_for_remote_code() -> None:
    """Both PRM architectures are native to vLLM and transformers; remote code would make
    vLLM load the repository's transformers-4.37-era config class instead."""
    offenders = [
        where
        for where, line in recipe_lines()
        if ("vllm serve" in line and "--trust-remote-code" in line)
        or ("LLM(" in line and "trust_remote_code=True" in line)
    ]
    assert offenders == []


def test_no_recipe_serves_math_shepherd_with_a_pooler() -> None:
    """A causal LM under the pooling runner is an embedding model; returned_token_ids
    would pick hidden-state columns."""
    offenders = [
        where
        for where, line in recipe_lines()
        if ("pooler" in line.lower() and ("12902" in line or "648" in line))
        or line.strip().startswith('"returned_token_ids"')
    ]
    assert offenders == []
