"""One routing rule: the graph and the simulator decide alike on the same scores."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_trim import ThresholdPolicy, create_trim_graph
from langchain_trim.lab.sim import SimEnv
from langchain_trim.policies.calibration import synthetic_calibration
from langchain_trim.prm import FunctionPRM
from langchain_trim.testing import FakeStepModel


def _words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(max(n, 1)))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    threshold=st.floats(0.05, 0.95, allow_nan=False),
    budget=st.one_of(st.none(), st.integers(1, 600)),
    cap=st.integers(20, 120),
)
def test_graph_and_simulator_take_the_same_decisions(
    seed: int, threshold: float, budget: int | None, cap: int
) -> None:
    env = SimEnv(synthetic_calibration(strong_tokens=200), step_max_tokens=cap)
    policy = ThresholdPolicy(threshold)
    sim = env.episode(policy, 0, seed=seed, budget=budget, record_steps=True, score_all=True)
    assert sim.trace is not None
    steps = sim.trace["steps"]
    drafts = [s["draft_tokens"] for s in steps]
    strong_lengths = [s["tokens"] if s["author"] == "strong" else 1 for s in steps]
    scores = [s["draft_score"] for s in steps]

    weak = FakeStepModel(steps=[_words(n, f"w{i}_") for i, n in enumerate(drafts)])
    strong = FakeStepModel(steps=[_words(n, f"s{i}_") for i, n in enumerate(strong_lengths)])

    def prm(question: str, texts: Sequence[str]) -> list[float]:
        out = []
        for text in texts:
            head = text.split("_", 1)[0]
            i = int(head[1:]) if head[:1] == "w" else -1
            out.append(scores[i] if i >= 0 else 1.0)
        return out

    graph = create_trim_graph(
        weak,
        strong,
        FunctionPRM(prm),
        policy,
        budget=budget if budget is None or budget >= cap else None,
        step_max_tokens=cap,
        max_steps=env.max_steps,
    ).compile()
    if budget is not None and budget < cap:
        return  # the graph refuses such a budget up front; the simulator blocks every step
    out = graph.invoke({"question": "q"})
    got = [(s["author"], s["budget_blocked"]) for s in out["trim_steps"]]
    want = [(s["author"], s["budget_blocked"]) for s in steps]
    assert got == want
