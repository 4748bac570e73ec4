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
    assert out["trim_budget"] == 400
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
    # load the file the way LangGraph Server does: by path, not as a package module
    spec = importlib.util.spec_from_file_location("trim_server_entry", ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    graph = getattr(module, attr)
    assert isinstance(graph, Pregel)
    assert graph.invoke({"question": QUESTION})["trim_final_answer"] == "13"
