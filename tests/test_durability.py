"""Nothing is charged twice, or hidden, after a hard kill (SIGKILL) and a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("langgraph.checkpoint.sqlite")

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.durable_run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,  # type: ignore[call-overload]
    )


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sigkill_mid_strong_call_then_resume(tmp_path: Path, kind: str) -> None:
    db, log = str(tmp_path / "trim.sqlite"), tmp_path / "strong.log"
    first = _run([db, str(log), "first", kind])
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{log}.hang").exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the strong call never started"
            time.sleep(0.05)
        time.sleep(0.5)  # the run is now inside the second strong attempt of step 1
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=30)
    resumed = _run([db, str(log), "resume", kind])
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    calls = [json.loads(line) for line in log.read_text().splitlines()]

    # the failed attempt (7 tokens) was recorded before the kill: not made again
    assert [c["phase"] for c in calls] == ["first", "first", "resume"]
    spend = out["spend"]
    # every strong call the provider saw is in the spend: the failed one (7 tokens), the
    # one killed in flight (charged its max_tokens, 16) and the one that answered (3)
    assert spend["strong_calls"] == len(calls) == 3
    assert spend["abandoned_strong_calls"] == 1
    assert spend["strong_tokens"] == 7 + 16 + 3 and spend["strong_tokens_estimated"]
    assert out["authors"] == ["weak", "strong", "weak"]
