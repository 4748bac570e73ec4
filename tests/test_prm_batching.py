"""MicroBatchingPRM: order, full/overdue dispatch, errors, cancellation, loops and threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Sequence

import pytest

from langchain_trim import ThresholdPolicy, create_trim_graph
from langchain_trim.errors import PRMScoreError
from langchain_trim.prm.base import BaseProcessRewardModel, PRMItem, ProcessRewardModel
from langchain_trim.prm.batching import MicroBatchingPRM
from langchain_trim.testing import FakeStepModel, KeywordPRM

from .conftest import STRONG_STEPS, WEAK_STEPS

FOREVER_MS = 60_000.0  # a wait no test may sit through: only a full batch can go out


class RecordingPRM(BaseProcessRewardModel):
    """Scores each step by its length; records every batch; fails on ``boom``."""

    name = "recording"

    def __init__(self, *, drop_last: bool = False, gate: threading.Event | None = None) -> None:
        self.batches: list[list[PRMItem]] = []
        self.drop_last = drop_last
        self.gate = gate
        self._lock = threading.Lock()

    @staticmethod
    def expected(steps: Sequence[str]) -> list[float]:
        return [min(1.0, len(s) / 100) for s in steps]

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        with self._lock:
            self.batches.append(list(items))
        if self.gate is not None:
            self.gate.wait(10)
        if any("boom" in s for _, steps in items for s in steps):
            raise RuntimeError("boom in batch")
        out = [self.expected(steps) for _, steps in items]
        return out[:-1] if self.drop_last else out

    async def ascore_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        await asyncio.sleep(0)
        return self.score_batch(items)


def requests(n: int, tag: str = "q") -> list[tuple[str, list[str]]]:
    return [(f"{tag}{i}", ["x" * (i % 7 + 1), "y" * (i % 5 + 2)][: 1 + i % 2]) for i in range(n)]


async def gather_scores(prm: MicroBatchingPRM, reqs: list[tuple[str, list[str]]]) -> list:
    return await asyncio.wait_for(
        asyncio.gather(*(prm.ascore(q, s) for q, s in reqs), return_exceptions=True), 10
    )


def test_is_a_process_reward_model() -> None:
    prm = MicroBatchingPRM(KeywordPRM({}))
    assert isinstance(prm, ProcessRewardModel)
    assert prm.name == "keyword"
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatchingPRM(KeywordPRM({}), max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatchingPRM(KeywordPRM({}), max_wait_ms=-1)
    with pytest.raises(TypeError, match="ProcessRewardModel"):
        MicroBatchingPRM(object())  # type: ignore[arg-type]


def test_results_are_routed_back_in_order() -> None:
    inner = RecordingPRM()
    prm = MicroBatchingPRM(inner, max_batch=64, max_wait_ms=20)
    reqs = requests(20)
    out = asyncio.run(gather_scores(prm, reqs))
    assert out == [RecordingPRM.expected(s) for _, s in reqs]
    assert len(inner.batches) == 1
    assert [q for q, _ in inner.batches[0]] == [q for q, _ in reqs]
    stats = prm.stats()
    assert (stats.calls, stats.items, stats.batches, stats.mean_batch_size) == (1, 20, 1, 20.0)
    assert stats.calls_per_item == pytest.approx(1 / 20)


def test_full_batches_go_out_without_waiting() -> None:
    inner = RecordingPRM()
    prm = MicroBatchingPRM(inner, max_batch=4, max_wait_ms=FOREVER_MS)
    reqs = requests(12)
    out = asyncio.run(gather_scores(prm, reqs))  # would time out if a batch waited
    assert out == [RecordingPRM.expected(s) for _, s in reqs]
    assert [len(b) for b in inner.batches] == [4, 4, 4]
    assert prm.stats().max_batch_size == 4


def test_a_lone_request_goes_out_after_max_wait() -> None:
    inner = RecordingPRM()
    prm = MicroBatchingPRM(inner, max_batch=32, max_wait_ms=10)

    async def main() -> list[list[float]]:
        first = await asyncio.wait_for(prm.ascore("q", ["ab"]), 10)
        second = await asyncio.wait_for(prm.ascore("q", ["ab", "abc"]), 10)
        return [first, second]

    assert asyncio.run(main()) == [[0.02], [0.02, 0.03]]
    assert [len(b) for b in inner.batches] == [1, 1]
    assert prm.stats().mean_wait_ms > 0


def test_a_failing_batch_fails_every_request_in_it() -> None:
    prm = MicroBatchingPRM(RecordingPRM(), max_batch=3, max_wait_ms=FOREVER_MS)
    reqs = [("a", ["fine"]), ("b", ["boom"]), ("c", ["fine too"])]
    out = asyncio.run(gather_scores(prm, reqs))
    assert all(isinstance(o, RuntimeError) and "boom" in str(o) for o in out)
    assert prm.stats().errors == 1


def test_isolate_errors_fails_only_the_bad_request() -> None:
    inner = RecordingPRM()
    prm = MicroBatchingPRM(inner, max_batch=3, max_wait_ms=FOREVER_MS, isolate_errors=True)
    reqs = [("a", ["fine"]), ("b", ["boom"]), ("c", ["fine too"])]
    out = asyncio.run(gather_scores(prm, reqs))
    assert out[0] == [0.04] and out[2] == [0.08]
    assert isinstance(out[1], RuntimeError)
    assert [len(b) for b in inner.batches] == [3, 1, 1, 1]
    assert prm.stats().calls == 4


def test_wrong_number_of_results_is_a_score_error_for_each() -> None:
    prm = MicroBatchingPRM(RecordingPRM(drop_last=True), max_batch=2, max_wait_ms=FOREVER_MS)
    out = asyncio.run(gather_scores(prm, [("a", ["x"]), ("b", ["y"])]))
    assert all(isinstance(o, PRMScoreError) for o in out)


def test_a_cancelled_request_leaves_the_others_alone() -> None:
    inner = RecordingPRM()
    prm = MicroBatchingPRM(inner, max_batch=3, max_wait_ms=FOREVER_MS)

    async def main() -> list:
        doomed = asyncio.ensure_future(prm.ascore("doomed", ["x"]))
        await asyncio.sleep(0)
        doomed.cancel()
        return await gather_scores(prm, requests(3))

    out = asyncio.run(main())
    assert out == [RecordingPRM.expected(s) for _, s in requests(3)]
    assert all(q != "doomed" for b in inner.batches for q, _ in b)


def test_max_concurrency_lets_the_next_batch_grow() -> None:
    gate = threading.Event()
    inner = RecordingPRM(gate=gate)

    class Threaded(RecordingPRM):
        async def ascore_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
            return await asyncio.to_thread(inner.score_batch, items)

    prm = MicroBatchingPRM(Threaded(), max_batch=8, max_wait_ms=0, max_concurrency=1)

    async def main() -> list:
        first = asyncio.ensure_future(prm.ascore("first", ["a"]))
        while not inner.batches:  # the first batch is at the PRM, held by the gate
            await asyncio.sleep(0.001)
        rest = asyncio.ensure_future(gather_scores(prm, requests(5)))
        for _ in range(20):
            await asyncio.sleep(0)
        gate.set()
        return [await first, *(await rest)]

    out = asyncio.run(main())
    assert out == [[0.01], *[RecordingPRM.expected(s) for _, s in requests(5)]]
    assert [len(b) for b in inner.batches] == [1, 5]


def test_works_across_event_loops_and_threads() -> None:
    inner = RecordingPRM()
    prm = MicroBatchingPRM(inner, max_batch=4, max_wait_ms=FOREVER_MS)
    # one loop after another
    for tag in ("first", "second"):
        reqs = requests(4, tag)
        assert asyncio.run(gather_scores(prm, reqs)) == [RecordingPRM.expected(s) for _, s in reqs]

    # two loops at once, in two threads: batches never mix loops
    def in_thread(tag: str) -> list:
        return asyncio.run(gather_scores(prm, requests(8, tag)))

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(in_thread, ["left", "right"]))
    for tag, out in zip(["left", "right"], results, strict=True):
        assert out == [RecordingPRM.expected(s) for _, s in requests(8, tag)]
    for batch in inner.batches:
        assert len({q.rstrip("0123456789") for q, _ in batch}) == 1
    assert prm.stats().items == 4 + 4 + 8 + 8


def test_sync_calls_from_threads_share_a_batch() -> None:
    inner = RecordingPRM()
    prm = MicroBatchingPRM(inner, max_batch=8, max_wait_ms=FOREVER_MS)
    reqs = requests(16)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        out = list(pool.map(lambda r: prm.score(*r), reqs))
    assert out == [RecordingPRM.expected(s) for _, s in reqs]
    assert sorted(len(b) for b in inner.batches) == [8, 8]


def test_sync_errors_reach_every_thread_of_the_batch() -> None:
    prm = MicroBatchingPRM(RecordingPRM(), max_batch=2, max_wait_ms=FOREVER_MS)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(prm.score, q, s) for q, s in [("a", ["x"]), ("b", ["boom"])]]
        errors = [f.exception(timeout=10) for f in futures]
    assert all(isinstance(e, RuntimeError) for e in errors)
    lone = MicroBatchingPRM(RecordingPRM(), max_batch=4, max_wait_ms=1, isolate_errors=True)
    assert lone.score("q", ["abc"]) == [0.03]


def test_batches_the_prm_calls_of_concurrent_graph_runs() -> None:
    questions = [f"question {i}" for i in range(6)]

    def graph(prm: ProcessRewardModel):  # type: ignore[no-untyped-def]
        weak = FakeStepModel(steps=WEAK_STEPS, model_name="weak")
        strong = FakeStepModel(steps=STRONG_STEPS, model_name="strong")
        return create_trim_graph(weak, strong, prm, ThresholdPolicy(0.5)).compile()

    keyword = {"WRONG": 0.1, "13": 0.4}
    plain = asyncio.run(graph(KeywordPRM(keyword)).abatch([{"question": q} for q in questions]))
    batched_prm = MicroBatchingPRM(KeywordPRM(keyword), max_batch=6, max_wait_ms=FOREVER_MS)
    batched = asyncio.run(
        asyncio.wait_for(graph(batched_prm).abatch([{"question": q} for q in questions]), 30)
    )
    key = ("trim_final_answer", "trim_steps", "trim_spend")
    assert [[o[k] for k in key] for o in batched] == [[o[k] for k in key] for o in plain]
    stats = batched_prm.stats()
    n_scored = sum(o["trim_spend"]["prm_calls"] for o in plain)
    assert stats.items == n_scored
    assert stats.calls == n_scored // len(questions)  # runs in lockstep: one call per step
