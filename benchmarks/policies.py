"""Routing policies compared in the simulator of the official setting (MATH-500, 1.5B → 7B).

Run ``python -m benchmarks.policies`` (``--quick`` for a smoke run, ``--retrain`` to
ignore cached trained policies); writes ``benchmarks/results/policies_sim.json``, ``.md``
and ``.png``.

The simulator is the anchor-corrected calibration of ``benchmarks/sim_fidelity``
(``sim:official``; held-out TRIM-Thr accuracy within 2.9 points of the real run on
average).  Every policy is evaluated on the same simulated questions (common random
numbers), disjoint from the training and validation questions.  Families:

* TRIM-Thr thresholds 0.05 … 0.95; random routing (escalate each step with probability
  p, no PRM); always-weak / always-strong (the endpoints of every curve);
* TRIM-Agg and TRIM-Seq trained with PPO for several λ (λ = 8e-4: the shipped weights;
  other λ: shorter runs, cached under ``$TRIM_CACHE_DIR``);
* TRIM-POMDP solved for several λ, with the filtered belief and with the release's
  belief that restarts every step.

Metrics (``langchain_trim.eval.metrics``): CPT(50/80/95%), best ΔIBC, APGR of each
family's frontier (upper hull with the endpoints), and PGR at low budgets.  Reference
lines: the release's real TRIM-Thr and TRIM-POMDP runs (500 questions, real models).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.shared_data import REFERENCE, use_shared_data
from langchain_trim.eval.metrics import OperatingPoint, frontier, summarize_curve
from langchain_trim.lab.sim import SimEnv
from langchain_trim.lab.sim.labelled import fit_observation_model
from langchain_trim.lab.sim.official import make_env
from langchain_trim.lab.train import train_policy
from langchain_trim.policies import ThresholdPolicy
from langchain_trim.policies.agg import DEFAULT_WEIGHTS as AGG_DEFAULT
from langchain_trim.policies.agg import AggPolicy
from langchain_trim.policies.baselines import RandomPolicy
from langchain_trim.policies.calibration import official_calibration
from langchain_trim.policies.learned import LearnedPolicy
from langchain_trim.policies.pomdp import BeliefMode, PomdpPolicy
from langchain_trim.policies.pomdp_model import (
    PomdpModel,
    parametric_observation,
    table_distance,
)
from langchain_trim.policies.pomdp_solver import default_cache_dir
from langchain_trim.policies.seq import DEFAULT_WEIGHTS as SEQ_DEFAULT
from langchain_trim.policies.seq import SeqPolicy

RESULTS = Path(__file__).resolve().parent / "results"
use_shared_data()  # the official tables: $TRIM_REFERENCE, else next to the checkout
ENV = "sim:official"
EVAL_SEED = 7
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
RANDOM_PROBS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.7)
LEARNED_LAMBDAS = (2e-4, 5e-4, 6e-4, 7e-4, 8e-4, 1e-3, 1.5e-3, 3e-3)
POMDP_LAMBDAS = (
    1e-4, 2e-4, 4e-4, 8e-4, 9e-4, 1e-3, 1.1e-3, 1.2e-3, 1.6e-3, 2e-3, 2.5e-3, 3e-3, 3.5e-3, 4e-3,
)  # fmt: skip
"""Denser around λ ≈ 1e-3, where the frontiers cross 95% of the gap."""
RESET_LAMBDAS = (8e-4, 2e-3, 3e-3, 4e-3, 5e-3, 7e-3, 1e-2)
SWEEP_TRAINING = {"epochs": 5, "patience": 8}
"""Training of the λ ≠ 8e-4 policies (the shipped λ = 8e-4 ones ran 10 epochs)."""
LOW_BUDGETS = (0.05, 0.1, 0.15, 0.2, 0.3)
PAPER = {
    "MATH-500 CPT(95%)": {"TRIM-POMDP": 0.1798, "TRIM-Agg": 0.1721},
    "MATH-500 ΔIBC": {"TRIM-POMDP": 5.86, "TRIM-Agg": 5.67, "TRIM-Thr": 4.75},
    "note": "paper: Qwen2.5-3B-Instruct → Claude 3.7 Sonnet; not the release's model pair",
}


def run(env: SimEnv, policy: Any, n: int) -> dict[str, Any]:
    start = time.perf_counter()
    r = env.run(policy, n, seed=EVAL_SEED)
    return {
        "policy": policy.name,
        "accuracy": r.accuracy,
        "strong_tokens": r.mean_strong_tokens,
        "escalations": r.mean_escalations,
        "prm_calls": r.mean_prm_calls,
        "eval_seconds": round(time.perf_counter() - start, 2),
    }


def learned(kind: str, lam: float, retrain: bool, quick: bool) -> tuple[LearnedPolicy, dict]:
    """The shipped policy for λ = 8e-4, else a cached or freshly trained one."""
    cls: type[LearnedPolicy] = AggPolicy if kind == "agg" else SeqPolicy
    if math.isclose(lam, 8e-4) and not quick:
        path = AGG_DEFAULT if kind == "agg" else SEQ_DEFAULT
        record = json.loads(path.with_suffix(".json").read_text())["record"]
        return cls.load(path), {
            "source": "shipped",
            "train_seconds": record["seconds"],
            "episodes": record["episodes"],
        }
    training = {"epochs": 1, "patience": 4, "train_questions": 512} if quick else SWEEP_TRAINING
    tag = "_".join(f"{k}{v}" for k, v in sorted(training.items()))
    path = default_cache_dir().parent / "bench_policies" / f"{kind}_{lam:g}_{tag}.safetensors"
    if path.exists() and not retrain:
        record = json.loads(path.with_suffix(".json").read_text())["record"]
        return cls.load(path), {
            "source": "cached",
            "train_seconds": record["seconds"],
            "episodes": record["episodes"],
        }
    result = train_policy(kind, lam=lam, env=ENV, out=path, progress=False, **training)  # type: ignore[arg-type]
    return result.policy, {
        "source": "trained",
        "train_seconds": round(result.seconds, 1),
        "episodes": result.episodes,
    }


def family_metrics(
    rows: Sequence[dict[str, Any]], weak: OperatingPoint, strong: OperatingPoint
) -> dict[str, Any]:
    points = [OperatingPoint(r["accuracy"], r["strong_tokens"], r["policy"]) for r in rows]
    rep = summarize_curve(points, weak, strong)
    span, gap = strong.cost - weak.cost, strong.accuracy - weak.accuracy
    curve = [((p.cost - weak.cost) / span, (p.accuracy - weak.accuracy) / gap) for p in points]
    front = frontier([*curve, (0.0, 0.0), (1.0, 1.0)])
    low = {f"{c:g}": _pgr_at(front, c) for c in LOW_BUDGETS}
    sizeable = [
        d for d, (c, _) in zip(rep.delta_ibc, curve, strict=True) if d is not None and c >= 0.05
    ]
    return {
        "cpt": {f"{k:g}": v for k, v in rep.cpt.items()},
        "delta_ibc_best": rep.delta_ibc_best,
        "delta_ibc_best_cost_ge_5pct": max(sizeable) if sizeable else None,
        "apgr": rep.apgr,
        "pgr_at_cost": low,
        "frontier": front,
    }


def _pgr_at(front: Sequence[tuple[float, float]], c: float) -> float:
    """PGR of the frontier at normalised cost ``c`` (linear between vertices)."""
    for (c0, g0), (c1, g1) in itertools.pairwise(front):
        if c0 <= c <= c1:
            return g0 + (g1 - g0) * (c - c0) / (c1 - c0) if c1 > c0 else max(g0, g1)
    return front[-1][1]


def observation_check(n: int) -> dict[str, Any]:
    """The observation-model fitter and the parametric default against the official tables."""
    raw = official_calibration(corrected=False)
    official = np.asarray(raw.observation)
    env = SimEnv(raw)
    solutions = []
    for r in env.run(ThresholdPolicy(0.0), n, seed=11, record_steps=True, score_all=True).episodes:
        steps = r.trace["steps"]  # type: ignore[index]
        states = [s["sim_state"] for s in steps]
        first_error = next((i for i, s in enumerate(states) if s != "S0"), -1)
        solutions.append(([s["score"] for s in steps], first_error))
    fitted = fit_observation_model(solutions, smoothing_bins=0.0, pseudo_count=1e-6)
    first_rows = [
        0.5
        * float(
            np.abs(
                fitted[s, -1] / fitted[s, -1].sum() - official[s, -1] / official[s, -1].sum()
            ).sum()
        )
        for s in range(3)
    ]
    return {
        "what": "total-variation distance to the official ProcessBench tables, per state "
        "S0/S1/S2; 'fitted' = fit_observation_model (no smoothing) on simulated labelled "
        "always-weak "
        "solutions drawn from those tables (joint tables differ because the min-previous "
        "marginal comes from the trajectories; first-step rows are comparable)",
        "solutions": n,
        "fitted_joint_tv": table_distance(fitted, official),
        "fitted_first_step_row_tv": first_rows,
        "parametric_joint_tv": table_distance(parametric_observation(), official),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (minutes → seconds)")
    parser.add_argument("--retrain", action="store_true", help="ignore cached trained policies")
    parser.add_argument("--episodes", type=int, default=4000)
    args = parser.parse_args(argv)
    n = 400 if args.quick else args.episodes
    start = time.perf_counter()
    env = make_env(ENV)
    cal = env.calibration
    families: dict[str, list[dict[str, Any]]] = {}
    weak, strong = run(env, ThresholdPolicy(0.0), n), run(env, ThresholdPolicy(1.0), n)
    families["TRIM-Thr"] = [run(env, ThresholdPolicy(k), n) for k in THRESHOLDS]
    families["random"] = [run(env, RandomPolicy(p), n) for p in RANDOM_PROBS]
    lambdas = LEARNED_LAMBDAS[1:4] if args.quick else LEARNED_LAMBDAS
    for kind, fam in (("agg", "TRIM-Agg"), ("seq", "TRIM-Seq")):
        rows = []
        for lam in lambdas:
            policy, info = learned(kind, lam, args.retrain, args.quick)
            policy.label = f"{kind}:{lam:g}"
            rows.append({**run(env, policy, n), "lam": lam, **info})
            print(f"{fam} λ={lam:g}: {rows[-1]}", flush=True)
        families[fam] = rows
    model = PomdpModel.from_calibration(cal)
    modes: tuple[tuple[str, tuple[float, ...], BeliefMode], ...] = (
        ("TRIM-POMDP", POMDP_LAMBDAS, "filter"),
        ("TRIM-POMDP (reset belief)", RESET_LAMBDAS, "reset"),
    )
    for fam, grid, mode in modes:
        rows = []
        for lam in grid[::3] if args.quick else grid:
            planned = PomdpPolicy(model, lam, belief=mode, cache_dir=False)
            solve_s = planned.solution.seconds  # uncached: the solve time on this machine
            rows.append({**run(env, planned, n), "lam": lam, "solve_seconds": round(solve_s, 2)})
            print(f"{fam} λ={lam:g}: {rows[-1]}", flush=True)
        families[fam] = rows
    w = OperatingPoint(weak["accuracy"], weak["strong_tokens"])
    s = OperatingPoint(strong["accuracy"], strong["strong_tokens"])
    metrics = {fam: family_metrics(rows, w, s) for fam, rows in families.items()}
    real = real_reference()
    thr95 = metrics["TRIM-Thr"]["cpt"]["95"]
    target = {
        fam: {
            "cpt95": metrics[fam]["cpt"]["95"],
            "ratio_to_thr": None
            if thr95 is None or metrics[fam]["cpt"]["95"] is None
            else metrics[fam]["cpt"]["95"] / thr95,
        }
        for fam in ("TRIM-Agg", "TRIM-Seq", "TRIM-POMDP")
    }
    for v in target.values():
        v["meets_0.8x_thr"] = v["ratio_to_thr"] is not None and v["ratio_to_thr"] <= 0.8
    result = {
        "description": __doc__,
        "env": ENV,
        "calibration": cal.source,
        "episodes_per_point": n,
        "eval_seed": EVAL_SEED,
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "always_weak": weak,
        "always_strong": strong,
        "families": families,
        "metrics": metrics,
        "target_cpt95_vs_thr": target,
        "real_reference": real,
        "observation_model": observation_check(500 if args.quick else 5000),
        "paper_anchors": PAPER,
        "quick": args.quick,
        "seconds": round(time.perf_counter() - start, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "policies_sim_quick" if args.quick else "policies_sim"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1, default=_json) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    plot(result, RESULTS / f"{stem}.png")
    print(markdown(result))
    return result


def real_reference() -> dict[str, Any]:
    """The release's real runs (MATH-500, Qwen2.5-1.5B → 7B) and their metrics."""
    out: dict[str, Any] = {}
    for name, file, key in (
        ("TRIM-Thr (real)", "official_thr_math500_qwen1.5b_to_7b.jsonl", "threshold"),
        ("TRIM-POMDP (real)", "official_pomdp_math500_qwen1.5b_to_7b.jsonl", "cost_per_token"),
    ):
        path = REFERENCE / file
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[name] = [
            {
                "setting": r[key],
                "accuracy": r["accuracy"],
                "strong_tokens": r["avg_target_tokens_per_question"],
            }
            for r in rows
        ]
    thr = {r["setting"]: r for r in out.get("TRIM-Thr (real)", [])}
    if 0.0 in thr and 1.0 in thr:
        w = OperatingPoint(thr[0.0]["accuracy"], thr[0.0]["strong_tokens"])
        s = OperatingPoint(thr[1.0]["accuracy"], thr[1.0]["strong_tokens"])
        for name in list(out):
            pts = [
                OperatingPoint(r["accuracy"], r["strong_tokens"])
                for r in out[name]
                if "POMDP" in name or r["setting"] not in (0.0, 1.0)
            ]
            rep = summarize_curve(pts, w, s)
            out[f"{name} metrics"] = {
                "cpt": {f"{k:g}": v for k, v in rep.cpt.items()},
                "delta_ibc_best": rep.delta_ibc_best,
                "apgr": rep.apgr,
            }
    return out


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.1f}%" if pct else f"{v:.2f}"


def markdown(result: dict[str, Any]) -> str:
    m = result["metrics"]
    weak, strong = result["always_weak"], result["always_strong"]
    lines = [
        "# Routing policies in the official-setting simulator",
        "",
        f"Simulator `{result['env']}` ({result['calibration']}); {result['episodes_per_point']} "
        f"simulated questions per point, the same for every policy.  Always-weak "
        f"{100 * weak['accuracy']:.1f}%, always-strong {100 * strong['accuracy']:.1f}% at "
        f"{strong['strong_tokens']:.0f} strong tokens/question.  Cost = strong tokens as a share "
        "of always-strong's; frontier = upper hull with both endpoints.",
        "",
        "| family | CPT(50%) | CPT(80%) | CPT(95%) | ΔIBC (best) | ΔIBC (best, c ≥ 5%) | APGR | "
        + " | ".join(f"PGR@{c}" for c in m["TRIM-Thr"]["pgr_at_cost"])
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(m["TRIM-Thr"]["pgr_at_cost"]),
    ]
    for fam, x in m.items():
        cpt = x["cpt"]
        lows = " | ".join(_fmt(v, True) for v in x["pgr_at_cost"].values())
        lines.append(
            f"| {fam} | {_fmt(cpt['50'], True)} | {_fmt(cpt['80'], True)} | "
            f"{_fmt(cpt['95'], True)} | {_fmt(x['delta_ibc_best'])} | "
            f"{_fmt(x['delta_ibc_best_cost_ge_5pct'])} | {_fmt(x['apgr'])} | {lows} |"
        )
    lines += [
        "",
        "ΔIBC (best) is the best single point; points that spend almost nothing make it "
        "noisy (a 0.5-point gain at 0.1% of the cost is a huge IBC), so the best over points "
        "with cost ≥ 5% is given too.  PGR@c: the frontier's PGR at normalised cost c.",
        "",
        "Target (issue): CPT(95%) ≤ 0.8 × TRIM-Thr's.",
        "",
    ]
    for fam, t in result["target_cpt95_vs_thr"].items():
        ratio = "—" if t["ratio_to_thr"] is None else f"{t['ratio_to_thr']:.2f}×"
        lines.append(
            f"- {fam}: {_fmt(t['cpt95'], True)} = {ratio} Thr "
            f"({'meets' if t['meets_0.8x_thr'] else 'misses'} the target)"
        )
    lines += [
        "",
        "## Operating points",
        "",
        "| family | setting | accuracy | strong tokens | escalations | time |",
        "|---|---|---|---|---|---|",
    ]
    for fam, rows in result["families"].items():
        for r in rows:
            setting = r["policy"]
            t = ""
            if "solve_seconds" in r:
                t = f"solve {r['solve_seconds']:.2f} s"
            elif "train_seconds" in r:
                t = f"train {r['train_seconds']:.0f} s ({r['source']})"
            lines.append(
                f"| {fam} | {setting} | {100 * r['accuracy']:.1f}% | {r['strong_tokens']:.1f} | "
                f"{r['escalations']:.2f} | {t} |"
            )
    real = result["real_reference"]
    if real:
        lines += ["", "## Real runs of the release (reference, 500 questions)", ""]
        for name in ("TRIM-Thr (real)", "TRIM-POMDP (real)"):
            if f"{name} metrics" in real:
                x = real[f"{name} metrics"]
                lines.append(
                    f"- {name}: CPT(50/80/95%) {_fmt(x['cpt']['50'], True)} / "
                    f"{_fmt(x['cpt']['80'], True)} / {_fmt(x['cpt']['95'], True)}, "
                    f"ΔIBC best {_fmt(x['delta_ibc_best'])}, APGR {_fmt(x['apgr'])}"
                )
    obs = result["observation_model"]
    lines += [
        "",
        "## Observation model",
        "",
        f"TV distance to the official tables (S0/S1/S2): fitted on {obs['solutions']} "
        f"simulated labelled solutions — joint "
        + "/".join(f"{v:.3f}" for v in obs["fitted_joint_tv"])
        + ", first-step rows "
        + "/".join(f"{v:.3f}" for v in obs["fitted_first_step_row_tv"])
        + "; parametric default — "
        + "/".join(f"{v:.3f}" for v in obs["parametric_joint_tv"]),
        "",
        f"Paper anchors (different model pair): {json.dumps(result['paper_anchors'])}",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, load {result['machine']['load_average']}; "
        f"total {result['seconds']} s.",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weak, strong = result["always_weak"], result["always_strong"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    styles = {
        "TRIM-Thr": "o-",
        "TRIM-Agg": "s-",
        "TRIM-Seq": "D-",
        "TRIM-POMDP": "^-",
        "TRIM-POMDP (reset belief)": "v--",
        "random": "x:",
    }
    for ax, xmax in zip(axes, (strong["strong_tokens"] * 1.02, 220.0), strict=True):
        for fam, rows in result["families"].items():
            pts = sorted(
                [(0.0, weak["accuracy"]), (strong["strong_tokens"], strong["accuracy"])]
                + [(r["strong_tokens"], r["accuracy"]) for r in rows]
            )
            ax.plot(
                [p[0] for p in pts],
                [100 * p[1] for p in pts],
                styles.get(fam, ".-"),
                ms=4,
                lw=1,
                label=fam,
            )
        for name, marker in (("TRIM-Thr (real)", "o"), ("TRIM-POMDP (real)", "^")):
            rows = result["real_reference"].get(name, [])
            ax.plot(
                [r["strong_tokens"] for r in rows],
                [100 * r["accuracy"] for r in rows],
                marker,
                mfc="none",
                c="k",
                ms=6,
                ls="none",
                label=f"{name}, release",
            )
        ax.set_xlim(0, xmax)
        ax.set_xlabel("strong-model tokens per question")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].set_title("Simulated official setting (MATH-500, Qwen2.5-1.5B → 7B)")
    axes[1].set_title("Low budgets (zoom)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


if __name__ == "__main__":
    main()
