"""Embedded-model speed on this machine: load time, tokens/s, peak RSS, PRM latency.

Run: ``python -m benchmarks.models`` (writes ``benchmarks/results/models.json``).
Each model is measured in a fresh subprocess so peak RSS is its own.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "models.json"
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)
STEPS = [
    "In April Natalia sold 48 clips.",
    "In May she sold half as many, 48 / 2 = 24 clips.",
    "Altogether she sold 48 + 24 = 72 clips, so the answer is \\boxed{72}.",
]


def measure_model(name: str, n_tokens: int = 128, repeats: int = 2) -> dict[str, Any]:
    """Runs inside the subprocess."""
    from langchain_trim.generation import build_messages
    from langchain_trim.local import LlamaCppChatModel
    from langchain_trim.prm import ChatJudgePRM

    t0 = time.perf_counter()
    model = LlamaCppChatModel(model=name, temperature=0.0)
    model.load()
    load_s = time.perf_counter() - t0
    msgs = build_messages(QUESTION, "", 0, mode="prefill")
    gen = []
    for _ in range(repeats):
        model.load().llm.reset()  # no prefix cache: measure prefill too
        t = time.perf_counter()
        out = model.invoke(msgs, max_tokens=n_tokens)
        dt = time.perf_counter() - t
        gen.append((out.usage_metadata["output_tokens"], out.usage_metadata["input_tokens"], dt))
    # decode-only speed: same prompt again, prefix cached
    t = time.perf_counter()
    out = model.invoke(msgs, max_tokens=n_tokens)
    decode_s = time.perf_counter() - t
    judge = ChatJudgePRM(model)
    t = time.perf_counter()
    judge.score(QUESTION, STEPS)
    judge_per_step = (time.perf_counter() - t) / len(STEPS)
    return {
        "model": name,
        "file": model.model_name,
        "load_s": round(load_s, 3),
        "prompt_tokens": gen[-1][1],
        "output_tokens": gen[-1][0],
        "tokens_per_s_with_prefill": round(sum(g[0] for g in gen) / sum(g[2] for g in gen), 2),
        "decode_tokens_per_s": round(out.usage_metadata["output_tokens"] / decode_s, 2),
        "judge_s_per_step": round(judge_per_step, 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3),
    }


def measure_confidence_overhead(n: int = 2000) -> float:
    """Seconds per scored step of the free self-confidence PRM (bookkeeping only)."""
    from langchain_trim.prm import SelfConfidencePRM

    prm = SelfConfidencePRM()
    logprobs = [-0.1] * 60
    t = time.perf_counter()
    for i in range(n):
        prm.observe_step("q", f"step {i}", logprobs)
        prm.score("q", [f"step {i}"])
    return (time.perf_counter() - t) / n


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(measure_model(sys.argv[2])))
        return
    rows = []
    for name in ("tiny", "weak", "strong"):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.models", "--one", name],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1])
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "models": rows,
        "self_confidence_s_per_step": measure_confidence_overhead(),
        "notes": (
            "llama.cpp via llama-cpp-python 0.3.36, greedy, 128 new tokens after a GSM8K "
            "prompt; tokens_per_s_with_prefill includes prompt processing from an empty "
            "cache, decode_tokens_per_s reuses the cached prompt; judge = LLM-as-judge PRM "
            "on the same model (one prefill + one token per step); peak RSS of the process."
        ),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
