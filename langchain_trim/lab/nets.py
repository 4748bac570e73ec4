"""Torch twins of the numpy policy networks, used only for training.

Parameter names equal the keys of :attr:`LearnedPolicy.params`, so a trained module's
``state_dict`` is the policy's weights and vice versa.  Importing this module imports
torch; inference never does.  :func:`init_policy` makes a fresh TRIM-Agg/Seq policy and
:func:`torch_module` a trainable twin of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from langchain_trim.policies.agg import AggPolicy
from langchain_trim.policies.features import (
    AGG_FEATURES,
    BUDGET_SCALE,
    SEQ_CURRENT_FEATURES,
    SEQ_STEP_FEATURES,
)
from langchain_trim.policies.learned import LearnedPolicy
from langchain_trim.policies.seq import SeqPolicy


class _Heads(nn.Module):
    """The release's trunk: two Linear(·→hidden)+LayerNorm+Tanh layers, actor, critic.

    The release also has Dropout(0.1); it is left out because it makes PPO's probability
    ratios noisy for a network this small.
    """

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.enc1 = nn.Linear(n_in, hidden)
        self.ln1 = nn.LayerNorm(hidden)
        self.enc2 = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.actor = nn.Linear(hidden, 2)
        self.critic = nn.Linear(hidden, 1)
        with torch.no_grad():  # near-uniform initial policy, as is usual for PPO
            self.actor.weight.mul_(0.01)
            self.actor.bias.zero_()

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.ln1(self.enc1(x)))
        h = torch.tanh(self.ln2(self.enc2(h)))
        return self.actor(h), self.critic(h).squeeze(-1)


class AggNet(_Heads):
    """TRIM-Agg: the trunk on the aggregate features."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(x)


class SeqNet(_Heads):
    """TRIM-Seq: a GRU over the previous steps, its last state joined to the current step.

    Input layout (see :class:`~langchain_trim.policies.seq.SeqPolicy`): current features,
    history length, then ``max_history`` rows of step features (zero-padded).
    """

    def __init__(self, hidden: int, gru_hidden: int, max_history: int) -> None:
        n_cur = len(SEQ_CURRENT_FEATURES)
        super().__init__(gru_hidden + n_cur, hidden)
        self.gru = nn.GRU(len(SEQ_STEP_FEATURES), gru_hidden, batch_first=True)
        self.max_history = max_history
        self.n_cur = n_cur

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_step = len(SEQ_STEP_FEATURES)
        cur = x[:, : self.n_cur]
        length = x[:, self.n_cur].long()
        hist = x[:, self.n_cur + 1 :].reshape(x.shape[0], self.max_history, n_step)
        t_max = int(length.max().item()) if x.shape[0] else 0
        h = torch.zeros(x.shape[0], self.gru.hidden_size, dtype=x.dtype)
        if t_max > 0:
            out, _ = self.gru(hist[:, :t_max])
            idx = (length - 1).clamp(min=0)
            last = out[torch.arange(x.shape[0]), idx]
            h = torch.where((length > 0)[:, None], last, h)
        return self.heads(torch.cat([h, cur], dim=-1))


def to_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's weights as float32 numpy arrays."""
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in module.state_dict().items()}


def load_numpy(module: nn.Module, params: Mapping[str, np.ndarray]) -> None:
    """Copy numpy weights into the module (strict: names and shapes must match)."""
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in params.items()})


def torch_module(policy: LearnedPolicy) -> nn.Module:
    """A trainable torch twin holding ``policy``'s weights."""
    net: nn.Module
    if isinstance(policy, AggPolicy):
        net = AggNet(policy.input_size, int(policy.config.get("hidden", 64)))
    elif isinstance(policy, SeqPolicy):
        net = SeqNet(
            int(policy.config.get("hidden", 64)),
            int(policy.config.get("gru_hidden", 32)),
            policy.max_history,
        )
    else:
        raise TypeError(f"no torch twin for {type(policy).__name__}")
    load_numpy(net, policy.params)
    return net


def init_policy(
    kind: Literal["agg", "seq"],
    seed: int = 0,
    *,
    hidden: int = 64,
    gru_hidden: int = 32,
    max_history: int = 32,
    **config: Any,
) -> LearnedPolicy:
    """A freshly initialised TRIM-Agg or TRIM-Seq (PyTorch default init, seeded; a
    near-uniform actor).  ``gru_hidden``/``max_history`` are TRIM-Seq's."""
    torch.manual_seed(seed)
    if kind == "agg":
        agg = AggNet(len(AGG_FEATURES), hidden)
        return AggPolicy(to_numpy(agg), {"hidden": hidden, "budget_scale": BUDGET_SCALE, **config})
    if kind == "seq":
        seq = SeqNet(hidden, gru_hidden, max_history)
        base = {"hidden": hidden, "gru_hidden": gru_hidden, "max_history": max_history}
        return SeqPolicy(to_numpy(seq), {**base, "budget_scale": BUDGET_SCALE, **config})
    raise ValueError(f"policy must be 'agg' or 'seq', got {kind!r}")


__all__ = ["AggNet", "SeqNet", "init_policy", "load_numpy", "to_numpy", "torch_module"]
