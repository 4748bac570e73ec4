"""Static per-run settings (the graph's ``context_schema``) and their resolution."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from langchain_trim.errors import InvalidInputError


@dataclass(frozen=True)
class TrimContext:
    """Per-run overrides of the factory's settings; ``None`` keeps the factory value.

    Pass as ``graph.invoke(inputs, context=TrimContext(max_steps=10))``.  The strong-token
    budget of one question is the input key ``trim_budget``; ``budget`` here is the default
    for questions that give none.
    """

    budget: int | None = None
    max_steps: int | None = None
    step_max_tokens: int | None = None
    strong_step_max_tokens: int | None = None
    max_total_tokens: int | None = None


@dataclass(frozen=True)
class TrimSettings:
    """Resolved settings of one run."""

    budget: int | None = None
    max_steps: int = 30
    step_max_tokens: int = 512
    strong_step_max_tokens: int | None = None
    """A lower cap for one strong call (``None``: ``step_max_tokens``)."""
    max_total_tokens: int | None = None
    max_question_chars: int = 20_000

    def __post_init__(self) -> None:
        check_budget(self.budget)
        total = self.max_total_tokens
        if total is not None and (
            isinstance(total, bool) or not isinstance(total, int) or total <= 0
        ):
            raise InvalidInputError(f"max_total_tokens must be a positive integer, got {total!r}")
        for name in ("max_steps", "step_max_tokens", "max_question_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        cap = self.strong_step_max_tokens
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap <= 0):
            raise InvalidInputError(
                f"strong_step_max_tokens must be a positive integer or None, got {cap!r}"
            )

    @property
    def strong_max_tokens(self) -> int:
        """The most one strong call may decode: what the budget checks reserve.

        A strong call capped below ``step_max_tokens`` rewrites the start of a step at a
        bounded price; the step stays open and the next draft continues it.
        """
        cap = self.strong_step_max_tokens
        return self.step_max_tokens if cap is None else min(cap, self.step_max_tokens)

    def with_context(self, context: Any) -> TrimSettings:
        """Apply the non-``None`` fields of a :class:`TrimContext` (or a similar object)."""
        if context is None:
            return self
        if isinstance(context, dict):
            overrides = {k: v for k, v in context.items() if v is not None}
        else:
            overrides = {
                f.name: getattr(context, f.name)
                for f in fields(TrimContext)
                if getattr(context, f.name, None) is not None
            }
        unknown = set(overrides) - {f.name for f in fields(TrimContext)}
        if unknown:
            raise InvalidInputError(f"unknown TrimContext fields: {sorted(unknown)}")
        return replace(self, **overrides) if overrides else self


def check_budget(budget: Any) -> int | None:
    """Validate a strong-token budget: ``None`` (unlimited) or a positive integer."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise InvalidInputError(f"budget must be a positive integer or None, got {budget!r}")
    if budget <= 0:
        raise InvalidInputError(
            f"budget must be positive, got {budget}; use ThresholdPolicy(0) for always-weak"
        )
    return budget


__all__ = ["TrimContext", "TrimSettings", "check_budget"]
