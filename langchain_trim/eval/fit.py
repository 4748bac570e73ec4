"""Fit TRIM-Thr's operating point on *your* dev traces; get a policy file and its curve.

Every deployment has to answer "which threshold?" on its own models and data, and has to
answer it on data it will not report on.  :func:`fit_threshold` reads a dev run (traces
of ``weak``/``weakscored``, ``strong`` and a ``thr:k`` sweep, as written by ``trim eval``)
and picks the threshold

* with the best ΔIBC (cost efficiency over the weak–strong line; the default), or
* the most accurate one whose strong-token share stays within ``max_share`` of
  always-strong's.

:func:`write_policy_file` stores the choice with the dev curve it was read from, so the
expected accuracy and cost travel with the policy; ``make_policy("fit:<file>")`` (and
``trim solve/eval --policy fit:<file>``) uses it.  ``trim fit RUN --out policy.json``
does both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_trim.errors import InvalidInputError

FIT_FORMAT_VERSION = 1
Criterion = Literal["delta_ibc", "max_share"]
_WEAK = ("weakscored", "weak")


@dataclass(frozen=True)
class CurvePoint:
    """One policy of the dev run, measured on the problems every policy solved."""

    policy: str
    accuracy: float
    strong_tokens: float
    normalized_cost: float | None
    pgr: float | None
    delta_ibc: float | None


@dataclass(frozen=True)
class ThresholdFit:
    """The chosen policy, why, and the dev curve behind it."""

    policy: str
    criterion: Criterion
    max_share: float | None
    n_problems: int
    weak: CurvePoint
    strong: CurvePoint
    chosen: CurvePoint
    curve: tuple[CurvePoint, ...]
    source: str = ""
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["format_version"] = FIT_FORMAT_VERSION
        out["kind"] = "langchain-trim threshold fit"
        return out


def threshold_of(spec: str) -> float | None:
    """The threshold of a ``thr:k`` spec (``None`` for other policies)."""
    name, _, arg = spec.partition(":")
    if name != "thr" or not arg:
        return None
    try:
        return float(arg)
    except ValueError:
        return None


def fit_threshold(
    traces: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    criterion: Criterion = "delta_ibc",
    max_share: float | None = None,
    source: str = "",
) -> ThresholdFit:
    """Choose a ``thr:k`` from a dev run's traces (``{policy: [trace, ...]}``).

    Only problems solved (without error) by the weak run, the strong run and every
    threshold are used, so the points compare on the same questions.

    >>> def run(correct, tokens):
    ...     return [{"problem_id": i, "correct": c, "spend": {"strong_tokens": t}}
    ...             for i, (c, t) in enumerate(zip(correct, tokens))]
    >>> traces = {"weak": run([0, 0, 1, 0], [0] * 4), "strong": run([1, 1, 1, 0], [100] * 4),
    ...           "thr:0.3": run([1, 0, 1, 0], [20] * 4), "thr:0.6": run([1, 1, 1, 0], [70] * 4)}
    >>> fit = fit_threshold(traces)
    >>> fit.policy, fit.chosen.accuracy, fit.chosen.strong_tokens
    ('thr:0.3', 0.5, 20.0)
    >>> fit_threshold(traces, criterion="max_share", max_share=0.8).policy
    'thr:0.6'
    """
    from langchain_trim.eval.metrics import OperatingPoint, summarize_curve

    if criterion not in ("delta_ibc", "max_share"):
        raise InvalidInputError(f"criterion must be 'delta_ibc' or 'max_share', got {criterion!r}")
    if criterion == "max_share" and (max_share is None or not 0 < max_share <= 1):
        raise InvalidInputError(f"max_share must be in (0, 1], got {max_share!r}")
    weak_spec = next((s for s in _WEAK if traces.get(s)), None)
    thresholds = sorted((s for s in traces if threshold_of(s) is not None), key=threshold_of)  # type: ignore[arg-type]
    if weak_spec is None or not traces.get("strong") or not thresholds:
        raise InvalidInputError(
            "a fit needs traces of 'weak' (or 'weakscored'), 'strong' and at least one "
            f"'thr:k'; found {sorted(traces)}"
        )
    by_spec = {
        spec: {str(t["problem_id"]): t for t in traces[spec] if not t.get("error")}
        for spec in [weak_spec, "strong", *thresholds]
    }
    ids = set.intersection(*(set(v) for v in by_spec.values()))
    if not ids:
        raise InvalidInputError("no problem was solved by every policy of the run")

    def point(spec: str) -> OperatingPoint:
        rows = [by_spec[spec][i] for i in sorted(ids)]
        acc = sum(bool(r.get("correct")) for r in rows) / len(rows)
        cost = sum(float((r.get("spend") or {}).get("strong_tokens", 0)) for r in rows) / len(rows)
        return OperatingPoint(acc, cost, spec)

    weak, strong = point(weak_spec), point("strong")
    points = [point(s) for s in thresholds]
    rep = summarize_curve(points, weak, strong)
    curve = tuple(
        CurvePoint(p.label, p.accuracy, p.cost, c, g, d)
        for p, c, g, d in zip(points, rep.normalized_costs, rep.pgr, rep.delta_ibc, strict=True)
    )
    notes = list(rep.degenerate)
    if criterion == "delta_ibc":
        scored = [c for c in curve if c.delta_ibc is not None and math.isfinite(c.delta_ibc)]
        if not scored:
            raise InvalidInputError(f"no threshold has a defined ΔIBC on this run: {notes}")
        chosen = max(scored, key=lambda c: c.delta_ibc)  # type: ignore[arg-type,return-value]
    else:
        within = [
            c
            for c in curve
            if c.normalized_cost is not None and c.normalized_cost <= max_share  # type: ignore[operator]
        ]
        if not within:
            raise InvalidInputError(f"no threshold stays within {max_share:.0%} of strong's tokens")
        chosen = max(within, key=lambda c: (c.accuracy, -c.strong_tokens))

    def ends(p: OperatingPoint) -> CurvePoint:
        return CurvePoint(p.label, p.accuracy, p.cost, None, None, None)

    return ThresholdFit(
        policy=chosen.policy,
        criterion=criterion,
        max_share=max_share,
        n_problems=len(ids),
        weak=ends(weak),
        strong=ends(strong),
        chosen=chosen,
        curve=curve,
        source=source,
        notes=tuple(notes),
    )


def write_policy_file(fit: ThresholdFit, path: str | Path) -> Path:
    """Write ``fit`` as JSON (atomically: a temp file renamed into place)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(fit.to_dict(), indent=2) + "\n")
    tmp.replace(target)
    return target


def read_policy_file(path: str | Path) -> dict[str, Any]:
    """Load and validate a file written by :func:`write_policy_file`."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"cannot read policy file {p}: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") != "langchain-trim threshold fit":
        raise InvalidInputError(f"{p} is not a langchain-trim threshold fit file")
    if data.get("format_version") != FIT_FORMAT_VERSION:
        raise InvalidInputError(
            f"{p}: format_version {data.get('format_version')!r}, expected {FIT_FORMAT_VERSION}"
        )
    k = threshold_of(str(data.get("policy", "")))
    if k is None or not 0 <= k <= 1:
        raise InvalidInputError(f"{p}: policy must be 'thr:k' with k in [0, 1]")
    return data


__all__ = [
    "CurvePoint",
    "ThresholdFit",
    "fit_threshold",
    "read_policy_file",
    "threshold_of",
    "write_policy_file",
]
