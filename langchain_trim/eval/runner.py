"""Run policies over a benchmark and keep one JSONL trace per problem per policy.

A real sweep takes hours on a CPU, so the runner is built to be interrupted: every
(policy, problem) pair is written to its own file, atomically (temporary file, then
rename), as soon as it finishes, and a re-run skips every pair whose file is complete.
Killing it loses at most the problems in flight.

One run writes a folder at a time: a run holds ``.trim-eval.lock`` (see
:mod:`langchain_trim._filelock`) and a second one raises
:class:`~langchain_trim.errors.RunLockedError`.  A problem that fails is recorded in its
trace and the run goes on; a failure of the run's own machinery (the cache, the disk, the
lock) is never recorded as the model's: it stops the run as
:class:`~langchain_trim.errors.EvalStorageError`.

Layout of ``out_dir``::

    config.json                             dataset, models, PRM, policies, versions
    cache.sqlite                            the LLM cache (when the caller asks for one)
    traces/<policy, ':' → '_'>/<problem id>.jsonl

Each trace file holds one line per accepted step (``{"type": "step", ...}``: every
:class:`~langchain_trim.state.StepRecord` field, plus ``draft_text``/``strong_text``,
``t_end`` = seconds from the start of the problem to the step's commit, and
``seconds`` = time since the previous step), then one ``{"type": "result", ...}`` line:
final answer, gold, ``correct`` (:func:`~langchain_trim.eval.grading.is_equivalent`),
termination, spend, seconds, and ``error`` (``None``, or why the problem failed).
:func:`load_traces` turns the files back into the simulator's trace format, ready for
:func:`langchain_trim.lab.sim.fit_calibration`, policy training and the post-hoc baselines.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from langchain_core.caches import BaseCache

from langchain_trim._filelock import LockHeld, exclusive_lock
from langchain_trim.errors import (
    CacheCorruptError,
    EvalStorageError,
    InvalidInputError,
    RunLockedError,
    TrimError,
)
from langchain_trim.eval.cache import CacheStats, SQLiteLLMCache, llm_cache
from langchain_trim.eval.datasets import Problem
from langchain_trim.events import is_step_event
from langchain_trim.paths import shared_data_dir
from langchain_trim.policies.base import RouteObservation, RoutingPolicy
from langchain_trim.setting import Setting, step_formats

TRACE_VERSION = 1
TRACES_DIR = "traces"
CONFIG_FILE = "config.json"

GraphFactory = Callable[[RoutingPolicy], Any]
"""``make_graph(policy) -> compiled graph`` (anything with ``astream``)."""

OnError = Literal["record", "raise"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_DATA_FILES: dict[str, str] = {
    "gsm8k": "gsm8k_test.jsonl",
    "math500": "math500.jsonl",
    "aime24": "aime24.jsonl",
    "aime": "aime_1983_2024_test.jsonl",
}
"""File of each dataset in ``$TRIM_SHARED_DATA`` (see :func:`default_data_path`)."""

_SETTING_KEYS = ("dataset", "models", "prm", "budget", "max_steps", "step_max_tokens")
"""config.json keys that must match for a re-run to add to an existing ``out_dir``."""
_SUBSET_KEYS = frozenset({"limit", "seed", "n_problems"})


def default_data_path(dataset: str) -> Path | None:
    """The copy of ``dataset`` in ``$TRIM_SHARED_DATA`` when it is set and holds one, else
    ``None`` (load from the Hub).  No other folder is looked at.

    >>> default_data_path("no-such-dataset") is None
    True
    """
    name = DEFAULT_DATA_FILES.get(dataset)
    folder = shared_data_dir()
    if name is None or folder is None:
        return None
    path = folder / name
    return path if path.is_file() else None


# -- names on disk ----------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_MAX_NAME = 100
"""Longest kept part of a name on disk (file systems allow 255 bytes; temp files add more)."""


def _safe(name: str) -> str:
    safe = _UNSAFE.sub("_", name).lstrip(".") or "_"
    if safe != name:  # keep distinct names distinct after the substitution
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()
        if len(safe) > _MAX_NAME:  # a very long id: cut it, keep a longer hash
            return safe[:_MAX_NAME] + "-" + digest[:16]
        safe += "-" + digest[:8]
    elif len(safe) > _MAX_NAME:
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()
        return safe[:_MAX_NAME] + "-" + digest[:16]
    return safe


def policy_dirname(spec: str) -> str:
    """Folder of a policy's traces: ``':'`` becomes ``'_'``.

    >>> policy_dirname("thr:0.3"), policy_dirname("weak")
    ('thr_0.3', 'weak')
    """
    return _safe(spec.strip().replace(":", "_"))


def problem_filename(problem_id: str) -> str:
    """File name of a problem's trace; ids with ``/`` etc. get a hash suffix.

    >>> problem_filename("gsm8k-3")
    'gsm8k-3.jsonl'
    >>> problem_filename("test/algebra/1.json")  # doctest: +ELLIPSIS
    'test_algebra_1.json-....jsonl'
    """
    return _safe(str(problem_id)) + ".jsonl"


def trace_path(out_dir: str | Path, spec: str, problem_id: str) -> Path:
    """Where the trace of ``(spec, problem_id)`` lives."""
    return Path(out_dir) / TRACES_DIR / policy_dirname(spec) / problem_filename(problem_id)


# -- files ------------------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read_trace_file(path: str | Path) -> dict[str, Any] | None:
    """``{"steps": [...], "result": {...}}`` of one file, or ``None`` if it is incomplete."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not rows or not isinstance(rows[-1], dict) or rows[-1].get("type") != "result":
        return None
    return {"steps": [r for r in rows[:-1] if r.get("type") == "step"], "result": rows[-1]}


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _dumps(row: Mapping[str, Any], **kwargs: Any) -> str:
    """One JSON line, UTF-8 as is; a row holding a lone surrogate (which UTF-8 cannot
    encode) is written with ``\\u`` escapes instead, which read back to the same text."""
    text = json.dumps(row, ensure_ascii=False, default=_json_default, **kwargs)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(row, ensure_ascii=True, default=_json_default, **kwargs)
    return text


def _printable(text: object) -> str:
    """``text`` safe to print on any terminal (lone surrogates escaped)."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


# -- config -----------------------------------------------------------------------------------
def package_versions() -> dict[str, str | None]:
    """Versions of the packages whose behaviour shapes the results."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in (
        "langchain-trim",
        "langchain-core",
        "langgraph",
        "llama-cpp-python",
        "math-verify",
        "torch",
        "transformers",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    out["platform"] = platform.platform()
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _fingerprint(value: Any) -> Any:
    """What must match between runs sharing a folder (a dataset may grow or be resampled)."""
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k not in _SUBSET_KEYS}
    return value


def _write_config(out_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    path = out_dir / CONFIG_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = {}
        clashes = [
            k
            for k in _SETTING_KEYS
            if k in old and k in config and _fingerprint(old[k]) != _fingerprint(config[k])
        ]
        if clashes:
            raise InvalidInputError(
                f"{out_dir} holds a run with a different {', '.join(clashes)} "
                f"(was {[old[k] for k in clashes]!r}); use another output folder"
            )
        config = {
            **old,
            **config,
            "policies": list(dict.fromkeys([*old.get("policies", []), *config["policies"]])),
            "problem_ids": list(
                dict.fromkeys([*old.get("problem_ids", []), *config.get("problem_ids", [])])
            ),
            "created_at": old.get("created_at", config["created_at"]),
        }
    write_atomic(path, _dumps(config, indent=1))
    return config


def read_config(out_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a run (``{}`` when absent)."""
    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


# -- running ----------------------------------------------------------------------------------
@dataclass
class EvalSummary:
    """What one :func:`run_eval` call did."""

    out_dir: Path
    ran: int = 0
    """(policy, problem) pairs solved in this call."""
    skipped: int = 0
    """Pairs whose complete trace was already on disk."""
    errors: int = 0
    """Pairs that failed and were recorded with ``error`` set."""
    seconds: float = 0.0
    cache: CacheStats | None = None
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Result lines written in this call, by policy spec."""
    failed: list[str] = field(default_factory=list)
    """One line per recorded error: ``<policy> <problem id>: <error>``."""
    warnings: list[str] = field(default_factory=list)
    """What went wrong around the models and was worked around (a damaged cache)."""


def _step_line(
    spec: str, problem_id: str, step: Mapping[str, Any], t_end: float | None, prev: float
) -> dict[str, Any]:
    escalated = step.get("author") == "strong"
    row: dict[str, Any] = {"type": "step", "policy": spec, "problem_id": problem_id}
    row.update(step)
    row["draft_text"] = step.get("draft") if escalated else step.get("text")
    row["strong_text"] = step.get("text") if escalated else None
    row["t_end"] = None if t_end is None else round(t_end, 4)
    row["seconds"] = None if t_end is None else round(t_end - prev, 4)
    return row


def graded_answer(final_answer: str | None, solution: str) -> tuple[str | None, str]:
    """The answer that is graded: the last ``\\boxed{}``, else the solution's last number.

    Small models often stop after a correct computation without boxing it; GSM8K-style
    grading takes the last number then (``answer_source`` records which rule applied).

    >>> graded_answer(None, "So she sold 48 + 24 = 72 clips")
    ('72', 'last_number')
    """
    if final_answer is not None:
        return final_answer, "boxed"
    from langchain_trim.eval.grading import extract_answer

    return extract_answer(solution), "last_number"


def _grade(answer: str | None, gold: str) -> bool:
    from langchain_trim.eval.grading import is_equivalent

    return bool(is_equivalent(answer, gold))


async def solve_problem(
    graph: Any,
    problem: Problem,
    spec: str,
    *,
    budget: int | None = None,
    callbacks: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """Solve one problem with a compiled TRIM graph; return its trace lines.

    ``callbacks`` (LangChain handlers) see every run of the graph; the runs carry the
    problem id and the policy as metadata (LangSmith can filter on them).
    """
    from langchain_trim.functional import TrimResult

    started = _now()
    t0 = time.perf_counter()
    commits: dict[int, float] = {}
    final: dict[str, Any] = {}
    run_config: dict[str, Any] = {"metadata": {"problem_id": problem.id, "policy": spec}}
    if callbacks:
        run_config["callbacks"] = list(callbacks)
    stream = graph.astream(
        {"question": problem.question, "trim_budget": budget},
        config=run_config,
        stream_mode=["custom", "values"],
    )
    async for mode, chunk in stream:
        if mode == "custom":
            if is_step_event(chunk):
                commits[int(chunk["index"])] = time.perf_counter() - t0
        else:
            final = chunk
    seconds = time.perf_counter() - t0
    result = TrimResult.from_state(final)
    graded, source = graded_answer(result.final_answer, result.solution)
    lines: list[dict[str, Any]] = []
    prev = 0.0
    for step in result.steps:
        t_end = commits.get(step["index"])
        lines.append(_step_line(spec, problem.id, step, t_end, prev))
        prev = t_end if t_end is not None else prev
    lines.append(
        {
            **_result_head(spec, problem),
            "final_answer": result.final_answer,
            "graded_answer": graded,
            "answer_source": source,
            "correct": _grade(graded, problem.answer),
            "termination": result.termination,
            "n_steps": len(result.steps),
            "escalated_steps": result.escalated_steps,
            "spend": dict(result.spend),
            "budget": budget,
            "seconds": round(seconds, 4),
            "started_at": started,
            "error": None,
        }
    )
    return lines


def _result_head(spec: str, problem: Problem) -> dict[str, Any]:
    """The first fields of a trace's result line: which pair it answers."""
    return {
        "type": "result",
        "version": TRACE_VERSION,
        "policy": spec,
        "problem_id": problem.id,
        "question": problem.question,
        "gold": problem.answer,
    }


def _error_lines(
    spec: str, problem: Problem, exc: BaseException, seconds: float, budget: int | None
) -> list[dict[str, Any]]:
    from langchain_trim.state import new_spend

    return [
        {
            **_result_head(spec, problem),
            "final_answer": None,
            "correct": False,
            "termination": None,
            "n_steps": 0,
            "escalated_steps": 0,
            "spend": dict(new_spend()),
            "budget": budget,
            "seconds": round(seconds, 4),
            "started_at": _now(),
            "error": f"{type(exc).__name__}: {exc}",
        }
    ]


def _needs_prm(policy: RoutingPolicy, max_steps: int) -> bool:
    return bool(policy.needs_score(RouteObservation(0, None, (), 0, (), 0, None, max_steps)))


def _setting_factory(setting: Setting, *, max_steps: int, step_max_tokens: int) -> GraphFactory:
    from langchain_trim.graph import create_trim_graph

    draft_format, strong_format = step_formats(setting)

    def make(policy: RoutingPolicy) -> Any:
        if setting.prm is None and _needs_prm(policy, max_steps):
            raise InvalidInputError(f"policy {policy.name} needs PRM scores but the PRM is none")
        return create_trim_graph(
            setting.weak,
            setting.strong,
            setting.prm,
            policy,
            max_steps=max_steps,
            step_max_tokens=step_max_tokens,
            step_format=draft_format,
            strong_step_format=strong_format,
        ).compile(name="trim")

    return make


def _describe_setting(setting: Setting) -> dict[str, Any]:
    from langchain_trim.models import model_display_name

    draft_format, strong_format = step_formats(setting)
    return {
        "models": {
            "weak": model_display_name(setting.weak),
            "strong": model_display_name(setting.strong),
        },
        "prm": None
        if setting.prm is None
        else str(getattr(setting.prm, "name", type(setting.prm).__name__)),
        "step_format": _format_name(draft_format),
        "strong_step_format": _format_name(strong_format),
    }


def _format_name(spec: Any) -> str | None:
    from langchain_trim.step_format import get_step_format

    return None if spec is None else get_step_format(spec).name


def _progress(total: int, enabled: bool) -> Any:
    """A tqdm bar on stderr, only when someone watches: a log file gets no ``\\r`` frames."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the eval extra
        return None
    return tqdm(total=total, desc="trim eval", unit="run", dynamic_ncols=True, file=sys.stderr)


def _clean_tmp(out_dir: Path) -> None:
    """Remove temp files of killed runs (called with the folder lock held: none is live)."""
    traces = out_dir / TRACES_DIR
    if traces.is_dir():
        for tmp in traces.glob("*/.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
    for tmp in out_dir.glob(f".{CONFIG_FILE}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


LOCK_FILE = ".trim-eval.lock"
"""Held (``flock``) by the run writing a folder; holds its pid."""


@contextlib.contextmanager
def _folder_lock(out: Path) -> Iterator[None]:
    """One run per folder: a second one would delete the first one's temp files."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(out / LOCK_FILE))
        except LockHeld as exc:
            who = f"process {exc.pid}" if exc.pid is not None else "another process"
            raise RunLockedError(
                f"{out} is being written by another trim eval ({who}); wait for it to "
                "finish or use another --out folder"
            ) from None
        except OSError as exc:
            raise EvalStorageError(f"cannot lock the run folder {out}: {exc}") from exc
        yield


_INFRASTRUCTURE = (sqlite3.Error, EvalStorageError, CacheCorruptError, RunLockedError)


def _infrastructure_error(exc: BaseException) -> BaseException | None:
    """The cache/disk/lock error behind ``exc`` (walking its causes), else ``None``.

    Such an error is the run's, not the model's: it stops the run and is never recorded
    in a problem's trace.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, _INFRASTRUCTURE):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _write_trace(path: Path, lines: Sequence[Mapping[str, Any]]) -> None:
    try:
        write_atomic(path, "".join(_dumps(r) + "\n" for r in lines))
    except OSError as exc:
        raise EvalStorageError(f"could not write {path}: {exc}") from exc


def _blocking_form_of(
    afunc: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[[Callable[..., Any]], Callable[P, T]]:
    """Make the decorated stub (its name and docstring) the blocking form of ``afunc``.

    It takes ``afunc``'s arguments and works inside a running event loop too (notebooks):
    the coroutine then gets a worker thread and its own loop.
    """

    def decorate(stub: Callable[..., Any]) -> Callable[P, T]:
        @functools.wraps(stub)
        def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
            coro = afunc(*args, **kwargs)
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(coro)
            # An event loop already runs in this thread (Jupyter): use a worker thread's own loop.
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                return pool.submit(asyncio.run, coro).result()

        blocking.__wrapped__ = afunc  # what inspect.signature shows
        return blocking

    return decorate


async def arun_eval(
    problems: Sequence[Problem],
    policies: Sequence[str],
    *,
    out_dir: str | Path,
    setting: Setting | None = None,
    make_graph: GraphFactory | None = None,
    concurrency: int = 1,
    budget: int | None = None,
    max_steps: int = 30,
    step_max_tokens: int = 512,
    cache: BaseCache | str | Path | None = None,
    retry_errors: bool = False,
    on_error: OnError = "record",
    progress: bool = True,
    config: Mapping[str, Any] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    callbacks: Sequence[Any] | None = None,
) -> EvalSummary:
    """Async :func:`run_eval` (use it where an event loop already runs, e.g. notebooks)."""
    from langchain_trim.policies import baselines as _baselines  # noqa: F401  (registers names)
    from langchain_trim.policies.registry import make_policy

    if (setting is None) == (make_graph is None):
        raise InvalidInputError("pass exactly one of setting= and make_graph=")
    if concurrency < 1:
        raise InvalidInputError(f"concurrency must be >= 1, got {concurrency}")
    if on_error not in ("record", "raise"):
        raise InvalidInputError(f"on_error must be 'record' or 'raise', got {on_error!r}")
    specs = [s.strip() for s in policies if s.strip()]
    if not specs:
        raise InvalidInputError("no policies to run")
    if len(set(specs)) != len(specs):
        raise InvalidInputError(f"duplicate policies in {specs}")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise InvalidInputError("problem ids must be unique")
    built = {spec: make_policy(spec) for spec in specs}
    if make_graph is not None:
        factory = make_graph
    else:
        assert setting is not None  # checked above: exactly one of the two
        factory = _setting_factory(setting, max_steps=max_steps, step_max_tokens=step_max_tokens)
    graphs = {spec: factory(policy) for spec, policy in built.items()}

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvalStorageError(f"cannot create the run folder {out}: {exc}") from exc
    with _folder_lock(out):
        return await _run_locked(
            problems,
            specs,
            ids,
            out=out,
            setting=setting,
            built=built,
            factory=factory,
            graphs=graphs,
            concurrency=concurrency,
            budget=budget,
            max_steps=max_steps,
            step_max_tokens=step_max_tokens,
            cache=cache,
            retry_errors=retry_errors,
            on_error=on_error,
            progress=progress,
            config=config,
            on_result=on_result,
            callbacks=callbacks,
        )


async def _run_locked(
    problems: Sequence[Problem],
    specs: list[str],
    ids: list[str],
    *,
    out: Path,
    setting: Setting | None,
    built: dict[str, RoutingPolicy],
    factory: GraphFactory,
    graphs: dict[str, Any],
    concurrency: int,
    budget: int | None,
    max_steps: int,
    step_max_tokens: int,
    cache: BaseCache | str | Path | None,
    retry_errors: bool,
    on_error: OnError,
    progress: bool,
    config: Mapping[str, Any] | None,
    on_result: Callable[[dict[str, Any]], None] | None,
    callbacks: Sequence[Any] | None,
) -> EvalSummary:
    _clean_tmp(out)
    meta: dict[str, Any] = {
        "version": TRACE_VERSION,
        "created_at": _now(),
        "updated_at": _now(),
        "policies": specs,
        "problem_ids": ids,
        "budget": budget,
        "max_steps": max_steps,
        "step_max_tokens": step_max_tokens,
        "versions": package_versions(),
    }
    if setting is not None:
        meta.update(_describe_setting(setting))
    meta.update(config or {})
    try:
        _write_config(out, meta)
    except OSError as exc:
        raise EvalStorageError(f"cannot write {out / CONFIG_FILE}: {exc}") from exc

    summary = EvalSummary(out_dir=out)
    try:
        the_cache = SQLiteLLMCache(cache) if isinstance(cache, (str, Path)) else cache
    except OSError as exc:
        raise EvalStorageError(f"cannot open the cache {cache}: {exc}") from exc
    jobs = _pending_jobs(problems, specs, out, retry_errors, summary)
    bar = _progress(len(jobs), progress and bool(jobs))
    semaphore = asyncio.Semaphore(concurrency)
    t_start = time.perf_counter()

    async def run_one(spec: str, problem: Problem, path: Path) -> None:
        async with semaphore:
            policy = built[spec]
            t0 = time.perf_counter()
            try:
                graph = graphs[spec]
                bind = getattr(policy, "for_question", None)
                if callable(bind):  # per-question seeding (RandomPolicy)
                    graph = factory(bind(problem.id))
                lines = await solve_problem(
                    graph, problem, spec, budget=budget, callbacks=callbacks
                )
            except Exception as exc:
                _raise_if_the_run_failed(exc, spec, problem)
                if on_error == "raise":
                    raise
                lines = _error_lines(spec, problem, exc, time.perf_counter() - t0, budget)
                _count_failure(summary, bar, f"{spec} {_printable(problem.id)}", exc)
            # fsync takes milliseconds: off the event loop, so other problems keep going
            await asyncio.to_thread(_write_trace, path, lines)
            summary.ran += 1
            summary.results.setdefault(spec, []).append(lines[-1])
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{spec} errors={summary.errors}", refresh=False)
            if on_result is not None:
                on_result(lines[-1])

    before = _CacheMark.of(the_cache, owned=isinstance(cache, (str, Path)))
    try:
        with llm_cache(the_cache) if the_cache is not None else contextlib.nullcontext():
            tasks = [asyncio.ensure_future(run_one(*job)) for job in jobs]
            try:
                for next_done in asyncio.as_completed(tasks):
                    await next_done
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - t_start
        if before is not None:
            before.settle(summary)
    _finish_config(out, summary)
    return summary


def _pending_jobs(
    problems: Sequence[Problem],
    specs: Sequence[str],
    out: Path,
    retry_errors: bool,
    summary: EvalSummary,
) -> list[tuple[str, Problem, Path]]:
    """The (policy, problem) pairs without a finished trace; the others are counted skipped."""
    jobs: list[tuple[str, Problem, Path]] = []
    for spec in specs:
        for problem in problems:
            path = trace_path(out, spec, problem.id)
            done = read_trace_file(path) if path.is_file() else None
            if done is not None and not (retry_errors and done["result"].get("error")):
                summary.skipped += 1
                continue
            jobs.append((spec, problem, path))
    return jobs


def _raise_if_the_run_failed(exc: Exception, spec: str, problem: Problem) -> None:
    """Stop the run on a failure of the run itself (storage, interruption), not the problem's."""
    infra = _infrastructure_error(exc)
    if infra is None:
        return
    if isinstance(infra, TrimError):
        raise infra from exc
    raise EvalStorageError(
        f"{type(infra).__name__}: {infra} (while solving {_printable(problem.id)!r} with "
        f"{spec}); the run stopped, finished traces are kept"
    ) from exc


def _count_failure(summary: EvalSummary, bar: Any, where: str, exc: Exception) -> None:
    """Count a problem's failure and show it (its trace records the error)."""
    summary.errors += 1
    line = f"{where}: {type(exc).__name__}: {exc}"
    summary.failed.append(_printable(line).splitlines()[0][:300])
    if bar is not None:
        bar.write(f"error: {summary.failed[-1]}")


@dataclass(frozen=True)
class _CacheMark:
    """A SQLite cache's counters before a run, to report what this run did with it."""

    cache: SQLiteLLMCache
    owned: bool
    """The run opened the cache itself (and closes it)."""
    hits: int
    misses: int
    writes: int
    notes: int

    @classmethod
    def of(cls, cache: BaseCache | None, *, owned: bool) -> _CacheMark | None:
        if not isinstance(cache, SQLiteLLMCache):
            return None
        notes = 0 if owned else len(cache.notes)
        return cls(cache, owned, cache.hits, cache.misses, cache.writes, notes)

    def settle(self, summary: EvalSummary) -> None:
        s = self.cache.stats()
        summary.cache = CacheStats(
            s.hits - self.hits, s.misses - self.misses, s.writes - self.writes, s.entries
        )
        summary.warnings.extend(self.cache.notes[self.notes :])
        if self.owned:
            self.cache.close()


def _finish_config(out: Path, summary: EvalSummary) -> None:
    """Stamp the run folder's config with the time and what the cache did."""
    meta_update = read_config(out)
    meta_update["updated_at"] = _now()
    if summary.cache is not None:
        meta_update["cache_last_run"] = {
            "hits": summary.cache.hits,
            "misses": summary.cache.misses,
            "entries": summary.cache.entries,
        }
    if summary.warnings:
        meta_update["warnings_last_run"] = summary.warnings
    try:
        write_atomic(out / CONFIG_FILE, _dumps(meta_update, indent=1))
    except OSError as exc:
        raise EvalStorageError(f"cannot write {out / CONFIG_FILE}: {exc}") from exc


@_blocking_form_of(arun_eval)
def run_eval(*args: Any, **kwargs: Any) -> EvalSummary:
    """Solve every problem with every policy; write one trace file per pair (resumable).

    Works inside a running event loop too (notebooks): the run then gets a worker
    thread and its own loop.

    Args:
        problems: benchmark problems (unique ids).
        policies: policy specs (``"thr:0.3"``, ``"weak"``, ``"strong"``, ``"weakscored"``,
            ``"random:0.2"``, ...; see :func:`~langchain_trim.policies.registry.make_policy`).
        out_dir: run folder (see the module docstring for its layout).
        setting: an object with ``weak``, ``strong`` and ``prm`` (``LocalSetting``,
            :func:`~langchain_trim.eval.fake.fake_setting`); or instead
        make_graph: ``make_graph(policy) -> compiled graph``.
        concurrency: problems in flight at once (an asyncio semaphore).
        budget: strong-token cap per question (``None``: unlimited).
        max_steps / step_max_tokens: graph settings when built from ``setting``.
        cache: a LangChain ``BaseCache`` or a SQLite file path, installed as the global
            LLM cache for the run, so policies re-use every shared prefix.  Cached
            generations keep their ``usage_metadata``: their cost is still charged.  A
            damaged file is moved aside (see
            :class:`~langchain_trim.eval.cache.SQLiteLLMCache`); what happened is in
            :attr:`EvalSummary.warnings`.
        retry_errors: re-run pairs whose stored result has ``error`` set.
        on_error: ``"record"`` writes a failed problem as ``error`` (counted wrong) and
            goes on; ``"raise"`` stops the run (finished files stay).
        progress: show a tqdm bar on stderr.
        config: extra ``config.json`` entries (dataset name, source, subset seed, ...).
        on_result: called with each result line after its file is written.
        callbacks: LangChain callback handlers attached to every graph run (a tracer, a
            timer); runs carry ``problem_id`` and ``policy`` metadata.

    >>> import tempfile
    >>> from langchain_trim.eval.fake import fake_setting
    >>> probs = [Problem("p1", "1 + 1?", "2"), Problem("p2", "2 + 2?", "4")]
    >>> setting = fake_setting({p.question: p.answer for p in probs}, slip_rate=1.0)
    >>> out = tempfile.mkdtemp()
    >>> s = run_eval(probs, ["weak", "strong"], setting=setting, out_dir=out, progress=False)
    >>> s.ran, s.skipped, [r["correct"] for r in s.results["strong"]]
    (4, 0, [True, True])
    >>> run_eval(probs, ["weak", "strong"], setting=setting, out_dir=out, progress=False).skipped
    4
    """
    raise AssertionError("replaced by the blocking form of arun_eval")


# -- loading ----------------------------------------------------------------------------------
def _trace(steps: list[dict[str, Any]], result: dict[str, Any], fallback: str) -> dict[str, Any]:
    return {
        "steps": steps,
        "correct": bool(result.get("correct")),
        "policy": result.get("policy") or fallback,
        "problem_id": result.get("problem_id"),
        "final_answer": result.get("final_answer"),
        "gold": result.get("gold"),
        "termination": result.get("termination"),
        "spend": result.get("spend") or {},
        "seconds": result.get("seconds"),
        "error": result.get("error"),
        "result": result,
    }


def load_traces(
    out_dir: str | Path, *, policies: Iterable[str] | None = None, include_errors: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """Every complete trace of a run, by policy spec, in the simulator's trace format.

    Each trace is ``{"steps": [...], "correct": bool, "policy": spec, "problem_id": ...,
    "final_answer", "gold", "termination", "spend", "seconds", "error", "result"}``;
    ``steps`` are the step lines (StepRecord fields), so
    ``fit_calibration([t for ts in load_traces(d).values() for t in ts])`` works as is.
    Problems come in ``config.json`` order; incomplete files are left out.
    """
    root = Path(out_dir) / TRACES_DIR
    if not root.is_dir():
        return {}
    order = {pid: i for i, pid in enumerate(read_config(out_dir).get("problem_ids", []))}
    wanted = None if policies is None else set(policies)
    out: dict[str, list[dict[str, Any]]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        traces = []
        for path in sorted(folder.glob("*.jsonl")):
            data = read_trace_file(path)
            if data is None:
                continue
            trace = _trace(data["steps"], data["result"], folder.name)
            if trace["error"] and not include_errors:
                continue
            traces.append(trace)
        if not traces:
            continue
        spec = str(traces[0]["policy"])
        if wanted is not None and spec not in wanted:
            continue
        traces.sort(key=lambda t: (order.get(t["problem_id"], len(order)), str(t["problem_id"])))
        out[spec] = traces
    return out


__all__ = [
    "CONFIG_FILE",
    "DEFAULT_DATA_FILES",
    "TRACES_DIR",
    "TRACE_VERSION",
    "EvalSummary",
    "GraphFactory",
    "arun_eval",
    "default_data_path",
    "load_traces",
    "package_versions",
    "policy_dirname",
    "problem_filename",
    "read_config",
    "read_trace_file",
    "run_eval",
    "solve_problem",
    "trace_path",
    "write_atomic",
]
