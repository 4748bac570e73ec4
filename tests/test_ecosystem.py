"""TRIM inside the LangGraph/LangChain ecosystem: parents, LCEL, streaming, checkpoints."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from langchain_trim import (
    StepGenerationError,
    ThresholdPolicy,
    create_trim_graph,
    trim_answer,
    trim_input,
)
from langchain_trim.testing import FakeStepModel, KeywordPRM

from .conftest import STRONG_STEPS, WEAK_STEPS


class ParentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    steps: Annotated[list[str], operator.add]  # the parent's own accumulating keys
    budget: Annotated[int, operator.add]
    cost: Annotated[int, operator.add]
    trim_steps: list[Any]
    trim_spend: dict[str, Any]


def test_nested_in_parent_with_clashing_keys_counts_nothing_twice(
    weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM
) -> None:
    trim = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3)).compile(name="trim")

    def before(state: ParentState) -> dict[str, Any]:
        return {"steps": ["parent-1"], "budget": 100, "cost": 1}

    def after(state: ParentState) -> dict[str, Any]:
        return {"steps": ["parent-2"], "cost": 1}

    parent = (
        StateGraph(ParentState)
        .add_node("before", before)
        .add_node("trim", trim)
        .add_node("after", after)
        .add_edge(START, "before")
        .add_edge("before", "trim")
        .add_edge("trim", "after")
        .compile(checkpointer=InMemorySaver())
    )
    out = parent.invoke(
        {"messages": [HumanMessage("apples?")], "steps": [], "budget": 0, "cost": 0},
        {"configurable": {"thread_id": "t"}},
    )
    assert out["steps"] == ["parent-1", "parent-2"]
    assert out["budget"] == 100 and out["cost"] == 2
    assert [s["index"] for s in out["trim_steps"]] == [0, 1, 2, 3]
    direct = (
        create_trim_graph(
            FakeStepModel(steps=WEAK_STEPS),
            FakeStepModel(steps=STRONG_STEPS),
            prm,
            ThresholdPolicy(0.3),
        )
        .compile()
        .invoke({"question": "apples?"})
    )
    assert out["trim_spend"] == direct["trim_spend"]
    ai = [m for m in out["messages"] if isinstance(m, AIMessage)]
    assert len(ai) == 1 and ai[0].content == direct["trim_solution"]


def test_trim_as_node_of_a_messages_agent(
    weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM
) -> None:
    class AgentState(TypedDict):
        messages: Annotated[list[AnyMessage], add_messages]

    def answer_user(state: AgentState) -> dict[str, Any]:
        final = state["messages"][-1].response_metadata["trim"]["final_answer"]
        return {"messages": [AIMessage(f"The answer is {final}.")]}

    trim = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3)).compile(name="trim")
    agent = (
        StateGraph(AgentState)
        .add_node("solve", trim)
        .add_node("answer_user", answer_user)
        .add_edge(START, "solve")
        .add_edge("solve", "answer_user")
        .compile()
    )
    out = agent.invoke({"messages": [HumanMessage("apples?")]})
    assert [type(m).__name__ for m in out["messages"]] == ["HumanMessage", "AIMessage", "AIMessage"]
    assert out["messages"][-1].content == "The answer is 13."


def test_lcel_chain(weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM) -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "How many apples does {who} have?")])
    trim = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3)).compile(name="trim")
    chain = prompt | trim_input | trim | trim_answer
    assert chain.invoke({"who": "Ann"}) == "13"
    solution_chain = (
        trim_input | trim | RunnableLambda(lambda s: s["messages"][-1]) | StrOutputParser()
    )
    assert solution_chain.invoke("apples?").endswith(r"\boxed{13}.")
    assert asyncio.run(chain.abatch([{"who": "A"}, {"who": "B"}])) == ["13", "13"]


@pytest.mark.parametrize("use_async", [False, True])
def test_custom_stream_events_in_order(
    weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM, use_async: bool
) -> None:
    graph = create_trim_graph(
        weak, strong, prm, ThresholdPolicy(0.3), budget=500, step_max_tokens=64
    ).compile()

    async def collect_async() -> list[dict[str, Any]]:
        return [c async for c in graph.astream({"question": "q"}, stream_mode="custom")]

    events = (
        asyncio.run(collect_async())
        if use_async
        else list(graph.stream({"question": "q"}, stream_mode="custom"))
    )
    steps = [e for e in events if e["trim_event"] == "step"]
    assert [e["index"] for e in steps] == [0, 1, 2, 3]
    assert [e["decision"] for e in steps] == ["continue", "escalate", "continue", "continue"]
    assert [e["author"] for e in steps] == ["weak", "strong", "weak", "weak"]
    assert steps[1]["score"] == 0.1 and steps[1]["strong_tokens"] > 0
    assert steps[-1]["budget_left"] == 500 - steps[-1]["strong_tokens"]
    assert events[-1]["trim_event"] == "done" and events[-1]["final_answer"] == "13"


def test_model_tokens_stay_out_of_message_stream(
    weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM
) -> None:
    graph = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3)).compile()
    chunks = list(graph.stream({"question": "q"}, stream_mode="messages"))
    internal = [m for m, meta in chunks if meta.get("langgraph_node") in ("draft", "escalate")]
    assert internal == []


@pytest.mark.parametrize("use_async", [False, True])
def test_checkpoint_resume_recomputes_and_charges_nothing_twice(
    prm: KeywordPRM, use_async: bool
) -> None:
    reference = (
        create_trim_graph(
            FakeStepModel(steps=WEAK_STEPS),
            FakeStepModel(steps=STRONG_STEPS),
            prm,
            ThresholdPolicy(0.5),
        )
        .compile()
        .invoke({"question": "q"})
    )

    # the weak model crashes once at step 2: after steps 0 and 1 were accepted
    weak = FakeStepModel(steps=WEAK_STEPS, fail_on_steps=frozenset({2}), failures_left=1)
    strong = FakeStepModel(steps=STRONG_STEPS)
    graph = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.5)).compile(
        checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "resume"}}
    run = (
        (lambda x: asyncio.run(graph.ainvoke(x, config)))
        if use_async
        else (lambda x: graph.invoke(x, config))
    )
    with pytest.raises(StepGenerationError, match="step 2"):
        run({"question": "q"})
    saved = graph.get_state(config).values
    assert [s["index"] for s in saved["trim_steps"]] == [0, 1]
    assert strong.calls == [1]

    out = run(None)  # resume
    assert weak.calls == [0, 1, 2, 2, 3]  # step 2 retried once; 0 and 1 not redone
    assert strong.calls == [1, 2, 3]  # strong step 1 not regenerated
    assert out["trim_spend"] == reference["trim_spend"]
    assert out["trim_steps"] == reference["trim_steps"]
    assert out["trim_final_answer"] == reference["trim_final_answer"]
