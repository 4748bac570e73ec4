"""Fit a :class:`Calibration` from recorded TRIM traces of one model pair.

The official tables were fit on ProcessBench and another model's solutions, and they
make the simulator too optimistic for Qwen2.5-1.5B → 7B (see the data README).  A
faithful simulator is fit to the pair's own trajectories.  A *trace* is one question::

    {"steps": [StepRecord-like dicts], "correct": bool, "policy": str}

of which each step needs ``author``, ``tokens``, ``score``, ``draft_score``,
``draft_tokens`` and ``decision`` (the graph's ``trim_steps`` have them all).

* Traces are grouped by ``policy``; a group in which every step of every trace is weak
  (strong) is an always-weak (always-strong) run.  Grouping matters: a threshold run's
  traces that happen to have no escalation are a biased (easier) sample.
* ``p_weak`` / ``p_strong`` solve ``mean(p ** L_i) = accuracy`` over the always-weak /
  always-strong traces (``L_i`` their step counts): the step accuracy that, with
  independent steps, reproduces the final accuracy.
* Length pmfs are the step-count histograms of those same traces; step lengths are
  lognormal with the mean and coefficient of variation of all weak drafts (escalated
  ones included) and of all strong steps.
* Observations: a trace with a correct answer is on track throughout; in a wrong one the
  first error is the first accepted step scoring below ``first_error_threshold`` (0.35,
  as the release does), else its lowest-scoring step.  A scored weak draft before the
  first error that was kept is an S0 observation, the kept draft at the first error an
  S2 one, every draft after it S1.  Escalated drafts before the first error are skipped:
  whether they were right is unknown.  The observation is (min of the known scores of
  the earlier accepted steps, 1.0 if none; the draft's score).  Histograms are smoothed
  with a Gaussian kernel (``smoothing_bins`` wide, mirrored at the edges, like the
  release's reflected KDE) plus ``pseudo_count`` per cell; a state with no observation
  borrows the pooled histogram (noted in ``notes``).  The min-previous "1.0" row (first
  steps, mostly) is blurred along its own scores only: a PRM can score first steps very
  differently from the steps after a high score (the embedded probe does), and blurring
  across rows made the simulator's first-step scores spread like any step's.

Traces from a policy that escalates low scores keep fewer low-scoring drafts, which
biases S0/S2 towards high scores; offline-scored always-weak traces avoid that.

With ``question_difficulty=True`` the step accuracies come instead from the always-weak
and always-strong traces *of the same questions* (matched by ``problem_id``):
:func:`fit_difficulty` finds the median question's step accuracies and the spread of a
per-question difficulty shared by both models (``Calibration.difficulty_sd``) by maximum
likelihood.  The paired outcomes carry what independent steps cannot: whether the weak
model fails the questions the strong model fails.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_trim.policies.calibration import (
    Calibration,
    TokenModel,
    difficulty_nodes,
    power_mean_root,
)


def solve_step_accuracy(
    lengths: Sequence[int], accuracy: float, weights: Sequence[float] | None = None
) -> float:
    """The ``p`` with ``mean(p ** L) == accuracy`` (bisection; the left side rises with p).

    ``weights`` turns the mean into a weighted one (e.g. a length pmf over ``lengths``).

    >>> round(solve_step_accuracy([2, 2], 0.81), 6)
    0.9
    >>> round(solve_step_accuracy([1, 2], 0.5, weights=[0.0, 1.0]), 4)
    0.7071
    """
    if not lengths:
        raise ValueError("no trajectories to estimate a step accuracy from")
    w = [1.0] * len(lengths) if weights is None else [float(x) for x in weights]
    if len(w) != len(lengths) or any(x < 0 for x in w) or math.fsum(w) <= 0:
        raise ValueError("weights must be non-negative, not all zero, one per length")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
    if accuracy >= 1.0:
        return 1.0
    return power_mean_root(lengths, w, accuracy)


def _token_model(values: Sequence[int], what: str) -> TokenModel:
    if not values:
        raise ValueError(f"no {what} steps to fit a length from")
    mean = math.fsum(values) / len(values)
    var = math.fsum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
    return TokenModel(mean=max(mean, 1.0), cv=math.sqrt(var) / max(mean, 1.0))


def _length_pmf(lengths: Sequence[int], max_steps: int) -> list[float]:
    counts = [0.0] * max_steps
    for n in lengths:
        counts[min(max(n, 1), max_steps) - 1] += 1
    return counts


def _gauss_kernel(width: float) -> list[float]:
    if width <= 0:
        return [1.0]
    half = max(1, math.ceil(3 * width))
    k = [math.exp(-0.5 * (d / width) ** 2) for d in range(-half, half + 1)]
    total = math.fsum(k)
    return [v / total for v in k]


def _blur_1d(values: Sequence[float], kernel: Sequence[float]) -> list[float]:
    n, half = len(values), len(kernel) // 2
    out = []
    for i in range(n):
        acc = 0.0
        for d, w in enumerate(kernel):
            j = i + d - half
            while j < 0 or j >= n:  # mirror at the edges
                j = -j - 1 if j < 0 else 2 * n - j - 1
            acc += w * values[j]
        out.append(acc)
    return out


def smooth_table(
    table: Sequence[Sequence[float]], width: float, pseudo: float, *, own_top_row: bool = False
) -> list[list[float]]:
    """Gaussian-blur a square count table along both axes, add ``pseudo`` per cell.

    ``own_top_row`` blurs the last row (min-previous score "1.0": mostly first steps,
    which have no previous score) only along its own scores, so that the first step's
    score distribution is not mixed with the steps that follow a high-scoring one.

    >>> t = smooth_table([[0, 0], [0, 4]], 0.0, 1.0)
    >>> t
    [[1.0, 1.0], [1.0, 5.0]]
    """
    kernel = _gauss_kernel(width)
    rows = [_blur_1d(row, kernel) for row in table]
    body = rows[:-1] if own_top_row and len(rows) > 1 else rows
    cols = [_blur_1d(col, kernel) for col in zip(*body, strict=True)]
    out = [[cols[j][i] + pseudo for j in range(len(cols))] for i in range(len(body))]
    if body is not rows:
        out.append([v + pseudo for v in rows[-1]])
    return out


def _author_set(steps: Sequence[Mapping[str, Any]]) -> set[str]:
    return {str(s.get("author")) for s in steps}


def _first_error(steps: Sequence[Mapping[str, Any]], threshold: float) -> int | None:
    known = [(i, s.get("score")) for i, s in enumerate(steps) if s.get("score") is not None]
    if not known:
        return None
    for i, score in known:
        if float(score) < threshold:  # type: ignore[arg-type]
            return i
    return min(known, key=lambda p: float(p[1]))[0]  # type: ignore[arg-type]


def observation_counts(
    traces: Iterable[Mapping[str, Any]], *, bin_size: float = 0.05, threshold: float = 0.35
) -> list[list[list[float]]]:
    """Raw ``counts[state][m_bin][c_bin]`` from traces (labelling in the module docstring)."""
    n = round(1.0 / bin_size)
    counts = [[[0.0] * n for _ in range(n)] for _ in range(3)]

    def cell(x: float) -> int:
        return min(max(int(x / bin_size), 0), n - 1)

    for trace in traces:
        steps = trace.get("steps") or []
        error = None if trace.get("correct") else _first_error(steps, threshold)
        if not trace.get("correct") and error is None:
            continue  # wrong answer but nothing scored: cannot place the error
        for i, step in enumerate(steps):
            draft = step.get("draft_score")
            if draft is None and step.get("author") == "weak":
                draft = step.get("score")
            if draft is None:
                continue
            kept = step.get("author") == "weak"
            if error is None or i < error:
                if not kept:
                    continue
                state = 0
            elif i == error:
                if not kept:
                    continue
                state = 2
            else:
                state = 1
            prev = [float(s["score"]) for s in steps[:i] if s.get("score") is not None]
            counts[state][cell(min(prev) if prev else 1.0)][cell(float(draft))] += 1
    return counts


MIN_PAIRS = 20
"""Fewer questions answered by both always-weak and always-strong runs cannot fit a spread."""


@dataclass(frozen=True)
class DifficultyFit:
    """Maximum-likelihood per-question difficulty model of paired always-weak/strong runs."""

    p_weak: float
    """Median question's weak step accuracy."""
    p_strong: float
    difficulty_sd: float
    log_likelihood: float
    independent_log_likelihood: float
    """The same data's log likelihood with every question and step alike (sd 0)."""
    n_pairs: int
    p_weak_final: float | None = None
    """Median question's accuracy of a weak step that ends the solution (if fit apart)."""
    p_strong_final: float | None = None


def _sigmoid(x: Any) -> Any:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-x))


def _pair_log_likelihood(
    theta: Sequence[float], pairs: Sequence[tuple[int, bool, int, bool]], nodes: int = 24
) -> float:
    """``theta``: (a_w, a_s, sd) or (a_w, a_s, sd, b_w, b_s) with final-step logits b."""
    import numpy as np

    a_w, a_s, sd = float(theta[0]), float(theta[1]), float(theta[2])
    b_w, b_s = (float(theta[3]), float(theta[4])) if len(theta) > 3 else (a_w, a_s)
    z, w = (np.asarray(v) for v in zip(*difficulty_nodes(sd, nodes), strict=True))
    arr = np.asarray(pairs, dtype=np.float64)  # (n, 4): L_w, y_w, L_s, y_s

    def right(a: float, b: float, steps: Any) -> Any:  # (n, k): all steps right
        return _sigmoid(a - z)[None, :] ** (steps - 1) * _sigmoid(b - z)[None, :]

    r_w, r_s = right(a_w, b_w, arr[:, 0:1]), right(a_s, b_s, arr[:, 2:3])
    f_w = np.where(arr[:, 1:2] > 0, r_w, 1.0 - r_w)
    f_s = np.where(arr[:, 3:4] > 0, r_s, 1.0 - r_s)
    return float(np.log(np.maximum((f_w * f_s) @ w, 1e-300)).sum())


def fit_difficulty(
    pairs: Sequence[tuple[int, bool, int, bool]], *, final_step: bool = False
) -> DifficultyFit:
    """Fit the step accuracies and the difficulty spread to paired outcomes (max. likelihood).

    ``pairs``: per question ``(weak steps, weak right, strong steps, strong right)``.  A
    question's step accuracy is ``sigmoid(logit(p) - z)`` with ``z ~ N(0, sd)`` shared by
    both models; a solution is right iff all its steps are.  ``final_step`` gives each
    model's last step an accuracy of its own (two more parameters).
    """
    if len(pairs) < MIN_PAIRS:
        raise ValueError(
            f"fit_difficulty needs >= {MIN_PAIRS} questions with both an always-weak and an "
            f"always-strong trace, got {len(pairs)}"
        )
    from scipy.optimize import minimize

    def logit(p: float) -> float:
        p = min(max(p, 1e-3), 1 - 1e-6)
        return math.log(p / (1 - p))

    p_w = solve_step_accuracy([p[0] for p in pairs], sum(p[1] for p in pairs) / len(pairs))
    p_s = solve_step_accuracy([p[2] for p in pairs], sum(p[3] for p in pairs) / len(pairs))
    independent = _pair_log_likelihood((logit(p_w), logit(p_s), 0.0), pairs)
    bounds = [(-10.0, 15.0), (-10.0, 15.0), (0.0, 10.0)] + [(-10.0, 15.0)] * (2 * final_step)
    best = None
    for sd0 in (0.5, 1.5, 3.0):  # a few starts: the likelihood is flat in sd near 0
        x0 = [logit(p_w) + sd0, logit(p_s) + sd0, sd0]
        if final_step:
            x0 += [logit(p_w) + sd0, logit(p_s) + sd0]
        res = minimize(
            lambda th: -_pair_log_likelihood(th, pairs), x0=x0, method="L-BFGS-B", bounds=bounds
        )
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    theta = [float(v) for v in best.x]
    ll = -float(best.fun)
    if ll <= independent:  # no better than alike questions and steps: the simpler model
        theta, ll, final_step = [logit(p_w), logit(p_s), 0.0], independent, False

    def prob(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    return DifficultyFit(
        p_weak=prob(theta[0]),
        p_strong=prob(theta[1]),
        difficulty_sd=theta[2],
        log_likelihood=ll,
        independent_log_likelihood=independent,
        n_pairs=len(pairs),
        p_weak_final=prob(theta[3]) if final_step else None,
        p_strong_final=prob(theta[4]) if final_step else None,
    )


def _paired_outcomes(
    weak: Sequence[Mapping[str, Any]], strong: Sequence[Mapping[str, Any]]
) -> list[tuple[int, bool, int, bool]]:
    """``(weak steps, weak right, strong steps, strong right)`` per question in both runs."""
    by_id: dict[str, Mapping[str, Any]] = {}
    for t in strong:
        if t.get("problem_id") is not None:
            by_id.setdefault(str(t["problem_id"]), t)
    pairs, seen = [], set()
    for t in weak:
        pid = t.get("problem_id")
        if pid is None or str(pid) in seen or str(pid) not in by_id:
            continue
        seen.add(str(pid))
        s = by_id[str(pid)]
        pairs.append(
            (len(t["steps"]), bool(t.get("correct")), len(s["steps"]), bool(s.get("correct")))
        )
    return pairs


def length_score_correlation(traces: Iterable[Mapping[str, Any]]) -> float:
    """Correlation of a weak draft's log length with how low its PRM score ranks.

    The simulator draws a step's length from ``rho * doubt + sqrt(1 - rho²) * noise`` with
    ``doubt`` the standard-normal lowness of its score, so ``rho`` is that correlation.
    Scores are ranked over all scored drafts after the first step (first-step scores are a
    distribution of their own), not within the hidden state, which shifts scores whatever
    the length: ``rho`` errs low (on the simulator's own traces, 0.6 reads as ~0.35).
    Clipped to [0, 0.95]; 0 with fewer than 20 drafts.
    """
    from statistics import NormalDist

    pairs: list[tuple[float, float]] = []
    for t in traces:
        for i, step in enumerate(t.get("steps") or []):
            score = step.get("draft_score")
            tokens = step.get("draft_tokens") or step.get("tokens")
            if i == 0 or score is None or not tokens:
                continue
            pairs.append((math.log(max(int(tokens), 1)), float(score)))
    if len(pairs) < 20:
        return 0.0
    order = sorted(range(len(pairs)), key=lambda k: -pairs[k][1])  # highest score first
    doubt = [0.0] * len(pairs)
    nd = NormalDist()
    for rank, k in enumerate(order):
        doubt[k] = nd.inv_cdf((rank + 0.5) / len(pairs))
    xs = [x for x, _ in pairs]
    mx, md = math.fsum(xs) / len(xs), math.fsum(doubt) / len(doubt)
    cov = math.fsum((x - mx) * (d - md) for x, d in zip(xs, doubt, strict=True))
    vx = math.fsum((x - mx) ** 2 for x in xs)
    vd = math.fsum((d - md) ** 2 for d in doubt)
    if vx <= 0 or vd <= 0:
        return 0.0
    return min(max(cov / math.sqrt(vx * vd), 0.0), 0.95)


MIN_FIRST_ROW = 20
"""A state's first-step row with fewer observations borrows the pooled first-step row."""


def fit_calibration(
    traces: Sequence[Mapping[str, Any]],
    *,
    bin_size: float = 0.05,
    max_steps: int = 30,
    first_error_threshold: float = 0.35,
    smoothing_bins: float = 1.0,
    pseudo_count: float = 0.01,
    source: str = "",
    question_difficulty: bool = False,
    final_step: bool = False,
    length_score: bool = False,
) -> Calibration:
    """Fit every simulator parameter from traces (see the module docstring).

    Needs an always-weak and an always-strong run (policy groups whose traces are all
    weak / all strong steps); threshold or other mixed runs add observations and step
    lengths.  ``question_difficulty`` fits a per-question difficulty from the questions
    both runs answered (:func:`fit_difficulty`); ``final_step`` (with it) gives each
    model's solution-ending step an accuracy and a length model of its own;
    ``length_score`` fits ``length_score_corr`` (:func:`length_score_correlation`).
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for t in traces:
        if t.get("steps"):
            groups.setdefault(str(t.get("policy", "")), []).append(t)
    weak_only: list[Mapping[str, Any]] = []
    strong_only: list[Mapping[str, Any]] = []
    for group in groups.values():
        authors = set().union(*(_author_set(t["steps"]) for t in group))
        if authors == {"weak"}:
            weak_only += group
        elif authors == {"strong"}:
            strong_only += group
    if not weak_only or not strong_only:
        raise ValueError(
            "fit_calibration needs always-weak and always-strong traces "
            f"(got {len(weak_only)} weak-only, {len(strong_only)} strong-only)"
        )
    notes: list[str] = []

    def accuracy(ts: Sequence[Mapping[str, Any]]) -> float:
        return sum(bool(t.get("correct")) for t in ts) / len(ts)

    weak_lengths = [len(t["steps"]) for t in weak_only]
    strong_lengths = [len(t["steps"]) for t in strong_only]
    p_weak = solve_step_accuracy(weak_lengths, accuracy(weak_only))
    p_strong = solve_step_accuracy(strong_lengths, accuracy(strong_only))
    difficulty_sd = 0.0
    weak_final: float | None = None
    strong_final: float | None = None
    if final_step and not question_difficulty:
        raise ValueError("final_step is fit with the per-question difficulty: pass both")
    if question_difficulty:
        fit = fit_difficulty(_paired_outcomes(weak_only, strong_only), final_step=final_step)
        p_weak, p_strong, difficulty_sd = fit.p_weak, fit.p_strong, fit.difficulty_sd
        weak_final, strong_final = fit.p_weak_final, fit.p_strong_final
        final_note = (
            f", final steps {fit.p_weak_final:.4f} / {fit.p_strong_final:.4f}"
            if fit.p_weak_final is not None and fit.p_strong_final is not None
            else ""
        )
        notes.append(
            f"per-question difficulty from {fit.n_pairs} paired questions: sd "
            f"{fit.difficulty_sd:.3f} (logit), median step accuracies {fit.p_weak:.4f} / "
            f"{fit.p_strong:.4f}{final_note}; log likelihood {fit.log_likelihood:.2f} vs "
            f"{fit.independent_log_likelihood:.2f} with every question alike"
        )

    weak_tok: list[int] = []
    strong_tok: list[int] = []
    final_tok: dict[str, list[int]] = {"weak": [], "strong": []}
    for t in traces:
        steps = t.get("steps") or []
        for i, s in enumerate(steps):
            if s.get("author") == "strong":
                if final_step and i == len(steps) - 1:
                    final_tok["strong"].append(int(s["tokens"]))
                else:
                    strong_tok.append(int(s["tokens"]))
                if s.get("draft_tokens"):
                    weak_tok.append(int(s["draft_tokens"]))
            elif final_step and i == len(steps) - 1:
                final_tok["weak"].append(int(s["tokens"]))
            else:
                weak_tok.append(int(s["tokens"]))

    counts = observation_counts(traces, bin_size=bin_size, threshold=first_error_threshold)
    n = len(counts[0])
    pooled = [[sum(counts[s][i][j] for s in range(3)) for j in range(n)] for i in range(n)]
    if not any(v for row in pooled for v in row):
        raise ValueError("no scored steps in the traces: cannot fit the observation model")
    tables = []
    first_total = math.fsum(pooled[-1])
    for s, name in enumerate(("S0", "S1", "S2")):
        total = sum(v for row in counts[s] for v in row)
        notes.append(f"{name}: {total:g} observations")
        base = counts[s]
        if total == 0:
            notes.append(f"{name} had no observations: using the pooled histogram")
            base = pooled
        own = math.fsum(base[-1])
        if own < MIN_FIRST_ROW and first_total > own:
            # too few first steps in this state: their scores are every state's first steps'
            scale = max(own, 1.0) / first_total
            base = [list(row) for row in base[:-1]] + [[v * scale for v in pooled[-1]]]
            notes.append(f"{name}: {own:g} first-step observations, pooled row used")
        tables.append(smooth_table(base, smoothing_bins, pseudo_count, own_top_row=True))
    rho = 0.0
    if length_score:
        rho = length_score_correlation(traces)
        notes.append(f"length_score_corr {rho:.3f}: log draft length vs score rank, later steps")
    return Calibration(
        p_weak=p_weak,
        p_strong=p_strong,
        bin_size=bin_size,
        observation=tables,
        termination_weak=_length_pmf(weak_lengths, max_steps),
        termination_strong=_length_pmf(strong_lengths, max_steps),
        weak_tokens=_token_model(weak_tok, "weak"),
        strong_tokens=_token_model(strong_tok, "strong"),
        weak_final_tokens=_token_model(final_tok["weak"], "final weak")
        if final_tok["weak"]
        else None,
        strong_final_tokens=_token_model(final_tok["strong"], "final strong")
        if final_tok["strong"]
        else None,
        difficulty_sd=difficulty_sd,
        length_score_corr=rho,
        p_weak_final=weak_final,
        p_strong_final=strong_final,
        source=source or f"fit_calibration on {len(traces)} traces",
        notes=notes,
    )


__all__ = [
    "DifficultyFit",
    "fit_calibration",
    "fit_difficulty",
    "length_score_correlation",
    "observation_counts",
    "smooth_table",
    "solve_step_accuracy",
]
