"""Evaluation helpers: benchmark loaders, answer grading and cost/quality metrics.

Kept light on purpose: importing this package pulls in no numpy, no math-verify and no
``datasets``; each submodule imports its heavy dependency only when it is used.
"""

from langchain_trim.eval.datasets import DATASETS, Problem, load_problems
from langchain_trim.eval.grading import extract_answer, grade, is_equivalent
from langchain_trim.eval.metrics import CurveReport, OperatingPoint, summarize_curve

__all__ = [
    "DATASETS",
    "CurveReport",
    "OperatingPoint",
    "Problem",
    "extract_answer",
    "grade",
    "is_equivalent",
    "load_problems",
    "summarize_curve",
]
