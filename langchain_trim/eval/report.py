"""Turn a run folder into metrics, a markdown report and cost/accuracy figures.

``trim report runs/X`` (or :func:`write_report`) reads the traces written by
:func:`~langchain_trim.eval.runner.run_eval` and writes, next to them:

* ``metrics.json``: per policy (accuracy, strong/weak tokens, escalations, PRM calls,
  time) and per policy *family* (all ``thr:*`` points form TRIM-Thr, all ``random:*``
  points Random, the post-hoc query-level routers their own families):
  :func:`~langchain_trim.eval.metrics.summarize_curve`'s CPT(50/80/95%), APGR, PGR,
  normalised cost and ΔIBC per point, best and fitted;
* ``report.md``: the same as tables;
* ``curves.png``/``.svg``: accuracy against mean strong tokens per question, one curve
  per family (baselines dashed), always-weak/always-strong as points;
* ``timeline_<policy>_<problem>.png``/``.svg``: one problem's steps (x), PRM score of
  each draft (y), colour = author, marker = decision, with the threshold line.

Every policy is compared on the same problems: those that every policy finished (a run
in progress may hold more problems for some policies; they are left out and counted).
Failed problems (``error`` set) count as wrong.  Figures use matplotlib's Agg canvas
without touching the global backend.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from langchain_trim.eval.fit import threshold_of
from langchain_trim.eval.metrics import OnTheCurve, OperatingPoint, summarize_curve
from langchain_trim.eval.query_routers import RouterPoint, query_level_baselines
from langchain_trim.eval.runner import load_traces, policy_dirname, read_config
from langchain_trim.eval.stats import bootstrap_mean

FAMILY_NAMES = {
    "thr": "TRIM-Thr",
    "random": "Random",
    "agg": "TRIM-Agg",
    "seq": "TRIM-Seq",
    "pomdp": "TRIM-POMDP",
}
"""Display names of policy families by registry name; others use the name itself."""

WEAK_SPECS = ("weak", "weakscored", "thr:0")
STRONG_SPECS = ("strong", "thr:1")
ENDPOINT_SPECS = frozenset({"weak", "strong", "weakscored"})
CPT_LEVELS = (50.0, 80.0, 95.0)


@dataclass(frozen=True)
class PolicyStats(OnTheCurve):
    """Aggregates of one policy over the compared problems."""

    curve_label: ClassVar[str] = "policy"

    policy: str
    family: str
    n: int
    accuracy: float
    strong_tokens: float
    """Mean strong output tokens per question (the cost)."""
    weak_tokens: float
    discarded_draft_tokens: float
    escalations: float
    """Mean escalated steps per question."""
    steps: float
    prm_calls: float
    seconds: float
    errors: int
    tokens_estimated: bool


def family_of(spec: str) -> str:
    """Family of a policy spec: ``thr:0.3`` → ``TRIM-Thr``; endpoints keep their spec.

    >>> family_of("thr:0.3"), family_of("random:0.1"), family_of("weak")
    ('TRIM-Thr', 'Random', 'weak')
    """
    name = spec.strip().partition(":")[0]
    if spec in ENDPOINT_SPECS:
        return spec
    return FAMILY_NAMES.get(name, name)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def policy_stats(spec: str, traces: Sequence[Mapping[str, Any]]) -> PolicyStats:
    """Aggregate the traces of one policy (as :func:`load_traces` returns them)."""

    def spend(key: str) -> list[float]:
        return [float((t.get("spend") or {}).get(key, 0)) for t in traces]

    return PolicyStats(
        policy=spec,
        family=family_of(spec),
        n=len(traces),
        accuracy=_mean([float(bool(t.get("correct"))) for t in traces]),
        strong_tokens=_mean(spend("strong_tokens")),
        weak_tokens=_mean(spend("weak_tokens")),
        discarded_draft_tokens=_mean(spend("discarded_draft_tokens")),
        escalations=_mean(spend("escalations")),
        steps=_mean([float(len(t["steps"])) for t in traces]),
        prm_calls=_mean(spend("prm_calls")),
        seconds=_mean([float(t.get("seconds") or 0.0) for t in traces]),
        errors=sum(bool(t.get("error")) for t in traces),
        tokens_estimated=any((t.get("spend") or {}).get("strong_tokens_estimated") for t in traces),
    )


def common_problems(
    traces: Mapping[str, Sequence[Mapping[str, Any]]],
) -> tuple[dict[str, list[Mapping[str, Any]]], dict[str, int]]:
    """Restrict every policy to the problems all policies finished; count what was dropped."""
    if not traces:
        return {}, {}
    shared = set.intersection(*({t.get("problem_id") for t in ts} for ts in traces.values()))
    kept = {spec: [t for t in ts if t.get("problem_id") in shared] for spec, ts in traces.items()}
    dropped = {spec: len(ts) - len(kept[spec]) for spec, ts in traces.items()}
    return kept, {k: v for k, v in dropped.items() if v}


def _endpoint(stats: Mapping[str, PolicyStats], specs: Sequence[str]) -> PolicyStats | None:
    for spec in specs:
        if spec in stats:
            return stats[spec]
    return None


def _curve_metrics(
    points: Sequence[OperatingPoint], weak: OperatingPoint, strong: OperatingPoint
) -> dict[str, Any]:
    report = summarize_curve(points, weak, strong, cpt_levels=CPT_LEVELS)
    return {
        "points": [
            {
                "label": p.label,
                "accuracy": p.accuracy,
                "strong_tokens": p.cost,
                "normalized_cost": c,
                "pgr": g,
                "delta_ibc": d,
            }
            for p, c, g, d in zip(
                report.points, report.normalized_costs, report.pgr, report.delta_ibc, strict=True
            )
        ],
        "cpt": {f"{k:g}": v for k, v in report.cpt.items()},
        "apgr": report.apgr,
        "delta_ibc_best": report.delta_ibc_best,
        "delta_ibc_fit": report.delta_ibc_fit,
        "degenerate": list(report.degenerate),
    }


def compute_metrics(
    traces: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    baselines: bool = True,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every number of the report, JSON-ready (see the module docstring)."""
    kept, dropped = common_problems(traces)
    stats = {spec: policy_stats(spec, ts) for spec, ts in kept.items() if ts}
    weak = _endpoint(stats, WEAK_SPECS)
    strong = _endpoint(stats, STRONG_SPECS)
    notes: list[str] = []
    if dropped:
        notes.append(
            "compared on the problems every policy finished; left out: "
            + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
        )
    if any(s.tokens_estimated for s in stats.values()):
        notes.append("some strong token counts are estimated (a model reported no usage)")
    errors = {s.policy: s.errors for s in stats.values() if s.errors}
    if errors:
        notes.append(f"failed problems count as wrong: {errors}")

    families: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[PolicyStats]] = {}
    for s in stats.values():
        if s.policy not in ENDPOINT_SPECS:
            groups.setdefault(s.family, []).append(s)
    base_points: dict[str, list[RouterPoint]] = {}
    if baselines and "weakscored" in kept and "strong" in kept:
        base_points = query_level_baselines(kept["weakscored"], kept["strong"])
    elif baselines:
        notes.append("query-level baselines need the 'weakscored' and 'strong' policies")
    if weak is None or strong is None:
        notes.append("no always-weak and always-strong run: curve metrics skipped")
    else:
        wp, sp = weak.operating_point(), strong.operating_point()
        for name, members in sorted(groups.items()):
            members.sort(key=lambda s: (s.strong_tokens, s.policy))
            families[name] = {
                "kind": "policy",
                "policies": [s.policy for s in members],
                **_curve_metrics([s.operating_point() for s in members], wp, sp),
            }
        for name, points in base_points.items():
            families[name] = {
                "kind": "baseline",
                "router_points": [p.to_dict() for p in points],
                **_curve_metrics([p.operating_point() for p in points], wp, sp),
            }
    for fam in families.values():
        notes += [d for d in fam["degenerate"] if d not in notes]
    simulated, sim_notes = simulated_vs_real(kept, stats)
    notes += sim_notes
    per_policy: dict[str, dict[str, Any]] = {}
    for spec, s in stats.items():
        row = asdict(s)
        if weak is not None and strong is not None:
            point = _curve_metrics(
                [s.operating_point()], weak.operating_point(), strong.operating_point()
            )
            first = point["points"][0]
            row.update(
                normalized_cost=first["normalized_cost"],
                pgr=first["pgr"],
                delta_ibc=first["delta_ibc"],
            )
        per_policy[spec] = row
    cfg = dict(config or {})
    return {
        "dataset": cfg.get("dataset"),
        "models": cfg.get("models"),
        "prm": cfg.get("prm"),
        "budget": cfg.get("budget"),
        "n_problems": min((s.n for s in stats.values()), default=0),
        "dropped": dropped,
        "endpoints": {
            "weak": None if weak is None else weak.policy,
            "strong": None if strong is None else strong.policy,
        },
        "policies": per_policy,
        "families": families,
        "simulated_vs_real": simulated,
        "notes": notes,
    }


TRAINED_KINDS = ("agg", "seq")
"""Policy kinds whose files record the point they reached in their simulator."""


def simulated_vs_real(
    traces: Mapping[str, Sequence[Mapping[str, Any]]], stats: Mapping[str, PolicyStats]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each trained policy's point in its simulator beside its real traces, and a note for
    every one whose simulated accuracy falls outside the real 95% interval (or cannot be
    read): the simulator then does not stand for this setting."""
    from langchain_trim.errors import InvalidInputError
    from langchain_trim.policies.learned import LearnedPolicy, simulated_point
    from langchain_trim.policies.registry import make_policy

    out: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for spec, s in stats.items():
        if spec.strip().partition(":")[0] not in TRAINED_KINDS:
            continue  # (building other policies, e.g. solving a POMDP, is not needed)
        try:
            policy = make_policy(spec)  # the registry knows where its weights lie
        except InvalidInputError as exc:
            notes.append(
                f"{spec}: its policy file is not found from here or not valid ({exc}); "
                "no simulated point to compare with"
            )
            continue
        path = policy.path if isinstance(policy, LearnedPolicy) else None
        try:
            point = None if path is None else simulated_point(path)
        except InvalidInputError as exc:
            notes.append(f"{spec}: no simulated point to compare with ({exc})")
            continue
        if point is None:
            continue
        lo, hi = bootstrap_mean([float(bool(t.get("correct"))) for t in traces[spec]])
        inside = lo <= point[0] <= hi
        out[spec] = {
            "simulated_accuracy": point[0],
            "simulated_strong_tokens": point[1],
            "accuracy": s.accuracy,
            "accuracy_ci": [lo, hi],
            "strong_tokens": s.strong_tokens,
            "inside": inside,
        }
        if not inside:
            notes.append(
                f"{spec}: its simulator promised {point[0]:.1%} accuracy at {point[1]:.0f} "
                f"strong tokens; these traces give {s.accuracy:.1%} [{_pct(lo)}, {_pct(hi)}] "
                f"at {s.strong_tokens:.0f} — the simulator does not stand for this setting "
                "(refit it on dev traces with `trim calibrate` and check again before "
                "trusting the policy)"
            )
    return out, notes


# -- markdown -------------------------------------------------------------------------------
def _fmt(value: Any, pattern: str = "{:.3f}") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return "—"
    return pattern.format(value)


def _pct(value: float | None) -> str:
    return _fmt(None if value is None else 100 * value, "{:.1f}%")


def render_markdown(metrics: Mapping[str, Any], *, figures: Sequence[str] = ()) -> str:
    """The report as markdown tables."""
    lines = ["# TRIM evaluation report", ""]
    dataset = metrics.get("dataset") or {}
    models = metrics.get("models") or {}
    if dataset or models:
        lines.append(
            f"Dataset **{dataset.get('name', '?') if isinstance(dataset, Mapping) else dataset}**"
            f" · {metrics['n_problems']} problems · weak `{models.get('weak', '?')}` · strong "
            f"`{models.get('strong', '?')}` · PRM `{metrics.get('prm')}` · budget "
            f"{metrics.get('budget') if metrics.get('budget') is not None else '∞'}"
        )
        lines.append("")
    lines += [
        "## Policies",
        "",
        "Cost = mean strong-model output tokens per question; c = cost / always-strong's; "
        "PGR = share of the weak→strong accuracy gap recovered.",
        "",
        "| policy | n | accuracy | strong tok/q | c | PGR | ΔIBC | escalations/q | "
        "weak tok/q | PRM calls/q | s/q | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for spec, row in sorted(
        metrics["policies"].items(), key=lambda kv: (kv[1]["strong_tokens"], kv[0])
    ):
        lines.append(
            f"| `{spec}` | {row['n']} | {_pct(row['accuracy'])} | {row['strong_tokens']:.1f} | "
            f"{_pct(row.get('normalized_cost'))} | {_pct(row.get('pgr'))} | "
            f"{_fmt(row.get('delta_ibc'), '{:.2f}')} | {row['escalations']:.2f} | "
            f"{row['weak_tokens']:.1f} | {row['prm_calls']:.2f} | {row['seconds']:.1f} | "
            f"{row['errors']} |"
        )
    if metrics["families"]:
        lines += [
            "",
            "## Curves",
            "",
            "CPT(x%) = least normalised cost at which the family's frontier (upper hull, "
            "endpoints included) recovers x% of the gap; APGR = area under PGR over c ∈ [0, 1]; "
            "ΔIBC > 0 beats mixing weak and strong at random.",
            "",
            "| family | kind | points | CPT(50%) | CPT(80%) | CPT(95%) | APGR | ΔIBC best | "
            "ΔIBC fit |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, fam in metrics["families"].items():
            cpt = fam["cpt"]
            lines.append(
                f"| {name} | {fam['kind']} | {len(fam['points'])} | {_pct(cpt.get('50'))} | "
                f"{_pct(cpt.get('80'))} | {_pct(cpt.get('95'))} | {_fmt(fam['apgr'])} | "
                f"{_fmt(fam['delta_ibc_best'], '{:.2f}')} | "
                f"{_fmt(fam['delta_ibc_fit'], '{:.2f}')} |"
            )
    if metrics.get("simulated_vs_real"):
        lines += [
            "",
            "## Trained policies: their simulator vs these traces",
            "",
            "What each policy reached in the simulator it was trained in (its sidecar) "
            "beside what it did here; a simulated accuracy outside the real 95% interval "
            "means the simulator does not stand for this setting.",
            "",
            "| policy | simulated accuracy | real accuracy [95% CI] | simulated strong tok/q | "
            "real strong tok/q |",
            "|---|---|---|---|---|",
        ]
        for spec, row in metrics["simulated_vs_real"].items():
            lo, hi = row["accuracy_ci"]
            lines.append(
                f"| `{spec}` | {_pct(row['simulated_accuracy'])} | {_pct(row['accuracy'])} "
                f"[{_pct(lo)}, {_pct(hi)}]{'' if row['inside'] else ' ⚠'} | "
                f"{row['simulated_strong_tokens']:.1f} | {row['strong_tokens']:.1f} |"
            )
    if metrics.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in metrics["notes"]]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    return "\n".join(lines) + "\n"


# -- figures --------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Any, stem: Path, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        path = stem.parent / f"{stem.name}.{fmt}"  # not with_suffix: "thr_0.3" has a dot
        fig.savefig(path, dpi=150 if fmt == "png" else None)
        paths.append(path)
    return paths


def plot_curves(metrics: Mapping[str, Any], *, title: str | None = None) -> Any:
    """Accuracy vs mean strong tokens per question: one curve per family (a ``Figure``)."""
    fig = _figure(7.0, 4.6)
    ax = fig.add_subplot()
    policies = metrics["policies"]
    weak = metrics["endpoints"]["weak"]
    strong = metrics["endpoints"]["strong"]
    if weak and strong:
        w, s = policies[weak], policies[strong]
        ax.plot(
            [w["strong_tokens"], s["strong_tokens"]],
            [100 * w["accuracy"], 100 * s["accuracy"]],
            ":",
            color="0.6",
            lw=1,
            label="random mix of weak/strong",
        )
    styles = {"policy": "-", "baseline": "--"}
    for name, fam in metrics["families"].items():
        pts = sorted(fam["points"], key=lambda p: (p["strong_tokens"], p["accuracy"]))
        xs = [p["strong_tokens"] for p in pts]
        ys = [100 * p["accuracy"] for p in pts]
        style = ":" if name.startswith("Oracle") else styles.get(fam["kind"], "-")
        marker = "o" if fam["kind"] == "policy" else "."
        ax.plot(xs, ys, style, marker=marker, ms=5 if marker == "o" else 4, label=name)
    for spec, marker, colour in (
        ("weak", "s", "tab:green"),
        ("weakscored", "s", "tab:green"),
        ("strong", "*", "tab:red"),
    ):
        if spec in policies:
            row = policies[spec]
            ax.plot(
                [row["strong_tokens"]],
                [100 * row["accuracy"]],
                marker,
                color=colour,
                ms=11 if marker == "*" else 8,
                mec="black",
                ls="none",
                label=f"always-{'strong' if spec == 'strong' else 'weak'}"
                + (" (scored)" if spec == "weakscored" else ""),
            )
    ax.set_xlabel("strong-model output tokens per question")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    dataset = metrics.get("dataset") or {}
    name = dataset.get("name") if isinstance(dataset, Mapping) else dataset
    ax.set_title(title or f"TRIM cost vs accuracy ({name or 'run'}, n={metrics['n_problems']})")
    return fig


def plot_timeline(trace: Mapping[str, Any], *, threshold: float | None = None) -> Any:
    """One problem's steps: PRM score of each draft, author colour, decision marker."""
    fig = _figure(7.0, 3.8)
    ax = fig.add_subplot()
    colours = {"weak": "tab:green", "strong": "tab:red"}
    markers = {"continue": "o", "escalate": "X", "blocked": "s"}
    seen: set[tuple[str, str]] = set()
    steps = trace["steps"]
    tokens = ax.twinx()
    tokens.bar(
        [s["index"] + 1 for s in steps],
        [s.get("tokens", 0) for s in steps],
        color=[colours.get(s.get("author", "weak"), "0.5") for s in steps],
        alpha=0.15,
        width=0.6,
    )
    tokens.set_ylabel("tokens of the accepted step", color="0.5")
    ax.set_zorder(tokens.get_zorder() + 1)
    ax.patch.set_visible(False)
    for s in steps:
        decision = "blocked" if s.get("budget_blocked") else s.get("decision", "continue")
        author = s.get("author", "weak")
        score = s.get("draft_score")
        y = -0.05 if score is None else float(score)
        key = (author, decision)
        label = f"{author} · {decision}" if key not in seen else None
        seen.add(key)
        ax.plot(
            [s["index"] + 1],
            [y],
            markers.get(decision, "o"),
            color=colours.get(author, "0.5"),
            mfc="white" if score is None else colours.get(author, "0.5"),
            ms=9,
            mec="black",
            ls="none",
            label=label,
        )
    if threshold is not None and 0.0 < threshold < 1.0:
        ax.axhline(threshold, color="0.3", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("PRM score of the weak draft")
    if steps:
        ax.set_xticks(range(1, len(steps) + 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    verdict = "correct" if trace.get("correct") else "wrong"
    strong_tokens = (trace.get("spend") or {}).get("strong_tokens", 0)
    ax.set_title(
        f"{trace.get('problem_id')} · {trace.get('policy')} · {verdict} "
        f"(answer {trace.get('final_answer')}, gold {trace.get('gold')}) · "
        f"{strong_tokens} strong tokens",
        fontsize=9,
    )
    return fig


def pick_timeline(
    traces: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    problem: str | None = None,
    policy: str | None = None,
) -> Mapping[str, Any] | None:
    """The trace to draw: the given one, else the middle ``thr:*`` policy's first escalated
    problem (else its first problem)."""
    if policy is None:
        thr = sorted((k, s) for s in traces if (k := threshold_of(s)) is not None and 0 < k < 1)
        candidates = [s for _, s in thr] or [s for s in traces if s not in ENDPOINT_SPECS]
        candidates = candidates or list(traces)
        if not candidates:
            return None
        policy = candidates[len(candidates) // 2]
    pool = traces.get(policy) or []
    if problem is not None:
        return next((t for t in pool if str(t.get("problem_id")) == str(problem)), None)
    for t in pool:
        if any(s.get("author") == "strong" for s in t["steps"]):
            return t
    return pool[0] if pool else None


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    metrics: Path
    markdown: Path
    figures: tuple[Path, ...]


def write_report(
    out_dir: str | Path,
    *,
    problem: str | None = None,
    policy: str | None = None,
    formats: Sequence[str] = ("png", "svg"),
    baselines: bool = True,
) -> ReportFiles:
    """Write ``metrics.json``, ``report.md`` and the figures into ``out_dir``.

    Raises ``FileNotFoundError`` when the folder holds no finished trace.
    """
    from langchain_trim.policies import baselines as _baselines  # noqa: F401  (registers names)

    out = Path(out_dir)
    traces = load_traces(out)
    if not traces:
        raise FileNotFoundError(f"no finished traces under {out / 'traces'}")
    config = read_config(out)
    metrics = compute_metrics(traces, baselines=baselines, config=config)
    figures: list[Path] = []
    if metrics["families"] or metrics["endpoints"]["weak"] or metrics["endpoints"]["strong"]:
        figures += _save(plot_curves(metrics), out / "curves", formats)
    kept, _ = common_problems(traces)
    chosen = pick_timeline(kept, problem=problem, policy=policy)
    if problem is not None and chosen is None:
        chosen = pick_timeline(traces, problem=problem, policy=policy)
        if chosen is None:
            raise FileNotFoundError(f"no trace of problem {problem!r} (policy {policy!r})")
    if chosen is not None:
        spec = str(chosen.get("policy"))
        pid = re.sub(r"[^A-Za-z0-9._-]", "_", str(chosen.get("problem_id")))
        stem = out / f"timeline_{policy_dirname(spec)}_{pid}"
        figures += _save(plot_timeline(chosen, threshold=threshold_of(spec)), stem, formats)
        metrics["timeline"] = {"policy": spec, "problem_id": chosen.get("problem_id")}
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=1, ensure_ascii=False) + "\n")
    md_path = out / "report.md"
    md_path.write_text(
        render_markdown(metrics, figures=[str(f) for f in figures if f.suffix == ".png"])
    )
    return ReportFiles(metrics_path, md_path, tuple(figures))


__all__ = [
    "CPT_LEVELS",
    "FAMILY_NAMES",
    "PolicyStats",
    "ReportFiles",
    "common_problems",
    "compute_metrics",
    "family_of",
    "pick_timeline",
    "plot_curves",
    "plot_timeline",
    "policy_stats",
    "render_markdown",
    "threshold_of",
    "write_report",
]
