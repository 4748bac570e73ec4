"""Speed and scale of the TRIM graph itself, measured with fake models of fixed latency.

Run ``python -m benchmarks.speed`` (a few minutes; ``--quick`` for a smoke run) to write
``benchmarks/results/speed.json`` and ``speed.png``.  Every figure is a ratio or a
difference of runs made side by side in the same process, alternating, repeated, with
medians, because the machine is shared and absolute times are noisy.

a. **Router overhead**: the compiled graph against a bare Python loop that makes the
   same model and PRM calls in the same order (same ``ChatStepGenerator``, PRM and
   policy; the call sequences are checked equal).  With 20 ms fakes: the wall-time ratio
   (goal <= 1.05x); with zero-latency fakes: microseconds of pure router time per step
   (goal <= 2 ms/step).
b. **Concurrency**: N = 1, 8, 32, 128 questions through ``graph.abatch`` with async
   fakes of fixed latency that overlap freely (goal: wall(N=32) <= 1.3 x wall(N=1)).
c. **PRM micro-batching**: N = 32 runs in flight, a "GPU-like" PRM (one call at a time,
   cost = fixed + per-item) with and without :class:`MicroBatchingPRM`: PRM calls per
   scored step (goal <= 1/8), added wait, wall time.
d. **LLM cache**: a 5-threshold sweep on the same problems with the SQLite cache
   against 5 independent runs without it: model calls and output tokens generated.
   Fake scripted models (deterministic, like seeded local models).
e. ``--real``: :func:`real_models` on the embedded llama.cpp models (each model's decode
   speed during an eval vs alone, where the eval's time goes, peak RSS of ``trim solve``,
   time to first step); not run by default, and its numbers go to ``speed_real.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from pydantic import PrivateAttr

from langchain_trim import create_trim_graph
from langchain_trim.generation import ChatStepGenerator, StepGenerator
from langchain_trim.policies import RouteObservation, RoutingPolicy, ThresholdPolicy
from langchain_trim.prm.base import BaseProcessRewardModel, PRMItem, ProcessRewardModel
from langchain_trim.prm.batching import MicroBatchingPRM, stats_dict
from langchain_trim.steps import has_final_answer
from langchain_trim.testing import FakeStepModel, KeywordPRM

RESULTS_DIR = Path(__file__).parent / "results"
QUESTION = "Tom has 3 bags of 4 apples. How many apples does he have?"
N_STEPS = 10
WEAK_STEPS = [
    f"Step {i}: we carry the running total forward" + (" BAD" if i % 3 == 1 else "")
    for i in range(N_STEPS - 1)
] + [r"So the answer is \boxed{12}."]
STRONG_STEPS = [f"Step {i}: the strong model writes this step" for i in range(N_STEPS - 1)] + [
    r"Therefore \boxed{12}."
]
STEP_MAX_TOKENS = 256
MAX_STEPS = 30


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


# -- a. router overhead ---------------------------------------------------------------------
def _fakes(latency: float) -> tuple[FakeStepModel, FakeStepModel, KeywordPRM]:
    weak = FakeStepModel(steps=WEAK_STEPS, model_name="weak", latency=latency)
    strong = FakeStepModel(steps=STRONG_STEPS, model_name="strong", latency=latency)
    return weak, strong, KeywordPRM({"BAD": 0.1}, default=0.9, latency=latency)


def _gens(weak: FakeStepModel, strong: FakeStepModel) -> tuple[StepGenerator, StepGenerator]:
    return (
        ChatStepGenerator(weak, role="draft", run_name="trim.draft"),
        ChatStepGenerator(strong, role="strong", run_name="trim.strong"),
    )


def bare_loop(
    draft: StepGenerator,
    strong: StepGenerator,
    prm: ProcessRewardModel,
    policy: RoutingPolicy,
    question: str,
) -> list[str]:
    """TRIM without a graph: the same calls, in the same order, and nothing else."""
    steps: list[str] = []
    scores: list[float | None] = []
    tokens: list[int] = []
    spent = 0
    for index in range(MAX_STEPS):
        out = draft.generate(question, steps, max_tokens=STEP_MAX_TOKENS)
        if not out.text:
            break
        obs = RouteObservation(
            index, None, tuple(scores), out.tokens, tuple(tokens), spent, None, MAX_STEPS
        )
        if policy.needs_score(obs):
            obs = replace(obs, score=prm.score(question, [*steps, out.text])[-1])
        text, stop, n = out.text, out.stop, out.tokens
        if policy.decide(obs).action == "escalate":
            fixed = strong.generate(question, steps, max_tokens=STEP_MAX_TOKENS)
            if fixed.text:
                text, stop, n = fixed.text, fixed.stop, fixed.tokens
                spent += n
        steps.append(text)
        scores.append(obs.score)
        tokens.append(n)
        if has_final_answer(text) or stop in ("eos", "length") or index + 1 >= MAX_STEPS:
            break
    return steps


async def abare_loop(
    draft: StepGenerator,
    strong: StepGenerator,
    prm: ProcessRewardModel,
    policy: RoutingPolicy,
    question: str,
) -> list[str]:
    """Async :func:`bare_loop`."""
    steps: list[str] = []
    scores: list[float | None] = []
    tokens: list[int] = []
    spent = 0
    for index in range(MAX_STEPS):
        out = await draft.agenerate(question, steps, max_tokens=STEP_MAX_TOKENS)
        if not out.text:
            break
        obs = RouteObservation(
            index, None, tuple(scores), out.tokens, tuple(tokens), spent, None, MAX_STEPS
        )
        if policy.needs_score(obs):
            obs = replace(obs, score=(await prm.ascore(question, [*steps, out.text]))[-1])
        text, stop, n = out.text, out.stop, out.tokens
        if policy.decide(obs).action == "escalate":
            fixed = await strong.agenerate(question, steps, max_tokens=STEP_MAX_TOKENS)
            if fixed.text:
                text, stop, n = fixed.text, fixed.stop, fixed.tokens
                spent += n
        steps.append(text)
        scores.append(obs.score)
        tokens.append(n)
        if has_final_answer(text) or stop in ("eos", "length") or index + 1 >= MAX_STEPS:
            break
    return steps


def router_overhead(latency: float, repeats: int, *, use_async: bool) -> dict[str, Any]:
    """Alternate graph and loop runs ``repeats`` times; medians and the paired ratio."""
    weak, strong, prm = _fakes(latency)
    policy = ThresholdPolicy(0.5)
    graph = create_trim_graph(
        weak, strong, prm, policy, step_max_tokens=STEP_MAX_TOKENS, max_steps=MAX_STEPS
    ).compile(name="trim")
    draft_gen, strong_gen = _gens(weak, strong)

    def calls() -> tuple[list[int], list[int], list[int]]:
        return list(weak.calls), list(strong.calls), list(prm.calls)

    def clear() -> None:
        weak.calls.clear()
        strong.calls.clear()
        prm.calls.clear()

    async def arun_graph() -> list[str]:
        out = await graph.ainvoke({"question": QUESTION})
        return [s["text"] for s in out["trim_steps"]]

    def run_graph() -> list[str]:
        if use_async:
            return asyncio.run(arun_graph())
        out = graph.invoke({"question": QUESTION})
        return [s["text"] for s in out["trim_steps"]]

    def run_loop() -> list[str]:
        if use_async:
            return asyncio.run(abare_loop(draft_gen, strong_gen, prm, policy, QUESTION))
        return bare_loop(draft_gen, strong_gen, prm, policy, QUESTION)

    # warm up both, and check they make the same calls and write the same solution
    clear()
    graph_steps = run_graph()
    graph_calls = calls()
    clear()
    loop_steps = run_loop()
    if graph_steps != loop_steps or calls() != graph_calls:
        raise AssertionError("graph and bare loop differ; the comparison would be unfair")
    t_graph: list[float] = []
    t_loop: list[float] = []
    for i in range(repeats):
        order: list[tuple[Callable[[], list[str]], list[float]]] = [
            (run_graph, t_graph),
            (run_loop, t_loop),
        ]
        for fn, sink in order if i % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - t)
    n_steps = len(graph_steps)
    ratios = [g / b for g, b in zip(t_graph, t_loop, strict=True)]
    diffs = [(g - b) / n_steps for g, b in zip(t_graph, t_loop, strict=True)]
    return {
        "latency_s": latency,
        "async": use_async,
        "steps": n_steps,
        "model_calls_per_run": len(graph_calls[0]) + len(graph_calls[1]),
        "prm_calls_per_run": len(graph_calls[2]),
        "repeats": repeats,
        "graph_ms_median": round(1000 * _median(t_graph), 3),
        "loop_ms_median": round(1000 * _median(t_loop), 3),
        "ratio_median": round(_median(ratios), 4),
        "overhead_us_per_step_median": round(1e6 * _median(diffs), 1),
    }


# -- b. concurrency --------------------------------------------------------------------------
def _script(i: int) -> tuple[list[str], list[str]]:
    """Question ``i``'s weak and strong scripts: 10 steps, 3 slips in varied places.

    Every question makes the same number of calls (so wall(N) compares with wall(1)), but
    the slips, hence the escalations, fall on different steps: the runs drift apart the
    way real ones do.
    """
    bad = {(i + 3 * k + 1) % (N_STEPS - 1) for k in range(3)}
    weak = [
        f"Step {k} of question {i}: carry the total" + (" BAD" if k in bad else "")
        for k in range(N_STEPS - 1)
    ] + [rf"So \boxed{{{i}}}."]
    strong = [f"Step {k} of question {i}: the strong model's step" for k in range(N_STEPS - 1)]
    return weak, [*strong, rf"Therefore \boxed{{{i}}}."]


def workload(n: int) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """``n`` distinct questions with their weak and strong scripts."""
    questions = [f"Question {i}: what is {i} + 0?" for i in range(n)]
    weak = {q: _script(i)[0] for i, q in enumerate(questions)}
    strong = {q: _script(i)[1] for i, q in enumerate(questions)}
    return questions, weak, strong


def _responder(scripts: dict[str, list[str]]) -> Callable[[str, Sequence[str]], str | None]:
    def answer(question: str, accepted: Sequence[str]) -> str | None:
        script = scripts[question]
        return script[len(accepted)] if len(accepted) < len(script) else None

    return answer


def _concurrency_graph(
    n: int, latency: float, prm: ProcessRewardModel | None = None
) -> tuple[Any, list[str]]:
    questions, weak_steps, strong_steps = workload(n)
    # responders, not step mappings: a fake reprs its ``steps`` on every call, which
    # would make the fakes' own cost grow with N
    weak = FakeStepModel(responder=_responder(weak_steps), model_name="weak", latency=latency)
    strong = FakeStepModel(responder=_responder(strong_steps), model_name="strong", latency=latency)
    scorer = prm if prm is not None else KeywordPRM({"BAD": 0.1}, latency=latency)
    graph = create_trim_graph(
        weak, strong, scorer, ThresholdPolicy(0.5), step_max_tokens=STEP_MAX_TOKENS
    ).compile(name="trim")
    return graph, questions


async def _abatch_wall(graph: Any, questions: list[str]) -> tuple[float, list[dict[str, Any]]]:
    t = time.perf_counter()
    # abatch fills in LangChain's recursion_limit of 25 (LangGraph's own default is 10007);
    # a TRIM step takes up to 4 supersteps, so give it room for MAX_STEPS.
    config: Any = {"recursion_limit": 4 * MAX_STEPS + 10}
    outs = await graph.abatch([{"question": q} for q in questions], config)
    return time.perf_counter() - t, outs


def concurrency(ns: Sequence[int], latency: float, repeats: int) -> dict[str, Any]:
    """Wall time of ``graph.abatch`` over N questions, rounds interleaved across N."""
    setups = {n: _concurrency_graph(n, latency) for n in ns}
    walls: dict[int, list[float]] = {n: [] for n in ns}
    steps: dict[int, int] = {}

    async def main() -> None:
        for r in range(repeats + 1):
            for n in ns if r % 2 == 0 else list(ns)[::-1]:
                wall, outs = await _abatch_wall(*setups[n])
                steps[n] = sum(len(o["trim_steps"]) for o in outs)
                if r:  # round 0 warms up
                    walls[n].append(wall)

    asyncio.run(main())
    base = _median(walls[ns[0]])
    rows = []
    for n in ns:
        med = _median(walls[n])
        rows.append(
            {
                "n": n,
                "wall_ms_median": round(1000 * med, 1),
                "ratio_to_n1": round(med / base, 3),
                "steps": steps[n],
                "questions_per_s": round(n / med, 1),
            }
        )
    return {"latency_s": latency, "repeats": repeats, "rows": rows}


def runner_concurrency(ns: Sequence[int], latency: float, repeats: int) -> dict[str, Any]:
    """The same through :func:`~langchain_trim.eval.runner.arun_eval` (traces on disk)."""
    from langchain_trim.eval.datasets import Problem
    from langchain_trim.eval.runner import arun_eval

    walls: dict[int, list[float]] = {n: [] for n in ns}

    async def main() -> None:
        for r in range(repeats + 1):
            for n in ns:
                graph, questions = _concurrency_graph(n, latency)
                problems = [Problem(f"p{i}", q, str(i)) for i, q in enumerate(questions)]
                with tempfile.TemporaryDirectory() as out:
                    t = time.perf_counter()
                    await arun_eval(
                        problems,
                        ["thr:0.5"],
                        out_dir=out,
                        make_graph=lambda _policy, g=graph: g,
                        concurrency=n,
                        progress=False,
                    )
                    if r:
                        walls[n].append(time.perf_counter() - t)

    asyncio.run(main())
    base = _median(walls[ns[0]])
    return {
        "latency_s": latency,
        "repeats": repeats,
        "rows": [
            {
                "n": n,
                "wall_ms_median": round(1000 * _median(walls[n]), 1),
                "ratio_to_n1": round(_median(walls[n]) / base, 3),
            }
            for n in ns
        ],
    }


# -- c. PRM micro-batching -------------------------------------------------------------------
class GPULikePRM(BaseProcessRewardModel):
    """A PRM on one accelerator: one call at a time, cost = fixed + per item.

    Scores like :class:`~langchain_trim.testing.KeywordPRM` (``BAD`` → 0.1, else 0.9).
    """

    name = "gpu-like"

    def __init__(self, fixed_s: float = 0.02, per_item_s: float = 0.0005) -> None:
        self.fixed_s = fixed_s
        self.per_item_s = per_item_s
        self.calls = 0
        self.items = 0
        self._locks: dict[int, asyncio.Lock] = {}

    @staticmethod
    def _scores(items: Sequence[PRMItem]) -> list[list[float]]:
        return [[0.1 if "BAD" in s else 0.9 for s in steps] for _, steps in items]

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        raise NotImplementedError("async only in this benchmark")

    async def ascore_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        loop = id(asyncio.get_running_loop())
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            self.calls += 1
            self.items += len(items)
            await asyncio.sleep(self.fixed_s + self.per_item_s * len(items))
        return self._scores(items)


def prm_batching(
    n: int, latency: float, repeats: int, max_wait_ms: float, max_concurrency: int | None = 1
) -> dict[str, Any]:
    """N runs in flight with a GPU-like PRM, plain vs micro-batched (alternating)."""
    plain_prm = GPULikePRM()
    batched_inner = GPULikePRM()
    batched_prm = MicroBatchingPRM(
        batched_inner, max_batch=n, max_wait_ms=max_wait_ms, max_concurrency=max_concurrency
    )
    plain = _concurrency_graph(n, latency, plain_prm)
    batched = _concurrency_graph(n, latency, batched_prm)
    walls: dict[str, list[float]] = {"plain": [], "batched": []}
    same = True

    async def main() -> None:
        nonlocal same
        for r in range(repeats + 1):
            batched_prm.reset_stats()
            batched_inner.calls = batched_inner.items = plain_prm.calls = plain_prm.items = 0
            w_plain, out_plain = await _abatch_wall(*plain)
            w_batched, out_batched = await _abatch_wall(*batched)
            same = same and [o["trim_steps"] for o in out_plain] == [
                o["trim_steps"] for o in out_batched
            ]
            if r:
                walls["plain"].append(w_plain)
                walls["batched"].append(w_batched)

    asyncio.run(main())
    stats = batched_prm.stats()  # of the last round
    return {
        "n": n,
        "model_latency_s": latency,
        "prm": {"fixed_s": plain_prm.fixed_s, "per_item_s": plain_prm.per_item_s},
        "max_wait_ms": max_wait_ms,
        "max_batch": n,
        "max_concurrency": max_concurrency,
        "repeats": repeats,
        "results_identical": same,
        "scored_steps": stats.items,
        "prm_calls_plain": plain_prm.calls,
        "prm_calls_batched": batched_inner.calls,
        "calls_per_scored_step": round(batched_inner.calls / max(1, stats.items), 4),
        "batching": stats_dict(stats),
        "wall_ms_plain_median": round(1000 * _median(walls["plain"]), 1),
        "wall_ms_batched_median": round(1000 * _median(walls["batched"]), 1),
        "speedup": round(_median(walls["plain"]) / _median(walls["batched"]), 2),
    }


# -- d. LLM cache ------------------------------------------------------------------------------
def _counting_setting(answers: dict[str, str]) -> Any:
    """The scripted eval setting with models that count what they really generate."""
    from langchain_trim.eval.fake import FakeSetting, ScriptedModel, fake_setting

    class Counting(ScriptedModel):
        _generated_calls: int = PrivateAttr(default=0)
        _generated_tokens: int = PrivateAttr(default=0)

        async def _agenerate(
            self,
            messages: list[BaseMessage],
            stop: list[str] | None = None,
            run_manager: AsyncCallbackManagerForLLMRun | None = None,
            **kwargs: Any,
        ) -> ChatResult:
            result = await super()._agenerate(messages, stop, run_manager, **kwargs)
            usage = getattr(result.generations[0].message, "usage_metadata", None) or {}
            self._generated_calls += 1
            self._generated_tokens += int(usage.get("output_tokens", 0))
            return result

    base = fake_setting(answers, slip_rate=0.5, missed_slip_rate=0.2)
    return FakeSetting(
        weak=Counting(responder=base.weak.responder, model_name="fake-weak"),
        strong=Counting(responder=base.strong.responder, model_name="fake-strong"),
        prm=base.prm,
    )


def _generated(setting: Any) -> dict[str, int]:
    calls = setting.weak._generated_calls + setting.strong._generated_calls
    tokens = setting.weak._generated_tokens + setting.strong._generated_tokens
    return {"calls": calls, "tokens": tokens}


def cache_sweep(n_problems: int, thresholds: Sequence[float]) -> dict[str, Any]:
    """A threshold sweep with the SQLite cache vs one uncached run per threshold."""
    from langchain_trim.eval.datasets import Problem
    from langchain_trim.eval.runner import arun_eval

    problems = [Problem(f"p{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(n_problems)]
    answers = {p.question: p.answer for p in problems}
    specs = [f"thr:{k:g}" for k in thresholds]

    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            cached = _counting_setting(answers)
            summary = await arun_eval(
                problems,
                specs,
                out_dir=Path(tmp) / "sweep",
                setting=cached,
                cache=Path(tmp) / "cache.sqlite",
                concurrency=8,
                progress=False,
            )
            uncached = _counting_setting(answers)
            results_plain: dict[str, list[Any]] = {}
            for spec in specs:  # five independent runs, nothing shared
                one = await arun_eval(
                    problems,
                    [spec],
                    out_dir=Path(tmp) / f"plain-{spec.replace(':', '_')}",
                    setting=uncached,
                    concurrency=8,
                    progress=False,
                )
                results_plain.update(one.results)

        def key(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
            return {
                spec: sorted(
                    (r["problem_id"], r["final_answer"], r["spend"]["strong_tokens"]) for r in rows
                )
                for spec, rows in results.items()
            }

        with_cache = _generated(cached)
        without = _generated(uncached)
        assert summary.cache is not None
        return {
            "problems": n_problems,
            "thresholds": list(thresholds),
            "fake_models": True,
            "with_cache": {
                **with_cache,
                "hits": summary.cache.hits,
                "misses": summary.cache.misses,
            },
            "without_cache": without,
            "calls_ratio": round(with_cache["calls"] / without["calls"], 3),
            "tokens_ratio": round(with_cache["tokens"] / without["tokens"], 3),
            "results_identical": key(summary.results) == key(results_plain),
        }

    return asyncio.run(main())


# -- e. real models (--real) -------------------------------------------------------------------
REAL_QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)


def _peak_rss_of(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd`` in a fresh child; return (peak RSS GB, seconds, exit code)."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "dt = time.perf_counter() - t\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, dt, rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True
    )
    kb, seconds, rc = out.stdout.split()
    return int(kb) / 1e6, float(seconds), int(rc)


def _cli_time_to_first_step(cmd: list[str]) -> float | None:
    """Seconds from spawning ``trim solve`` to its first printed step line."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = None
    assert proc.stdout is not None
    for line in proc.stdout:
        if first is None and line.lstrip().startswith("step"):
            first = time.perf_counter() - t
    proc.wait()
    return first


class _CallTimer(BaseCallbackHandler):
    """Wall time of every model call (by run name) and of every PRM call, from callbacks.

    Model calls also report llama.cpp's own split (``response_metadata["timings"]``):
    prompt evaluation vs decoding.
    """

    run_inline = True

    def __init__(self) -> None:
        self.open: dict[Any, tuple[str, float]] = {}
        self.totals: dict[str, dict[str, float]] = {}

    def _total(self, name: str) -> dict[str, float]:
        return self.totals.setdefault(
            name,
            {"calls": 0, "wall_s": 0.0, "prompt_s": 0.0, "decode_s": 0.0, "decode_tokens": 0},
        )

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: Any, **kw: Any
    ) -> None:
        self.open[run_id] = (str(kw.get("name") or "model"), time.perf_counter())

    def on_llm_end(self, response: Any, *, run_id: Any, **kw: Any) -> None:
        name, t0 = self.open.pop(run_id, ("model", time.perf_counter()))
        total = self._total(name)
        total["calls"] += 1
        total["wall_s"] += time.perf_counter() - t0
        for gens in response.generations:
            for gen in gens:
                timings = gen.message.response_metadata.get("timings") or {}
                for key in ("prompt_s", "decode_s", "decode_tokens"):
                    total[key] += timings.get(key, 0)

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: Any, **kw: Any) -> None:
        if kw.get("name") == "trim.prm":
            self.open[run_id] = ("trim.prm", time.perf_counter())

    def on_chain_end(self, outputs: Any, *, run_id: Any, **kw: Any) -> None:
        if run_id in self.open:
            name, t0 = self.open.pop(run_id)
            total = self._total(name)
            total["calls"] += 1
            total["wall_s"] += time.perf_counter() - t0


def _raw_decode(model: Any, msgs: list[BaseMessage], n_tokens: int) -> float:
    """Decode tokens/s of ``model`` alone (prompt cached, llama.cpp's own split)."""
    model.invoke(msgs, max_tokens=n_tokens)
    speeds = []
    for _ in range(3):
        t = model.invoke(msgs, max_tokens=n_tokens).response_metadata["timings"]
        speeds.append(t["decode_tokens"] / max(t["decode_s"], 1e-9))
    return _median(speeds)


ROUTE_SPEC = "thr:0.8"
"""TRIM-Thr threshold of the real-model eval: escalates some steps with the shipped probe."""


def real_models(
    *,
    weak: str = "weak",
    strong: str = "strong",
    prm: str = "probe",
    n_problems: int = 3,
    max_steps: int = 8,
    step_max_tokens: int = 96,
    n_tokens: int = 64,
) -> dict[str, Any]:
    """Embedded llama.cpp models: decode speed during an eval vs alone, RSS, first step.

    Needs the embedded models (``make models``) and a quiet CPU.  Smoke-test it with
    ``--real --weak tiny --strong tiny --prm confidence``.
    """
    from langchain_trim.eval.datasets import Problem
    from langchain_trim.eval.runner import arun_eval
    from langchain_trim.generation import build_messages
    from langchain_trim.local.setting import local_setting
    from langchain_trim.policies.registry import make_policy

    t = time.perf_counter()
    # one format for both models, as the committed numbers (and the graph below) use
    setting = local_setting(
        weak=weak, strong=strong, prm=prm, temperature=0.0, strong_step_format="paragraphs"
    )
    for model in {id(setting.weak): setting.weak, id(setting.strong): setting.strong}.values():
        model.load()
    load_s = time.perf_counter() - t

    # raw decoding: each model alone, same prompt as a first step, prefix cached
    msgs = build_messages(REAL_QUESTION, "", 0, mode="prefill")
    raw = {"trim.draft": _raw_decode(setting.weak, msgs, n_tokens)}
    raw["trim.strong"] = (
        raw["trim.draft"]
        if setting.strong is setting.weak
        else _raw_decode(setting.strong, msgs, n_tokens)
    )

    # time to first step, models loaded
    graph = create_trim_graph(
        setting.weak,
        setting.strong,
        setting.prm,
        make_policy(ROUTE_SPEC),
        max_steps=max_steps,
        step_max_tokens=step_max_tokens,
    ).compile(name="trim")

    async def first_step() -> float:
        t0 = time.perf_counter()
        async for chunk in graph.astream({"question": REAL_QUESTION}, stream_mode="custom"):
            if isinstance(chunk, dict) and chunk.get("trim_event") == "step":
                return time.perf_counter() - t0
        return float("nan")

    ttfs_warm = asyncio.run(first_step())

    # an eval (no cache: every token is decoded), every call timed
    timer = _CallTimer()
    problems = [Problem(f"r{i}", f"{REAL_QUESTION} (variant {i})", "72") for i in range(n_problems)]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        summary = asyncio.run(
            arun_eval(
                problems,
                [ROUTE_SPEC],
                out_dir=tmp,
                setting=setting,
                max_steps=max_steps,
                step_max_tokens=step_max_tokens,
                progress=False,
                callbacks=[timer],
            )
        )
        eval_s = time.perf_counter() - t
    rows = summary.results.get(ROUTE_SPEC, [])
    tokens = sum(r["spend"]["weak_tokens"] + r["spend"]["strong_tokens"] for r in rows)
    per_model = {}
    for name, label in (("trim.draft", "weak"), ("trim.strong", "strong")):
        tot = timer.totals.get(name)
        if not tot or not tot["decode_s"]:
            continue
        achieved = tot["decode_tokens"] / tot["decode_s"]
        per_model[label] = {
            "calls": int(tot["calls"]),
            "decode_tokens": int(tot["decode_tokens"]),
            "raw_decode_tokens_per_s": round(raw[name], 1),
            "eval_decode_tokens_per_s": round(achieved, 1),
            "eval_vs_raw": round(achieved / raw[name], 3),
        }
    busy = {name: round(tot["wall_s"] / eval_s, 3) for name, tot in sorted(timer.totals.items())}
    busy["other (router, eval runner, traces)"] = round(1.0 - sum(busy.values()), 3)

    # the CLI: peak RSS and time to first step from a cold process
    trim = str(Path(sys.executable).with_name("trim"))
    cmd = [
        trim,
        "solve",
        REAL_QUESTION,
        "--weak",
        weak,
        "--strong",
        strong,
        "--prm",
        prm,
        "--max-steps",
        str(max_steps),
        "--step-max-tokens",
        str(step_max_tokens),
    ]
    rss_gb, solve_s, rc = _peak_rss_of(cmd)
    ttfs_cold = _cli_time_to_first_step(cmd)
    return {
        "models": {"weak": weak, "strong": strong, "prm": prm},
        "load_s": round(load_s, 2),
        "decode_speed": per_model,
        "share_of_eval_wall_time": busy,
        "eval": {
            "problems": n_problems,
            "tokens": tokens,
            "seconds": round(eval_s, 2),
            "end_to_end_tokens_per_s": round(tokens / eval_s, 1) if eval_s else None,
            "errors": summary.errors,
        },
        "time_to_first_step_s": {
            "warm": round(ttfs_warm, 3),
            "cold_cli": None if ttfs_cold is None else round(ttfs_cold, 3),
        },
        "trim_solve": {
            "peak_rss_gb": round(rss_gb, 3),
            "seconds": round(solve_s, 2),
            "exit_code": rc,
        },
        "notes": (
            "decode_speed: per model, decoded tokens / decoding seconds (llama.cpp's own "
            "split, first token excluded) during a TRIM-Thr eval vs the same model alone on "
            "a cached prompt; goal eval_vs_raw >= 0.9. share_of_eval_wall_time: where the "
            "eval's wall time went (model calls incl. prompt evaluation, PRM calls, and the "
            "rest). end_to_end_tokens_per_s counts weak + strong output tokens over the whole "
            "wall time, PRM and prompts included."
        ),
    }


# -- figure, main ------------------------------------------------------------------------------
def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for series in result["concurrency"]:
        rows = series["rows"]
        ax.plot(
            [r["n"] for r in rows],
            [r["ratio_to_n1"] for r in rows],
            marker="o",
            label=f"graph.abatch, {1000 * series['latency_s']:g} ms/call",
        )
    runner = result.get("runner_concurrency")
    if runner:
        rows = runner["rows"]
        ax.plot(
            [r["n"] for r in rows],
            [r["ratio_to_n1"] for r in rows],
            marker="s",
            linestyle="--",
            label=f"arun_eval, {1000 * runner['latency_s']:g} ms/call",
        )
    ax.axhline(1.3, color="grey", linestyle=":", label="goal at N=32: 1.3x")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("questions in flight (N)")
    ax.set_ylabel("wall(N) / wall(1)")
    ax.set_title("Concurrency: N questions vs one")
    ax.legend(fontsize=8)
    batching = result["prm_batching"]
    names = ["plain", "micro-batched"]
    walls = (
        [b["wall_ms_plain_median"] for b in batching],
        [b["wall_ms_batched_median"] for b in batching],
    )
    ns = [b["n"] for b in batching]
    width = 0.38
    xs = range(len(ns))
    for k, (name, ws) in enumerate(zip(names, walls, strict=True)):
        bx.bar([x + (k - 0.5) * width for x in xs], ws, width, label=name)
    for x, b in zip(xs, batching, strict=True):
        bx.annotate(
            f"{b['calls_per_scored_step']:.3f} calls/step",
            (x + 0.5 * width, b["wall_ms_batched_median"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    bx.set_xticks(list(xs), [f"N={n}" for n in ns])
    bx.set_yscale("log")
    bx.set_ylabel("wall time (ms)")
    bx.set_title("GPU-like PRM (one call at a time): batching")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--real", action="store_true", help="only the real-model measurements")
    parser.add_argument("--weak", default="weak", help="--real: weak embedded model")
    parser.add_argument("--strong", default="strong", help="--real: strong embedded model")
    parser.add_argument("--prm", default="probe", help="--real: PRM of the local setting")
    parser.add_argument("--problems", type=int, default=3, help="--real: eval problems")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if args.real:
        real = real_models(
            weak=args.weak, strong=args.strong, prm=args.prm, n_problems=args.problems
        )
        result = {"machine": machine, "real_models": real}
        (args.out / "speed_real.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return result
    q = args.quick
    result = {"machine": machine, "router_overhead": []}
    for latency, repeats in ((0.0, 10 if q else 100), (0.02, 3 if q else 21)):
        for use_async in (False, True):
            row = router_overhead(latency, repeats, use_async=use_async)
            result["router_overhead"].append(row)
            print("router", row, flush=True)
    ns = (1, 8, 32, 128)
    result["concurrency"] = []
    for latency in (0.02, 0.05, 0.1):
        row = concurrency(ns, latency, 2 if q else 7)
        result["concurrency"].append(row)
        print("concurrency", row, flush=True)
    result["runner_concurrency"] = runner_concurrency(ns, 0.02, 1 if q else 3)
    print("runner", result["runner_concurrency"], flush=True)
    result["prm_batching"] = []
    for n in (8, 32, 128):
        row = prm_batching(n, 0.02, 1 if q or n > 32 else 5, max_wait_ms=5.0)
        result["prm_batching"].append(row)
        print("batching", row, flush=True)
    # the same at N=32 with the timer alone (no limit on batches in flight)
    result["prm_batching_timer_only"] = prm_batching(
        32, 0.02, 1 if q else 5, max_wait_ms=5.0, max_concurrency=None
    )
    print("batching (timer only)", result["prm_batching_timer_only"], flush=True)
    result["cache"] = cache_sweep(10 if q else 50, (0.2, 0.4, 0.5, 0.6, 0.8))
    print("cache", result["cache"], flush=True)
    result["notes"] = (
        "Fake models (FakeStepModel/KeywordPRM) with fixed latency; CPU shared with another "
        "job, so only ratios and differences of interleaved runs in one process are reported "
        "(medians). Router overhead: graph vs a bare loop making the same calls in the same "
        "order. Concurrency: 10-step questions, 3 escalations each at varied steps. "
        "Batching: GPU-like PRM, one call at a time, 20 ms + 0.5 ms/item, "
        "MicroBatchingPRM(max_batch=N, max_wait_ms=5, max_concurrency=1)."
    )
    name = "speed_quick" if q else "speed"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / f"{name}.png")
    print(f"wrote {args.out / (name + '.json')}")
    return result


if __name__ == "__main__":
    main()
