"""Budget control: calibration to a target share, and a batch-global budget never exceeded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_trim import create_trim_graph
from langchain_trim.budget import (
    BudgetedStepGenerator,
    GlobalBudget,
    GlobalBudgetPolicy,
    bisect_monotone,
    calibrate_lambda,
    calibrate_threshold,
    sim_strong_fraction,
    trace_strong_fraction,
)
from langchain_trim.generation import as_step_generator
from langchain_trim.lab.sim import SimEnv
from langchain_trim.policies import RouteObservation, ThresholdPolicy
from langchain_trim.policies.calibration import synthetic_calibration
from langchain_trim.policies.pomdp import PomdpPolicy
from langchain_trim.prm import FunctionPRM
from langchain_trim.testing import FakeStepModel


@settings(max_examples=40, deadline=None)
@given(
    total=st.integers(0, 3000),
    step=st.integers(1, 300),
    ops=st.lists(
        st.lists(st.tuples(st.booleans(), st.floats(0, 1)), max_size=40), min_size=1, max_size=6
    ),
)
def test_global_budget_never_exceeded_under_threads(
    total: int, step: int, ops: list[list[tuple[bool, float]]]
) -> None:
    budget = GlobalBudget(total, step_tokens=step)
    violations: list[dict[str, int]] = []
    barrier = threading.Barrier(len(ops))

    def worker(mine: list[tuple[bool, float]]) -> None:
        barrier.wait()
        for fails, frac in mine:
            if budget.reserve():
                if fails:
                    budget.cancel()
                else:
                    budget.settle(int(frac * step))  # a step uses at most its cap
            snap = budget.snapshot()
            if snap["spent"] + snap["reserved"] > total or snap["available"] < 0:
                violations.append(snap)

    threads = [threading.Thread(target=worker, args=(mine,)) for mine in ops]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not violations
    assert budget.spent <= total and budget.outstanding == 0 and budget.overshoots == 0


@settings(max_examples=15, deadline=None)
@given(total=st.integers(0, 4000), threshold=st.floats(0.0, 1.0), workers=st.integers(1, 4))
def test_global_budget_policy_in_concurrent_simulations(
    total: int, threshold: float, workers: int
) -> None:
    env = SimEnv(synthetic_calibration(strong_tokens=200), step_max_tokens=256)
    budget = GlobalBudget(total, step_tokens=256)
    policy = GlobalBudgetPolicy(ThresholdPolicy(threshold), budget)
    used: list[int] = []
    lock = threading.Lock()

    def worker(indices: Sequence[int]) -> None:
        for i in indices:
            r = env.episode(policy, i, seed=7)
            budget.settle(r.strong_tokens, steps=r.escalations)  # what the generator hook does
            with lock:
                used.append(r.strong_tokens)

    chunks = [range(w, 60, workers) for w in range(workers)]
    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(used) == budget.spent <= total
    assert budget.outstanding == 0


def _words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def _graph_setup(total: int, step_cap: int = 20) -> tuple[object, GlobalBudget]:
    weak = FakeStepModel(steps=[_words(8, f"w{i}_") for i in range(5)] + [r"\boxed{1}"])
    strong = FakeStepModel(steps=[_words(12, f"s{i}_") for i in range(5)] + [r"\boxed{2}"])
    budget = GlobalBudget(total, step_tokens=step_cap)
    strong_gen = BudgetedStepGenerator(
        as_step_generator(strong, role="strong", run_name="trim.strong"), budget
    )

    def score(question: str, steps: Sequence[str]) -> list[float]:
        return [0.1 if text.startswith("w") else 0.9 for text in steps]

    graph = create_trim_graph(
        weak,
        strong_gen,
        FunctionPRM(score),
        GlobalBudgetPolicy(ThresholdPolicy(0.5), budget),
        step_max_tokens=step_cap,
    ).compile()
    return graph, budget


@pytest.mark.parametrize("total", [0, 19, 20, 50, 130, 10_000])
def test_graph_batch_respects_global_budget(total: int) -> None:
    graph, budget = _graph_setup(total)
    outs = graph.batch(  # type: ignore[attr-defined]
        [{"question": f"q{i}"} for i in range(8)],
        config={"max_concurrency": 4, "recursion_limit": 100},
    )
    spent = sum(o["trim_spend"]["strong_tokens"] for o in outs)
    assert spent == budget.spent <= total
    assert budget.outstanding == 0 and budget.unreserved_calls == 0
    if total >= 8 * 5 * 12:
        assert spent == 8 * 5 * 12  # unlimited in practice: every wrong draft is fixed
    reasons = [s["reason"] for o in outs for s in o["trim_steps"]]
    if total < 8 * 5 * 12:
        assert any("global budget exhausted" in r for r in reasons)


def test_async_graph_runs_share_the_budget() -> None:
    graph, budget = _graph_setup(100)

    async def run() -> list[dict[str, object]]:
        return await asyncio.gather(  # type: ignore[no-any-return]
            *(graph.ainvoke({"question": f"q{i}"}, {"recursion_limit": 100}) for i in range(10))  # type: ignore[attr-defined]
        )

    outs = asyncio.run(run())
    spent = sum(o["trim_spend"]["strong_tokens"] for o in outs)  # type: ignore[index]
    assert spent == budget.spent <= 100 and budget.outstanding == 0


def test_per_question_block_reserves_nothing() -> None:
    budget = GlobalBudget(1000, step_tokens=100)
    policy = GlobalBudgetPolicy(ThresholdPolicy(1.0), budget)
    o = RouteObservation(0, None, (), 10, (), 950, 1000, 30)  # 50 left < step cap 100
    assert policy.decide(o).action == "escalate" and budget.outstanding == 0


def test_bisection_finds_closest_point() -> None:
    steps = [0.0, 0.1, 0.3, 0.6, 1.0]
    r = bisect_monotone(lambda k: steps[min(int(k * 5), 4)], 0.5, 0.0, 1.0, tol=1e-3)
    assert r.fraction == 0.6 and r.iterations <= 32
    with pytest.raises(ValueError):
        bisect_monotone(lambda k: k, 1.5, 0.0, 1.0)


@pytest.mark.parametrize("target", [0.1, 0.3, 0.6])
def test_calibrate_threshold_hits_target(target: float) -> None:
    share = sim_strong_fraction(SimEnv(synthetic_calibration()), n_episodes=400, seed=3)
    r = calibrate_threshold(share, target, tol=0.01)
    assert abs(r.fraction - target) <= 0.01
    assert abs(share(ThresholdPolicy(r.value)) - r.fraction) < 1e-12  # reproducible


def test_calibrate_lambda_hits_target() -> None:
    cal = synthetic_calibration()
    share = sim_strong_fraction(SimEnv(cal), n_episodes=300, seed=4)
    r = calibrate_lambda(
        lambda lam: PomdpPolicy(cal, lam, cache_dir=False), share, 0.1, tol=0.02, max_iter=14
    )
    assert abs(r.fraction - 0.1) <= 0.02 and 1e-5 < r.value < 3e-2 and r.iterations > 2


def test_trace_strong_fraction_counts_would_be_escalations() -> None:
    traces = [
        {"steps": [{"draft_score": 0.2, "tokens": 10}, {"draft_score": 0.8, "tokens": 10}]},
        {"steps": [{"draft_score": 0.4, "tokens": 10}]},
    ]
    share = trace_strong_fraction(traces, strong_step_tokens=50, strong_tokens_per_question=100)
    assert share(ThresholdPolicy(0.5)) == pytest.approx((50 + 50) / 2 / 100)
    assert share(ThresholdPolicy(0.3)) == pytest.approx(0.25)
    r = calibrate_threshold(share, 0.25, tol=1e-9)
    assert r.fraction == pytest.approx(0.25)
