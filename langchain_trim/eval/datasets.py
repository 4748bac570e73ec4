"""Benchmark loaders: every dataset becomes a list of :class:`Problem` with one field map.

The paper evaluates on MATH-500, AIME, OlympiadBench and Minerva Math (GSM8K is the
cheap smoke test).  Each source spells its fields differently, so each dataset has a
:class:`DatasetSpec` naming the candidate fields, first present wins:

============== ============================ ================ ============================
name           default Hugging Face source  question         answer
============== ============================ ================ ============================
math500        HuggingFaceH4/MATH-500, test problem          answer, else last ``\\boxed``
                                                             of solution
aime24         HuggingFaceH4/aime_2024,     problem,         answer
               train                        question
aime           di-zhang-fdu/AIME_1983_2024, problem,         answer, Answer, solution
               train                        Question         (the release's files keep the
                                                             answer in ``solution``)
gsm8k          openai/gsm8k (main), test    question         text after ``####``, commas
                                                             stripped
olympiadbench  Hothan/OlympiadBench         question         final_answer (a list: outer
               (OE_TO_maths_en_COMP), train                  ``$`` stripped, ", "-joined)
minerva        math-ai/minervamath, test    question,        answer, else last ``\\boxed``
                                            problem          of solution
============== ============================ ================ ============================

Every other field lands in :attr:`Problem.meta`.  ``aime`` takes ``split="train"`` or
``"test"`` as the official TRIM split (before 2000 odd years are test and even years
train; from 2000 Part I is train and Part II test); for the other datasets ``split``
names the Hugging Face split.  A local ``.jsonl``/``.json`` path is read directly and
``datasets`` is imported only for Hub ids.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_trim.errors import TrimError
from langchain_trim.steps import extract_boxed


class DatasetLoadError(TrimError, RuntimeError):
    """A dataset could not be read: missing file, bad format, no ``datasets``, offline."""


@dataclass(frozen=True)
class Problem:
    """One benchmark question with its reference final answer.

    >>> Problem("gsm8k-0", "1 + 1?", "2").answer
    '2'
    """

    id: str
    question: str
    answer: str
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a benchmark lives on the Hub and which of its fields mean what."""

    name: str
    hf_path: str
    hf_split: str
    question_fields: tuple[str, ...]
    answer_fields: tuple[str, ...]
    id_fields: tuple[str, ...] = ("id", "unique_id", "ID", "idx")
    solution_fields: tuple[str, ...] = ()
    """Fields searched for a last ``\\boxed{}`` when no answer field is present."""
    hf_config: str | None = None
    answer_transform: Callable[[Any], str] | None = None


def gsm8k_final_answer(text: str) -> str:
    """The number after the last ``####`` of a GSM8K solution, commas stripped.

    >>> gsm8k_final_answer("She makes 9 * 2 = $<<9*2=18>>18.\\n#### 1,018")
    '1018'
    """
    if "####" not in text:
        return text.strip().replace(",", "")
    return text.rsplit("####", 1)[1].strip().replace(",", "")


def _strip_dollars(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text[1:-1].strip()
    return text


def list_answer(value: Any) -> str:
    """OlympiadBench keeps answers as a list of LaTeX strings: strip ``$`` and join.

    >>> list_answer(["$\\\\frac{1}{2}$", "$3$"])
    '\\\\frac{1}{2}, 3'
    """
    if isinstance(value, str):
        return _strip_dollars(value)
    if isinstance(value, Sequence):
        return ", ".join(_strip_dollars(str(v)) for v in value)
    return str(value)


def _gsm8k_transform(value: Any) -> str:
    return gsm8k_final_answer(str(value))


DATASETS: dict[str, DatasetSpec] = {
    "math500": DatasetSpec(
        name="math500",
        hf_path="HuggingFaceH4/MATH-500",
        hf_split="test",
        question_fields=("problem", "question"),
        answer_fields=("answer",),
        solution_fields=("solution",),
    ),
    "aime24": DatasetSpec(
        name="aime24",
        hf_path="HuggingFaceH4/aime_2024",
        hf_split="train",
        question_fields=("problem", "question", "Problem"),
        answer_fields=("answer", "Answer"),
    ),
    "aime": DatasetSpec(
        name="aime",
        hf_path="di-zhang-fdu/AIME_1983_2024",
        hf_split="train",
        question_fields=("problem", "Question", "question"),
        answer_fields=("answer", "Answer", "solution"),
    ),
    "gsm8k": DatasetSpec(
        name="gsm8k",
        hf_path="openai/gsm8k",
        hf_config="main",
        hf_split="test",
        question_fields=("question",),
        answer_fields=("answer",),
        answer_transform=_gsm8k_transform,
    ),
    "olympiadbench": DatasetSpec(
        name="olympiadbench",
        hf_path="Hothan/OlympiadBench",
        hf_config="OE_TO_maths_en_COMP",
        hf_split="train",
        question_fields=("question", "problem"),
        answer_fields=("final_answer", "answer"),
        answer_transform=list_answer,
    ),
    "minerva": DatasetSpec(
        name="minerva",
        hf_path="math-ai/minervamath",
        hf_split="test",
        question_fields=("question", "problem"),
        answer_fields=("answer", "final_answer"),
        solution_fields=("solution",),
    ),
}


def aime_official_split(row: Mapping[str, Any]) -> str | None:
    """The TRIM release's AIME split of one row: ``"train"``, ``"test"`` or ``None``.

    A row that already says (the release's files carry ``split``) is believed.

    >>> aime_official_split({"Year": 1983}), aime_official_split({"Year": 2005, "Part": "I"})
    ('test', 'train')
    """
    given = row.get("split")
    if given in ("train", "test"):
        return str(given)
    year = row.get("Year", row.get("year"))
    if year is None:
        return None
    year = int(year)
    if year < 2000:
        return "test" if year % 2 else "train"
    part = str(row.get("Part_norm") or row.get("Part") or "").strip().upper()
    if not part:
        match = re.search(r"-(I{1,2})-", str(row.get("ID", "")))
        part = match.group(1) if match else ""
    if part == "I":
        return "train"
    if part == "II":
        return "test"
    return None


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``.jsonl`` file (one object a line) or a ``.json`` list / ``{"data": [...]}``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetLoadError(f"no such dataset file: {path}")
    text = path.read_text(encoding="utf-8")
    rows: Any
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
            rows = data.get("data") if isinstance(data, dict) else data
    except json.JSONDecodeError as exc:
        raise DatasetLoadError(f"{path} is not valid JSON/JSONL: {exc}") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DatasetLoadError(f"{path}: expected a list of JSON objects (or {{'data': [...]}})")
    return rows


def _load_hub(spec: DatasetSpec, path: str, split: str) -> list[dict[str, Any]]:
    try:
        import datasets  # optional: only Hub ids need it
    except ImportError as exc:
        raise DatasetLoadError(
            f"loading {path!r} from the Hugging Face Hub needs the `datasets` package "
            "(pip install datasets), or pass a local .jsonl/.json path instead"
        ) from exc
    try:
        ds = datasets.load_dataset(path, spec.hf_config, split=split)
    except Exception as exc:
        raise DatasetLoadError(
            f"could not load {path!r} (config {spec.hf_config!r}, split {split!r}) from the "
            f"Hugging Face Hub: {type(exc).__name__}: {exc}. Offline? Pass a local path."
        ) from exc
    return [dict(row) for row in ds]


def _first(row: Mapping[str, Any], names: Sequence[str]) -> tuple[str | None, Any]:
    for name in names:
        if name in row and row[name] is not None and row[name] != "":
            return name, row[name]
    return None, None


def to_problem(spec: DatasetSpec, row: Mapping[str, Any], index: int) -> Problem:
    """Map one raw row to a :class:`Problem` using ``spec``'s field names."""
    q_name, question = _first(row, spec.question_fields)
    if q_name is None:
        raise DatasetLoadError(
            f"{spec.name} row {index}: none of the question fields {spec.question_fields} "
            f"(keys: {sorted(row)})"
        )
    a_name, raw_answer = _first(row, spec.answer_fields)
    if a_name is not None:
        answer = (spec.answer_transform or list_answer)(raw_answer)
    else:
        s_name, solution = _first(row, spec.solution_fields)
        boxed = extract_boxed(str(solution)) if s_name is not None else None
        if boxed is None:
            raise DatasetLoadError(
                f"{spec.name} row {index}: no answer field {spec.answer_fields} and no "
                f"\\boxed answer in {spec.solution_fields} (keys: {sorted(row)})"
            )
        answer = boxed
    id_name, raw_id = _first(row, spec.id_fields)
    pid = str(raw_id) if id_name is not None else f"{spec.name}-{index}"
    used = {q_name, a_name, id_name}
    meta = {k: v for k, v in row.items() if k not in used}
    meta["source_index"] = index
    if spec.name == "gsm8k" and a_name is not None:
        meta["solution"] = str(raw_answer)
    return Problem(id=pid, question=str(question).strip(), answer=answer, meta=meta)


def select_subset(items: Sequence[Any], limit: int | None, seed: int | None) -> list[Any]:
    """Deterministic subset: the first ``limit`` items, or a seeded sample kept in file order.

    >>> select_subset(list(range(10)), 3, None)
    [0, 1, 2]
    >>> select_subset(list(range(10)), 3, 7) == select_subset(list(range(10)), 3, 7)
    True
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if limit is None or limit >= len(items):
        return list(items)
    if seed is None:
        return list(items[:limit])
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]


def load_problems(
    name: str,
    source: str | Path | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    seed: int | None = None,
) -> list[Problem]:
    """Load a benchmark as :class:`Problem` rows.

    Args:
        name: a key of :data:`DATASETS` (``math500``, ``aime24``, ``aime``, ``gsm8k``,
            ``olympiadbench``, ``minerva``).
        source: a local ``.jsonl``/``.json`` file, or a Hugging Face dataset id; ``None``
            uses the spec's default Hub id.
        split: Hub split (default per spec); for ``aime`` the official TRIM split
            ``"train"``/``"test"`` (``None`` keeps all rows).
        limit: keep at most this many problems.
        seed: ``None`` keeps the first ``limit``; an int draws a seeded sample (file order).

    >>> import json, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "gsm8k.jsonl"
    >>> _ = path.write_text(json.dumps({"question": "2 + 2?", "answer": "2+2=4\\n#### 4"}))
    >>> [(p.id, p.answer) for p in load_problems("gsm8k", path)]
    [('gsm8k-0', '4')]
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    spec = DATASETS[name]
    src = str(source) if source is not None else spec.hf_path
    local = Path(src).suffix in (".json", ".jsonl") or Path(src).exists()
    official_split = split if name == "aime" else None
    if official_split not in (None, "train", "test"):
        raise ValueError(f"aime split must be 'train', 'test' or None, got {split!r}")
    if local:
        rows = read_records(src)
    else:
        hub_split = spec.hf_split if name == "aime" else (split or spec.hf_split)
        rows = _load_hub(spec, src, hub_split)
    problems = [to_problem(spec, row, i) for i, row in enumerate(rows)]
    if official_split is not None:
        problems = [
            p for p, row in zip(problems, rows, strict=True) if aime_official_split(row) == split
        ]
    return select_subset(problems, limit, seed)


__all__ = [
    "DATASETS",
    "DatasetLoadError",
    "DatasetSpec",
    "Problem",
    "aime_official_split",
    "gsm8k_final_answer",
    "list_answer",
    "load_problems",
    "read_records",
    "select_subset",
    "to_problem",
]
