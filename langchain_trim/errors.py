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


class ModelTimeoutError(TrimError, TimeoutError):
    """A model call gave up at its deadline (or was cancelled) and stopped generating.

    Raised by models that honour a deadline (:class:`~langchain_trim.local.LlamaCppChatModel`)
    so that a caller can still charge what the abandoned call spent: ``tokens`` output
    tokens were decoded (and discarded), ``input_tokens`` prompt tokens evaluated.  It is a
    ``TimeoutError``, so code that maps timeouts to :class:`StepTimeoutError` keeps working.
    """

    def __init__(
        self,
        message: str,
        *,
        tokens: int = 0,
        input_tokens: int = 0,
        reason: str = "deadline",
        elapsed_s: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.tokens = tokens
        """Output tokens decoded before the call stopped (spent, but not returned)."""
        self.input_tokens = input_tokens
        self.reason = reason
        """``"deadline"`` (the deadline passed), ``"cancelled"`` (the caller gave up) or
        ``"lock"`` (the deadline passed while waiting for the shared model: nothing spent)."""
        self.elapsed_s = elapsed_s


class PRMError(TrimError):
    """The process reward model raised or returned unusable scores."""


class PRMScoreError(PRMError, ValueError):
    """PRM scores that are NaN, outside [0, 1], or of the wrong length."""


class ModelNotFoundError(TrimError, FileNotFoundError):
    """A local model file is missing, does not match its checksum, or cannot be assembled.

    Assembly failures (disk full, unwritable cache directory) land here too, so that a
    caller handles every "no usable model file" case once (the CLI's exit code 3).
    """


class PolicyFileError(InvalidInputError):
    """A routing policy's weights or calibration are missing, unreadable or malformed.

    Raised at load time (wrong tensor names, shapes or dtype, NaN/inf values, a sidecar
    that disagrees), never at the first routing decision.
    """


class DataNotFoundError(InvalidInputError, FileNotFoundError):
    """Data the package does not ship (a dataset copy, the official reference tables) is not
    where the arguments or the environment say, or nothing says where it is.

    The package never guesses a machine path: data comes by argument or environment
    variable (:mod:`langchain_trim.paths`).
    """


class RunLockedError(InvalidInputError):
    """Another process holds the eval output folder; two runs must not share one."""


class CacheCorruptError(InvalidInputError):
    """The eval's LLM cache file is damaged and could not be moved aside."""


class EvalStorageError(TrimError):
    """The eval could not write its own files (disk full, permissions, read-only folder).

    An infrastructure failure: it stops the run and is never recorded as a model error.
    """


class TrimWarning(UserWarning):
    """TRIM degraded but went on: a strong or PRM failure kept the draft, the strong model
    overspent the budget, or the recursion limit ended a solution early.

    The same event is logged on the ``langchain_trim`` logger and recorded in the output
    (the step's ``fallback``, ``trim_spend`` counters, ``trim_overspent``,
    ``trim_termination``).  Silence it with ``on_strong_error="keep_draft"`` /
    ``on_prm_error="keep_draft"`` or :func:`warnings.filterwarnings`.
    """


__all__ = [
    "CacheCorruptError",
    "DataNotFoundError",
    "EvalStorageError",
    "InvalidInputError",
    "ModelNotFoundError",
    "ModelTimeoutError",
    "PRMError",
    "PRMScoreError",
    "PolicyFileError",
    "RunLockedError",
    "StepGenerationError",
    "StepTimeoutError",
    "TrimError",
    "TrimWarning",
]
