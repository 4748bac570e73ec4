"""The strong-token budget is a hard cap: property tests with random scores and lengths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_trim import InvalidInputError, ThresholdPolicy, create_trim_graph
from langchain_trim.prm import FunctionPRM
from langchain_trim.testing import FakeStepModel


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


trajectories = st.lists(
    st.tuples(
        st.floats(0, 1, allow_nan=False),  # PRM score of the weak draft
        st.integers(1, 40),  # weak step length
        st.integers(1, 60),  # strong step length (may exceed the step cap)
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(
    traj=trajectories,
    budget=st.one_of(st.none(), st.integers(1, 200)),
    threshold=st.floats(0, 1, allow_nan=False),
    step_cap=st.integers(8, 48),
)
def test_budget_never_exceeded_and_policy_followed(
    traj: list[tuple[float, int, int]], budget: int | None, threshold: float, step_cap: int
) -> None:
    weak = FakeStepModel(steps=[words(w, f"w{i}_") for i, (_, w, _) in enumerate(traj)])
    strong = FakeStepModel(steps=[words(s, f"s{i}_") for i, (_, _, s) in enumerate(traj)])

    def score(question: str, steps: Sequence[str]) -> list[float]:
        # a draft of step i gets traj[i][0]; strong steps get 1.0
        out = []
        for i, text in enumerate(steps):
            out.append(traj[i][0] if text.startswith(f"w{i}_") else 1.0)
        return out

    def build() -> Any:
        return create_trim_graph(
            weak,
            strong,
            FunctionPRM(score),
            ThresholdPolicy(threshold),
            budget=budget,
            step_max_tokens=step_cap,
            max_steps=30,
        ).compile()

    if budget is not None and budget < step_cap:  # could never escalate: rejected, loudly
        with pytest.raises(InvalidInputError, match="step_max_tokens"):
            build()
        return
    out = build().invoke({"question": "q"})
    spend = out["trim_spend"]
    steps = out["trim_steps"]

    if budget is not None:
        assert spend["strong_tokens"] <= budget
    assert spend["strong_tokens"] == sum(s["tokens"] for s in steps if s["author"] == "strong")
    assert all(s["tokens"] <= step_cap for s in steps)

    spent = 0
    for s in steps:
        wants = threshold > 0 and (threshold >= 1 or s["draft_score"] < threshold)
        if threshold >= 1:
            assert s["draft_score"] is None  # no PRM call at the extreme
        can = budget is None or budget - spent >= step_cap
        assert (s["author"] == "strong") == (wants and can)
        assert s["budget_blocked"] == (wants and not can)
        if s["author"] == "strong":
            spent += s["tokens"]
    assert spend["budget_blocked"] == sum(s["budget_blocked"] for s in steps)


def test_budget_from_state_overrides_factory_and_blocks() -> None:
    weak = FakeStepModel(steps=[words(5, "w") for _ in range(5)] + [r"\boxed{1}"])
    strong = FakeStepModel(steps=[words(10, "s") for _ in range(6)])
    graph = create_trim_graph(
        weak, strong, None, ThresholdPolicy(1.0), budget=1000, step_max_tokens=10
    ).compile()
    out = graph.invoke({"question": "q", "trim_budget": 25})
    authors = [s["author"] for s in out["trim_steps"]]
    assert authors[:2] == ["strong", "strong"] and "strong" not in authors[2:]
    assert out["trim_spend"]["strong_tokens"] == 20 <= 25
    assert out["trim_spend"]["budget_blocked"] == len(authors) - 2
    blocked = out["trim_steps"][2]
    assert blocked["budget_blocked"] and "budget blocked" in blocked["reason"]
