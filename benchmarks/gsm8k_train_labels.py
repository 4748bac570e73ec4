"""In-domain training data for the probe PRM: the weak model's GSM8K-*train* solutions,
labelled against the reference solutions (:mod:`langchain_trim.lab.weak_labels`).

Why: ProcessBench's hand-labelled splits that may be trained on (math, olympiadbench,
omnimath) are competition maths; its GSM8K split is a test set.  GSM8K's *train* split
(7,473 word problems with annotated intermediate values, disjoint from the test
questions ProcessBench's GSM8K split comes from) gives word-problem step labels without
touching a test label.

Run (two shards in parallel on 2 cores, ≈ 6 s per solution per core; resumable)::

    python -m benchmarks.gsm8k_train_labels generate --start 0 --stop 300 &
    python -m benchmarks.gsm8k_train_labels generate --start 300 --stop 600 &
    wait; python -m benchmarks.gsm8k_train_labels label

``generate`` writes ``runs/gsm8k_train/solutions_<start>_<stop>.jsonl`` (git-ignored: model
outputs on the dataset's questions); ``label`` writes ``runs/gsm8k_train/labelled.json`` in
ProcessBench's format and the label counts to
``benchmarks/results/gsm8k_train_labels.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from benchmarks.shared_data import SHARED_DATA
from langchain_trim.eval.datasets import gsm8k_final_answer
from langchain_trim.lab.weak_labels import weak_first_error
from langchain_trim.local.registry import resolve_model_path

ROOT = Path(__file__).resolve().parents[1]
DATA = SHARED_DATA
OUT = ROOT / "runs" / "gsm8k_train"
RESULTS = ROOT / "benchmarks" / "results"
SYSTEM = (
    "Solve the math problem step by step. Write each step as its own short paragraph, "
    "separated by a blank line. End with the final answer as \\boxed{answer}."
)
TEMPERATURE = 0.7
"""Sampled, not greedy: the probe needs wrong steps as much as right ones."""
MAX_TOKENS = 450
SEED = 1


def questions() -> list[dict[str, Any]]:
    """GSM8K train in a fixed shuffled order (shards are slices of it)."""
    rows = [json.loads(line) for line in (DATA / "gsm8k_train.jsonl").open()]
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    return [{"idx": k, **rows[k]} for k in order]


def generate(start: int, stop: int) -> Path:
    from llama_cpp import Llama
    from tqdm import tqdm

    out = OUT / f"solutions_{start}_{stop}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["idx"] for line in out.open()} if out.exists() else set()
    llm = Llama(str(resolve_model_path("weak")), n_ctx=2048, n_threads=1, verbose=False, seed=SEED)
    with out.open("a") as f:
        for row in tqdm(questions()[start:stop], desc=f"gsm8k train {start}-{stop}"):
            if row["idx"] in done:
                continue
            t = time.perf_counter()
            reply = llm.create_chat_completion(
                messages=[
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": row["question"]},
                ],
                max_tokens=MAX_TOKENS,
                temperature=TEMPERATURE,
                seed=SEED + row["idx"],
            )
            text = reply["choices"][0]["message"]["content"]
            record = {
                "idx": row["idx"],
                "question": row["question"],
                "reference": row["answer"],
                "steps": [p.strip() for p in text.split("\n\n") if p.strip()],
                "tokens": reply["usage"]["completion_tokens"],
                "s": round(time.perf_counter() - t, 2),
            }
            f.write(json.dumps(record) + "\n")
            f.flush()
    return out


def label() -> dict[str, Any]:
    rows = [
        json.loads(line) for path in sorted(OUT.glob("solutions_*.jsonl")) for line in path.open()
    ]
    rows.sort(key=lambda r: r["idx"])
    labelled, counts = [], {"right": 0, "wrong": 0, "unlabelled": 0}
    for r in rows:
        gold = float(gsm8k_final_answer(r["reference"]))
        first = weak_first_error(r["question"], r["steps"], r["reference"], answer=gold)
        if first is None:
            counts["unlabelled"] += 1
            continue
        counts["right" if first < 0 else "wrong"] += 1
        labelled.append(
            {
                "id": f"gsm8ktrain-{r['idx']}",
                "problem": r["question"],
                "steps": r["steps"],
                "label": first,
                "final_answer_correct": first < 0,
            }
        )
    (OUT / "labelled.json").write_text(json.dumps(labelled))
    summary = {
        "description": __doc__,
        "solutions": len(rows),
        "labels": counts,
        "generation": {"system": SYSTEM, "temperature": TEMPERATURE, "max_tokens": MAX_TOKENS},
        "mean_seconds_per_solution": round(sum(r["s"] for r in rows) / max(len(rows), 1), 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gsm8k_train_labels.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate")
    gen.add_argument("--start", type=int, default=0)
    gen.add_argument("--stop", type=int, default=300)
    sub.add_parser("label")
    args = parser.parse_args()
    if args.command == "generate":
        print(generate(args.start, args.stop))
    else:
        print(json.dumps(label()["labels"]))


if __name__ == "__main__":
    main()
