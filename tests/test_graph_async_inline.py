"""On the async path the router never leaves the event loop thread (no executor hops)."""

from __future__ import annotations

import asyncio
import threading

from langchain_trim import ThresholdPolicy, create_trim_graph
from langchain_trim.policies.base import RouteDecision, RouteObservation
from langchain_trim.testing import FakeStepModel, KeywordPRM

from .conftest import STRONG_STEPS, WEAK_STEPS


class ThreadRecordingPolicy(ThresholdPolicy):
    """TRIM-Thr that notes which threads ask it anything."""

    def __init__(self, threshold: float) -> None:
        super().__init__(threshold)
        self.threads: set[int] = set()

    def needs_score(self, observation: RouteObservation) -> bool:
        self.threads.add(threading.get_ident())
        return super().needs_score(observation)

    def decide(self, observation: RouteObservation) -> RouteDecision:
        self.threads.add(threading.get_ident())
        return super().decide(observation)


def test_routing_runs_on_the_event_loop_thread() -> None:
    policy = ThreadRecordingPolicy(0.3)
    graph = create_trim_graph(
        FakeStepModel(steps=WEAK_STEPS),
        FakeStepModel(steps=STRONG_STEPS),
        KeywordPRM({"WRONG": 0.1}),
        policy,
    ).compile()

    async def main() -> int:
        await graph.ainvoke({"question": "apples?"})
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert policy.threads == {loop_thread}
