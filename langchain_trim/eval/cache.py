"""A persistent SQLite LLM cache, so a threshold sweep pays for each shared prefix once.

Every TRIM policy on the same question starts from the same weak draft, and the
embedded models reseed each call, so the same prompt always yields the same step.  With
this cache installed (``set_llm_cache(SQLiteLLMCache(path))`` or a model's ``cache=``),
the always-weak run pays for every first draft and each threshold only pays for the
steps where its trajectory departs from the ones already run.  Entries are keyed by
``(prompt, llm_string)`` exactly as LangChain passes them: the prompt is the serialised
messages, the ``llm_string`` holds the model's identifying parameters, ``stop`` and
``max_tokens``, so a different model, temperature, seed or step cap never hits.

A hit returns the stored generation with its ``usage_metadata`` intact (LangChain only
zeroes ``total_cost``), so the graph still charges a cached strong step to the policy:
cost accounting is identical with and without the cache.

Caveat: a chat model whose ``_identifying_params`` omit what tells it apart from another
(e.g. two scripted fakes that differ only in their script) shares entries with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.load import dumps, loads
from langchain_core.outputs import Generation

from langchain_trim.errors import CacheCorruptError

logger = logging.getLogger(__name__)

OnCorrupt = Literal["move", "raise"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS llm_cache (
    key TEXT PRIMARY KEY,
    prompt TEXT NOT NULL,
    llm_string TEXT NOT NULL,
    generations TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class CacheStats:
    """Hit/miss counters of one cache object (this process only)."""

    hits: int
    misses: int
    writes: int
    entries: int

    @property
    def hit_rate(self) -> float:
        """Share of lookups that hit (0 when nothing was looked up)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


def cache_key(prompt: str, llm_string: str) -> str:
    """sha256 of the pair (prompts can be long; the texts are stored next to the key).

    ``surrogatepass``: a lone surrogate in a prompt still gets a key (same bytes as UTF-8
    for every other text).
    """
    h = hashlib.sha256()
    h.update(prompt.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(llm_string.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _storable(*texts: str) -> bool:
    """SQLite stores UTF-8: a text with a lone surrogate cannot be stored (not cached)."""
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _corrupt_message(path: Path, exc: BaseException) -> str:
    return (
        f"{path} is not a usable SQLite cache ({exc}); delete it, or run with --no-cache "
        "(cache=None)"
    )


def _loads(text: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # loads() is "beta" and warns about allowed_objects
        return loads(text, allowed_objects="core")


class SQLiteLLMCache(BaseCache):
    """LangChain ``BaseCache`` in one SQLite file, safe across threads, with counters.

    A cache only saves time, so it never fails a model call.  A damaged file found when
    opening (``PRAGMA quick_check``) is moved aside as ``<name>.corrupt-<time>`` and a
    fresh cache is started (``on_corrupt="raise"`` raises
    :class:`~langchain_trim.errors.CacheCorruptError` instead); a SQLite error in the
    middle of a run turns the cache off for this object.  Both are logged and kept in
    :attr:`notes`.  Prompts that cannot be stored (a lone surrogate in the text) are
    simply not cached.

    >>> import tempfile, pathlib
    >>> from langchain_core.outputs import Generation
    >>> cache = SQLiteLLMCache(pathlib.Path(tempfile.mkdtemp()) / "c.sqlite")
    >>> cache.lookup("2+2?", "model-a") is None
    True
    >>> cache.update("2+2?", "model-a", [Generation(text="4")])
    >>> cache.lookup("2+2?", "model-a")[0].text, cache.lookup("2+2?", "model-b")
    ('4', None)
    >>> s = cache.stats(); (s.hits, s.misses, s.writes, s.entries)
    (1, 2, 1, 1)
    """

    def __init__(self, path: str | Path, *, on_corrupt: OnCorrupt = "move") -> None:
        if on_corrupt not in ("move", "raise"):
            raise ValueError(f"on_corrupt must be 'move' or 'raise', got {on_corrupt!r}")
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.moved_to: Path | None = None
        """Where a damaged file found at open was moved (``None``: it was fine)."""
        self.failure: str | None = None
        """Why the cache turned itself off mid-run (``None``: it works)."""
        self.notes: list[str] = []
        """One line per recovery (moved file, failure), for the run's report."""
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:
            if on_corrupt == "raise":
                raise CacheCorruptError(_corrupt_message(self.path, exc)) from exc
            self._conn = self._recover(exc)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0)
        try:
            with contextlib.suppress(sqlite3.OperationalError):  # e.g. WAL unsupported
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
            conn.commit()
            check = conn.execute("PRAGMA quick_check").fetchall()
            if [tuple(row) for row in check] != [("ok",)]:
                problems = "; ".join(str(row[0]) for row in check[:3])
                raise sqlite3.DatabaseError(f"quick_check: {problems}")
            conn.execute("SELECT key, generations FROM llm_cache LIMIT 1").fetchall()
        except BaseException:
            conn.close()
            raise
        return conn

    def _recover(self, exc: sqlite3.DatabaseError) -> sqlite3.Connection:
        """Move the damaged file (and its WAL/SHM) aside and start an empty cache."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        dest = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = self.path.with_name(self.path.name + suffix)
                if src.exists():
                    os.replace(src, dest.with_name(dest.name + suffix))
            conn = self._open()
        except (OSError, sqlite3.DatabaseError) as again:
            raise CacheCorruptError(
                f"{_corrupt_message(self.path, exc)} (moving it aside failed: {again})"
            ) from exc
        self.moved_to = dest
        note = f"cache {self.path} was damaged ({exc}); moved to {dest.name}, started empty"
        self.notes.append(note)
        logger.warning(note)
        return conn

    def _fail(self, exc: sqlite3.Error) -> None:
        """Turn the cache off (called with the lock held): every later call is a miss."""
        if self.failure is None:
            self.failure = f"{type(exc).__name__}: {exc}"
            note = (
                f"cache {self.path} failed ({self.failure}); the run goes on without it "
                "(delete the file or use --no-cache)"
            )
            self.notes.append(note)
            logger.warning(note)

    # -- BaseCache -------------------------------------------------------------------
    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Stored generations for the pair, or ``None`` (counted as a miss)."""
        key = cache_key(prompt, llm_string)
        with self._lock:
            row = None
            if self.failure is None:
                try:
                    row = self._conn.execute(
                        "SELECT generations FROM llm_cache WHERE key = ?", (key,)
                    ).fetchone()
                except sqlite3.Error as exc:
                    self._fail(exc)
            if row is None:
                self.misses += 1
                return None
        try:
            generations = [_loads(g) for g in json.loads(row[0])]
        except Exception:  # an unreadable entry (other library version): recompute it
            with self._lock:
                self.misses += 1
            return None
        if not all(isinstance(g, Generation) for g in generations):
            with self._lock:
                self.misses += 1
            return None
        with self._lock:
            self.hits += 1
        return generations

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store (or replace) the generations of the pair."""
        payload = json.dumps([dumps(g) for g in return_val])
        key = cache_key(prompt, llm_string)
        with self._lock:
            if self.failure is not None or not _storable(prompt, llm_string, payload):
                return
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO llm_cache (key, prompt, llm_string, generations) "
                    "VALUES (?, ?, ?, ?)",
                    (key, prompt, llm_string, payload),
                )
                self._conn.commit()
            except sqlite3.Error as exc:
                self._fail(exc)
                return
            self.writes += 1

    def clear(self, **kwargs: Any) -> None:
        """Delete every entry (the counters are kept)."""
        with self._lock:
            self._conn.execute("DELETE FROM llm_cache")
            self._conn.commit()

    # Lookups take microseconds: no executor hop on the async path.
    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return self.lookup(prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        self.update(prompt, llm_string, return_val)

    async def aclear(self, **kwargs: Any) -> None:
        self.clear(**kwargs)

    # -- extras ------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            try:
                return int(self._conn.execute("SELECT COUNT(*) FROM llm_cache").fetchone()[0])
            except sqlite3.Error as exc:
                self._fail(exc)
                return 0

    def stats(self) -> CacheStats:
        """Counters since this object was created, and the number of stored entries."""
        return CacheStats(self.hits, self.misses, self.writes, len(self))

    def reset_stats(self) -> None:
        """Zero the hit/miss/write counters."""
        with self._lock:
            self.hits = self.misses = self.writes = 0

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._conn.close()


@contextlib.contextmanager
def llm_cache(cache: BaseCache | None) -> Iterator[BaseCache | None]:
    """Install ``cache`` as LangChain's global LLM cache for a block, then restore the old one.

    >>> from langchain_core.caches import InMemoryCache
    >>> from langchain_core.globals import get_llm_cache
    >>> with llm_cache(InMemoryCache()) as c:
    ...     get_llm_cache() is c
    True
    >>> get_llm_cache() is None
    True
    """
    previous = get_llm_cache()
    set_llm_cache(cache)
    try:
        yield cache
    finally:
        set_llm_cache(previous)


__all__ = ["CacheStats", "SQLiteLLMCache", "cache_key", "llm_cache"]
