"""Package attributes imported on first use, so that importing a package stays light."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping


def lazy_attribute(package: str, modules: Mapping[str, str], name: str) -> object:
    """``name`` from the module ``modules`` maps it to, for a package's ``__getattr__``.

    >>> lazy_attribute("pkg", {"sqrt": "math"}, "sqrt")(4.0)
    2.0
    """
    module = modules.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def lazy_getattr(package: str, modules: Mapping[str, Iterable[str]]) -> Callable[[str], object]:
    """A package's ``__getattr__`` that imports each module's names on first use.

    >>> __getattr__ = lazy_getattr("pkg", {"math": ("sqrt", "pi")})
    >>> __getattr__("sqrt")(4.0), round(__getattr__("pi"), 2)
    (2.0, 3.14)
    """
    names = {name: module for module, listed in modules.items() for name in listed}

    def __getattr__(name: str) -> object:
        return lazy_attribute(package, names, name)

    return __getattr__
