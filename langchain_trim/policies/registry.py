"""Named routing policies, so that CLIs and configs can say ``thr:0.3`` or ``agg``.

A spec is ``name`` or ``name:argument``; each name maps to a factory that receives the
argument string (or ``None``).  New policies register themselves with
:func:`register_policy`; a new backend is one file plus one registration.
"""

from __future__ import annotations

from collections.abc import Callable

from langchain_trim.errors import InvalidInputError
from langchain_trim.policies.base import RoutingPolicy
from langchain_trim.policies.threshold import ThresholdPolicy

PolicyFactory = Callable[[str | None], RoutingPolicy]

_REGISTRY: dict[str, PolicyFactory] = {}


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Make ``name[:arg]`` resolvable by :func:`make_policy`."""
    if not name or ":" in name or "," in name:
        raise ValueError(f"invalid policy name {name!r}")
    _REGISTRY[name] = factory


def make_policy(spec: str) -> RoutingPolicy:
    """Build a policy from ``name`` or ``name:arg``.

    >>> make_policy("thr:0.3").name
    'thr:0.3'
    >>> make_policy("strong").decide  # doctest: +ELLIPSIS
    <bound method ThresholdPolicy.decide of ThresholdPolicy(1)>
    """
    name, _, arg = spec.strip().partition(":")
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise InvalidInputError(f"unknown policy {name!r} in {spec!r}; known: {known}")
    try:
        return _REGISTRY[name](arg or None)
    except InvalidInputError:
        raise  # already says what is wrong (e.g. PolicyFileError names the file)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"bad policy spec {spec!r}: {exc}") from exc


def expand_specs(specs: str) -> list[str]:
    """``"thr:0.1,0.3 weak"`` → ``["thr:0.1", "thr:0.3", "weak"]`` (comma lists share a name)."""
    out: list[str] = []
    for chunk in specs.replace(";", " ").split():
        name, _, args = chunk.partition(":")
        if not args:
            out.append(name)
            continue
        out.extend(f"{name}:{a}" for a in args.split(",") if a)
    return out


def number_policy(
    name: str, build: Callable[[float], RoutingPolicy], needs: str, example: str
) -> PolicyFactory:
    """A factory for ``name:<number>`` that builds ``build(float(number))``.

    ``needs`` says what the number is and ``example`` gives one, for the error raised
    when it is missing.
    """

    def factory(arg: str | None) -> RoutingPolicy:
        if arg is None:
            raise ValueError(f"{name} needs {needs}, e.g. {name}:{example}")
        return build(float(arg))

    return factory


# TRIM-Thr: escalate when the PRM score < threshold
register_policy("thr", number_policy("thr", ThresholdPolicy, "a threshold", "0.5"))


def _fitted(arg: str | None) -> RoutingPolicy:
    if arg is None:
        raise ValueError("fit needs a file written by `trim fit`, e.g. fit:policy.json")
    from langchain_trim.eval.fit import read_policy_file

    return make_policy(str(read_policy_file(arg)["policy"]))


register_policy("fit", _fitted)  # the threshold chosen by `trim fit` on your dev traces
register_policy("weak", lambda _: ThresholdPolicy(0.0))  # always weak (no PRM calls)
register_policy("strong", lambda _: ThresholdPolicy(1.0))  # always strong (no PRM calls)

__all__ = ["PolicyFactory", "expand_specs", "make_policy", "number_policy", "register_policy"]
