"""Real step routing on the embedded models: formats, dev and test runs (resumable).

Every choice is made on dev data and reported on test data none of it saw:

* dev: GSM8K-*train* (a seeded subset), for the step format, thresholds, λ, calibration
  fits, policy training and the query-level routers' fits;
* test: GSM8K-*test* (≥ 300 problems) and MATH-500 levels 1–3 (≥ 100 problems).

Decoding is greedy (temperature 0) so that runs of different policies share every
cached call whose prefix agrees (paired comparisons, and hours instead of days on 2
cores).  Subcommands, each resumable (re-run the same command to continue):

``formats``
    The same model answering the same prompt in one call, per step format (``release``,
    ``paragraphs``), weak and strong, on dev: accuracy and paragraphs (steps) per
    solution → ``results/step_formats.{json,md}``.  Picks the embedded default format.
``onecall``
    One-call answers of weak and strong with one format on a split (the "stepwise costs
    no accuracy" check pairs them with the in-graph ``weak``/``strong`` runs).
``run``
    ``trim eval`` of a policy list on a split through the graph (traces under
    ``results/real_routing/<split>_<dataset>/``, LLM cache in ``runs/cache/``).

What the committed results ran (each command resumes where its committed traces stop;
run them from a separate clone, two at a time on 2 cores, and copy the new trace files
back)::

    python -m benchmarks.real_routing formats --n 40
    python -m benchmarks.real_routing run --split dev --dataset gsm8k --n 200 \\
        --policies "weakscored strong thr:0.45,0.55,0.65"
    python -m benchmarks.real_routing_policies     # expressive policies, from dev only
    python -m benchmarks.real_routing_policies --difficulty --final-step --length-score \\
        --out benchmarks/results/real_routing/policies_v3   # the simulator checked on dev
    python -m benchmarks.real_routing run --split test --dataset gsm8k --n 300 \\
        --policies "weakscored strong thr:0.45,0.55,0.65 step0:0.95 $(jq -r \\
        '.chosen | [.agg,.seq,.pomdp] | join(" ")' \\
        benchmarks/results/real_routing/policies_v3/choice.json)"
    python -m benchmarks.real_routing run --split dev --dataset gsm8k --n 200 --end 70 \\
        --tag policies-v3 --policies "<the same three chosen specs>"  # the 70 dev problems
        # the simulator was fit on; real vs simulated (--check-sim)
    python -m benchmarks.real_routing run --split test --dataset gsm8k --n 300 \\
        --prm oracle --policies "thr:0.5"          # the ablation's reference scorer
    python -m benchmarks.real_routing run --split test --dataset math500 --n 100 \\
        --policies "weakscored strong thr:0.45,0.55,0.65"
    python -m benchmarks.real_routing onecall --split test --dataset gsm8k --n 300
    python -m benchmarks.real_routing run --split test --dataset gsm8k --n 20 --no-cache \\
        --policies "weakscored strong thr:0.65"    # wall time, every call paid
    python -m benchmarks.real_routing_report       # report.md, metrics.json, curves.png

The embedded default since session 11 (the strong model cut at lines, TRIM-Thr 0.85;
report in ``results/real_routing/strong-lines_to085/``)::

    python -m benchmarks.real_routing run --split dev --dataset gsm8k --n 200 --end 70 \
        --strong-format lines --tag to085 \
        --policies "thr:0.45 thr:0.55 thr:0.65 thr:0.75 thr:0.85"   # the choice, on dev
    python -m benchmarks.real_routing run --split test --dataset gsm8k --n 300 \
        --strong-format lines --tag to085 --policies thr:0.85
    python -m benchmarks.real_routing run --split test --dataset math500 --n 100 \
        --strong-format lines --tag to085 --policies thr:0.85
    python -m benchmarks.walltime_split --n 20 --strong-format lines \
        --policies "weakscored strong thr:0.85"      # seconds, cold, side by side
    python -m benchmarks.real_routing_report --strong-format lines_to085
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.shared_data import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
RUNS = RESULTS / "real_routing"
"""Traces and one-call files are committed: a later session (a fresh checkout) resumes
from them; the LLM cache (``runs/cache``, not committed) only saves recomputation."""
CACHE_DIR = ROOT / "runs" / "cache"
SEED = {"dev": 1, "test": 0}
FILES = {
    ("dev", "gsm8k"): "gsm8k_train.jsonl",
    ("test", "gsm8k"): "gsm8k_test.jsonl",
    ("test", "math500"): "math500.jsonl",
}
MATH_LEVELS = (1, 2, 3)
"""MATH-500 levels the 0.5B/1.5B pair can reach (both score near 0 above level 3)."""
ONE_CALL_MAX_TOKENS = 1024
FORMATS = ("paragraphs", "release", "short-steps")
"""Candidate step formats compared on dev (ties go to the earlier one)."""
STEP_MAX_TOKENS = 256
MAX_STEPS = 30
MAX_TOTAL_TOKENS = ONE_CALL_MAX_TOKENS
"""A solution ends at as many tokens as a one-call answer may have (loops end there)."""


def data_dir() -> Path:
    """The shared data folder: ``$TRIM_SHARED_DATA``, else ``<repo>/../shared/data``."""
    return SHARED_DATA


def load_split(split: str, dataset: str, n: int) -> list[Any]:
    """A seeded subset of a split (the same problems every time)."""
    from langchain_trim.eval.datasets import load_problems, select_subset

    key = (split, dataset)
    if key not in FILES:
        raise SystemExit(f"no {split} split for {dataset}; known: {sorted(FILES)}")
    path = data_dir() / FILES[key]
    if dataset == "math500":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        keep = {i for i, row in enumerate(rows) if int(row.get("level", 0)) in MATH_LEVELS}
        problems = [p for i, p in enumerate(load_problems(dataset, path)) if i in keep]
        return select_subset(problems, n, SEED[split])
    return load_problems(dataset, path, limit=n, seed=SEED[split])


def gsm8k_references(split: str) -> dict[str, str]:
    """Question → worked reference solution (with its ``#### answer`` line) of a split."""
    path = data_dir() / FILES[(split, "gsm8k")]
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["question"].strip(): r["answer"] for r in rows}


def build_setting(prm: str = "probe", step_format: str = "paragraphs") -> Any:
    from langchain_trim.local.setting import local_setting
    from langchain_trim.setting import load_models

    setting = local_setting(prm=prm, temperature=0.0, step_format=step_format)
    if setting.prm is not None:  # policies sharing a prefix share its scores
        from langchain_trim.eval.prm_cache import CachedPRM

        setting.prm = CachedPRM(setting.prm, CACHE_DIR / f"prm_{prm}.sqlite")
    load_models(setting)
    return setting


# -- one call ------------------------------------------------------------------------------
def one_call(model: Any, fmt_name: str, question: str) -> dict[str, Any]:
    """The model answers the format's prompt in one call (no step cutting)."""
    from langchain_trim.step_format import get_step_format
    from langchain_trim.steps import split_steps

    fmt = get_step_format(fmt_name)
    messages = fmt.messages(question, "", 0, mode="prefill")
    t0 = time.perf_counter()
    message = model.invoke(messages, max_tokens=ONE_CALL_MAX_TOKENS)
    seconds = time.perf_counter() - t0
    text = str(message.text)
    usage = message.usage_metadata or {}
    return {
        "text": text,
        "tokens": int(usage.get("output_tokens", 0)),
        "steps": len(split_steps(text, fmt.delimiter)),
        "finish": (message.response_metadata or {}).get("finish_reason"),
        "seconds": round(seconds, 3),
    }


def run_one_calls(
    problems: Sequence[Any], models: dict[str, Any], formats: Sequence[str], out: Path
) -> list[dict[str, Any]]:
    """Resumable: one JSON line per (problem, model, format) in ``out``."""
    from langchain_trim.eval.grading import is_equivalent
    from langchain_trim.eval.runner import graded_answer
    from langchain_trim.steps import extract_boxed

    out.parent.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, str, str], dict[str, Any]] = {}
    if out.exists():
        for line in out.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[(row["id"], row["model"], row["format"])] = row
    todo = [
        (p, m, f) for p in problems for m in models for f in formats if (p.id, m, f) not in done
    ]
    try:
        from tqdm import tqdm

        bar: Any = tqdm(total=len(todo), desc="one-call", disable=not sys.stderr.isatty())
    except ImportError:  # pragma: no cover
        bar = None
    with out.open("a") as fh:
        for problem, model_name, fmt in todo:
            row = one_call(models[model_name], fmt, problem.question)
            answer, source = graded_answer(extract_boxed(row["text"]), row["text"])
            row.update(
                id=problem.id,
                model=model_name,
                format=fmt,
                answer=answer,
                answer_source=source,
                gold=problem.answer,
                correct=bool(is_equivalent(answer, problem.answer)),
            )
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            done[(problem.id, model_name, fmt)] = row
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    ids = {p.id for p in problems}
    return [r for k, r in done.items() if k[0] in ids and k[1] in models and k[2] in formats]


def _cached(setting: Any, cache_file: Path) -> Any:
    from langchain_trim.eval.cache import SQLiteLLMCache

    cache_file.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteLLMCache(cache_file)


def summarize_one_calls(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    from langchain_trim.eval.stats import bootstrap_mean

    out: dict[str, dict[str, Any]] = {}
    keys = sorted({(r["model"], r["format"]) for r in rows})
    for model, fmt in keys:
        sel = sorted(
            (r for r in rows if r["model"] == model and r["format"] == fmt), key=lambda r: r["id"]
        )
        correct = [float(r["correct"]) for r in sel]
        lo, hi = bootstrap_mean(correct)
        out[f"{model}/{fmt}"] = {
            "n": len(sel),
            "accuracy": sum(correct) / len(sel),
            "accuracy_ci95": [lo, hi],
            "steps_mean": sum(r["steps"] for r in sel) / len(sel),
            "tokens_mean": sum(r["tokens"] for r in sel) / len(sel),
            "boxed": sum(r["answer_source"] == "boxed" for r in sel) / len(sel),
            "cut_by_cap": sum(r["finish"] == "length" for r in sel),
            "seconds_mean": sum(r["seconds"] for r in sel) / len(sel),
        }
    return out


def one_calls_per_model(
    problems: Sequence[Any], only: str, formats: Sequence[str], stem: str
) -> list[dict[str, Any]]:
    """One-call rows of weak and strong (or ``only`` those), one resumable file per model."""
    from langchain_trim.eval.cache import llm_cache

    setting = build_setting(prm="none")
    models = {"weak": setting.weak, "strong": setting.strong}
    if only:
        models = {k: v for k, v in models.items() if k in only.split(",")}
    rows: list[dict[str, Any]] = []
    with llm_cache(_cached(setting, CACHE_DIR / "real_routing_onecall.sqlite")):
        # problem-major chunks (a run stopped at any time leaves both models on the same
        # problems); one file per model, so workers can also run side by side
        for start in range(0, len(problems), 10):
            chunk = problems[start : start + 10]
            for name, model in models.items():
                out = RUNS / f"{stem}_{name}.jsonl"
                rows += run_one_calls(chunk, {name: model}, formats, out)
    return rows


def formats_command(args: argparse.Namespace) -> None:
    problems = load_split("dev", "gsm8k", args.n)
    rows = one_calls_per_model(problems, args.models, FORMATS, f"formats_dev_{args.n}")
    if args.models:
        return  # a partial worker: the full command writes the summary
    summary = summarize_one_calls(rows)
    score = {
        fmt: sum(summary[f"{m}/{fmt}"]["accuracy"] for m in ("weak", "strong")) / 2
        for fmt in FORMATS
    }
    best = max(score, key=lambda f: score[f])
    result = {
        "split": "dev: GSM8K-train, seeded subset (seed 1)",
        "n_problems": len(problems),
        "decoding": "greedy, one call, max_tokens 1024",
        "rule": "highest mean one-call accuracy of weak and strong (ties: the earlier listed)",
        "score": score,
        "chosen": best,
        "by_model_format": summary,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "step_formats.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Step formats on dev (GSM8K-train, one call, greedy)",
        "",
        f"{len(problems)} problems; chosen: **{best}** (rule: {result['rule']}).",
        "",
        "| model / format | accuracy (95% CI) | steps | tokens | boxed | cut at 1024 |",
        "|---|---|---|---|---|---|",
    ]
    for key, row in summary.items():
        lo, hi = row["accuracy_ci95"]
        lines.append(
            f"| {key} | {row['accuracy']:.1%} ({lo:.1%}–{hi:.1%}) | {row['steps_mean']:.1f} | "
            f"{row['tokens_mean']:.0f} | {row['boxed']:.0%} | {row['cut_by_cap']} |"
        )
    (RESULTS / "step_formats.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def onecall_command(args: argparse.Namespace) -> None:
    problems = load_split(args.split, args.dataset, args.n)
    rows = one_calls_per_model(
        problems, args.models, [args.format], f"onecall_{args.split}_{args.dataset}"
    )
    for key, row in summarize_one_calls(rows).items():
        print(key, json.dumps(row))


def run_command(args: argparse.Namespace) -> None:
    from langchain_trim.policies.registry import expand_specs

    problems = load_split(args.split, args.dataset, args.n)
    if args.prm == "oracle":  # the ablation's reference-solution scorer (GSM8K only)
        from benchmarks.oracle_prm import ReferencePRM

        setting = build_setting(prm="none", step_format=args.format)
        setting.prm = ReferencePRM(gsm8k_references(args.split))
    else:
        setting = build_setting(prm=args.prm, step_format=args.format)
    specs = expand_specs(args.policies)
    if args.no_cache:  # wall time: every call paid, in a folder of its own
        from langchain_trim.eval.prm_cache import CachedPRM

        if isinstance(setting.prm, CachedPRM):
            setting.prm = setting.prm.inner
    out = run_folder(args)
    warn_if_unpaired(args, out)
    # Problem-major chunks: a run stopped at any time leaves every policy on the same
    # problems (paired comparisons), and the next run resumes from the trace files.
    # ``--start``/``--end``: two workers (two clones) split the same seeded list; the
    # traces of both go in one folder.
    end = len(problems) if args.end is None else min(args.end, len(problems))
    for start in range(args.start, end, args.chunk):
        run_chunk(args, problems[start : min(start + args.chunk, end)], specs, setting, out)


def warn_if_unpaired(args: argparse.Namespace, out: Path) -> None:
    """Say so when a variant run draws other problems than its base run.

    Seeded subsets of different sizes are not nested (``select_subset``), so a variant run
    with another ``--n`` pairs with its base run on part of the problems only; extend a
    run with ``--end`` instead.
    """
    base = RUNS / f"{args.split}_{args.dataset}" / "config.json"
    if out == base.parent or not base.is_file():
        return
    n = json.loads(base.read_text(encoding="utf-8")).get("dataset", {}).get("n_problems")
    if n is not None and n != args.n:
        print(
            f"warning: {base.parent.name} drew its problems with --n {n}; --n {args.n} draws "
            f"others (seeded subsets are not nested): pass --n {n} --end K to pair with it",
            file=sys.stderr,
        )


def run_folder(args: argparse.Namespace) -> Path:
    """Where a run's traces go: ``<split>_<dataset>`` plus what sets it apart."""
    suffix = (
        "" if (args.prm, args.format) == ("probe", "paragraphs") else f"_{args.prm}_{args.format}"
    )
    if args.strong_format:
        suffix += f"_strong-{args.strong_format}"
    if args.no_cache:
        suffix += "_walltime"
    if args.strong_cap:
        suffix += f"_strongcap{args.strong_cap}"
    if args.strong_mode:
        suffix += f"_strongmode-{args.strong_mode}"
    if args.tag:
        suffix += f"_{args.tag}"
    return RUNS / f"{args.split}_{args.dataset}{suffix}"


def strong_format_for(
    policy: Any, strong_format: str, cut_always_strong: bool = False
) -> str | None:
    """The strong model's step format under ``policy``: ``--strong-format`` cuts rewrites only.

    Always-strong is the strong model answering in its own format (the report's reference
    line for every variant), so a variant run's ``strong`` — measured side by side in an
    uncached wall-time run — is the same solution as the base run's.  With
    ``cut_always_strong`` (``run --cut-always-strong``) it is cut at ``strong_format`` too:
    the strong steps a simulator of the variant learns from.
    """
    from langchain_trim.policies import ThresholdPolicy

    always_strong = isinstance(policy, ThresholdPolicy) and policy.threshold >= 1.0
    if not strong_format or (always_strong and not cut_always_strong):
        return None
    return strong_format


def run_chunk(
    args: argparse.Namespace, problems: list[Any], specs: list[str], setting: Any, out: Path
) -> None:
    from langchain_trim.eval.runner import run_eval
    from langchain_trim.graph import create_trim_graph

    def make_graph(policy: Any) -> Any:
        return create_trim_graph(
            setting.weak,
            setting.strong,
            setting.prm,
            policy,
            max_steps=MAX_STEPS,
            step_max_tokens=STEP_MAX_TOKENS,
            strong_step_max_tokens=args.strong_cap or None,
            max_total_tokens=MAX_TOTAL_TOKENS,
            step_format=setting.step_format,
            strong_step_format=strong_format_for(
                policy, args.strong_format, args.cut_always_strong
            ),
            strong_mode=args.strong_mode or None,
        ).compile(name="trim")

    summary = run_eval(
        problems,
        specs,
        out_dir=out,
        make_graph=make_graph,
        concurrency=args.concurrency,
        max_steps=MAX_STEPS,
        step_max_tokens=STEP_MAX_TOKENS,
        cache=None if args.no_cache else CACHE_DIR / f"real_routing_{args.dataset}.sqlite",
        progress=sys.stderr.isatty(),
        config={
            "dataset": {
                "name": args.dataset,
                "split": args.split,
                "seed": SEED[args.split],
                "n_problems": args.n,
                "math_levels": list(MATH_LEVELS) if args.dataset == "math500" else None,
            },
            "temperature": 0.0,
            "benchmark": "benchmarks/real_routing.py",
            "models": {"weak": "qwen2.5-coder-0.5b", "strong": "qwen2.5-coder-1.5b"},
            "prm": str(getattr(setting.prm, "name", None)),
            "step_format": setting.step_format,
            "strong_step_format": args.strong_format or setting.step_format,
            "always_strong_step_format": (args.strong_format if args.cut_always_strong else None)
            or setting.step_format,
            "max_total_tokens": MAX_TOTAL_TOKENS,
            "strong_step_cap": args.strong_cap or None,
            "strong_mode": args.strong_mode or "auto (prefill)",
        },
    )
    print(f"ran {summary.ran}, skipped {summary.skipped}, errors {summary.errors}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("formats", help="one-call accuracy per step format on dev")
    f.add_argument("--n", type=int, default=40)
    f.add_argument("--models", default="", help="only these models (a parallel worker)")
    o = sub.add_parser("onecall", help="one-call answers with one format on a split")
    r = sub.add_parser("run", help="policies through the graph on a split")
    for p in (o, r):
        p.add_argument("--split", choices=("dev", "test"), required=True)
        p.add_argument("--dataset", choices=("gsm8k", "math500"), default="gsm8k")
        p.add_argument("--n", type=int, required=True)
        p.add_argument("--format", default="paragraphs")
    o.add_argument("--models", default="", help="only these models (a parallel worker)")
    r.add_argument("--policies", required=True, help="policy specs, e.g. 'weakscored strong'")
    r.add_argument("--prm", default="probe")
    r.add_argument(
        "--strong-format", default="", help="the strong model's step format when it differs"
    )
    r.add_argument(
        "--cut-always-strong",
        action="store_true",
        help="with --strong-format: cut always-strong at it too (default: its own format)",
    )
    r.add_argument(
        "--strong-cap",
        type=int,
        default=0,
        help="cap a strong rewrite at this many tokens (the next step continues it)",
    )
    r.add_argument(
        "--strong-mode",
        choices=("", "instruct"),
        default="",
        help="ask the strong model for the next step in a user turn ('Write step N only') "
        "instead of continuing the solution (prefill)",
    )
    r.add_argument(
        "--tag",
        default="",
        help="a folder of its own, <split>_<dataset>_TAG (runs kept apart from a fit's inputs)",
    )
    r.add_argument(
        "--start",
        type=int,
        default=0,
        help="begin at this problem of the seeded list (a second worker's share)",
    )
    r.add_argument(
        "--end",
        type=int,
        default=None,
        help="stop before this problem of the seeded list (the first worker's share)",
    )
    r.add_argument("--concurrency", type=int, default=1)
    r.add_argument("--chunk", type=int, default=10, help="problems per resumable chunk")
    r.add_argument(
        "--no-cache",
        action="store_true",
        help="no LLM or PRM cache (for wall time; traces go to <split>_<dataset>_walltime)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    {"formats": formats_command, "onecall": onecall_command, "run": run_command}[args.command](args)


if __name__ == "__main__":
    main()
