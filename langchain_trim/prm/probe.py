"""The trained probe PRM: a logistic head on frozen llama.cpp step features.

A small model's token probabilities — above all those of the digits a step writes —
separate right from wrong steps far better than asking the same model "is this step
correct?".  The head (standardisation + logistic weights) is stored as safetensors with
a JSON card that records the encoder, the training data and the measured quality; no
pickle anywhere.

A head may carry a :class:`Blend`: a second logistic stage over the head's logit and the
untrained number confidence (the weak model's least likely digit), fit on held-out
scores of two domains.  The head alone is trained on competition maths (the only
hand-labelled training data); the digits carry most of the signal on word problems.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from langchain_trim.errors import ModelNotFoundError
from langchain_trim.prm.base import BaseProcessRewardModel, PRMItem
from langchain_trim.prm.encoder import FEATURE_VERSION, LlamaStepEncoder

DEFAULT_HEAD = "probe_qwen2.5-coder-0.5b"
"""Name of the head shipped in ``langchain_trim/data`` (``<name>.safetensors`` + ``.json``)."""


def _with(stem: Path, suffix: str) -> Path:
    """``stem`` + ``suffix`` (``Path.with_suffix`` would eat the ".5b" of a model name)."""
    return stem.parent / (stem.name + suffix)


def with_context(features: np.ndarray) -> np.ndarray:
    """Append each row's difference to the column-wise minimum of the rows before it.

    A step is judged against the solution so far (digits far less certain than any
    earlier step's, ...), which transfers across datasets better than absolute levels.
    The first step's differences are 0.

    >>> with_context(np.array([[1.0], [3.0], [0.5]])).tolist()
    [[1.0, 0.0], [3.0, 2.0], [0.5, -0.5]]
    """
    prev_min = np.minimum.accumulate(features, axis=0)
    shifted = np.concatenate([features[:1], prev_min[:-1]], axis=0)
    return np.concatenate([features, features - shifted], axis=1)


def number_confidence(has_digits: np.ndarray, digit_logprob_min: np.ndarray) -> np.ndarray:
    """Probability of a step's least likely digit token; 1 for a step without numbers.

    >>> number_confidence(np.array([1.0, 0.0]), np.log(np.array([0.25, 0.5]))).tolist()
    [0.25, 1.0]
    """
    return np.where(has_digits > 0, np.exp(np.minimum(digit_logprob_min, 0.0)), 1.0)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


@dataclass
class Blend:
    """``sigmoid(((u - mean) / std) @ w + b)`` over ``u = [logit head, logit number
    confidence, has_digits]``; ``columns``: where ``has_digits`` and ``digit_logprob_min``
    are in the encoder's rows."""

    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray
    bias: float
    columns: np.ndarray

    @staticmethod
    def inputs(head_prob: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """The blend's inputs for one solution (``rows``: the encoder's full rows)."""
        has, low = rows[:, int(columns[0])], rows[:, int(columns[1])]
        conf = number_confidence(has, low)
        return np.column_stack([_logit(head_prob), _logit(conf), (has > 0).astype(float)])

    def predict(self, head_prob: np.ndarray, rows: np.ndarray) -> np.ndarray:
        u = self.inputs(head_prob, rows, self.columns)
        z = ((u - self.mean) / self.std) @ self.weight + self.bias
        return _sigmoid(z)


@dataclass
class ProbeHead:
    """Standardise, then logistic regression: ``sigmoid(((x - mean) / std) @ w + b)``."""

    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray
    bias: float
    card: dict[str, Any] = field(default_factory=dict)
    """Encoder, feature version, training data, chosen threshold, measured quality."""
    columns: np.ndarray | None = None
    """Which encoder feature columns the head reads (``None``: all)."""
    blend: Blend | None = None
    """Optional second stage with the number confidence (see :class:`Blend`)."""

    @property
    def context(self) -> bool:
        """Whether the head also reads :func:`with_context` differences (card ``context``)."""
        return bool(self.card.get("context"))

    def transform(self, features: np.ndarray) -> np.ndarray:
        """The head's inputs from one solution's encoder rows (in step order)."""
        if self.columns is not None:
            features = features[:, self.columns]
        return with_context(features) if self.context else features

    def predict_head(self, features: np.ndarray) -> np.ndarray:
        """The logistic head alone (without the blend)."""
        x = self.transform(features)
        z = ((x - self.mean) / self.std) @ self.weight + self.bias
        return _sigmoid(z)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probability that each step is right; ``features``: one solution's rows, in order."""
        prob = self.predict_head(features)
        return prob if self.blend is None else self.blend.predict(prob, features)

    def save(self, path_stem: str | Path) -> None:
        from safetensors.numpy import save_file

        stem = Path(path_stem)
        tensors = {
            "mean": self.mean.astype(np.float32),
            "std": self.std.astype(np.float32),
            "weight": self.weight.astype(np.float32),
            "bias": np.array([self.bias], dtype=np.float32),
        }
        if self.columns is not None:
            tensors["columns"] = np.asarray(self.columns, dtype=np.int64)
        if self.blend is not None:
            tensors["blend.mean"] = self.blend.mean.astype(np.float32)
            tensors["blend.std"] = self.blend.std.astype(np.float32)
            tensors["blend.weight"] = self.blend.weight.astype(np.float32)
            tensors["blend.bias"] = np.array([self.blend.bias], dtype=np.float32)
            tensors["blend.columns"] = np.asarray(self.blend.columns, dtype=np.int64)
        save_file(
            tensors,
            str(_with(stem, ".safetensors")),
        )
        _with(stem, ".json").write_text(json.dumps(self.card, indent=2) + "\n")

    @classmethod
    def load(cls, path_stem: str | Path) -> ProbeHead:
        from safetensors.numpy import load_file

        stem = Path(path_stem)
        weights = _with(stem, ".safetensors")
        if not weights.is_file():
            raise ModelNotFoundError(f"probe head {weights} does not exist")
        tensors = load_file(str(weights))
        card = json.loads(_with(stem, ".json").read_text())
        if card.get("feature_version") != FEATURE_VERSION:
            raise ModelNotFoundError(
                f"probe head {stem} was trained on feature version {card.get('feature_version')}"
                f", this package computes version {FEATURE_VERSION}: retrain it"
            )
        blend = None
        if "blend.weight" in tensors:
            blend = Blend(
                mean=tensors["blend.mean"],
                std=tensors["blend.std"],
                weight=tensors["blend.weight"],
                bias=float(tensors["blend.bias"][0]),
                columns=tensors["blend.columns"],
            )
        return cls(
            mean=tensors["mean"],
            std=tensors["std"],
            weight=tensors["weight"],
            bias=float(tensors["bias"][0]),
            card=card,
            columns=tensors.get("columns"),
            blend=blend,
        )


def default_head_path() -> Path:
    return Path(str(resources.files("langchain_trim") / "data" / DEFAULT_HEAD))


class ProbePRM(BaseProcessRewardModel):
    """Scores steps with a :class:`ProbeHead` over :class:`LlamaStepEncoder` features.

    ``ProbePRM()`` loads the head shipped with the package and its encoder (the embedded
    weak model, sharing its loaded weights); about 0.5 s per new step on 2 CPU cores,
    since only the new step's tokens are evaluated.
    """

    def __init__(
        self,
        head: ProbeHead | str | Path | None = None,
        encoder: LlamaStepEncoder | None = None,
        *,
        n_threads: int | None = None,
    ) -> None:
        if head is None or isinstance(head, (str, Path)):
            head = ProbeHead.load(head or default_head_path())
        self.head = head
        card = head.card
        self.encoder = encoder or LlamaStepEncoder(
            card.get("encoder", "weak"),
            max_tokens=int(card.get("max_tokens", 1024)),
            n_threads=n_threads,
        )
        self.name = f"probe:{card.get('name', 'custom')}"

    @property
    def threshold(self) -> float | None:
        """Default TRIM-Thr threshold: the card's ``routing_threshold`` (tuned for routing
        the embedded models) or else its ProcessBench-F1 ``threshold``."""
        value = self.head.card.get("routing_threshold", self.head.card.get("threshold"))
        return float(value) if value is not None else None

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        out: list[list[float]] = []
        for question, steps in items:
            if not steps:
                out.append([])
                continue
            feats = self.encoder.encode(question, steps)
            out.append([float(p) for p in self.head.predict(feats)])
        return out


__all__ = [
    "DEFAULT_HEAD",
    "Blend",
    "ProbeHead",
    "ProbePRM",
    "default_head_path",
    "number_confidence",
    "with_context",
]
