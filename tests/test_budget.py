"""The strong-token budget is a hard cap: property tests with random scores and lengths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_trim import InvalidInputError, ThresholdPolicy, create_trim_graph
from langchain_trim.budget import BudgetedStepGenerator, GlobalBudget, GlobalBudgetPolicy
from langchain_trim.generation import as_step_generator
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


class _Chunky(FakeStepModel):
    """Honours ``max_tokens`` but writes blank chunks and reports usage that may lie."""

    usage_mode: str = "honest"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        result = super()._generate(messages, stop, run_manager, **kw)
        message = result.generations[0].message
        true = len(message.content.split(" ")) if message.content else 0
        lie = {
            "honest": true,
            "negative": -50,
            "nan": float("nan"),
            "tenfold": 10 * (kw.get("max_tokens") or 1),
            "missing": None,
        }[self.usage_mode]
        if lie is None:
            message.usage_metadata = None
        else:
            message.usage_metadata = {"input_tokens": 1, "output_tokens": lie, "total_tokens": 1}
        return result


def _chunky_responder(traj: list[tuple[float, int, int, int]], tag: str, which: int) -> Any:
    def respond(question: str, accepted: Sequence[str]) -> str | None:
        # Walk the accepted chunks: every step is preceded by `blanks` punctuation chunks.
        i = len([a for a in accepted if a.strip(" .,;") != ""])
        if i >= len(traj):
            return None
        blanks_seen = 0
        for a in reversed(accepted):
            if a.strip(" .,;") != "":
                break
            blanks_seen += 1
        if blanks_seen < traj[i][3]:
            return "."
        return words(traj[i][which], f"{tag}{i}_")

    return respond


@settings(max_examples=80, deadline=None)
@given(
    traj=st.lists(
        st.tuples(
            st.floats(0, 1, allow_nan=False),
            st.integers(1, 40),
            st.integers(1, 60),
            st.integers(0, 2),  # punctuation-only chunks before the step
        ),
        min_size=1,
        max_size=8,
    ),
    budget=st.integers(1, 150),
    threshold=st.floats(0.01, 1, allow_nan=False),
    step_cap=st.integers(4, 40),
    strong_cap=st.none() | st.integers(2, 40),
    usage_mode=st.sampled_from(["honest", "negative", "nan", "tenfold", "missing"]),
    shared=st.sampled_from(["no", "wrapped by hand", "global_budget="]),
)
def test_budget_holds_with_blank_chunks_lying_usage_and_shared_budgets(
    traj: list[tuple[float, int, int, int]],
    budget: int,
    threshold: float,
    step_cap: int,
    strong_cap: int | None,
    usage_mode: str,
    shared: str,
) -> None:
    """Every model here honours max_tokens; whatever it reports, no budget is exceeded
    (with or without a lower cap on strong calls)."""
    reserve = step_cap if strong_cap is None else min(strong_cap, step_cap)
    weak = _Chunky(responder=_chunky_responder(traj, "w", 1), model_name="weak")
    strong = _Chunky(
        responder=_chunky_responder(traj, "s", 2), model_name="strong", usage_mode=usage_mode
    )

    def score(question: str, steps: Sequence[str]) -> list[float]:
        out = []
        for text in steps:
            head = text.split("_", 1)[0]
            i = int(head[1:]) if head[:1] == "w" and head[1:].isdigit() else None
            out.append(traj[i][0] if i is not None and i < len(traj) else 1.0)
        return out

    policy: Any = ThresholdPolicy(threshold)
    strong_model: Any = strong
    pool = None
    caps: dict[str, Any] = {"step_max_tokens": step_cap, "strong_step_max_tokens": strong_cap}
    if shared != "no":
        pool = GlobalBudget(total=budget, step_tokens=reserve)
    if shared == "wrapped by hand":
        policy = GlobalBudgetPolicy(policy, pool)
        strong_model = BudgetedStepGenerator(
            as_step_generator(strong, role="strong", run_name="trim.strong"), pool
        )
    elif shared == "global_budget=":
        caps["global_budget"] = pool
    if shared == "no" and budget < reserve:  # could never escalate: rejected, loudly
        with pytest.raises(InvalidInputError, match="strong step cap"):
            create_trim_graph(weak, strong, None, policy, budget=budget, **caps)
        return
    graph = create_trim_graph(
        weak,
        strong_model,
        FunctionPRM(score),
        policy,
        budget=None if pool is not None else budget,
        **caps,
    ).compile()
    outs = [graph.invoke({"question": f"q{k}"}) for k in range(1 if pool is None else 2)]
    total = sum(o["trim_spend"]["strong_tokens"] for o in outs)
    assert total <= budget
    for o in outs:
        assert all(s["tokens"] <= step_cap for s in o["trim_steps"])
        assert all(s["tokens"] <= reserve for s in o["trim_steps"] if s["author"] == "strong")
        assert not o["trim_spend"].get("overspent")
        if usage_mode != "honest" and any(s["author"] == "strong" for s in o["trim_steps"]):
            assert o["trim_spend"]["strong_tokens_estimated"]
    if pool is not None:
        assert pool.spent + pool.reserved <= budget


def test_a_strong_model_that_ignores_max_tokens_is_flagged_and_stops_escalating() -> None:
    class Ignoring(FakeStepModel):
        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            kw.pop("max_tokens", None)
            return super()._generate(messages, stop, run_manager, **kw)

    weak = FakeStepModel(steps=["bad"] * 4 + [r"\boxed{1}"], model_name="weak")
    strong = Ignoring(steps=[words(50, "s")] * 5, model_name="strong")
    prm = FunctionPRM(lambda q, steps: [0.0 for _ in steps])
    graph = create_trim_graph(
        weak, strong, prm, ThresholdPolicy(0.5), budget=100, step_max_tokens=20
    ).compile()
    out = graph.invoke({"question": "q"})
    spend = out["trim_spend"]
    assert spend["strong_untrusted"] and spend["usage_flags"] >= 1
    assert [s["author"] for s in out["trim_steps"]].count("strong") == 1
    later = out["trim_steps"][1]
    assert later["budget_blocked"] and "max_tokens" in later["reason"]
