"""Evaluation: loaders, grading, metrics, the resumable runner and reports.

``run_eval``/``load_traces`` (runner), ``write_report`` (report) and ``SQLiteLLMCache``
(cache) are imported lazily from their modules.

Kept light on purpose: importing this package pulls in no numpy, no math-verify and no
``datasets``; each submodule imports its heavy dependency only when it is used.
"""

from langchain_trim._lazy import lazy_attribute
from langchain_trim.eval.datasets import DATASETS, Problem, load_problems
from langchain_trim.eval.grading import extract_answer, grade, is_equivalent
from langchain_trim.eval.metrics import CurveReport, OperatingPoint, summarize_curve

_LAZY = {
    "run_eval": "langchain_trim.eval.runner",
    "arun_eval": "langchain_trim.eval.runner",
    "load_traces": "langchain_trim.eval.runner",
    "SQLiteLLMCache": "langchain_trim.eval.cache",
}


def __getattr__(name: str) -> object:
    return lazy_attribute(__name__, _LAZY, name)


__all__ = [
    "DATASETS",
    "CurveReport",
    "OperatingPoint",
    "Problem",
    "SQLiteLLMCache",
    "arun_eval",
    "extract_answer",
    "grade",
    "is_equivalent",
    "load_problems",
    "load_traces",
    "run_eval",
    "summarize_curve",
]
