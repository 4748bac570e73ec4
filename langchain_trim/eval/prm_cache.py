"""A score cache for PRMs: policies that share a solution prefix share its PRM scores.

In an evaluation, every TRIM-Thr run of a question follows the always-weak run until its
first escalation, and asks the PRM to score the same prefixes again.  The LLM cache
already makes the repeated model calls free; :class:`CachedPRM` does the same for the
PRM, keyed by the PRM's name, the question and the exact steps, in memory or in a SQLite
file that later runs reuse.  Scores are the PRM's own (validated by the graph as usual).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_trim.prm.base import BaseProcessRewardModel, PRMItem, ProcessRewardModel


def _key(name: str, question: str, steps: Sequence[str]) -> str:
    blob = json.dumps([name, question, list(steps)], ensure_ascii=True)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


class CachedPRM(BaseProcessRewardModel):
    """Wrap ``prm`` so that an identical ``(question, steps)`` is scored once.

    Args:
        prm: any process reward model.
        path: a SQLite file shared by runs (``None``: this process only).

    Other attributes (``threshold``, ``encoder``, ...) and step observation are passed
    through to ``prm``.

    >>> from langchain_trim.prm import FunctionPRM
    >>> calls = []
    >>> prm = CachedPRM(FunctionPRM(lambda q, s: calls.append(len(s)) or [0.5] * len(s)))
    >>> prm.score("q", ["a", "b"]), prm.score("q", ["a", "b"]), calls
    ([0.5, 0.5], [0.5, 0.5], [2])
    """

    def __init__(self, prm: ProcessRewardModel, path: str | Path | None = None) -> None:
        self.inner = prm
        self.name = str(getattr(prm, "name", type(prm).__name__))
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, scores TEXT NOT NULL)"
            )
            self._conn.commit()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet: avoid recursion during construction
            raise AttributeError(name)
        return getattr(self.inner, name)

    def observe_step(self, question: str, text: str, logprobs: Sequence[float] | None) -> None:
        observe = getattr(self.inner, "observe_step", None)
        if callable(observe):
            observe(question, text, logprobs)

    def _get(self, key: str) -> list[float] | None:
        if key in self._memory:
            return self._memory[key]
        if self._conn is None:
            return None
        with self._lock:
            row = self._conn.execute("SELECT scores FROM scores WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            scores = [float(x) for x in json.loads(row[0])]
        except (ValueError, TypeError):
            return None  # a damaged row is recomputed
        self._memory[key] = scores
        return scores

    def _put(self, key: str, scores: list[float]) -> None:
        self._memory[key] = scores
        if self._conn is not None:
            with self._lock:
                self._conn.execute(
                    "INSERT OR REPLACE INTO scores (key, scores) VALUES (?, ?)",
                    (key, json.dumps(scores)),
                )
                self._conn.commit()

    def _split(
        self, items: Sequence[PRMItem]
    ) -> tuple[list[list[float] | None], list[int], list[str]]:
        keys = [_key(self.name, q, steps) for q, steps in items]
        found = [self._get(k) for k in keys]
        todo = [i for i, f in enumerate(found) if f is None]
        self.hits += len(items) - len(todo)
        self.misses += len(todo)
        return found, todo, keys

    def _merge(
        self,
        found: list[list[float] | None],
        todo: list[int],
        keys: list[str],
        fresh: list[list[float]],
    ) -> list[list[float]]:
        for i, scores in zip(todo, fresh, strict=True):
            scores = [float(x) for x in scores]
            self._put(keys[i], scores)
            found[i] = scores
        return [f if f is not None else [] for f in found]

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        found, todo, keys = self._split(items)
        fresh = self.inner.score_batch([items[i] for i in todo]) if todo else []
        return self._merge(found, todo, keys, list(fresh))

    async def ascore_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        found, todo, keys = self._split(items)
        fresh = await self.inner.ascore_batch([items[i] for i in todo]) if todo else []
        return self._merge(found, todo, keys, list(fresh))


__all__ = ["CachedPRM"]
