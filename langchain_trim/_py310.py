"""Python 3.10 support: context variables do not follow a config into asyncio tasks there.

LangGraph's stream writer and task calls read the run's config from a context variable,
so on Python < 3.11 the config is set around them by hand.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config

SET_CONFIG_VAR = sys.version_info < (3, 11)
"""Whether to set the config by hand (read at each call, so a test can turn it on)."""


@contextmanager
def in_runnable_context(config: RunnableConfig | None) -> Iterator[None]:
    """Make ``config`` what ``langgraph.config.get_config()`` returns (Python < 3.11 only)."""
    if not SET_CONFIG_VAR or config is None:
        yield
        return
    token = var_child_runnable_config.set(config)
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)
