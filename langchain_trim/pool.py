"""Spread TRIM over several model servers: one server per question, least busy first.

With one vLLM server per GPU, the questions in flight (``trim eval --concurrency``,
``graph.abatch``, a LangGraph server) should keep every server busy, and all the steps of
one question should go to the same server, because every call re-sends the accepted
steps and only that server has them in its prefix cache.  So a pool assigns a question
to a member on its first call (the member with the fewest calls in flight, ties in turn)
and keeps it there (``sticky``; the last ``max_keys`` questions are remembered).

* :class:`PooledStepGenerator` is a :class:`~langchain_trim.generation.StepGenerator`
  over several chat models (pass it as ``draft_model`` / ``strong_model``);
* :class:`PooledPRM` is a :class:`~langchain_trim.prm.ProcessRewardModel` over several
  PRMs (single requests stick to the question's member, batches go to the least busy);
* :func:`openai_compatible_pool` and :func:`vllm_prm_pool` build them from server URLs.

Connection pooling, timeouts and retries stay with each member: ``ChatOpenAI`` keeps one
keep-alive HTTP client per member and retries connection errors, 429 and 5xx
(``max_retries``) within ``timeout``; :class:`~langchain_trim.prm.VLLMServerPRM` keeps
one ``httpx`` pool per member (``max_concurrency`` connections), retries connection
errors and 5xx with exponential backoff, and fails fast on 4xx.  A pool does not change
what is computed: the same question gets the same answer from any member serving the
same model.  See ``docs/scale_out.md``.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any, Generic, Literal, TypeVar

from langchain_trim.generation import DelegatingStepGenerator, StepGenerator, as_step_generator
from langchain_trim.models import ChatModelLike
from langchain_trim.prm.base import PRMItem, ProcessRewardModel

Strategy = Literal["least_busy", "round_robin"]
T = TypeVar("T")


class EndpointPool(Generic[T]):
    """Pick a member per key: sticky, least busy (or round robin); thread-safe.

    >>> pool = EndpointPool(["a", "b"])
    >>> [pool.members[pool.acquire(q)] for q in ["q1", "q2", "q1"]]
    ['a', 'b', 'a']
    >>> pool.stats()["calls"]
    [2, 1]
    """

    def __init__(
        self,
        members: Sequence[T],
        *,
        strategy: Strategy = "least_busy",
        sticky: bool = True,
        max_keys: int = 10_000,
    ) -> None:
        if not members:
            raise ValueError("a pool needs at least one member")
        if strategy not in ("least_busy", "round_robin"):
            raise ValueError(f"strategy must be 'least_busy' or 'round_robin', got {strategy!r}")
        self.members = list(members)
        self.strategy: Strategy = strategy
        self.sticky = sticky
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._inflight = [0] * len(self.members)
        self._calls = [0] * len(self.members)
        self._cursor = 0
        self._keys: OrderedDict[str, int] = OrderedDict()

    def _choose(self) -> int:
        n = len(self.members)
        order = [(self._cursor + k) % n for k in range(n)]
        index = order[0]
        if self.strategy == "least_busy":
            index = min(order, key=lambda i: self._inflight[i])
        self._cursor = (index + 1) % n
        return index

    def acquire(self, key: str | None = None) -> int:
        """Index of the member for ``key`` (``None``: no stickiness); counts a call."""
        with self._lock:
            index = self._keys.get(key) if self.sticky and key is not None else None
            if index is None:
                index = self._choose()
                if self.sticky and key is not None:
                    self._keys[key] = index
                    while len(self._keys) > self.max_keys:
                        self._keys.popitem(last=False)
            elif key is not None:
                self._keys.move_to_end(key)
            self._inflight[index] += 1
            self._calls[index] += 1
            return index

    def release(self, index: int) -> None:
        """The call on member ``index`` is over."""
        with self._lock:
            self._inflight[index] -= 1

    @contextlib.contextmanager
    def lease(self, key: str | None = None) -> Iterator[T]:
        """``with pool.lease(question) as member: ...``"""
        index = self.acquire(key)
        try:
            yield self.members[index]
        finally:
            self.release(index)

    def stats(self) -> dict[str, list[int]]:
        """Calls made and calls in flight, per member, and questions pinned to each."""
        with self._lock:
            pinned = [0] * len(self.members)
            for index in self._keys.values():
                pinned[index] += 1
            return {
                "calls": list(self._calls),
                "inflight": list(self._inflight),
                "pinned": pinned,
            }


def _common_name(names: Sequence[str]) -> str:
    unique = list(dict.fromkeys(names))
    return unique[0] if len(unique) == 1 else "|".join(unique)


class PooledStepGenerator(DelegatingStepGenerator):
    """A step generator that sends each question to one of several models.

    Args:
        models: chat models (or step generators), typically the same model served at
            several URLs (see :func:`openai_compatible_pool`).
        strategy: ``"least_busy"`` (fewest calls in flight, ties in turn) or
            ``"round_robin"``.
        sticky: keep every step of a question on the member that wrote its first step.
        role / run_name: as the graph names them: ``"draft"`` → ``trim.draft``,
            ``"strong"`` → ``trim.strong``.
        **kwargs: :class:`~langchain_trim.generation.ChatStepGenerator` settings for
            every member (``mode``, ``timeout``, ``delimiter``, ``token_counter``); the
            graph does not apply its own to a step generator, so pass them here.

    >>> from langchain_trim.testing import FakeStepModel
    >>> a, b = FakeStepModel(steps=["x = 1"]), FakeStepModel(steps=["x = 1"])
    >>> gen = PooledStepGenerator([a, b])
    >>> [gen.generate(q, [], max_tokens=8).text for q in ("q1", "q2")]
    ['x = 1', 'x = 1']
    >>> len(a.calls), len(b.calls)
    (1, 1)
    """

    def __init__(
        self,
        models: Sequence[ChatModelLike | StepGenerator],
        *,
        strategy: Strategy = "least_busy",
        sticky: bool = True,
        role: str = "draft",
        run_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        generators = [
            as_step_generator(m, role=role, run_name=run_name or f"trim.{role}", **kwargs)
            for m in models
        ]
        self.pool: EndpointPool[StepGenerator] = EndpointPool(
            generators, strategy=strategy, sticky=sticky
        )
        self.role = role
        self.name = _common_name([g.name for g in generators])

    def __repr__(self) -> str:
        return f"PooledStepGenerator({self.name!r}, members={len(self.pool.members)})"

    def _delegate(
        self, question: str, prefix: Sequence[str], max_tokens: int
    ) -> contextlib.AbstractContextManager[StepGenerator]:
        return self.pool.lease(question)


class PooledPRM:
    """A PRM that spreads requests over several PRMs (e.g. one vLLM server per GPU).

    Single requests stick to their question's member; batches (from
    :class:`~langchain_trim.prm.batching.MicroBatchingPRM`, with ``max_concurrency`` set
    to the number of members) go to the least busy member.

    >>> from langchain_trim.testing import KeywordPRM
    >>> a, b = KeywordPRM({"bad": 0.1}), KeywordPRM({"bad": 0.1})
    >>> prm = PooledPRM([a, b])
    >>> prm.score("q1", ["ok", "bad"]), prm.score("q2", ["bad"])
    ([0.9, 0.1], [0.1])
    >>> len(a.calls), len(b.calls)
    (1, 1)
    """

    def __init__(
        self,
        prms: Sequence[ProcessRewardModel],
        *,
        strategy: Strategy = "least_busy",
        sticky: bool = True,
    ) -> None:
        self.pool: EndpointPool[ProcessRewardModel] = EndpointPool(
            prms, strategy=strategy, sticky=sticky
        )
        self.name = _common_name([str(getattr(p, "name", type(p).__name__)) for p in prms])

    def __repr__(self) -> str:
        return f"PooledPRM({self.name!r}, members={len(self.pool.members)})"

    def score(self, question: str, steps: Sequence[str]) -> list[float]:
        with self.pool.lease(question) as prm:
            return prm.score(question, steps)

    async def ascore(self, question: str, steps: Sequence[str]) -> list[float]:
        with self.pool.lease(question) as prm:
            return await prm.ascore(question, steps)

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        with self.pool.lease() as prm:
            return prm.score_batch(items)

    async def ascore_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        with self.pool.lease() as prm:
            return await prm.ascore_batch(items)

    def close(self) -> None:
        """Close every member that can be closed (HTTP clients)."""
        for prm in self.pool.members:
            close = getattr(prm, "close", None)
            if callable(close):
                close()


def _split_urls(urls: str | Sequence[str]) -> list[str]:
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    out = [u.strip() for u in items if u.strip()]
    if not out:
        raise ValueError("no server URLs given")
    return out


def openai_compatible_pool(
    model: str,
    base_urls: str | Sequence[str],
    *,
    role: str = "draft",
    strategy: Strategy = "least_busy",
    sticky: bool = True,
    prefill: bool = True,
    timeout: float = 120.0,
    max_retries: int = 2,
    step_timeout: float | None = None,
    **openai_kwargs: Any,
) -> PooledStepGenerator:
    """One :func:`~langchain_trim.remote.openai_compatible` model per URL, pooled.

    ``base_urls`` is a list or a comma-separated string.  ``timeout``/``max_retries`` are
    per HTTP request (the client's own retries); ``step_timeout`` caps a whole step.
    """
    from langchain_trim.remote import openai_compatible

    models = [
        openai_compatible(
            model, url, prefill=prefill, timeout=timeout, max_retries=max_retries, **openai_kwargs
        )
        for url in _split_urls(base_urls)
    ]
    return PooledStepGenerator(
        models, role=role, strategy=strategy, sticky=sticky, timeout=step_timeout
    )


def vllm_prm_pool(
    base_urls: str | Sequence[str],
    model: str,
    *,
    strategy: Strategy = "least_busy",
    sticky: bool = True,
    **prm_kwargs: Any,
) -> PooledPRM:
    """One :class:`~langchain_trim.prm.VLLMServerPRM` per URL, pooled."""
    from langchain_trim.prm.vllm_prm import VLLMServerPRM

    prms = [VLLMServerPRM(url, model, **prm_kwargs) for url in _split_urls(base_urls)]
    return PooledPRM(prms, strategy=strategy, sticky=sticky)


__all__ = [
    "EndpointPool",
    "PooledPRM",
    "PooledStepGenerator",
    "Strategy",
    "openai_compatible_pool",
    "vllm_prm_pool",
]
