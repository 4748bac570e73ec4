"""Bootstrap intervals over problems, paired where two policies ran the same problems.

Resampling *problems* (not steps) is what makes an interval honest for routing: a
policy's accuracy and cost are per-question outcomes, and two policies evaluated on the
same questions are compared on the same resample (paired), which removes the variance
of question difficulty from their difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

Statistic = Callable[[Mapping[str, np.ndarray]], float | None]
"""A statistic of per-problem columns (e.g. accuracy of a policy, a PGR, a difference)."""


def bootstrap_ci(
    columns: Mapping[str, Sequence[float]],
    statistic: Statistic,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float | None, float | None, float | None]:
    """``(point, lo, hi)``: the statistic and its percentile interval over problems.

    Every column holds one value per problem, in the same problem order, so one resample
    of problem indices is applied to all of them (a paired bootstrap).  Resamples where
    the statistic is undefined (``None``/NaN, e.g. a PGR with no gap) are dropped.

    >>> acc = lambda c: float(c["x"].mean())
    >>> point, lo, hi = bootstrap_ci({"x": [1, 0, 1, 1, 0, 1, 1, 0]}, acc, n_boot=500)
    >>> point, lo < point < hi
    (0.625, True)
    """
    arrays = {k: np.asarray(v, dtype=float) for k, v in columns.items()}
    sizes = {len(a) for a in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(f"columns must have one value per problem each, got sizes {sizes}")
    (n,) = sizes
    point = statistic(arrays)
    if n == 0:
        return point, None, None
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        value = statistic({k: a[idx] for k, a in arrays.items()})
        if value is not None and np.isfinite(value):
            draws.append(value)
    if not draws:
        return point, None, None
    alpha = (1 - level) / 2
    lo, hi = np.quantile(draws, [alpha, 1 - alpha])
    return point, float(lo), float(hi)


def bootstrap_mean(
    values: Sequence[float], *, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of a mean over problems.

    >>> lo, hi = bootstrap_mean([1.0, 0.0] * 50)
    >>> 0.39 < lo < 0.5 < hi < 0.61
    True
    """
    _, lo, hi = bootstrap_ci(
        {"x": values}, lambda c: float(c["x"].mean()), n_boot=n_boot, seed=seed
    )
    return (float("nan") if lo is None else lo), (float("nan") if hi is None else hi)


__all__ = ["Statistic", "bootstrap_ci", "bootstrap_mean"]
