"""The ``Setting`` protocol's helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_trim.setting import Setting, load_models


@dataclass
class _Loadable:
    loads: int = 0

    def load(self) -> None:
        self.loads += 1


@dataclass
class _PRM:
    encoder: _Loadable = field(default_factory=_Loadable)

    def score(self, question: str, steps: Any) -> list[float]:
        return [0.5 for _ in steps]

    async def ascore(self, question: str, steps: Any) -> list[float]:
        return self.score(question, steps)


@dataclass
class _Setting:
    weak: Any
    strong: Any
    prm: Any


def test_load_models_loads_both_models_and_the_prm_encoder() -> None:
    weak, strong, prm = _Loadable(), _Loadable(), _PRM()
    setting = _Setting(weak, strong, prm)
    assert isinstance(setting, Setting)
    load_models(setting)
    assert (weak.loads, strong.loads, prm.encoder.loads) == (1, 1, 1)


def test_load_models_leaves_models_without_load_alone() -> None:
    load_models(_Setting("openai:gpt-4o-mini", object(), None))  # nothing to load, no error
