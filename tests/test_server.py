"""``langchain_trim.server``: the LangGraph Server entry point, configured by environment."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from langgraph.pregel import Pregel

from langchain_trim import server
from langchain_trim.errors import InvalidInputError
from langchain_trim.pool import PooledStepGenerator
from langchain_trim.prm.batching import MicroBatchingPRM
from langchain_trim.testing import FakeStepModel, KeywordPRM

from .conftest import STRONG_STEPS, WEAK_STEPS

ROOT = Path(__file__).resolve().parents[1]
HERE = "py:tests.test_server"
QUESTION = "How many apples?"


def make_weak() -> FakeStepModel:
    return FakeStepModel(steps=WEAK_STEPS, model_name="env-weak")


def make_strong() -> FakeStepModel:
    return FakeStepModel(steps=STRONG_STEPS, model_name="env-strong")


PRM = KeywordPRM({"WRONG": 0.1, "13": 0.4}, default=0.9)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in [k for k in __import__("os").environ if k.startswith(server.ENV_PREFIX)]:
        monkeypatch.delenv(key)
    values = {
        "TRIM_WEAK": f"{HERE}:make_weak",
        "TRIM_STRONG": f"{HERE}:make_strong",
        "TRIM_PRM": f"{HERE}:PRM",
        "TRIM_POLICY": "thr:0.3",
        "TRIM_BUDGET": "400",
        "TRIM_STEP_MAX_TOKENS": "64",
        "TRIM_PRM_BATCH": "8",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(server, "_cached", None)
    return values


def test_graph_is_built_from_env_once(env: dict[str, str]) -> None:
    graph = server.graph
    assert isinstance(graph, Pregel) and graph.name == "trim"
    assert server.graph is graph
    out = graph.invoke({"question": QUESTION})
    assert [s["author"] for s in out["trim_steps"]] == ["weak", "strong", "weak", "weak"]
    assert out["trim_spend"]["budget"] == 400
    assert out["trim_steps"][1]["model"] == "env-strong"


def test_env_knobs_reach_the_graph(env: dict[str, str]) -> None:
    graph = server.make_graph({**env, "TRIM_POLICY": "weak", "TRIM_MAX_STEPS": "2"})
    out = graph.invoke({"question": QUESTION})
    assert [s["author"] for s in out["trim_steps"]] == ["weak", "weak"]
    assert out["trim_termination"] == "max_steps"
    assert out["trim_spend"]["prm_calls"] == 0


def test_prm_batch_wraps_the_prm(env: dict[str, str]) -> None:
    nodes: Any = server.make_graph(env).builder.nodes["score"].runnable.func.__self__
    assert isinstance(nodes.prm, MicroBatchingPRM) and nodes.prm.inner is PRM
    plain: Any = server.make_graph({**env, "TRIM_PRM_BATCH": "0"})
    assert plain.builder.nodes["score"].runnable.func.__self__.prm is PRM


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("TRIM_MAX_STEPS", "many", "TRIM_MAX_STEPS"),
        ("TRIM_PRM", "oracle", "TRIM_PRM"),
        ("TRIM_WEAK", "py:tests.test_server:nothing_here", "cannot load"),
        ("TRIM_POLICY", "nope", "unknown policy"),
    ],
)
def test_bad_env_names_the_problem(env: dict[str, str], key: str, value: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        server.make_graph({**env, key: value})


def test_served_models_and_pools_from_urls(env: dict[str, str]) -> None:
    pytest.importorskip("langchain_openai")
    from .stubs import StubServer
    from .test_scale_out import PROBLEMS, pooling, reply

    with (
        StubServer(chat=reply, pooling=pooling) as one,
        StubServer(chat=reply, pooling=pooling) as two,
    ):
        urls = f"{one.url}/v1,{two.url}/v1"
        served = {
            "TRIM_WEAK": "stub-weak",
            "TRIM_WEAK_URL": urls,
            "TRIM_STRONG": "stub-strong",
            "TRIM_STRONG_URL": f"{one.url}/v1",
            "TRIM_PRM": "prm",
            "TRIM_PRM_URL": one.url,
            "TRIM_POLICY": "thr:0.5",
        }
        graph: Any = server.make_graph(served)
        nodes = graph.builder.nodes["draft"].runnable.func.__self__
        assert isinstance(nodes.draft_gen, PooledStepGenerator)
        outs = graph.batch([{"question": p.question} for p in PROBLEMS[:4]])
        assert [o["trim_final_answer"] for o in outs] == [p.answer for p in PROBLEMS[:4]]
        assert one.bodies("/v1/chat/completions") and two.bodies("/v1/chat/completions")
        assert one.bodies("/pooling")


def test_langgraph_json_points_at_the_graph(env: dict[str, str]) -> None:
    config = json.loads((ROOT / "langgraph.json").read_text())
    path, _, attr = config["graphs"]["trim"].partition(":")
    assert "." in config["dependencies"]
    # load the file the way LangGraph Server does: by path, reading the module's namespace
    spec = importlib.util.spec_from_file_location("trim_server_entry", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    factory = module.__dict__[attr]  # not a lazy module __getattr__
    graph = factory({"configurable": {}})
    assert isinstance(graph, Pregel) and factory({}) is graph  # built once
    assert graph.invoke({"question": QUESTION})["trim_final_answer"] == "13"


def test_langgraph_json_installs_the_default_configuration() -> None:
    """``langgraph build``/``up`` install what the default (embedded) configuration needs."""
    import tomllib

    config = json.loads((ROOT / "langgraph.json").read_text())
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    needed = {req for extra in ("local", "embedded") for req in extras[extra]}
    assert needed <= set(config["dependencies"])
    assert any("cmake" in line for line in config.get("dockerfile_lines", []))  # llama.cpp


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_langgraph_dev_loads_every_graph_and_answers_runs() -> None:
    """LangGraph Server's own loader (``langgraph dev``) serves each graph of langgraph.json."""
    pytest.importorskip("langgraph_api")
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from .server_fakes import ENV

    cli = Path(sys.executable).with_name("langgraph")
    if not cli.exists():
        pytest.skip("langgraph-cli is not installed")
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(server.ENV_PREFIX)},
        **ENV,
        "PYTHONPATH": str(ROOT),
        "LANGSMITH_TRACING": "false",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    }
    cmd = [str(cli), "dev", "--no-browser", "--no-reload", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--config", str(ROOT / "langgraph.json")],
        cwd=ROOT,  # graph paths are resolved from here; state goes to .langgraph_api/
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def post(path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            base + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/ok", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()[0][-4000:]
                assert time.monotonic() < deadline, "langgraph dev did not start"
                time.sleep(0.25)
        graphs = json.loads((ROOT / "langgraph.json").read_text())["graphs"]
        for graph_id in graphs:
            out = post("/runs/wait", {"assistant_id": graph_id, "input": {"question": QUESTION}})
            assert out["trim_final_answer"] == "13", out
            assert [s["author"] for s in out["trim_steps"]] == ["weak", "strong", "weak", "weak"]
            thread = post("/threads", {})["thread_id"]  # a run on the server's checkpointer
            body = {"assistant_id": graph_id, "input": {"question": QUESTION}}
            out = post(f"/threads/{thread}/runs/wait", body)
            assert out["trim_final_answer"] == "13" and out["trim_spend"]["budget"] == 400
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
