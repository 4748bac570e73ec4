"""Benchmark loaders: field maps, answer clean-up, official AIME split, subsets, Hub errors."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from langchain_trim.eval.datasets import (
    DatasetLoadError,
    aime_official_split,
    gsm8k_final_answer,
    load_problems,
    read_records,
    select_subset,
)

DATA = Path("/work/shared/data")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared benchmark data not present")


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@needs_data
def test_math500_local() -> None:
    problems = load_problems("math500", DATA / "math500.jsonl")
    assert len(problems) == 500
    first = problems[0]
    assert first.id == "test/precalculus/807.json"
    assert first.answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert first.question.startswith("Convert the point")
    assert first.meta["subject"] == "Precalculus" and first.meta["level"] == 2
    assert len({p.id for p in problems}) == 500


@needs_data
def test_gsm8k_local_answers_are_clean_numbers() -> None:
    problems = load_problems("gsm8k", DATA / "gsm8k_test.jsonl")
    assert len(problems) == 1319
    assert problems[0].answer == "18"
    assert all("," not in p.answer and "####" not in p.answer for p in problems)
    assert any(p.meta["solution"].rstrip().endswith("2,125") for p in problems)
    assert "2125" in {p.answer for p in problems}


@needs_data
def test_aime_files_and_official_split() -> None:
    aime24 = load_problems("aime24", DATA / "aime24.jsonl")
    assert len(aime24) == 30 and aime24[0].answer == "204" and aime24[0].id == "60"
    test = load_problems("aime", DATA / "aime_1983_2024_test.jsonl", split="test")
    train = load_problems("aime", DATA / "aime_1983_2024_train.jsonl")
    assert (len(test), len(train)) == (482, 451)
    assert test[0].answer == "60" and test[0].id == "1983-1"
    # the rule reproduces the release's split of every row
    for name, split in (("test", "test"), ("train", "train")):
        for row in read_records(DATA / f"aime_1983_2024_{name}.jsonl"):
            row = {k: v for k, v in row.items() if k != "split"}
            assert aime_official_split(row) == split
    assert load_problems("aime", DATA / "aime_1983_2024_train.jsonl", split="test") == []


def test_aime_split_rule() -> None:
    assert aime_official_split({"Year": 1985}) == "test"
    assert aime_official_split({"Year": 1998}) == "train"
    assert aime_official_split({"Year": 2012, "Part": "I"}) == "train"
    assert aime_official_split({"Year": 2012, "ID": "2012-II-4"}) == "test"
    assert aime_official_split({"ID": "x"}) is None
    with pytest.raises(ValueError, match="aime split"):
        load_problems("aime", "x.jsonl", split="validation")


def test_gsm8k_final_answer() -> None:
    assert gsm8k_final_answer("a\nb #### 1,234") == "1234"
    assert gsm8k_final_answer("x #### 1 #### -5") == "-5"
    assert gsm8k_final_answer("42") == "42"


def test_olympiadbench_and_minerva_field_maps(tmp_path: Path) -> None:
    ob = _write_jsonl(
        tmp_path / "ob.jsonl",
        [{"id": 7, "question": "Find x.", "final_answer": ["$\\frac{1}{2}$", "$3$"], "x": 1}],
    )
    (p,) = load_problems("olympiadbench", ob)
    assert (p.id, p.answer, p.meta["x"]) == ("7", "\\frac{1}{2}, 3", 1)
    mv = tmp_path / "minerva.json"
    mv.write_text(json.dumps({"data": [{"problem": "Q?", "solution": "so \\boxed{4.5}."}]}))
    (m,) = load_problems("minerva", mv)
    assert (m.id, m.question, m.answer) == ("minerva-0", "Q?", "4.5")


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        load_problems("nope")
    with pytest.raises(DatasetLoadError, match="no such dataset file"):
        load_problems("math500", tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(DatasetLoadError, match="not valid JSON"):
        load_problems("math500", bad)
    noq = _write_jsonl(tmp_path / "noq.jsonl", [{"answer": "1"}])
    with pytest.raises(DatasetLoadError, match="question fields"):
        load_problems("math500", noq)
    noa = _write_jsonl(tmp_path / "noa.jsonl", [{"problem": "q", "solution": "no box"}])
    with pytest.raises(DatasetLoadError, match="no answer field"):
        load_problems("math500", noa)


def test_subset_is_deterministic(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(50)]
    path = _write_jsonl(tmp_path / "g.jsonl", rows)
    first = [p.answer for p in load_problems("gsm8k", path, limit=5)]
    assert first == ["0", "1", "2", "3", "4"]
    a = [p.id for p in load_problems("gsm8k", path, limit=10, seed=3)]
    b = [p.id for p in load_problems("gsm8k", path, limit=10, seed=3)]
    c = [p.id for p in load_problems("gsm8k", path, limit=10, seed=4)]
    assert a == b and a != c and len(set(a)) == 10
    assert a == sorted(a, key=lambda s: int(s.split("-")[1]))  # file order kept
    assert len(load_problems("gsm8k", path, limit=500, seed=1)) == 50
    assert select_subset([1, 2], 0, None) == []
    with pytest.raises(ValueError):
        select_subset([1, 2], -1, None)


def test_hub_without_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DatasetLoadError, match="pip install datasets"):
        load_problems("math500")


def test_hub_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("datasets")

    def load_dataset(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("no network")

    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(DatasetLoadError, match="Offline"):
        load_problems("gsm8k")


def test_hub_rows_use_the_field_map(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    rows = [
        {"ID": "1983-1", "Year": 1983, "Question": "Q1", "Answer": 60, "Part": None},
        {"ID": "2005-I-2", "Year": 2005, "Question": "Q2", "Answer": 7, "Part": "I"},
        {"ID": "2005-II-2", "Year": 2005, "Question": "Q3", "Answer": 8, "Part": "II"},
    ]
    fake = types.ModuleType("datasets")

    def load_dataset(path: str, config: str | None, split: str) -> list[dict[str, Any]]:
        calls.append((path, config, split))
        return rows

    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    test = load_problems("aime", split="test")
    assert [(p.id, p.question, p.answer) for p in test] == [
        ("1983-1", "Q1", "60"),
        ("2005-II-2", "Q3", "8"),
    ]
    assert calls == [("di-zhang-fdu/AIME_1983_2024", None, "train")]
    calls.clear()
    rows.clear()
    assert load_problems("gsm8k", "me/gsm8k-mirror", split="train") == []
    assert calls == [("me/gsm8k-mirror", "main", "train")]
