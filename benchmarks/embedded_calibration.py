"""The embedded setting's simulator calibration, and how faithful it is.

Fits a :class:`~langchain_trim.lab.sim.Calibration` for Qwen2.5-Coder-0.5B → 1.5B with the
probe PRM from the real-model benchmark's traces (step accuracies, solution lengths, step
token lengths: ``fit_calibration``), with the probe's observation tables fit on
ProcessBench step labels (``benchmarks/results/probe_observation.json``, MATH-500
excluded) when they exist — as the paper fits its PRM's tables on ProcessBench.  Then
simulates the TRIM-Thr sweep with it and reports the gap to the real traces.

Run ``python -m benchmarks.embedded_calibration`` after ``benchmarks.real_models``;
writes ``benchmarks/results/real_gsm8k/legacy/calibration_embedded.json`` and
``benchmarks/results/embedded_fidelity.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_trim.eval.runner import load_traces
from langchain_trim.lab.sim import Calibration, SimEnv, fit_calibration
from langchain_trim.policies import ThresholdPolicy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "real_gsm8k" / "legacy" / "calibration_embedded.json"  # fit partly on test


def main() -> None:
    traces: list[dict[str, Any]] = []
    by_policy: dict[str, list[dict[str, Any]]] = {}
    for name in ("real_gsm8k", "real_math500"):
        for spec, ts in load_traces(RESULTS / name, include_errors=False).items():
            traces += ts
            by_policy.setdefault(spec, []).extend(ts)
    if not traces:
        raise SystemExit("no real-model traces: run python -m benchmarks.real_models first")
    cal = fit_calibration(traces, source="real-model benchmark traces (GSM8K + MATH-500)")
    observation = RESULTS / "probe_observation.json"
    notes = list(cal.notes)
    if observation.is_file():
        tables = json.loads(observation.read_text())
        notes.append(
            "observation tables: probe PRM on ProcessBench step labels "
            f"(counts per state {tables['counts']})"
        )
        cal = Calibration(
            **{**cal.model_dump(), "observation": tables["observation"], "notes": notes}
        )
    cal.save(OUT)
    env = SimEnv(cal, step_max_tokens=256)
    rows = []
    for spec, ts in sorted(by_policy.items()):
        if not spec.startswith("thr:") and spec not in ("weak", "strong"):
            continue
        k = {"weak": 0.0, "strong": 1.0}[spec] if ":" not in spec else float(spec.split(":")[1])
        sim = env.run(ThresholdPolicy(k), 4000, seed=0)
        real_acc = sum(bool(t["correct"]) for t in ts) / len(ts)
        real_tok = sum(t["spend"]["strong_tokens"] for t in ts) / len(ts)
        rows.append(
            {
                "policy": spec,
                "n_real": len(ts),
                "real_accuracy": real_acc,
                "sim_accuracy": sim.accuracy,
                "real_strong_tokens": real_tok,
                "sim_strong_tokens": sim.mean_strong_tokens,
            }
        )
        print(
            f"{spec:10s} real {100 * real_acc:5.1f}% @ {real_tok:6.1f}   "
            f"sim {100 * sim.accuracy:5.1f}% @ {sim.mean_strong_tokens:6.1f}"
        )
    summary = {
        "calibration": str(OUT.relative_to(ROOT)),
        "p_weak": cal.p_weak,
        "p_strong": cal.p_strong,
        "rows": rows,
        "mean_abs_accuracy_gap_points": sum(
            abs(r["real_accuracy"] - r["sim_accuracy"]) for r in rows
        )
        * 100
        / max(len(rows), 1),
        "note": "real = the committed real-model traces (few problems: ±10 points of noise)",
    }
    (RESULTS / "embedded_fidelity.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"p_weak {cal.p_weak:.3f} p_strong {cal.p_strong:.3f}; wrote {OUT}")


if __name__ == "__main__":
    main()
