"""Dev → test analysis of the real-routing runs, with paired bootstrap intervals.

Reads the traces written by ``python -m benchmarks.real_routing run`` (dev and test
folders under ``runs/real_routing/``) and the one-call files, and writes
``benchmarks/results/real_routing/{report.md,metrics.json,curves.png}``.

What is chosen on dev (GSM8K-train) and only applied on test:

* TRIM-Thr's operating point: the swept threshold with the best ΔIBC on dev;
* the query-level routers (difficulty router on the first step's PRM score, AutoMix-PRM
  on the solution's min score): their thresholds are the dev quantiles of their signal
  (10%, 20%, …, 90% escalated on dev), and their operating point the dev-best ΔIBC.

Every test number comes with a 95% interval from resampling test problems; differences
between families are paired (the same resample for both).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.real_routing import RESULTS, RUNS, gsm8k_references
from langchain_trim.eval.datasets import gsm8k_final_answer
from langchain_trim.eval.fit import threshold_of
from langchain_trim.eval.query_routers import first_step_score, solution_score

OUT = RESULTS / "real_routing"  # next to the committed traces
QUANTILES = tuple(q / 10 for q in range(1, 10))
PLANNED = {"test_gsm8k": 300, "test_math500": 100}
"""Test-set sizes of issue 12; a report with fewer problems says it is interim."""


def load_run(folder: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{policy: {problem_id: trace}}`` of a run folder (errors dropped)."""
    from langchain_trim.eval.runner import load_traces

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for spec, traces in load_traces(folder).items():
        out[spec] = {str(t["problem_id"]): t for t in traces if not t.get("error")}
    return out


def common_ids(run: Mapping[str, Mapping[str, Any]], specs: Sequence[str]) -> list[str]:
    ids: set[str] | None = None
    for spec in specs:
        have = set(run.get(spec, {}))
        ids = have if ids is None else ids & have
    return sorted(ids or set())


def strong_tokens(trace: Mapping[str, Any]) -> float:
    return float(trace.get("spend", {}).get("strong_tokens", 0))


SIGNALS: dict[str, Callable[[Mapping[str, Any]], float | None]] = {
    "difficulty": first_step_score,  # the signals `trim report`'s routers use
    "automix_min": solution_score,
}


def router_columns(
    run: Mapping[str, Mapping[str, Any]], ids: Sequence[str], signal: str, t: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-problem (correct, strong tokens) of a query router at threshold ``t``."""
    correct, tokens = [], []
    for pid in ids:
        w, s = run["weakscored"][pid], run["strong"][pid]
        v = SIGNALS[signal](w)
        go = v is None or v < t
        correct.append(float(bool((s if go else w).get("correct"))))
        tokens.append(strong_tokens(s) if go else 0.0)
    return np.array(correct), np.array(tokens)


def policy_columns(
    run: Mapping[str, Mapping[str, Any]], ids: Sequence[str], spec: str
) -> tuple[np.ndarray, np.ndarray]:
    traces = run[spec]
    correct = np.array([float(bool(traces[p].get("correct"))) for p in ids])
    tokens = np.array([strong_tokens(traces[p]) for p in ids])
    return correct, tokens


def thr_specs(run: Mapping[str, Any]) -> list[str]:
    return sorted(
        (s for s in run if threshold_of(s) is not None), key=lambda s: threshold_of(s) or 0.0
    )


def curve(columns: Mapping[str, np.ndarray], names: Sequence[str]) -> Any:
    from langchain_trim.eval.metrics import OperatingPoint, summarize_curve

    def point(name: str) -> OperatingPoint:
        return OperatingPoint(
            float(columns[f"{name}:c"].mean()), float(columns[f"{name}:t"].mean())
        )

    return summarize_curve([point(n) for n in names], point("weak"), point("strong"))


def dev_choices(dev: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Thresholds and operating points fit on dev only."""
    ids = common_ids(dev, ["weakscored", "strong", *thr_specs(dev)])
    cols: dict[str, np.ndarray] = {}
    for spec, name in (("weakscored", "weak"), ("strong", "strong")):
        cols[f"{name}:c"], cols[f"{name}:t"] = policy_columns(dev, ids, spec)
    out: dict[str, Any] = {"n_dev": len(ids)}
    from langchain_trim.eval.fit import fit_threshold

    fit = fit_threshold({spec: list(traces.values()) for spec, traces in dev.items()})
    out["thr"] = {
        "grid": thr_specs(dev),
        "chosen": fit.policy,
        "dev_delta_ibc": fit.chosen.delta_ibc,
        "rule": "the package's fit_threshold (best ΔIBC on dev), as `trim fit` does",
    }
    step0 = sorted(spec for spec in dev if spec.startswith("step0:"))
    fired = {  # share of dev questions on which the arm rewrote step 0
        spec: float(np.mean([t["steps"][0]["author"] == "strong" for t in dev[spec].values()]))
        for spec in step0
    }
    firing = [spec for spec in step0 if fired[spec] > 0]
    out["step0"] = {
        "chosen": firing[0] if firing else None,
        "fired_on_dev": fired,
        "rule": "the lowest step-0 threshold run on dev that rewrites step 0 on any dev "
        "question (the probe's step-0 scores are nearly constant: 0.65 never fires)",
    }
    for signal, fn in SIGNALS.items():
        values = [fn(dev["weakscored"][p]) for p in ids]
        finite = np.array([v for v in values if v is not None], dtype=float)
        ts = sorted({float(np.quantile(finite, q)) for q in QUANTILES}) if len(finite) else []
        names = []
        for t in ts:
            name = f"{signal}@{t:.4f}"
            cols[f"{name}:c"], cols[f"{name}:t"] = router_columns(dev, ids, signal, t)
            names.append(name)
        r = curve(cols, names)
        i = max(
            range(len(names)), key=lambda k: r.delta_ibc[k] if r.delta_ibc[k] is not None else -1e9
        )
        out[signal] = {"thresholds": ts, "chosen": ts[i], "dev_delta_ibc": r.delta_ibc[i]}
    return out


def expressive_choices(
    path: Path = OUT / "policies" / "choice.json", suffix: str = ""
) -> dict[str, str]:
    """Family (+ ``suffix``) → the spec chosen on dev by ``benchmarks.real_routing_policies``."""
    if not path.is_file():
        return {}
    chosen = json.loads(path.read_text(encoding="utf-8"))["chosen"]
    return {EXPRESSIVE[f] + suffix: spec for f, spec in chosen.items() if f in EXPRESSIVE}


REFITS = {
    "v2": ("final-step sim", "per-question difficulty and final-step accuracies"),
    "v3": (
        "checked sim",
        "per-question difficulty, final-step accuracies and the length–score link — the "
        "one whose predictions of every dev policy fall inside the real intervals",
    ),
}
"""The expressive policies refit on better simulators (``policies_<key>/``, dev only):
family suffix and what the simulator adds."""


EXPRESSIVE = {"agg": "TRIM-Agg", "seq": "TRIM-Seq", "pomdp": "TRIM-POMDP"}


def test_analysis(
    test: Mapping[str, Mapping[str, Any]],
    choices: Mapping[str, Any],
    expressive: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every family on the test problems that all of its policies finished.

    ``expressive`` (family → one dev-chosen spec) adds those families; the problems are
    then the ones every policy, expressive included, has finished.
    """
    from langchain_trim.eval.stats import bootstrap_ci

    expressive = {f: s for f, s in (expressive or {}).items() if s in test}
    specs = [s for s in choices["thr"]["grid"] if s in test]
    ids = common_ids(test, ["weakscored", "strong", *specs, *expressive.values()])
    cols: dict[str, np.ndarray] = {}
    for spec, name in (("weakscored", "weak"), ("strong", "strong")):
        cols[f"{name}:c"], cols[f"{name}:t"] = policy_columns(test, ids, spec)
    for spec in specs:
        cols[f"{spec}:c"], cols[f"{spec}:t"] = policy_columns(test, ids, spec)
    families: dict[str, list[str]] = {"TRIM-Thr": specs}
    for fam, spec in expressive.items():
        cols[f"{spec}:c"], cols[f"{spec}:t"] = policy_columns(test, ids, spec)
        families[fam] = [spec]
    for signal in SIGNALS:
        names = []
        for t in choices[signal]["thresholds"]:
            name = f"{signal}@{t:.4f}"
            cols[f"{name}:c"], cols[f"{name}:t"] = router_columns(test, ids, signal, t)
            names.append(name)
        families[signal] = names

    def stat(family: str, what: str) -> Callable[[Mapping[str, np.ndarray]], float | None]:
        def f(c: Mapping[str, np.ndarray]) -> float | None:
            rep = curve(c, families[family])
            return rep.apgr if what == "apgr" else rep.cpt[95.0]

        return f

    out: dict[str, Any] = {"n_test": len(ids), "families": {}, "points": {}, "differences": {}}
    for fam in families:
        out["families"][fam] = {
            "apgr": bootstrap_ci(cols, stat(fam, "apgr")),
            "cpt95": bootstrap_ci(cols, stat(fam, "cpt")),
        }
    for name in ["weak", "strong", *specs, *expressive.values()]:
        out["points"][name] = {
            "accuracy": bootstrap_ci(cols, lambda c, n=name: float(c[f"{n}:c"].mean())),
            "strong_tokens": float(cols[f"{name}:t"].mean()),
        }
    for fam in SIGNALS:
        out["differences"][f"APGR TRIM-Thr − {fam}"] = bootstrap_ci(
            cols,
            lambda c, f=fam: _diff(stat("TRIM-Thr", "apgr")(c), stat(f, "apgr")(c)),
        )
    for fam in expressive:
        out["differences"][f"CPT(95%) {fam} ÷ TRIM-Thr"] = bootstrap_ci(
            cols, lambda c, f=fam: _ratio(stat(f, "cpt")(c), stat("TRIM-Thr", "cpt")(c))
        )
    for signal in SIGNALS:  # the query routers at their dev operating point
        name = f"{signal}@{choices[signal]['chosen']:.4f}"
        out["points"][f"{signal} (dev point)"] = {
            "accuracy": bootstrap_ci(cols, lambda c, n=name: float(c[f"{n}:c"].mean())),
            "strong_tokens": float(cols[f"{name}:t"].mean()),
        }
    chosen = choices["thr"]["chosen"]
    if chosen in specs:
        out["thr_dev_point"] = {
            "spec": chosen,
            "accuracy": bootstrap_ci(cols, lambda c: float(c[f"{chosen}:c"].mean())),
            "strong_tokens": float(cols[f"{chosen}:t"].mean()),
            "delta_ibc": curve(cols, [chosen]).delta_ibc[0],
        }
    return out


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def step_stats(run: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Steps per solution, rewrite cost, solutions lost to a cap, seconds per question."""
    out: dict[str, Any] = {}
    strong_solution = [strong_tokens(t) for t in run.get("strong", {}).values()]
    mean_strong = float(np.mean(strong_solution)) if strong_solution else float("nan")
    for spec, traces in run.items():
        ts = list(traces.values())
        rewrites = [s["tokens"] for t in ts for s in t["steps"] if s.get("author") == "strong"]
        where = [s["index"] for t in ts for s in t["steps"] if s.get("author") == "strong"]
        out[spec] = {
            "n": len(ts),
            "steps_mean": float(np.mean([len(t["steps"]) for t in ts])),
            "rewrite_tokens_mean": float(np.mean(rewrites)) if rewrites else None,
            "rewrite_share_of_strong_solution": (float(np.mean(rewrites)) / mean_strong)
            if rewrites and mean_strong
            else None,
            "escalations_at_step0": sum(i == 0 for i in where),
            "escalations_later": sum(i > 0 for i in where),
            "terminations": {
                k: sum(t.get("termination") == k for t in ts)
                for k in sorted({str(t.get("termination")) for t in ts})
            },
            "seconds_mean": float(np.mean([t.get("seconds", 0.0) for t in ts])),
        }
    return out


def one_call_rows(split: str, dataset: str) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {problem_id: row}}`` of the committed one-call answers (paragraphs format)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    names = [f"onecall_{split}_{dataset}_{{m}}.jsonl"]
    if split == "dev":
        names.append("formats_dev_40_{m}.jsonl")
    for model in ("weak", "strong"):
        rows: dict[str, dict[str, Any]] = {}
        for name in names:
            path = RUNS / name.format(m=model)
            if path.is_file():
                for line in path.read_text().splitlines():
                    row = json.loads(line) if line.strip() else None
                    if row and row.get("format") == "paragraphs":
                        rows[str(row["id"])] = row
        out[model] = rows
    return out


def stepwise_vs_one_call(
    run: Mapping[str, Mapping[str, Any]], rows: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """In-graph accuracy minus one-call accuracy of the same model, paired by problem."""
    from langchain_trim.eval.stats import bootstrap_ci

    out: dict[str, Any] = {}
    for model, spec in (("weak", "weakscored"), ("strong", "strong")):
        ids = sorted(set(rows.get(model, {})) & set(run.get(spec, {})))
        if not ids:
            continue
        graph = np.array([float(bool(run[spec][i].get("correct"))) for i in ids])
        once = np.array([float(bool(rows[model][i]["correct"])) for i in ids])
        out[model] = {
            "n": len(ids),
            "in_graph": float(graph.mean()),
            "one_call": float(once.mean()),
            "difference": bootstrap_ci(
                {"g": graph, "o": once}, lambda c: float(c["g"].mean() - c["o"].mean())
            ),
        }
    return out


def prm_on_new_steps(run: Mapping[str, Mapping[str, Any]], split: str) -> dict[str, Any]:
    """How the shipped PRM separates the weak model's steps in the new format.

    Steps of the always-weak solutions are weakly labelled against the GSM8K reference
    solution's values (:func:`langchain_trim.lab.weak_labels.weak_first_error`): steps
    before the first error are "right", the first error is "wrong", later steps are left
    out (as ProcessBench does).  Also: does the step-0 score predict whether the whole
    solution is right (what a query-level router would need)?
    """
    from langchain_trim.lab.prm_training import auroc
    from langchain_trim.lab.weak_labels import weak_first_error

    refs = gsm8k_references(split)
    scores: list[float] = []
    targets: list[int] = []
    first: list[float] = []
    solved: list[int] = []
    labelled = 0
    for trace in run.get("weakscored", {}).values():
        steps = trace.get("steps") or []
        question = str(trace.get("question") or (trace.get("result") or {}).get("question", ""))
        ref = refs.get(question.strip())
        if ref is None or not steps:
            continue
        gold = float(gsm8k_final_answer(ref))
        label = weak_first_error(question, [s["text"] for s in steps], ref, answer=gold)
        if steps[0].get("draft_score") is not None:
            first.append(float(steps[0]["draft_score"]))
            solved.append(int(bool(trace.get("correct"))))
        if label is None:
            continue
        labelled += 1
        stop = len(steps) if label == -1 else label + 1
        for i, step in enumerate(steps[:stop]):
            if step.get("draft_score") is None:
                continue
            scores.append(float(step["draft_score"]))
            targets.append(int(i == label))
    return {
        "solutions": len(run.get("weakscored", {})),
        "labelled": labelled,
        "steps": len(scores),
        "first_errors": sum(targets),
        "step_auroc_wrong_vs_right": auroc([1 - x for x in scores], targets)
        if 0 < sum(targets) < len(targets)
        else None,
        "step0_auroc_solution_correct": auroc(first, solved)
        if 0 < sum(solved) < len(solved)
        else None,
    }


def wall_time(folder: Path) -> dict[str, Any]:
    """Seconds per question of each policy in an uncached run (``run --no-cache``).

    Also each policy's wall time as a share of always-strong's, paired by problem.
    """
    from langchain_trim.eval.stats import bootstrap_ci

    if not folder.is_dir():
        return {}
    run = load_run(folder)
    if "strong" not in run:
        return {}
    out: dict[str, Any] = {"folder": folder.name}
    for spec in run:
        ids = common_ids(run, [spec, "strong"])
        if not ids:
            continue
        mine = np.array([float(run[spec][i].get("seconds", 0.0)) for i in ids])
        ref = np.array([float(run["strong"][i].get("seconds", 0.0)) for i in ids])
        out[spec] = {
            "n": len(ids),
            "seconds_mean": float(mine.mean()),
            "share_of_strong": bootstrap_ci(
                {"m": mine, "r": ref}, lambda c: float(c["m"].sum() / c["r"].sum())
            ),
        }
    return out


def split_lines(path: Path) -> list[str]:
    """Where the seconds go (``benchmarks.walltime_split``), in units of always-strong's."""
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    rows, base = data["mean_seconds"], data["mean_seconds"].get("strong", {}).get("wall")
    if not base:
        return []
    out = [
        "",
        f"Where the seconds go (`{path.name}`: {data['n_problems']} other problems, each "
        "policy back to back, alone on the machine), in units of always-strong's wall time:",
        "",
        "| policy | wall | weak drafting (discarded drafts) | PRM | strong (prompt re-eval) |",
        "|---|---|---|---|---|",
    ]
    for spec, r in rows.items():
        strong = r["strong_prompt"] + r["strong_decode"]
        out.append(
            f"| {spec} | {r['wall'] / base:.2f} | "
            f"{(r['weak_prompt'] + r['weak_decode']) / base:.2f} "
            f"({r['discarded_drafts'] / base:.2f}) | {r['prm'] / base:.2f} | "
            f"{strong / base:.2f} ({r['strong_prompt'] / base:.2f}) |"
        )
    return out


def strong_format_on_dev(
    dev: Mapping[str, Mapping[str, Any]], other: Mapping[str, Mapping[str, Any]], name: str
) -> dict[str, Any]:
    """TRIM-Thr's dev curve with the strong model cut at another format's delimiter.

    Rule fixed before the run: the format whose threshold sweep has the higher dev APGR
    wins, both curves normalised by the same endpoints (always-weak and always-strong in
    the default format), on the problems every policy of both runs finished.
    """
    mine, theirs = thr_specs(dev), thr_specs(other)
    ids = sorted(
        set(common_ids(dev, ["weakscored", "strong", *mine])) & set(common_ids(other, theirs))
    )
    if not ids or not theirs:
        return {}
    cols: dict[str, np.ndarray] = {}
    for spec, name_ in (("weakscored", "weak"), ("strong", "strong")):
        cols[f"{name_}:c"], cols[f"{name_}:t"] = policy_columns(dev, ids, spec)
    for spec in mine:
        cols[f"default {spec}:c"], cols[f"default {spec}:t"] = policy_columns(dev, ids, spec)
    for spec in theirs:
        cols[f"{name} {spec}:c"], cols[f"{name} {spec}:t"] = policy_columns(other, ids, spec)
    default = curve(cols, [f"default {s}" for s in mine])
    alt = curve(cols, [f"{name} {s}" for s in theirs])
    points = {
        key.removesuffix(":c"): {
            "accuracy": float(cols[key].mean()),
            "strong_tokens": float(cols[key[:-2] + ":t"].mean()),
        }
        for key in cols
        if key.endswith(":c")
    }
    return {
        "n": len(ids),
        "format": name,
        "apgr_default": default.apgr,
        "apgr_alternative": alt.apgr,
        "winner": name if (alt.apgr or 0.0) > (default.apgr or 0.0) else "default",
        "points": points,
    }


def ablation(
    test: Mapping[str, Mapping[str, Any]],
    oracle: Mapping[str, Mapping[str, Any]],
    choices: Mapping[str, Any],
) -> dict[str, Any]:
    """Why TRIM-Thr wins or not, on the same test problems (issue 12's ablation).

    Beside always-weak/strong: TRIM-Thr at its dev point with the shipped probe; the same
    rule on step 0 only at its dev-chosen threshold (a query router that rewrites one step:
    ``step0:k``); TRIM-Thr with
    the reference-solution scorer (``benchmarks.oracle_prm``, run with ``--prm oracle``),
    which separates "the PRM cannot tell" from "step routing cannot help".
    """
    from langchain_trim.eval.metrics import OperatingPoint, delta_ibc, pgr
    from langchain_trim.eval.stats import bootstrap_ci

    chosen = choices["thr"]["chosen"]
    step0 = (choices.get("step0") or {}).get("chosen") or f"step0:{threshold_of(chosen):g}"
    arms = {
        "weak": (test, "weakscored"),
        "strong": (test, "strong"),
        f"{chosen} (probe)": (test, chosen),
        f"{step0} (probe, step 0 only)": (test, step0),
        **{f"{s} (oracle scorer)": (oracle, s) for s in thr_specs(oracle)},
    }
    arms = {name: arm for name, arm in arms.items() if arm[1] in arm[0]}
    ids: set[str] | None = None
    for run, spec in arms.values():
        ids = set(run[spec]) if ids is None else ids & set(run[spec])
    order = sorted(ids or set())
    if not order or len(arms) < 4:
        return {}
    cols: dict[str, np.ndarray] = {}
    for name, (run, spec) in arms.items():
        cols[f"{name}:c"], cols[f"{name}:t"] = policy_columns(run, order, spec)

    def pgr_of(name: str) -> Callable[[Mapping[str, np.ndarray]], float | None]:
        def f(c: Mapping[str, np.ndarray]) -> float | None:
            w, s, x = (float(c[f"{n}:c"].mean()) for n in ("weak", "strong", name))
            return pgr(x, OperatingPoint(w, 0.0), OperatingPoint(s, 0.0))

        return f

    def dibc_of(name: str) -> Callable[[Mapping[str, np.ndarray]], float | None]:
        """ΔIBC: accuracy gained per strong token against the weak→strong line (arms at
        different costs compare on it; 0 = no better than mixing the endpoints)."""

        def f(c: Mapping[str, np.ndarray]) -> float | None:
            point = {
                n: OperatingPoint(float(c[f"{n}:c"].mean()), float(c[f"{n}:t"].mean()))
                for n in ("weak", "strong", name)
            }
            return delta_ibc(point[name], point["weak"], point["strong"])

        return f

    return {
        "n": len(order),
        "points": {
            name: {
                "accuracy": bootstrap_ci(cols, lambda c, n=name: float(c[f"{n}:c"].mean())),
                "strong_tokens": float(cols[f"{name}:t"].mean()),
                "pgr": bootstrap_ci(cols, pgr_of(name)),
                "delta_ibc": bootstrap_ci(cols, dibc_of(name))
                if name not in ("weak", "strong")
                else None,
            }
            for name in arms
        },
    }


ENDPOINTS = ("weakscored", "strong")


def with_endpoints(base: Path, strong_format: str) -> dict[str, dict[str, dict[str, Any]]]:
    """The routed policies of ``<base>_strong-<format>`` with the base run's endpoints.

    A strong model cut at another format's delimiter is compared against the same
    always-weak and always-strong runs (the strong model answering in its own format),
    so both variants share one reference line.
    """
    variant = base.with_name(f"{base.name}_strong-{strong_format}")
    run = {s: t for s, t in load_run(variant).items() if s not in ENDPOINTS}
    reference = load_run(base) if base.is_dir() else {}
    run.update({s: reference[s] for s in ENDPOINTS if s in reference})
    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dev", type=Path, default=RUNS / "dev_gsm8k")
    parser.add_argument(
        "--test", type=Path, nargs="*", default=[RUNS / "test_gsm8k", RUNS / "test_math500"]
    )
    parser.add_argument(
        "--strong-format",
        default="",
        help="report the runs whose strong model used this step format (<folder>_strong-NAME)",
    )
    args = parser.parse_args(argv)
    fmt = args.strong_format

    def load(folder: Path) -> dict[str, dict[str, dict[str, Any]]]:
        return with_endpoints(folder, fmt) if fmt else load_run(folder)

    dev = load(args.dev)
    result: dict[str, Any] = {"dev": {"folder": str(args.dev), "steps": step_stats(dev)}}
    result["strong_format"] = fmt or "paragraphs"
    result["choices"] = dev_choices(dev)
    expressive = expressive_choices(
        OUT / (f"policies_{fmt}" if fmt else "policies") / "choice.json"
    )
    result["choices"]["expressive"] = expressive
    refits = {
        key: {} if fmt else expressive_choices(OUT / f"policies_{key}" / "choice.json", f" ({tag})")
        for key, (tag, _) in REFITS.items()
    }
    result["choices"]["expressive_refit"] = refits
    check = OUT / "sim_check.json"
    if check.is_file() and not fmt:
        result["dev"]["trained_policies"] = json.loads(check.read_text(encoding="utf-8")).get(
            "trained_policies"
        )
    result["dev"]["stepwise_vs_one_call"] = stepwise_vs_one_call(dev, one_call_rows("dev", "gsm8k"))
    result["dev"]["prm_on_new_steps"] = prm_on_new_steps(dev, "dev")
    lines = args.dev.with_name(args.dev.name + "_strong-lines")
    if lines.is_dir() and not fmt:
        result["dev"]["strong_format"] = strong_format_on_dev(dev, load_run(lines), "lines")
    for folder in args.test:
        if not folder.is_dir():
            continue
        test = load(folder)
        split, _, dataset = folder.name.partition("_")
        result[folder.name] = {
            "steps": step_stats(test),
            "stepwise_vs_one_call": stepwise_vs_one_call(test, one_call_rows(split, dataset)),
            "wall_time": wall_time(folder.with_name(folder.name + "_walltime")),
            **test_analysis(test, result["choices"]),
        }
        if any(spec in test for spec in expressive.values()):
            result[folder.name]["with_expressive"] = test_analysis(
                test, result["choices"], expressive
            )
        for key, refit in refits.items():
            if refit and any(spec in test for spec in refit.values()):
                result[folder.name][f"with_expressive_{key}"] = test_analysis(
                    test, result["choices"], refit
                )
        oracle = folder.with_name(folder.name + "_oracle_paragraphs")
        if oracle.is_dir():
            result[folder.name]["ablation"] = ablation(test, load_run(oracle), result["choices"])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "metrics.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (OUT / "report.md").write_text(render(result))
    plot(result, OUT / "curves.png")
    print(render(result))
    return result


def _ci(triple: Sequence[Any] | None, pct: bool = True) -> str:
    if not triple or triple[0] is None:
        return "—"
    point, lo, hi = triple
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3f}")
    if lo is None or hi is None:
        return f(point)
    return f"{f(point)} [{f(lo)}, {f(hi)}]"


def render(result: Mapping[str, Any]) -> str:
    """The markdown report: dev choices, then each test set with intervals."""
    ch = result["choices"]
    lines = [
        "# Real step routing: dev choices, test results (embedded Qwen2.5-Coder 0.5B → 1.5B)",
        "",
        "Greedy decoding, `paragraphs` step format (the strong model's when it rewrites a step:",
        f"`{result.get('strong_format', 'paragraphs')}`), probe PRM, step cap 256 (capped steps",
        "are continued), solutions end at 1024 tokens. Intervals: 95% bootstrap over test",
        "problems, paired across policies.",
        "",
        f"## Chosen on dev (GSM8K-train, {ch['n_dev']} problems)",
        "",
        f"- TRIM-Thr operating point: `{ch['thr']['chosen']}` (best ΔIBC on dev: "
        f"{ch['thr']['dev_delta_ibc']:.3f}); grid {', '.join(ch['thr']['grid'])}",
    ]
    s0 = ch.get("step0") or {}
    if s0.get("chosen"):
        fired = ", ".join(f"`{k}` {v:.0%}" for k, v in s0["fired_on_dev"].items())
        lines.append(
            f"- the step-0-only arm: `{s0['chosen']}` ({s0['rule']}; rewrote step 0 on dev: "
            f"{fired})"
        )
    for signal in SIGNALS:
        c = ch[signal]
        lines.append(
            f"- {signal}: thresholds = dev quantiles "
            f"{', '.join(f'{t:.3f}' for t in c['thresholds'])}; operating point {c['chosen']:.3f}"
        )
    sf = result["dev"].get("strong_format")
    if sf:
        lines.append(
            f"- the strong model's step format: `{sf['winner']}` (dev APGR of the threshold "
            f"sweep, same endpoints, {sf['n']} problems: default {sf['apgr_default']:.3f}, "
            f"`{sf['format']}` {sf['apgr_alternative']:.3f})"
        )
    for fam, spec in ch.get("expressive", {}).items():
        lines.append(
            f"- {fam}: `{spec}` (cheapest λ reaching PGR 0.95 in the simulator fit to the dev "
            "traces; `benchmarks/results/real_routing/policies/choice.json`)"
        )
    for key, refit in ch.get("expressive_refit", {}).items():
        for fam, spec in refit.items():
            lines.append(
                f"- {fam}: `{spec}` (the same rule in the simulator with {REFITS[key][1]}; "
                f"`benchmarks/results/real_routing/policies_{key}/choice.json`)"
            )
    lines += _trained_policy_check(result["dev"].get("trained_policies"))
    short = {
        name: (block["n_test"], PLANNED[name])
        for name, block in result.items()
        if name in PLANNED and block["n_test"] < PLANNED[name]
    }
    if short:
        lines += [
            "",
            "> **Interim — not a result yet.** Test problems finished so far: "
            + ", ".join(f"{k} {n} of {m}" for k, (n, m) in short.items())
            + ". Intervals this wide cannot separate the families; do not quote.",
        ]
    for name, block in result.items():
        if not name.startswith("test_"):
            continue
        lines += ["", f"## Test: {name} ({block['n_test']} problems)", ""]
        lines += _families(block)
        if block.get("with_expressive"):
            sub = block["with_expressive"]
            lines += ["", f"### With the expressive policies ({sub['n_test']} problems)", ""]
            lines += _families(sub)
        for key, (tag, _) in REFITS.items():
            sub = block.get(f"with_expressive_{key}")
            if sub:
                lines += [
                    "",
                    f"### With the expressive policies refit on the {tag.replace(' sim', '')} "
                    f"simulator (`policies_{key}/`, {sub['n_test']} problems)",
                    "",
                ]
                lines += _families(sub)
        if block.get("ablation"):
            ab = block["ablation"]
            lines += [
                "",
                f"### Ablation: scorer and step-0-only ({ab['n']} problems)",
                "",
                "| arm | accuracy % [95% CI] | strong tokens/q | PGR [95% CI] | ΔIBC [95% CI] |",
                "|---|---|---|---|---|",
            ]
            for arm, row in ab["points"].items():
                dibc = row.get("delta_ibc")
                lines.append(
                    f"| {arm} | {_ci(row['accuracy'])} | {row['strong_tokens']:.1f} | "
                    f"{_ci(row['pgr'], False)} | {_ci(dibc, False) if dibc else '—'} |"
                )
        wt = block.get("wall_time") or {}
        if len(wt) > 1:
            lines += [
                "",
                f"### Wall time (`{wt['folder']}`: no cache, every call paid, problems in turn)",
                "",
                "| policy | n | s/question | share of always-strong's seconds [95% CI] |",
                "|---|---|---|---|",
            ]
            for spec, row in wt.items():
                if spec != "folder":
                    lines.append(
                        f"| {spec} | {row['n']} | {row['seconds_mean']:.1f} | "
                        f"{_ci(row['share_of_strong'], False)} |"
                    )
            lines += split_lines(RUNS / "walltime_split.json")
        lines += ["", "| model | in graph | one call | difference, points [95% CI] | n |"]
        lines += ["|---|---|---|---|---|"]
        for model, row in block.get("stepwise_vs_one_call", {}).items():
            lines.append(
                f"| {model} | {100 * row['in_graph']:.1f} | {100 * row['one_call']:.1f} | "
                f"{_ci(row['difference'])} | {row['n']} |"
            )
        lines += [
            "",
            "| policy | steps/solution | rewrite tokens (share of strong solution) | "
            "escalations at step 0 / later | terminations | s/question (cached: not wall time) |",
            "|---|---|---|---|---|---|",
        ]
        for spec, row in block["steps"].items():
            share = row["rewrite_share_of_strong_solution"]
            rw = (
                "—"
                if row["rewrite_tokens_mean"] is None
                else (f"{row['rewrite_tokens_mean']:.0f} ({100 * share:.0f}%)" if share else "—")
            )
            lines.append(
                f"| {spec} | {row['steps_mean']:.1f} | {rw} | {row['escalations_at_step0']} / "
                f"{row['escalations_later']} | {row['terminations']} | {row['seconds_mean']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def _trained_policy_check(check: Mapping[str, Any] | None) -> list[str]:
    """The dev check of the policies trained in the simulator (``--check-sim``)."""
    if not check or not check.get("policies"):
        return []
    lines = [
        "",
        f"Dev check of the trained policies (`{check['run']}`: the dev problems their "
        "simulator was fit on; run in session 7, while their test runs were under way; it "
        "changes no choice; `sim_check.md`): real accuracy @ strong "
        f"tokens vs what their simulator predicted, and the paired difference from "
        f"`{check['reference']['spec']}` (real [95% CI] / simulated):",
        "",
    ]
    for r in check["policies"]:
        a, t, d = r["accuracy"], r["strong_tokens"], r["vs_reference"]
        lines.append(
            f"- `{r['spec']}` ({r['n']}): {a[0]:.1%} @ {t[0]:.0f} vs simulated "
            f"{r['sim']['accuracy']:.1%} @ {r['sim']['strong_tokens']:.0f}; accuracy "
            f"{d['accuracy'][0]:+.1%} [{d['accuracy'][1]:+.1%}, {d['accuracy'][2]:+.1%}] / "
            f"{d['sim_accuracy']:+.1%}, strong tokens {d['strong_tokens'][0]:+.0f} / "
            f"{d['sim_strong_tokens']:+.0f}"
        )
    return lines


def _families(block: Mapping[str, Any]) -> list[str]:
    """Points, families and paired differences of one test analysis."""
    lines = ["| policy | accuracy % [95% CI] | strong tokens/q |", "|---|---|---|"]
    for spec, row in block["points"].items():
        lines.append(f"| {spec} | {_ci(row['accuracy'])} | {row['strong_tokens']:.1f} |")
    lines += ["", "| family | APGR [95% CI] | CPT(95%) [95% CI] |", "|---|---|---|"]
    for fam, row in block["families"].items():
        lines.append(f"| {fam} | {_ci(row['apgr'], False)} | {_ci(row['cpt95'], False)} |")
    lines += ["", "| paired difference | estimate [95% CI] |", "|---|---|"]
    for label, triple in block["differences"].items():
        lines.append(f"| {label} | {_ci(triple, False)} |")
    return lines


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Accuracy against strong tokens per question, one panel per test set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tests = [(k, v) for k, v in result.items() if k.startswith("test_")]
    if not tests:
        return
    fig, axes = plt.subplots(1, len(tests), figsize=(6 * len(tests), 4.5), squeeze=False)
    for ax, (name, block) in zip(axes[0], tests, strict=True):
        pts = block["points"]
        xs = [pts[s]["strong_tokens"] for s in pts]
        ys = [100 * pts[s]["accuracy"][0] for s in pts]
        ax.plot(
            [pts["weak"]["strong_tokens"], pts["strong"]["strong_tokens"]],
            [100 * pts["weak"]["accuracy"][0], 100 * pts["strong"]["accuracy"][0]],
            "k--",
            lw=1,
            label="random mixing",
        )
        ax.scatter(xs, ys, zorder=3)
        for s, x, y in zip(pts, xs, ys, strict=True):
            ax.annotate(s, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("strong tokens per question")
        ax.set_ylabel("accuracy (%)")
        interim = " — interim" if block["n_test"] < PLANNED.get(name, 0) else ""
        ax.set_title(f"{name} ({block['n_test']} problems{interim})")
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
