"""Answer extraction and equivalence: math-verify on real answers, and the fallback path."""

from __future__ import annotations

import json
import sys
import threading
from itertools import pairwise
from pathlib import Path

import pytest

from langchain_trim.eval import grading
from langchain_trim.eval.grading import (
    extract_answer,
    fallback_equivalent,
    grade,
    is_equivalent,
    math_verify_equivalent,
    normalize_answer,
)

DATA = Path("/work/shared/data")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared benchmark data not present")


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


@pytest.fixture
def no_math_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``from math_verify import ...`` fail, as when the package is not installed."""
    monkeypatch.setitem(sys.modules, "math_verify", None)


# Pairs (prediction, gold, expected) built on MATH-500 answers: LaTeX, fractions,
# intervals, sets, tuples.  The fallback must get every one right too.
CASES = [
    (r"(3,\frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", True),
    (r"\dfrac{14}{3}", r"\frac{14}{3}", True),
    ("14/3", r"\frac{14}{3}", True),
    (r"\frac{3}{14}", r"\frac{14}{3}", False),
    ("0.15", "0.15", True),
    (r"\frac{3}{20}", "0.15", True),
    ("15\\%", "0.15", True),
    ("1.25", r"\frac{5}{4}", True),
    ("(3, 4]", "(3,4]", True),
    ("(3,4)", "(3,4]", False),
    (r"\left(\frac{3}{5},\frac{8}{3}\right]", r"\left(\frac{3}{5},\frac{8}{3}\right]", True),
    ("-2, 1", "1,-2", True),
    ("3,5,7", "3, 5, 7", True),
    ("(-2,1)", "(1,-2)", False),
    ("(6,31,-1)", "(6,31,-1)", True),
    ("(6,-1,31)", "(6,31,-1)", False),
    (r"\text{Evelyn}", r"\text{Evelyn}", True),
    ("Evelyn", r"\text{Evelyn}", True),
    ("90", r"90^\circ", True),
    ("x=5", "x=5", True),
    ("5", "x=5", True),
    ("13,535", "13535", True),
    ("13535.", "13535", True),
    (r"$-\frac{\pi}{6}$", r"-\frac{\pi}{6}", True),
    ("7", "8", False),
]


@pytest.mark.parametrize(("pred", "gold", "expected"), CASES)
def test_is_equivalent_with_math_verify(pred: str, gold: str, expected: bool) -> None:
    pytest.importorskip("math_verify")
    assert is_equivalent(pred, gold) is expected


@pytest.mark.parametrize(("pred", "gold", "expected"), CASES)
def test_fallback_normaliser(pred: str, gold: str, expected: bool, no_math_verify: None) -> None:
    assert math_verify_equivalent(pred, gold) is None
    assert is_equivalent(pred, gold) is expected
    assert fallback_equivalent(pred, gold) is expected


def test_fallback_when_math_verify_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    mv = pytest.importorskip("math_verify")

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("sympy exploded")

    monkeypatch.setattr(mv, "verify", boom)
    assert math_verify_equivalent(r"\dfrac{1}{2}", "0.5") is None
    assert is_equivalent(r"\dfrac{1}{2}", "0.5") is True
    assert is_equivalent("0.4", "0.5") is False


def test_fallback_when_math_verify_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    mv = pytest.importorskip("math_verify")
    from math_verify.errors import TimeoutException

    def slow(*args: object, **kwargs: object) -> None:
        raise TimeoutException("timed out")

    monkeypatch.setattr(mv, "parse", slow)
    assert math_verify_equivalent("1", "1.0") is None
    assert is_equivalent("1", "1.0") is True


def test_math_verify_off_the_main_thread() -> None:
    pytest.importorskip("math_verify")
    out: list[bool] = []
    worker = threading.Thread(target=lambda: out.append(is_equivalent("1/2", "0.5")))
    worker.start()
    worker.join()
    assert out == [True]


def test_extract_answer() -> None:
    assert extract_answer(r"a \boxed{1} then \boxed{\frac{a}{b^{2}}}.") == r"\frac{a}{b^{2}}"
    assert extract_answer("work\n#### 1,234\nextra") == "1234"
    assert extract_answer("it costs $1,200 or 3.5.") == "3.5"
    assert extract_answer("t = -7") == "-7"
    assert extract_answer("") is None and extract_answer(None) is None
    assert extract_answer("no digits") is None


def test_normalize_answer() -> None:
    assert normalize_answer(r"\text{(C)}") == "(C)"
    assert normalize_answer(r"\frac12") == r"\frac{1}{2}"
    assert normalize_answer(r"\sqrt2") == r"\sqrt{2}"
    assert normalize_answer(r"\$ 18.") == "18"
    assert normalize_answer(r"10\,000") == "10000"


def test_empty_and_none() -> None:
    assert is_equivalent(None, "1") is False
    assert is_equivalent("  ", "1") is False
    assert fallback_equivalent("", "") is False
    assert grade(None, "1") is False


@needs_data
def test_math500_gold_answers_grade_themselves() -> None:
    pytest.importorskip("math_verify")
    for row in _rows("math500.jsonl"):
        gold = row["answer"]
        assert grade(f"Therefore the answer is $\\boxed{{{gold}}}$.", gold), gold
        assert grade(row["solution"], gold), gold


@needs_data
def test_math500_gold_answers_fallback(no_math_verify: None) -> None:
    for row in _rows("math500.jsonl"):
        gold = row["answer"]
        assert is_equivalent(f"${gold}$.", gold), gold
        assert is_equivalent(gold.replace(r"\frac", r"\dfrac"), gold), gold


@needs_data
def test_math500_wrong_answers_are_rejected() -> None:
    pytest.importorskip("math_verify")
    rows = _rows("math500.jsonl")
    numeric = [r["answer"] for r in rows if r["answer"].isdigit()][:40]
    for a, b in pairwise(numeric):
        assert is_equivalent(a, b) is (int(a) == int(b))


@needs_data
def test_gsm8k_reference_solutions_grade_correct() -> None:
    rows = _rows("gsm8k_test.jsonl")
    for row in rows:
        gold = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert grade(row["answer"], gold), row["answer"][-40:]
        assert grade(f"So she pays {gold} dollars.", gold)
    assert not grade(rows[0]["answer"], "19")


def test_module_exports() -> None:
    assert set(grading.__all__) >= {"extract_answer", "is_equivalent", "grade"}
