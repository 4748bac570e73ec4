"""Package attributes imported on first use, so that importing a package stays light."""

from __future__ import annotations

import importlib
from collections.abc import Mapping


def lazy_attribute(package: str, modules: Mapping[str, str], name: str) -> object:
    """``name`` from the module ``modules`` maps it to, for a package's ``__getattr__``.

    >>> lazy_attribute("pkg", {"sqrt": "math"}, "sqrt")(4.0)
    2.0
    """
    module = modules.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
