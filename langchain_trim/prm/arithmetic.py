"""An exact arithmetic verifier: a step that writes a false equation is wrong.

Small models slip on arithmetic ("50 + 15 + 30 = 105").  This checker finds chains like
``a op b op c = d`` in a step, evaluates the left side exactly with fractions and
compares it with the number on the right (to the precision the right side is written
in).  It cannot see wrong reasoning with right arithmetic, so it is a feature of the
trained probe and a standalone scorer, not a PRM on its own.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from langchain_trim.prm.base import BaseProcessRewardModel, PRMItem

_NUM = r"\d[\d,]*(?:\.\d+)?"
_TERM = rf"\(?\s*-?\$?{_NUM}%?\s*\)?"
_OP = r"\s*(?:[-+*/×÷x·]|\\times|\\cdot|\\div)\s*"
_EQUATION = re.compile(
    rf"(?<![\w.^])(?P<lhs>{_TERM}(?:{_OP}{_TERM})+)\s*=\s*\$?(?P<rhs>-?{_NUM})(?P<pct>%?)(?![\d.]*\s*[*/×÷^])"
)
_FRAC = re.compile(r"\\[dt]?frac\{(\d+(?:\.\d+)?)\}\{(\d+(?:\.\d+)?)\}")


@dataclass(frozen=True)
class ArithmeticCheck:
    """What the verifier found in one step."""

    checked: int
    """Equations it could evaluate."""
    false: int
    """Equations whose two sides differ."""


def _to_python(expr: str) -> str:
    expr = expr.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/")
    expr = expr.replace("×", "*").replace("·", "*").replace("÷", "/").replace("$", "")
    expr = re.sub(r"(?<=\d)\s*x\s*(?=[\d(])", "*", expr)
    expr = re.sub(r"(\d),(?=\d{3}\b)", r"\1", expr)
    expr = re.sub(rf"({_NUM})%", r"(\1/100)", expr)
    return expr


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand)
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.Div):
            if right == 0:
                raise ZeroDivisionError
            return left / right
    raise ValueError("unsupported expression")


def evaluate(expr: str) -> Fraction:
    """Evaluate ``+ - * /`` arithmetic (with ``×``, ``÷``, ``%``, thousands commas) exactly.

    >>> evaluate("3 × 4 + 1/2")
    Fraction(25, 2)
    >>> evaluate("1,200 * 5%")
    Fraction(60, 1)
    """
    return _eval(ast.parse(_to_python(expr).strip(), mode="eval"))


def _matches(value: Fraction, rhs: str, percent: bool) -> bool:
    """Equal up to the precision the right side is written in ("= 3.33" for 10/3)."""
    target = Fraction(rhs.replace(",", ""))
    if percent:
        target /= 100
    decimals = len(rhs.split(".", 1)[1]) if "." in rhs else 0
    return abs(value - target) <= Fraction(1, 2 * 10**decimals) * (
        Fraction(1, 100) if percent else 1
    )


def check_step(text: str) -> ArithmeticCheck:
    """Check every evaluable equation in a step.

    >>> check_step("So 50 + 15 + 30 = 105 clips.")
    ArithmeticCheck(checked=1, false=1)
    >>> check_step("She has 48 / 2 = 24 and 48 + 24 = 72.")
    ArithmeticCheck(checked=2, false=0)
    """
    text = _FRAC.sub(r"(\1/\2)", text)
    checked = false = 0
    for match in _EQUATION.finditer(text):
        lhs = match.group("lhs")
        try:
            value = evaluate(lhs)
        except (ValueError, SyntaxError, ZeroDivisionError, TypeError):
            continue
        checked += 1
        if not _matches(value, match.group("rhs"), bool(match.group("pct"))):
            false += 1
    return ArithmeticCheck(checked=checked, false=false)


class ArithmeticPRM(BaseProcessRewardModel):
    """Scores ``wrong_score`` for a step with a false equation, ``ok_score`` otherwise.

    >>> ArithmeticPRM().score("q", ["2 + 2 = 4", "2 + 2 = 5"])
    [0.9, 0.1]
    """

    def __init__(self, *, ok_score: float = 0.9, wrong_score: float = 0.1) -> None:
        self.ok_score = ok_score
        self.wrong_score = wrong_score
        self.name = "arithmetic"

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        return [
            [self.wrong_score if check_step(s).false else self.ok_score for s in steps]
            for _, steps in items
        ]


__all__ = ["ArithmeticCheck", "ArithmeticPRM", "check_step", "evaluate"]
