"""Where an offline user's seconds go: the measured split of TRIM's wall time.

The wall-time run (``benchmarks.real_routing run --no-cache``) says TRIM-Thr at its dev
operating point takes about as long as always-strong on the embedded default.  This
script says why.  It runs the same graph (greedy, no LLM or PRM cache) on the first
``--n`` GSM8K-test problems for each policy, and records per problem:

* wall seconds;
* per model (weak, strong), llama.cpp's own counters: prompt evaluation (ms, tokens) and
  decoding (ms, tokens) — prompt evaluation is what re-reading the accepted steps costs;
* PRM seconds (a timing proxy around the PRM: encoding the prefix and the probe);
* weak decoding spent on drafts the policy then discarded (their share of the weak
  model's decoded tokens times its decoding time).

Every (problem, policy) run starts cold: the models' KV prefixes and the PRM's feature
cache are cleared first (as for a user's single question); such rows say ``"cold": true``.
Rows without it were written before the reset existed; only a problem's first policy
(``weakscored``) and policies without a PRM (``strong``) are kept from that time.

Policies of one problem run back to back, so the ratios are measured side by side.
Rows are appended per (problem, policy) to ``results/real_routing/walltime_split.jsonl``
(a rerun resumes); ``--report`` writes ``walltime_split.md`` from them.  Absolute seconds
depend on what else the machine runs (each row records the load average); the split is
a share of the same run's time.

    python -m benchmarks.walltime_split --n 10
    python -m benchmarks.walltime_split --report
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.real_routing import (
    MAX_STEPS,
    MAX_TOTAL_TOKENS,
    RUNS,
    STEP_MAX_TOKENS,
    build_setting,
    load_split,
    strong_format_for,
)

OUT = RUNS / "walltime_split.jsonl"
POLICIES = ("weakscored", "strong", "thr:0.65")


def out_path(strong_format: str = "") -> Path:
    """The rows' file: ``walltime_split.jsonl``, or ``…_strong-<format>.jsonl`` for a run
    whose strong model rewrites in another format (the embedded default cuts at lines)."""
    return OUT.with_name(f"{OUT.stem}_strong-{strong_format}.jsonl") if strong_format else OUT


class TimedPRM:
    """The PRM, with the seconds of every call added up (other attributes pass through)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _timed(self, fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    async def _atimed(self, fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*args)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    def score(self, question: str, steps: Sequence[str]) -> list[float]:
        return self._timed(self.inner.score, question, steps)

    async def ascore(self, question: str, steps: Sequence[str]) -> list[float]:
        return await self._atimed(self.inner.ascore, question, steps)

    def score_batch(self, items: Sequence[Any]) -> list[list[float]]:
        return self._timed(self.inner.score_batch, items)

    async def ascore_batch(self, items: Sequence[Any]) -> list[list[float]]:
        return await self._atimed(self.inner.ascore_batch, items)


def _perf(model: Any) -> dict[str, float]:
    """llama.cpp's counters of ``model``'s context since the last reset."""
    import llama_cpp

    d = llama_cpp.llama_perf_context(model.load().llm._ctx.ctx)
    return {
        "prompt_ms": float(d.t_p_eval_ms),
        "prompt_tokens": int(d.n_p_eval),
        "decode_ms": float(d.t_eval_ms),
        "decode_tokens": int(d.n_eval),
    }


def _reset(model: Any) -> None:
    import llama_cpp

    llama_cpp.llama_perf_context_reset(model.load().llm._ctx.ctx)


def _done(out: Path) -> set[tuple[str, str]]:
    if not out.exists():
        return set()
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {(r["problem_id"], r["policy"]) for r in rows}


def measure(n: int, policies: Sequence[str], strong_format: str = "") -> None:
    from langchain_trim.eval.prm_cache import CachedPRM
    from langchain_trim.eval.runner import solve_problem
    from langchain_trim.graph import create_trim_graph
    from langchain_trim.policies.registry import make_policy

    setting = build_setting(prm="probe")
    inner = setting.prm.inner if isinstance(setting.prm, CachedPRM) else setting.prm
    prm = TimedPRM(inner)
    if getattr(setting.weak.load().llm, "_ctx", None) is getattr(
        setting.strong.load().llm, "_ctx", 0
    ):
        raise SystemExit("weak and strong share a llama.cpp context: counters would mix")
    out = out_path(strong_format)
    done = _done(out)
    for problem in load_split("test", "gsm8k", n):
        for spec in policies:
            if (problem.id, spec) in done:
                continue
            policy = make_policy(spec)
            graph = create_trim_graph(
                setting.weak,
                setting.strong,
                prm,
                policy,
                max_steps=MAX_STEPS,
                step_max_tokens=STEP_MAX_TOKENS,
                max_total_tokens=MAX_TOTAL_TOKENS,
                step_format=setting.step_format,
                strong_step_format=strong_format_for(policy, strong_format),
            ).compile(name="trim")
            for model in (setting.weak, setting.strong):
                _reset(model)
                model.load().llm.reset()  # no KV prefix left from the previous policy's run
            encoder = getattr(inner, "encoder", None)
            if encoder is not None:  # nor cached PRM features: each run starts cold
                encoder.clear_cache()
            prm.seconds, prm.calls = 0.0, 0
            t0 = time.perf_counter()
            lines = asyncio.run(solve_problem(graph, problem, spec))
            wall = time.perf_counter() - t0
            steps = [ln for ln in lines if ln.get("type") == "step"]
            result = lines[-1]
            weak = _perf(setting.weak)
            discarded = sum(
                int(s.get("draft_tokens") or 0) for s in steps if s["author"] == "strong"
            )
            row = {
                "problem_id": problem.id,
                "policy": spec,
                "correct": result.get("correct"),
                "wall_s": round(wall, 3),
                "weak": weak,
                "strong": _perf(setting.strong),
                "prm_s": round(prm.seconds, 3),
                "prm_calls": prm.calls,
                "steps": len(steps),
                "escalated": sum(s["author"] == "strong" for s in steps),
                "discarded_draft_tokens": discarded,
                "load_avg_1m": os.getloadavg()[0],
                "cold": True,
                "strong_step_format": strong_format_for(policy, strong_format) or "paragraphs",
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            print(
                f"{problem.id} {spec}: {wall:.1f} s (prm {prm.seconds:.1f} s, weak "
                f"{(weak['prompt_ms'] + weak['decode_ms']) / 1e3:.1f} s)",
                flush=True,
            )


def report(strong_format: str = "") -> str:
    """Mean seconds per question by component, paired over problems every policy ran."""
    out = out_path(strong_format)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["policy"], {})[r["problem_id"]] = r
    ids = sorted(set.intersection(*(set(v) for v in by.values())))
    lines = [
        "# Where the seconds go (embedded default, GSM8K-test, greedy, no cache)",
        "",
        *(
            [
                f"Strong rewrites cut at `{strong_format}` (always-strong answers in its own "
                "format, paragraphs).",
                "",
            ]
            if strong_format
            else []
        ),
        f"{len(ids)} problems, every policy on each, back to back; mean seconds per question.",
        f"Machine load average during the run: {min(r['load_avg_1m'] for r in rows):.1f}–"
        f"{max(r['load_avg_1m'] for r in rows):.1f} on 2 cores (absolute seconds inflate "
        "with load; the shares are of the same run).",
        "",
        "| policy | wall | weak prompt eval | weak decode (of it discarded drafts) | PRM | "
        "strong prompt eval | strong decode | other |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, dict[str, Any]] = {}
    for spec, per in by.items():
        rs = [per[i] for i in ids]
        n = len(rs) or 1

        def mean(f: Any, rs: list[dict[str, Any]] = rs, n: int = n) -> float:
            return sum(f(r) for r in rs) / n

        wp = mean(lambda r: r["weak"]["prompt_ms"] / 1e3)
        wd = mean(lambda r: r["weak"]["decode_ms"] / 1e3)
        disc = mean(
            lambda r: (
                r["weak"]["decode_ms"]
                / 1e3
                * min(r["discarded_draft_tokens"] / max(r["weak"]["decode_tokens"], 1), 1.0)
            )
        )
        sp = mean(lambda r: r["strong"]["prompt_ms"] / 1e3)
        sd = mean(lambda r: r["strong"]["decode_ms"] / 1e3)
        prm = mean(lambda r: r["prm_s"])
        wall = mean(lambda r: r["wall_s"])
        other = wall - wp - wd - sp - sd - prm
        summary[spec] = {
            "wall": wall,
            "weak_prompt": wp,
            "weak_decode": wd,
            "discarded_drafts": disc,
            "prm": prm,
            "strong_prompt": sp,
            "strong_decode": sd,
            "other": other,
        }
        lines.append(
            f"| {spec} | {wall:.1f} | {wp:.1f} | {wd:.1f} ({disc:.1f}) | {prm:.1f} | {sp:.1f} | "
            f"{sd:.1f} | {other:.1f} |"
        )
    if "strong" in by:
        from langchain_trim.eval.stats import bootstrap_ci

        ref = [by["strong"][i]["wall_s"] for i in ids]
        lines += [
            "",
            "Wall time ÷ always-strong's, paired over problems (95% bootstrap interval):",
            "",
        ]
        for spec in by:
            if spec == "strong":
                continue
            mine = [by[spec][i]["wall_s"] for i in ids]
            point, lo, hi = bootstrap_ci(
                {"m": mine, "r": ref}, lambda c: float(c["m"].sum() / c["r"].sum())
            )
            summary[spec]["ratio_to_strong_ci"] = [lo or 0.0, hi or 0.0]
            lines.append(f"- {spec}: {point:.2f}× [{lo:.2f}, {hi:.2f}]")
    if "strong" in summary:
        st = summary["strong"]
        alone = st["wall"] - st["weak_prompt"] - st["weak_decode"]
        lines += [
            "",
            "The graph drafts before every decision, so always-strong also pays for weak drafts "
            f"it discards; without them it would take about {alone:.1f} s "
            f"(TRIM-Thr and always-weak against that: "
            + ", ".join(
                f"{k} {v['wall'] / alone:.2f}×" for k, v in summary.items() if k != "strong"
            )
            + ").",
            "",
            "As a share of always-strong's wall time:",
            "",
        ]
        base = summary["strong"]["wall"]
        for spec, s in summary.items():
            lines.append(
                f"- {spec}: {s['wall'] / base:.2f}× — PRM {s['prm'] / base:.2f}, weak drafting "
                f"{(s['weak_prompt'] + s['weak_decode']) / base:.2f} (discarded drafts "
                f"{s['discarded_drafts'] / base:.2f}), strong "
                f"{(s['strong_prompt'] + s['strong_decode']) / base:.2f} (prompt re-evaluation "
                f"{s['strong_prompt'] / base:.2f})"
            )
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    plot(summary, out.with_suffix(".png"), len(ids))
    out.with_suffix(".json").write_text(
        json.dumps({"n_problems": len(ids), "mean_seconds": summary}, indent=1) + "\n",
        encoding="utf-8",
    )
    return text


def plot(summary: dict[str, dict[str, Any]], path: Any, n: int) -> None:
    """Stacked seconds per question by component, one bar per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [
        ("weak drafts kept", lambda r: r["weak_prompt"] + r["weak_decode"] - r["discarded_drafts"]),
        ("weak drafts discarded", lambda r: r["discarded_drafts"]),
        ("PRM", lambda r: r["prm"]),
        ("strong prompt re-evaluation", lambda r: r["strong_prompt"]),
        ("strong decoding", lambda r: r["strong_decode"]),
        ("other", lambda r: max(r["other"], 0.0)),
    ]
    specs = list(summary)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    bottom = [0.0] * len(specs)
    for label, value in parts:
        heights = [value(summary[s]) for s in specs]
        ax.bar(specs, heights, bottom=bottom, label=label)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel("seconds per question")
    ax.set_title(f"Where the seconds go ({n} GSM8K-test problems, cold)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--policies", default=" ".join(POLICIES))
    parser.add_argument(
        "--strong-format",
        default="",
        help="cut the strong model's rewrites at this step format (always-strong keeps its own)",
    )
    parser.add_argument("--report", action="store_true", help="only write the report")
    args = parser.parse_args(argv)
    if not args.report:
        measure(args.n, args.policies.split(), args.strong_format)
    print(report(args.strong_format))


if __name__ == "__main__":
    main()
