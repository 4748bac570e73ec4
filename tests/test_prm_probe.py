"""The CPU PRM pieces: arithmetic verifier, ProcessBench metrics, probe head, encoder."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from langchain_trim.errors import ModelNotFoundError
from langchain_trim.lab.prm_training import (
    LabelledSolution,
    auroc,
    best_threshold,
    cross_fit_f1,
    evaluate_scorer,
    extract_features,
    fit_blend,
    fit_logistic,
    load_processbench,
    processbench_f1,
    split_by_problem,
    step_targets,
)
from langchain_trim.prm.arithmetic import ArithmeticPRM, check_step, evaluate
from langchain_trim.prm.encoder import FEATURE_VERSION
from langchain_trim.prm.probe import Blend, ProbeHead, ProbePRM

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize(
    ("text", "checked", "false"),
    [
        ("So 50 + 15 + 30 = 105 clips.", 1, 1),
        ("50 + 15 + 30 = 95", 1, 0),
        ("48 / 2 = 24, and 48 + 24 = 72", 2, 0),
        ("10/3 = 3.33 per person", 1, 0),
        ("$1,200 x 3 = $3,600", 1, 0),
        ("12 × 0.5 = 6.5", 1, 1),
        (r"\frac{3}{4} \times 8 = 6", 1, 0),
        ("5 - 7 = -2", 1, 0),
        ("Let 2x + 3 = 7", 0, 0),
        ("It costs $5 per hour", 0, 0),
    ],
)
def test_arithmetic_verifier(text: str, checked: int, false: int) -> None:
    result = check_step(text)
    assert (result.checked, result.false) == (checked, false)


def test_arithmetic_exactness() -> None:
    assert evaluate("1/3 + 1/6") == Fraction(1, 2)
    assert ArithmeticPRM().score("q", ["1 + 1 = 2", "1 + 1 = 3"]) == [0.9, 0.1]


def test_auroc_and_f1_by_hand() -> None:
    assert auroc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert auroc([0.1, 0.8, 0.9], [1, 1, 0]) == 0.0
    assert auroc([0.5, 0.5], [1, 0]) == 0.5
    # two erroneous solutions (first errors at 1 and 0), two correct ones
    scores = [[0.9, 0.2, 0.1], [0.3, 0.9], [0.9, 0.8], [0.9, 0.4]]
    labels = [1, 0, -1, -1]
    out = processbench_f1(scores, labels, 0.5)
    # erroneous: both right (1 and 0); correct: first right, second flagged at step 1
    assert out["acc_erroneous"] == 100.0 and out["acc_correct"] == 50.0
    assert out["f1"] == pytest.approx(2 * 100 * 50 / 150)
    assert 0.3 < best_threshold(scores, labels) <= 0.4
    assert processbench_f1(scores, labels, 0.0)["acc_erroneous"] == 0.0


def test_targets_exclude_steps_after_the_first_error() -> None:
    sol = LabelledSolution("a", "q", ["s0", "s1", "s2", "s3"], label=1)
    assert sol.scored_steps == ["s0", "s1"] and step_targets(sol) == [1, 0]
    ok = LabelledSolution("b", "q", ["s0", "s1"], label=-1)
    assert step_targets(ok) == [1, 1]
    res = evaluate_scorer([[0.9, 0.1], [0.8, 0.7]], [sol, ok], 0.5)
    assert res["auroc"] == 1.0 and res["f1"] == 100.0


def test_cross_fit_uses_the_other_half() -> None:
    rng = np.random.default_rng(0)
    labels = [int(x) for x in rng.integers(-1, 2, size=40)]
    scores = [[0.9] * (lab + 1) if lab < 0 else [0.9] * lab + [0.2] for lab in labels]
    scores = [s if s else [0.9] for s in scores]
    out = cross_fit_f1(scores, labels)
    assert out["f1"] == 100.0 and len(out["thresholds"]) == 2


def test_logistic_head_learns_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 3] > 0).astype(int)
    card = {"feature_version": FEATURE_VERSION, "encoder": "weak"}
    head = fit_logistic(x, y, l2=1.0, card=card)
    assert auroc(head.predict(x).tolist(), y.tolist()) > 0.95
    head.columns = np.arange(5)
    head.save(tmp_path / "h")
    assert not list(tmp_path.glob("*.pkl"))
    loaded = ProbeHead.load(tmp_path / "h")
    assert np.allclose(loaded.predict(x), head.predict(x))
    card = json.loads((tmp_path / "h.json").read_text())
    card["feature_version"] = 999
    (tmp_path / "h.json").write_text(json.dumps(card))
    with pytest.raises(ModelNotFoundError, match="retrain"):
        ProbeHead.load(tmp_path / "h")


class CountingEncoder:
    """Feature rows from step text: [number of 'wrong' words, length]."""

    def encode(self, question: str, steps: list[str]) -> np.ndarray:
        return np.array([[s.count("wrong"), len(s)] for s in steps], dtype=np.float32)


def test_probe_prm_protocol_with_a_fake_encoder() -> None:
    head = ProbeHead(
        mean=np.zeros(2, np.float32),
        std=np.ones(2, np.float32),
        weight=np.array([-4.0, 0.0], np.float32),
        bias=2.0,
        card={"threshold": 0.4},
    )
    prm = ProbePRM(head, encoder=CountingEncoder())  # type: ignore[arg-type]
    scores = prm.score("q", ["fine", "wrong step"])
    assert scores[0] > 0.8 > 0.2 > scores[1]
    assert prm.threshold == 0.4


def test_context_head_reads_each_step_against_the_earlier_ones(tmp_path: Path) -> None:
    """A ``context`` head sees x and x - min(earlier rows): a step far below the others."""
    head = ProbeHead(
        mean=np.zeros(2, np.float32),
        std=np.ones(2, np.float32),
        weight=np.array([0.0, 3.0], np.float32),  # only the difference to earlier steps
        bias=0.0,
        card={"context": True, "feature_version": FEATURE_VERSION},
        columns=np.array([1]),
    )
    rows = np.array([[9.0, -1.0], [9.0, -1.0], [9.0, -3.0], [9.0, -2.0]], np.float32)
    scores = head.predict(rows)
    assert scores[0] == pytest.approx(0.5) and scores[1] == pytest.approx(0.5)
    assert scores[2] < 0.01  # 2 below every earlier step
    assert scores[3] > 0.9  # above the running minimum (-3)
    head.save(tmp_path / "c")
    assert np.allclose(ProbeHead.load(tmp_path / "c").predict(rows), scores)


def _digit_rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows [noise, has_digits, digit_logprob_min] and whether each step is right: a
    wrong step has a surprising digit."""
    right = rng.random(n) < 0.7
    low = np.where(right, rng.normal(-0.5, 0.3, n), rng.normal(-3.0, 0.8, n))
    rows = np.column_stack([rng.normal(size=n), np.ones(n), np.minimum(low, 0.0)])
    return rows.astype(np.float32), right


def test_blend_learns_the_number_confidence_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sols, rows, probs = [], [], []
    for i in range(120):
        r, right = _digit_rows(rng, 4)
        first = int(np.argmin(right)) if not right.all() else -1
        r = r[: first + 1] if first >= 0 else r
        sols.append(LabelledSolution(f"s{i}", f"q{i}", [f"step {j}" for j in range(len(r))], first))
        rows.append(r)
        probs.append(np.full(len(r), 0.5))  # an uninformative head
    blend = fit_blend(probs, rows, sols, np.array([1, 2]))
    scores = [blend.predict(p, r).tolist() for p, r in zip(probs, rows, strict=True)]
    assert evaluate_scorer(scores, sols, 0.5)["auroc"] > 0.9
    head = ProbeHead(
        mean=np.zeros(1, np.float32),
        std=np.ones(1, np.float32),
        weight=np.zeros(1, np.float32),
        bias=0.0,
        card={"feature_version": FEATURE_VERSION},
        columns=np.array([0]),
        blend=blend,
    )
    head.save(tmp_path / "b")
    loaded = ProbeHead.load(tmp_path / "b")
    assert isinstance(loaded.blend, Blend)
    assert np.allclose(loaded.predict(rows[0]), head.predict(rows[0]), atol=1e-6)
    assert np.allclose(loaded.predict_head(rows[0]), 0.5)


def test_feature_cache_is_recomputed_when_the_labels_change(tmp_path: Path) -> None:
    calls = []

    def encode(question: str, steps: list[str]) -> np.ndarray:
        calls.append(len(steps))
        return np.zeros((len(steps), 2))

    sol = LabelledSolution("a", "q", ["s1", "s2", "s3"], 0)
    extract_features(encode, [sol], tmp_path / "c.npz")
    extract_features(encode, [sol], tmp_path / "c.npz")  # cached
    moved = LabelledSolution("a", "q", ["s1", "s2", "s3"], 2)
    feats = extract_features(encode, [moved], tmp_path / "c.npz")
    assert calls == [1, 3] and feats[0].shape == (3, 2)


@pytest.mark.skipif(not (SHARED / "processbench").is_dir(), reason="shared data not present")
def test_processbench_loader_and_math500_exclusion() -> None:
    sols = load_processbench(SHARED / "processbench" / "math.json")
    math500 = [json.loads(line)["problem"] for line in (SHARED / "math500.jsonl").open()]
    kept, excluded = split_by_problem(sols, math500)
    assert len(sols) == 1000 and len(excluded) >= 100 and len(kept) + len(excluded) == 1000
    assert all(-1 <= s.label < len(s.steps) for s in sols)
