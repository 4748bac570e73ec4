"""Fit TRIM-Agg or TRIM-Seq with PPO and save it (safetensors + JSON): ``trim train``.

:func:`train_policy` is the plain function behind the ``trim train`` command, which
imports it only when it runs (the rest of the CLI needs no training dependencies).
Environments: ``sim:official`` (the anchor-corrected simulator of the official MATH-500
setting), ``sim:official-raw``, ``sim:<calibration.json>`` or ``replay:<traces.jsonl>``
(recorded runs; see :mod:`langchain_trim.lab.replay` for what a replay can train).

With the defaults (10 passes of 2048 simulated questions) TRIM-Agg trains in about a
minute and TRIM-Seq in two or three on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from langchain_trim.lab.ppo import PPOConfig, TrainResult, train_ppo

PolicyKind = Literal["agg", "seq"]


def load_env(spec: str, *, step_max_tokens: int = 512) -> tuple[Any, int | None]:
    """``(environment, question count or None)`` from an env spec."""
    kind, _, arg = spec.partition(":")
    if kind == "replay":
        from langchain_trim.lab.replay import ReplayEnv

        lines = Path(arg).read_text(encoding="utf-8").splitlines()
        env = ReplayEnv(
            [json.loads(line) for line in lines if line.strip()], step_max_tokens=step_max_tokens
        )
        return env, len(env)
    from langchain_trim.lab.sim.official import make_env

    return make_env(spec, step_max_tokens=step_max_tokens), None


def train_policy(
    kind: PolicyKind,
    *,
    lam: float = 8e-4,
    env: str = "sim:official",
    out: str | Path | None = None,
    seed: int = 0,
    epochs: int = 10,
    train_questions: int = 2048,
    val_questions: int = 2000,
    progress: bool = True,
    **ppo: Any,
) -> TrainResult:
    """Train a fresh ``kind`` policy on ``env`` for price ``lam``; save it to ``out``."""
    if kind not in ("agg", "seq"):
        raise ValueError(f"policy must be 'agg' or 'seq', got {kind!r}")
    environment, n_questions = load_env(env)
    config = PPOConfig(
        lam=lam,
        seed=seed,
        epochs=epochs,
        train_questions=train_questions,
        val_questions=val_questions,
        fresh_episodes=n_questions is None,
        **ppo,
    )
    from langchain_trim.lab.nets import init_policy  # torch

    init = init_policy(kind, seed, env=env, lam=lam)
    result = train_ppo(init, environment, config, progress=progress, n_questions=n_questions)
    if out is not None:
        result.policy.save(out, record={"env": env, **result.record()})
    return result


__all__ = ["PolicyKind", "load_env", "train_policy"]
