"""Registry names for the learned and planned policies: ``agg``, ``seq`` and ``pomdp``.

Importing this module registers them; nothing heavy is imported until a policy is built
(numpy and safetensors for ``agg``/``seq``, numpy and scipy for ``pomdp``), so that
``make_policy("thr:0.3")`` stays light.

* ``agg`` / ``agg:<file.safetensors>`` — TRIM-Agg, the shipped weights (trained on the
  official-setting simulator, λ = 8e-4) or your own from ``trim train``.
* ``seq`` / ``seq:<file.safetensors>`` — TRIM-Seq, likewise.
* ``pomdp`` / ``pomdp:<λ>`` / ``pomdp:<λ>:reset`` / ``pomdp:<λ>@<calibration.json>`` —
  TRIM-POMDP solved for price λ per strong token (default 8e-4) on the anchor-corrected
  official calibration (needs the reference data) or on a calibration file; ``reset``
  restarts the belief every step as the official release does.

>>> from langchain_trim.policies.registry import make_policy
>>> make_policy("agg").name
'agg'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_trim.errors import PolicyFileError
from langchain_trim.policies.base import RoutingPolicy
from langchain_trim.policies.registry import register_policy


def _agg(arg: str | None) -> RoutingPolicy:
    from langchain_trim.policies.agg import AggPolicy

    return AggPolicy.load(arg) if arg else AggPolicy.default()


def _seq(arg: str | None) -> RoutingPolicy:
    from langchain_trim.policies.seq import SeqPolicy

    return SeqPolicy.load(arg) if arg else SeqPolicy.default()


def _pomdp(arg: str | None) -> RoutingPolicy:
    from langchain_trim.policies.pomdp import DEFAULT_LAMBDA, PomdpPolicy

    spec, _, cal_path = (arg or "").partition("@")
    lam_text, _, mode = spec.partition(":")
    if mode not in ("", "filter", "reset"):
        raise ValueError(f"pomdp belief mode must be 'filter' or 'reset', got {mode!r}")
    lam = float(lam_text) if lam_text else DEFAULT_LAMBDA
    if cal_path:
        cal = _load_calibration(cal_path)
    else:
        from langchain_trim.policies.calibration import official_calibration

        try:
            cal = official_calibration()
        except FileNotFoundError as exc:
            raise ValueError(
                "pomdp needs the official reference tables ($TRIM_REFERENCE) or a "
                "calibration: pomdp:<lambda>@<calibration.json>"
            ) from exc
    return PomdpPolicy(cal, lam, belief="reset" if mode == "reset" else "filter")


def _load_calibration(path: str) -> Any:
    """A calibration file, or a one-line :class:`PolicyFileError` saying what is wrong."""
    from pydantic import ValidationError

    from langchain_trim.policies.calibration import Calibration

    if not Path(path).is_file():
        raise PolicyFileError(f"calibration {path} does not exist")
    try:
        return Calibration.load(path)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "file"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise PolicyFileError(
            f"calibration {path} is invalid: {where}: {first.get('msg')}{more}"
        ) from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PolicyFileError(f"calibration {path} cannot be read: {exc}") from exc


register_policy("agg", _agg)  # TRIM-Agg (PPO MLP on aggregates); agg:<weights.safetensors>
register_policy("seq", _seq)  # TRIM-Seq (PPO GRU on the score history); seq:<weights>
register_policy("pomdp", _pomdp)  # TRIM-POMDP for price λ; pomdp:<λ>[:reset][@<cal.json>]

__all__: list[str] = []
