"""Every routing decision is visible to a LangSmith-style tracer (a real BaseTracer)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run

from langchain_trim import ThresholdPolicy, create_trim_graph
from langchain_trim.testing import FakeStepModel, KeywordPRM


class RecordingTracer(BaseTracer):
    """Collects every finished run, flattened, as LangSmith would receive them."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        stack = [run]
        while stack:
            r = stack.pop()
            self.runs.append(r)
            stack.extend(r.child_runs)

    def named(self, name: str) -> list[Run]:
        return sorted((r for r in self.runs if r.name == name), key=lambda r: r.start_time)


@pytest.mark.parametrize("use_async", [False, True])
def test_run_names_and_routing_metadata(
    weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM, use_async: bool
) -> None:
    tracer = RecordingTracer()
    graph = create_trim_graph(
        weak, strong, prm, ThresholdPolicy(0.3), budget=400, step_max_tokens=64
    ).compile(name="my-trim")
    config: Any = {"callbacks": [tracer]}
    if use_async:
        asyncio.run(graph.ainvoke({"question": "apples?"}, config))
    else:
        graph.invoke({"question": "apples?"}, config)

    roots = [r for r in tracer.runs if r.parent_run_id is None]
    assert [r.name for r in roots] == ["my-trim"]
    names = {r.name for r in tracer.runs}
    assert {"prepare", "draft", "score", "route", "escalate", "accept", "finish"} <= names

    drafts = tracer.named("trim.draft")
    assert [r.metadata["trim_step"] for r in drafts] == [0, 1, 2, 3]
    assert all(r.run_type == "llm" for r in drafts)
    assert drafts[0].outputs is not None
    strongs = tracer.named("trim.strong")
    assert [r.metadata["trim_step"] for r in strongs] == [1]
    prms = tracer.named("trim.prm")
    assert [len(r.inputs["steps"]) for r in prms] == [1, 2, 3, 4]

    routes = tracer.named("trim.route")
    assert [r.metadata["trim_decision"] for r in routes] == [
        "continue",
        "escalate",
        "continue",
        "continue",
    ]
    assert [r.metadata["trim_score"] for r in routes] == [0.9, 0.1, 0.4, 0.4]
    assert routes[1].metadata["trim_budget"] == 400
    assert routes[2].metadata["trim_budget_left"] == 400 - routes[2].metadata["trim_strong_tokens"]
    assert routes[2].metadata["trim_strong_tokens"] > 0
    assert all(r.metadata["trim_policy"] == "thr:0.3" for r in routes)
    # every route run is a child of a `route` node run
    by_id = {r.id: r for r in tracer.runs}
    assert all(by_id[r.parent_run_id].name == "route" for r in routes if r.parent_run_id)
