"""First-error labels for a model's own solutions, read off a reference solution's values.

Why: a probe PRM needs step labels from the domain it will score, and hand labels exist
only for test sets.  A worked reference solution (GSM8K's ``48/2 = <<48/2=24>>24``
annotations, or any solution with its intermediate numbers) labels a model's solution
cheaply: the first step that states a result matching none of the question's and the
reference's numbers, or writes a false equation, is the first error; a solution with the
right final answer and no such step is right throughout.  Solutions that reach the right
answer through other numbers, or miss it without a located error, stay unlabelled.

These labels are late rather than wrong: a reasoning slip becomes visible only when its
number does, so a step before the label may already be wrong.  Measure a probe trained
on them against hand labels (``benchmarks/prm_quality.py`` does, on ProcessBench).

>>> weak_first_error(
...     "Natalia sold 48 clips in April and half as many in May. How many in total?",
...     ["In May she sold 48 / 2 = 24 clips.", "In total 48 + 24 = 70 clips. \\\\boxed{70}"],
...     "48/2 = <<48/2=24>>24, 48+24 = <<48+24=72>>72",
...     answer=72,
... )
1
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from langchain_trim.prm.arithmetic import check_step
from langchain_trim.steps import extract_boxed

_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")
_FRACTION = re.compile(r"\\[dt]?frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}")
_RESULT = re.compile(
    r"(?:=|\\approx|\\boxed\{)\s*\(?\s*"
    r"(\\[dt]?frac\{[^{}]*\}\{[^{}]*\}|-?\d[\d,]*(?:\.\d+)?)"
)
_DECORATION = re.compile(r"\\[()\[\]]|\\\$|\$|\\[,!;]")
_TEXT_COMMAND = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{[^{}]*\}")
ALWAYS_ALLOWED = (0.0, 1.0, 2.0, 100.0)
"""Numbers any step may state (counting, halving, per cent) without a reference."""


def numbers(text: str) -> list[float]:
    """Every number written in ``text``: integers, decimals, thousands commas, ``\\frac``.

    >>> numbers("1,200 apples cost $3.50, i.e. \\\\frac{7}{2} each")
    [3.5, 1200.0, 3.5]
    """
    out = []
    for a, b in _FRACTION.findall(text):
        if float(b) != 0:
            out.append(float(a) / float(b))
    for token in _NUMBER.findall(_FRACTION.sub(" ", text)):
        try:
            out.append(float(token.replace(",", "")))
        except ValueError:  # pragma: no cover - the pattern only matches numbers
            continue
    return out


def stated_results(step: str) -> list[float]:
    """The numbers a step states as results: right after ``=``/``\\approx``, and boxed.

    >>> stated_results("So \\\\( 3 \\\\times 4 = 12 \\\\) and the answer is \\\\boxed{12}.")
    [12.0, 12.0]
    """
    text = _TEXT_COMMAND.sub(" ", _DECORATION.sub(" ", step))
    found: list[float] = []
    for token in _RESULT.findall(text):
        found += numbers(token)
    return found


def reference_values(question: str, reference: str) -> set[float]:
    """The numbers of the question and of the reference solution (``<<``/``>>`` dropped)."""
    return set(numbers(question)) | set(numbers(reference.replace("<<", " ").replace(">>", " ")))


def _known(x: float, values: Iterable[float]) -> bool:
    """``x`` is one of ``values``, also read as a percentage (``0.25`` ~ ``25``)."""
    for v in values:
        for cand in (v, v * 100, v / 100):
            tolerance = 0.005 if abs(cand) < 1e4 else 1e-6 * abs(cand)
            if abs(x - cand) <= tolerance:
                return True
    return False


def contradicts(step: str, values: Iterable[float]) -> bool:
    """The step writes a false equation or states a result that is none of ``values``.

    >>> contradicts("48 / 2 = 25", {48.0, 2.0, 24.0}), contradicts("48 / 2 = 24", {24.0})
    (True, False)
    """
    allowed = list(values)
    return bool(check_step(step).false) or any(not _known(x, allowed) for x in stated_results(step))


def final_answer(steps: Sequence[str]) -> float | None:
    """The last number inside the last ``\\boxed{}`` of the solution, if any."""
    for step in reversed(steps):
        boxed = extract_boxed(step)
        if boxed is not None:
            found = numbers(boxed)
            return found[-1] if found else None
    return None


def weak_first_error(
    question: str,
    steps: Sequence[str],
    reference: str,
    *,
    answer: float,
) -> int | None:
    """Index of the first wrong step, ``-1`` if the solution is right, ``None`` if unknown.

    A step is wrong when it writes a false equation (:func:`check_step`) or states a
    result that is none of the question's or the reference's numbers.
    """
    values = reference_values(question, reference) | set(ALWAYS_ALLOWED)
    first_bad = None
    for i, step in enumerate(steps):
        if contradicts(step, values):
            first_bad = i
            break
    got = final_answer(steps)
    correct = got is not None and abs(got - answer) <= 1e-6 * max(1.0, abs(answer))
    if correct:
        return -1 if first_bad is None else None
    return first_bad


__all__ = [
    "ALWAYS_ALLOWED",
    "contradicts",
    "final_answer",
    "numbers",
    "reference_values",
    "stated_results",
    "weak_first_error",
]
