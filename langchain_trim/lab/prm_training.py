"""Train and measure step scorers on ProcessBench-style labelled solutions.

A labelled solution is a list of steps and ``label`` = index of the first wrong step
(-1 when every step is right).  Steps before the first error are positives (correct),
the first wrong step is the negative, and later steps are ambiguous (an earlier error
already derailed the solution) and left out of step-level metrics.

Metrics, as in ProcessBench: step AUROC (first-error step vs earlier steps) and F1, the
harmonic mean of the accuracy on erroneous solutions (the first step scoring below the
threshold is exactly the labelled one) and on correct solutions (no step below it).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from langchain_trim.prm.probe import Blend, ProbeHead


@dataclass
class LabelledSolution:
    """One solution with its first-error label."""

    id: str
    question: str
    steps: list[str]
    label: int
    final_answer_correct: bool | None = None

    @property
    def scored_steps(self) -> list[str]:
        """Steps that matter for the metrics: up to the first error, or all."""
        return self.steps if self.label < 0 else self.steps[: self.label + 1]


def load_processbench(path: str | Path) -> list[LabelledSolution]:
    """Read one ProcessBench split (``gsm8k.json``, ``math.json``, ...)."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    return [
        LabelledSolution(
            id=str(r["id"]),
            question=r["problem"],
            steps=[str(s) for s in r["steps"]],
            label=int(r["label"]),
            final_answer_correct=r.get("final_answer_correct"),
        )
        for r in rows
    ]


def normalise_problem(text: str) -> str:
    return " ".join(text.split()).strip().lower()


def split_by_problem(
    solutions: Sequence[LabelledSolution], exclude: Iterable[str]
) -> tuple[list[LabelledSolution], list[LabelledSolution]]:
    """``(kept, excluded)``: solutions whose problem text is in ``exclude`` go apart."""
    banned = {normalise_problem(p) for p in exclude}
    kept = [s for s in solutions if normalise_problem(s.question) not in banned]
    gone = [s for s in solutions if normalise_problem(s.question) in banned]
    return kept, gone


def subsample(items: Sequence[Any], n: int | None, seed: int) -> list[Any]:
    items = list(items)
    if n is None or n >= len(items):
        return items
    rng = random.Random(seed)
    return sorted(rng.sample(items, n), key=items.index)


def step_targets(solution: LabelledSolution) -> list[int]:
    """1 for correct steps, 0 for the first wrong one, over ``scored_steps``."""
    n = len(solution.scored_steps)
    return [0 if i == solution.label else 1 for i in range(n)]


# -- metrics ---------------------------------------------------------------------------
def auroc(scores: Sequence[float], targets: Sequence[int]) -> float:
    """Probability that a random correct step outscores a random wrong one (ties 1/2)."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=float)
    y = np.asarray(targets, dtype=int)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def predicted_first_error(scores: Sequence[float], threshold: float) -> int:
    for i, score in enumerate(scores):
        if score < threshold:
            return i
    return -1


def processbench_f1(
    per_solution: Sequence[Sequence[float]], labels: Sequence[int], threshold: float
) -> dict[str, float]:
    """ProcessBench F1 (in %) with its two accuracies."""
    err_hits = err_n = ok_hits = ok_n = 0
    for scores, label in zip(per_solution, labels, strict=True):
        pred = predicted_first_error(scores, threshold)
        if label < 0:
            ok_n += 1
            ok_hits += pred == -1
        else:
            err_n += 1
            err_hits += pred == label
    acc_err = 100.0 * err_hits / max(err_n, 1)
    acc_ok = 100.0 * ok_hits / max(ok_n, 1)
    f1 = 0.0 if acc_err + acc_ok == 0 else 2 * acc_err * acc_ok / (acc_err + acc_ok)
    return {"f1": f1, "acc_erroneous": acc_err, "acc_correct": acc_ok}


def best_threshold(
    per_solution: Sequence[Sequence[float]],
    labels: Sequence[int],
    grid: Iterable[float] | None = None,
) -> float:
    """The threshold with the best F1 on these solutions (pick it on a separate split)."""
    grid = list(grid) if grid is not None else [i / 200 for i in range(1, 200)]
    return max(grid, key=lambda t: (processbench_f1(per_solution, labels, t)["f1"], -abs(t - 0.5)))


def evaluate_scorer(
    per_solution: Sequence[Sequence[float]], solutions: Sequence[LabelledSolution], threshold: float
) -> dict[str, float]:
    """AUROC over labelled steps and F1 at ``threshold``."""
    flat_scores: list[float] = []
    flat_targets: list[int] = []
    for scores, sol in zip(per_solution, solutions, strict=True):
        targets = step_targets(sol)
        flat_scores.extend(scores[: len(targets)])
        flat_targets.extend(targets)
    out = {"auroc": auroc(flat_scores, flat_targets), "threshold": threshold}
    out.update(processbench_f1(per_solution, [s.label for s in solutions], threshold))
    return out


def cross_fit_f1(
    per_solution: Sequence[Sequence[float]], labels: Sequence[int], seed: int = 0
) -> dict[str, float]:
    """F1 with the threshold of each half chosen on the other half (2-fold), pooled."""
    idx = list(range(len(labels)))
    random.Random(seed).shuffle(idx)
    halves = [idx[: len(idx) // 2], idx[len(idx) // 2 :]]
    preds: list[Sequence[float]] = []
    labs: list[int] = []
    thresholds = []
    for k in (0, 1):
        fit, test = halves[1 - k], halves[k]
        thr = best_threshold([per_solution[i] for i in fit], [labels[i] for i in fit])
        thresholds.append(thr)
        # shift scores so one threshold (0) applies to the pooled evaluation
        preds.extend([[s - thr for s in per_solution[i]] for i in test])
        labs.extend(labels[i] for i in test)
    out = processbench_f1(preds, labs, 0.0)
    out["thresholds"] = thresholds  # type: ignore[assignment]
    return out


# -- training --------------------------------------------------------------------------
def fit_logistic(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    l2: float = 1.0,
    balanced: bool = True,
    card: dict[str, Any] | None = None,
) -> ProbeHead:
    """L2-regularised logistic regression (L-BFGS) on standardised features."""
    from scipy.optimize import minimize

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    z = (x - mean) / std
    n, d = z.shape
    if balanced:
        n_pos = max(y.sum(), 1.0)
        n_neg = max(n - y.sum(), 1.0)
        w = np.where(y == 1, n / (2 * n_pos), n / (2 * n_neg))
    else:
        w = np.ones(n)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef, b = theta[:d], theta[d]
        logits = z @ coef + b
        p = 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))
        eps = 1e-12
        value = -np.sum(w * (y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))) / n
        value += 0.5 * l2 * float(coef @ coef) / n
        grad_logits = w * (p - y) / n
        grad = np.concatenate([z.T @ grad_logits + l2 * coef / n, [grad_logits.sum()]])
        return float(value), grad

    result = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    theta = result.x
    return ProbeHead(
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        weight=theta[:d].astype(np.float32),
        bias=float(theta[d]),
        card=dict(card or {}),
    )


def fit_blend(
    head_probs: Sequence[np.ndarray],
    rows: Sequence[np.ndarray],
    solutions: Sequence[LabelledSolution],
    columns: np.ndarray,
    *,
    l2: float = 1.0,
) -> Blend:
    """Fit a :class:`Blend` on held-out head probabilities (out-of-fold, or from another
    domain) and the encoder's full rows of the same solutions."""
    inputs = [Blend.inputs(p, r, columns) for p, r in zip(head_probs, rows, strict=True)]
    x, y = stack_steps(inputs, solutions)
    fitted = fit_logistic(x, y, l2=l2)
    return Blend(
        mean=fitted.mean,
        std=fitted.std,
        weight=fitted.weight,
        bias=fitted.bias,
        columns=np.asarray(columns, dtype=np.int64),
    )


def stack_steps(
    feats: Sequence[np.ndarray], solutions: Sequence[LabelledSolution]
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled step rows of many solutions: ``(X, y)``."""
    xs, ys = [], []
    for f, sol in zip(feats, solutions, strict=True):
        targets = step_targets(sol)
        xs.append(f[: len(targets)])
        ys.extend(targets)
    return np.concatenate(xs, axis=0), np.asarray(ys)


def extract_features(
    encode: Callable[[str, Sequence[str]], np.ndarray],
    solutions: Sequence[LabelledSolution],
    cache: Path | None = None,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> list[np.ndarray]:
    """Features of each solution's ``scored_steps``, cached in an ``.npz`` file."""
    if cache is not None and cache.is_file():
        data = np.load(cache, allow_pickle=False)
        ids = [str(i) for i in data["ids"]]
        offsets = data["offsets"]
        counts = [int(n) for n in np.diff(offsets)]
        if ids == [s.id for s in solutions] and counts == [len(s.scored_steps) for s in solutions]:
            return [data["x"][offsets[i] : offsets[i + 1]] for i in range(len(ids))]
    it: Iterable[LabelledSolution] = progress(solutions) if progress else solutions
    feats = [encode(s.question, s.scored_steps) for s in it]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(f) for f in feats])
        np.savez(
            cache,
            x=np.concatenate(feats, axis=0),
            offsets=offsets,
            ids=np.asarray([s.id for s in solutions]),
        )
    return feats


__all__ = [
    "LabelledSolution",
    "auroc",
    "best_threshold",
    "cross_fit_f1",
    "evaluate_scorer",
    "extract_features",
    "fit_blend",
    "fit_logistic",
    "load_processbench",
    "predicted_first_error",
    "processbench_f1",
    "split_by_problem",
    "stack_steps",
    "step_targets",
    "subsample",
]
