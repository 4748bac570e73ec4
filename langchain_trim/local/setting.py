"""The embedded default setting: weak, strong and PRM that run offline on a CPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_trim.prm.base import ProcessRewardModel

EMBEDDED_STEP_FORMAT = "paragraphs"
"""Step format of the embedded models: measured best on GSM8K-train (dev), see
``benchmarks/results/step_formats.md``."""

EMBEDDED_STRONG_STEP_FORMAT = "lines"
"""The embedded strong model's format when it rewrites a step: the same prompt, cut at
every line, so a rewrite is one line (12% of a strong solution on GSM8K-train, against
34% for a paragraph).  Chosen on dev by a rule fixed before the run (TRIM-Thr at its
best-ΔIBC threshold, 0.85: 61.4% at 171 strong tokens vs always-strong's 60.0% at 194;
``benchmarks/results/real_routing/report.md``)."""


def embedded_strong_step_format(
    strong: str, step_format: str, strong_step_format: str | None
) -> str | None:
    """The strong model's format: as asked, else ``lines`` for the embedded pair only.

    The lines format was chosen on dev for the embedded 1.5B strong model drafting
    behind the 0.5B one in ``paragraphs``; another strong model or another drafting
    format gets what was asked (``None``: the same as ``step_format``).
    """
    if strong_step_format is not None:
        return strong_step_format
    if strong == "strong" and step_format == EMBEDDED_STEP_FORMAT:
        return EMBEDDED_STRONG_STEP_FORMAT
    return None


@dataclass
class LocalSetting:
    """The models of one TRIM configuration, and how they are asked for steps."""

    weak: Any
    strong: Any
    prm: ProcessRewardModel | None
    step_format: str | None = None
    """Step format of both models (``None``: the library default)."""
    strong_step_format: str | None = None
    """The strong model's format when it differs."""


def local_setting(
    *,
    weak: str = "weak",
    strong: str = "strong",
    prm: str = "probe",
    judge: str | None = None,
    n_threads: int | None = None,
    temperature: float = 0.0,
    step_format: str = EMBEDDED_STEP_FORMAT,
    strong_step_format: str | None = None,
) -> LocalSetting:
    """Build the embedded weak/strong llama.cpp models and a PRM.

    Args:
        weak / strong: embedded model names (``weak``, ``strong``, ``tiny``) or GGUF paths.
        prm: a PRM spec (:mod:`langchain_trim.prm.registry`): ``"probe"`` (the trained
            probe PRM shipped with the package: a logistic head on the weak model's step
            features; the best CPU scorer measured in ``benchmarks/prm_quality``),
            ``"judge"`` (LLM-as-judge on the ``judge`` model, by default the strong one),
            ``"confidence"`` (the weak model's own token probabilities, free),
            ``"arithmetic"`` (exact equation checker) or ``"none"`` (only for
            always-weak/always-strong).
        temperature: sampling temperature of both models (0: greedy, as the benchmarks;
            the release samples at 0.7).
        step_format: how both models are asked for steps (see
            :mod:`langchain_trim.step_format`).
        strong_step_format: the strong model's format when it differs.  ``None``:
            ``lines`` for the embedded strong model drafting behind ``paragraphs`` (the
            pair chosen on dev), else the same as ``step_format``.  The probe's default
            threshold (0.85) was chosen on dev with that pair; with ``paragraphs`` for
            both, dev chose 0.65.
    """
    from langchain_trim.local.llama import LlamaCppChatModel
    from langchain_trim.prm.registry import check_prm_spec, make_prm

    kind = check_prm_spec(prm)  # a bad name fails before any model is built
    weak_model = LlamaCppChatModel(model=weak, n_threads=n_threads, temperature=temperature)
    strong_model = LlamaCppChatModel(model=strong, n_threads=n_threads, temperature=temperature)
    judge_model = strong_model
    if kind == "judge" and judge is not None and judge != strong:
        judge_model = LlamaCppChatModel(model=judge, n_threads=n_threads)
    scorer = make_prm(prm, strong=judge_model, n_threads=n_threads)
    return LocalSetting(
        weak=weak_model,
        strong=strong_model,
        prm=scorer,
        step_format=step_format,
        strong_step_format=embedded_strong_step_format(strong, step_format, strong_step_format),
    )


__all__ = [
    "EMBEDDED_STEP_FORMAT",
    "EMBEDDED_STRONG_STEP_FORMAT",
    "LocalSetting",
    "embedded_strong_step_format",
    "local_setting",
]
