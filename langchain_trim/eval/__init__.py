"""Evaluation: loaders, grading, metrics, the resumable runner and reports.

``run_eval``/``load_traces`` (runner), ``write_report`` (report) and ``SQLiteLLMCache``
(cache) are imported lazily from their modules.

Kept light on purpose: importing this package pulls in no numpy, no math-verify and no
``datasets``; each submodule imports its heavy dependency only when it is used.
"""

from langchain_trim._lazy import lazy_getattr
from langchain_trim.eval.datasets import DATASETS, Problem, load_problems
from langchain_trim.eval.grading import extract_answer, grade, is_equivalent
from langchain_trim.eval.metrics import CurveReport, OperatingPoint, summarize_curve

__getattr__ = lazy_getattr(
    __name__,
    {
        "langchain_trim.eval.runner": ("run_eval", "arun_eval", "load_traces"),
        "langchain_trim.eval.cache": ("SQLiteLLMCache",),
    },
)


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
