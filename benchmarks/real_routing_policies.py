"""The expressive policies for the real-model benchmark, fit and chosen on dev only.

What a user does with ``trim calibrate`` and ``trim train``, scripted:

1. fit the simulator to the dev traces (GSM8K-train, ``benchmarks.real_routing run
   --split dev``) → ``policies/calibration.json``;
2. for each price λ of a fixed grid, train TRIM-Agg and TRIM-Seq with PPO on that
   simulator and solve TRIM-POMDP on it;
3. score every candidate (and always-weak/strong and the threshold sweep) in the dev
   simulator, and keep, per family, the **cheapest λ whose simulated PGR reaches 0.95**
   (the operating point CPT(95%) asks about; if none reaches it, the most accurate).

The test run then adds the chosen ``agg:<file>``, ``seq:<file>`` and ``pomdp:<λ>@<cal>``
specs.  Nothing here reads a test trace.

    python -m benchmarks.real_routing_policies            # writes results/real_routing/policies/
    python -m benchmarks.real_routing_policies --check-sim  # results/real_routing/sim_check.*

``--check-sim`` asks whether the dev simulator stands for the dev runs it was fit to: each
recorded dev policy, real (with a bootstrap interval over problems), beside four
simulators fit to the same traces — independent steps; a per-question difficulty
(``fit_calibration(question_difficulty=True)``); that and solution-ending steps modelled
apart (``final_step=True``); that and the link between a draft's length and its score
(``length_score=True``) — and the strong model's accuracy by solution length (the
step-error model's premise).  ``--difficulty``, ``--final-step`` and ``--length-score``
fit the policies' simulator that way.

It then checks the policies trained in that simulator the same way (``--policies-run``,
default ``dev_gsm8k_policies-v3``: the chosen ``policies_v3/`` specs run on the same dev
problems, kept in a folder of their own so that they never feed a fit): real accuracy,
strong tokens and which steps they rewrite, beside what the simulator they were trained
in predicted, and each policy's paired difference from TRIM-Thr 0.65 — a policy that
exploits a flaw of its simulator shows up here, on dev, before any test number.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RUN = HERE / "results" / "real_routing" / "dev_gsm8k"
OUT = HERE / "results" / "real_routing" / "policies"
POLICIES_RUN = HERE / "results" / "real_routing" / "dev_gsm8k_policies-v3"
POLICIES_CAL = HERE / "results" / "real_routing" / "policies_v3" / "calibration.json"
REFERENCE = "thr:0.65"  # the dev-chosen default the expressive policies must beat
STEP_INDICES = 7  # rewrite rates shown for steps 0..6
LAMBDAS = (2e-4, 5e-4, 1e-3, 2e-3, 4e-3)
THRESHOLDS = (0.3, 0.45, 0.55, 0.65, 0.75, 0.85)
STEP_MAX_TOKENS = 256  # as benchmarks.real_routing
EPISODES = 4000
TARGET_PGR = 0.95


def _rel(path: Path) -> str:
    """Paths in specs relative to the repository root (the runner's working folder)."""
    return str(path.resolve().relative_to(HERE.parent))


def dev_runs(
    run: Path, strong_format: str = "", strong_cut: bool = False
) -> dict[str, dict[str, dict[str, Any]]]:
    """The dev run's traces by policy; with ``strong_format``, the routed policies of
    ``<run>_strong-<format>`` beside ``run``'s always-weak/strong (as the report pairs them).

    ``strong_cut``: always-strong from ``<run>_strong-<name>`` instead (``name`` the format
    without its tag), i.e. the strong model's whole solutions cut at the rewrites' format,
    so that every strong step the simulator learns from is one of the same kind.
    """
    from benchmarks.real_routing_report import format_and_tag, load_run, with_endpoints

    by_spec = with_endpoints(run, strong_format) if strong_format else load_run(run)
    if strong_cut and strong_format:
        cut = run.with_name(f"{run.name}_strong-{format_and_tag(strong_format)[0]}")
        strong = load_run(cut).get("strong") if cut.is_dir() else None
        if not strong:
            raise SystemExit(f"--strong-cut: no always-strong run in {_rel(cut)}")
        by_spec["strong"] = strong
    return by_spec


def dev_traces(
    run: Path, strong_format: str = "", strong_cut: bool = False
) -> list[dict[str, Any]]:
    """Every trace of :func:`dev_runs`, for a simulator fit."""
    by_spec = dev_runs(run, strong_format, strong_cut)
    return [t for ts in by_spec.values() for t in ts.values()]


def calibrate(
    run: Path,
    out: Path,
    strong_format: str = "",
    difficulty: bool = False,
    final_step: bool = False,
    length_score: bool = False,
) -> Path:
    from langchain_trim.lab.sim import fit_calibration

    traces = dev_traces(run, strong_format)
    source = f"dev traces of {_rel(run)}" + (f" (strong: {strong_format})" if strong_format else "")
    cal = fit_calibration(
        traces,
        source=source,
        question_difficulty=difficulty,
        final_step=final_step,
        length_score=length_score,
    )
    path = out / "calibration.json"
    cal.save(path)
    print(f"calibration from {len(traces)} dev traces -> {_rel(path)}", file=sys.stderr)
    return path


def candidates(cal_path: Path, out: Path, lambdas: tuple[float, ...]) -> dict[str, list[str]]:
    """Family → candidate specs (training what has to be trained)."""
    from langchain_trim.lab.train import train_policy

    fams: dict[str, list[str]] = {"thr": [f"thr:{k}" for k in THRESHOLDS]}
    for kind in ("agg", "seq"):
        fams[kind] = []
        for lam in lambdas:
            path = out / f"{kind}_{lam:g}.safetensors"
            if not path.exists():
                res = train_policy(
                    kind, lam=lam, env=f"sim:{_rel(cal_path)}", out=path, progress=False
                )
                print(f"trained {kind} λ={lam:g} in {res.seconds:.0f} s", file=sys.stderr)
            fams[kind].append(f"{kind}:{_rel(path)}")
    fams["pomdp"] = [f"pomdp:{lam:g}@{_rel(cal_path)}" for lam in lambdas]
    return fams


def choose(cal_path: Path, fams: dict[str, list[str]]) -> dict[str, Any]:
    from langchain_trim.eval.metrics import OperatingPoint, delta_ibc, pgr
    from langchain_trim.lab.sim.env import SimEnv
    from langchain_trim.policies.calibration import Calibration
    from langchain_trim.policies.registry import make_policy

    env = SimEnv(Calibration.load(cal_path), step_max_tokens=STEP_MAX_TOKENS)

    def point(spec: str) -> OperatingPoint:
        s = env.run(make_policy(spec), EPISODES, seed=1)
        return OperatingPoint(s.accuracy, s.mean_strong_tokens, spec)

    weak, strong = point("weak"), point("strong")
    table: dict[str, list[dict[str, Any]]] = {}
    chosen: dict[str, str] = {}
    for fam, specs in fams.items():
        rows = []
        for spec in specs:
            p = point(spec)
            rows.append(
                {
                    "spec": spec,
                    "accuracy": p.accuracy,
                    "strong_tokens": p.cost,
                    "pgr": pgr(p.accuracy, weak, strong),
                    "delta_ibc": delta_ibc(p, weak, strong),
                }
            )
        table[fam] = rows
        reaching = [r for r in rows if (r["pgr"] or 0.0) >= TARGET_PGR]
        pick = (
            min(reaching, key=lambda r: r["strong_tokens"])
            if reaching
            else max(rows, key=lambda r: r["accuracy"])
        )
        chosen[fam] = pick["spec"]
    return {
        "rule": (
            f"per family, the cheapest candidate whose PGR in the dev-calibrated simulator "
            f"reaches {TARGET_PGR} (else the most accurate); {EPISODES} simulated questions"
        ),
        "calibration": _rel(cal_path),
        "dev_run": _rel(RUN),
        "weak": {"accuracy": weak.accuracy, "strong_tokens": weak.cost},
        "strong": {"accuracy": strong.accuracy, "strong_tokens": strong.cost},
        "candidates": table,
        "chosen": chosen,
    }


def _length_band(n: int) -> str:
    return "1" if n == 1 else "2-4" if n <= 4 else "5-6" if n <= 6 else "7+"


def sim_check(
    run: Path,
    out: Path,
    policies_run: Path | None = POLICIES_RUN,
    policies_cal: Path = POLICIES_CAL,
    strong_format: str = "",
    strong_cut: bool = False,
) -> dict[str, Any]:
    """Dev runs vs the simulators fit to them (see the module docstring); writes
    ``sim_check.json`` and ``sim_check.md`` in ``out`` (``sim_check_strong-<format>.*``
    for the routed runs of ``<run>_strong-<format>`` with ``run``'s endpoints)."""
    import warnings

    from benchmarks.real_routing_report import ENDPOINTS, strong_tokens
    from langchain_trim.eval.stats import bootstrap_ci
    from langchain_trim.lab.sim import fit_calibration
    from langchain_trim.lab.sim.env import SimEnv
    from langchain_trim.policies.registry import make_policy

    traces = dev_traces(run, strong_format, strong_cut)
    stem = f"sim_check_strong-{strong_format}" if strong_format else "sim_check"
    stem += "_strongcut" if strong_cut and strong_format else ""
    cals = {
        "independent steps": fit_calibration(traces),
        "per-question difficulty": fit_calibration(traces, question_difficulty=True),
        "difficulty + final steps": fit_calibration(
            traces, question_difficulty=True, final_step=True
        ),
        "+ length–score link": fit_calibration(
            traces, question_difficulty=True, final_step=True, length_score=True
        ),
    }
    runs = dev_runs(run, strong_format, strong_cut)
    rows = []
    for spec in sorted(runs, key=lambda s: (s not in ENDPOINTS, s)):
        ts = list(runs[spec].values())
        acc = bootstrap_ci(
            {"c": [float(bool(t.get("correct"))) for t in ts]}, lambda c: float(c["c"].mean())
        )
        tok = bootstrap_ci({"k": [strong_tokens(t) for t in ts]}, lambda c: float(c["k"].mean()))
        row: dict[str, Any] = {"spec": spec, "n": len(ts), "accuracy": acc, "strong_tokens": tok}
        for name, cal in cals.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sim = SimEnv(cal, step_max_tokens=STEP_MAX_TOKENS).run(
                    make_policy("weak" if spec == "weakscored" else spec), EPISODES, seed=1
                )
            row[name] = {"accuracy": sim.accuracy, "strong_tokens": sim.mean_strong_tokens}
        rows.append(row)
    by_length: dict[str, dict[str, Any]] = {}
    for spec in ("weakscored", "strong"):
        bands: dict[str, list[bool]] = {}
        for t in runs.get(spec, {}).values():
            bands.setdefault(_length_band(len(t["steps"])), []).append(bool(t.get("correct")))
        by_length[spec] = {
            b: {"n": len(v), "accuracy": sum(v) / len(v)} for b, v in sorted(bands.items())
        }
    result: dict[str, Any] = {
        "dev_run": _rel(run),
        "strong_format": strong_format or "paragraphs",
        "strong_cut": strong_cut,
        "episodes": EPISODES,
        "trained_policies": (
            trained_policy_check(runs, policies_run, policies_cal)
            if policies_run is not None and policies_run.is_dir()
            else None
        ),
        "calibrations": {
            name: {
                "p_weak": cal.p_weak,
                "p_strong": cal.p_strong,
                "difficulty_sd": cal.difficulty_sd,
                "p_weak_final": cal.p_weak_final,
                "p_strong_final": cal.p_strong_final,
                "length_score_corr": cal.length_score_corr,
                "notes": [n for n in cal.notes if "difficulty" in n],
            }
            for name, cal in cals.items()
        },
        "policies": rows,
        "accuracy_by_solution_length": by_length,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    names = list(cals)
    variant = f", strong model cut at `{strong_format}`" if strong_format else ""
    lines = [
        f"# Does the dev simulator stand for the dev runs? ({_rel(run)}{variant})",
        "",
        "Accuracy / strong tokens per question: real (95% bootstrap interval over problems) vs "
        f"the simulator fit to these same traces ({EPISODES} simulated questions).",
        "",
        "| policy | n | real accuracy | real strong tok | " + " | ".join(names) + " |",
        "|---|---|---|---|" + "---|" * len(names),
    ]
    for r in rows:
        a, t = r["accuracy"], r["strong_tokens"]
        sims = " | ".join(f"{r[n]['accuracy']:.1%} @ {r[n]['strong_tokens']:.0f}" for n in names)
        lines.append(
            f"| {r['spec']} | {r['n']} | {a[0]:.1%} [{a[1]:.1%}, {a[2]:.1%}] | "
            f"{t[0]:.0f} [{t[1]:.0f}, {t[2]:.0f}] | {sims} |"
        )
    lines += trained_policy_lines(result["trained_policies"])
    lines += ["", "Accuracy by solution length (steps), dev:", ""]
    for spec, bands in by_length.items():
        cells = ", ".join(f"{b} steps: {v['accuracy']:.0%} (n {v['n']})" for b, v in bands.items())
        lines.append(f"- {spec}: {cells}")
    lines += ["", "Fits:", ""]
    for name, c in result["calibrations"].items():
        lines.append(
            f"- {name}: p_weak {c['p_weak']:.3f}, p_strong {c['p_strong']:.3f}, "
            f"difficulty sd {c['difficulty_sd']:.2f}"
            + (
                f", final steps {c['p_weak_final']:.3f} / {c['p_strong_final']:.3f}"
                if c["p_weak_final"]
                else ""
            )
            + (
                f", length–score corr {c['length_score_corr']:.2f}"
                if c["length_score_corr"]
                else ""
            )
            + ("; " + c["notes"][0] if c["notes"] else "")
        )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_sim_check(result, out / f"{stem}.png")
    if result["trained_policies"]:
        plot_trained_policies(result["trained_policies"], out / "sim_check_policies.png")
    print("\n".join(lines))
    return result


def rewrite_rates(traces: list[dict[str, Any]]) -> list[float | None]:
    """Per step index, the share of solutions reaching it whose step there is the strong
    model's (``None`` where fewer than 5 solutions reach it)."""
    rates: list[float | None] = []
    for i in range(STEP_INDICES):
        reach = [t["steps"][i] for t in traces if len(t.get("steps") or []) > i]
        strong = sum(s.get("author") == "strong" for s in reach)
        rates.append(strong / len(reach) if len(reach) >= 5 else None)
    return rates


def trained_policy_check(
    runs: dict[str, dict[str, dict[str, Any]]], policies_run: Path, cal_path: Path
) -> dict[str, Any]:
    """The trained policies on dev: real vs the simulator they were trained in."""
    import warnings

    from benchmarks.real_routing_report import load_run, strong_tokens
    from langchain_trim.eval.stats import bootstrap_ci
    from langchain_trim.lab.sim.env import SimEnv
    from langchain_trim.policies.calibration import Calibration
    from langchain_trim.policies.registry import make_policy

    env = SimEnv(Calibration.load(cal_path), step_max_tokens=STEP_MAX_TOKENS)
    reference = runs.get(REFERENCE, {})

    def simulate(spec: str) -> dict[str, Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sim = env.run(make_policy(spec), EPISODES, seed=1, record_steps=True)
        traces = [e.trace for e in sim.episodes if e.trace is not None]
        return {
            "accuracy": sim.accuracy,
            "strong_tokens": sim.mean_strong_tokens,
            "rewrite_rates": rewrite_rates(traces),
        }

    ref_sim = simulate(REFERENCE)
    rows = []
    for spec, by_id in sorted(load_run(policies_run).items()):
        ts = list(by_id.values())
        ids = sorted(set(by_id) & set(reference))
        correct = [float(bool(t.get("correct"))) for t in ts]
        tokens = [strong_tokens(t) for t in ts]
        sim = simulate(spec)
        rows.append(
            {
                "spec": spec,
                "n": len(ts),
                "accuracy": bootstrap_ci({"c": correct}, lambda c: float(c["c"].mean())),
                "strong_tokens": bootstrap_ci({"k": tokens}, lambda c: float(c["k"].mean())),
                "rewrite_rates": rewrite_rates(ts),
                "sim": sim,
                "vs_reference": {
                    "n": len(ids),
                    "accuracy": bootstrap_ci(
                        {
                            "a": [float(bool(by_id[i].get("correct"))) for i in ids],
                            "b": [float(bool(reference[i].get("correct"))) for i in ids],
                        },
                        lambda c: float((c["a"] - c["b"]).mean()),
                    ),
                    "strong_tokens": bootstrap_ci(
                        {
                            "a": [strong_tokens(by_id[i]) for i in ids],
                            "b": [strong_tokens(reference[i]) for i in ids],
                        },
                        lambda c: float((c["a"] - c["b"]).mean()),
                    ),
                    "sim_accuracy": sim["accuracy"] - ref_sim["accuracy"],
                    "sim_strong_tokens": sim["strong_tokens"] - ref_sim["strong_tokens"],
                },
            }
        )
    ref_traces = list(reference.values())
    return {
        "run": _rel(policies_run),
        "calibration": _rel(cal_path),
        "reference": {
            "spec": REFERENCE,
            "n": len(ref_traces),
            "rewrite_rates": rewrite_rates(ref_traces),
            "sim": ref_sim,
        },
        "policies": rows,
    }


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def trained_policy_lines(check: dict[str, Any] | None) -> list[str]:
    if not check:
        return []
    lines = [
        "",
        f"## The trained policies on dev ({check['run']}, trained in {check['calibration']})",
        "",
        "Real (95% interval over problems) vs the simulator they were trained in; the "
        f"paired difference from {REFERENCE} on the same dev problems, real vs predicted.",
        "",
        "| policy | n | real accuracy | real strong tok | simulated | Δ accuracy vs "
        f"{REFERENCE} (real / sim) | Δ strong tok (real / sim) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in check["policies"]:
        a, t, d = r["accuracy"], r["strong_tokens"], r["vs_reference"]
        da, dt = d["accuracy"], d["strong_tokens"]
        lines.append(
            f"| {r['spec']} | {r['n']} | {a[0]:.1%} [{a[1]:.1%}, {a[2]:.1%}] | "
            f"{t[0]:.0f} [{t[1]:.0f}, {t[2]:.0f}] | "
            f"{r['sim']['accuracy']:.1%} @ {r['sim']['strong_tokens']:.0f} | "
            f"{da[0]:+.1%} [{da[1]:+.1%}, {da[2]:+.1%}] / {d['sim_accuracy']:+.1%} | "
            f"{dt[0]:+.0f} [{dt[1]:+.0f}, {dt[2]:+.0f}] / {d['sim_strong_tokens']:+.0f} |"
        )
    lines += [
        "",
        "Share of solutions reaching step i whose step i the strong model wrote (real / sim):",
        "",
        "| policy | " + " | ".join(f"step {i}" for i in range(STEP_INDICES)) + " |",
        "|---|" + "---|" * STEP_INDICES,
    ]
    ref = check["reference"]
    for spec, real, sim in [(ref["spec"], ref["rewrite_rates"], ref["sim"]["rewrite_rates"])] + [
        (r["spec"], r["rewrite_rates"], r["sim"]["rewrite_rates"]) for r in check["policies"]
    ]:
        cells = " | ".join(f"{_pct(a)} / {_pct(b)}" for a, b in zip(real, sim, strict=True))
        lines.append(f"| {spec} | {cells} |")
    return lines


def plot_trained_policies(check: dict[str, Any], path: Path) -> None:
    """Which steps each trained policy rewrites on dev, real (solid) vs simulated (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = check["reference"]
    series = [(ref["spec"], ref["rewrite_rates"], ref["sim"]["rewrite_rates"])] + [
        (r["spec"].split(":")[0] + " (v3)", r["rewrite_rates"], r["sim"]["rewrite_rates"])
        for r in check["policies"]
    ]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, real, sim) in enumerate(series):
        xs = range(STEP_INDICES)
        ax.plot(xs, [math.nan if v is None else 100 * v for v in real], "-o", color=f"C{i}",
                label=f"{label} real")  # fmt: skip
        ax.plot(xs, [math.nan if v is None else 100 * v for v in sim], "--", color=f"C{i}",
                label=f"{label} sim")  # fmt: skip
    ax.set_xlabel("step index")
    ax.set_ylabel("steps rewritten by the strong model (%)")
    ax.set_title("Dev: where the trained policies rewrite, real vs their simulator")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sim_check(result: dict[str, Any], path: Path) -> None:
    """Each dev policy: real accuracy and strong tokens (95% intervals) and each simulator's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["calibrations"])
    markers = ["s", "^", "D", "v"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, row in enumerate(result["policies"]):
        color = f"C{i}"
        (a, alo, ahi), (t, tlo, thi) = row["accuracy"], row["strong_tokens"]
        ax.errorbar(
            t, 100 * a, xerr=[[t - tlo], [thi - t]], yerr=[[100 * (a - alo)], [100 * (ahi - a)]],
            fmt="o", color=color, capsize=3, label=f"{row['spec']} (real, n {row['n']})",
        )  # fmt: skip
        for name, marker in zip(names, markers, strict=False):
            sim = row[name]
            ax.scatter(
                sim["strong_tokens"], 100 * sim["accuracy"], marker=marker, color=color,
                facecolors="none", s=45,
            )  # fmt: skip
    for name, marker in zip(names, markers, strict=False):
        ax.scatter([], [], marker=marker, color="gray", facecolors="none", label=f"sim: {name}")
    ax.set_xlabel("strong tokens per question")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Dev runs (filled, 95% CI) vs the simulators fit to them (open)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lambdas", default=",".join(f"{x:g}" for x in LAMBDAS))
    parser.add_argument("--run", type=Path, default=RUN, help="the dev run folder")
    parser.add_argument("--out", type=Path, default=OUT, help="where policies and choice go")
    parser.add_argument(
        "--strong-format", default="", help="fit on <run>_strong-NAME's routed policies"
    )
    parser.add_argument(
        "--strong-cut",
        action="store_true",
        help="with --strong-format: always-strong from <run>_strong-NAME (its solutions cut "
        "at the rewrites' format)",
    )
    parser.add_argument(
        "--difficulty", action="store_true", help="fit a per-question difficulty in the simulator"
    )
    parser.add_argument(
        "--final-step",
        action="store_true",
        help="with --difficulty: solution-ending steps get their own accuracy and length",
    )
    parser.add_argument(
        "--length-score",
        action="store_true",
        help="fit the link between a draft's length and how low it scores",
    )
    parser.add_argument(
        "--policies-run",
        type=Path,
        default=POLICIES_RUN,
        help="with --check-sim: the trained policies' dev run (skipped when absent)",
    )
    parser.add_argument(
        "--check-sim", action="store_true", help="only compare the dev simulators with the dev runs"
    )
    args = parser.parse_args(argv)
    if args.check_sim:
        policies_run = None if args.strong_format else args.policies_run
        sim_check(
            args.run,
            args.out.parent,
            policies_run,
            strong_format=args.strong_format,
            strong_cut=args.strong_cut,
        )
        return
    lambdas = tuple(float(x) for x in args.lambdas.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    cal_path = calibrate(
        args.run, args.out, args.strong_format, args.difficulty, args.final_step, args.length_score
    )
    result = choose(cal_path, candidates(cal_path, args.out, lambdas))
    result["dev_run"] = _rel(args.run)
    result["strong_format"] = args.strong_format or "paragraphs"
    result["question_difficulty"] = args.difficulty
    result["final_step"] = args.final_step
    result["length_score"] = args.length_score
    (args.out / "choice.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for fam, rows in result["candidates"].items():
        for r in rows:
            mark = "*" if r["spec"] == result["chosen"][fam] else " "
            print(
                f"{mark} {r['spec']:<70} acc {r['accuracy']:.3f} strong {r['strong_tokens']:6.1f}"
                f" pgr {r['pgr'] if r['pgr'] is None else round(r['pgr'], 3)}"
            )
    print("chosen:", " ".join(result["chosen"].values()))


if __name__ == "__main__":
    main()
