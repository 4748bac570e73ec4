"""A scripted weak/strong/PRM setting that exercises the evaluation pipeline in seconds.

``trim eval --fake`` and the pipeline tests need models that behave like a real pair
without weights: the weak model sometimes slips on a step and then boxes a wrong answer,
the strong model is always right, and the PRM usually (not always) gives slips a low
score.  Everything is a deterministic function of the question text, so a run is
reproducible, caches hit, and a threshold sweep traces a real cost/accuracy curve.

The models subclass :class:`~langchain_trim.testing.FakeStepModel` and add their name to
``_identifying_params``, which makes LangChain's cache key tell the weak and the strong
fake apart (plain ``FakeStepModel`` instances share one key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_trim.policies.baselines import uniform
from langchain_trim.prm.base import FunctionPRM
from langchain_trim.testing import FakeStepModel

SLIP = "(slip)"
"""Marker of a wrong weak step (the fake PRM reads it; a real one would not need to)."""


class ScriptedModel(FakeStepModel):
    """A :class:`FakeStepModel` whose cache identity includes its name."""

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}


def _wrong(gold: str) -> str:
    return "-12345" if gold.strip() != "-12345" else "-54321"


@dataclass
class FakeSetting:
    """Weak, strong and PRM of the scripted setting (same shape as ``LocalSetting``)."""

    weak: ScriptedModel
    strong: ScriptedModel
    prm: FunctionPRM


def fake_setting(
    answers: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    slip_rate: float = 0.5,
    missed_slip_rate: float = 0.2,
    latency: float = 0.0,
) -> FakeSetting:
    """Scripted models for questions with known gold answers.

    Args:
        answers: question → gold answer (or ``(question, answer)`` pairs).
        slip_rate: share of questions on which the weak model slips at step 2 (and then
            boxes a wrong answer unless that step was rewritten).
        missed_slip_rate: share of slips the fake PRM scores high (missed errors).
        latency: seconds per model call (to exercise concurrency).

    >>> s = fake_setting({"1 + 1?": "2"}, slip_rate=1.0, missed_slip_rate=0.0)
    >>> from langchain_trim import create_trim_graph
    >>> from langchain_trim.policies import ThresholdPolicy
    >>> g = create_trim_graph(s.weak, s.strong, s.prm, ThresholdPolicy(0.5)).compile()
    >>> out = g.invoke({"question": "1 + 1?"})
    >>> out["trim_final_answer"], [x["author"] for x in out["trim_steps"]]
    ('2', ['weak', 'strong', 'weak'])
    >>> g = create_trim_graph(s.weak, s.strong, s.prm, ThresholdPolicy(0)).compile()
    >>> g.invoke({"question": "1 + 1?"})["trim_final_answer"]
    '-12345'
    """
    gold = dict(answers.items() if isinstance(answers, Mapping) else answers)

    def slips(question: str) -> bool:
        return uniform("slip", question) < slip_rate

    def weak(question: str, accepted: Sequence[str]) -> str | None:
        answer = gold.get(question, "0")
        n = len(accepted)
        words = 3 + int(uniform("len", question) * 6)
        if n == 0:
            return "Read the problem and name the unknown " + " ".join(["quantity"] * words) + "."
        if n == 1:
            if slips(question):
                return f"Combine the numbers {SLIP} " + " ".join(["roughly"] * words) + "."
            return "Combine the numbers " + " ".join(["carefully"] * words) + "."
        if n == 2:
            derailed = SLIP in accepted[1]
            return f"The answer is \\boxed{{{_wrong(answer) if derailed else answer}}}."
        return None

    def strong(question: str, accepted: Sequence[str]) -> str | None:
        answer = gold.get(question, "0")
        n = len(accepted)
        if n == 0:
            return "First we identify exactly what is asked and which quantities are given."
        if n == 1:
            return "Then we combine the given quantities step by step, checking each operation."
        if n == 2:
            return f"Therefore the final answer is \\boxed{{{answer}}}."
        return None

    def score(question: str, steps: Sequence[str]) -> list[float]:
        out = []
        for step in steps:
            u = uniform("score", question, step)
            if SLIP in step and uniform("missed", question) >= missed_slip_rate:
                out.append(round(0.05 + 0.4 * u, 4))
            else:
                out.append(round(0.5 + 0.49 * u, 4))
        return out

    return FakeSetting(
        weak=ScriptedModel(responder=weak, model_name="fake-weak", latency=latency),
        strong=ScriptedModel(responder=strong, model_name="fake-strong", latency=latency),
        prm=FunctionPRM(score, name="fake-prm"),
    )


__all__ = ["SLIP", "FakeSetting", "ScriptedModel", "fake_setting"]
