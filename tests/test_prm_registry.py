"""PRM specs: one registry behind ``trim --prm``, ``TRIM_PRM`` and ``local_setting(prm=)``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from langchain_trim import server
from langchain_trim.errors import InvalidInputError
from langchain_trim.pool import PooledPRM
from langchain_trim.prm import ChatJudgePRM, SelfConfidencePRM
from langchain_trim.prm.registry import (
    PRMContext,
    check_prm_spec,
    make_prm,
    register_prm,
    served_prm_spec,
)
from langchain_trim.testing import FakeStepModel, KeywordPRM


class ConstantPRM(KeywordPRM):
    def __init__(self) -> None:
        super().__init__({}, default=0.5)


@pytest.fixture
def constant() -> Iterator[list[PRMContext]]:
    """A PRM registered by a test, as a plug-in would register one."""
    from langchain_trim.prm import registry

    seen: list[PRMContext] = []

    def factory(arg: str | None, ctx: PRMContext) -> ConstantPRM:
        seen.append(ctx)
        return ConstantPRM()

    register_prm("constant", factory)
    yield seen
    registry._REGISTRY.pop("constant")


def test_builtin_specs() -> None:
    strong = FakeStepModel(steps=["x"], model_name="strong-1")
    assert make_prm("none") is None
    assert isinstance(make_prm("confidence"), SelfConfidencePRM)
    judge = make_prm("judge", strong=strong)
    assert isinstance(judge, ChatJudgePRM)
    assert type(make_prm("arithmetic")).__name__ == "ArithmeticPRM"


def test_served_specs_make_a_server_prm_or_a_pool() -> None:
    pytest.importorskip("httpx")
    one = make_prm(served_prm_spec("my-prm", "http://localhost:1"))
    assert type(one).__name__ == "VLLMServerPRM"
    pool = make_prm("vllm:my-prm@http://localhost:1, http://localhost:2")
    assert isinstance(pool, PooledPRM) and len(pool.pool.members) == 2


@pytest.mark.parametrize(
    ("spec", "kwargs", "match"),
    [
        ("oracle", {}, r"unknown PRM 'oracle'.*known: arithmetic, confidence, judge"),
        ("confidence:0.5", {}, "confidence takes no argument"),
        ("judge", {}, "judge asks the strong model"),
        ("vllm:my-prm", {}, r"vllm:<model>@<url>"),
        ("vllm:@http://x", {}, r"vllm:<model>@<url>"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        make_prm(spec, **kwargs)


def test_names_are_checked_before_anything_is_built() -> None:
    assert check_prm_spec("probe") == "probe"
    with pytest.raises(InvalidInputError, match="unknown PRM"):
        check_prm_spec("prob")
    with pytest.raises(ValueError, match="invalid PRM name"):
        register_prm("a:b", lambda arg, ctx: None)


def test_the_server_resolves_prms_through_the_registry(constant: list[PRMContext]) -> None:
    fake = "py:langchain_trim.testing:FakeStepModel"
    env = {"TRIM_WEAK": fake, "TRIM_STRONG": fake, "TRIM_PRM": "constant"}
    graph: Any = server.make_graph(env)
    assert graph.name == "trim"
    assert len(constant) == 1 and isinstance(constant[0].strong, FakeStepModel)


def test_local_setting_resolves_prms_through_the_registry(constant: list[PRMContext]) -> None:
    from langchain_trim.local.setting import local_setting

    setting = local_setting(prm="constant", n_threads=3)
    assert isinstance(setting.prm, ConstantPRM)
    assert constant[0].strong is setting.strong and constant[0].n_threads == 3
    with pytest.raises(InvalidInputError, match="unknown PRM"):
        local_setting(prm="oracle")


def test_the_cli_resolves_prms_through_the_registry(constant: list[PRMContext]) -> None:
    from langchain_trim.cli import _setting

    setting = _setting(("weak", None), ("strong", None), ("constant", None), 0.7)
    assert isinstance(setting.prm, ConstantPRM) and constant[0].strong is setting.strong
    with pytest.raises(InvalidInputError, match="--prm: unknown PRM 'oracle'"):
        _setting(("weak", None), ("strong", None), ("oracle", None), 0.7)
