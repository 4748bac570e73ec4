"""Cost/quality metrics: hand-computed curves, degenerate cases, invariants, official curve."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_trim.eval.metrics import (
    OperatingPoint,
    area,
    cost_at,
    delta_ibc,
    frontier,
    normalized_cost,
    pgr,
    summarize_curve,
)

OFFICIAL = Path("/work/shared/data/trim_reference/official_thr_math500_qwen1.5b_to_7b.jsonl")

WEAK = OperatingPoint(0.4, 0.0, "weak")
STRONG = OperatingPoint(0.8, 100.0, "strong")
# PGR 0.5 / 0.8 / 0.95 at normalised cost 0.2 / 0.4 / 0.7: a concave curve.
POINTS = [OperatingPoint(0.6, 20.0), OperatingPoint(0.72, 40.0), OperatingPoint(0.78, 70.0)]


def test_hand_computed_curve() -> None:
    r = summarize_curve(POINTS, WEAK, STRONG, cpt_levels=(50, 80, 90, 95, 100))
    assert r.normalized_costs == pytest.approx((0.2, 0.4, 0.7))
    assert r.pgr == pytest.approx((0.5, 0.8, 0.95))
    assert r.cpt[50] == pytest.approx(0.2)
    assert r.cpt[80] == pytest.approx(0.4)
    assert r.cpt[90] == pytest.approx(0.6)  # 0.4 + 0.3 * (0.10 / 0.15)
    assert r.cpt[95] == pytest.approx(0.7)
    assert r.cpt[100] == pytest.approx(1.0)  # only always-strong reaches it
    # trapezoids: .05 + .13 + .2625 + .2925
    assert r.apgr == pytest.approx(0.735)
    # IBC_base = 0.4 / 100; points 0.2/20, 0.32/40, 0.38/70
    assert r.delta_ibc == pytest.approx((1.5, 1.0, 0.38 / 70 / 0.004 - 1))
    assert r.delta_ibc_best == pytest.approx(1.5)
    slope = (20 * 0.2 + 40 * 0.32 + 70 * 0.38) / (20**2 + 40**2 + 70**2)
    assert r.delta_ibc_fit == pytest.approx(slope / 0.004 - 1)
    assert r.degenerate == ()
    assert json.dumps(r.to_dict())  # JSON-ready


def test_hull_versus_monotone() -> None:
    pts = [OperatingPoint(0.5, 50.0), OperatingPoint(0.76, 60.0)]  # PGR .25 @ .5, .9 @ .6
    hull = summarize_curve(pts, WEAK, STRONG, cpt_levels=(25, 50))
    mono = summarize_curve(pts, WEAK, STRONG, cpt_levels=(25, 50), envelope="monotone")
    # hull goes straight from (0, 0) to (0.6, 0.9): PGR 0.25 at c = 1/6
    assert hull.cpt[25] == pytest.approx(0.6 * 0.25 / 0.9)
    assert mono.cpt[25] == pytest.approx(0.5)
    assert mono.cpt[50] == pytest.approx(0.5 + 0.1 * 0.25 / 0.65)
    assert hull.apgr is not None and mono.apgr is not None and hull.apgr > mono.apgr
    assert frontier([(0, 0), (0.3, 0.1), (0.2, 0.5)]) == [(0, 0), (0.2, 0.5)]  # dominated


def test_cpt_not_reached_without_endpoints() -> None:
    r = summarize_curve(POINTS, WEAK, STRONG, include_endpoints=False, cpt_levels=(40, 99))
    assert r.cpt[40] == pytest.approx(0.2)  # the cheapest point already exceeds 40%
    assert r.cpt[99] is None
    # 0 below c = 0.2, then the curve, then flat at 0.95
    assert r.apgr == pytest.approx(0.13 + 0.2625 + 0.95 * 0.3)


def test_single_point_and_endpoints_only() -> None:
    one = summarize_curve([OperatingPoint(0.6, 50.0)], WEAK, STRONG)
    assert one.pgr == pytest.approx((0.5,))
    assert one.cpt[50] == pytest.approx(0.5)  # on the diagonal: the hull is the diagonal
    assert one.delta_ibc == pytest.approx((0.0,))
    empty = summarize_curve([], WEAK, STRONG)
    assert empty.apgr == pytest.approx(0.5)
    assert empty.cpt[80] == pytest.approx(0.8)
    assert empty.delta_ibc_best is None and empty.delta_ibc_fit is None


def test_no_gap_between_weak_and_strong() -> None:
    r = summarize_curve(POINTS, OperatingPoint(0.8, 0.0), OperatingPoint(0.8, 100.0))
    assert r.pgr == (None, None, None)
    assert all(v is None for v in r.cpt.values()) and r.apgr is None
    assert r.delta_ibc == (None, None, None) and r.delta_ibc_best is None
    assert r.degenerate and "not more accurate" in r.degenerate[0]
    worse = summarize_curve(POINTS, OperatingPoint(0.9, 0.0), OperatingPoint(0.8, 100.0))
    assert worse.apgr is None and worse.delta_ibc_fit is None


def test_strong_costs_nothing() -> None:
    r = summarize_curve(POINTS, OperatingPoint(0.4, 0.0), OperatingPoint(0.8, 0.0))
    assert r.normalized_costs == (None, None, None)
    assert r.apgr is None and all(v is None for v in r.cpt.values())
    assert r.delta_ibc == (None, None, None) and r.delta_ibc_fit is None
    assert any("costs no more" in note for note in r.degenerate)
    assert normalized_cost(5.0, WEAK, OperatingPoint(0.8, 0.0)) is None


def test_free_point_has_no_delta_ibc() -> None:
    r = summarize_curve([OperatingPoint(0.5, 0.0), *POINTS], WEAK, STRONG)
    assert r.delta_ibc[0] is None and r.delta_ibc_best == pytest.approx(1.5)
    assert any("no ΔIBC" in note for note in r.degenerate)
    # (0, 0.25) starts the frontier and the hull skips (0.2, 0.5): 0.4 * 0.25 / 0.55
    assert r.cpt[50] == pytest.approx(0.4 * 0.25 / 0.55)


def test_operating_point_validation() -> None:
    with pytest.raises(ValueError):
        OperatingPoint(math.nan, 1.0)
    with pytest.raises(ValueError):
        OperatingPoint(0.5, -1.0)
    with pytest.raises(TypeError):
        OperatingPoint(True, 1.0)
    with pytest.raises(ValueError):
        summarize_curve(POINTS, WEAK, STRONG, envelope="spline")  # type: ignore[arg-type]


def test_small_helpers() -> None:
    assert pgr(0.6, WEAK, STRONG) == pytest.approx(0.5)
    assert delta_ibc(STRONG, WEAK, STRONG) == pytest.approx(0.0)
    assert cost_at([], 0.5) is None
    assert area([], 0, 1) == 0.0


@pytest.mark.skipif(not OFFICIAL.exists(), reason="official reference data not present")
def test_official_thr_curve_is_sane() -> None:
    rows = [json.loads(line) for line in OFFICIAL.read_text().splitlines() if line.strip()]
    by_k = {round(r["threshold"], 2): r for r in rows}

    def point(r: dict) -> OperatingPoint:
        return OperatingPoint(
            r["accuracy"], r["avg_target_tokens_per_question"], f"k={r['threshold']}"
        )

    weak, strong = point(by_k[0.0]), point(by_k[1.0])
    assert (weak.accuracy, strong.accuracy, strong.cost) == (0.364, 0.73, 494.84)
    pts = [point(r) for k, r in by_k.items() if 0 < k < 1]
    r = summarize_curve(pts, weak, strong)
    c50, c80, c95 = r.cpt[50], r.cpt[80], r.cpt[95]
    assert c50 is not None and c80 is not None and c95 is not None
    assert 0 < c50 < c80 < c95 < 0.5  # TRIM-Thr reaches 95% PGR at under half the cost
    assert c95 == pytest.approx(0.434, abs=0.005)  # between k=0.85 and k=0.9 on the hull
    assert r.delta_ibc_best == pytest.approx(1.937, abs=0.005)  # k=0.3: 65.4% at 133 tokens
    assert r.delta_ibc_fit is not None and 0.5 < r.delta_ibc_fit < 1.937
    assert all(d is not None and d > 0 for d in r.delta_ibc)  # every k beats the diagonal
    assert r.apgr is not None and 0.75 < r.apgr < 0.85
    mono = summarize_curve(pts, weak, strong, envelope="monotone")
    assert mono.cpt[95] == pytest.approx(c95)
    assert mono.cpt[50] is not None and mono.cpt[50] >= c50


# -- invariants ------------------------------------------------------------------------------
acc = st.floats(0.0, 1.0, allow_nan=False)
cost = st.floats(0.0, 1000.0, allow_nan=False)
curves = st.lists(st.tuples(acc, cost), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(curves, st.floats(0.0, 0.45), st.floats(0.55, 1.0), st.floats(1.0, 2000.0))
def test_invariants(pairs: list, weak_acc: float, strong_acc: float, strong_cost: float) -> None:
    weak, strong = OperatingPoint(weak_acc, 0.0), OperatingPoint(strong_acc, strong_cost)
    points = [OperatingPoint(a, c) for a, c in pairs]
    levels = (10, 50, 80, 95, 100)
    hull = summarize_curve(points, weak, strong, cpt_levels=levels)
    mono = summarize_curve(points, weak, strong, cpt_levels=levels, envelope="monotone")
    for report in (hull, mono):
        found = [v for v in report.cpt.values() if v is not None]
        assert found == sorted(found)  # more PGR never costs less
        assert all(v >= 0 for v in found)
        assert report.cpt[100] is not None and report.cpt[100] <= 1.0  # strong is on the curve
        top = max([1.0, *(g for g in report.pgr if g is not None)])
        assert report.apgr is not None and 0.0 <= report.apgr <= top + 1e-9
    assert hull.apgr is not None and mono.apgr is not None
    assert hull.apgr >= mono.apgr - 1e-9  # the hull is never below the monotone envelope
    for x in levels:
        h, m = hull.cpt[x], mono.cpt[x]
        assert h is not None and m is not None and h <= m + 1e-9


@settings(max_examples=100, deadline=None)
@given(curves, st.floats(0.01, 100.0))
def test_cost_units_do_not_matter(pairs: list, scale: float) -> None:
    weak, strong = OperatingPoint(0.3, 0.0), OperatingPoint(0.7, 400.0)
    scaled_strong = OperatingPoint(0.7, 400.0 * scale)
    a = summarize_curve([OperatingPoint(x, c) for x, c in pairs], weak, strong)
    b = summarize_curve([OperatingPoint(x, c * scale) for x, c in pairs], weak, scaled_strong)
    for va, vb in zip(a.cpt.values(), b.cpt.values(), strict=True):
        assert (va is None) == (vb is None)
        if va is not None and vb is not None:
            assert va == pytest.approx(vb, rel=1e-6, abs=1e-9)
    assert a.apgr == pytest.approx(b.apgr, rel=1e-6, abs=1e-9)
    for da, db in zip(a.delta_ibc, b.delta_ibc, strict=True):
        assert (da is None) == (db is None)
        if da is not None and db is not None:
            assert da == pytest.approx(db, rel=1e-6, abs=1e-9)
