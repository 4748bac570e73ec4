"""PPO for the network policies (TRIM-Agg, TRIM-Seq) against a simulator or replayed traces.

Objective (the paper's): +1 at the end when the final answer is correct, −λ × strong
tokens for every step the strong model rewrites, so the return of a question is
``correct − λ · strong_tokens`` and λ is the price of a strong token in questions.
Settings follow the release (TRIM, arXiv:2601.10245): Adam lr 3e-4, γ = 1, GAE
λ = 0.95, clip 0.2, value coefficient 0.5, entropy coefficient annealed 0.01 → 0.001,
gradient norm clip 0.5, 3 epochs per batch of 64 questions, minibatches of 64 steps.
Actions are sampled
while training and greedy at evaluation.  Every ``eval_every`` batches the greedy policy
is scored on a fixed validation set (common random numbers) by ``accuracy − λ × mean
strong tokens``; the best one is returned, and training stops after ``patience``
evaluations without improvement.

Environments implement :class:`TrainingEnv`: :class:`~langchain_trim.lab.sim.SimEnv`
(``episode`` drives the policy exactly as the graph does, budget rule included) or
:class:`~langchain_trim.lab.replay.ReplayEnv` (recorded traces; see there for what a
replay can answer).  Training is seeded and reproducible on one machine; it runs torch
on one CPU thread (the networks are tiny) and the rollouts with numpy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from langchain_trim.lab.sim.env import EpisodeResult
from langchain_trim.policies.base import RouteDecision, RouteObservation, RoutingPolicy
from langchain_trim.policies.learned import LearnedPolicy, log_softmax


class MissingBranchError(LookupError):
    """A replay was asked about a step it has no recording for (the episode is skipped)."""


class TrainingEnv(Protocol):
    """What PPO needs from an environment (``SimEnv`` has it)."""

    def episode(
        self,
        policy: RoutingPolicy,
        index: int = 0,
        *,
        seed: int = 0,
        budget: int | None = None,
        record_steps: bool = False,
        score_all: bool = False,
    ) -> EpisodeResult:
        """One question routed by ``policy``; the trace (``record_steps``) gives per-step
        authors and tokens.  May raise :class:`MissingBranchError`."""
        ...


@dataclass(frozen=True)
class PPOConfig:
    """PPO and training-loop settings (defaults: the release's, see the module docstring)."""

    lam: float = 8e-4
    """Price of one strong token, in correct answers."""
    lr: float = 3e-4
    gamma: float = 1.0
    gae_lambda: float = 0.95
    clip: float = 0.2
    value_coef: float = 0.5
    entropy_start: float = 0.01
    entropy_end: float = 0.001
    max_grad_norm: float = 0.5
    update_epochs: int = 3
    minibatch: int = 64
    batch_questions: int = 64
    epochs: int = 10
    """Passes of ``train_questions`` questions (fresh simulated ones each pass)."""
    train_questions: int = 2048
    val_questions: int = 2000
    eval_every: int = 10
    """Batches between validation runs."""
    patience: int | None = 16
    """Stop after this many validations without improvement (``None``: never)."""
    budget_prob: float = 0.2
    """Share of training questions given a random per-question budget, so that the
    strong-tokens-left input is seen varying (validation is unlimited)."""
    budget_range: tuple[int, int] = (512, 2048)
    fresh_episodes: bool = True
    """Draw new questions every pass (simulators); ``False`` reuses the same ones."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lam < 0 or not math.isfinite(self.lam):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam}")
        for name in ("batch_questions", "epochs", "train_questions", "val_questions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.minibatch < 1 or self.update_epochs < 1 or self.eval_every < 1:
            raise ValueError("minibatch, update_epochs and eval_every must be >= 1")


@dataclass
class Evaluation:
    """Greedy policy on the validation set."""

    batch: int
    accuracy: float
    mean_strong_tokens: float
    objective: float
    skipped: int = 0


@dataclass
class TrainResult:
    """The selected policy and how training went."""

    policy: LearnedPolicy
    best: Evaluation
    history: list[Evaluation] = field(default_factory=list)
    batches: int = 0
    episodes: int = 0
    skipped_episodes: int = 0
    seconds: float = 0.0
    config: PPOConfig = field(default_factory=PPOConfig)

    def record(self) -> dict[str, Any]:
        """JSON-ready summary (goes to the saved policy's sidecar)."""
        cfg = asdict(self.config)
        cfg["budget_range"] = list(self.config.budget_range)
        return {
            "ppo": cfg,
            "best": asdict(self.best),
            "batches": self.batches,
            "episodes": self.episodes,
            "skipped_episodes": self.skipped_episodes,
            "seconds": round(self.seconds, 1),
            "history": [asdict(h) for h in self.history],
        }


class _Sampler:
    """A RoutingPolicy that samples from the current network and records what it did."""

    def __init__(self, policy: LearnedPolicy, rng: np.random.Generator) -> None:
        self.policy = policy
        self.rng = rng
        self.xs: list[np.ndarray] = []
        self.actions: list[int] = []
        self.logps: list[float] = []
        self.values: list[float] = []

    @property
    def name(self) -> str:
        return f"{self.policy.name}+sampling"

    def reset(self) -> None:
        self.xs, self.actions, self.logps, self.values = [], [], [], []

    def needs_score(self, observation: RouteObservation) -> bool:
        return True

    def decide(self, observation: RouteObservation) -> RouteDecision:
        x, logits, value = self.policy.evaluate_one(observation)
        logp = log_softmax(logits)
        action = int(self.rng.random() < math.exp(float(logp[1])))
        self.xs.append(x)
        self.actions.append(action)
        self.logps.append(float(logp[action]))
        self.values.append(value)
        return RouteDecision("escalate" if action else "continue", "sampled")


def step_rewards(result: EpisodeResult, lam: float) -> list[float]:
    """−λ × tokens for each strong step, +1 added to the last step when correct.

    >>> from langchain_trim.lab.sim.env import EpisodeResult
    >>> steps = [{"author": "weak", "tokens": 40}, {"author": "strong", "tokens": 100}]
    >>> r = EpisodeResult(0, True, 100, 40, 0, 2, 1, 0, 2, {"steps": steps})
    >>> step_rewards(r, 1e-3)
    [0.0, 0.9]
    """
    assert result.trace is not None
    steps = result.trace["steps"]
    out = [-lam * float(s["tokens"]) if s["author"] == "strong" else 0.0 for s in steps]
    if out and result.correct:
        out[-1] += 1.0
    return out


def gae(
    rewards: Sequence[float], values: Sequence[float], gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns of one episode (the value after the last step is 0).

    >>> adv, ret = gae([0.0, 1.0], [0.5, 0.5], 1.0, 1.0)
    >>> adv.tolist(), ret.tolist()
    ([0.5, 0.5], [1.0, 1.0])
    """
    n = len(rewards)
    adv = np.zeros(n, dtype=np.float64)
    last = 0.0
    for t in reversed(range(n)):
        nxt = values[t + 1] if t + 1 < n else 0.0
        delta = rewards[t] + gamma * nxt - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    ret = adv + np.asarray(values, dtype=np.float64)
    return adv, ret


def evaluate(
    policy: RoutingPolicy,
    env: TrainingEnv,
    indices: Sequence[int],
    *,
    seed: int,
    lam: float,
    batch: int = 0,
) -> Evaluation:
    """Accuracy, mean strong tokens and ``accuracy − λ × tokens`` (skips missing branches)."""
    correct = tokens = 0.0
    n = skipped = 0
    for i in indices:
        try:
            r = env.episode(policy, i, seed=seed)
        except MissingBranchError:
            skipped += 1
            continue
        n += 1
        correct += r.correct
        tokens += r.strong_tokens
    acc = correct / n if n else 0.0
    mean_tokens = tokens / n if n else 0.0
    return Evaluation(batch, acc, mean_tokens, acc - lam * mean_tokens, skipped)


def train_ppo(
    policy: LearnedPolicy,
    env: TrainingEnv,
    config: PPOConfig | None = None,
    *,
    progress: bool = True,
    n_questions: int | None = None,
) -> TrainResult:
    """Train ``policy`` (a copy; the argument is not modified) with PPO on ``env``.

    ``n_questions`` bounds question indices (a replay's question count); simulators have
    no bound.  Returns the best policy by validation objective.
    """
    import torch
    from tqdm.auto import tqdm

    from langchain_trim.lab.nets import to_numpy, torch_module

    cfg = config or PPOConfig()
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        net = torch_module(policy)
        optim = torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=1e-5)
        current = type(policy)(to_numpy(net), {**policy.config, "lam": cfg.lam})
        sampler = _Sampler(current, rng)
        train_seed, val_seed = 1_000 + 7 * cfg.seed, 2_000_000 + cfg.seed
        val_idx = list(range(cfg.val_questions))
        if n_questions is not None:  # a replay: validate on its last questions
            n_val = min(cfg.val_questions, max(n_questions // 5, 1))
            val_idx = list(range(n_questions - n_val, n_questions))
            val_seed = 0
        per_pass = math.ceil(cfg.train_questions / cfg.batch_questions)
        total = per_pass * cfg.epochs
        best = evaluate(current, env, val_idx, seed=val_seed, lam=cfg.lam)
        best_params = dict(current.params)
        history = [best]
        since_best = episodes = skipped = batches = 0
        bar = tqdm(
            total=total, desc=f"ppo {policy.kind} λ={cfg.lam:g}", disable=None if progress else True
        )
        for b in range(total):
            frac = b / max(total - 1, 1)
            ent_coef = cfg.entropy_start + frac * (cfg.entropy_end - cfg.entropy_start)
            pass_idx, within = divmod(b, per_pass)
            first = within * cfg.batch_questions
            if cfg.fresh_episodes:
                first += pass_idx * per_pass * cfg.batch_questions
            wrap = None if n_questions is None else max(n_questions - len(val_idx), 1)
            batch = _Batch()
            for q in range(cfg.batch_questions):
                index = first + q if wrap is None else (first + q) % wrap
                batch.play(sampler, env, index, cfg, rng, train_seed)
            episodes, skipped = episodes + batch.episodes, skipped + batch.skipped
            if batch.xs:
                _update(net, optim, cfg, ent_coef, rng, *batch.arrays())
                current.set_params(to_numpy(net))
            batches += 1
            bar.update(1)
            if (b + 1) % cfg.eval_every == 0 or b + 1 == total:
                ev = evaluate(current, env, val_idx, seed=val_seed, lam=cfg.lam, batch=b + 1)
                history.append(ev)
                if ev.objective > best.objective:
                    best, best_params, since_best = ev, dict(current.params), 0
                else:
                    since_best += 1
                bar.set_postfix(
                    acc=f"{ev.accuracy:.3f}",
                    tok=f"{ev.mean_strong_tokens:.0f}",
                    best=f"{best.objective:.4f}",
                )
                if cfg.patience is not None and since_best >= cfg.patience:
                    break
        bar.close()
    finally:
        torch.set_num_threads(threads)
    chosen = type(policy)(best_params, {**policy.config, "lam": cfg.lam})
    return TrainResult(
        policy=chosen,
        best=best,
        history=history,
        batches=batches,
        episodes=episodes,
        skipped_episodes=skipped,
        seconds=time.perf_counter() - start,
        config=cfg,
    )


@dataclass
class _Batch:
    """The decisions of one PPO batch's episodes, with their advantages and returns."""

    xs: list[np.ndarray] = field(default_factory=list)
    acts: list[int] = field(default_factory=list)
    old_logp: list[float] = field(default_factory=list)
    advs: list[np.ndarray] = field(default_factory=list)
    rets: list[np.ndarray] = field(default_factory=list)
    episodes: int = 0
    skipped: int = 0

    def play(
        self,
        sampler: _Sampler,
        env: TrainingEnv,
        index: int,
        cfg: PPOConfig,
        rng: np.random.Generator,
        seed: int,
    ) -> None:
        """One training episode of question ``index`` (under a random budget, sometimes)."""
        budget = None
        if rng.random() < cfg.budget_prob:
            budget = int(rng.integers(cfg.budget_range[0], cfg.budget_range[1] + 1))
        sampler.reset()
        try:
            result = env.episode(sampler, index, seed=seed, budget=budget, record_steps=True)
        except MissingBranchError:
            self.skipped += 1
            return
        self.episodes += 1
        rewards = step_rewards(result, cfg.lam)
        if len(rewards) != len(sampler.actions):
            raise RuntimeError("the environment asked for fewer decisions than steps")
        adv, ret = gae(rewards, sampler.values, cfg.gamma, cfg.gae_lambda)
        self.xs += sampler.xs
        self.acts += sampler.actions
        self.old_logp += sampler.logps
        self.advs.append(adv)
        self.rets.append(ret)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.stack(self.xs),
            np.asarray(self.acts),
            np.asarray(self.old_logp),
            np.concatenate(self.advs),
            np.concatenate(self.rets),
        )


def _update(
    net: Any,
    optim: Any,
    cfg: PPOConfig,
    ent_coef: float,
    rng: np.random.Generator,
    xs: np.ndarray,
    acts: np.ndarray,
    old_logp: np.ndarray,
    adv: np.ndarray,
    ret: np.ndarray,
) -> None:
    """``update_epochs`` passes of clipped-surrogate minibatch updates."""
    import torch

    x_t = torch.from_numpy(xs.astype(np.float32))
    a_t = torch.from_numpy(acts.astype(np.int64))
    lp_t = torch.from_numpy(old_logp.astype(np.float32))
    if len(adv) > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    adv_t = torch.from_numpy(adv.astype(np.float32))
    ret_t = torch.from_numpy(ret.astype(np.float32))
    n = len(acts)
    for _ in range(cfg.update_epochs):
        order = rng.permutation(n)
        for lo in range(0, n, cfg.minibatch):
            idx = torch.from_numpy(order[lo : lo + cfg.minibatch])
            logits, values = net(x_t[idx])
            logp_all = torch.log_softmax(logits, dim=-1)
            logp = logp_all.gather(1, a_t[idx][:, None]).squeeze(1)
            ratio = torch.exp(logp - lp_t[idx])
            surr = torch.min(
                ratio * adv_t[idx], torch.clamp(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv_t[idx]
            )
            entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
            value_loss = ((values - ret_t[idx]) ** 2).mean()
            loss = -surr.mean() + cfg.value_coef * value_loss - ent_coef * entropy
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
            optim.step()


__all__ = [
    "Evaluation",
    "MissingBranchError",
    "PPOConfig",
    "TrainResult",
    "TrainingEnv",
    "evaluate",
    "gae",
    "step_rewards",
    "train_ppo",
]
