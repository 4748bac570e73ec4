"""Post-hoc query-level routers, computed from always-weak (scored) and always-strong traces.

The paper compares TRIM with routers that send a *whole question* to one model.  Given
the traces of the same problems solved by the weak model with PRM scores
(``weakscored``) and by the strong model (``strong``), every such router can be
evaluated without running anything again: for each question it either keeps the weak
outcome (no strong tokens) or takes the strong one (its strong tokens).

* :func:`difficulty_router` (RouteLLM-style): escalate when the PRM score of the weak
  model's first step is below ``t``, a cheap difficulty estimate.  Weak tokens: the first
  step when escalated, the whole weak solution otherwise.
* :func:`automix_prm` (AutoMix with a PRM verifier): the weak model solves the question,
  the PRM verifies the solution (``min`` or ``mean`` step score), and the question is
  re-solved by the strong model when the verdict is below ``t``.  Cost = the strong
  solution's tokens; the weak solution's tokens are spent either way.
* :func:`oracle_step_router`: where the first wrong step is known (gold step labels, or
  ``sim_state`` in simulator traces), an oracle acts exactly there: it rewrites that one
  step (``repair``: optimistic on purpose, one rewrite is assumed to fix the solution,
  so it bounds step routing from above) or lets the strong model finish the solution
  from it (``handover``).

A question whose signal is missing (unscored: PRM failure) is escalated.  Thresholds
default to every distinct cut point of the signal, so the curve is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from langchain_trim.eval.metrics import OnTheCurve

Trace = Mapping[str, Any]


@dataclass(frozen=True)
class RouterPoint(OnTheCurve):
    """One setting of a post-hoc router and what it would have achieved."""

    label: str
    threshold: float | None
    accuracy: float
    strong_tokens: float
    """Mean strong-model output tokens per question."""
    weak_tokens: float
    """Mean weak-model output tokens per question."""
    escalated: float
    """Share of questions sent to the strong model (oracle: repaired questions)."""
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- reading traces -----------------------------------------------------------------------
def strong_tokens_of(trace: Trace) -> int:
    """Strong tokens of a trace: ``spend`` when present, else the strong steps' tokens."""
    spend = trace.get("spend") or {}
    if "strong_tokens" in spend:
        return int(spend["strong_tokens"])
    return sum(int(s.get("tokens", 0)) for s in trace["steps"] if s.get("author") == "strong")


def weak_tokens_of(trace: Trace) -> int:
    """Weak tokens (discarded drafts included): ``spend`` when present, else the drafts'."""
    spend = trace.get("spend") or {}
    if "weak_tokens" in spend:
        return int(spend["weak_tokens"])
    return sum(int(s.get("draft_tokens", s.get("tokens", 0))) for s in trace["steps"])


def _key(trace: Trace, index: int) -> Any:
    pid = trace.get("problem_id")
    return index if pid is None else pid


def pair_traces(weak: Sequence[Trace], strong: Sequence[Trace]) -> list[tuple[Trace, Trace]]:
    """Traces of the same problems, matched by ``problem_id`` (by position when absent).

    Failed runs (``error`` set) are dropped, with their partner.
    """
    by_key = {_key(t, i): t for i, t in enumerate(strong) if not t.get("error")}
    pairs = []
    for i, t in enumerate(weak):
        other = by_key.get(_key(t, i))
        if other is not None and not t.get("error"):
            pairs.append((t, other))
    return pairs


def first_step_score(trace: Trace) -> float | None:
    """PRM score of the weak model's first step."""
    steps = trace["steps"]
    if not steps:
        return None
    score = steps[0].get("draft_score")
    return None if score is None else float(score)


def solution_score(trace: Trace, aggregate: Literal["min", "mean"] = "min") -> float | None:
    """PRM verdict on a whole weak solution: min or mean of its step scores."""
    scores = [s.get("draft_score") for s in trace["steps"]]
    if not scores or any(x is None for x in scores):
        return None
    values = [float(x) for x in scores if x is not None]
    return min(values) if aggregate == "min" else math.fsum(values) / len(values)


def cut_points(signal: Sequence[float | None]) -> list[float]:
    """Thresholds that realise every distinct split of ``signal`` (escalate iff ``s < t``).

    >>> cut_points([0.5, None, 0.2, 0.5])  # doctest: +ELLIPSIS
    [0.0, 0.2000..., 0.5000...]
    """
    values = sorted({float(s) for s in signal if s is not None})
    return [0.0, *(math.nextafter(v, math.inf) for v in values)]


# -- query-level routers ------------------------------------------------------------------
def _query_router(
    label: str,
    pairs: Sequence[tuple[Trace, Trace]],
    signal: Callable[[Trace], float | None],
    weak_cost_if_escalated: Callable[[Trace], int],
    thresholds: Sequence[float] | None,
) -> list[RouterPoint]:
    if not pairs:
        return []
    values = [signal(w) for w, _ in pairs]
    ts = list(thresholds) if thresholds is not None else cut_points(values)
    n = len(pairs)
    out = []
    for t in ts:
        correct = strong_tokens = weak_tokens = escalated = 0
        for (w, s), v in zip(pairs, values, strict=True):
            if v is None or v < t:
                escalated += 1
                correct += bool(s.get("correct"))
                strong_tokens += strong_tokens_of(s)
                weak_tokens += weak_cost_if_escalated(w)
            else:
                correct += bool(w.get("correct"))
                weak_tokens += weak_tokens_of(w)
        out.append(
            RouterPoint(
                label=f"{label} t={t:.4g}",
                threshold=t,
                accuracy=correct / n,
                strong_tokens=strong_tokens / n,
                weak_tokens=weak_tokens / n,
                escalated=escalated / n,
                n=n,
            )
        )
    return out


def difficulty_router(
    weak_scored: Sequence[Trace],
    strong: Sequence[Trace],
    thresholds: Sequence[float] | None = None,
) -> list[RouterPoint]:
    """RouteLLM-style: the whole question goes to the strong model when the first step scores < t.

    >>> w = [{"problem_id": i, "correct": c, "steps": [{"draft_score": s, "draft_tokens": 5}]}
    ...      for i, (c, s) in enumerate([(True, 0.9), (False, 0.2)])]
    >>> st = [{"problem_id": i, "correct": True, "steps": [{"author": "strong", "tokens": 10}]}
    ...       for i in range(2)]
    >>> [(p.accuracy, p.strong_tokens) for p in difficulty_router(w, st)]
    [(0.5, 0.0), (1.0, 5.0), (1.0, 10.0)]
    """

    def first_draft(w: Trace) -> int:
        steps = w["steps"]
        return int(steps[0].get("draft_tokens", steps[0].get("tokens", 0))) if steps else 0

    return _query_router(
        "difficulty", pair_traces(weak_scored, strong), first_step_score, first_draft, thresholds
    )


def automix_prm(
    weak_scored: Sequence[Trace],
    strong: Sequence[Trace],
    thresholds: Sequence[float] | None = None,
    *,
    aggregate: Literal["min", "mean"] = "min",
) -> list[RouterPoint]:
    """AutoMix with a PRM verifier: re-solve with the strong model when the verdict is < t.

    >>> w = [{"problem_id": 0, "correct": False, "steps": [{"draft_score": 0.9, "draft_tokens": 4},
    ...      {"draft_score": 0.1, "draft_tokens": 6}]}]
    >>> st = [{"problem_id": 0, "correct": True, "steps": [{"author": "strong", "tokens": 30}]}]
    >>> [(p.accuracy, p.strong_tokens, p.weak_tokens) for p in automix_prm(w, st)]
    [(0.0, 0.0, 10.0), (1.0, 30.0, 10.0)]
    """
    if aggregate not in ("min", "mean"):
        raise ValueError(f"aggregate must be 'min' or 'mean', got {aggregate!r}")
    return _query_router(
        f"automix-prm:{aggregate}",
        pair_traces(weak_scored, strong),
        lambda w: solution_score(w, aggregate),
        weak_tokens_of,
        thresholds,
    )


# -- oracle ---------------------------------------------------------------------------------
def first_error(trace: Trace) -> int | None:
    """Index of the first wrong step: ``first_error``/``label`` on the trace (gold labels,
    ProcessBench style, -1 = none), else the first ``sim_state == "S2"`` step."""
    for name in ("first_error", "label"):
        if name in trace and trace[name] is not None:
            value = int(trace[name])
            return None if value < 0 else value
    for step in trace["steps"]:
        if step.get("sim_state") == "S2":
            return int(step.get("index", trace["steps"].index(step)))
    return None


def oracle_step_router(
    weak: Sequence[Trace],
    strong: Sequence[Trace] = (),
    *,
    mode: Literal["repair", "handover"] = "repair",
    step_cost: float | None = None,
) -> list[RouterPoint]:
    """Oracle curves from step labels: act only on questions whose weak solution is wrong.

    For a wrong weak solution with a located first error ``e``:

    * ``mode="repair"`` (optimistic bound): the strong model rewrites step ``e`` alone
      and the solution is counted correct.  The cost is the strong model's step ``e`` on
      the same problem (``step_cost``, else the mean strong step, when it has no such
      step).  Accuracy can exceed always-strong's: it bounds step routing from above.
    * ``mode="handover"``: the strong model writes everything from step ``e`` on; the
      cost is the always-strong solution's tokens from step ``e``, the outcome is its
      outcome.

    Point ``k`` acts on the ``k`` cheapest such questions.  Empty when no trace has step
    labels (``first_error``/``label``, or ``sim_state`` from the simulator).

    >>> w = [{"correct": True, "steps": [{"sim_state": "S0", "draft_tokens": 5}]},
    ...      {"correct": False, "steps": [{"sim_state": "S0"}, {"sim_state": "S2"}]}]
    >>> [(p.accuracy, p.strong_tokens) for p in oracle_step_router(w, step_cost=8)]
    [(0.5, 0.0), (1.0, 4.0)]
    >>> s = [{"correct": True, "steps": []},
    ...      {"correct": True, "steps": [{"tokens": 3}, {"tokens": 7}, {"tokens": 9}]}]
    >>> [(p.accuracy, p.strong_tokens) for p in oracle_step_router(w, s, mode="handover")]
    [(0.5, 0.0), (1.0, 8.0)]
    """
    if mode not in ("repair", "handover"):
        raise ValueError(f"mode must be 'repair' or 'handover', got {mode!r}")
    live = [t for t in weak if not t.get("error")]
    if not live:
        return []
    strong_by_key = {_key(t, i): t for i, t in enumerate(strong) if not t.get("error")}
    strong_steps = [
        int(s.get("tokens", 0))
        for t in strong_by_key.values()
        for s in t["steps"]
        if s.get("author", "strong") == "strong"
    ]
    mean_step = step_cost
    if mean_step is None and strong_steps:
        mean_step = math.fsum(strong_steps) / len(strong_steps)
    actions: list[tuple[float, bool]] = []  # (strong tokens, correct afterwards)
    labelled = False
    for i, t in enumerate(live):
        e = first_error(t)
        labelled = labelled or e is not None or any("sim_state" in s for s in t["steps"])
        if t.get("correct") or e is None:
            continue
        other = strong_by_key.get(_key(t, i))
        if mode == "handover":
            if other is not None:
                tail = [float(s.get("tokens", 0)) for s in other["steps"][e:]]
                actions.append((math.fsum(tail), bool(other.get("correct"))))
        elif other is not None and e < len(other["steps"]):
            actions.append((float(other["steps"][e].get("tokens", 0)), True))
        elif mean_step is not None:
            actions.append((float(mean_step), True))
    if not labelled:
        return []
    n = len(live)
    correct = sum(bool(t.get("correct")) for t in live)
    weak_mean = math.fsum(weak_tokens_of(t) for t in live) / n
    out = [RouterPoint(f"oracle-{mode} k=0", None, correct / n, 0.0, weak_mean, 0.0, n)]
    spent = 0.0
    for k, (cost, fixed) in enumerate(sorted(actions), 1):
        spent += cost
        correct += fixed
        out.append(
            RouterPoint(f"oracle-{mode} k={k}", None, correct / n, spent / n, weak_mean, k / n, n)
        )
    return out


def query_level_baselines(
    weak_scored: Sequence[Trace], strong: Sequence[Trace]
) -> dict[str, list[RouterPoint]]:
    """Every post-hoc router of this module, by family name (empty families left out)."""
    families = {
        "Difficulty (1st-step PRM)": difficulty_router(weak_scored, strong),
        "AutoMix-PRM (min)": automix_prm(weak_scored, strong, aggregate="min"),
        "AutoMix-PRM (mean)": automix_prm(weak_scored, strong, aggregate="mean"),
        "Oracle repair (optimistic)": oracle_step_router(weak_scored, strong, mode="repair"),
        "Oracle handover": oracle_step_router(weak_scored, strong, mode="handover"),
    }
    return {name: points for name, points in families.items() if points}


__all__ = [
    "RouterPoint",
    "automix_prm",
    "cut_points",
    "difficulty_router",
    "first_error",
    "first_step_score",
    "oracle_step_router",
    "pair_traces",
    "query_level_baselines",
    "solution_score",
    "strong_tokens_of",
    "weak_tokens_of",
]
