"""Solve the TRIM-POMDP: finite-horizon point-based value iteration in numpy.

Why this solver: the hidden state has three values, so a belief is a point of a
triangle, and a grid of a few hundred points covers it densely; the horizon is fixed
(30 steps), so backward induction over the steps is exact in time; point-based
backups keep the value function a maximum of alpha vectors (piecewise linear and
convex, as a POMDP value must be), which stays valid at beliefs off the grid.  QMDP
would ignore the value of information (a low score now says the next steps are
doomed), and the release's SARSOP tables are 19 MB per cost on a 240-core host; this
takes seconds on two cores and a few hundred kilobytes.

Draft lengths are observed, independent of the hidden state and of the future, so they
need not enter the state: the value of a belief averages the best action over
``token_bins`` equiprobable lengths, and at run time the actual length prices the
escalation.  The value after step ``t`` is the alpha set ``alphas[t + 1]``; a decision
does one exact backup from it at the actual belief.

Results are cached per (model fingerprint, λ, grid) as ``.npz`` (no pickle) under
``$TRIM_CACHE_DIR`` or ``~/.cache/langchain-trim/pomdp``.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from langchain_trim.policies.pomdp_model import S0, S2, PomdpModel, transition

SOLVER_VERSION = 1
_CHUNK_ELEMENTS = 2_000_000


def simplex_grid(resolution: int) -> np.ndarray:
    """All beliefs ``(i, j, k) / resolution`` with ``i + j + k = resolution``.

    >>> simplex_grid(1).tolist()
    [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    >>> len(simplex_grid(24))
    325
    """
    pts = [
        (i, j, resolution - i - j) for i in range(resolution + 1) for j in range(resolution + 1 - i)
    ]
    return np.asarray(pts, dtype=np.float64) / resolution


def default_cache_dir() -> Path:
    """``$TRIM_CACHE_DIR/pomdp`` or ``~/.cache/langchain-trim/pomdp``."""
    root = os.environ.get("TRIM_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "langchain-trim"
    return base / "pomdp"


@dataclass(frozen=True)
class PomdpSolution:
    """Alpha vectors of the value after every step, and how to act on them."""

    model: PomdpModel
    lam: float
    alphas: tuple[np.ndarray, ...]
    """``alphas[t]`` (``(n, 3)``): value at step ``t``'s decision; ``alphas[T]`` is 0."""
    seconds: float
    ever_escalates: bool = True
    """False when the plan escalates at no grid belief and step (huge λ): no PRM needed."""
    cached: bool = False

    def _future(self, t: int, action: int, belief: np.ndarray) -> float:
        """Expected value of the next decision after ``action`` (unnormalised backup)."""
        nxt = self.alphas[min(t + 1, len(self.alphas) - 1)]
        pred = belief @ transition(action, self.model.p_weak, self.model.p_strong)
        obs = self.model.observation.reshape(3, -1)  # (3, O)
        scores = (pred[:, None] * obs).T @ nxt.T  # (O, n_alpha)
        return float(scores.max(axis=1).sum())

    def q_values(self, t: int, belief: np.ndarray, draft_tokens: float | None) -> np.ndarray:
        """``[Q(continue), Q(escalate)]`` at step ``t`` (0-based) for a normalised belief."""
        m = self.model
        t = min(max(t, 0), m.max_steps - 1)
        h_w, h_s = m.hazard_weak[t + 1], m.hazard_strong[t + 1]
        cost = self.lam * m.expected_strong_tokens(draft_tokens)
        q_cont = h_w * belief[S0] + (1 - h_w) * self._future(t, 0, belief)
        q_esc = -cost + h_s * m.p_strong * (belief[S0] + belief[S2])
        q_esc += (1 - h_s) * self._future(t, 1, belief)
        return np.array([q_cont, q_esc])

    def start_value(self) -> float:
        """Expected objective (accuracy − λ × strong tokens) of the plan at the first step."""
        b0 = np.array([self.model.p_weak, 0.0, 1 - self.model.p_weak])
        obs = self.model.observation.reshape(3, -1)
        return float(((b0[:, None] * obs).T @ self.alphas[0].T).max(axis=1).sum())


def _backup(
    model: PomdpModel,
    t: int,
    nxt: np.ndarray,
    grid: np.ndarray,
    lam: float,
    token_cost: np.ndarray,
    token_w: np.ndarray,
) -> tuple[np.ndarray, bool]:
    """One point-based backup: step ``t``'s alpha vectors, and whether any point escalates."""
    obs = model.observation.reshape(3, -1)  # (3, O)
    n_obs = obs.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // max(len(grid) * len(nxt), 1))
    futures = []
    for action in (0, 1):
        trans = transition(action, model.p_weak, model.p_strong)
        pred = grid @ trans  # (B, 3)
        acc = np.zeros_like(pred)  # Σ_o O_o ⊙ α*(b, o)
        for lo in range(0, n_obs, chunk):
            o_blk = obs[:, lo : lo + chunk]  # (3, c)
            weighted = pred[:, None, :] * o_blk.T[None, :, :]  # (B, c, 3)
            best = np.argmax(weighted @ nxt.T, axis=-1)  # (B, c)
            acc += (nxt[best] * o_blk.T[None, :, :]).sum(axis=1)
        futures.append(acc @ trans.T)  # back through the transition: (B, 3)
    h_w, h_s = model.hazard_weak[t + 1], model.hazard_strong[t + 1]
    r_cont = np.array([h_w, 0.0, 0.0])
    q_cont = r_cont + (1 - h_w) * futures[0]  # (B, 3)
    base_esc = np.array([h_s * model.p_strong, 0.0, h_s * model.p_strong])
    alpha = np.zeros_like(q_cont)
    escalates = False
    v_cont = (grid * q_cont).sum(axis=1)
    for cost, w in zip(token_cost, token_w, strict=True):
        q_esc = base_esc - lam * cost + (1 - h_s) * futures[1]
        pick = (grid * q_esc).sum(axis=1) > v_cont
        escalates = escalates or bool(pick.any())
        alpha += w * np.where(pick[:, None], q_esc, q_cont)
    return np.unique(np.round(alpha, 12), axis=0), escalates


def solve(
    model: PomdpModel,
    lam: float,
    *,
    resolution: int = 24,
    token_bins: int = 8,
    cache_dir: str | Path | bool | None = None,
) -> PomdpSolution:
    """Backward induction over the steps with point-based backups on a simplex grid.

    ``cache_dir=False`` disables the cache; ``None`` uses :func:`default_cache_dir`.
    """
    if lam < 0 or not np.isfinite(lam):
        raise ValueError(f"lam must be a finite number >= 0, got {lam}")
    path: Path | None = None
    if cache_dir is not False:
        root = default_cache_dir() if cache_dir in (None, True) else Path(str(cache_dir))
        name = f"pomdp_v{SOLVER_VERSION}_{model.fingerprint()}_{lam:.6g}_{resolution}_{token_bins}"
        path = root / f"{name}.npz"
        if path.exists():
            try:
                return _load(path, model, lam)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                pass  # a broken cache file is recomputed
    start = time.perf_counter()
    grid = simplex_grid(resolution)
    token_cost, token_w = model.token_nodes(token_bins)
    horizon = model.max_steps
    alphas: list[np.ndarray] = [np.zeros((1, 3))]
    ever = False
    for t in reversed(range(horizon)):
        alpha, escalates = _backup(model, t, alphas[-1], grid, lam, token_cost, token_w)
        alphas.append(alpha)
        ever = ever or escalates
    alphas.reverse()
    seconds = time.perf_counter() - start
    solution = PomdpSolution(model, float(lam), tuple(alphas), seconds, ever)
    if path is not None:
        _save(path, solution, resolution, token_bins)
    return solution


def _save(path: Path, solution: PomdpSolution, resolution: int, token_bins: int) -> None:
    counts = np.array([len(a) for a in solution.alphas])
    meta = {
        "lam": solution.lam,
        "fingerprint": solution.model.fingerprint(),
        "resolution": resolution,
        "token_bins": token_bins,
        "solver_version": SOLVER_VERSION,
        "seconds": solution.seconds,
        "ever_escalates": solution.ever_escalates,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(
        tmp,
        alphas=np.concatenate(solution.alphas),
        counts=counts,
        meta=np.array(json.dumps(meta)),
    )
    tmp.replace(path)


def _load(path: Path, model: PomdpModel, lam: float) -> PomdpSolution:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta["fingerprint"] != model.fingerprint() or meta["lam"] != lam:
            raise ValueError("cache entry for another model")
        flat, counts = data["alphas"], data["counts"]
    # a cache file is checked like any loaded file: a damaged one is recomputed
    if (
        flat.ndim != 2
        or flat.shape[1] != 3
        or not np.issubdtype(flat.dtype, np.floating)
        or not np.isfinite(flat).all()
        or counts.ndim != 1
        or len(counts) != model.max_steps + 1
        or not np.issubdtype(counts.dtype, np.integer)
        or (counts < 1).any()
        or int(counts.sum()) != len(flat)
    ):
        raise ValueError(f"{path} does not hold a solution for this model")
    bounds = np.cumsum(counts)[:-1]
    alphas = tuple(np.split(flat, bounds))
    return PomdpSolution(
        model, float(lam), alphas, float(meta["seconds"]), bool(meta["ever_escalates"]), True
    )


__all__ = ["PomdpSolution", "default_cache_dir", "simplex_grid", "solve"]
