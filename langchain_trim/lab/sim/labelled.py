"""Fit the POMDP observation model of a scorer from step-labelled solutions.

The paper fits Qwen2.5-Math-PRM-7B's observation tables on ProcessBench: for every step
of a solution whose first wrong step is known, the pair (min of the previous scores,
current score) is counted under the step's hidden state — S0 before the first error,
S2 at it, S1 after it.  This does the same for any scorer, with the simulator's
smoothing, so a new PRM gets a calibration without guessing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from langchain_trim.lab.sim.fit import smooth_table

S0, S1, S2 = 0, 1, 2
"""Hidden states (:data:`langchain_trim.policies.calibration.STATES`)."""


def observation_tables_from_labels(
    per_solution_scores: Sequence[Sequence[float]],
    labels: Sequence[int],
    *,
    bin_size: float = 0.05,
    smoothing_bins: float = 1.0,
    pseudo_count: float = 0.01,
) -> tuple[list[list[list[float]]], list[int]]:
    """``(tables, counts)``: normalised ``tables[state][min_prev_bin][current_bin]``.

    ``labels[i]`` is the index of the first wrong step of solution ``i`` (-1: none).

    >>> tables, counts = observation_tables_from_labels([[0.9, 0.2, 0.1]], [1], bin_size=0.5,
    ...                                                 smoothing_bins=0, pseudo_count=0)
    >>> counts
    [1, 1, 1]
    >>> tables[2]  # the first error: min previous 0.9 (bin 1), current 0.2 (bin 0)
    [[0.0, 0.0], [1.0, 0.0]]
    """
    n = round(1.0 / bin_size)
    counts = [[[0.0] * n for _ in range(n)] for _ in range(3)]

    def cell(x: float) -> int:
        return min(max(int(x / bin_size), 0), n - 1)

    for scores, label in zip(per_solution_scores, labels, strict=True):
        for t, score in enumerate(scores):
            state = 0 if label < 0 or t < label else (2 if t == label else 1)
            prev = min(scores[:t]) if t else 1.0
            counts[state][cell(prev)][cell(score)] += 1
    totals = [int(sum(sum(row) for row in table)) for table in counts]
    tables = []
    for table in counts:
        smooth = smooth_table(table, smoothing_bins, pseudo_count)
        total = sum(sum(row) for row in smooth) or 1.0
        tables.append([[v / total for v in row] for row in smooth])
    return tables, totals


def fit_observation_model(
    solutions: Iterable[tuple[Sequence[float], int]],
    *,
    bin_size: float = 0.05,
    smoothing_bins: float = 1.0,
    pseudo_count: float = 0.01,
) -> Any:
    """Per-state (min previous, current) tables from labelled solutions.

    Each solution is ``(step scores, first wrong step index or -1)`` (ProcessBench's
    ``label``).  Steps before the first error are S0, the first error S2, later steps
    S1.  The numpy twin of :func:`observation_tables_from_labels`, shaped for
    :class:`~langchain_trim.policies.pomdp_model.PomdpModel` (a state without steps
    borrows the pooled counts).  Histograms are blurred with a Gaussian kernel mirrored at
    the edges (like the release's reflected KDE) plus ``pseudo_count`` per cell, then
    normalised.

    >>> import numpy as np
    >>> t = fit_observation_model([([0.9, 0.2, 0.1], 1)] * 50, smoothing_bins=0)
    >>> [int(np.argmax(t[s].sum(axis=0))) for s in range(3)]
    [18, 2, 4]
    """
    import numpy as np

    n = round(1.0 / bin_size)
    counts = np.zeros((3, n, n))

    def cell(x: float) -> int:
        return min(max(int(x / bin_size), 0), n - 1)

    for scores, first_error in solutions:
        for i, score in enumerate(scores):
            if first_error < 0 or i < first_error:
                state = S0
            elif i == first_error:
                state = S2
            else:
                state = S1
            m = min(scores[:i]) if i else 1.0
            counts[state, cell(m), cell(score)] += 1
    out = np.zeros_like(counts)
    for s in range(3):
        base = counts[s] if counts[s].sum() > 0 else counts.sum(axis=0)
        out[s] = np.asarray(smooth_table(base.tolist(), smoothing_bins, pseudo_count))
        out[s] /= out[s].sum()
    return out


__all__ = ["fit_observation_model", "observation_tables_from_labels"]
