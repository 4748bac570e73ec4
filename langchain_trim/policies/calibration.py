"""TRIM-POMDP parameters as one typed, JSON-serialisable object (never pickle).

The same object parameterises the TRIM-POMDP policy (:mod:`langchain_trim.policies.pomdp`)
and the simulator (:mod:`langchain_trim.lab.sim`).  The parameters follow TRIM-POMDP
(arXiv:2601.10245): step accuracies ``p_weak`` and ``p_strong``; per hidden state (S0 on
track, S1 derailed earlier, S2 only the latest step wrong) a joint table over (min
previous PRM score, current PRM score) in 0.05 bins; a solution-length pmf per model;
lognormal step lengths per model.  Three corrections,
all neutral by default, let a calibration fit on other data stand for a given model pair
(see ``benchmarks/sim_fidelity``): ``observation_mix`` blends each state's table with
the state-pooled one (a less discriminative PRM), ``score_power`` lowers every score
(a less confident PRM), ``length_score_corr`` makes low-scored steps longer.

``difficulty_sd`` (0 by default: the paper's independent steps) gives every question a
difficulty ``z ~ N(0, difficulty_sd)`` on the logit scale, shared by both models: a
question's step accuracies are ``sigmoid(logit(p) - z)``.  Real weak errors cluster on
hard questions (the strong model fails them too); with independent steps a simulator
credits a strong first step with fixing questions whose later weak steps fail anyway.
``p_weak_final``/``p_strong_final`` and ``*_final_tokens`` (unset by default) give the
step that ends a solution an accuracy and a length of its own: the embedded strong model
is as often right in a one-paragraph answer as in a six-paragraph one, which errors
compounding over steps cannot express.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from langchain_trim.paths import reference_file

STATES = ("S0", "S1", "S2")
"""Hidden states: on track, derailed by an earlier step, only the latest step wrong."""

OFFICIAL_OBSERVATION = "processbench_math"
OFFICIAL_WEAK = "qwen2.5-1.5b-instruct"
OFFICIAL_STRONG = "qwen2.5-7b-instruct"
OFFICIAL_WEAK_LENGTHS = "weak_qwen2.5-1.5b"
OFFICIAL_STRONG_LENGTHS = "strong_qwen2.5-7b"
OFFICIAL_WEAK_TOKENS_PER_QUESTION = 400.946
"""The release's always-weak MATH-500 run: weak tokens per question."""
OFFICIAL_STRONG_TOKENS_PER_QUESTION = 494.84
"""The release's always-strong MATH-500 run: strong tokens per question."""


class TokenModel(BaseModel):
    """Lognormal step length in tokens, given by its mean and coefficient of variation.

    >>> TokenModel(mean=60.0, cv=0.5).mean
    60.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: float = Field(gt=0)
    cv: float = Field(default=0.6, ge=0)

    @property
    def log_params(self) -> tuple[float, float]:
        """``(mu, sigma)`` of the underlying normal."""
        sigma2 = math.log1p(self.cv**2)
        return math.log(self.mean) - sigma2 / 2, math.sqrt(sigma2)


def _normalise(values: list[float], what: str) -> list[float]:
    """Scale to sum 1 (left as is when it already does, so JSON round trips are exact)."""
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"{what}: entries must be finite and >= 0")
    total = math.fsum(values)
    if total <= 0:
        raise ValueError(f"{what}: all zero")
    if abs(total - 1.0) <= 1e-12:
        return values
    return [v / total for v in values]


class Calibration(BaseModel):
    """Everything the simulator needs to stand for one weak/strong/PRM triple."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    p_weak: float = Field(gt=0, le=1)
    """Probability that a weak step from an on-track prefix is correct."""
    p_strong: float = Field(gt=0, le=1)
    """Probability that a strong step from an on-track prefix is correct."""
    bin_size: float = Field(default=0.05, gt=0, le=1)
    observation: list[list[list[float]]]
    """``observation[state][m][c]``: joint probability of min-previous-score bin ``m`` and
    current-score bin ``c`` in that state (each state's table sums to 1)."""
    observation_mix: float = Field(default=0.0, ge=0, le=1)
    """Weight of the state-pooled table mixed into every state's table (0 = as fit)."""
    score_power: float = Field(default=1.0, gt=0)
    """The PRM reports ``score ** score_power``: above 1 every score drops, order kept."""
    length_score_corr: float = Field(default=0.0, ge=0, lt=1)
    """Correlation between a step's (log) length and how low its draft scored, within the
    draft's state; the strong rewrite of the step shares it.  0: lengths independent."""
    termination_weak: list[float]
    """Solution-length pmf: entry ``i`` is P(the solution has ``i + 1`` steps)."""
    termination_strong: list[float] | None = None
    """Same for the strong model (``None``: use the weak one)."""
    weak_tokens: TokenModel
    strong_tokens: TokenModel
    weak_final_tokens: TokenModel | None = None
    """Length of a weak step that ends the solution (``None``: ``weak_tokens``)."""
    strong_final_tokens: TokenModel | None = None
    """Length of a strong step that ends the solution (``None``: ``strong_tokens``)."""
    p_weak_final: float | None = Field(default=None, gt=0, le=1)
    """Accuracy of a weak step that ends the solution (``None``: ``p_weak``, as any step)."""
    p_strong_final: float | None = Field(default=None, gt=0, le=1)
    """Accuracy of a strong step that ends the solution (``None``: ``p_strong``)."""
    difficulty_sd: float = Field(default=0.0, ge=0, le=10)
    """Spread (logit scale) of a per-question difficulty shared by both models; 0: every
    question alike, steps independent.  ``p_weak``/``p_strong`` are then a median question's."""
    source: str = ""
    notes: list[str] = Field(default_factory=list)

    # -- validation ------------------------------------------------------------------------
    @property
    def n_bins(self) -> int:
        """Bins per score axis (20 for 0.05)."""
        return round(1.0 / self.bin_size)

    @property
    def max_steps(self) -> int:
        """Longest possible solution (length of the termination pmf)."""
        return len(self.termination_weak)

    @field_validator("termination_weak", "termination_strong")
    @classmethod
    def _pmf(cls, value: list[float] | None) -> list[float] | None:
        return None if value is None else _normalise(list(value), "termination pmf")

    @field_validator("observation")
    @classmethod
    def _tables(cls, value: list[list[list[float]]]) -> list[list[list[float]]]:
        if len(value) != 3:
            raise ValueError("observation needs one table per state S0, S1, S2")
        out = []
        for s, table in enumerate(value):
            n = len(table)
            if n == 0 or any(len(row) != n for row in table):
                raise ValueError(f"observation[{s}] must be a square table")
            flat = _normalise([float(v) for row in table for v in row], f"observation[{s}]")
            out.append([flat[i * n : (i + 1) * n] for i in range(n)])
        return out

    @model_validator(mode="after")
    def _check(self) -> Calibration:
        n = self.n_bins
        if not math.isclose(n * self.bin_size, 1.0, rel_tol=1e-9):
            raise ValueError(f"bin_size must divide 1, got {self.bin_size}")
        if any(len(table) != n for table in self.observation):
            raise ValueError(f"observation tables must be {n}x{n} for bin_size {self.bin_size}")
        if self.termination_strong is not None and len(self.termination_strong) != len(
            self.termination_weak
        ):
            raise ValueError("termination_weak and termination_strong must have equal length")
        return self

    # -- derived ---------------------------------------------------------------------------
    def effective_observation(self) -> list[list[list[float]]]:
        """The per-state tables after ``observation_mix`` (what the simulator samples)."""
        w = self.observation_mix
        if w == 0.0:
            return [[list(row) for row in table] for table in self.observation]
        n = self.n_bins
        pooled = [
            [sum(self.observation[s][i][j] for s in range(3)) / 3 for j in range(n)]
            for i in range(n)
        ]
        return [
            [[(1 - w) * table[i][j] + w * pooled[i][j] for j in range(n)] for i in range(n)]
            for table in self.observation
        ]

    def _termination(self, model: str) -> list[float]:
        """The solution-length pmf of ``"weak"`` or ``"strong"`` (the weak one if unknown)."""
        pmf = self.termination_strong if model == "strong" else self.termination_weak
        return pmf or self.termination_weak

    def hazard(self, model: str = "weak") -> list[float]:
        """``h[L]`` = P(solution ends after step L | it reached L) for ``model``; index 0 unused.

        >>> synthetic_calibration(mean_steps=1, max_steps=2).hazard()
        [0.0, 1.0, 1.0]
        """
        out = [0.0]
        survive = 1.0
        for p in self._termination(model):
            out.append(1.0 if survive <= 1e-12 else min(1.0, p / survive))
            survive -= p
        out[-1] = 1.0
        return out

    def mean_steps(self, model: str = "weak") -> float:
        """Expected solution length of ``"weak"`` or ``"strong"``."""
        return math.fsum((i + 1) * p for i, p in enumerate(self._termination(model)))

    def step_accuracy(
        self, model: str = "weak", difficulty: float = 0.0, *, final: bool = False
    ) -> float:
        """Step accuracy of ``model`` on a question of ``difficulty`` (logit shift, 0 = median);
        ``final``: of a step that ends the solution.

        >>> cal = synthetic_calibration(p_weak=0.5)
        >>> cal.step_accuracy(), round(cal.step_accuracy("weak", math.log(3)), 3)
        (0.5, 0.25)
        """
        if model == "strong":
            p = self.p_strong_final if final and self.p_strong_final else self.p_strong
        else:
            p = self.p_weak_final if final and self.p_weak_final else self.p_weak
        if difficulty == 0.0 or p >= 1.0:
            return p
        return 1.0 / (1.0 + math.exp(difficulty - math.log(p / (1.0 - p))))

    @property
    def has_final_step_accuracy(self) -> bool:
        """Whether a step that ends the solution has an accuracy or length of its own."""
        return any(
            v is not None
            for v in (
                self.p_weak_final,
                self.p_strong_final,
                self.weak_final_tokens,
                self.strong_final_tokens,
            )
        )

    def step_tokens(self, model: str = "weak", *, final: bool = False) -> TokenModel:
        """The length model of a ``model`` step (``final``: one that ends the solution)."""
        if model == "strong":
            return (final and self.strong_final_tokens) or self.strong_tokens
        return (final and self.weak_final_tokens) or self.weak_tokens

    def _solution_accuracy(self, model: str, difficulty: float, pmf: list[float]) -> float:
        p = self.step_accuracy(model, difficulty)
        f = self.step_accuracy(model, difficulty, final=True)
        return math.fsum(q * p**i * f for i, q in enumerate(pmf))

    def expected_accuracy(self, model: str = "weak") -> float:
        """Always-``model`` accuracy implied by the step accuracies, difficulty and length pmf.

        >>> cal = synthetic_calibration(p_weak=0.9, p_strong=1.0, mean_steps=1)
        >>> round(cal.expected_accuracy("weak"), 3), cal.expected_accuracy("strong")
        (0.9, 1.0)
        """
        pmf = self._termination(model)
        return math.fsum(
            w * self._solution_accuracy(model, z, pmf)
            for z, w in difficulty_nodes(self.difficulty_sd)
        )

    def independent_step_accuracy(self, model: str = "weak") -> float:
        """The one step accuracy that, with every question and step alike, gives
        :meth:`expected_accuracy` (what a planner assuming independent steps should use).

        >>> cal = synthetic_calibration(p_weak=0.8)
        >>> cal.independent_step_accuracy() == 0.8
        True
        """
        if self.difficulty_sd == 0.0 and not self.has_final_step_accuracy:
            return self.p_strong if model == "strong" else self.p_weak
        pmf = self._termination(model)
        return power_mean_root(range(1, len(pmf) + 1), pmf, self.expected_accuracy(model))

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(self.model_dump_json(indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a JSON file written by :meth:`save`."""
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def from_official(
        cls,
        path: str | Path | None = None,
        *,
        observation: str = OFFICIAL_OBSERVATION,
        weak: str = OFFICIAL_WEAK,
        strong: str = OFFICIAL_STRONG,
        weak_lengths: str = OFFICIAL_WEAK_LENGTHS,
        strong_lengths: str = OFFICIAL_STRONG_LENGTHS,
        weak_tokens_per_question: float = OFFICIAL_WEAK_TOKENS_PER_QUESTION,
        strong_tokens_per_question: float = OFFICIAL_STRONG_TOKENS_PER_QUESTION,
        token_cv: float = 0.6,
    ) -> Calibration:
        """Read the official release's tables (``pomdp_calibration.json``) as they are.

        The release stores length pmfs starting at 2 steps (its hazard is 0 at 0 and 1
        steps); they are shifted to start at 1 step here.  It has no step lengths, so the
        mean step length is tokens per question of the always-weak/always-strong runs
        divided by the mean solution length.  ``path`` defaults to ``pomdp_calibration.json``
        in the reference folder (``$TRIM_REFERENCE``, see :mod:`langchain_trim.paths`).
        """
        path = Path(path) if path is not None else reference_file("pomdp_calibration.json")
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        model = raw["observation_model"][observation]
        bin_size = float(model["bin_size"])
        n = round(1.0 / bin_size)
        tables: list[list[list[float]]] = []
        for s in ("0", "1", "2"):
            table = [[0.0] * n for _ in range(n)]
            for m_centre, c_centre, p in model["tables"][s]:
                i = min(max(round(m_centre / bin_size - 0.5), 0), n - 1)
                j = min(max(round(c_centre / bin_size - 0.5), 0), n - 1)
                table[i][j] += float(p)
            tables.append(table)
        lengths = raw["termination_pmf"]

        def pmf(key: str) -> list[float]:
            entry = lengths[key]
            values = [float(v) for v in entry["pmf_by_step"]]
            pad = int(entry["max_steps"]) - len(values)  # the release starts at 2 steps
            return [0.0] * pad + values

        term_w, term_s = pmf(weak_lengths), pmf(strong_lengths)
        mean_w = math.fsum((i + 1) * p for i, p in enumerate(_normalise(term_w, "pmf")))
        mean_s = math.fsum((i + 1) * p for i, p in enumerate(_normalise(term_s, "pmf")))
        acc = raw["step_accuracy"]
        return cls(
            p_weak=float(acc[weak]["accuracy"]),
            p_strong=float(acc[strong]["accuracy"]),
            bin_size=bin_size,
            observation=tables,
            termination_weak=term_w,
            termination_strong=term_s,
            weak_tokens=TokenModel(mean=weak_tokens_per_question / mean_w, cv=token_cv),
            strong_tokens=TokenModel(mean=strong_tokens_per_question / mean_s, cv=token_cv),
            source=f"official release tables: {path.name} ({observation}; {weak} -> {strong})",
        )


def power_mean_root(lengths: Iterable[int], weights: Iterable[float], target: float) -> float:
    """The ``p`` in [1e-3, 1] with ``Σ w p^L / Σ w == target`` (bisection; it rises with p).

    >>> round(power_mean_root([2, 2], [1.0, 1.0], 0.81), 6)
    0.9
    """
    pairs = list(zip(lengths, weights, strict=True))
    total = math.fsum(w for _, w in pairs)
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if math.fsum(w * mid**n for n, w in pairs) / total < target:
            lo = mid
        else:
            hi = mid
    return max((lo + hi) / 2, 1e-3)


def difficulty_nodes(sd: float, k: int = 24) -> list[tuple[float, float]]:
    """``(z, weight)`` quadrature nodes of ``N(0, sd)`` (Gauss–Hermite); ``[(0, 1)]`` if sd is 0.

    >>> difficulty_nodes(0.0)
    [(0.0, 1.0)]
    >>> nodes = difficulty_nodes(1.5)
    >>> round(sum(w for _, w in nodes), 9), round(sum(w * z * z for z, w in nodes), 6)
    (1.0, 2.25)
    """
    if sd == 0.0:
        return [(0.0, 1.0)]
    import numpy as np

    x, w = np.polynomial.hermite_e.hermegauss(k)
    w = w / w.sum()
    return [(float(sd * xi), float(wi)) for xi, wi in zip(x, w, strict=True)]


def _bump(centre: float, width: float, n: int) -> list[float]:
    xs = [(i + 0.5) / n for i in range(n)]
    return _normalise([math.exp(-(((x - centre) / width) ** 2) / 2) for x in xs], "bump")


def synthetic_calibration(
    *,
    p_weak: float = 0.87,
    p_strong: float = 0.97,
    mean_steps: float = 8.0,
    max_steps: int = 30,
    weak_tokens: float = 50.0,
    strong_tokens: float = 60.0,
    separation: float = 0.5,
) -> Calibration:
    """A small, made-up calibration for tests and examples (no data files needed).

    Scores are Gaussian bumps: the current score centres on 0.5 ± ``separation``/2 (high in
    S0, low in S1/S2); the min previous score is high in S0/S2 and low in S1.  Lengths
    follow a Poisson pmf shifted to start at one step, truncated at ``max_steps``.

    >>> synthetic_calibration().max_steps
    30
    """
    n = 20
    high, low = 0.5 + separation / 2, 0.5 - separation / 2
    cur = {0: _bump(high, 0.15, n), 1: _bump(low, 0.2, n), 2: _bump(low, 0.15, n)}
    prev = {0: _bump(0.9, 0.1, n), 1: _bump(0.3, 0.2, n), 2: _bump(0.85, 0.15, n)}
    tables = [[[prev[s][i] * cur[s][j] for j in range(n)] for i in range(n)] for s in range(3)]
    lam = max(mean_steps - 1.0, 0.0)
    pmf = [math.exp(-lam) * lam**k / math.factorial(k) for k in range(max_steps)]
    pmf[-1] += max(0.0, 1.0 - math.fsum(pmf))
    return Calibration(
        p_weak=p_weak,
        p_strong=p_strong,
        observation=tables,
        termination_weak=pmf,
        weak_tokens=TokenModel(mean=weak_tokens, cv=0.5),
        strong_tokens=TokenModel(mean=strong_tokens, cv=0.5),
        source="synthetic_calibration",
    )


# -- the official setting ----------------------------------------------------------------------
# :meth:`Calibration.from_official` reads the release's tables as they are; they make the
# simulator too optimistic for this model pair (see the data README).  The anchor correction
# of ``benchmarks/sim_fidelity`` (fit on real thresholds 0, 0.5 and 1 only, mean held-out
# accuracy gap 2.9 points) is the most faithful simulator we have, so the learned policies
# are trained and compared on it and the ``pomdp`` policy plans on it.  Its fitted values
# are kept here as constants (the fit takes minutes); ``tests/test_policies_agg.py`` checks
# that they still match ``benchmarks/results/sim_fidelity.json``.  The observation tables
# themselves are not copied: they are read from the reference data at run time.
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


__all__ = [
    "OFFICIAL_CORRECTION",
    "STATES",
    "Calibration",
    "TokenModel",
    "apply_correction",
    "difficulty_nodes",
    "official_calibration",
    "power_mean_root",
    "synthetic_calibration",
]
