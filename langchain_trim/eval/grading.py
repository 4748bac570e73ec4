r"""Final-answer extraction and equivalence checking.

Accuracy is the only quality signal TRIM optimises, so a grader that calls ``0.5`` and
``\frac{1}{2}`` different answers would bias every curve.  :func:`is_equivalent` uses
math-verify (symbolic, handles sets, intervals, tuples, percentages) and falls back to a
small normaliser (:func:`fallback_equivalent`) when math-verify is not installed, raises,
times out, or cannot parse either side.
"""

from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction

from typing_extensions import TypedDict, Unpack

from langchain_trim.steps import extract_boxed

logger = logging.getLogger(__name__)

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def extract_answer(text: str | None) -> str | None:
    r"""The final answer of a solution: last ``\boxed{}``, else GSM8K ``####``, else last number.

    >>> extract_answer(r"so $x = \boxed{\frac{1}{2}}$.")
    '\\frac{1}{2}'
    >>> extract_answer("18 eggs\n#### 1,018")
    '1018'
    >>> extract_answer("She pays 3 dollars, then 12.5 dollars.")
    '12.5'
    >>> extract_answer("no idea") is None
    True
    """
    if not text:
        return None
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        first = tail.splitlines()[0].strip() if tail else ""
        if first:
            return first.replace(",", "").rstrip(".")
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(",", "").rstrip(".")
    return None


# -- fallback normaliser -------------------------------------------------------------------
_TEXT_CMD = re.compile(
    r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}"
)
_SPACING = ("\\!", "\\,", "\\;", "\\:", "\\ ", "~", "\\displaystyle")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")


def normalize_answer(text: str) -> str:
    r"""Canonical string form of a LaTeX answer, for the fallback comparison.

    Strips ``$``, ``\text{}`` wrappers, ``\left``/``\right``, spacing commands, degree
    marks, whitespace and a trailing period; ``\dfrac``/``\tfrac`` become ``\frac``;
    ``\frac12`` becomes ``\frac{1}{2}``; ``1,000`` becomes ``1000``; a single
    ``x = ...`` keeps its right-hand side.

    >>> normalize_answer(r"$\left( 3, \dfrac{\pi}{2} \right)$.")
    '(3,\\frac{\\pi}{2})'
    >>> normalize_answer(r"\text{Evelyn}")
    'Evelyn'
    """
    s = text.strip().replace("\\$", "").replace("$", "")
    previous = None
    while previous != s:
        previous = s
        s = _TEXT_CMD.sub(r"\1", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    for token in ("^{\\circ}", "^\\circ", "\\circ", "\\degree"):
        s = s.replace(token, "")
    for token in _SPACING:
        s = s.replace(token, "")
    s = s.replace("\\%", "%")
    s = re.sub(r"\s+", "", s)
    s = s.rstrip(".")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\d)", r"\\sqrt{\1}", s)
    assign = re.fullmatch(r"[A-Za-z](?:_\{?\w+\}?)?=([^=]+)", s)
    if assign:
        s = assign.group(1)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s


def _numeric_values(s: str) -> list[Fraction]:
    """Values an answer string may stand for: ``50%`` is both 50 and 0.5."""
    percent = s.endswith("%")
    core = s[:-1] if percent else s
    sign = 1
    if core.startswith("-"):
        sign, core = -1, core[1:]
    elif core.startswith("+"):
        core = core[1:]
    value: Fraction | None = None
    frac = re.fullmatch(r"\\frac\{(-?[\d.]+)\}\{(-?[\d.]+)\}", core) or re.fullmatch(
        r"(-?[\d.]+)/(-?[\d.]+)", core
    )
    try:
        if frac:
            den = Fraction(frac.group(2))
            value = Fraction(frac.group(1)) / den if den != 0 else None
        elif re.fullmatch(r"\d+(\.\d*)?|\.\d+", core):
            value = Fraction(core)
    except (ValueError, ZeroDivisionError):
        value = None
    if value is None:
        return []
    value *= sign
    return [value, value / 100] if percent else [value]


def _close(a: Fraction, b: Fraction) -> bool:
    scale: Fraction = max(Fraction(1), abs(a), abs(b))
    return abs(a - b) <= Fraction(1, 10**6) * scale


def _split_top(s: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _group(s: str) -> tuple[str, str, list[str]] | None:
    """``(open, close, items)`` for a bracketed or bare comma list, else ``None``."""
    if s.startswith("\\{") and s.endswith("\\}") and len(s) >= 4 and _balanced(s[2:-2]):
        return "\\{", "\\}", _split_top(s[2:-2])
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _balanced(s[1:-1]):
        return s[0], s[-1], _split_top(s[1:-1])
    items = _split_top(s)
    return ("", "", items) if len(items) > 1 else None


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            return False
    return depth == 0


def _equal(a: str, b: str) -> bool:
    if a == b:
        return True
    va, vb = _numeric_values(a), _numeric_values(b)
    if va and vb:
        return any(_close(x, y) for x in va for y in vb)
    ga, gb = _group(a), _group(b)
    if ga is None or gb is None or len(ga[2]) != len(gb[2]):
        return False
    (oa, ca, ia), (ob, cb, ib) = ga, gb
    if oa in ("", "\\{") and ob in ("", "\\{"):
        remaining = list(ib)
        for item in ia:
            match = next((j for j, other in enumerate(remaining) if _equal(item, other)), None)
            if match is None:
                return False
            remaining.pop(match)
        return True
    if (oa, ca) != (ob, cb):
        return False
    return all(_equal(x, y) for x, y in zip(ia, ib, strict=True))


def fallback_equivalent(pred: str, gold: str) -> bool:
    r"""Equivalence without math-verify: normalised strings, then numbers, then lists.

    Numbers compare exactly as fractions (relative tolerance 1e-6); a percentage matches
    either its value or its value / 100.  Bracketed tuples and intervals compare in order
    with the same brackets; ``\{...\}`` sets and bare comma lists compare unordered.

    >>> fallback_equivalent(r"\dfrac{1}{2}", "0.5"), fallback_equivalent("50\\%", "0.5")
    (True, True)
    >>> fallback_equivalent("(1, 2)", "(2, 1)"), fallback_equivalent("1, -2", "-2,1")
    (False, True)
    """
    a, b = normalize_answer(pred), normalize_answer(gold)
    if not a or not b:
        return False
    return _equal(a, b)


# -- math-verify ---------------------------------------------------------------------------
def _wrap(answer: str) -> str:
    inner = answer.strip()
    while len(inner) >= 2 and inner.startswith("$") and inner.endswith("$"):
        inner = inner[1:-1].strip()
    return f"${inner}$"


def math_verify_equivalent(pred: str, gold: str, timeout_seconds: int | None = 5) -> bool | None:
    """math-verify's verdict, or ``None`` when it is missing, fails, times out or can't parse.

    math-verify times out with ``signal.alarm``, which only works in the main thread; in
    any other thread it runs without a timeout (its own advice).
    """
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    timeout = timeout_seconds if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(_wrap(gold), parsing_timeout=timeout, raise_on_error=True)
        pred_parsed = parse(_wrap(pred), parsing_timeout=timeout, raise_on_error=True)
        if not gold_parsed or not pred_parsed:
            return None
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout, raise_on_error=True))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # math-verify's TimeoutException is a BaseException
        logger.debug("math-verify failed on %r vs %r: %s", pred, gold, exc)
        return None


def is_equivalent(
    pred: str | None,
    gold: str,
    *,
    use_math_verify: bool = True,
    timeout_seconds: int | None = 5,
) -> bool:
    r"""Whether the predicted final answer equals the reference answer.

    Order: identical after :func:`normalize_answer` → math-verify's verdict → the
    fallback normaliser (only when math-verify gave no verdict).

    >>> is_equivalent(r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})")
    True
    >>> is_equivalent("7", "8"), is_equivalent(None, "8")
    (False, False)
    """
    if pred is None:
        return False
    pred, gold = pred.strip(), gold.strip()
    if not pred or not gold:
        return False
    if normalize_answer(pred) == normalize_answer(gold):
        return True
    if use_math_verify:
        verdict = math_verify_equivalent(pred, gold, timeout_seconds)
        if verdict is not None:
            return verdict
    return fallback_equivalent(pred, gold)


class GradingOptions(TypedDict, total=False):
    """How :func:`is_equivalent` decides; :func:`grade` passes them on."""

    use_math_verify: bool
    """Ask math-verify when the normalised strings differ (default true)."""
    timeout_seconds: int | None
    """math-verify's time limit (default 5 s; ``None``: none)."""


def grade(response: str | None, gold: str, **options: Unpack[GradingOptions]) -> bool:
    r"""Extract the final answer from a full response and compare it with ``gold``.

    >>> grade(r"so the total is \boxed{18}.", "18")
    True
    """
    return is_equivalent(extract_answer(response), gold, **options)


__all__ = [
    "GradingOptions",
    "extract_answer",
    "fallback_equivalent",
    "grade",
    "is_equivalent",
    "math_verify_equivalent",
    "normalize_answer",
]
