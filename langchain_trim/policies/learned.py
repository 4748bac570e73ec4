"""A routing policy that is a small actor-critic network: numpy inference, safetensors files.

TRIM-Agg and TRIM-Seq share everything but their inputs and encoder: the graph asks for a
PRM score every step, the actor's two logits pick ``continue``/``escalate`` (greedy at
evaluation, sampled in training), and the critic estimates the return for PPO.
Inference runs on the saved weights with numpy alone (torch is only needed to train),
costs tens of microseconds per step, and never needs a GPU.

A saved policy is one ``.safetensors`` file: the weights, with the JSON config in the
header metadata (never pickle), plus a human-readable ``.json`` sidecar with the same
config and the training record.

Weights are untrusted input: at load (and whenever a policy is built from arrays) every
tensor name, shape and dtype is checked against the architecture its config describes,
every value must be finite, and a sidecar that is present must hold the same config.
Anything else raises :class:`~langchain_trim.errors.PolicyFileError` at once, so a bad
file never reaches a routing decision (where NaN logits would read as "never escalate").
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from langchain_trim.errors import PolicyFileError
from langchain_trim.policies.base import RouteDecision, RouteObservation
from langchain_trim.state import Action

CONFIG_KEY = "trim_policy_config"
"""safetensors metadata key holding the policy config as JSON."""
FORMAT_VERSION = 1
MAX_WIDTH = 4096
"""Largest layer width (and history length) a config may ask for."""

Shapes = dict[str, tuple[int, ...]]

P = TypeVar("P", bound="LearnedPolicy")

_DATA = Path(__file__).resolve().parent.parent / "data"


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """PyTorch ``LayerNorm`` over the last axis (eps 1e-5)."""
    centred = x - x.mean(axis=-1, keepdims=True)
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + 1e-5) * weight + bias


def mlp_heads(params: Mapping[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two Linear+LayerNorm+Tanh layers, then the actor logits and the critic value.

    Parameter names match :mod:`langchain_trim.lab.nets` (``enc1``, ``ln1``, ...).
    """
    h = x
    for i in (1, 2):
        h = h @ params[f"enc{i}.weight"].T + params[f"enc{i}.bias"]
        h = np.tanh(layer_norm(h, params[f"ln{i}.weight"], params[f"ln{i}.bias"]))
    logits = h @ params["actor.weight"].T + params["actor.bias"]
    value = (h @ params["critic.weight"].T + params["critic.bias"])[..., 0]
    return logits, value


def trunk_shapes(n_in: int, hidden: int) -> Shapes:
    """Tensor shapes of the shared trunk and heads (:func:`mlp_heads`) for ``n_in`` inputs."""
    return {
        "enc1.weight": (hidden, n_in),
        "enc1.bias": (hidden,),
        "ln1.weight": (hidden,),
        "ln1.bias": (hidden,),
        "enc2.weight": (hidden, hidden),
        "enc2.bias": (hidden,),
        "ln2.weight": (hidden,),
        "ln2.bias": (hidden,),
        "actor.weight": (2, hidden),
        "actor.bias": (2,),
        "critic.weight": (1, hidden),
        "critic.bias": (1,),
    }


def config_int(config: Mapping[str, Any], key: str, default: int, source: str) -> int:
    """``config[key]`` as an int in ``[1, MAX_WIDTH]`` (else :class:`PolicyFileError`)."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WIDTH:
        raise PolicyFileError(f"{source}: config {key!r} must be an int in [1, {MAX_WIDTH}]")
    return value


def check_params(
    params: Mapping[str, Any], expected: Shapes, source: str, *, file_dtype: bool = False
) -> None:
    """Names, shapes, dtype and finiteness of ``params`` against ``expected``.

    ``file_dtype``: the arrays come from a file and must be float32 (what :meth:`save`
    writes); arrays built in memory may be any float type.
    """
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise PolicyFileError(
            f"{source}: tensors do not match the architecture (missing {missing or 'none'}, "
            f"unexpected {extra or 'none'})"
        )
    for name, shape in expected.items():
        arr = np.asarray(params[name])
        float_ok = arr.dtype == np.float32 or (
            not file_dtype and np.issubdtype(arr.dtype, np.floating)
        )
        if not float_ok:
            raise PolicyFileError(f"{source}: tensor {name} has dtype {arr.dtype}, not float32")
        if tuple(arr.shape) != shape:
            raise PolicyFileError(
                f"{source}: tensor {name} has shape {tuple(arr.shape)}, expected {shape}"
            )
        if not np.isfinite(arr).all():
            raise PolicyFileError(f"{source}: tensor {name} holds NaN or infinite values")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class LearnedPolicy(ABC):
    """Base of the network policies; subclasses define the inputs and the encoder."""

    kind: ClassVar[str] = ""
    path: Path | None = None
    """The weights file it was loaded from (``None`` when built in memory)."""

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        config: Mapping[str, Any],
        *,
        source: str = "policy weights",
        _file_dtype: bool = False,
    ) -> None:
        self.config: dict[str, Any] = dict(config)
        self.config.setdefault("kind", self.kind)
        self.label = str(self.config.get("label") or self.kind)
        scale = self.config.get("budget_scale", 1.0)
        if (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float))
            or not (math.isfinite(scale) and scale > 0)
        ):
            raise PolicyFileError(f"{source}: config 'budget_scale' must be a finite number > 0")
        check_params(params, self.expected_shapes(source), source, file_dtype=_file_dtype)
        self.params: dict[str, np.ndarray] = {}
        self.set_params(params)

    def set_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Replace the weights (and drop anything cached from the old ones)."""
        self.params = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}

    # -- what subclasses define --------------------------------------------------------------
    @abstractmethod
    def encode(self, observation: RouteObservation) -> np.ndarray:
        """The observation as one flat float32 vector of :attr:`input_size`."""

    @abstractmethod
    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(logits [N, 2], values [N])`` for encoded inputs ``x [N, input_size]``."""

    @property
    @abstractmethod
    def input_size(self) -> int:
        """Length of :meth:`encode`'s vector."""

    @abstractmethod
    def expected_shapes(self, source: str = "policy weights") -> Shapes:
        """Every tensor's name and shape for this config (raises on a bad config)."""

    # -- RoutingPolicy -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.label

    def needs_score(self, observation: RouteObservation) -> bool:
        return True

    def evaluate_one(self, observation: RouteObservation) -> tuple[np.ndarray, np.ndarray, float]:
        """``(encoded input, logits [2], value)`` for one observation (the inference path)."""
        x = self.encode(observation)
        logits, value = self.forward(x[None, :])
        return x, logits[0], float(value[0])

    def probabilities(self, observation: RouteObservation) -> np.ndarray:
        """``[P(continue), P(escalate)]`` of the actor."""
        _, logits, _ = self.evaluate_one(observation)
        return np.exp(log_softmax(logits))

    def decide(self, observation: RouteObservation) -> RouteDecision:
        if observation.score is None:
            return RouteDecision("continue", "unscored draft is kept")
        p = float(self.probabilities(observation)[1])
        action: Action = "escalate" if p > 0.5 else "continue"
        return RouteDecision(action, f"{self.kind}: P(escalate) {p:.3f}")

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path, record: Mapping[str, Any] | None = None) -> Path:
        """Write ``path`` (``.safetensors``) and a ``.json`` sidecar; returns the weights path.

        ``record`` (e.g. the training history) goes to the sidecar only.
        """
        from safetensors.numpy import save

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {**self.config, "format_version": FORMAT_VERSION}
        tensors = {k: np.ascontiguousarray(v) for k, v in self.params.items()}
        path.write_bytes(save(tensors, metadata={CONFIG_KEY: json.dumps(config, sort_keys=True)}))
        sidecar = {"config": config, "record": dict(record or {})}
        path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1) + "\n")
        return path

    @classmethod
    def official_weights(cls) -> Path:
        """Where the shipped weights of this kind lie: trained by ``trim train <kind>`` on
        ``sim:official`` with λ = 8e-4 (see the ``.json`` beside them)."""
        return _DATA / f"{cls.kind}_official.safetensors"

    @classmethod
    def default(cls: type[P]) -> P:
        """The shipped weights for the official setting (λ = 8e-4)."""
        return cls.load(cls.official_weights())

    @classmethod
    def load(cls: type[P], path: str | Path) -> P:
        """Read a file written by :meth:`save` (only the ``.safetensors`` file is needed).

        Raises :class:`~langchain_trim.errors.PolicyFileError` (a ``ValueError``) for a
        missing or unreadable file, a config for another policy or a newer format,
        tensors that do not fit the config, non-finite values, or a ``.json`` sidecar
        whose config disagrees with the weights'.
        """
        from safetensors import safe_open

        path = Path(path)
        if path.suffix != ".safetensors" and not path.exists():
            path = path.with_suffix(".safetensors")
        if not path.is_file():
            raise PolicyFileError(f"policy weights {path} do not exist")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                params = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own SafetensorError, or OSError
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PolicyFileError(f"{path} is not a readable safetensors file: {reason}") from exc
        if CONFIG_KEY not in meta:
            raise PolicyFileError(
                f"{path} is not a langchain-trim policy (no {CONFIG_KEY} metadata)"
            )
        try:
            config = json.loads(meta[CONFIG_KEY])
        except ValueError as exc:
            raise PolicyFileError(f"{path}: its {CONFIG_KEY} metadata is not JSON") from exc
        if not isinstance(config, dict):
            raise PolicyFileError(f"{path}: its {CONFIG_KEY} metadata is not a JSON object")
        if config.get("kind") != cls.kind:
            raise PolicyFileError(f"{path} holds a {config.get('kind')!r} policy, not {cls.kind!r}")
        version = config.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise PolicyFileError(
                f"{path} has format_version {version!r}; this langchain-trim reads up to "
                f"{FORMAT_VERSION} (upgrade it)"
            )
        _check_sidecar(path, config)
        policy = cls(params, config, source=str(path), _file_dtype=True)
        policy.path = path
        return policy

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r})"


def _read_sidecar(path: Path) -> Any:
    """The parsed ``.json`` sidecar next to the weights ``path``, or ``None`` if absent."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PolicyFileError(f"sidecar {sidecar} is not readable JSON: {exc}") from exc


def _check_sidecar(path: Path, config: Mapping[str, Any]) -> None:
    """A ``.json`` sidecar next to the weights must hold the weights' config."""
    data = _read_sidecar(path)
    if data is None:
        return
    sidecar = path.with_suffix(".json")
    side = data.get("config") if isinstance(data, dict) else None
    if not isinstance(side, dict):
        raise PolicyFileError(f"sidecar {sidecar} has no 'config' object")
    differ = sorted(k for k in set(side) | set(config) if side.get(k) != config.get(k))
    if differ:
        raise PolicyFileError(
            f"sidecar {sidecar} disagrees with the weights' config on {differ}; "
            "the two files do not belong together"
        )


def simulated_point(path: str | Path) -> tuple[float, float] | None:
    """Accuracy and strong tokens per question the policy reached in the simulator it was
    trained in (its sidecar's ``record.best``, written by ``trim train``), or ``None``
    when there is no sidecar or it records no such point.

    A trained policy is only as good as its simulator; comparing this point with real
    traces of the same policy (``trim report`` does) is how a user sees the two disagree.
    Raises :class:`~langchain_trim.errors.PolicyFileError` for a sidecar that is not
    valid JSON or holds a malformed point.
    """
    path = Path(path)
    data = _read_sidecar(path)
    record = data.get("record") if isinstance(data, dict) else None
    best = record.get("best") if isinstance(record, dict) else None
    if best is None:
        return None
    accuracy = best.get("accuracy") if isinstance(best, dict) else None
    tokens = best.get("mean_strong_tokens") if isinstance(best, dict) else None
    if not (
        isinstance(accuracy, int | float)
        and isinstance(tokens, int | float)
        and 0.0 <= accuracy <= 1.0
        and math.isfinite(tokens)
        and tokens >= 0.0
    ):
        raise PolicyFileError(
            f"sidecar {path.with_suffix('.json')}: record.best needs an accuracy in [0, 1] "
            f"and finite mean_strong_tokens >= 0, got {best!r}"
        )
    return float(accuracy), float(tokens)


__all__ = [
    "CONFIG_KEY",
    "LearnedPolicy",
    "check_params",
    "config_int",
    "layer_norm",
    "log_softmax",
    "mlp_heads",
    "simulated_point",
    "trunk_shapes",
]
