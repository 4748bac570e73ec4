"""Whose token counts to trust.

Reported usage that is negative, non-finite or above ``max_tokens`` is flagged in spend;
a strong model that writes past its ``max_tokens`` is distrusted for the rest of the
question, since the hard budget cannot be guaranteed for it.
"""

from __future__ import annotations

from typing import Literal

from langchain_trim.generation import StepOutput
from langchain_trim.state import TrimSpend


def flag_usage(spend: TrimSpend, out: StepOutput, role: Literal["draft", "strong"]) -> None:
    """Count untrusted usage; a strong model that overran ``max_tokens`` is distrusted.

    Once distrusted, the route node keeps every later draft of the question.
    """
    if out.usage_note is None and not out.overran:
        return
    spend["usage_flags"] = spend.get("usage_flags", 0) + 1
    if role == "strong" and (out.overran or "over_cap" in (out.usage_note or "")):
        spend["strong_untrusted"] = True


__all__ = ["flag_usage"]
