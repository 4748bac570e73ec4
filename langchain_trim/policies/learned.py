"""A routing policy that is a small actor-critic network: numpy inference, safetensors files.

TRIM-Agg and TRIM-Seq share everything but their inputs and encoder: the graph asks for a
PRM score every step, the actor's two logits pick ``continue``/``escalate`` (greedy at
evaluation, sampled in training), and the critic estimates the return for PPO.
Inference runs on the saved weights with numpy alone (torch is only needed to train),
costs tens of microseconds per step, and never needs a GPU.

A saved policy is one ``.safetensors`` file: the weights, with the JSON config in the
header metadata (never pickle), plus a human-readable ``.json`` sidecar with the same
config and the training record.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from langchain_trim.policies.base import RouteDecision, RouteObservation
from langchain_trim.state import Action

CONFIG_KEY = "trim_policy_config"
"""safetensors metadata key holding the policy config as JSON."""
FORMAT_VERSION = 1

P = TypeVar("P", bound="LearnedPolicy")


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """PyTorch ``LayerNorm`` over the last axis (eps 1e-5)."""
    centred = x - x.mean(axis=-1, keepdims=True)
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + 1e-5) * weight + bias


def mlp_heads(params: Mapping[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two Linear+LayerNorm+Tanh layers, then the actor logits and the critic value.

    Parameter names match :mod:`langchain_trim.policies.nets` (``enc1``, ``ln1``, ...).
    """
    h = x
    for i in (1, 2):
        h = h @ params[f"enc{i}.weight"].T + params[f"enc{i}.bias"]
        h = np.tanh(layer_norm(h, params[f"ln{i}.weight"], params[f"ln{i}.bias"]))
    logits = h @ params["actor.weight"].T + params["actor.bias"]
    value = (h @ params["critic.weight"].T + params["critic.bias"])[..., 0]
    return logits, value


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class LearnedPolicy(ABC):
    """Base of the network policies; subclasses define the inputs and the encoder."""

    kind: ClassVar[str] = ""

    def __init__(self, params: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.set_params(params)
        self.config: dict[str, Any] = dict(config)
        self.config.setdefault("kind", self.kind)
        self.label = str(self.config.get("label") or self.kind)

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
    def torch_module(self) -> Any:
        """A trainable torch twin holding these weights (imports torch; training only)."""

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
    def load(cls: type[P], path: str | Path) -> P:
        """Read a file written by :meth:`save` (only the ``.safetensors`` file is needed)."""
        from safetensors import safe_open

        path = Path(path)
        if path.suffix != ".safetensors" and not path.exists():
            path = path.with_suffix(".safetensors")
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            params = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        if CONFIG_KEY not in meta:
            raise ValueError(f"{path} is not a langchain-trim policy (no {CONFIG_KEY} metadata)")
        config = json.loads(meta[CONFIG_KEY])
        if config.get("kind") != cls.kind:
            raise ValueError(f"{path} holds a {config.get('kind')!r} policy, not {cls.kind!r}")
        return cls(params, config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r})"


__all__ = ["CONFIG_KEY", "LearnedPolicy", "layer_norm", "log_softmax", "mlp_heads"]
