"""A TRIM run on a SQLite checkpoint whose strong model can be killed mid-call.

``python -m tests.durable_run DB LOG first|resume sync|async`` runs (or resumes) thread
``t``; every strong call is logged to LOG.  In the ``first`` phase the first strong call
fails after decoding 7 tokens and the second hangs (after creating ``LOG.hang``) until the
test kills the process; the ``resume`` phase answers every call.  It prints the final
``trim_spend`` as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langgraph.types import RetryPolicy

from langchain_trim import StepGenerationError, StepOutput, ThresholdPolicy, create_trim_graph
from langchain_trim.testing import FakeStepModel, KeywordPRM

WEAK = ["a = 1", "b = 2 BAD", r"So \boxed{2}"]
STRONG = ["A = 1", "B = 2", r"So \boxed{2}"]
STEP_MAX_TOKENS = 16


class ScriptedStrong:
    """A strong step generator that follows the phase's script and logs every call."""

    name = "scripted-strong"

    def __init__(self, log: Path, phase: str) -> None:
        self.log, self.phase = log, phase

    def _call(self, prefix: Sequence[str]) -> bool:
        """Log the call; raise on the first, return whether to hang (the second)."""
        n = len(self.log.read_text().splitlines()) + 1 if self.log.exists() else 1
        with self.log.open("a") as fh:
            fh.write(json.dumps({"phase": self.phase, "step": len(prefix), "n": n}) + "\n")
        if self.phase == "first" and n == 1:
            error = StepGenerationError("strong model down", role="strong", step_index=len(prefix))
            error.tokens = 7
            raise error
        if self.phase == "first" and n == 2:
            Path(f"{self.log}.hang").touch()
            return True
        return False

    def generate(self, question: str, prefix: Sequence[str], **kw: Any) -> StepOutput:
        if self._call(prefix):
            time.sleep(120)  # killed here, mid-call
        return StepOutput(STRONG[len(prefix)], 3, False, "delimiter", "scripted-strong")

    async def agenerate(self, question: str, prefix: Sequence[str], **kw: Any) -> StepOutput:
        if self._call(prefix):
            await asyncio.sleep(120)  # killed here, mid-call (an async client awaits I/O)
        return StepOutput(STRONG[len(prefix)], 3, False, "delimiter", "scripted-strong")


def build(log: Path, phase: str) -> Any:
    return create_trim_graph(
        FakeStepModel(steps=WEAK),
        ScriptedStrong(log, phase),
        KeywordPRM({"BAD": 0.1}),
        ThresholdPolicy(0.5),
        step_max_tokens=STEP_MAX_TOKENS,
        strong_retry=RetryPolicy(max_attempts=3, initial_interval=0.0, jitter=False),
    )


def main() -> None:
    db, log, phase, kind = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    config = {"configurable": {"thread_id": "t"}}
    inputs = {"question": "q"} if phase == "first" else None
    if kind == "sync":
        from langgraph.checkpoint.sqlite import SqliteSaver

        saver = SqliteSaver(sqlite3.connect(db, check_same_thread=False))
        out = build(log, phase).compile(checkpointer=saver).invoke(inputs, config)
    else:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async def run() -> Any:
            async with AsyncSqliteSaver.from_conn_string(db) as saver:
                graph = build(log, phase).compile(checkpointer=saver)
                return await graph.ainvoke(inputs, config)

        out = asyncio.run(run())
    print(
        json.dumps(
            {"spend": out["trim_spend"], "authors": [s["author"] for s in out["trim_steps"]]}
        )
    )


if __name__ == "__main__":
    main()
