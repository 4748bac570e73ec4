"""How faithful is the simulator?  Simulated vs real TRIM-Thr on MATH-500 (1.5B → 7B).

Run ``python -m benchmarks.sim_fidelity``; writes ``benchmarks/results/sim_fidelity.json``
and ``.png``.  Real numbers: the official release's threshold sweep
(``official_thr_math500_qwen1.5b_to_7b.jsonl``).

* **before**: :meth:`Calibration.from_official` as is (ProcessBench observation tables,
  the release's step accuracies and length pmfs, strong step length = always-strong
  tokens / mean strong solution length).
* **after**: the same tables with a correction fit ONLY on anchor thresholds 0, 0.5 and
  1, then judged on every other threshold:

  1. ``p_weak``/``p_strong`` so that always-weak/always-strong accuracy (k=0, k=1) is
     the real 36.4% / 73.0% under the length pmfs;
  2. strong step length from the always-strong tokens (k=1), as before;
  3. score model (conditional on the min previous score or not), ``observation_mix``
     (less discriminative PRM) and ``score_power`` (less confident PRM) by grid search
     on k=0.5's accuracy and escalations per question;
  4. ``length_score_corr`` (low-scored steps are longer, the strong rewrite too) by
     bisection on k=0.5's strong tokens per question.

The real curve is one run of 500 questions (accuracy standard error ≈ 2 points), so a
gap of that size is noise.  The simulator is evaluated with many more episodes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Literal

from benchmarks.shared_data import REFERENCE
from langchain_trim.eval.metrics import OperatingPoint, summarize_curve
from langchain_trim.lab.sim import Calibration, SimEnv
from langchain_trim.lab.sim.fit import solve_step_accuracy
from langchain_trim.policies import ThresholdPolicy

REAL_THR = REFERENCE / "official_thr_math500_qwen1.5b_to_7b.jsonl"
RESULTS = Path(__file__).resolve().parent / "results"
ANCHORS = (0.0, 0.5, 1.0)
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(21))
FIT_EPISODES, FIT_SEED = 4000, 1
EVAL_EPISODES, EVAL_SEED = 20000, 2
MIX_GRID = tuple(round(0.05 * i, 2) for i in range(13))
POWER_GRID = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
ScoreModel = Literal["conditional", "marginal"]
SCORE_MODELS: tuple[ScoreModel, ...] = ("conditional", "marginal")


def load_real(path: Path = REAL_THR) -> dict[float, dict[str, float]]:
    """Real results by threshold: accuracy, strong tokens and strong calls per question."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[round(float(row["threshold"]), 2)] = {
                "accuracy": float(row["accuracy"]),
                "strong_tokens": float(row["avg_target_tokens_per_question"]),
                "escalations": float(row["avg_target_calls_per_question"]),
            }
    return out


def simulate(
    cal: Calibration, thresholds: tuple[float, ...], n: int, seed: int, score_model: ScoreModel
) -> dict[float, dict[str, float]]:
    """Aggregates of a threshold sweep (common random numbers across thresholds)."""
    env = SimEnv(cal, score_model=score_model)
    out = {}
    for k in thresholds:
        r = env.run(ThresholdPolicy(k), n, seed=seed)
        out[k] = {
            "accuracy": r.accuracy,
            "strong_tokens": r.mean_strong_tokens,
            "escalations": r.mean_escalations,
        }
    return out


def correct(
    base: Calibration, real: dict[float, dict[str, float]]
) -> tuple[Calibration, dict[str, Any]]:
    """Fit the documented correction on the anchor thresholds only."""
    weak_pmf = base.termination_weak
    strong_pmf = base.termination_strong or weak_pmf
    lengths = list(range(1, base.max_steps + 1))
    p_weak = solve_step_accuracy(lengths, real[0.0]["accuracy"], weights=weak_pmf)
    p_strong = solve_step_accuracy(lengths, real[1.0]["accuracy"], weights=strong_pmf)
    strong_mean = real[1.0]["strong_tokens"] / base.mean_steps("strong")
    cal = base.model_copy(
        update={
            "p_weak": p_weak,
            "p_strong": p_strong,
            "strong_tokens": base.strong_tokens.model_copy(update={"mean": strong_mean}),
        }
    )
    target = real[0.5]
    grid: list[tuple[float, ScoreModel, float, float]] = []
    for score_model in SCORE_MODELS:
        for mix in MIX_GRID:
            for power in POWER_GRID:
                trial = cal.model_copy(update={"observation_mix": mix, "score_power": power})
                sim = simulate(trial, (0.5,), FIT_EPISODES, FIT_SEED, score_model)[0.5]
                loss = ((sim["accuracy"] - target["accuracy"]) / 0.02) ** 2 + (
                    (sim["escalations"] - target["escalations"]) / (0.05 * target["escalations"])
                ) ** 2
                grid.append((loss, score_model, mix, power))
    loss, score_model, mix, power = min(grid)
    cal = cal.model_copy(update={"observation_mix": mix, "score_power": power})
    lo, hi = 0.0, 0.95
    for _ in range(12):  # strong tokens rise with the correlation
        mid = (lo + hi) / 2
        trial = cal.model_copy(update={"length_score_corr": mid})
        sim = simulate(trial, (0.5,), FIT_EPISODES, FIT_SEED, score_model)[0.5]
        lo, hi = (mid, hi) if sim["strong_tokens"] < target["strong_tokens"] else (lo, mid)
    rho = round((lo + hi) / 2, 4)
    cal = cal.model_copy(
        update={
            "length_score_corr": rho,
            "source": base.source + " + anchor correction (k = 0, 0.5, 1)",
            "notes": [
                *base.notes,
                f"p_weak/p_strong solved for always-weak {real[0.0]['accuracy']:.3f} and "
                f"always-strong {real[1.0]['accuracy']:.3f}",
                f"strong step mean {strong_mean:.1f} tokens from always-strong tokens",
                f"score model {score_model}, observation_mix {mix}, score_power {power} "
                f"(grid loss {loss:.2f} at k=0.5)",
                f"length_score_corr {rho} from k=0.5 strong tokens",
            ],
        }
    )
    info = {
        "p_weak": p_weak,
        "p_strong": p_strong,
        "strong_step_tokens": strong_mean,
        "score_model": score_model,
        "observation_mix": mix,
        "score_power": power,
        "length_score_corr": rho,
        "anchor_loss": loss,
        "grid_top5": [
            {"loss": g[0], "score_model": g[1], "observation_mix": g[2], "score_power": g[3]}
            for g in sorted(grid)[:5]
        ],
    }
    return cal, info


def gaps(
    sim: dict[float, dict[str, float]], real: dict[float, dict[str, float]]
) -> list[dict[str, Any]]:
    """Per-threshold simulated minus real (accuracy in points, tokens per question)."""
    rows = []
    for k in THRESHOLDS:
        rows.append(
            {
                "threshold": k,
                "anchor": k in ANCHORS,
                "real_accuracy": real[k]["accuracy"],
                "sim_accuracy": sim[k]["accuracy"],
                "accuracy_gap_pts": 100 * (sim[k]["accuracy"] - real[k]["accuracy"]),
                "real_strong_tokens": real[k]["strong_tokens"],
                "sim_strong_tokens": sim[k]["strong_tokens"],
                "strong_tokens_gap": sim[k]["strong_tokens"] - real[k]["strong_tokens"],
                "real_escalations": real[k]["escalations"],
                "sim_escalations": sim[k]["escalations"],
            }
        )
    return rows


def gap_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and max absolute gaps over the held-out (non-anchor) thresholds."""
    held = [r for r in rows if not r["anchor"]]
    acc = [abs(r["accuracy_gap_pts"]) for r in held]
    tok = [abs(r["strong_tokens_gap"]) for r in held]
    return {
        "held_out_thresholds": len(held),
        "mean_abs_accuracy_gap_pts": sum(acc) / len(acc),
        "max_abs_accuracy_gap_pts": max(acc),
        "mean_abs_strong_tokens_gap": sum(tok) / len(tok),
        "max_abs_strong_tokens_gap": max(tok),
    }


def curve_metrics(curve: dict[float, dict[str, float]]) -> dict[str, Any]:
    """CPT / APGR / ΔIBC of a threshold curve against its own endpoints."""
    weak = OperatingPoint(curve[0.0]["accuracy"], curve[0.0]["strong_tokens"])
    strong = OperatingPoint(curve[1.0]["accuracy"], curve[1.0]["strong_tokens"])
    points = [
        OperatingPoint(v["accuracy"], v["strong_tokens"], f"k={k:g}")
        for k, v in curve.items()
        if 0.0 < k < 1.0
    ]
    report = summarize_curve(points, weak, strong)
    return {
        "cpt": {f"{k:g}": v for k, v in report.cpt.items()},
        "apgr": report.apgr,
        "delta_ibc_best": report.delta_ibc_best,
        "delta_ibc_fit": report.delta_ibc_fit,
    }


def plot(real: dict, before: dict, after: dict, path: Path) -> None:
    """Accuracy vs strong tokens per question: real, before and after the correction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for curve, style, label in (
        (real, "ko-", "real (official release, 500 q)"),
        (before, "s--", "simulated: official tables as is"),
        (after, "^-", "simulated: anchor-corrected"),
    ):
        ks = sorted(curve)
        ax.plot(
            [curve[k]["strong_tokens"] for k in ks],
            [100 * curve[k]["accuracy"] for k in ks],
            style,
            ms=4,
            label=label,
        )
    for k in ANCHORS:
        ax.plot(real[k]["strong_tokens"], 100 * real[k]["accuracy"], "o", mfc="none", ms=12, c="r")
    for k in (0.1, 0.3, 0.7, 0.9):
        ax.annotate(f"k={k:g}", (real[k]["strong_tokens"], 100 * real[k]["accuracy"]), fontsize=7)
    ax.plot([], [], "o", mfc="none", c="r", label="anchors used for the fit (k=0, 0.5, 1)")
    ax.set_xlabel("strong-model tokens per question")
    ax.set_ylabel("MATH-500 accuracy (%)")
    ax.set_title("TRIM-Thr, Qwen2.5-1.5B → 7B: real vs simulated")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> dict[str, Any]:
    start = time.perf_counter()
    real = load_real()
    base = Calibration.from_official(REFERENCE / "pomdp_calibration.json")
    before = simulate(base, THRESHOLDS, EVAL_EPISODES, EVAL_SEED, "conditional")
    corrected, info = correct(base, real)
    after = simulate(corrected, THRESHOLDS, EVAL_EPISODES, EVAL_SEED, info["score_model"])
    before_rows, after_rows = gaps(before, real), gaps(after, real)
    result = {
        "description": __doc__,
        "real_source": str(REAL_THR),
        "anchors": list(ANCHORS),
        "episodes": {"fit": FIT_EPISODES, "eval": EVAL_EPISODES},
        "before": {
            "calibration": base.source,
            "gap_summary": gap_summary(before_rows),
            "per_threshold": before_rows,
            "metrics": curve_metrics(before),
        },
        "after": {
            "calibration": corrected.source,
            "fit": info,
            "gap_summary": gap_summary(after_rows),
            "per_threshold": after_rows,
            "metrics": curve_metrics(after),
        },
        "real_metrics": curve_metrics(real),
        "corrected_calibration": json.loads(corrected.model_dump_json(exclude={"observation"})),
        "seconds": round(time.perf_counter() - start, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "sim_fidelity.json"
    out.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    plot(real, before, after, RESULTS / "sim_fidelity.png")
    _print(result)
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON serialisable: {value!r}")


def _print(result: dict[str, Any]) -> None:
    print(f"{'k':>5} {'real':>13} {'before':>13} {'gap':>11} {'after':>13} {'gap':>11}")
    for b, a in zip(
        result["before"]["per_threshold"], result["after"]["per_threshold"], strict=True
    ):
        mark = "*" if a["anchor"] else " "
        print(
            f"{a['threshold']:>4}{mark} "
            f"{100 * a['real_accuracy']:5.1f}%@{a['real_strong_tokens']:5.0f} "
            f"{100 * b['sim_accuracy']:5.1f}%@{b['sim_strong_tokens']:5.0f} "
            f"{b['accuracy_gap_pts']:+5.1f}/{b['strong_tokens_gap']:+5.0f} "
            f"{100 * a['sim_accuracy']:5.1f}%@{a['sim_strong_tokens']:5.0f} "
            f"{a['accuracy_gap_pts']:+5.1f}/{a['strong_tokens_gap']:+5.0f}"
        )
    print("* anchor used by the correction")
    for name in ("before", "after"):
        print(name, json.dumps(result[name]["gap_summary"]))
    print("fit", json.dumps({k: v for k, v in result["after"]["fit"].items() if k != "grid_top5"}))
    for name, m in (
        ("real", result["real_metrics"]),
        ("before", result["before"]["metrics"]),
        ("after", result["after"]["metrics"]),
    ):
        print(name, json.dumps(m))
    print(f"{result['seconds']} s")


if __name__ == "__main__":
    main()
