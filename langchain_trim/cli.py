"""The ``trim`` command line: solve questions with TRIM on the embedded CPU models.

Exit codes: 0 success, 1 a model, a PRM or the run failed (a full disk included), 2 bad
input (arguments, policy/calibration files, a busy or damaged run folder), 3 missing
model files (or ones that cannot be assembled).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import math
import sys
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

try:
    import typer
    from rich.console import Console
    from rich.markup import escape
except ImportError:  # pragma: no cover - depends on the environment
    print("the trim CLI needs typer and rich: pip install 'langchain-trim[cli]'", file=sys.stderr)
    raise

from langchain_trim.errors import InvalidInputError, ModelNotFoundError, TrimError
from langchain_trim.events import is_step_event
from langchain_trim.setting import load_models

if TYPE_CHECKING:
    from langchain_trim.eval.runner import EvalSummary

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="TRIM: a cheap model drafts each step, a PRM scores it, a strong model fixes bad ones.",
)
# user and model text is printed through markup.escape (or markup=False): a question with
# "[/x]" must not crash the command, and ":smile:" must not turn into an emoji
console = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NO_MODEL = 1, 2, 3


@contextlib.contextmanager
def _exit_codes() -> Iterator[None]:
    """Turn typed errors into the documented exit codes with a one-line message."""
    try:
        yield
    except InvalidInputError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    except ModelNotFoundError as exc:
        err.print(f"[red]missing model:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_NO_MODEL) from exc
    except (TrimError, ValueError) as exc:
        err.print(f"[red]failed:[/] {type(exc).__name__}: {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from exc


DevRunFolder = Annotated[
    Path, typer.Argument(help="Dev run folder written by trim eval (weak, strong and thr:k runs).")
]
"""The dev traces that ``fit`` and ``calibrate`` learn from."""


@dataclass(frozen=True)
class _Models:
    """The models a command runs: options ``solve`` and ``eval`` share."""

    weak: Annotated[str, typer.Option(help="Weak model: embedded name or .gguf path.")] = "weak"
    strong: Annotated[str, typer.Option(help="Strong model: embedded name or .gguf path.")] = (
        "strong"
    )
    prm: Annotated[
        str,
        typer.Option(
            help="PRM: probe, judge, confidence, arithmetic, none, vllm:<model>@<url>; "
            "with --prm-url the served model."
        ),
    ] = "probe"
    weak_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible URL serving --weak (vLLM).")
    ] = None
    strong_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible URL serving --strong (vLLM).")
    ] = None
    prm_url: Annotated[
        str | None, typer.Option(help="vLLM server URL whose /pooling serves --prm.")
    ] = None


@dataclass(frozen=True)
class _Steps:
    """How the models write steps: options ``solve`` and ``eval`` share."""

    max_steps: Annotated[int, typer.Option(help="Step limit.")] = 30
    step_max_tokens: Annotated[int, typer.Option(help="Token cap per step.")] = 256
    temperature: Annotated[
        float,
        typer.Option(
            help="Sampling temperature of both models (0: greedy, reproducible; release: 0.7)."
        ),
    ] = 0.0
    step_format: Annotated[
        str | None,
        typer.Option(
            "--step-format",
            help="How models are asked for steps: paragraphs (embedded default), lines, "
            "short-steps or release.",
        ),
    ] = None
    strong_step_format: Annotated[
        str | None,
        typer.Option(
            "--strong-step-format",
            help="The strong model's step format, if different (default: lines for the "
            "embedded strong model drafting behind paragraphs, else the same).",
        ),
    ] = None


def _option_groups(command: Callable[..., None]) -> Callable[..., None]:
    """Let ``command`` take option groups (:class:`_Models`, :class:`_Steps`).

    A parameter typed with a group stands for the group's fields: they are the command's
    options in that place, defined once for every command that shares them, and the
    command is called with the group built from them.
    """
    hints = typing.get_type_hints(command)
    groups: dict[str, type[Any]] = {
        name: hint for name, hint in hints.items() if hint in (_Models, _Steps)
    }
    params: list[inspect.Parameter] = []
    for param in inspect.signature(command).parameters.values():
        group = groups.get(param.name)
        if group is None:
            params.append(param.replace(annotation=hints.get(param.name, param.annotation)))
            continue
        # this module's names: run as ``__main__``, the class's module may be another one
        fields = typing.get_type_hints(group, globals(), include_extras=True)
        params += [
            inspect.Parameter(f.name, param.kind, default=f.default, annotation=fields[f.name])
            for f in dataclasses.fields(group)
        ]

    @functools.wraps(command)
    def run(**options: Any) -> None:
        for name, group in groups.items():
            fields = [f.name for f in dataclasses.fields(group)]
            options[name] = group(**{field: options.pop(field) for field in fields})
        command(**options)

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__annotations__ = {}  # the signature's, resolved above
    return run


def _read_problems(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """The rows of a JSONL file as problems, and one error line per unusable row.

    A row's question is its first non-empty ``question`` or ``problem``; a bad row does
    not stop the others (the caller reports it and exits non-zero at the end).
    """
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path} cannot be read: {exc}") from exc
    problems: list[dict[str, Any]] = []
    errors: list[tuple[int, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append((n, f"{path}:{n}: not JSON: {exc.msg}"))
            continue
        if not isinstance(row, dict):
            errors.append((n, f"{path}:{n}: not a JSON object"))
            continue
        question = next(
            (
                row[key]
                for key in ("question", "problem")
                if isinstance(row.get(key), str) and row[key].strip()
            ),
            None,
        )
        if question is None:
            errors.append((n, f"{path}:{n}: needs a non-empty 'question' or 'problem'"))
            continue
        problem_id = row.get("id", row.get("unique_id", n))
        problems.append({**row, "id": problem_id, "question": question, "line": n})
    if not problems and not errors:
        raise InvalidInputError(f"{path} holds no problems")
    return problems, errors


def _check_temperature(temperature: float) -> None:
    if not math.isfinite(temperature) or temperature < 0:
        raise InvalidInputError(f"--temperature must be a finite number >= 0, got {temperature}")


def _grade(prediction: str | None, gold: str) -> bool:
    if prediction is None:
        return False
    from langchain_trim.eval.grading import is_equivalent

    return bool(is_equivalent(prediction, gold))


def _policy(name: str, threshold: float | None, prm: Any) -> Any:
    """``thr`` takes ``--threshold`` (default: the probe's trained threshold, else 0.5);
    any other registered spec (``weak``, ``strong``, ``agg``, ``pomdp:8e-4``, ...) as is."""
    from langchain_trim.policies import ThresholdPolicy
    from langchain_trim.policies.registry import make_policy

    if name in ("thr", "threshold"):
        if threshold is None:
            threshold = getattr(prm, "threshold", None) or 0.5
        return ThresholdPolicy(threshold)
    return make_policy(name)


def _setting(
    weak: tuple[str, str | None],
    strong: tuple[str, str | None],
    prm: tuple[str, str | None],
    temperature: float,
    step_format: str | None = None,
    strong_step_format: str | None = None,
) -> Any:
    """Local models by default; a ``*_url`` swaps that role for a served model."""
    from langchain_trim.local.setting import (
        EMBEDDED_STEP_FORMAT,
        LocalSetting,
        embedded_strong_step_format,
        local_setting,
    )
    from langchain_trim.prm.registry import check_prm_spec, make_prm, served_prm_spec
    from langchain_trim.remote import openai_compatible

    def chat(spec: tuple[str, str | None], local: Any) -> Any:
        name, url = spec
        return openai_compatible(name, url, temperature=temperature) if url else local

    prm_name, prm_url = prm
    prm_spec = prm_name if prm_url is None else served_prm_spec(prm_name, prm_url)
    try:
        check_prm_spec(prm_spec)  # before any model loads
    except InvalidInputError as exc:
        raise InvalidInputError(f"--prm: {exc} (or a served model name with --prm-url)") from exc
    local = None
    if weak[1] is None or strong[1] is None:
        local = local_setting(weak=weak[0], strong=strong[0], prm="none", temperature=temperature)
    weak_model = chat(weak, local.weak if local else None)
    strong_model = chat(strong, local.strong if local else None)
    scorer = make_prm(prm_spec, strong=strong_model)
    from langchain_trim.step_format import get_step_format

    if step_format is None:
        step_format = EMBEDDED_STEP_FORMAT
    if strong[1] is None:  # the embedded strong model: the pair's format chosen on dev
        strong_step_format = embedded_strong_step_format(strong[0], step_format, strong_step_format)
    get_step_format(step_format)  # an unknown name fails before any model loads
    if strong_step_format is not None:
        get_step_format(strong_step_format)
    return LocalSetting(
        weak=weak_model,
        strong=strong_model,
        prm=scorer,
        step_format=step_format,
        strong_step_format=strong_step_format,
    )


def _setting_of(models: _Models, steps: _Steps) -> Any:
    """:func:`_setting` from the shared options."""
    return _setting(
        (models.weak, models.weak_url),
        (models.strong, models.strong_url),
        (models.prm, models.prm_url),
        steps.temperature,
        steps.step_format,
        steps.strong_step_format,
    )


def _show_step(event: dict[str, Any], quiet: bool) -> None:
    if not is_step_event(event) or quiet:
        return
    score = "  -  " if event["score"] is None else f"{event['score']:.3f}"
    author = "[bold red]strong[/]" if event["author"] == "strong" else "[green]weak[/]  "
    note = " [yellow](budget blocked)[/]" if event["budget_blocked"] else ""
    fallback = event.get("fallback")
    if fallback:
        note += f" [yellow]({escape(fallback[:60])})[/]"
    budget = "∞" if event["budget"] is None else str(event["budget"])
    console.print(
        f"[dim]step {event['index'] + 1:>2}[/] {author} score {score} → {event['decision']:<8}"
        f" strong {event['strong_tokens']}/{budget}{note}"
    )
    text = event["text"]
    console.print("   " + text.replace("\n", "\n   "), markup=False)


@app.command()
@_option_groups
def solve(
    question: str = typer.Argument(None, help="The question (omit with --file)."),
    file: Path = typer.Option(
        None, "--file", "-f", help="JSONL with 'question'/'problem' per line."
    ),
    policy: list[str] = typer.Option(
        ["thr"],
        help="thr (TRIM-Thr), weak, strong, agg, seq, pomdp[:lambda], random:p, weakscored, "
        "fit:<file> (one; `trim eval -p` compares several).",
    ),
    threshold: float = typer.Option(
        None, "--threshold", "-k", help="TRIM-Thr threshold in [0, 1] (default: the PRM's)."
    ),
    budget: int = typer.Option(None, help="Max strong-model output tokens per question."),
    models: _Models = _Models(),
    steps: _Steps = _Steps(),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON result per question."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the final lines."),
) -> None:
    """Solve with TRIM and show each step, who wrote it, its score, and the spend."""
    with _exit_codes():
        if (question is None) == (file is None):
            raise InvalidInputError("give a question or --file, not both")
        if len(policy) != 1:
            raise InvalidInputError(
                f"--policy given {len(policy)} times ({', '.join(policy)}); trim solve runs one "
                "policy, trim eval -p compares several"
            )
        _check_temperature(steps.temperature)
        bad_rows: list[tuple[int, str]] = []
        if file is not None:
            problems, bad_rows = _read_problems(file)
        else:
            problems = [{"id": 1, "question": question}]
        for n, message in bad_rows:
            _row_error(message, as_json, line=n)
        if not problems:
            raise InvalidInputError(f"{file} holds no usable problem ({len(bad_rows)} bad rows)")
        failed = _run(problems, policy[0], threshold, budget, models, steps, as_json, quiet)
        if bad_rows or failed:
            err.print(
                f"[red]{len(bad_rows)} bad rows, {failed} problems failed[/] "
                f"of {len(problems) + len(bad_rows)}"
            )
            raise typer.Exit(EXIT_BAD_INPUT if bad_rows else EXIT_FAILED)


def _row_error(message: str, as_json: bool, *, line: int, problem_id: Any = None) -> None:
    """One line on stderr; with --json also a JSON record, so every row gets an answer."""
    err.print(f"[red]error:[/] {escape(message)}")
    if as_json:
        print(json.dumps({"id": problem_id, "line": line, "error": message}))


def _run(
    problems: list[dict[str, Any]],
    policy: str,
    threshold: float | None,
    budget: int | None,
    models: _Models,
    steps: _Steps,
    as_json: bool,
    quiet: bool,
) -> int:
    """Solve each problem; a failing problem is reported and skipped.  Returns the failures."""
    from langchain_trim.functional import TrimResult
    from langchain_trim.graph import create_trim_graph
    from langchain_trim.models import model_display_name

    try:  # validate before any model is built
        chosen = _policy(policy, 0.5 if threshold is None else threshold, None)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(str(exc)) from exc
    setting = _setting_of(models, steps)
    if threshold is None and policy in ("thr", "threshold"):
        chosen = _policy(policy, None, setting.prm)
    t0 = time.perf_counter()
    load_models(setting)
    if not as_json:
        names = (
            f"weak {model_display_name(setting.weak)} · "
            f"strong {model_display_name(setting.strong)} · "
            f"prm {getattr(setting.prm, 'name', 'none')} · policy {chosen.name}"
        )
        console.print(f"[dim]{escape(names)} · loaded in {time.perf_counter() - t0:.1f}s[/]")
    graph = create_trim_graph(
        setting.weak,
        setting.strong,
        setting.prm,
        chosen,
        budget=budget,
        max_steps=steps.max_steps,
        step_max_tokens=steps.step_max_tokens,
        step_format=setting.step_format,
        strong_step_format=setting.strong_step_format,
    ).compile(name="trim")
    failed = 0
    for problem in problems:
        start = time.perf_counter()
        final: dict[str, Any] = {}
        if not as_json and len(problems) > 1:
            console.rule(f"problem {escape(str(problem['id']))}")
        if not as_json:
            console.print(f"[bold]Q:[/] {escape(problem['question'])}")
        stream: Any = graph.stream(
            {"question": problem["question"], "trim_budget": budget},
            stream_mode=["custom", "values"],
        )
        try:
            for mode, chunk in stream:
                if mode == "custom":
                    if not as_json:
                        _show_step(chunk, quiet)
                else:
                    final = chunk
        except (TrimError, ValueError) as exc:
            if "line" not in problem:
                raise  # a question argument: the usual one-line error and exit code
            failed += 1
            message = f"line {problem['line']} (id {problem['id']}): {type(exc).__name__}: {exc}"
            _row_error(message, as_json, line=problem["line"], problem_id=problem["id"])
            continue
        result = TrimResult.from_state(final)
        elapsed = time.perf_counter() - start
        spend = result.spend
        record = {
            "id": problem["id"],
            "final_answer": result.final_answer,
            "termination": result.termination,
            "steps": len(result.steps),
            "escalated_steps": result.escalated_steps,
            "spend": dict(spend),
            "seconds": round(elapsed, 2),
        }
        if "answer" in problem:
            record["gold"] = problem["answer"]
            record["correct"] = _grade(result.final_answer, str(problem["answer"]))
        if as_json:
            print(json.dumps(record))
            continue
        est = "~" if spend["strong_tokens_estimated"] else ""
        verdict = ""
        if "correct" in record:
            verdict = (
                " [green]✓[/]"
                if record["correct"]
                else f" [red]✗ (gold {escape(str(problem['answer']))})[/]"
            )
        console.print(
            f"[bold]answer:[/] {escape(str(result.final_answer))}{verdict}  "
            f"[dim]({result.termination})[/]"
        )
        console.print(
            f"[dim]cost:[/] strong tokens {est}{spend['strong_tokens']}"
            f"{'' if budget is None else f'/{budget}'} · escalated {result.escalated_steps}/"
            f"{len(result.steps)} steps · weak tokens {spend['weak_tokens']} (discarded "
            f"{spend['discarded_draft_tokens']}) · PRM calls {spend['prm_calls']} · {elapsed:.1f}s"
        )
    return failed


@app.command()
def models() -> None:
    """List the embedded models and whether they are installed."""
    from langchain_trim.local.registry import EMBEDDED_MODELS, resolve_model_path

    for model in EMBEDDED_MODELS.values():
        try:
            where = str(resolve_model_path(model.name))
        except ModelNotFoundError as exc:
            where = f"[red]missing[/] — {escape(str(exc))}"
        else:
            where = escape(where)
        about = f"({', '.join(model.aliases)}): {model.description}"
        console.print(f"[bold]{escape(model.name)}[/] {escape(about)}")
        console.print(f"    {where}")


# -- evaluation --------------------------------------------------------------------------------
def _eval_problems(
    dataset: str, data: Path | None, split: str | None, limit: int | None, seed: int | None
) -> tuple[list[Any], str]:
    from langchain_trim.eval.datasets import DATASETS, DatasetLoadError, load_problems
    from langchain_trim.eval.runner import DEFAULT_DATA_FILES, default_data_path

    if dataset not in DATASETS:
        raise InvalidInputError(
            f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASETS))}"
        )
    if limit is not None and limit < 1:
        raise InvalidInputError(f"--limit must be >= 1, got {limit}")
    source: Path | str | None = data if data is not None else default_data_path(dataset)
    try:
        problems = load_problems(dataset, source, split=split, limit=limit, seed=seed)
    except (DatasetLoadError, ValueError) as exc:
        if source is None:  # neither --data nor a copy in $TRIM_SHARED_DATA: the Hub failed
            local = DEFAULT_DATA_FILES.get(dataset, f"{dataset}.jsonl")
            raise InvalidInputError(
                f"no local {dataset} data: pass --data PATH or set TRIM_SHARED_DATA to a folder "
                f"holding {local} ({exc})"
            ) from exc
        raise InvalidInputError(str(exc)) from exc
    if not problems:
        raise InvalidInputError(f"dataset {dataset} ({source}) holds no problems")
    return problems, str(source if source is not None else DATASETS[dataset].hf_path)


@app.command("eval")
@_option_groups
def eval_command(
    dataset: str = typer.Option(
        "gsm8k", help="gsm8k, math500, aime24, aime, olympiadbench or minerva."
    ),
    data: Path = typer.Option(
        None,
        "--data",
        help="Local .jsonl/.json (default: the copy in $TRIM_SHARED_DATA, else the Hub).",
    ),
    split: str = typer.Option(None, help="Dataset split (aime: the official train/test)."),
    limit: int = typer.Option(None, "--limit", "-n", help="Evaluate at most N problems."),
    seed: int = typer.Option(None, help="Draw a seeded subset of --limit problems (else first N)."),
    policies: list[str] = typer.Option(
        ["thr:0.1,0.3,0.5 weak strong weakscored"],
        "--policies",
        "-p",
        help="Policy specs (repeatable); 'thr:0.1,0.3' expands to thr:0.1 thr:0.3. Also random:p.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (re-running resumes it)."),
    models: _Models = _Models(),
    concurrency: int = typer.Option(1, help="Problems in flight at once."),
    budget: int = typer.Option(None, help="Max strong-model output tokens per question."),
    steps: _Steps = _Steps(),
    cache: bool = typer.Option(
        True, "--cache/--no-cache", help="Re-use identical model calls (OUT/cache.sqlite)."
    ),
    fake: bool = typer.Option(False, "--fake", help="Scripted fake models (seconds, no weights)."),
    retry_errors: bool = typer.Option(False, help="Re-run problems that failed before."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Run policies over a benchmark; one resumable JSONL trace per problem per policy."""
    with _exit_codes():
        from langchain_trim.eval.runner import load_traces, run_eval
        from langchain_trim.policies import baselines as _baselines  # noqa: F401
        from langchain_trim.policies.registry import expand_specs

        specs = expand_specs(" ".join(policies))
        _check_eval_options(specs, concurrency, budget)
        _check_temperature(steps.temperature)
        problems, source = _eval_problems(dataset, data, split, limit, seed)
        if fake:
            from langchain_trim.eval.fake import fake_setting

            setting: Any = fake_setting({p.question: p.answer for p in problems})
        else:
            setting = _setting_of(models, steps)
            load_models(setting)
        config = {
            "dataset": {
                "name": dataset,
                "source": source,
                "split": split,
                "limit": limit,
                "seed": seed,
                "n_problems": len(problems),
            },
            "temperature": None if fake else steps.temperature,
            "fake": fake,
        }
        if not quiet:
            plan = f"{len(problems)} {dataset} problems × {len(specs)} policies → {out}"
            err.print(f"[dim]{escape(plan)}[/]")
        summary = run_eval(
            problems,
            specs,
            out_dir=out,
            setting=setting,
            concurrency=concurrency,
            budget=budget,
            max_steps=steps.max_steps,
            step_max_tokens=steps.step_max_tokens,
            cache=out / "cache.sqlite" if cache else None,
            retry_errors=retry_errors,
            progress=not quiet,
            config=config,
        )
        traces = load_traces(out, policies=specs)
    _print_eval_summary(summary, traces, out)
    if summary.errors:
        raise typer.Exit(EXIT_FAILED)


def _check_eval_options(specs: list[str], concurrency: int, budget: int | None) -> None:
    """Refuse a run that would fail late: no or unknown policies, a bad budget."""
    from langchain_trim.policies.registry import make_policy

    if not specs:
        raise InvalidInputError("--policies is empty")
    for spec in specs:
        make_policy(spec)
    if concurrency < 1:
        raise InvalidInputError(f"--concurrency must be >= 1, got {concurrency}")
    if budget is not None and budget < 1:
        raise InvalidInputError(f"--budget must be positive, got {budget}")


def _print_eval_summary(
    summary: EvalSummary, traces: dict[str, list[dict[str, Any]]], out: Path
) -> None:
    """What ran, each policy's accuracy and cost so far, warnings and failed problems."""
    hits = ""
    if summary.cache is not None:
        hits = f" · cache {summary.cache.hits} hits / {summary.cache.misses} misses"
    console.print(
        f"ran {summary.ran}, skipped {summary.skipped} (done before), errors {summary.errors}"
        f" · {summary.seconds:.1f}s{hits}"
    )
    for spec, runs in traces.items():
        n = len(runs)
        acc = sum(t["correct"] for t in runs) / n
        tokens = sum(t["spend"].get("strong_tokens", 0) for t in runs) / n
        line = f"  {spec:<14} n={n:<4} accuracy {acc:6.1%}  strong tokens/q {tokens:8.1f}"
        console.print(line, markup=False)
    console.print(f"[dim]next: trim report {escape(str(out))}[/]")
    for warning in summary.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    if summary.errors:
        for line in summary.failed[:10]:
            err.print(f"[red]error:[/] {escape(line)}")
        more = f", {len(summary.failed) - 10} more" if len(summary.failed) > 10 else ""
        err.print(f"[red]{summary.errors} problems failed[/] (see 'error' in their traces{more})")


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder written by trim eval."),
    problem: str = typer.Option(None, help="Problem id for the step timeline figure."),
    policy: str = typer.Option(None, help="Policy spec for the timeline (default: middle thr)."),
    baselines: bool = typer.Option(
        True, "--baselines/--no-baselines", help="Post-hoc query-level routers."
    ),
) -> None:
    """Metrics (CPT, ΔIBC, APGR, PGR), report.md and curves/timeline figures of a run."""
    from langchain_trim.eval.report import write_report

    try:
        if not run.is_dir():
            raise InvalidInputError(f"{run} is not a folder")
        files = write_report(run, problem=problem, policy=policy, baselines=baselines)
    except (InvalidInputError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_BAD_INPUT) from exc
    except (TrimError, ValueError) as exc:
        err.print(f"[red]failed:[/] {type(exc).__name__}: {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from exc
    metrics = json.loads(files.metrics.read_text())
    for name, fam in metrics["families"].items():
        cpt = fam["cpt"].get("95")
        best = fam["delta_ibc_best"]
        console.print(
            f"  {name:<28} CPT(95%) {'—' if cpt is None else f'{cpt:.1%}':>7}  "
            f"ΔIBC best {'—' if best is None else f'{best:.2f}':>6}",
            markup=False,
        )
    for spec, row in metrics.get("simulated_vs_real", {}).items():
        lo, hi = row["accuracy_ci"]
        console.print(
            f"  {spec}: simulated {row['simulated_accuracy']:.1%} @ "
            f"{row['simulated_strong_tokens']:.0f}, here {row['accuracy']:.1%} "
            f"[{lo:.1%}, {hi:.1%}] @ {row['strong_tokens']:.0f}"
            + ("" if row["inside"] else "  (outside: see the note)"),
            markup=False,
        )
    for note in metrics["notes"]:
        console.print(f"[dim]note: {escape(note)}[/]")
    wrote = f"wrote {files.markdown}, {files.metrics}, {len(files.figures)} figures"
    console.print(wrote, markup=False)


@app.command()
def fit(
    run: DevRunFolder,
    out: Annotated[Path, typer.Option("--out", "-o", help="Policy file to write (JSON).")],
    max_share: Annotated[
        float | None,
        typer.Option(
            help="Pick the most accurate threshold within this share of strong's tokens "
            "(default: the best ΔIBC)."
        ),
    ] = None,
) -> None:
    """Choose TRIM-Thr's threshold on your dev traces; write it with its expected curve."""
    with _exit_codes():
        from langchain_trim.eval.fit import fit_threshold, write_policy_file
        from langchain_trim.eval.runner import load_traces

        if not run.is_dir():
            raise InvalidInputError(f"{run} is not a folder")
        result = fit_threshold(
            load_traces(run, include_errors=False),
            criterion="delta_ibc" if max_share is None else "max_share",
            max_share=max_share,
            source=str(run),
        )
        write_policy_file(result, out)
    c = result.chosen
    share = "—" if c.normalized_cost is None else f"{c.normalized_cost:.0%}"
    console.print(
        f"{c.policy}: accuracy {c.accuracy:.1%} at {c.strong_tokens:.0f} strong tokens/question "
        f"({share} of always-strong's; weak {result.weak.accuracy:.1%}, strong "
        f"{result.strong.accuracy:.1%}) on {result.n_problems} dev problems",
        markup=False,
    )
    console.print(f"wrote {out}; use it with --policy fit:{out}", markup=False)


@app.command()
def calibrate(
    run: DevRunFolder,
    out: Annotated[Path, typer.Option("--out", "-o", help="Calibration file to write (JSON).")],
    question_difficulty: Annotated[
        bool,
        typer.Option(
            "--question-difficulty",
            help="Fit a per-question difficulty shared by both models (needs weak and strong "
            "runs of the same questions).",
        ),
    ] = False,
    final_step: Annotated[
        bool,
        typer.Option(
            "--final-step",
            help="With --question-difficulty: the step that ends a solution gets an accuracy "
            "and a length of its own.",
        ),
    ] = False,
    length_score: Annotated[
        bool,
        typer.Option(
            "--length-score",
            help="Fit the link between a draft's length and how low it scores "
            "(length_score_corr; longer drafts and their rewrites score lower).",
        ),
    ] = False,
) -> None:
    """Fit the simulator to your dev traces; train on it with --env sim:<file>."""
    try:  # the simulator fit and its dependencies load only here
        from langchain_trim.lab.sim import fit_calibration
    except ImportError as exc:
        hint = f"{exc}; pip install 'langchain-trim[train]'"
        err.print(f"[red]missing dependency:[/] {escape(hint)}")
        raise typer.Exit(EXIT_FAILED) from exc
    with _exit_codes():
        from langchain_trim.eval.runner import load_traces

        if not run.is_dir():
            raise InvalidInputError(f"{run} is not a folder")
        traces = [t for ts in load_traces(run, include_errors=False).values() for t in ts]
        try:
            cal = fit_calibration(
                traces,
                source=f"dev traces of {run}",
                question_difficulty=question_difficulty,
                final_step=final_step,
                length_score=length_score,
            )
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        cal.save(out)
    console.print(
        f"wrote {out} from {len(traces)} traces; next: trim train agg --env sim:{out}",
        markup=False,
    )


@app.command()
def train(
    policy: str = typer.Argument(..., help="agg (TRIM-Agg) or seq (TRIM-Seq)"),
    lam: float = typer.Option(8e-4, "--lam", "--lambda", help="price of one strong token"),
    env: str = typer.Option(
        "sim:official",
        help="sim:official, sim:official-raw, sim:<calibration.json> or replay:<traces.jsonl>",
    ),
    out: Path = typer.Option(
        None, help="output .safetensors (default: <policy>_<lam>.safetensors)"
    ),
    seed: int = typer.Option(0, help="seed of the network, sampling and episodes"),
    epochs: int = typer.Option(10, help="passes of --train-questions questions"),
    train_questions: int = typer.Option(2048, help="questions per pass"),
    val_questions: int = typer.Option(2000, help="validation questions"),
    patience: int = typer.Option(
        16, help="stop after this many validations without gain (0: never)"
    ),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Train TRIM-Agg or TRIM-Seq with PPO and save safetensors weights + a JSON sidecar."""
    if policy not in ("agg", "seq"):
        raise typer.BadParameter(f"policy must be 'agg' or 'seq', got {policy!r}")
    try:  # the training code and its dependencies load only here
        from langchain_trim.lab.train import train_policy
    except ImportError as exc:
        hint = f"{exc}; pip install 'langchain-trim[train]'"
        err.print(f"[red]missing dependency:[/] {escape(hint)}")
        raise typer.Exit(EXIT_FAILED) from exc
    target = out or Path(f"{policy}_{lam:g}.safetensors")
    with _exit_codes():
        result = train_policy(
            policy,  # type: ignore[arg-type]
            lam=lam,
            env=env,
            out=target,
            seed=seed,
            epochs=epochs,
            train_questions=train_questions,
            val_questions=val_questions,
            progress=progress,
            patience=patience or None,
        )
    best = result.best
    console.print(
        f"{policy} λ={lam:g}: validation accuracy {best.accuracy:.3f}, "
        f"{best.mean_strong_tokens:.1f} strong tokens/question, objective {best.objective:.4f} "
        f"(batch {best.batch}/{result.batches}, {result.seconds:.0f} s) -> {target}",
        markup=False,
    )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
