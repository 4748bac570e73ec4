"""``trim train``: fit TRIM-Agg or TRIM-Seq with PPO and save it (safetensors + JSON).

:func:`train_policy` is the plain function; :func:`train` is the typer command that the
CLI mounts (``app.command("train")(train)``).  Environments: ``sim:official`` (the
anchor-corrected simulator of the official MATH-500 setting), ``sim:official-raw``,
``sim:<calibration.json>`` or ``replay:<traces.jsonl>`` (recorded runs; see
:mod:`langchain_trim.policies.replay` for what a replay can train).

With the defaults (10 passes of 2048 simulated questions) TRIM-Agg trains in about a
minute and TRIM-Seq in two or three on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from langchain_trim.policies.learned import LearnedPolicy
from langchain_trim.policies.ppo import PPOConfig, TrainResult, train_ppo

PolicyKind = Literal["agg", "seq"]


def load_env(spec: str, *, step_max_tokens: int = 512) -> tuple[Any, int | None]:
    """``(environment, question count or None)`` from an env spec."""
    kind, _, arg = spec.partition(":")
    if kind == "replay":
        from langchain_trim.policies.replay import ReplayEnv

        lines = Path(arg).read_text(encoding="utf-8").splitlines()
        env = ReplayEnv(
            [json.loads(line) for line in lines if line.strip()], step_max_tokens=step_max_tokens
        )
        return env, len(env)
    from langchain_trim.sim.official import make_env

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
    from langchain_trim.policies.agg import AggPolicy
    from langchain_trim.policies.seq import SeqPolicy

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
    init: LearnedPolicy = (
        AggPolicy.init(seed, env=env, lam=lam)
        if kind == "agg"
        else SeqPolicy.init(seed, env=env, lam=lam)
    )
    result = train_ppo(init, environment, config, progress=progress, n_questions=n_questions)
    if out is not None:
        result.policy.save(out, record={"env": env, **result.record()})
    return result


def train(
    policy: Annotated[str, typer.Argument(help="agg (TRIM-Agg) or seq (TRIM-Seq)")],
    lam: Annotated[
        float, typer.Option("--lam", "--lambda", help="price of one strong token")
    ] = 8e-4,
    env: Annotated[
        str,
        typer.Option(
            help="sim:official, sim:official-raw, sim:<calibration.json> or replay:<traces.jsonl>"
        ),
    ] = "sim:official",
    out: Annotated[
        Path | None, typer.Option(help="output .safetensors (default: <policy>_<lam>.safetensors)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the network, sampling and episodes")] = 0,
    epochs: Annotated[int, typer.Option(help="passes of --train-questions questions")] = 10,
    train_questions: Annotated[int, typer.Option(help="questions per pass")] = 2048,
    val_questions: Annotated[int, typer.Option(help="validation questions")] = 2000,
    patience: Annotated[
        int, typer.Option(help="stop after this many validations without gain (0: never)")
    ] = 16,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train TRIM-Agg or TRIM-Seq with PPO and save safetensors weights + a JSON sidecar."""
    if policy not in ("agg", "seq"):
        raise typer.BadParameter(f"policy must be 'agg' or 'seq', got {policy!r}")
    target = out or Path(f"{policy}_{lam:g}.safetensors")
    result = train_policy(
        policy,  # type: ignore[arg-type]
        lam=lam,
        env=env,
        out=target,
        seed=seed,
        epochs=epochs,
        train_questions=train_questions,
        val_questions=val_questions,
        progress=progress,
        patience=patience or None,
    )
    best = result.best
    typer.echo(
        f"{policy} λ={lam:g}: validation accuracy {best.accuracy:.3f}, "
        f"{best.mean_strong_tokens:.1f} strong tokens/question, objective {best.objective:.4f} "
        f"(batch {best.batch}/{result.batches}, {result.seconds:.0f} s) -> {target}"
    )


__all__ = ["PolicyKind", "load_env", "train", "train_policy"]
