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
    from langchain_trim.sim.calibration import Calibration

    spec, _, cal_path = (arg or "").partition("@")
    lam_text, _, mode = spec.partition(":")
    if mode not in ("", "filter", "reset"):
        raise ValueError(f"pomdp belief mode must be 'filter' or 'reset', got {mode!r}")
    lam = float(lam_text) if lam_text else DEFAULT_LAMBDA
    if cal_path:
        cal = Calibration.load(cal_path)
    else:
        from langchain_trim.sim.official import official_calibration

        try:
            cal = official_calibration()
        except FileNotFoundError as exc:
            raise ValueError(
                "pomdp needs the official reference tables ($TRIM_REFERENCE) or a "
                "calibration: pomdp:<lambda>@<calibration.json>"
            ) from exc
    return PomdpPolicy(cal, lam, belief="reset" if mode == "reset" else "filter")


register_policy("agg", _agg, "TRIM-Agg (PPO MLP on aggregates); agg:<weights.safetensors>")
register_policy("seq", _seq, "TRIM-Seq (PPO GRU on the score history); seq:<weights.safetensors>")
register_policy(
    "pomdp", _pomdp, "TRIM-POMDP solved for price lambda; pomdp:<lambda>[:reset][@<cal.json>]"
)

__all__: list[str] = []
