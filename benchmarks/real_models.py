"""TRIM on the embedded CPU models: GSM8K-test and MATH-500 subsets, sweep and baselines.

Run ``python -m benchmarks.real_models`` (about 2 hours on 2 cores with the defaults;
``--dry-run`` prints the plan and a time estimate).  For each dataset, a fixed seeded
subset is solved by

* always-weak with PRM scores (``weakscored``, also the input of the post-hoc
  query-level routers) and always-weak without (``weak``: free, it is served from the
  cache),
* always-strong (``strong``),
* a TRIM-Thr sweep (``thr:k`` for each ``--thresholds``), and optionally random step
  routing (``--random``),

on the embedded weak (Qwen2.5-Coder-0.5B) and strong (Qwen2.5-Coder-1.5B) models with
the PRM of ``--prm`` (default ``probe``, the best CPU scorer in
``benchmarks/prm_quality``).  The query-level baselines (difficulty routing on the first
step's score, AutoMix-PRM with min/mean verification) are computed post hoc from the
``weakscored`` and ``strong`` traces by ``trim report``.

Outputs, per dataset, in ``benchmarks/results/real_<dataset>/``: ``traces/`` (one JSONL
per problem per policy), ``config.json``, ``metrics.json``, ``report.md``,
``curves.png``/``.svg`` and a step timeline figure; and ``real_models.json`` next to
them with the headline numbers of every dataset.  The LLM cache lives in ``runs/cache/``
(git-ignored), so an interrupted run resumes where it stopped and a second sweep over
the same problems only pays for new prefixes.

Smoke test (seconds to a minute)::

    python -m benchmarks.real_models --weak tiny --strong tiny --n-gsm8k 2 --n-math500 1 \\
        --max-steps 3 --step-max-tokens 32 --thresholds 0.5 --out /tmp/real_smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
CACHE_DIR = ROOT / "runs" / "cache"
DATASETS = ("gsm8k", "math500")

# Rough seconds per problem per policy on 2 cores (Qwen 0.5B → 1.5B, probe PRM), used only
# for the --dry-run estimate: always-weak ~12 s on GSM8K, always-strong ~30 s (it drafts
# with the weak model too), a threshold in between; MATH-500 solutions are ~2× longer.
_SECONDS = {"weakscored": 12.0, "weak": 0.5, "strong": 30.0, "thr": 18.0, "random": 18.0}
_DATASET_FACTOR = {"gsm8k": 1.0, "math500": 2.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--n-gsm8k", type=int, default=30, help="GSM8K-test problems")
    parser.add_argument("--n-math500", type=int, default=15, help="MATH-500 problems")
    parser.add_argument("--seed", type=int, default=0, help="seed of the problem subsets")
    parser.add_argument("--thresholds", default="0.7,0.8,0.9,0.95", help="TRIM-Thr sweep")
    parser.add_argument("--random", default="", help="random step routing, e.g. 0.2,0.5")
    parser.add_argument(
        "--extra",
        default="",
        help="more policy specs, space-separated (e.g. 'agg:<weights> pomdp:3e-3@<cal.json>')",
    )
    parser.add_argument("--prm", default="probe", help="probe, judge, confidence, arithmetic")
    parser.add_argument("--weak", default="weak", help="embedded model name or .gguf path")
    parser.add_argument("--strong", default="strong", help="embedded model name or .gguf path")
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--step-max-tokens", type=int, default=256)
    parser.add_argument("--budget", type=int, default=None, help="strong tokens per question")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--out", type=Path, default=RESULTS, help="parent of real_<dataset>/")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    return parser.parse_args(argv)


def policies(args: argparse.Namespace) -> list[str]:
    """Always-weak (scored first: it fills the cache), always-strong, sweep, random."""
    out = ["weakscored", "weak", "strong"]
    out += [f"thr:{float(k):g}" for k in args.thresholds.split(",") if k.strip()]
    out += [f"random:{float(p):g}" for p in args.random.split(",") if p.strip()]
    out += [p for p in args.extra.split() if p.strip()]
    return out


def estimate_seconds(args: argparse.Namespace) -> float:
    """Very rough wall-clock estimate of the whole run (see ``_SECONDS``)."""
    total = 0.0
    for dataset in args.datasets:
        n = getattr(args, f"n_{dataset}")
        per_problem = sum(_SECONDS.get(p.partition(":")[0], 18.0) for p in policies(args))
        total += n * per_problem * _DATASET_FACTOR[dataset]
    return total


def load_subset(dataset: str, n: int, seed: int) -> tuple[list[Any], Path]:
    from benchmarks.shared_data import use_shared_data
    from langchain_trim.eval.datasets import load_problems
    from langchain_trim.eval.runner import DEFAULT_DATA_FILES, default_data_path

    use_shared_data()
    path = default_data_path(dataset)
    if path is None:
        raise SystemExit(
            f"{DEFAULT_DATA_FILES[dataset]} not found in the shared data folder; set "
            "TRIM_SHARED_DATA to the folder that holds it"
        )
    return load_problems(dataset, path, limit=n, seed=seed), path


def build_setting(args: argparse.Namespace) -> Any:
    from langchain_trim.local.setting import local_setting
    from langchain_trim.setting import load_models

    # The committed results of this benchmark were measured with the release's format.
    setting = local_setting(
        weak=args.weak,
        strong=args.strong,
        prm=args.prm,
        temperature=args.temperature,
        step_format="release",
    )
    load_models(setting)
    return setting


def run_dataset(args: argparse.Namespace, dataset: str, setting: Any) -> dict[str, Any]:
    from langchain_trim.eval.report import write_report
    from langchain_trim.eval.runner import run_eval

    n = getattr(args, f"n_{dataset}")
    problems, source = load_subset(dataset, n, args.seed)
    out = args.out / f"real_{dataset}"
    cache = None if args.no_cache else args.cache_dir / f"real_{dataset}.sqlite"
    print(f"[{dataset}] {len(problems)} problems × {len(policies(args))} policies → {out}")
    t0 = time.perf_counter()
    summary = run_eval(
        problems,
        policies(args),
        out_dir=out,
        setting=setting,
        concurrency=args.concurrency,
        budget=args.budget,
        max_steps=args.max_steps,
        step_max_tokens=args.step_max_tokens,
        cache=cache,
        progress=not args.quiet,
        config={
            "dataset": {
                "name": dataset,
                "source": str(source),
                "split": "test",
                "limit": n,
                "seed": args.seed,
                "n_problems": len(problems),
            },
            "temperature": args.temperature,
            "benchmark": "benchmarks/real_models.py",
        },
    )
    files = write_report(out)
    metrics = json.loads(files.metrics.read_text())
    hits = None if summary.cache is None else summary.cache.hits
    print(
        f"[{dataset}] ran {summary.ran}, skipped {summary.skipped}, errors {summary.errors}, "
        f"cache hits {hits}, {time.perf_counter() - t0:.0f}s → {files.markdown}"
    )
    return {
        "dataset": dataset,
        "n_problems": metrics["n_problems"],
        "seconds": round(time.perf_counter() - t0, 1),
        "errors": summary.errors,
        "policies": {
            spec: {
                "accuracy": row["accuracy"],
                "strong_tokens": row["strong_tokens"],
                "pgr": row.get("pgr"),
                "normalized_cost": row.get("normalized_cost"),
            }
            for spec, row in metrics["policies"].items()
        },
        "families": {
            name: {
                "cpt": fam["cpt"],
                "apgr": fam["apgr"],
                "delta_ibc_best": fam["delta_ibc_best"],
            }
            for name, fam in metrics["families"].items()
        },
        "notes": metrics["notes"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    plan = policies(args)
    sizes = {d: getattr(args, f"n_{d}") for d in args.datasets}
    print(
        f"policies {' '.join(plan)} · problems {sizes} · weak {args.weak} · strong "
        f"{args.strong} · prm {args.prm} · estimate ~{estimate_seconds(args) / 60:.0f} min"
    )
    if args.dry_run:
        return {"policies": plan, "sizes": sizes, "estimate_seconds": estimate_seconds(args)}
    from langchain_trim.eval.runner import package_versions

    t0 = time.perf_counter()
    setting = build_setting(args)
    datasets = [run_dataset(args, d, setting) for d in args.datasets]
    summary = {
        "description": __doc__,
        "settings": {
            "weak": args.weak,
            "strong": args.strong,
            "prm": args.prm,
            "policies": plan,
            "seed": args.seed,
            "max_steps": args.max_steps,
            "step_max_tokens": args.step_max_tokens,
            "budget": args.budget,
            "temperature": args.temperature,
        },
        "datasets": datasets,
        "versions": package_versions(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "real_models.json"
    if path.is_file():  # keep the datasets this run did not touch
        ran = {d["dataset"] for d in datasets}
        kept = [
            d for d in json.loads(path.read_text()).get("datasets", []) if d["dataset"] not in ran
        ]
        summary["datasets"] = kept + datasets
    path.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}")
    return summary


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
