r"""Cost/quality metrics of a router's operating points against always-weak/always-strong.

Definitions (cost ``C`` = mean strong-model output tokens per question):

* normalised cost ``c = (C - C_weak) / (C_strong - C_weak)``; always-weak spends no
  strong tokens, so this is ``C / C_strong`` as in the paper.
* ``PGR = (acc - acc_weak) / (acc_strong - acc_weak)``: share of the gap recovered (not
  clipped, so a router can score below 0 or above 1).
* the **frontier**: by default (``envelope="hull"``) the upper concave hull of the
  operating points, the always-weak point ``(0, 0)`` and always-strong ``(1, 1)``.
  Randomising per question between two routers reaches every point of the segment
  joining them, so the hull is exactly what is achievable and linear interpolation
  along it is honest.  ``envelope="monotone"`` instead joins the Pareto points (each
  better than every cheaper one) with straight lines, never above the hull.  Beyond its
  last point the frontier stays flat.
* ``CPT(x%)``: least ``c`` at which the frontier reaches ``x%`` PGR (``None`` if never).
* ``APGR`` (RouteLLM): area under the frontier's PGR over ``c`` in ``[0, 1]``.
* ``ΔIBC`` (AutoMix): ``IBC_M = (acc_M - acc_weak) / (C_M - C_weak)``, ``IBC_base`` the
  same for always-strong, ``ΔIBC = (IBC_M - IBC_base) / IBC_base``.  For a curve we give
  the value of each point, the best point, and ``delta_ibc_fit`` from the least-squares
  slope through the weak point over all points (one number per curve).

Undefined quantities are ``None``, never NaN or inf, and :attr:`CurveReport.degenerate`
says why: a weak→strong accuracy gap ``<= 1e-12`` makes PGR, CPT and APGR undefined; a
strong model that costs no more than the weak one makes normalised cost, CPT, APGR and
ΔIBC undefined; a point that costs no more than always-weak has no ΔIBC (its IBC divides
by zero).  A single point, or none, is fine: the endpoints still make a curve.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any, ClassVar, Literal

Envelope = Literal["hull", "monotone"]

GAP_EPS = 1e-12
"""An accuracy gap at or below this is treated as zero (costs compare exactly with 0)."""


@dataclass(frozen=True)
class OperatingPoint:
    """One router setting: accuracy in [0, 1] and mean strong tokens per question."""

    accuracy: float
    cost: float
    label: str = ""

    def __post_init__(self) -> None:
        for name in ("accuracy", "cost"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if self.cost < 0:
            raise ValueError(f"cost must be >= 0, got {self.cost!r}")


class OnTheCurve:
    """A measured result (a policy's aggregates, a router's setting) as a point on the curve.

    Its ``accuracy`` and mean ``strong_tokens`` make the :class:`OperatingPoint`; the field
    named by ``curve_label`` labels it.
    """

    curve_label: ClassVar[str] = "label"
    accuracy: float
    strong_tokens: float

    def operating_point(self) -> OperatingPoint:
        label = str(getattr(self, self.curve_label))
        return OperatingPoint(self.accuracy, self.strong_tokens, label)


def _finite(value: float) -> float | None:
    """Overflow on absurd inputs (e.g. a cost of 1e-308 tokens) yields ``None``, not inf/NaN."""
    return value if math.isfinite(value) else None


def normalized_cost(cost: float, weak: OperatingPoint, strong: OperatingPoint) -> float | None:
    """``(C - C_weak) / (C_strong - C_weak)``; ``None`` when strong costs no more than weak.

    >>> round(normalized_cost(164.0, OperatingPoint(0.364, 0.0), OperatingPoint(0.73, 494.8)), 4)
    0.3314
    """
    span = strong.cost - weak.cost
    if span <= 0:
        return None
    return _finite((cost - weak.cost) / span)


def pgr(accuracy: float, weak: OperatingPoint, strong: OperatingPoint) -> float | None:
    """Performance gap recovered; ``None`` when strong is not better than weak.

    >>> round(pgr(0.674, OperatingPoint(0.364, 0), OperatingPoint(0.73, 494.8)), 4)
    0.847
    """
    gap = strong.accuracy - weak.accuracy
    if gap <= GAP_EPS:
        return None
    return (accuracy - weak.accuracy) / gap


def ibc(point: OperatingPoint, weak: OperatingPoint) -> float | None:
    """Incremental benefit per cost over always-weak; ``None`` for a point that costs nothing."""
    spent = point.cost - weak.cost
    if spent <= 0:
        return None
    return _finite((point.accuracy - weak.accuracy) / spent)


def delta_ibc(point: OperatingPoint, weak: OperatingPoint, strong: OperatingPoint) -> float | None:
    """``(IBC_M - IBC_base) / IBC_base``: 0 for always-strong, > 0 beats the straight line.

    >>> w, s = OperatingPoint(0.25, 0), OperatingPoint(0.75, 100)
    >>> delta_ibc(OperatingPoint(0.5, 25), w, s)
    1.0
    """
    base = ibc(strong, weak)
    own = ibc(point, weak)
    if base is None or own is None or base <= 0:
        return None
    return _finite((own - base) / base)


def _pareto(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points sorted by cost that beat every cheaper point (ties: best value per cost)."""
    out: list[tuple[float, float]] = []
    for c, g in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or g > out[-1][1]:
            if out and c == out[-1][0]:
                continue
            out.append((c, g))
    return out


def frontier(
    points: Iterable[tuple[float, float]], envelope: Envelope = "hull"
) -> list[tuple[float, float]]:
    """Vertices of the cost→value frontier, cheapest first (see the module docstring).

    >>> frontier([(0, 0), (0.5, 0.4), (0.6, 0.9), (1, 1)])
    [(0, 0), (0.6, 0.9), (1, 1)]
    >>> frontier([(0, 0), (0.5, 0.4), (0.6, 0.9), (1, 1)], "monotone")
    [(0, 0), (0.5, 0.4), (0.6, 0.9), (1, 1)]
    """
    front = _pareto(points)
    if envelope == "monotone" or len(front) <= 2:
        return front
    if envelope != "hull":
        raise ValueError(f"envelope must be 'hull' or 'monotone', got {envelope!r}")
    hull: list[tuple[float, float]] = []
    for p in front:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop hull[-1] when it lies on or below the chord hull[-2] → p
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def cost_at(front: Sequence[tuple[float, float]], target: float) -> float | None:
    """Least cost at which the (non-decreasing) frontier reaches ``target``; ``None`` if never.

    >>> cost_at([(0, 0), (0.5, 0.8), (1, 1)], 0.4)
    0.25
    """
    if not front:
        return None
    if front[0][1] >= target:
        return front[0][0]
    for (c0, g0), (c1, g1) in pairwise(front):
        if g1 >= target:
            return min(c1, max(c0, c0 + (c1 - c0) * ((target - g0) / (g1 - g0))))
    return None


def area(front: Sequence[tuple[float, float]], lo: float = 0.0, hi: float = 1.0) -> float:
    """Integral of the frontier over ``[lo, hi]``: 0 below its first point, flat after its last.

    >>> area([(0, 0), (1, 1)]), area([(0.5, 1.0)])
    (0.5, 0.5)
    """
    if not front or hi <= lo:
        return 0.0
    total = 0.0
    for (c0, g0), (c1, g1) in pairwise(front):
        a, b = max(c0, lo), min(c1, hi)
        if b > a:
            ga = g0 + (g1 - g0) * ((a - c0) / (c1 - c0))
            gb = g0 + (g1 - g0) * ((b - c0) / (c1 - c0))
            total += (ga + gb) / 2 * (b - a)
    last_c, last_g = front[-1]
    start = max(last_c, lo)
    if hi > start:
        total += last_g * (hi - start)
    return total


@dataclass(frozen=True)
class CurveReport:
    """All metrics of one router curve; ``None`` marks an undefined value (see ``degenerate``)."""

    weak: OperatingPoint
    strong: OperatingPoint
    points: tuple[OperatingPoint, ...]
    normalized_costs: tuple[float | None, ...]
    pgr: tuple[float | None, ...]
    cpt: dict[float, float | None]
    """Least normalised cost reaching each PGR level (percent → c)."""
    apgr: float | None
    delta_ibc: tuple[float | None, ...]
    delta_ibc_best: float | None
    delta_ibc_fit: float | None
    envelope: Envelope
    include_endpoints: bool
    degenerate: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (CPT keys become strings)."""
        out = asdict(self)
        out["cpt"] = {f"{k:g}": v for k, v in self.cpt.items()}
        return out


def summarize_curve(
    points: Sequence[OperatingPoint],
    weak: OperatingPoint,
    strong: OperatingPoint,
    *,
    cpt_levels: Sequence[float] = (50.0, 80.0, 95.0),
    envelope: Envelope = "hull",
    include_endpoints: bool = True,
) -> CurveReport:
    """Every metric of the module for one curve.

    ``include_endpoints`` adds always-weak ``(0, 0)`` and always-strong ``(1, 1)`` to the
    frontier (a router can always fall back to either); without it CPT and APGR see only
    ``points`` (and APGR counts 0 below the cheapest one).

    >>> w, s = OperatingPoint(0.25, 0.0), OperatingPoint(0.75, 100.0)
    >>> r = summarize_curve([OperatingPoint(0.625, 25.0)], w, s)
    >>> r.pgr, round(r.cpt[50.0], 4), round(r.delta_ibc_best, 9)
    ((0.75,), 0.1667, 2.0)
    """
    if envelope not in ("hull", "monotone"):
        raise ValueError(f"envelope must be 'hull' or 'monotone', got {envelope!r}")
    notes: list[str] = []
    gap_ok = strong.accuracy - weak.accuracy > GAP_EPS
    cost_ok = strong.cost - weak.cost > 0
    if not gap_ok:
        notes.append("strong is not more accurate than weak: PGR, CPT and APGR undefined")
    if not cost_ok:
        notes.append("strong costs no more than weak: normalised cost, CPT, APGR, ΔIBC undefined")
    costs = tuple(normalized_cost(p.cost, weak, strong) for p in points)
    gains = tuple(pgr(p.accuracy, weak, strong) for p in points)
    dibc = tuple(delta_ibc(p, weak, strong) for p in points)
    if gap_ok and cost_ok and any(d is None for d in dibc):
        notes.append("points that cost no more than always-weak have no ΔIBC")

    cpt: dict[float, float | None] = {float(x): None for x in cpt_levels}
    apgr: float | None = None
    if gap_ok and cost_ok:
        curve = [
            (c, g) for c, g in zip(costs, gains, strict=True) if c is not None and g is not None
        ]
        if include_endpoints:
            curve += [(0.0, 0.0), (1.0, 1.0)]
        front = frontier(curve, envelope)
        for x in cpt_levels:
            found = cost_at(front, float(x) / 100.0)
            cpt[float(x)] = None if found is None else _finite(found)
        apgr = _finite(area(front, 0.0, 1.0)) if front else None

    valid = [d for d in dibc if d is not None]
    best = max(valid) if valid else None
    fit: float | None = None
    base = ibc(strong, weak)
    num = sum((p.cost - weak.cost) * (p.accuracy - weak.accuracy) for p in points)
    den = sum((p.cost - weak.cost) ** 2 for p in points)
    if base is not None and base > 0 and den > 0:
        fit = _finite((num / den - base) / base)
    return CurveReport(
        weak=weak,
        strong=strong,
        points=tuple(points),
        normalized_costs=costs,
        pgr=gains,
        cpt=cpt,
        apgr=apgr,
        delta_ibc=dibc,
        delta_ibc_best=best,
        delta_ibc_fit=fit,
        envelope=envelope,
        include_endpoints=include_endpoints,
        degenerate=tuple(notes),
    )


__all__ = [
    "GAP_EPS",
    "CurveReport",
    "Envelope",
    "OperatingPoint",
    "area",
    "cost_at",
    "delta_ibc",
    "frontier",
    "ibc",
    "normalized_cost",
    "pgr",
    "summarize_curve",
]
