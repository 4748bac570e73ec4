"""Degrade loudly: what a strong-model or PRM failure does, and how a kept draft is told.

A failure that keeps the weak draft is counted in the question's spend and warned about
or logged, never silent.
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal

from langchain_trim.errors import TrimWarning
from langchain_trim.state import TrimSpend

FailureMode = Literal["raise", "warn", "keep_draft"]
"""What a strong-model or PRM failure does: ``"raise"`` a typed error, ``"warn"`` (keep the
draft, record it, and ``warnings.warn`` + log it) or ``"keep_draft"`` (record and log it)."""

FAILURE_MODES: tuple[FailureMode, ...] = ("raise", "warn", "keep_draft")

logger = logging.getLogger("langchain_trim")


def fall_back(
    spend: TrimSpend,
    counter: Literal["prm_errors", "strong_errors"],
    mode: FailureMode,
    message: str,
) -> None:
    """Count a kept-draft fallback (in all and under ``counter``) and make it loud: warn
    and log (``"warn"``) or log (``"keep_draft"``)."""
    spend["fallbacks"] += 1
    spend[counter] = spend.get(counter, 0) + 1
    if mode == "warn":
        logger.warning(message)
        warnings.warn(message, TrimWarning, stacklevel=3)
    else:
        logger.info(message)


__all__ = ["FAILURE_MODES", "FailureMode", "fall_back"]
