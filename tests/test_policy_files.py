"""Policy weights and calibrations are untrusted files: checked at load, one-line errors.

Issue 13, point 6: wrong tensors used to fail at decision time, NaN weights acted as
"always weak", and a missing or corrupt ``agg:``/``pomdp:...@`` file gave a traceback
(exit 1) instead of a one-line error (exit 2).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save
from typer.testing import CliRunner

import langchain_trim.policies.named  # noqa: F401  (registers agg, seq, pomdp)
from langchain_trim.cli import EXIT_BAD_INPUT, app
from langchain_trim.errors import InvalidInputError, PolicyFileError
from langchain_trim.policies import RouteObservation
from langchain_trim.policies.agg import AggPolicy
from langchain_trim.policies.calibration import synthetic_calibration
from langchain_trim.policies.learned import CONFIG_KEY, LearnedPolicy
from langchain_trim.policies.pomdp_model import PomdpModel
from langchain_trim.policies.pomdp_solver import solve
from langchain_trim.policies.registry import make_policy
from langchain_trim.policies.seq import SeqPolicy

OBS = RouteObservation(1, 0.02, (0.95,), 80, (50,), 0, None, 30)
cli = CliRunner()


def shipped(kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    policy: LearnedPolicy = AggPolicy.default() if kind == "agg" else SeqPolicy.default()
    return {k: v.copy() for k, v in policy.params.items()}, dict(policy.config)


def write(path: Path, params: dict[str, np.ndarray], config: dict[str, Any]) -> Path:
    path.write_bytes(save(params, metadata={CONFIG_KEY: json.dumps(config)}))
    return path


def _nan(p: dict[str, np.ndarray], c: dict[str, Any]) -> None:
    p["actor.weight"][0, 0] = np.nan


def _inf(p: dict[str, np.ndarray], c: dict[str, Any]) -> None:
    p["enc1.bias"][3] = np.inf


def _shape(p: dict[str, np.ndarray], c: dict[str, Any]) -> None:
    p["enc2.weight"] = p["enc2.weight"][:, :10].copy()


def _missing(p: dict[str, np.ndarray], c: dict[str, Any]) -> None:
    del p["critic.bias"]


def _extra(p: dict[str, np.ndarray], c: dict[str, Any]) -> None:
    p["backdoor.weight"] = np.zeros(3, np.float32)


def _dtype(p: dict[str, np.ndarray], c: dict[str, Any]) -> None:
    p["ln1.weight"] = p["ln1.weight"].astype(np.float64)


def _hidden(p: dict[str, np.ndarray], c: dict[str, Any]) -> None:
    c["hidden"] = 32  # the config no longer describes the tensors


def _bad_hidden(p: dict[str, np.ndarray], c: dict[str, Any]) -> None:
    c["hidden"] = "64"


def _bad_scale(p: dict[str, np.ndarray], c: dict[str, Any]) -> None:
    c["budget_scale"] = float("nan")


def _newer(p: dict[str, np.ndarray], c: dict[str, Any]) -> None:
    c["format_version"] = 99


DAMAGE: dict[str, tuple[Callable[..., None], str]] = {
    "nan": (_nan, "NaN or infinite"),
    "inf": (_inf, "NaN or infinite"),
    "shape": (_shape, "has shape"),
    "missing": (_missing, "missing ['critic.bias']"),
    "extra": (_extra, "unexpected ['backdoor.weight']"),
    "dtype": (_dtype, "dtype float64"),
    "config_disagrees": (_hidden, "has shape"),
    "bad_hidden": (_bad_hidden, "'hidden' must be an int"),
    "bad_scale": (_bad_scale, "budget_scale"),
    "newer_format": (_newer, "format_version 99"),
}


@pytest.mark.parametrize("kind", ["agg", "seq"])
@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_weights_are_rejected_at_load(tmp_path: Path, kind: str, case: str) -> None:
    params, config = shipped(kind)
    damage, message = DAMAGE[case]
    damage(params, config)
    path = write(tmp_path / "p.safetensors", params, config)
    cls = AggPolicy if kind == "agg" else SeqPolicy
    with pytest.raises(PolicyFileError, match=message.replace("[", r"\[").replace("(", r"\(")):
        cls.load(path)
    with pytest.raises(PolicyFileError):
        make_policy(f"{kind}:{path}")


def test_seq_gru_tensors_are_checked_too(tmp_path: Path) -> None:
    params, config = shipped("seq")
    params["gru.weight_hh_l0"][5, 5] = np.nan
    with pytest.raises(PolicyFileError, match=r"gru\.weight_hh_l0"):
        SeqPolicy.load(write(tmp_path / "s.safetensors", params, config))
    params, config = shipped("seq")
    config["gru_hidden"] = 16
    with pytest.raises(PolicyFileError, match="gru"):
        SeqPolicy.load(write(tmp_path / "s.safetensors", params, config))


def test_nan_weights_used_to_route_as_always_weak() -> None:
    """Built in memory the same checks apply: NaN logits never reach a decision."""
    params, config = shipped("agg")
    assert AggPolicy(params, config).decide(OBS).action == "escalate"
    params["actor.bias"][:] = np.nan
    with pytest.raises(PolicyFileError, match=r"actor\.bias"):
        AggPolicy(params, config)


def test_missing_unreadable_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="do not exist"):
        AggPolicy.load(tmp_path / "nope.safetensors")
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(PolicyFileError, match="not a readable safetensors"):
        AggPolicy.load(garbage)
    params, config = shipped("agg")
    foreign = tmp_path / "f.safetensors"
    foreign.write_bytes(save(params))
    with pytest.raises(PolicyFileError, match="not a langchain-trim policy"):
        AggPolicy.load(foreign)
    foreign.write_bytes(save(params, metadata={CONFIG_KEY: "{not json"}))
    with pytest.raises(PolicyFileError, match="not JSON"):
        AggPolicy.load(foreign)
    with pytest.raises(PolicyFileError, match="holds a 'agg' policy, not 'seq'"):
        SeqPolicy.load(write(tmp_path / "a.safetensors", params, config))


def test_sidecar_must_agree_with_the_weights(tmp_path: Path) -> None:
    policy = AggPolicy.default()
    path = policy.save(tmp_path / "mine.safetensors", record={"note": "kept"})
    assert AggPolicy.load(path).params.keys() == policy.params.keys()
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["config"]["lam"] = 0.5
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(PolicyFileError, match=r"disagrees .* \['lam'\]"):
        AggPolicy.load(path)
    path.with_suffix(".json").write_text("{oops")
    with pytest.raises(PolicyFileError, match="not readable JSON"):
        AggPolicy.load(path)
    path.with_suffix(".json").unlink()  # the sidecar is optional
    assert AggPolicy.load(path).label == policy.label


def test_shipped_weights_and_sidecars_pass() -> None:
    from langchain_trim.policies.agg import DEFAULT_WEIGHTS as AGG
    from langchain_trim.policies.seq import DEFAULT_WEIGHTS as SEQ

    assert AggPolicy.load(AGG).decide(OBS).action == "escalate"
    assert SeqPolicy.load(SEQ).decide(OBS).action == "escalate"
    # nothing fit on test problems ships (the legacy embedded weights live in benchmarks/)
    assert not AGG.with_name("agg_embedded.safetensors").exists()
    assert not AGG.with_name("calibration_embedded.json").exists()


def test_pomdp_calibration_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match="does not exist"):
        make_policy(f"pomdp:1e-3@{tmp_path / 'nope.json'}")
    bad = tmp_path / "bad.json"
    bad.write_text('{"p_weak": 2}')
    with pytest.raises(PolicyFileError, match=r"is invalid: p_weak: .*\(\+\d+ more\)") as info:
        make_policy(f"pomdp:1e-3@{bad}")
    assert "\n" not in str(info.value)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(PolicyFileError):
        make_policy(f"pomdp:1e-3@{bad}")


def test_a_damaged_pomdp_solution_cache_is_recomputed(tmp_path: Path) -> None:
    model = PomdpModel.from_calibration(synthetic_calibration(max_steps=6))
    first = solve(model, 1e-3, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    with np.load(path) as data:
        stored = {k: data[k] for k in data.files}
    stored["alphas"] = np.full_like(stored["alphas"], np.nan)
    np.savez_compressed(path, **stored)
    again = solve(model, 1e-3, cache_dir=tmp_path)
    assert not again.cached
    assert all(np.isfinite(a).all() for a in again.alphas)
    assert [a.shape for a in again.alphas] == [a.shape for a in first.alphas]
    path.write_bytes(b"PK\x03\x04 truncated zip")
    assert not solve(model, 1e-3, cache_dir=tmp_path).cached


@pytest.mark.parametrize(
    "spec",
    ["agg:{d}/nope.safetensors", "seq:{d}/garbage.safetensors", "pomdp:1e-3@{d}/nope.json"],
)
def test_cli_gives_one_line_and_exit_2_for_bad_policy_files(tmp_path: Path, spec: str) -> None:
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 100)
    policy = spec.format(d=tmp_path)
    for args in (
        ["solve", "What is 1 + 1?", "--policy", policy],
        ["eval", "--fake", "--out", str(tmp_path / "run"), "-p", policy],
    ):
        result = cli.invoke(app, args)
        assert result.exit_code == EXIT_BAD_INPUT, (args, result.output)
        assert isinstance(result.exception, SystemExit)
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert str(tmp_path) in result.output.replace("\n", "")


def test_policy_file_errors_are_invalid_input() -> None:
    assert issubclass(PolicyFileError, InvalidInputError)
    assert issubclass(PolicyFileError, ValueError)
