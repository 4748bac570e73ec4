"""Typed errors raised by langchain-trim.

Every failure that cannot be recovered by a documented fallback surfaces as a subclass of
:class:`TrimError`, so callers can ``except TrimError`` once and still tell the cases
apart.  Input problems are also ``ValueError`` so that generic validation code keeps
working.
"""

from __future__ import annotations


class TrimError(Exception):
    """Base class for every error raised by langchain-trim."""


class InvalidInputError(TrimError, ValueError):
    """The graph input is unusable: empty or oversized question, bad budget, bad setting."""


class StepGenerationError(TrimError):
    """A step model raised, timed out or returned nothing usable.

    Raised for the draft (weak) model, which the graph cannot do without.  Failures of the
    strong model keep the draft, recorded on the step as ``fallback`` (and warned about),
    unless ``on_strong_error="raise"``.
    """

    def __init__(self, message: str, *, role: str, step_index: int, tokens: int = 0) -> None:
        super().__init__(message)
        self.role = role
        self.step_index = step_index
        self.tokens = tokens
        """Output tokens the failed attempt may have spent (charged to the budget)."""
        self.tokens_estimated = False


class StepTimeoutError(StepGenerationError):
    """A step model did not answer within ``step_timeout`` seconds."""


class PRMError(TrimError):
    """The process reward model raised or returned unusable scores."""


class PRMScoreError(PRMError, ValueError):
    """PRM scores that are NaN, outside [0, 1], or of the wrong length."""


class ModelNotFoundError(TrimError, FileNotFoundError):
    """A local model file is missing or does not match its expected checksum."""


class TrimWarning(UserWarning):
    """TRIM degraded but went on: a strong or PRM failure kept the draft, the strong model
    overspent the budget, or the recursion limit ended a solution early.

    The same event is logged on the ``langchain_trim`` logger and recorded in the output
    (the step's ``fallback``, ``trim_spend`` counters, ``trim_overspent``,
    ``trim_termination``).  Silence it with ``on_strong_error="keep_draft"`` /
    ``on_prm_error="keep_draft"`` or :func:`warnings.filterwarnings`.
    """


__all__ = [
    "InvalidInputError",
    "ModelNotFoundError",
    "PRMError",
    "PRMScoreError",
    "StepGenerationError",
    "StepTimeoutError",
    "TrimError",
    "TrimWarning",
]
