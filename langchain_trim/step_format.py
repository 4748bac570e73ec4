"""Step formats: how a model is asked for steps, and how a step is cut.

TRIM routes *steps*, so the prompt decides whether there are steps to route.  The
official release asks for a solution "clearly and concisely" and pre-fills
``"Solution: "``; the small embedded models then write one terse line, and step
routing collapses into routing whole questions.  A :class:`StepFormat` names the
whole contract so it can be chosen, compared on dev data and recorded with results:

* the prompt: an optional system turn and the user turn (``{question}`` in it),
* how the next step is requested: **prefill** (the assistant turn is pre-filled with
  ``prefill`` and the accepted steps, the model continues it) or **instruct** (plain
  chat APIs get the accepted steps in the user turn and are asked for the next one),
* how a step is cut: generation stops at ``delimiter`` (a blank line by default),
* what a capped step does: a step that reaches the per-step token cap is kept and the
  next call *continues* it (the text is glued back without a delimiter); see
  :func:`langchain_trim.steps.render_solution`.

Built-in formats (:data:`STEP_FORMATS`): ``"release"`` (the official release's prompt,
kept by name for comparisons), ``"paragraphs"`` (a system prompt asking for one short
paragraph per step, blank lines between steps and a ``\\boxed{}`` answer: the format
under which the embedded models and typical instruct models write multi-step
solutions), ``"short-steps"`` and ``"lines"`` (the paragraphs prompt cut at every line:
the embedded strong model's format, so that a rewrite is one line, not a paragraph).
:func:`register_step_format` adds your own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langchain_trim.errors import InvalidInputError
from langchain_trim.steps import DEFAULT_DELIMITER

RequestMode = Literal["prefill", "instruct"]
"""How the next step is requested: continue a pre-filled assistant turn, or ask for it."""

RELEASE_USER = (
    "Solve the following math problem step by step, given in LaTeX format, clearly and "
    "concisely, and present the final answer as \\boxed{{X}}, where X is the fully "
    "simplified solution.\nQuestion: {question}"
)
"""The user turn of the official release."""

PARAGRAPHS_SYSTEM = (
    "You are a careful math tutor. Solve the problem by reasoning step by step. Write each "
    "step as one short paragraph that does one thing (one calculation or one deduction), "
    "and separate consecutive steps with a blank line. Finish with the final answer "
    "written as \\boxed{X}."
)
"""System turn of the ``paragraphs`` format: short steps, blank lines, a boxed answer."""

PARAGRAPHS_USER = "Question: {question}"

INSTRUCT_RULES = (
    "You write solutions to math problems one step at a time. Steps are separated by a "
    "blank line. When asked for the next step, reply with that single step only: no "
    "preamble, no step number, no later steps. When the step reaches the final answer, "
    "write it as \\boxed{X}."
)
"""What every format's instruct request adds to its system turn."""

INSTRUCT_USER = (
    "Question: {question}\n\nSteps so far:\n<steps>\n{steps}\n</steps>\n\nWrite step {number} only."
)
INSTRUCT_CONTINUE = (
    "Question: {question}\n\nSteps so far:\n<steps>\n{steps}\n</steps>\n\n"
    "Step {number} was cut off: continue it exactly where it stops."
)
_NO_STEPS = "(none yet)"


@dataclass(frozen=True)
class StepFormat:
    """A named way of asking a chat model for one step at a time.

    Attributes:
        name: registry key, recorded in traces and results.
        user: the user turn; ``{question}`` is replaced by the question.
        system: an optional system turn (prefill requests).
        prefill: assistant text before the first step in prefill requests.
        delimiter: the step separator at which generation stops.
        description: one line for ``trim formats`` and the docs.
    """

    name: str
    user: str
    system: str | None = None
    prefill: str = ""
    delimiter: str = DEFAULT_DELIMITER
    description: str = ""

    def __post_init__(self) -> None:
        if "{question}" not in self.user:
            raise InvalidInputError(f"step format {self.name!r}: user turn lacks {{question}}")
        if not self.delimiter:
            raise InvalidInputError(f"step format {self.name!r}: delimiter must be non-empty")

    def user_turn(self, question: str) -> str:
        return self.user.replace("{{", "{").replace("}}", "}").replace("{question}", question)

    def messages(
        self,
        question: str,
        prefix_text: str,
        n_steps: int,
        *,
        mode: RequestMode,
        continue_last: bool = False,
    ) -> list[BaseMessage]:
        """The chat messages that ask for the step after ``prefix_text``.

        ``prefix_text`` is the accepted solution so far, already rendered
        (:func:`~langchain_trim.steps.render_solution`); ``continue_last`` says that its
        last step was cut by the token cap and must be continued, not followed.
        """
        if mode == "prefill":
            out: list[BaseMessage] = []
            if self.system:
                out.append(SystemMessage(self.system))
            joint = "" if (continue_last or not prefix_text) else self.delimiter
            out += [
                HumanMessage(self.user_turn(question)),
                AIMessage(self.prefill + prefix_text + joint),
            ]
            return out
        system = f"{self.system}\n\n{INSTRUCT_RULES}" if self.system else INSTRUCT_RULES
        template = INSTRUCT_CONTINUE if continue_last else INSTRUCT_USER
        number = n_steps if continue_last else n_steps + 1
        user = template.format(question=question, steps=prefix_text or _NO_STEPS, number=number)
        return [SystemMessage(system), HumanMessage(user)]

    def parse(self, messages: Sequence[BaseMessage]) -> tuple[str, str] | None:
        """Inverse of :meth:`messages`: ``(question, solution so far)``, or ``None``.

        Fake and scripted models use it to know which step they are asked for.
        """
        humans = [m for m in messages if isinstance(m, HumanMessage)]
        if not humans:
            return None
        content = _content(humans[-1])
        if content.startswith("Question: ") and "\n\nSteps so far:\n<steps>\n" in content:
            body = content[len("Question: ") :]
            question, rest = body.split("\n\nSteps so far:\n<steps>\n", 1)
            steps = rest.split("\n</steps>", 1)[0]
            return question, "" if steps == _NO_STEPS else steps
        pre, post = self.user_turn("\x00").split("\x00")
        if not (content.startswith(pre) and content.endswith(post)):
            return None
        question = content[len(pre) : len(content) - len(post) if post else None]
        last = messages[-1] if messages else None
        if isinstance(last, AIMessage):
            filled = _content(last)
            if not filled.startswith(self.prefill):
                return None
            return question, filled[len(self.prefill) :]
        return question, ""


def _content(message: BaseMessage) -> str:
    return message.content if isinstance(message.content, str) else str(message.text)


RELEASE = StepFormat(
    name="release",
    user=RELEASE_USER,
    prefill="Solution: ",
    description="the official release's prompt and 'Solution: ' prefill (terse on small models)",
)
PARAGRAPHS = StepFormat(
    name="paragraphs",
    user=PARAGRAPHS_USER,
    system=PARAGRAPHS_SYSTEM,
    description="system prompt asking for one short paragraph per step, blank lines between",
)

SHORT_STEPS_SYSTEM = (
    "Solve the problem step by step. Each step is one short sentence with at most one "
    "calculation, and consecutive steps are separated by a blank line. Do not use lists, "
    "headings or code. Finish with the final answer written as \\boxed{X}."
)
"""System turn of the ``short-steps`` format: one sentence, one calculation per step."""

SHORT_STEPS = StepFormat(
    name="short-steps",
    user=PARAGRAPHS_USER,
    system=SHORT_STEPS_SYSTEM,
    description="system prompt asking for one sentence with at most one calculation per step",
)

LINES = dataclasses.replace(
    PARAGRAPHS, name="lines", delimiter="\n", description="the paragraphs prompt, one line per step"
)
"""The ``paragraphs`` prompt cut at every line: for a strong model that rewrites steps.

A 1.5B model writes 3–4 paragraphs per solution, so a rewritten paragraph costs about a
third of its whole solution; cut at lines, a rewrite is one line (~12% on GSM8K-train)
and the weak model goes on from there."""

STEP_FORMATS: dict[str, StepFormat] = {f.name: f for f in (RELEASE, PARAGRAPHS, SHORT_STEPS, LINES)}
"""Registered step formats by name."""

DEFAULT_STEP_FORMAT = "paragraphs"
"""The default format (chosen on dev data: ``benchmarks/step_formats``)."""


def register_step_format(fmt: StepFormat, *, replace: bool = False) -> StepFormat:
    """Add ``fmt`` to :data:`STEP_FORMATS` (refuses to shadow a name unless ``replace``)."""
    if fmt.name in STEP_FORMATS and not replace and STEP_FORMATS[fmt.name] != fmt:
        raise InvalidInputError(f"step format {fmt.name!r} is already registered")
    STEP_FORMATS[fmt.name] = fmt
    return fmt


def get_step_format(spec: str | StepFormat | None) -> StepFormat:
    """A registered format by name, a :class:`StepFormat` as is, ``None`` the default."""
    if isinstance(spec, StepFormat):
        return spec
    name = DEFAULT_STEP_FORMAT if spec is None else spec
    try:
        return STEP_FORMATS[name]
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"unknown step format {spec!r}; choose one of {sorted(STEP_FORMATS)}"
        ) from None


def parse_request(messages: Sequence[BaseMessage]) -> tuple[str, str]:
    """``(question, solution so far)`` of a step request in any registered format."""
    for fmt in STEP_FORMATS.values():
        parsed = fmt.parse(messages)
        if parsed is not None:
            return parsed
    humans = [m for m in messages if isinstance(m, HumanMessage)]
    return (_content(humans[-1]) if humans else ""), ""


__all__ = [
    "DEFAULT_STEP_FORMAT",
    "LINES",
    "PARAGRAPHS",
    "RELEASE",
    "SHORT_STEPS",
    "STEP_FORMATS",
    "RequestMode",
    "StepFormat",
    "get_step_format",
    "parse_request",
    "register_step_format",
]
