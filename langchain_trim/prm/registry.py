"""Named process reward models, so that the CLI, the server and settings say ``probe``.

A spec is ``name`` or ``name:argument``, as for policies
(:mod:`langchain_trim.policies.registry`); each name maps to a factory that receives the
argument (or ``None``) and a :class:`PRMContext` with what a backend may need from the
graph it scores for.  Backends are imported only when built, so resolving ``none`` or
``confidence`` stays light.  A new backend is one file plus one :func:`register_prm`.

==================================  ===============================================
spec                                PRM
==================================  ===============================================
``probe``                           the trained probe shipped with the package
                                    (a logistic head on the weak GGUF's features)
``judge``                           LLM-as-judge on the graph's strong model
``confidence``                      the draft model's own token probabilities
``arithmetic``                      exact checker of the step's equations
``none``                            no PRM (always-weak / always-strong policies)
``vllm:<model>@<url>[,<url>...]``   ``<model>`` served by vLLM's ``/pooling``;
                                    several URLs make a least-busy, sticky pool
==================================  ===============================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_trim.errors import InvalidInputError
from langchain_trim.prm.base import ProcessRewardModel


@dataclass(frozen=True)
class PRMContext:
    """What a PRM factory may use besides its spec argument."""

    strong: Any = None
    """The graph's strong chat model: the model ``judge`` asks."""
    n_threads: int | None = None
    """CPU threads of local backends (``probe``; ``None``: llama.cpp's default)."""


PRMFactory = Callable[[str | None, PRMContext], ProcessRewardModel | None]
"""``factory(argument, context)``: a PRM, or ``None`` for no PRM."""

_REGISTRY: dict[str, PRMFactory] = {}


def register_prm(name: str, factory: PRMFactory) -> None:
    """Make ``name[:arg]`` resolvable by :func:`make_prm` (the factory's docstring says
    what the argument means)."""
    if not name or ":" in name or "," in name:
        raise ValueError(f"invalid PRM name {name!r}")
    _REGISTRY[name] = factory


def check_prm_spec(spec: str) -> str:
    """The spec's registered name, or an :class:`InvalidInputError` naming the known ones.

    Lets a caller reject a bad ``--prm`` before it loads any model.

    >>> check_prm_spec("vllm:my-prm@http://localhost:8000")
    'vllm'
    """
    name = spec.strip().partition(":")[0]
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise InvalidInputError(f"unknown PRM {name!r} in {spec!r}; known: {known}")
    return name


def make_prm(
    spec: str, *, strong: Any = None, n_threads: int | None = None
) -> ProcessRewardModel | None:
    """Build the PRM ``spec`` names (``None`` for ``none``).

    Args:
        spec: ``name`` or ``name:arg`` (see the module's table).
        strong: the graph's strong chat model (what ``judge`` asks).
        n_threads: CPU threads of local backends.

    >>> make_prm("none") is None
    True
    >>> make_prm("confidence").name
    'confidence:mean'
    """
    name = check_prm_spec(spec)
    arg = spec.strip().partition(":")[2] or None
    try:
        return _REGISTRY[name](arg, PRMContext(strong=strong, n_threads=n_threads))
    except InvalidInputError:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"bad PRM spec {spec!r}: {exc}") from exc


def served_prm_spec(model: str, urls: str) -> str:
    """The spec of ``model`` served at ``urls`` (comma-separated): ``--prm-url``'s meaning.

    >>> served_prm_spec("Qwen/Qwen2.5-Math-PRM-7B", "http://gpu1:8000")
    'vllm:Qwen/Qwen2.5-Math-PRM-7B@http://gpu1:8000'
    """
    return f"vllm:{model}@{urls}"


def _no_arg(name: str, arg: str | None) -> None:
    if arg is not None:
        raise ValueError(f"{name} takes no argument, got {arg!r}")


def _probe(arg: str | None, ctx: PRMContext) -> ProcessRewardModel:
    """The probe PRM shipped with the package (loads the weak GGUF as its encoder)."""
    _no_arg("probe", arg)
    from langchain_trim.prm.probe import ProbePRM

    return ProbePRM(n_threads=ctx.n_threads)


def _judge(arg: str | None, ctx: PRMContext) -> ProcessRewardModel:
    """LLM-as-judge on ``ctx.strong``."""
    _no_arg("judge", arg)
    if ctx.strong is None:
        raise ValueError("judge asks the strong model: make_prm('judge', strong=model)")
    from langchain_trim.prm.judge import ChatJudgePRM

    return ChatJudgePRM(ctx.strong)


def _confidence(arg: str | None, ctx: PRMContext) -> ProcessRewardModel:
    _no_arg("confidence", arg)
    from langchain_trim.prm.confidence import SelfConfidencePRM

    return SelfConfidencePRM()


def _arithmetic(arg: str | None, ctx: PRMContext) -> ProcessRewardModel:
    _no_arg("arithmetic", arg)
    from langchain_trim.prm.arithmetic import ArithmeticPRM

    return ArithmeticPRM()


def _none(arg: str | None, ctx: PRMContext) -> None:
    _no_arg("none", arg)
    return None


def _vllm(arg: str | None, ctx: PRMContext) -> ProcessRewardModel:
    """``<model>@<url>[,<url>...]``: one server, or a pool of them."""
    model, _, urls = (arg or "").partition("@")
    hosts = [u.strip() for u in urls.split(",") if u.strip()]
    if not model or not hosts:
        raise ValueError("expected vllm:<model>@<url>[,<url>...]")
    if len(hosts) == 1:
        from langchain_trim.prm.vllm_prm import VLLMServerPRM

        return VLLMServerPRM(hosts[0], model)
    from langchain_trim.pool import vllm_prm_pool

    return vllm_prm_pool(hosts, model)


register_prm("probe", _probe)
register_prm("judge", _judge)
register_prm("confidence", _confidence)
register_prm("arithmetic", _arithmetic)
register_prm("none", _none)
register_prm("vllm", _vllm)

__all__ = [
    "PRMContext",
    "PRMFactory",
    "check_prm_spec",
    "make_prm",
    "register_prm",
    "served_prm_spec",
]
