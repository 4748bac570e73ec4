"""The official setting (MATH-500, Qwen2.5-1.5B → 7B) as a ready simulator, and env specs.

The learned policies are trained and compared on the anchor-corrected official
calibration (:func:`~langchain_trim.policies.calibration.official_calibration`, the most
faithful simulator we have); ``sim:official-raw`` is the release's tables as they are.
"""

from __future__ import annotations

from typing import Literal

from langchain_trim.lab.sim.env import SimEnv
from langchain_trim.policies.calibration import (
    OFFICIAL_CORRECTION,
    Calibration,
    official_calibration,
)

ScoreModel = Literal["conditional", "marginal"]


def make_env(spec: str, *, step_max_tokens: int = 512) -> SimEnv:
    """A simulator from a spec: ``sim:official`` (anchor-corrected), ``sim:official-raw``
    (the tables as they are) or ``sim:<calibration.json>``.

    >>> make_env("replay:x.jsonl")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: env spec must be sim:official, ... got 'replay:x.jsonl'
    """
    kind, _, arg = spec.partition(":")
    if kind != "sim" or not arg:
        raise ValueError(
            "env spec must be sim:official, sim:official-raw or sim:<calibration.json>, "
            f"got {spec!r}"
        )
    score_model: ScoreModel = "conditional"
    if arg == "official":
        cal = official_calibration()
        score_model = OFFICIAL_CORRECTION["score_model"]
    elif arg == "official-raw":
        cal = official_calibration(corrected=False)
    else:
        cal = Calibration.load(arg)
    return SimEnv(cal, step_max_tokens=step_max_tokens, score_model=score_model)


__all__ = ["ScoreModel", "make_env"]
