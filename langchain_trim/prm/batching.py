"""``MicroBatchingPRM``: the PRM requests of many concurrent graph runs, one batched call.

A GPU PRM scores 32 trajectories in about the time it takes to score one, but every TRIM
run asks for one score at a time.  With many runs in flight (``graph.abatch``, ``trim
eval --concurrency``, a LangGraph server), this wrapper holds each request for at most
``max_wait_ms`` (or until ``max_batch`` requests wait), sends them together to the inner
PRM's ``ascore_batch`` (async callers) or ``score_batch`` (threads), and routes each
caller its own scores, in order.

* **Bounded wait**: the first request of a batch waits at most ``max_wait_ms`` before the
  batch goes out.  With ``max_concurrency`` set, a batch may also wait for a free slot
  (and keeps filling up meanwhile: continuous batching).
* **Errors**: if the batched call raises, or returns the wrong number of results, every
  request of that batch raises that error (the graph then keeps the draft unscored, or
  raises with ``on_prm_error="raise"``).  With ``isolate_errors=True`` a failed batch is
  retried one request at a time, so only the requests that fail on their own raise.
* **Event loops and threads**: each event loop gets its own queue (a batch never mixes
  loops), and synchronous :meth:`MicroBatchingPRM.score` calls from several threads are
  batched together by whichever thread arrives first.
* :meth:`MicroBatchingPRM.stats` counts inner calls, items, mean batch size and the latency
  added by waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_trim.errors import PRMScoreError
from langchain_trim.prm.base import PRMItem, ProcessRewardModel


@dataclass(frozen=True)
class BatchingStats:
    """What a :class:`MicroBatchingPRM` did since it was made (or :meth:`reset_stats`)."""

    calls: int
    """Calls made to the inner PRM (batches, plus single retries with ``isolate_errors``)."""
    items: int
    """Trajectories scored (requests answered, successfully or not)."""
    batches: int
    """Batches formed from queued requests."""
    max_batch_size: int
    errors: int
    """Batches whose inner call failed."""
    mean_wait_ms: float
    """Mean time a queued request waited before its batch went out: the added latency."""
    max_wait_ms: float

    @property
    def mean_batch_size(self) -> float:
        """Items per inner call (0 when nothing was scored)."""
        return self.items / self.calls if self.calls else 0.0

    @property
    def calls_per_item(self) -> float:
        """Inner calls per scored trajectory: 1 without batching, 1/k with batches of k."""
        return self.calls / self.items if self.items else 0.0


@dataclass
class _Counters:
    calls: int = 0
    items: int = 0
    batches: int = 0
    max_batch_size: int = 0
    errors: int = 0
    waited: float = 0.0
    waited_n: int = 0
    max_waited: float = 0.0


@dataclass
class _Request:
    item: PRMItem
    future: asyncio.Future[list[float]]
    t0: float


@dataclass
class _Lane:
    """The async queue of one event loop."""

    pending: list[_Request] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    inflight: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


@dataclass
class _SyncBatch:
    items: list[PRMItem] = field(default_factory=list)
    t0: list[float] = field(default_factory=list)
    results: list[list[float] | BaseException] | None = None
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class MicroBatchingPRM:
    """Wrap a batchable PRM so concurrent single requests share one inner batch call.

    Args:
        inner: the PRM doing the scoring; its ``ascore_batch`` / ``score_batch`` should be
            cheaper per item than single calls (a GPU or a vLLM ``/pooling`` server).
        max_batch: most requests per inner call; a full batch goes out at once.
        max_wait_ms: longest a request waits for company before its batch goes out.
        max_concurrency: most inner calls in flight per event loop (and across threads);
            ``None`` for no limit.  A limit makes batches grow while the PRM is busy.
        isolate_errors: retry a failed batch one request at a time, so one bad
            trajectory does not fail its batch-mates.

    Scores are exactly the inner PRM's; ``name`` is the inner PRM's too (batching changes
    how requests travel, not what they return).

    >>> import asyncio
    >>> from langchain_trim.testing import KeywordPRM
    >>> prm = MicroBatchingPRM(KeywordPRM({"bad": 0.1}), max_batch=8, max_wait_ms=5)
    >>> async def four_runs():
    ...     steps = [["ok"], ["ok", "bad"], ["bad"], ["ok", "ok"]]
    ...     return await asyncio.gather(*(prm.ascore("q", s) for s in steps))
    >>> asyncio.run(four_runs())
    [[0.9], [0.9, 0.1], [0.1], [0.9, 0.9]]
    >>> s = prm.stats(); (s.calls, s.items, s.mean_batch_size)
    (1, 4, 4.0)
    """

    def __init__(
        self,
        inner: ProcessRewardModel,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        max_concurrency: int | None = None,
        isolate_errors: bool = False,
    ) -> None:
        if not (hasattr(inner, "score_batch") and hasattr(inner, "ascore_batch")):
            raise TypeError(f"inner must implement ProcessRewardModel, got {type(inner).__name__}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 or None, got {max_concurrency!r}")
        self.inner = inner
        self.name: str = str(getattr(inner, "name", type(inner).__name__))
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_concurrency = max_concurrency
        self.isolate_errors = isolate_errors
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane] = (
            weakref.WeakKeyDictionary()
        )
        self._open: _SyncBatch | None = None
        self._slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None

    def __repr__(self) -> str:
        return (
            f"MicroBatchingPRM({self.inner!r}, max_batch={self.max_batch}, "
            f"max_wait_ms={self.max_wait * 1000:g})"
        )

    # -- stats -----------------------------------------------------------------------------
    def stats(self) -> BatchingStats:
        """A snapshot of the counters."""
        with self._lock:
            c = self._counters
            return BatchingStats(
                calls=c.calls,
                items=c.items,
                batches=c.batches,
                max_batch_size=c.max_batch_size,
                errors=c.errors,
                mean_wait_ms=1000 * c.waited / c.waited_n if c.waited_n else 0.0,
                max_wait_ms=1000 * c.max_waited,
            )

    def reset_stats(self) -> None:
        """Zero the counters."""
        with self._lock:
            self._counters = _Counters()

    def _count(
        self, *, calls: int = 0, items: int = 0, waits: Sequence[float] = (), error: bool = False
    ) -> None:
        with self._lock:
            c = self._counters
            c.calls += calls
            c.items += items
            if waits:
                c.batches += 1
                c.max_batch_size = max(c.max_batch_size, len(waits))
                c.waited += sum(waits)
                c.waited_n += len(waits)
                c.max_waited = max(c.max_waited, *waits)
            c.errors += int(error)

    # -- pass-through ------------------------------------------------------------------------
    def observe_step(self, question: str, text: str, logprobs: Sequence[float] | None) -> None:
        """Forward the graph's step hook to the inner PRM when it has one."""
        observe = getattr(self.inner, "observe_step", None)
        if callable(observe):
            observe(question, text, logprobs)

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        """Already a batch: straight to the inner PRM."""
        self._count(calls=1, items=len(items))
        return self._checked(self.inner.score_batch(items), len(items))

    async def ascore_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        """Already a batch: straight to the inner PRM."""
        self._count(calls=1, items=len(items))
        return self._checked(await self.inner.ascore_batch(items), len(items))

    def _checked(self, results: Sequence[list[float]], n: int) -> list[list[float]]:
        if not isinstance(results, Sequence) or len(results) != n:
            got = len(results) if isinstance(results, Sequence) else type(results).__name__
            raise PRMScoreError(f"{self.name}: batch of {n} trajectories returned {got} results")
        return list(results)

    # -- async: one lane per event loop ----------------------------------------------------
    def _lane(self, loop: asyncio.AbstractEventLoop) -> _Lane:
        with self._lock:
            lane = self._lanes.get(loop)
            if lane is None:
                lane = self._lanes[loop] = _Lane()
            return lane

    async def ascore(self, question: str, steps: Sequence[str]) -> list[float]:
        """Queue one request; resolves when its batch has been scored."""
        loop = asyncio.get_running_loop()
        lane = self._lane(loop)
        future: asyncio.Future[list[float]] = loop.create_future()
        lane.pending.append(_Request((question, list(steps)), future, loop.time()))
        self._pump(lane, loop)
        return await future

    def _has_slot(self, lane: _Lane) -> bool:
        return self.max_concurrency is None or lane.inflight < self.max_concurrency

    def _pump(self, lane: _Lane, loop: asyncio.AbstractEventLoop, due: bool = False) -> None:
        """Send every batch that is full or overdue while slots are free; re-arm the timer."""
        lane.pending = [r for r in lane.pending if not r.future.done()]  # drop cancelled
        while lane.pending and self._has_slot(lane):
            overdue = loop.time() - lane.pending[0].t0 >= self.max_wait
            if not (due or overdue or len(lane.pending) >= self.max_batch):
                break
            due = False
            batch, lane.pending = lane.pending[: self.max_batch], lane.pending[self.max_batch :]
            lane.inflight += 1
            task = loop.create_task(self._run(lane, batch))
            lane.tasks.add(task)
            task.add_done_callback(lane.tasks.discard)
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        if lane.pending and self._has_slot(lane):
            delay = max(0.0, lane.pending[0].t0 + self.max_wait - loop.time())
            lane.timer = loop.call_later(delay, self._on_timer, lane, loop)

    def _on_timer(self, lane: _Lane, loop: asyncio.AbstractEventLoop) -> None:
        lane.timer = None
        self._pump(lane, loop, due=True)

    async def _run(self, lane: _Lane, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        items = [r.item for r in batch]
        self._count(calls=1, items=len(items), waits=[now - r.t0 for r in batch])
        outcomes: list[list[float] | BaseException]
        try:
            try:
                outcomes = list(self._checked(await self.inner.ascore_batch(items), len(items)))
            except Exception as exc:
                self._count(error=True)
                if self.isolate_errors and len(items) > 1:
                    self._count(calls=len(items))
                    outcomes = await asyncio.gather(
                        *(self._one_async(item) for item in items), return_exceptions=True
                    )
                else:
                    outcomes = [exc] * len(items)
        except BaseException:  # cancelled (loop shutting down): so are the waiters
            for r in batch:
                r.future.cancel()
            raise
        finally:
            lane.inflight -= 1
            if lane.pending:
                self._pump(lane, loop)
        for r, outcome in zip(batch, outcomes, strict=True):
            if r.future.done():
                continue
            if isinstance(outcome, BaseException):
                r.future.set_exception(outcome)
            else:
                r.future.set_result(outcome)

    async def _one_async(self, item: PRMItem) -> list[float]:
        return self._checked(await self.inner.ascore_batch([item]), 1)[0]

    # -- sync: threads share one open batch --------------------------------------------------
    def score(self, question: str, steps: Sequence[str]) -> list[float]:
        """Join the open batch (or open one and lead it); block until it is scored."""
        t0 = time.perf_counter()
        with self._lock:
            batch = self._open
            leader = batch is None
            if batch is None:
                batch = self._open = _SyncBatch()
            index = len(batch.items)
            batch.items.append((question, list(steps)))
            batch.t0.append(t0)
            if len(batch.items) >= self.max_batch:
                self._open = None
                batch.full.set()
        if leader:
            self._lead(batch)
        else:
            batch.done.wait()
        assert batch.results is not None
        outcome = batch.results[index]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _lead(self, batch: _SyncBatch) -> None:
        try:
            batch.full.wait(self.max_wait)
            with self._slots if self._slots is not None else contextlib.nullcontext():
                with self._lock:
                    if self._open is batch:
                        self._open = None
                now = time.perf_counter()
                self._count(calls=1, items=len(batch.items), waits=[now - t for t in batch.t0])
                batch.results = self._score_sync(batch.items)
        except BaseException as exc:  # KeyboardInterrupt etc.: never strand the followers
            if batch.results is None:
                batch.results = [exc] * len(batch.items)
            raise
        finally:
            batch.done.set()

    def _score_sync(self, items: list[PRMItem]) -> list[list[float] | BaseException]:
        try:
            return list(self._checked(self.inner.score_batch(items), len(items)))
        except Exception as exc:
            self._count(error=True)
            if not (self.isolate_errors and len(items) > 1):
                return [exc] * len(items)
        self._count(calls=len(items))
        outcomes: list[list[float] | BaseException] = []
        for item in items:
            try:
                outcomes.append(self._checked(self.inner.score_batch([item]), 1)[0])
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


def stats_dict(stats: BatchingStats) -> dict[str, Any]:
    """The stats as a JSON-ready dict (with the derived ratios).

    >>> stats_dict(BatchingStats(2, 8, 2, 5, 0, 1.5, 4.0))["mean_batch_size"]
    4.0
    """
    return {
        "calls": stats.calls,
        "items": stats.items,
        "batches": stats.batches,
        "max_batch_size": stats.max_batch_size,
        "errors": stats.errors,
        "mean_batch_size": round(stats.mean_batch_size, 3),
        "calls_per_item": round(stats.calls_per_item, 4),
        "mean_wait_ms": round(stats.mean_wait_ms, 3),
        "max_wait_ms": round(stats.max_wait_ms, 3),
    }


__all__ = ["BatchingStats", "MicroBatchingPRM", "stats_dict"]
