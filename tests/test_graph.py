"""Routing semantics of the TRIM graph on scripted models."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from langchain_trim import (
    ThresholdPolicy,
    TrimContext,
    create_trim_graph,
)
from langchain_trim.errors import InvalidInputError
from langchain_trim.generation import build_messages, parse_prefix
from langchain_trim.testing import FakeStepModel, KeywordPRM

from .conftest import STRONG_STEPS, WEAK_STEPS


def run(graph: Any, inputs: dict[str, Any], use_async: bool, **kw: Any) -> dict[str, Any]:
    compiled = graph.compile(name="trim")
    if use_async:
        return asyncio.run(compiled.ainvoke(inputs, **kw))
    return compiled.invoke(inputs, **kw)


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("threshold", "expected_authors"),
    [
        (0.0, ["weak", "weak", "weak", "weak"]),
        (0.3, ["weak", "strong", "weak", "weak"]),  # only the WRONG step (0.1) escalates
        (0.5, ["weak", "strong", "strong", "strong"]),  # 13-steps score 0.4 too
        (1.0, ["strong", "strong", "strong", "strong"]),
    ],
)
def test_escalates_exactly_when_policy_says(
    weak: FakeStepModel,
    strong: FakeStepModel,
    prm: KeywordPRM,
    threshold: float,
    expected_authors: list[str],
    use_async: bool,
) -> None:
    graph = create_trim_graph(weak, strong, prm, ThresholdPolicy(threshold))
    out = run(graph, {"question": "apples?"}, use_async)
    steps = out["trim_steps"]
    assert [s["author"] for s in steps] == expected_authors
    assert [s["index"] for s in steps] == list(range(len(steps)))
    for s in steps:
        if s["draft_score"] is not None:
            assert (s["draft_score"] < threshold) == (s["author"] == "strong")
        if s["author"] == "strong":
            assert s["text"] == STRONG_STEPS[s["index"]]
            assert s["draft"] == WEAK_STEPS[s["index"]]
        else:
            assert s["draft"] is None
    spend = out["trim_spend"]
    n_strong = expected_authors.count("strong")
    assert spend["escalations"] == n_strong == spend["strong_calls"]
    assert spend["strong_tokens"] == sum(s["tokens"] for s in steps if s["author"] == "strong")
    assert spend["weak_calls"] == 4
    assert spend["discarded_draft_tokens"] == sum(s["draft_tokens"] for s in steps if s["draft"])
    # the extremes never call the PRM
    assert spend["prm_calls"] == (0 if threshold in (0.0, 1.0) else 4)
    assert out["trim_termination"] == "final_answer"
    assert out["messages"][-1].content == out["trim_solution"]


def test_strong_model_never_sees_the_discarded_draft(weak: FakeStepModel, prm: KeywordPRM) -> None:
    seen: list[list[str]] = []

    def responder(question: str, accepted: Any) -> str | None:
        seen.append(list(accepted))
        i = len(accepted)
        return STRONG_STEPS[i] if i < len(STRONG_STEPS) else None

    strong = FakeStepModel(responder=responder, model_name="strong")
    out = (
        create_trim_graph(weak, strong, prm, ThresholdPolicy(0.5))
        .compile()
        .invoke({"question": "apples?"})
    )
    drafts = [s["draft"] for s in out["trim_steps"] if s["draft"]]
    assert drafts
    for prefix in seen:
        for draft in drafts:
            assert draft not in prefix
    # the weak model continues from the corrected prefix
    assert weak.calls == [0, 1, 2, 3]
    assert seen == [
        [WEAK_STEPS[0]],
        [WEAK_STEPS[0], STRONG_STEPS[1]],
        [WEAK_STEPS[0], *STRONG_STEPS[1:3]],
    ]


def test_strong_steps_are_scored_by_the_next_prm_call(
    weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM
) -> None:
    out = (
        create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3))
        .compile()
        .invoke({"question": "q"})
    )
    step1 = out["trim_steps"][1]
    assert step1["author"] == "strong" and step1["score"] == 0.9 and step1["draft_score"] == 0.1


@pytest.mark.parametrize("mode", ["prefill", "instruct"])
def test_generation_modes_round_trip(mode: str) -> None:
    msgs = build_messages("What is 1+1?", "a\n\nb", 2, mode=mode)  # type: ignore[arg-type]
    assert parse_prefix(msgs) == ("What is 1+1?", ["a", "b"])


def test_instruct_mode_with_plain_chat_models(prm: KeywordPRM) -> None:
    weak = FakeStepModel(steps=WEAK_STEPS, supports_prefill=False)
    strong = FakeStepModel(steps=STRONG_STEPS, supports_prefill=False)
    graph = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3))
    out = graph.compile().invoke({"question": "apples?"})
    assert [s["author"] for s in out["trim_steps"]] == ["weak", "strong", "weak", "weak"]


class _EndsItsTurn(FakeStepModel):
    """A chat model that reports the natural end of every reply as end of text, as
    llama.cpp (``"eos"``) and Anthropic-style APIs (``"end_turn"``) do."""

    reason: str = "eos"

    def _answer(self, messages: Any, stop: Any, kwargs: dict[str, Any]) -> Any:
        result, delay = super()._answer(messages, stop, kwargs)
        meta = result.generations[0].message.response_metadata
        if meta["finish_reason"] == "stop" and result.generations[0].message.content:
            meta["finish_reason"] = self.reason
        return result, delay


@pytest.mark.parametrize("reason", ["eos", "end_turn"])
def test_an_instruct_reply_that_ends_its_turn_ends_the_step_not_the_solution(
    prm: KeywordPRM, reason: str
) -> None:
    """On main a local model in instruct mode ended every solution after its first step:
    asked for one step, it ends its turn, and that was read as the end of the text."""
    weak = _EndsItsTurn(steps=WEAK_STEPS, supports_prefill=False, reason=reason)
    strong = _EndsItsTurn(steps=STRONG_STEPS, supports_prefill=False, reason=reason)
    out = (
        create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3))
        .compile()
        .invoke({"question": "apples?"})
    )
    assert [s["author"] for s in out["trim_steps"]] == ["weak", "strong", "weak", "weak"]
    assert out["trim_termination"] == "final_answer" and out["trim_final_answer"] == "13"
    # in prefill mode the model continues the solution: its end of text ends it
    prefilled = _EndsItsTurn(steps=WEAK_STEPS, reason=reason)
    out = (
        create_trim_graph(prefilled, strong, prm, ThresholdPolicy(0))
        .compile()
        .invoke({"question": "apples?"})
    )
    assert len(out["trim_steps"]) == 1 and out["trim_termination"] == "end_of_text"


def test_blank_steps_are_continued_not_accepted(prm: KeywordPRM) -> None:
    weak = FakeStepModel(steps=["a = 1", " . ", "", r"\boxed{1}"])
    strong = FakeStepModel(steps=[])
    out = (
        create_trim_graph(weak, strong, prm, ThresholdPolicy(0)).compile().invoke({"question": "q"})
    )
    texts = [s["text"] for s in out["trim_steps"]]
    assert texts == ["a = 1", r"\boxed{1}"]
    assert out["trim_spend"]["weak_calls"] == 2  # graph-level calls: blank chunks folded in
    assert weak.calls == [0, 1, 2, 3]  # model calls: the blank chunks were continued past
    assert out["trim_spend"]["weak_tokens"] == 3 + 3 + 0 + 1  # blank chunks are paid for too


@pytest.mark.parametrize(
    ("weak_steps", "kwargs", "termination", "n_steps"),
    [
        (["a", r"\boxed{1}", "never"], {}, "final_answer", 2),
        (["a", "b"], {}, "end_of_text", 2),
        (["a"] * 10, {"max_steps": 3}, "max_steps", 3),
    ],
)
def test_termination_reasons(
    weak_steps: list[str], kwargs: dict[str, Any], termination: str, n_steps: int
) -> None:
    weak = FakeStepModel(steps=weak_steps)
    graph = create_trim_graph(weak, FakeStepModel(), None, ThresholdPolicy(0), **kwargs)
    out = graph.compile().invoke({"question": "q"})
    assert out["trim_termination"] == termination
    assert len(out["trim_steps"]) == n_steps


def test_context_overrides_factory_settings() -> None:
    weak = FakeStepModel(steps=["a"] * 10)
    graph = create_trim_graph(
        weak, FakeStepModel(), None, ThresholdPolicy(0), max_steps=8
    ).compile()
    out = graph.invoke({"question": "q"}, context=TrimContext(max_steps=2))
    assert out["trim_termination"] == "max_steps" and len(out["trim_steps"]) == 2


def test_messages_in_messages_out(
    weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM
) -> None:
    graph = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3), output_mode="full").compile()
    out = graph.invoke({"messages": [HumanMessage("How many apples?")]})
    assert "question" not in out  # an input, never handed back
    assert isinstance(out["messages"][-1], AIMessage)
    assert out["messages"][-1].response_metadata["trim"]["final_answer"] == "13"
    # a second turn on the same state starts afresh
    out2 = graph.invoke({"messages": [*out["messages"], HumanMessage("Again?")]})
    assert len(out2["trim_steps"]) == 4
    assert len([m for m in out2["messages"] if isinstance(m, AIMessage)]) == 2
    # the default output_mode hands back only the solution
    last = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3)).compile()
    out3 = last.invoke({"messages": [HumanMessage("How many apples?")]})
    assert [type(m).__name__ for m in out3["messages"]] == ["AIMessage"]


def test_estimated_tokens_are_marked_never_zero(prm: KeywordPRM) -> None:
    weak = FakeStepModel(steps=WEAK_STEPS, report_usage=False)
    strong = FakeStepModel(steps=STRONG_STEPS, report_usage=False)
    out = (
        create_trim_graph(weak, strong, prm, ThresholdPolicy(1.0))
        .compile()
        .invoke({"question": "q"})
    )
    spend = out["trim_spend"]
    assert spend["strong_tokens_estimated"] and spend["weak_tokens_estimated"]
    assert spend["strong_tokens"] > 0
    assert all(s["tokens_estimated"] and s["tokens"] > 0 for s in out["trim_steps"])


def test_batch_and_abatch(weak: FakeStepModel, strong: FakeStepModel, prm: KeywordPRM) -> None:
    graph = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.3)).compile()
    outs = graph.batch([{"question": "a"}, {"question": "b"}])
    aouts = asyncio.run(graph.abatch([{"question": "a"}, {"question": "b"}]))
    for out in [*outs, *aouts]:
        assert out["trim_final_answer"] == "13"  # the WRONG step is fixed, the rest stays weak


def test_capped_step_is_continued_not_ended() -> None:
    """A step that reaches the token cap is kept and the next call continues it."""
    solution = "a b c d e f g h\n\nso \\boxed{3}"
    weak = FakeStepModel(solution=solution)
    graph = create_trim_graph(weak, FakeStepModel(), None, ThresholdPolicy(0), step_max_tokens=3)
    out = graph.compile().invoke({"question": "q"})
    assert out["trim_termination"] == "final_answer"
    assert out["trim_solution"] == solution
    assert out["trim_final_answer"] == "3"
    stops = [s["stop"] for s in out["trim_steps"]]
    assert stops[:2] == ["length", "length"] and stops[-1] != "length"


def test_strong_continues_a_capped_weak_step() -> None:
    solution = "x = 1 + 2 + 3\n\n\\boxed{6}"
    weak = FakeStepModel(solution=solution, model_name="weak")
    strong = FakeStepModel(solution=solution, model_name="strong")
    prm = KeywordPRM({"+ 3": 0.1})
    graph = create_trim_graph(weak, strong, prm, ThresholdPolicy(0.5), step_max_tokens=4)
    out = graph.compile().invoke({"question": "q"})
    assert out["trim_solution"] == solution
    assert "strong" in [s["author"] for s in out["trim_steps"]]


@pytest.mark.parametrize("use_async", [False, True])
def test_a_capped_strong_rewrite_is_continued_by_the_draft(use_async: bool) -> None:
    """``strong_step_max_tokens``: the strong model rewrites the start of a step, the
    draft model finishes it, and the rewrite is charged no more than its cap."""
    solution = "x = 1 + 2 + 3 = 6\n\nso \\boxed{6}"
    weak = FakeStepModel(solution=solution.replace("6", "7", 1), model_name="weak")
    strong = FakeStepModel(solution=solution, model_name="strong")
    prm = KeywordPRM({"x =": 0.1})  # the first draft is escalated, nothing after it
    graph = create_trim_graph(
        weak, strong, prm, ThresholdPolicy(0.5), step_max_tokens=64, strong_step_max_tokens=3
    )
    out = run(graph, {"question": "q"}, use_async)
    steps = out["trim_steps"]
    assert [(s["author"], s["stop"]) for s in steps[:2]] == [
        ("strong", "length"),
        ("weak", "delimiter"),
    ]
    assert steps[0]["text"] == "x = 1"  # three tokens, then the draft continues the step
    assert out["trim_spend"]["strong_tokens"] == 3
    assert out["trim_solution"].startswith("x = 1 + 2 + 3 = 7\n\n")  # the draft's ending


def test_a_strong_cap_lets_a_smaller_budget_escalate() -> None:
    """The budget reserves one strong call: the strong cap when it is lower."""
    weak = FakeStepModel(steps=WEAK_STEPS)
    with pytest.raises(InvalidInputError, match="strong step cap 64"):
        create_trim_graph(weak, weak, None, ThresholdPolicy(1), budget=10, step_max_tokens=64)
    text = "a b c d e f\n\n\\boxed{1}"
    graph = create_trim_graph(
        FakeStepModel(solution=text),
        FakeStepModel(solution=text),
        None,
        ThresholdPolicy(1),
        budget=7,
        step_max_tokens=64,
        strong_step_max_tokens=3,
    ).compile()
    out = graph.invoke({"question": "q"})
    authors = [(s["author"], s["budget_blocked"]) for s in out["trim_steps"]]
    # 3 + 3 strong tokens; then 1 left < the cap of 3: the draft is kept
    assert authors[:3] == [("strong", False), ("strong", False), ("weak", True)]
    assert out["trim_spend"]["strong_tokens"] == 6


@pytest.mark.parametrize("bad", [0, -3, True, 2.5])
def test_the_strong_cap_is_validated(bad: Any) -> None:
    weak = FakeStepModel(steps=WEAK_STEPS)
    with pytest.raises(InvalidInputError, match="strong_step_max_tokens"):
        create_trim_graph(weak, weak, None, ThresholdPolicy(1), strong_step_max_tokens=bad)
    graph = create_trim_graph(weak, weak, None, ThresholdPolicy(1)).compile()
    with pytest.raises(InvalidInputError, match="strong_step_max_tokens"):
        graph.invoke({"question": "q"}, context=TrimContext(strong_step_max_tokens=bad))


def test_total_token_cap_ends_the_trajectory() -> None:
    weak = FakeStepModel(steps=["one two three"] * 10)
    graph = create_trim_graph(weak, FakeStepModel(), None, ThresholdPolicy(0), max_total_tokens=7)
    out = graph.compile().invoke({"question": "q"})
    assert out["trim_termination"] == "token_cap"
    assert len(out["trim_steps"]) == 3


@pytest.mark.parametrize("fmt", ["release", "paragraphs"])
@pytest.mark.parametrize("mode", ["prefill", "instruct"])
def test_step_formats_round_trip(fmt: str, mode: str) -> None:
    from langchain_trim.step_format import get_step_format, parse_request

    msgs = get_step_format(fmt).messages("What is 1+1?", "a\n\nb", 2, mode=mode)  # type: ignore[arg-type]
    question, so_far = parse_request(msgs)
    assert question == "What is 1+1?"
    assert so_far.removesuffix("\n\n") == "a\n\nb"


def test_step_format_is_selectable_per_model() -> None:
    seen: dict[str, list[Any]] = {"weak": [], "strong": []}

    class Recording(FakeStepModel):
        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            seen[self.model_name].append(messages)
            return super()._generate(messages, stop, run_manager, **kw)

    weak = Recording(steps=["2 + 2 = 5", "\\boxed{5}"], model_name="weak")
    strong = Recording(steps=["2 + 2 = 4", "\\boxed{4}"], model_name="strong")
    graph = create_trim_graph(
        weak,
        strong,
        KeywordPRM({"5": 0.1}),
        ThresholdPolicy(0.5),
        step_format="paragraphs",
        strong_step_format="release",
    )
    graph.compile().invoke({"question": "What is 2 + 2?"})
    assert seen["weak"][0][0].type == "system"
    assert seen["strong"][0][0].type == "human"
    assert seen["strong"][0][-1].content.startswith("Solution: ")


def test_each_model_is_cut_at_its_own_formats_delimiter() -> None:
    """A strong model may rewrite one line while the draft writes paragraphs."""
    from dataclasses import replace

    from langchain_trim.step_format import get_step_format

    stops: dict[str, list[Any]] = {"weak": [], "strong": []}
    prefills: list[str] = []

    class Recording(FakeStepModel):
        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> Any:
            stops[self.model_name].append(stop)
            if self.model_name == "strong":
                prefills.append(messages[-1].content)
            return super()._generate(messages, stop, run_manager, **kw)

    lines = replace(get_step_format("paragraphs"), name="one-line", delimiter="\n")
    weak = Recording(steps=["Two and two.", "So 2 + 2 = 5", "\\boxed{5}"], model_name="weak")
    strong = Recording(steps=["x", "y", "2 + 2 = 4"], model_name="strong")
    out = (
        create_trim_graph(
            weak,
            strong,
            KeywordPRM({"5": 0.1}),
            ThresholdPolicy(0.5),
            step_format="paragraphs",
            strong_step_format=lines,
        )
        .compile()
        .invoke({"question": "What is 2 + 2?"})
    )
    assert {tuple(s) for s in stops["weak"]} == {("\n\n",)}
    assert {tuple(s) for s in stops["strong"]} == {("\n",)}
    assert prefills[0].endswith("Two and two.\n")  # the strong model's own layout
    assert prefills[1].endswith("Two and two.\ny\n")
    # the draft's layout, with the strong model's lines as steps
    assert out["trim_solution"] == "Two and two.\n\ny\n\n2 + 2 = 4"


def test_unknown_step_format_is_rejected() -> None:
    from langchain_trim.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="unknown step format"):
        create_trim_graph(
            FakeStepModel(), FakeStepModel(), None, ThresholdPolicy(0), step_format="nope"
        )


def test_solve_names_its_missing_arguments() -> None:
    from langchain_trim import solve
    from langchain_trim.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="needs strong_model, prm, policy"):
        solve("1+1?", draft_model=FakeStepModel(steps=["x"]))
