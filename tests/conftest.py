"""Shared fixtures: scripted weak/strong models and a keyword PRM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from langchain_trim.testing import FakeStepModel, KeywordPRM

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The development machines' data folder next to the checkout (the package itself names no
path: it reads $TRIM_SHARED_DATA, which the tests point here when it is not set)."""
if not os.environ.get("TRIM_SHARED_DATA") and SHARED_DATA.is_dir():
    os.environ["TRIM_SHARED_DATA"] = str(SHARED_DATA)

WEAK_STEPS = [
    "Let x be the number of apples.",
    "Then 3 * 4 = 13 apples in total. WRONG",
    "So each friend gets 13 / 1 = 13.",
    r"The answer is \boxed{13}.",
]
STRONG_STEPS = [
    "Let x be the number of apples, x = 3 * 4.",
    "Then 3 * 4 = 12 apples in total.",
    "So each friend gets 12 / 1 = 12.",
    r"The answer is \boxed{12}.",
]


@pytest.fixture
def weak() -> FakeStepModel:
    return FakeStepModel(steps=WEAK_STEPS, model_name="weak-1")


@pytest.fixture
def strong() -> FakeStepModel:
    return FakeStepModel(steps=STRONG_STEPS, model_name="strong-1")


@pytest.fixture
def prm() -> KeywordPRM:
    return KeywordPRM({"WRONG": 0.1, "13": 0.4}, default=0.9)
