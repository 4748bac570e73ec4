"""Scripted models for serving TRIM without weights (``TRIM_WEAK=py:tests.server_fakes:weak``)."""

from __future__ import annotations

from langchain_trim.testing import FakeStepModel, KeywordPRM

from .conftest import STRONG_STEPS, WEAK_STEPS


def weak() -> FakeStepModel:
    return FakeStepModel(steps=WEAK_STEPS, model_name="served-weak")


def strong() -> FakeStepModel:
    return FakeStepModel(steps=STRONG_STEPS, model_name="served-strong")


PRM = KeywordPRM({"WRONG": 0.1, "13": 0.4}, default=0.9)

ENV = {
    "TRIM_WEAK": "py:tests.server_fakes:weak",
    "TRIM_STRONG": "py:tests.server_fakes:strong",
    "TRIM_PRM": "py:tests.server_fakes:PRM",
    "TRIM_POLICY": "thr:0.3",
    "TRIM_BUDGET": "400",
    "TRIM_STEP_MAX_TOKENS": "64",
}
"""The ``TRIM_*`` environment that serves these fakes."""
