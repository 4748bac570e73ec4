"""TRIM behaves like a LangGraph citizen: no recursion limit to pass, namespaced outputs,
per-question state, loud failures, an overspend flag, a tool for agents, a pinned wiring."""

from __future__ import annotations

import asyncio
import operator
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import RetryPolicy, Send
from typing_extensions import TypedDict

from langchain_trim import (
    InvalidInputError,
    StepGenerationError,
    StepOutput,
    ThresholdPolicy,
    TrimContext,
    TrimWarning,
    create_trim_graph,
    create_trim_tool,
    trim_answer,
    trim_input,
)
from langchain_trim.prm import FunctionPRM
from langchain_trim.state import StepRecord, TrimSpend, merge_steps
from langchain_trim.testing import FakeStepModel, KeywordPRM

from .conftest import STRONG_STEPS, WEAK_STEPS

SNAPSHOTS = Path(__file__).parent / "snapshots"
LONG = [f"step {i}: x{i} = {i} BAD" for i in range(29)] + [r"So \boxed{29}"]
"""A 30-step solution (the paper's max_steps) whose every draft is escalated."""


def long_graph(**kw: Any) -> Any:
    return create_trim_graph(
        FakeStepModel(steps=LONG, model_name="weak"),
        FakeStepModel(steps=LONG, model_name="strong"),
        KeywordPRM({"BAD": 0.1}),
        ThresholdPolicy(0.5),
        **kw,
    )


def fast_fail_retry(**kw: Any) -> RetryPolicy:
    return RetryPolicy(initial_interval=0.0, jitter=False, **kw)


# -- 1. no recursion_limit to pass ---------------------------------------------------------
def test_batch_lcel_and_parents_run_30_steps_without_a_recursion_limit() -> None:
    graph = long_graph().compile()
    for out in graph.batch([{"question": "a"}, {"question": "b"}]):
        assert len(out["trim_steps"]) == 30 and out["trim_termination"] == "final_answer"
    outs = asyncio.run(graph.abatch([{"question": "a"}]))
    assert outs[0]["trim_final_answer"] == "29"

    prompt = ChatPromptTemplate.from_messages([("human", "Question {n}")])
    chain = prompt | trim_input | graph | trim_answer
    assert chain.batch([{"n": 1}, {"n": 2}]) == ["29", "29"]
    assert asyncio.run(chain.abatch([{"n": 3}])) == ["29"]
    assert chain.invoke({"n": 4}) == "29"

    class Parent(TypedDict, total=False):
        question: str
        trim_final_answer: str | None

    parent = StateGraph(Parent).add_node("trim", graph).add_edge(START, "trim").compile()
    assert [o["trim_final_answer"] for o in parent.batch([{"question": "q"}] * 2)] == ["29"] * 2


def test_context_max_steps_raises_the_limit_too() -> None:
    steps = [f"s{i}" for i in range(39)] + [r"\boxed{1}"]
    graph = create_trim_graph(
        FakeStepModel(steps=steps), FakeStepModel(steps=steps), None, ThresholdPolicy(1.0)
    ).compile()
    out = graph.batch([{"question": "q"}], context=TrimContext(max_steps=40))[0]  # type: ignore[arg-type]
    assert len(out["trim_steps"]) == 40 and out["trim_termination"] == "final_answer"


def test_a_graph_compiled_without_the_floor_ends_cleanly_at_the_limit() -> None:
    plain = StateGraph.compile(long_graph())  # a plain CompiledStateGraph: no floor
    with pytest.warns(TrimWarning, match="recursion limit"):
        out = plain.invoke({"question": "q"}, {"recursion_limit": 30})
    assert out["trim_termination"] == "recursion_limit"
    assert 0 < len(out["trim_steps"]) < 30 and out["trim_solution"]


# -- 2. namespacing and per-question state ---------------------------------------------------
def test_outputs_are_only_trim_keys_and_messages() -> None:
    graph = create_trim_graph(
        FakeStepModel(steps=WEAK_STEPS), FakeStepModel(steps=STRONG_STEPS), None, ThresholdPolicy(0)
    )
    out = graph.compile().invoke({"question": "  q  ", "trim_budget": 600})
    assert set(out) == {
        "messages",
        "trim_steps",
        "trim_spend",
        "trim_final_answer",
        "trim_solution",
        "trim_termination",
        "trim_overspent",
    }
    assert out["trim_spend"]["budget"] == 600
    only = create_trim_graph(
        FakeStepModel(steps=WEAK_STEPS),
        FakeStepModel(steps=STRONG_STEPS),
        None,
        ThresholdPolicy(0),
        output_mode="trim_only",
    )
    assert "messages" not in only.compile().invoke({"question": "q"})


class OwnQuestionParent(TypedDict, total=False):
    question: str
    messages: Annotated[list[AnyMessage], add_messages]
    trim_final_answer: str | None


def test_parent_question_is_never_overwritten(
    weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM
) -> None:
    trim = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3)).compile(name="trim")
    parent = StateGraph(OwnQuestionParent).add_node("trim", trim).add_edge(START, "trim").compile()
    out = parent.invoke({"question": "the parent's own key", "messages": [HumanMessage("apples?")]})
    assert out["question"] == "the parent's own key"  # TRIM solved the human turn
    assert out["trim_final_answer"] == "13"


def _collect(left: list[Any] | None, right: Any) -> list[Any]:
    return [*(left or []), *(right if isinstance(right, list) else [right])]


class FanOut(TypedDict, total=False):
    question: str
    questions: list[str]
    trim_final_answer: Annotated[list[str | None], _collect]


def test_send_fan_out_from_a_parent_with_a_question_key() -> None:
    weak = FakeStepModel(
        steps={q: [f"{q} is easy", rf"\boxed{{{q}}}"] for q in ("1", "2", "3")}, model_name="w"
    )
    trim = create_trim_graph(weak, weak, None, ThresholdPolicy(0)).compile(name="trim")

    def fan(state: FanOut) -> list[Send]:
        return [Send("trim", {"question": q}) for q in state["questions"]]

    parent = (
        StateGraph(FanOut)
        .add_node("trim", trim)
        .add_conditional_edges(START, fan, ["trim"])
        .compile()
    )
    out = parent.invoke({"question": "mine", "questions": ["1", "2", "3"]})
    assert out["question"] == "mine"
    assert sorted(out["trim_final_answer"]) == ["1", "2", "3"]


class PlainAddParent(TypedDict, total=False):
    messages: Annotated[list[BaseMessage], operator.add]  # no id-based dedup


@pytest.mark.parametrize(
    ("mode", "kinds"),
    [
        ("last_message", ["HumanMessage", "AIMessage"]),
        ("trim_only", ["HumanMessage"]),
    ],
)
def test_output_mode_decides_what_messages_reach_the_parent(
    weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM, mode: str, kinds: list[str]
) -> None:
    trim = create_trim_graph(
        weak,
        strong,
        prm,
        ThresholdPolicy(0.3),
        output_mode=mode,  # type: ignore[arg-type]
    ).compile(name="trim")
    parent = StateGraph(PlainAddParent).add_node("trim", trim).add_edge(START, "trim").compile()
    out = parent.invoke({"messages": [HumanMessage("apples?")]})
    assert [type(m).__name__ for m in out["messages"]] == kinds


def test_a_question_budget_does_not_carry_over_on_a_thread() -> None:
    steps = ["a BAD", "b BAD", "c BAD", r"\boxed{1}"]
    graph = create_trim_graph(
        FakeStepModel(steps=steps),
        FakeStepModel(steps=["x y", "x y", "x y", r"\boxed{2}"]),
        KeywordPRM({"BAD": 0.1}),
        ThresholdPolicy(0.5),
        step_max_tokens=4,
    ).compile(checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "t"}}
    first = graph.invoke({"question": "q1", "trim_budget": 4}, config)
    assert first["trim_spend"]["budget"] == 4
    assert [s["author"] for s in first["trim_steps"]] == ["strong", "weak", "weak", "weak"]
    second = graph.invoke({"question": "q2"}, config)  # no budget: the factory's (None)
    assert second["trim_spend"]["budget"] is None
    assert [s["author"] for s in second["trim_steps"]] == ["strong", "strong", "strong", "weak"]


class CopiesTrimKeys(TypedDict, total=False):
    question: str
    trim_steps: Annotated[list[StepRecord], merge_steps]
    trim_spend: TrimSpend


def test_a_parent_copying_trim_keys_never_mixes_two_questions() -> None:
    weak = FakeStepModel(steps={"long": ["a", "b", "c", r"\boxed{1}"], "short": [r"\boxed{2}"]})
    trim = create_trim_graph(weak, weak, None, ThresholdPolicy(0)).compile(name="trim")
    parent = (
        StateGraph(CopiesTrimKeys)
        .add_node("trim", trim)
        .add_edge(START, "trim")
        .compile(checkpointer=InMemorySaver())
    )
    config: RunnableConfig = {"configurable": {"thread_id": "p"}}
    assert len(parent.invoke({"question": "long"}, config)["trim_steps"]) == 4
    out = parent.invoke({"question": "short"}, config)
    assert [s["text"] for s in out["trim_steps"]] == [r"\boxed{2}"]


# -- 3. failures are loud -------------------------------------------------------------------
def broken_strong() -> FakeStepModel:
    return FakeStepModel(steps=STRONG_STEPS, fail_on_steps=frozenset(range(10)))


def test_a_strong_model_failing_every_call_warns_by_default(
    weak: FakeStepModel, prm: KeywordPRM
) -> None:
    graph = create_trim_graph(
        weak,
        broken_strong(),
        prm,
        ThresholdPolicy(0.5),
        strong_retry=fast_fail_retry(max_attempts=2),
    ).compile()
    with pytest.warns(TrimWarning, match="strong model failed") as caught:
        out = graph.invoke({"question": "q"})
    escalated = [s for s in out["trim_steps"] if s["decision"] == "escalate"]
    assert escalated and all(s["author"] == "weak" for s in escalated)
    assert all(s["fallback"].startswith("strong_error:") for s in escalated)
    assert out["trim_spend"]["strong_errors"] == len(escalated) == len(caught)
    assert out["trim_spend"]["strong_calls"] == 2 * len(escalated)


def test_keep_draft_records_without_warning_and_raise_raises(
    weak: FakeStepModel, prm: KeywordPRM
) -> None:
    quiet = create_trim_graph(
        weak,
        broken_strong(),
        prm,
        ThresholdPolicy(0.5),
        on_strong_error="keep_draft",
        strong_retry=fast_fail_retry(),
    ).compile()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrimWarning)
        out = quiet.invoke({"question": "q"})
    assert out["trim_spend"]["strong_errors"] > 0
    strict = create_trim_graph(
        FakeStepModel(steps=WEAK_STEPS),
        broken_strong(),
        prm,
        ThresholdPolicy(0.5),
        on_strong_error="raise",
        strong_retry=fast_fail_retry(),
    ).compile()
    with pytest.raises(StepGenerationError, match="failed at step 1"):
        strict.invoke({"question": "q"})


@pytest.mark.parametrize("use_async", [False, True])
def test_a_prm_with_the_wrong_number_of_scores_warns(use_async: bool) -> None:
    prm = FunctionPRM(lambda q, steps: [0.5])  # one score, whatever the number of steps
    graph = create_trim_graph(
        FakeStepModel(steps=WEAK_STEPS),
        FakeStepModel(steps=STRONG_STEPS),
        prm,
        ThresholdPolicy(0.3),
    ).compile()
    with pytest.warns(TrimWarning, match="PRM failed at step"):
        out = (
            asyncio.run(graph.ainvoke({"question": "q"}))
            if use_async
            else graph.invoke({"question": "q"})
        )
    assert out["trim_spend"]["prm_errors"] == 3  # steps 1-3 (step 0 got its one score)


def test_a_budget_that_cannot_cover_a_step_is_rejected() -> None:
    weak = FakeStepModel(steps=WEAK_STEPS)
    with pytest.raises(InvalidInputError, match="step_max_tokens"):
        create_trim_graph(weak, weak, None, ThresholdPolicy(1), budget=10, step_max_tokens=64)
    graph = create_trim_graph(weak, weak, None, ThresholdPolicy(1), step_max_tokens=64).compile()
    with pytest.raises(InvalidInputError, match="budget 10 < the strong step cap 64"):
        graph.invoke({"question": "q", "trim_budget": 10})
    assert weak.calls == []


class FailingStrong:
    """A strong step generator whose every call fails after decoding ``tokens`` tokens."""

    name = "failing-strong"

    def __init__(self, tokens: int, error: type[StepGenerationError] = StepGenerationError):
        self.tokens, self.error = tokens, error
        self.calls: list[float] = []

    def _fail(self, prefix: Sequence[str]) -> StepOutput:
        self.calls.append(time.perf_counter())
        exc = self.error("strong down", role="strong", step_index=len(prefix))
        exc.tokens = self.tokens
        raise exc

    def generate(self, question: str, prefix: Sequence[str], **kw: Any) -> StepOutput:
        return self._fail(prefix)

    async def agenerate(self, question: str, prefix: Sequence[str], **kw: Any) -> StepOutput:
        return self._fail(prefix)


@pytest.mark.parametrize("use_async", [False, True])
def test_strong_retry_policy_backs_off_charges_every_attempt_and_stops_at_the_budget(
    use_async: bool,
) -> None:
    strong = FailingStrong(tokens=5)
    graph = create_trim_graph(
        FakeStepModel(steps=WEAK_STEPS),
        strong,
        None,
        ThresholdPolicy(1.0),
        budget=25,
        step_max_tokens=10,
        on_strong_error="keep_draft",
        strong_retry=RetryPolicy(
            max_attempts=9, initial_interval=0.05, backoff_factor=2.0, jitter=False
        ),
    ).compile()
    out = (
        asyncio.run(graph.ainvoke({"question": "q"}))
        if use_async
        else graph.invoke({"question": "q"})
    )
    # 5 tokens per failed attempt: after four attempts 5 are left, less than a step (10)
    assert len(strong.calls) == 4
    gaps = [b - a for a, b in zip(strong.calls, strong.calls[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2
    spend = out["trim_spend"]
    assert spend["strong_calls"] == 4 and spend["strong_tokens"] == 20 <= 25
    first = out["trim_steps"][0]
    assert first["author"] == "weak" and "budget left cannot cover" in first["fallback"]
    assert all(s["budget_blocked"] for s in out["trim_steps"][1:])


def test_retry_on_decides_which_failures_are_retried() -> None:
    strong = FailingStrong(tokens=0)
    graph = create_trim_graph(
        FakeStepModel(steps=WEAK_STEPS),
        strong,
        None,
        ThresholdPolicy(1.0),
        max_steps=1,
        on_strong_error="keep_draft",
        strong_retry=fast_fail_retry(max_attempts=5, retry_on=TimeoutError),
    ).compile()
    graph.invoke({"question": "q"})
    assert len(strong.calls) == 1  # a plain failure is not a TimeoutError: no retry


# -- 4. overspend flagged in state and events ------------------------------------------------
def test_a_strong_model_ignoring_max_tokens_is_flagged_as_overspent(weak: FakeStepModel) -> None:
    long_step = " ".join(f"w{i}" for i in range(40))
    strong = FakeStepModel(steps=[long_step] * 4, ignore_max_tokens=True, model_name="rogue")
    graph = create_trim_graph(
        weak, strong, None, ThresholdPolicy(1.0), budget=20, step_max_tokens=10
    ).compile()
    with pytest.warns(TrimWarning, match="overspent the budget"):
        chunks = list(graph.stream({"question": "q"}, stream_mode=["custom", "values"]))
    events = [c for mode, c in chunks if mode == "custom"]
    out = [c for mode, c in chunks if mode == "values"][-1]
    assert out["trim_overspent"] is True and out["trim_spend"]["overspent"] is True
    assert out["trim_spend"]["strong_tokens"] > 20
    steps = [e for e in events if e["trim_event"] == "step"]
    assert steps[0]["overspent"] is True and steps[0]["budget_left"] < 0
    assert events[-1]["trim_event"] == "done" and events[-1]["overspent"] is True
    assert [s["author"] for s in out["trim_steps"]][1:] == ["weak"] * 3  # no more escalations


def test_no_overspend_flag_when_the_model_honours_its_cap(
    weak: FakeStepModel, strong: FakeStepModel
) -> None:
    out = (
        create_trim_graph(weak, strong, None, ThresholdPolicy(1.0), budget=20, step_max_tokens=10)
        .compile()
        .invoke({"question": "q"})
    )
    assert out["trim_overspent"] is False and out["trim_spend"]["strong_tokens"] <= 20


# -- 7. the stream writer in async code on Python < 3.11 -------------------------------------
def test_stream_writer_path_for_old_pythons(
    monkeypatch: pytest.MonkeyPatch, weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM
) -> None:
    from langchain_trim import _py310

    monkeypatch.setattr(_py310, "SET_CONFIG_VAR", True)
    graph = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3)).compile(
        checkpointer=InMemorySaver()  # escalations then run as LangGraph tasks
    )
    config: RunnableConfig = {"configurable": {"thread_id": "old-python"}}

    async def collect() -> list[dict[str, Any]]:
        stream = graph.astream({"question": "q"}, config, stream_mode="custom")
        return [c async for c in stream]

    events = asyncio.run(collect())
    assert [e["trim_event"] for e in events] == ["step"] * 4 + ["done"]
    assert [e["author"] for e in events[:4]] == ["weak", "strong", "weak", "weak"]


# -- 8. a tool for agents ---------------------------------------------------------------------
def test_create_trim_tool_sync_and_async(
    weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM
) -> None:
    tool = create_trim_tool(
        create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3), budget=400, step_max_tokens=64)
    )
    assert tool.name == "solve_with_trim" and set(tool.args) == {"question"}
    call = {"name": tool.name, "args": {"question": "apples?"}, "id": "c1", "type": "tool_call"}
    message = tool.invoke(call)
    assert isinstance(message, ToolMessage)
    assert message.content.startswith("Answer: 13\n")
    assert (
        "1 rewritten by the strong model" in message.content
        and "of a 400 budget" in message.content
    )
    assert message.artifact["final_answer"] == "13" and len(message.artifact["steps"]) == 4
    amessage = asyncio.run(tool.ainvoke(call))
    assert amessage.content == message.content


def test_graph_as_tool_is_the_trim_tool(weak: FakeStepModel, strong: FakeStepModel) -> None:
    graph = create_trim_graph(weak, strong, None, ThresholdPolicy(0)).compile()
    tool = graph.as_tool(name="math", description="Solves math.")
    assert tool.name == "math" and tool.description == "Solves math."
    assert tool.invoke({"question": "apples?"}).startswith("Answer: 13")


def test_trim_tool_inside_an_agent(
    weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM
) -> None:
    agents = pytest.importorskip("langchain.agents")
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    class ToolCallingFake(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    model = ToolCallingFake(
        messages=iter(
            [
                AIMessage(
                    "",
                    tool_calls=[
                        {"name": "solve_with_trim", "args": {"question": "apples?"}, "id": "1"},
                        {"name": "solve_with_trim", "args": {"question": "pears?"}, "id": "2"},
                    ],
                ),
                AIMessage("Both are 13."),
            ]
        )
    )
    tool = create_trim_tool(create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3)))
    agent = agents.create_agent(model, tools=[tool], checkpointer=InMemorySaver())
    out = agent.invoke(
        {"messages": [HumanMessage("Solve both.")]}, {"configurable": {"thread_id": "agent"}}
    )
    tool_messages = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.content.splitlines()[0] for m in tool_messages] == ["Answer: 13", "Answer: 13"]
    assert out["messages"][-1].content == "Both are 13."


# -- the wiring, pinned -------------------------------------------------------------------------
@pytest.mark.parametrize("output_mode", ["last_message", "trim_only"])
def test_mermaid_snapshot(
    weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM, output_mode: str
) -> None:
    graph = create_trim_graph(
        weak,
        strong,
        prm,
        ThresholdPolicy(0.3),
        output_mode=output_mode,  # type: ignore[arg-type]
    ).compile(name="trim")
    mermaid = graph.get_graph().draw_mermaid()
    snapshot = SNAPSHOTS / "trim_graph.mmd"
    if not snapshot.exists():  # pragma: no cover - first run writes it
        snapshot.parent.mkdir(exist_ok=True)
        snapshot.write_text(mermaid)
    assert mermaid == snapshot.read_text()
