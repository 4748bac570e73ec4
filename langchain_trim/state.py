"""The TRIM graph state: accepted steps with provenance, the pending draft, and spend.

Every key the router owns is prefixed ``trim_`` so the subgraph can sit inside a parent
graph that has its own ``steps``/``budget``/``cost`` keys.  What reaches a caller or a
parent is declared by the output schemas (:class:`TrimOutput`, :class:`TrimOnlyOutput`):
``trim_*`` keys and, depending on ``output_mode``, ``messages`` — never ``question`` or
the input ``trim_budget``.  Accumulating keys use idempotent reducers (a trajectory
replaces the previous question's steps, spend is replaced as a whole), so a parent that
receives the subgraph's full output never counts anything twice or mixes two questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from langchain_core.messages import AnyMessage
from langgraph.channels import EphemeralValue
from langgraph.graph.message import add_messages
from langgraph.managed import RemainingSteps
from typing_extensions import NotRequired, TypedDict

Author = Literal["weak", "strong"]
"""Which model wrote an accepted step."""

Action = Literal["continue", "escalate"]
"""A routing decision: keep the weak draft, or have the strong model rewrite the step."""

StopReason = Literal["delimiter", "eos", "length"]
"""Why a model stopped writing a step: the step delimiter, end of text, or the token cap."""

Termination = Literal[
    "final_answer", "end_of_text", "max_steps", "token_cap", "recursion_limit", "step_token_cap"
]
"""Why a trajectory ended: a boxed answer, end of text, ``max_steps``, ``max_total_tokens``,
or LangGraph's ``recursion_limit`` about to be reached (the graph ends cleanly with the
steps it has instead of raising ``GraphRecursionError``).  (``step_token_cap`` only appears
in traces of versions before 0.2, where a capped step ended the solution; a capped step
is now continued.)"""

OutputMode = Literal["full", "last_message", "trim_only"]
"""What the graph hands back to its caller or parent besides the ``trim_*`` keys:
``"full"`` the whole ``messages`` history with the solution appended, ``"last_message"``
only the solution message, ``"trim_only"`` no ``messages`` at all."""


class StepRecord(TypedDict):
    """One accepted step with its provenance."""

    index: int
    """0-based position in the solution."""
    text: str
    author: Author
    model: str
    """Name of the model that wrote ``text``."""
    tokens: int
    """Output tokens decoded for ``text``."""
    tokens_estimated: bool
    """True when ``tokens`` was counted locally because the model reported no usage."""
    stop: StopReason
    score: float | None
    """PRM score of the accepted text (a strong step is scored by the next PRM call)."""
    draft_score: float | None
    """PRM score of the weak draft that the router saw (``None`` when not scored)."""
    decision: Action
    """What the policy chose, after the budget check."""
    reason: str
    """Human-readable reason for the decision."""
    draft: str | None
    """The discarded weak draft when the step was escalated, else ``None``."""
    draft_tokens: int
    """Tokens of the weak draft (discarded when escalated)."""
    budget_blocked: bool
    """True when the policy asked to escalate but the budget could not cover a strong step."""
    fallback: str | None
    """Set when a documented fallback kept the draft (``prm_error: ...``, ``strong_error: ...``)."""


class PendingDraft(TypedDict):
    """The weak draft of the current step while it is scored and routed."""

    index: int
    text: str
    model: str
    tokens: int
    tokens_estimated: bool
    stop: StopReason
    logprobs: NotRequired[list[float] | None]
    """Token log-probabilities of the draft, when the model reports them."""
    score: NotRequired[float | None]
    decision: NotRequired[Action]
    reason: NotRequired[str]
    budget_blocked: NotRequired[bool]
    fallback: NotRequired[str | None]


class TrimSpend(TypedDict):
    """Running totals for one question."""

    strong_tokens: int
    """Output tokens decoded by the strong model: the cost TRIM optimises."""
    strong_tokens_estimated: bool
    weak_tokens: int
    """Output tokens decoded by the weak model, discarded drafts included."""
    weak_tokens_estimated: bool
    discarded_draft_tokens: int
    strong_calls: int
    weak_calls: int
    prm_calls: int
    escalations: int
    budget_blocked: int
    fallbacks: int
    usage_flags: NotRequired[int]
    """Model answers whose reported usage could not be trusted (counted locally)."""
    strong_untrusted: NotRequired[bool]
    """The strong model wrote past ``max_tokens`` or over-reported: no more escalations."""
    overspent: NotRequired[bool]
    """Strong tokens exceeded the budget (only a model that ignores ``max_tokens`` can);
    also the top-level output key ``trim_overspent``."""
    budget: NotRequired[int | None]
    """The strong-token budget this question ran under (``None``: unlimited)."""
    strong_errors: NotRequired[int]
    """Escalations whose strong call failed after every attempt (the draft was kept)."""
    prm_errors: NotRequired[int]
    """PRM calls that raised, timed out or returned unusable scores."""
    abandoned_strong_calls: NotRequired[int]
    """Strong calls in flight when the process stopped (found on resume from a
    checkpoint): each is charged its ``max_tokens``, since the provider may have billed it."""


def new_spend() -> TrimSpend:
    """All-zero spend."""
    return TrimSpend(
        strong_tokens=0,
        strong_tokens_estimated=False,
        weak_tokens=0,
        weak_tokens_estimated=False,
        discarded_draft_tokens=0,
        strong_calls=0,
        weak_calls=0,
        prm_calls=0,
        escalations=0,
        budget_blocked=0,
        fallbacks=0,
        usage_flags=0,
        strong_untrusted=False,
        overspent=False,
        budget=None,
        strong_errors=0,
        prm_errors=0,
        abandoned_strong_calls=0,
    )


def merge_steps(
    left: Sequence[StepRecord] | None, right: Sequence[StepRecord] | None
) -> list[StepRecord]:
    """Reducer for ``trim_steps``: a trajectory from step 0 replaces, other updates upsert.

    An update whose first record is step 0 is a whole trajectory (a new question's first
    step, or a TRIM subgraph's final output reaching its parent): it replaces what was
    there, so the steps of two questions never mix.  Other updates upsert by ``index``.
    Idempotent: applying the same update twice leaves one copy, which is what makes the
    subgraph safe to nest (LangGraph re-applies a subgraph's output in the parent).

    >>> a, b = {"index": 0, "text": "x"}, {"index": 1, "text": "y"}
    >>> merge_steps([a], [b])  # doctest: +NORMALIZE_WHITESPACE
    [{'index': 0, 'text': 'x'}, {'index': 1, 'text': 'y'}]
    >>> merge_steps([a, b], [{"index": 0, "text": "new question"}])
    [{'index': 0, 'text': 'new question'}]
    """
    right = list(right or [])
    if right and right[0]["index"] == 0:
        left = None
    merged: dict[int, StepRecord] = {s["index"]: s for s in left or []}
    for step in right:
        merged[step["index"]] = step
    return [merged[i] for i in sorted(merged)]


class TrimInput(TypedDict, total=False):
    """What the graph reads: a question, or a conversation ending in a human turn."""

    question: str
    messages: Annotated[list[AnyMessage], add_messages]
    trim_budget: int | None
    """Hard cap on strong-model output tokens for this question (``None`` or absent: the
    factory's or ``TrimContext``'s default).  Read once per question: it does not carry
    over to the next question on a thread."""


class TrimOnlyOutput(TypedDict, total=False):
    """The ``trim_*`` keys the graph returns (``output_mode="trim_only"``)."""

    trim_steps: Annotated[list[StepRecord], merge_steps]
    trim_spend: TrimSpend
    trim_final_answer: str | None
    trim_solution: str | None
    trim_termination: Termination | None
    trim_overspent: bool
    """True when the strong model spent more than the budget (it ignored ``max_tokens``)."""


class TrimOutput(TrimOnlyOutput, total=False):
    """What the graph returns with ``output_mode="full"``/``"last_message"``."""

    messages: Annotated[list[AnyMessage], add_messages]


class TrimState(TrimOutput, total=False):
    """Full state schema of the TRIM graph (input, output and internal keys).

    A custom ``state_schema`` must declare every key of this one (subclass it).
    """

    question: str
    trim_budget: Annotated[int | None, EphemeralValue]
    """The input budget, visible to ``prepare`` only (the resolved one is in
    ``trim_spend["budget"]``)."""
    trim_draft: PendingDraft | None
    trim_remaining_steps: RemainingSteps
    """LangGraph's managed count of super-steps left before the recursion limit."""


__all__ = [
    "Action",
    "Author",
    "OutputMode",
    "PendingDraft",
    "StepRecord",
    "StopReason",
    "Termination",
    "TrimInput",
    "TrimOnlyOutput",
    "TrimOutput",
    "TrimSpend",
    "TrimState",
    "merge_steps",
    "new_spend",
]
