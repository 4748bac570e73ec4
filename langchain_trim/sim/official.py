"""The official setting (MATH-500, Qwen2.5-1.5B → 7B) as a ready simulator, and env specs.

:meth:`Calibration.from_official` reads the release's tables as they are; they make the
simulator too optimistic for this model pair (see the data README).  The anchor
correction of ``benchmarks/sim_fidelity`` (fit on real thresholds 0, 0.5 and 1 only,
mean held-out accuracy gap 2.9 points) is the most faithful simulator we have, so the
learned policies are trained and compared on it.  Its fitted values are kept here as
constants (the fit takes minutes); ``tests/test_policies_agg.py`` checks that they still
match ``benchmarks/results/sim_fidelity.json``.  The observation tables themselves are
not copied: they are read from the reference data at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from langchain_trim.sim.calibration import Calibration
from langchain_trim.sim.env import SimEnv

ScoreModel = Literal["conditional", "marginal"]

OFFICIAL_CORRECTION: dict[str, Any] = {
    "p_weak": 0.8648591176590821,
    "p_strong": 0.9632098762438119,
    "strong_step_tokens": 56.781475418431455,
    "score_model": "conditional",
    "observation_mix": 0.35,
    "score_power": 2.0,
    "length_score_corr": 0.544,
}
"""``after.fit`` of ``benchmarks/results/sim_fidelity.json``."""


def apply_correction(base: Calibration, correction: dict[str, Any]) -> Calibration:
    """``base`` with a sim-fidelity correction (keys as in :data:`OFFICIAL_CORRECTION`)."""
    return base.model_copy(
        update={
            "p_weak": float(correction["p_weak"]),
            "p_strong": float(correction["p_strong"]),
            "strong_tokens": base.strong_tokens.model_copy(
                update={"mean": float(correction["strong_step_tokens"])}
            ),
            "observation_mix": float(correction["observation_mix"]),
            "score_power": float(correction["score_power"]),
            "length_score_corr": float(correction["length_score_corr"]),
            "source": base.source + " + anchor correction (k = 0, 0.5, 1)",
        }
    )


def official_calibration(path: str | Path | None = None, *, corrected: bool = True) -> Calibration:
    """The official tables, anchor-corrected unless ``corrected=False``.

    Needs the reference tables: ``path``, or ``$TRIM_REFERENCE`` (see
    :mod:`langchain_trim.paths`).
    """
    base = Calibration.from_official(path)
    return apply_correction(base, OFFICIAL_CORRECTION) if corrected else base


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


__all__ = ["OFFICIAL_CORRECTION", "apply_correction", "make_env", "official_calibration"]
