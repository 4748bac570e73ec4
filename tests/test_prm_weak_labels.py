"""Weak first-error labels from a reference solution's values."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from langchain_trim.lab.weak_labels import (
    final_answer,
    numbers,
    stated_results,
    weak_first_error,
)

QUESTION = "A shop sells 12 pens a day for 5 days at $3 each. How many dollars does it earn?"
REFERENCE = "12 * 5 = <<12*5=60>>60 pens. 60 * 3 = <<60*3=180>>180 dollars.\n#### 180"


def label(*steps: str) -> int | None:
    return weak_first_error(QUESTION, list(steps), REFERENCE, answer=180)


def test_right_solution_is_right_throughout() -> None:
    assert label("It sells 12 × 5 = 60 pens.", "It earns 60 × 3 = \\boxed{180} dollars.") == -1


def test_first_unreferenced_result_is_the_error() -> None:
    steps = ("Let us think.", "It sells 12 + 5 = 17 pens.", "It earns 17 × 3 = \\boxed{51}.")
    assert label(*steps) == 1


def test_false_equation_is_an_error_even_with_known_numbers() -> None:
    # 12 × 5 is not 180, although 180 is one of the reference's values
    assert label("So 12 × 5 = 180 pens.", "The answer is \\boxed{200}.") == 0


def test_right_answer_through_other_numbers_is_unlabelled() -> None:
    assert label("One day earns 12 × 3 = 36 dollars.", "Five days: 36 × 5 = \\boxed{180}.") is None


def test_wrong_answer_without_a_located_error_is_unlabelled() -> None:
    assert label("It sells 60 pens.", "The answer is \\boxed{60}.") is None


def test_missing_answer_with_a_located_error_is_labelled() -> None:
    assert label("It sells 12 × 4 = 48 pens.") == 0


def test_percentages_match_their_fractions() -> None:
    question = "A $80 coat is 25% off. What does it cost?"
    reference = "80 * .25 = <<80*.25=20>>20 off. 80 - 20 = <<80-20=60>>60\n#### 60"
    steps = ["The discount is 0.25 × 80 = 20.", "So it costs 80 - 20 = \\boxed{60}."]
    assert weak_first_error(question, steps, reference, answer=60) == -1


def test_results_ignore_text_and_read_fractions() -> None:
    assert stated_results("\\[ \\text{Cost 99} = \\frac{7}{2} \\]") == [3.5]
    assert numbers("3,000 and -2.5") == [3000.0, -2.5]
    assert final_answer(["\\boxed{4}", "no box here"]) == 4.0
    assert final_answer(["nothing"]) is None


@given(st.lists(st.text(max_size=40), max_size=6))
def test_label_is_a_step_index_or_none(steps: list[str]) -> None:
    got = label(*steps)
    assert got is None or -1 <= got < len(steps)
