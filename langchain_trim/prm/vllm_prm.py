"""Process reward models served by vLLM: in-process (:class:`VLLMOfflinePRM`) or over HTTP
(:class:`VLLMServerPRM`).

Both send **token ids** to vLLM, never text, so the step-tag positions we read back are
exactly the ones the model saw, and both apply the same formats and left-truncation rule as
:mod:`langchain_trim.prm.transformers_prm` (steps whose tag fell off the left edge get the
score of the earliest surviving step).  vLLM >= :data:`VLLM_MIN_VERSION` is required (the
``token_classify`` pooling task arrived in 0.11.1).

How each PRM family runs on vLLM:

* ``style="qwen"`` (Qwen2.5-Math-PRM): vLLM has a native ``Qwen2ForProcessRewardModel``,
  run by the pooling runner with the ``token_classify`` task (``LLM.encode`` offline,
  ``POST /pooling`` on a server).  Its default ``STEP`` pooler answers one
  ``[P(wrong), P(correct)]`` row per step tag (``<extra_0>``, id 151651); an ``ALL``
  pooler (``--pooler-config '{"pooling_type": "ALL"}'``) answers one row per token, and the
  rows at the step-tag positions are used.  Each row holds class probabilities (vLLM
  applies softmax by default) or logits; with ``activation="auto"`` a row that is not
  already a probability distribution is softmaxed.  The score is ``row[positive_index]``.
* ``style="math_shepherd"`` (``peiyi9979/math-shepherd-mistral-7b-prm``): a plain causal LM
  whose score is the next-token probability of ``"+"`` against ``"-"`` at each step tag
  (``ки``).  Under the pooling runner vLLM turns a causal LM into an *embedding* model
  (``token_classify`` is refused, and ``returned_token_ids`` would pick hidden-state
  columns), so it is served as the generative model it is: one ``LLM.generate`` /
  ``POST /v1/completions`` call per batch with ``max_tokens=1`` and ``prompt_logprobs``,
  and the score of a step is ``P(+) / (P(+) + P(-))`` read from the prompt logprobs right
  after its tag, exactly what :class:`~langchain_trim.prm.transformers_prm.TransformersPRM`
  computes from the logits.  The prompt gets one extra token after the last tag (``"+"``)
  so that tag has a prompt-logprob row too; a causal model's earlier rows do not see it.
  vLLM returns the top ``top_logprobs`` tokens of each row (plus the prompt's own token);
  the model was trained to put its mass on ``"+"`` and ``"-"`` at a tag, and if either is
  missing the score is a :class:`~langchain_trim.errors.PRMScoreError` that says to raise
  ``top_logprobs``.

Serving, for reference (neither model needs remote code: both architectures are native to
vLLM and to ``transformers``)::

    vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling
    vllm serve peiyi9979/math-shepherd-mistral-7b-prm   # generative; add --max-logprobs N
                                                        # when top_logprobs > 20

``vllm`` and ``httpx`` are imported lazily.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from collections.abc import Awaitable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from typing_extensions import TypedDict, Unpack

from langchain_trim.errors import PRMError, PRMScoreError
from langchain_trim.prm.base import BaseProcessRewardModel, PRMItem, validate_scores
from langchain_trim.prm.transformers_prm import (
    DEFAULT_MAX_LENGTH,
    MATH_SHEPHERD_GOOD_BAD_IDS,
    MATH_SHEPHERD_STEP_TAG,
    MATH_SHEPHERD_STEP_TAG_ID,
    QWEN_STEP_TAG,
    QWEN_STEP_TAG_ID,
    QWEN_SYSTEM_PROMPT,
    PreparedInput,
    PRMStyle,
    encode_for,
    expand_truncated_scores,
    math_shepherd_prm_prompt,
    prepare_prm_input,
    qwen_prm_messages,
    resolve_step_tag_id,
)

Activation = Literal["auto", "softmax", "none"]
T = TypeVar("T")

VLLM_MIN_VERSION = "0.11.1"
"""The oldest vLLM these backends work with: ``token_classify`` (the pooling task of
Qwen2.5-Math-PRM) arrived in 0.11.1; 0.11.0 refuses it.  Keep in step with the ``vllm``
extra in pyproject.toml."""
DEFAULT_TOP_LOGPROBS = 20
"""Prompt logprobs asked per position for Math-Shepherd: vLLM's default ``max_logprobs``."""


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"0.11.1rc2.dev5+g1"`` -> ``(0, 11, 1)``: the leading numeric release parts.

    >>> _version_tuple("0.11.1rc2.dev5+g1"), _version_tuple("0.33.0")
    ((0, 11, 1), (0, 33, 0))
    """
    parts: list[int] = []
    for piece in version.split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(piece):
            break
    return tuple(parts)


def check_vllm_version(version: str) -> None:
    """Raise :class:`PRMError` when ``version`` is older than :data:`VLLM_MIN_VERSION`.

    An unparseable version (a source build without one) passes: vLLM itself will say
    what it lacks.
    """
    have = _version_tuple(version)
    if have and have < _version_tuple(VLLM_MIN_VERSION):
        raise PRMError(
            f"vLLM {version} is too old for the vLLM PRMs: they need vLLM >= "
            f"{VLLM_MIN_VERSION} (the 'token_classify' pooling task); "
            "pip install 'langchain-trim[vllm]' installs a recent one"
        )


def _default_tag(style: PRMStyle) -> tuple[str, int]:
    if style == "qwen":
        return QWEN_STEP_TAG, QWEN_STEP_TAG_ID
    if style == "math_shepherd":
        return MATH_SHEPHERD_STEP_TAG, MATH_SHEPHERD_STEP_TAG_ID
    raise ValueError(f"style must be 'qwen' or 'math_shepherd', got {style!r}")


def _as_rows(data: Any, source: str) -> list[list[float]]:
    """vLLM's per-input output (tensor or nested list) as a list of float rows."""
    if hasattr(data, "tolist"):
        data = data.tolist()
    if not isinstance(data, list) or not all(isinstance(row, list) for row in data):
        raise PRMScoreError(
            f"{source}: expected a list of rows (one per token or per step), got "
            f"{type(data).__name__}; is the model served with runner='pooling' and a "
            "token_classify pooler?"
        )
    try:
        return [[float(x) for x in row] for row in data]
    except (TypeError, ValueError) as exc:
        raise PRMScoreError(f"{source}: non-numeric pooling output: {exc}") from exc


def _softmax(row: Sequence[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(x - top) for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def _activate(row: list[float], activation: Activation) -> list[float]:
    if activation == "none":
        return row
    if activation == "auto" and all(0.0 <= x <= 1.0 for x in row) and abs(sum(row) - 1) < 1e-3:
        return row
    if not all(math.isfinite(x) for x in row):
        return row  # leave NaN/inf for validate_scores to report
    return _softmax(row)


def scores_from_rows(
    rows: Sequence[Sequence[float]],
    prepared: PreparedInput,
    *,
    positive_index: int,
    activation: Activation = "auto",
    source: str = "vLLM PRM",
) -> list[float]:
    """Turn vLLM pooling rows for one input into one validated score per step.

    >>> from langchain_trim.prm.transformers_prm import prepare_prm_input
    >>> p = prepare_prm_input([3, 7, 9, 4, 9], 9, 2, max_length=100)
    >>> rows = [[0.5, 0.5], [0.5, 0.5], [0.2, 0.8], [0.5, 0.5], [0.9, 0.1]]
    >>> scores_from_rows(rows, p, positive_index=1)  # one row per token
    [0.8, 0.1]
    >>> scores_from_rows([[0.2, 0.8], [0.9, 0.1]], p, positive_index=1)  # one per step
    [0.8, 0.1]
    """
    if len(rows) == len(prepared.ids):
        picked = [list(rows[pos]) for pos in prepared.positions]
    elif len(rows) == len(prepared.positions):
        picked = [list(row) for row in rows]
    else:
        raise PRMScoreError(
            f"{source} returned {len(rows)} rows for an input of {len(prepared.ids)} tokens "
            f"with {len(prepared.positions)} step tags (expected one row per token or per "
            "step)"
        )
    scores = []
    for row in picked:
        if len(row) <= positive_index:
            raise PRMScoreError(
                f"{source} returned rows of width {len(row)}; positive_index={positive_index}"
            )
        scores.append(_activate(row, activation)[positive_index])
    full = expand_truncated_scores(scores, prepared.n_steps)
    return validate_scores(full, prepared.n_steps, source=source)


def _logprob_of(entry: Any, token_id: int) -> float | None:
    """The logprob of ``token_id`` in one prompt-logprob row, ``None`` when absent.

    Rows are ``{token_id: Logprob}`` offline and ``{"token_id": {"logprob": x, ...}}`` in
    JSON; a bare float value is accepted too.
    """
    value = entry.get(token_id, entry.get(str(token_id)))
    if value is None:
        return None
    value = value.get("logprob") if isinstance(value, dict) else getattr(value, "logprob", value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan  # leave it for validate_scores to report
    return float(value)


def _two_way(good: float, bad: float) -> float:
    """``P(good) / (P(good) + P(bad))`` from two logprobs, without overflow."""
    diff = good - bad
    if math.isnan(diff):
        return math.nan
    if diff >= 0:
        return 1.0 / (1.0 + math.exp(-diff))
    e = math.exp(diff)
    return e / (1.0 + e)


def scores_from_prompt_logprobs(
    prompt_logprobs: Any,
    prepared: PreparedInput,
    *,
    label_token_ids: tuple[int, int],
    top_logprobs: int = DEFAULT_TOP_LOGPROBS,
    source: str = "vLLM PRM",
) -> list[float]:
    """Math-Shepherd scores from vLLM's prompt logprobs of ``prepared.ids + [one token]``.

    Row ``t + 1`` is the model's next-token distribution at the step tag in position ``t``;
    the score is ``P(good) / (P(good) + P(bad))`` there, as the Math-Shepherd model card
    computes it from the logits.

    >>> from langchain_trim.prm.transformers_prm import prepare_prm_input
    >>> p = prepare_prm_input([1, 5, 9, 6, 9], 9, 2, max_length=100)
    >>> rows = [None, {}, {}, {"648": {"logprob": -0.2}, "387": {"logprob": -0.2}}, {},
    ...         {648: -3.0, 387: -3.0 - math.log(3)}]
    >>> [round(s, 3) for s in scores_from_prompt_logprobs(rows, p, label_token_ids=(648, 387))]
    [0.5, 0.75]
    """
    if not isinstance(prompt_logprobs, list) or len(prompt_logprobs) != len(prepared.ids) + 1:
        got = len(prompt_logprobs) if isinstance(prompt_logprobs, list) else "no list"
        raise PRMScoreError(
            f"{source}: expected {len(prepared.ids) + 1} prompt-logprob rows (one per prompt "
            f"token), got {got}; is the model served as a generative model with "
            "prompt_logprobs allowed?"
        )
    good_id, bad_id = label_token_ids
    scores = []
    for step, pos in enumerate(prepared.positions, prepared.dropped + 1):
        row = prompt_logprobs[pos + 1]
        if not isinstance(row, dict):
            raise PRMScoreError(f"{source}: no prompt logprobs after the tag of step {step}")
        good, bad = _logprob_of(row, good_id), _logprob_of(row, bad_id)
        if good is None or bad is None:
            missing = good_id if good is None else bad_id
            raise PRMScoreError(
                f"{source}: token {missing} is not among the top {top_logprobs} prompt "
                f"logprobs after the tag of step {step}; raise top_logprobs (and the "
                "server's --max-logprobs)"
            )
        scores.append(_two_way(good, bad))
    full = expand_truncated_scores(scores, prepared.n_steps)
    return validate_scores(full, prepared.n_steps, source=source)


class VLLMPromptOptions(TypedDict, total=False):
    """How a vLLM PRM builds its prompt and reads scores; documented on :class:`VLLMOfflinePRM`.

    One bundle for both backends: the server PRM takes these keywords as they are, and
    their defaults live in one place (``_VLLMBase._setup``).
    """

    tokenizer: Any
    style: PRMStyle
    step_tag: str | None
    step_tag_id: int | None
    system_prompt: str
    positive_index: int | None
    activation: Activation
    label_token_ids: tuple[int, int] | None
    top_logprobs: int
    max_length: int


class _VLLMBase(BaseProcessRewardModel):
    """Shared settings: style, step tag, truncation and how vLLM's answers become scores."""

    def _setup(
        self,
        *,
        style: PRMStyle = "qwen",
        tokenizer: Any = None,
        step_tag: str | None = None,
        step_tag_id: int | None = None,
        system_prompt: str = QWEN_SYSTEM_PROMPT,
        positive_index: int | None = None,
        activation: Activation = "auto",
        max_length: int = DEFAULT_MAX_LENGTH,
        label_token_ids: tuple[int, int] | None = None,
        top_logprobs: int = DEFAULT_TOP_LOGPROBS,
    ) -> None:
        """Validate and keep the prompt settings (the defaults of :class:`VLLMPromptOptions`)."""
        default_tag, default_id = _default_tag(style)
        if activation not in ("auto", "softmax", "none"):
            raise ValueError(f"activation must be 'auto', 'softmax' or 'none', got {activation!r}")
        least = 1 if style == "qwen" else 2  # math_shepherd appends one token
        if max_length < least:
            raise ValueError(f"max_length must be >= {least}, got {max_length}")
        self.style: PRMStyle = style
        self.tokenizer = tokenizer
        self.step_tag = step_tag or default_tag
        if step_tag_id is None:
            step_tag_id = (
                resolve_step_tag_id(tokenizer, style, self.step_tag)
                if tokenizer is not None
                else default_id
            )
        self.step_tag_id = step_tag_id
        self.system_prompt = system_prompt
        self.activation: Activation = activation
        self.max_length = max_length
        self.positive_index = 1 if positive_index is None else positive_index
        self.label_token_ids: tuple[int, int] | None = None
        self.top_logprobs = top_logprobs
        if style == "math_shepherd":
            if positive_index is not None:
                raise ValueError(
                    "positive_index picks a class of style='qwen' pooling rows; "
                    "math_shepherd reads the label_token_ids' logprobs instead"
                )
            if top_logprobs < 1:
                raise ValueError(f"top_logprobs must be >= 1, got {top_logprobs}")
            if label_token_ids is None:
                label_token_ids = (
                    _label_ids(tokenizer) if tokenizer is not None else MATH_SHEPHERD_GOOD_BAD_IDS
                )
            good, bad = (int(t) for t in label_token_ids)
            self.label_token_ids = (good, bad)

    def _prepare_locally(self, question: str, steps: Sequence[str]) -> PreparedInput:
        """Encode with the local tokenizer and truncate."""
        return self._prepare(encode_for(self, question, steps), len(steps))

    def _prepare(
        self, ids: Sequence[int], n_steps: int, server_max: int | None = None
    ) -> PreparedInput:
        """Check the tags and truncate from the left to what may be sent.

        ``max_length`` (and the server's ``max_model_len``) bound the prompt vLLM sees; for
        math_shepherd that prompt is one token longer than ``ids`` and one token is
        generated, so ``ids`` get two fewer tokens of ``max_model_len``.
        """
        if self.style == "qwen":
            limit = self.max_length if server_max is None else min(self.max_length, server_max)
        else:
            limit = self.max_length - 1
            if server_max is not None:
                limit = min(limit, server_max - 2)
        return prepare_prm_input(ids, self.step_tag_id, n_steps, max(1, limit), source=self.name)

    def _scores(self, rows: Any, prepared: PreparedInput) -> list[float]:
        return scores_from_rows(
            _as_rows(rows, self.name),
            prepared,
            positive_index=self.positive_index,
            activation=self.activation,
            source=self.name,
        )

    def _prompt(self, prepared: PreparedInput) -> list[int]:
        """The math_shepherd prompt: the ids and one more token, so the last tag has a row."""
        assert self.label_token_ids is not None
        return [*prepared.ids, self.label_token_ids[0]]

    def _label_scores(self, prompt_logprobs: Any, prepared: PreparedInput) -> list[float]:
        assert self.label_token_ids is not None
        return scores_from_prompt_logprobs(
            prompt_logprobs,
            prepared,
            label_token_ids=self.label_token_ids,
            top_logprobs=self.top_logprobs,
            source=self.name,
        )


def _label_ids(tokenizer: Any) -> tuple[int, int]:
    """Math-Shepherd's ``"+"``/``"-"`` ids, as its model card and TransformersPRM find them."""
    ids = tokenizer.encode("+ -", add_special_tokens=False)
    if len(ids) != 2:
        raise ValueError(
            f"'+ -' encodes to {len(ids)} tokens, not 2; pass label_token_ids=(good, bad)"
        )
    return int(ids[0]), int(ids[1])


class VLLMOfflinePRM(_VLLMBase):
    """A PRM run in this process by ``vllm.LLM``.

    ``style="qwen"`` runs the model with ``runner="pooling"`` and scores with
    ``LLM.encode(..., pooling_task="token_classify")``; ``style="math_shepherd"`` runs it as
    the causal LM it is (``runner="generate"``) and reads ``"+"``/``"-"`` from
    ``LLM.generate(..., SamplingParams(max_tokens=1, prompt_logprobs=top_logprobs))``
    (see the module docs).

    Args:
        model: model name or path, loaded with ``vllm.LLM(model, runner=..., **llm_kwargs)``
            unless ``llm`` is given (vLLM >= :data:`VLLM_MIN_VERSION`).
        llm: an already built ``vllm.LLM`` (or any object with ``get_tokenizer`` and
            ``encode`` for qwen, ``generate`` for math_shepherd).
        tokenizer: used to build inputs and find step tags; default ``llm.get_tokenizer()``.
        style: ``"qwen"`` or ``"math_shepherd"``.
        pooling_task: qwen: passed to ``LLM.encode`` (``"token_classify"``, the task of
            vLLM's Qwen2.5-Math-PRM).
        positive_index: qwen: index of "correct" in each row (default 1).
        activation: qwen: ``"auto"`` softmaxes rows that are not probabilities already.
        label_token_ids: math_shepherd: ``(good, bad)`` token ids (default: the
            tokenizer's ``"+"`` and ``"-"``).
        top_logprobs: math_shepherd: prompt logprobs per position (at most the engine's
            ``max_logprobs``, which is raised to it when this class builds the LLM).
        max_length: left-truncation length in tokens.

    Calls are serialised with a lock (``vllm.LLM`` is not thread-safe); ``ascore_batch``
    runs in a worker thread.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        llm: Any = None,
        tokenizer: Any = None,
        style: PRMStyle = "qwen",
        step_tag: str | None = None,
        step_tag_id: int | None = None,
        system_prompt: str = QWEN_SYSTEM_PROMPT,
        positive_index: int | None = None,
        pooling_task: str = "token_classify",
        activation: Activation = "auto",
        label_token_ids: tuple[int, int] | None = None,
        top_logprobs: int = DEFAULT_TOP_LOGPROBS,
        max_length: int = DEFAULT_MAX_LENGTH,
        name: str | None = None,
        **llm_kwargs: Any,
    ) -> None:
        _default_tag(style)
        if not isinstance(pooling_task, str) or not pooling_task:
            raise ValueError(
                f"pooling_task must name a task ('token_classify'), got {pooling_task!r}"
            )
        if llm is None:
            if model is None:
                raise ValueError("VLLMOfflinePRM needs a model name/path or an llm object")
            import vllm

            check_vllm_version(str(getattr(vllm, "__version__", "")))
            if style == "qwen":
                llm_kwargs.setdefault("runner", "pooling")
            else:
                llm_kwargs.setdefault("runner", "generate")
                if top_logprobs > DEFAULT_TOP_LOGPROBS:
                    llm_kwargs.setdefault("max_logprobs", top_logprobs)
            llm = vllm.LLM(model=model, **llm_kwargs)
        else:
            if llm_kwargs:
                raise ValueError(f"llm_kwargs {sorted(llm_kwargs)} cannot be used with llm=")
            loaded = sys.modules.get("vllm")  # a real vllm.LLM was built by an imported vLLM
            if loaded is not None:
                check_vllm_version(str(getattr(loaded, "__version__", "")))
        self.llm = llm
        self.name = name or f"vllm:{model or type(llm).__name__}"
        self._setup(
            style=style,
            tokenizer=tokenizer if tokenizer is not None else llm.get_tokenizer(),
            step_tag=step_tag,
            step_tag_id=step_tag_id,
            system_prompt=system_prompt,
            positive_index=positive_index,
            activation=activation,
            max_length=max_length,
            label_token_ids=label_token_ids,
            top_logprobs=top_logprobs,
        )
        self.pooling_task = pooling_task
        self._lock = threading.Lock()

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        results: list[list[float]] = [[] for _ in items]
        prepared = {
            i: self._prepare_locally(q, steps) for i, (q, steps) in enumerate(items) if len(steps)
        }
        if not prepared:
            return results
        index = list(prepared)
        if self.style == "qwen":
            outputs = self._run("encode", [prepared[i].ids for i in index])
            for i, output in zip(index, outputs, strict=True):
                results[i] = self._scores(output.outputs.data, prepared[i])
        else:
            outputs = self._run("generate", [self._prompt(prepared[i]) for i in index])
            for i, output in zip(index, outputs, strict=True):
                logprobs = getattr(output, "prompt_logprobs", None)
                results[i] = self._label_scores(
                    list(logprobs) if logprobs is not None else None, prepared[i]
                )
        return results

    def _run(self, method: str, prompts: list[list[int]]) -> list[Any]:
        """One ``LLM.encode``/``LLM.generate`` call over token-id prompts, under the lock."""
        inputs = [{"prompt_token_ids": ids} for ids in prompts]
        with self._lock:
            try:
                if method == "encode":
                    outputs = self.llm.encode(
                        inputs, pooling_task=self.pooling_task, use_tqdm=False
                    )
                else:
                    from vllm import SamplingParams

                    params = SamplingParams(
                        max_tokens=1,
                        temperature=0.0,
                        prompt_logprobs=self.top_logprobs,
                        detokenize=False,
                    )
                    outputs = self.llm.generate(inputs, params, use_tqdm=False)
            except Exception as exc:
                raise PRMError(
                    f"{self.name}: {method} failed: {type(exc).__name__}: {exc}"
                ) from exc
        if len(outputs) != len(prompts):
            raise PRMScoreError(f"{self.name}: {len(outputs)} outputs for {len(prompts)} prompts")
        return list(outputs)


@dataclass(frozen=True)
class _Answer:
    """A request's JSON body (what :meth:`VLLMServerPRM._attempts` ends with)."""

    json: Any


class _Retry(Exception):
    """A failure worth another attempt (connection error, HTTP 5xx)."""


class VLLMServerPRM(_VLLMBase):
    """A PRM served by ``vllm serve <model>``, over HTTP.

    Each trajectory is turned into token ids (with ``tokenizer`` locally, or by the
    server's ``POST /tokenize`` when no tokenizer is given), truncated from the left to
    ``max_length`` (and to the server's ``max_model_len`` when ``/tokenize`` reports it),
    and scored in batches:

    * ``style="qwen"`` (``vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner pooling``):
      ``POST /pooling`` ``{"model", "input": [[ids], ...], "task"}``; the per-step (or
      per-token) rows of ``{"data": [{"index", "data": rows}]}`` become scores.
    * ``style="math_shepherd"`` (``vllm serve peiyi9979/math-shepherd-mistral-7b-prm``, a
      generative server): ``POST /v1/completions`` ``{"model", "prompt": [[ids], ...],
      "max_tokens": 1, "prompt_logprobs": top_logprobs}``; each choice's
      ``prompt_logprobs`` give ``P(+) / (P(+) + P(-))`` after every step tag.

    It takes the prompt keywords of :class:`VLLMPromptOptions` (``style``, ``step_tag``,
    ``max_length``, ...: as in :class:`VLLMOfflinePRM`) besides these.

    Args:
        base_url: the server root, e.g. ``http://localhost:8000`` (a trailing ``/v1`` is
            dropped: ``/pooling`` and ``/tokenize`` live at the root).
        model: the served model name.
        tokenizer: a local tokenizer of the served model; saves one ``/tokenize`` request
            per trajectory.  Without it the step-tag id defaults to Qwen's 151651 or
            Math-Shepherd's 12902 (override with ``step_tag_id``), and Math-Shepherd's
            label ids to ``(648, 387)`` (override with ``label_token_ids``).
        pooling_task: qwen: the request's ``task`` (``None`` leaves it to the server).
        label_token_ids / top_logprobs: math_shepherd: as in :class:`VLLMOfflinePRM`;
            ``top_logprobs`` above 20 needs ``--max-logprobs`` on the server.
        batch_size: trajectories per request.
        timeout: seconds per HTTP request.
        max_retries: extra attempts after a connection error or an HTTP 5xx, with
            exponential backoff from ``retry_backoff`` seconds.  Read timeouts are not
            retried.  A 4xx raises :class:`~langchain_trim.errors.PRMError` at once with the
            server's message.
        max_concurrency: requests in flight at once on the async path (and the size of the
            connection pool).
        api_key: sent as ``Authorization: Bearer <api_key>``.

    The sync path uses one pooled ``httpx.Client``; the async path one ``httpx.AsyncClient``
    per event loop.  Call :meth:`close` / :meth:`aclose` (or use ``with``) to release them.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        pooling_task: str | None = "token_classify",
        batch_size: int = 8,
        timeout: float = 60.0,
        max_retries: int = 2,
        retry_backoff: float = 0.5,
        max_concurrency: int = 8,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        name: str | None = None,
        **prompt: Unpack[VLLMPromptOptions],
    ) -> None:
        if not base_url:
            raise ValueError("base_url is empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        url = base_url.rstrip("/")
        self.base_url = url.removesuffix("/v1")
        self.model = model
        self.name = name or f"vllm-server:{model}"
        unknown = sorted(set(prompt) - set(VLLMPromptOptions.__annotations__))
        if unknown:  # name the class the caller called, not the private setup
            raise TypeError(f"VLLMServerPRM() got unexpected keyword arguments {unknown}")
        self._setup(**prompt)
        self.pooling_task = pooling_task
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_concurrency = max_concurrency
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._client: Any = None
        self._aclients: dict[int, tuple[Any, Any]] = {}  # id(loop) -> (loop, client)
        self._client_lock = threading.Lock()

    # -- clients -----------------------------------------------------------------------------
    def _limits(self) -> Any:
        import httpx

        return httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )

    def _sync_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(
                    base_url=self.base_url,
                    timeout=self.timeout,
                    headers=self.headers,
                    limits=self._limits(),
                )
            return self._client

    def _async_client(self) -> Any:
        import httpx

        loop = asyncio.get_running_loop()
        entry = self._aclients.get(id(loop))
        if entry is None or entry[0] is not loop:
            # Clients are bound to the loop that made them; drop those of closed loops.
            self._aclients = {k: v for k, v in self._aclients.items() if not v[0].is_closed()}
            client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self.timeout,
                headers=self.headers,
                limits=self._limits(),
            )
            entry = (loop, client)
            self._aclients[id(loop)] = entry
        return entry[1]

    def close(self) -> None:
        """Close the sync client (async clients are closed by :meth:`aclose`)."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    async def aclose(self) -> None:
        """Close the sync client and the async client of the running loop."""
        self.close()
        loop = asyncio.get_running_loop()
        entry = self._aclients.pop(id(loop), None)
        if entry is not None:
            await entry[1].aclose()

    def __enter__(self) -> VLLMServerPRM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> VLLMServerPRM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- HTTP with retries -------------------------------------------------------------------
    def _check(self, path: str, response: Any) -> Any:
        """Return the JSON body, raise :class:`_Retry` (5xx) or :class:`PRMError` (4xx)."""
        status = response.status_code
        if status >= 500:
            raise _Retry(f"HTTP {status} from {path}: {_error_message(response)}")
        if status >= 400:
            raise PRMError(
                f"{self.name}: server rejected {path} with HTTP {status}: "
                f"{_error_message(response)}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise PRMError(f"{self.name}: {path} returned invalid JSON: {exc}") from exc

    def _transport_error(self, path: str, exc: Exception) -> Exception:
        import httpx

        if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
            return PRMError(f"{self.name}: {path} timed out after {self.timeout}s")
        return _Retry(f"{type(exc).__name__} on {path}: {exc}")

    def _attempts(self, path: str) -> Generator[float | _Answer, Any, None]:
        """The retry loop of one request without I/O, for the sync and async paths.

        Yields the seconds to wait before each attempt (0 before the first) and is sent
        the attempt's response or transport error; then yields the answer.
        """
        last = ""
        for attempt in range(self.max_retries + 1):
            outcome = yield self.retry_backoff * 2 ** (attempt - 1) if attempt else 0.0
            try:
                if isinstance(outcome, Exception):
                    raise self._transport_error(path, outcome) from outcome
                yield _Answer(self._check(path, outcome))
                return
            except _Retry as exc:
                last = str(exc)
        raise PRMError(f"{self.name}: {path} failed after {self.max_retries + 1} attempts: {last}")

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        client = self._sync_client()
        attempts = self._attempts(path)
        step = next(attempts)
        while not isinstance(step, _Answer):
            if step:
                time.sleep(step)
            try:
                outcome: Any = client.post(path, json=body)
            except httpx.TransportError as exc:
                outcome = exc
            step = attempts.send(outcome)
        return step.json

    async def _apost(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        client = self._async_client()
        attempts = self._attempts(path)
        step = next(attempts)
        while not isinstance(step, _Answer):
            if step:
                await asyncio.sleep(step)
            try:
                outcome: Any = await client.post(path, json=body)
            except httpx.TransportError as exc:
                outcome = exc
            step = attempts.send(outcome)
        return step.json

    # -- request bodies ----------------------------------------------------------------------
    def _tokenize_body(self, question: str, steps: Sequence[str]) -> dict[str, Any]:
        if self.style == "qwen":
            return {
                "model": self.model,
                "messages": qwen_prm_messages(
                    question, steps, system=self.system_prompt, step_tag=self.step_tag
                ),
                "add_generation_prompt": False,
                "continue_final_message": False,
                "add_special_tokens": False,
            }
        return {
            "model": self.model,
            "prompt": math_shepherd_prm_prompt(question, steps, step_tag=self.step_tag),
            "add_special_tokens": True,
        }

    def _from_tokenize(self, answer: Any, n_steps: int) -> PreparedInput:
        if not isinstance(answer, dict) or not isinstance(answer.get("tokens"), list):
            raise PRMError(f"{self.name}: /tokenize answered without a 'tokens' list")
        server_max = answer.get("max_model_len")
        if not (isinstance(server_max, int) and server_max > 0):
            server_max = None
        return self._prepare([int(t) for t in answer["tokens"]], n_steps, server_max)

    def _pooling_body(self, batch: Sequence[PreparedInput]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "input": [p.ids for p in batch]}
        if self.pooling_task is not None:
            body["task"] = self.pooling_task
        return body

    def _from_pooling(self, answer: Any, batch: Sequence[PreparedInput]) -> list[list[float]]:
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != len(batch):
            got = len(data) if isinstance(data, list) else "no"
            raise PRMScoreError(f"{self.name}: /pooling returned {got} results for {len(batch)}")
        by_index = {}
        for position, entry in enumerate(data):
            if not isinstance(entry, dict) or "data" not in entry:
                raise PRMScoreError(f"{self.name}: /pooling result without 'data': {entry!r:.200}")
            by_index[int(entry.get("index", position))] = entry["data"]
        if sorted(by_index) != list(range(len(batch))):
            raise PRMScoreError(f"{self.name}: /pooling result indices {sorted(by_index)}")
        return [self._scores(by_index[j], p) for j, p in enumerate(batch)]

    def _completions_body(self, batch: Sequence[PreparedInput]) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": [self._prompt(p) for p in batch],
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": self.top_logprobs,
        }

    def _from_completions(self, answer: Any, batch: Sequence[PreparedInput]) -> list[list[float]]:
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not isinstance(choices, list) or len(choices) != len(batch):
            got = len(choices) if isinstance(choices, list) else "no"
            raise PRMScoreError(
                f"{self.name}: /v1/completions returned {got} choices for {len(batch)} prompts"
            )
        by_index = {}
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                raise PRMScoreError(f"{self.name}: /v1/completions choice {choice!r:.200}")
            by_index[int(choice.get("index", position))] = choice.get("prompt_logprobs")
        if sorted(by_index) != list(range(len(batch))):
            raise PRMScoreError(f"{self.name}: /v1/completions choice indices {sorted(by_index)}")
        return [self._label_scores(by_index[j], p) for j, p in enumerate(batch)]

    def _score_chunk(self, batch: Sequence[PreparedInput]) -> list[list[float]]:
        if self.style == "qwen":
            return self._from_pooling(self._post("/pooling", self._pooling_body(batch)), batch)
        answer = self._post("/v1/completions", self._completions_body(batch))
        return self._from_completions(answer, batch)

    async def _ascore_chunk(self, batch: Sequence[PreparedInput]) -> list[list[float]]:
        if self.style == "qwen":
            answer = await self._apost("/pooling", self._pooling_body(batch))
            return self._from_pooling(answer, batch)
        answer = await self._apost("/v1/completions", self._completions_body(batch))
        return self._from_completions(answer, batch)

    def _chunks(self, prepared: dict[int, PreparedInput]) -> list[list[int]]:
        index = list(prepared)
        return [index[s : s + self.batch_size] for s in range(0, len(index), self.batch_size)]

    # -- protocol ----------------------------------------------------------------------------
    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        results: list[list[float]] = [[] for _ in items]
        prepared: dict[int, PreparedInput] = {}
        for i, (question, steps) in enumerate(items):
            if not len(steps):
                continue
            if self.tokenizer is not None:
                prepared[i] = self._prepare_locally(question, steps)
            else:
                answer = self._post("/tokenize", self._tokenize_body(question, steps))
                prepared[i] = self._from_tokenize(answer, len(steps))
        for chunk in self._chunks(prepared):
            batch = [prepared[i] for i in chunk]
            for i, scores in zip(chunk, self._score_chunk(batch), strict=True):
                results[i] = scores
        return results

    async def ascore_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def bounded(job: Awaitable[T]) -> T:
            async with semaphore:
                return await job

        async def prepare(question: str, steps: Sequence[str]) -> PreparedInput:
            if self.tokenizer is not None:
                return self._prepare_locally(question, steps)
            answer = await self._apost("/tokenize", self._tokenize_body(question, steps))
            return self._from_tokenize(answer, len(steps))

        async def pool(batch: list[PreparedInput]) -> list[list[float]]:
            return await self._ascore_chunk(batch)

        results: list[list[float]] = [[] for _ in items]
        todo = [i for i, (_, steps) in enumerate(items) if len(steps)]
        ready = await asyncio.gather(*(bounded(prepare(*items[i])) for i in todo))
        prepared = dict(zip(todo, ready, strict=True))
        chunks = self._chunks(prepared)
        scored = await asyncio.gather(
            *(bounded(pool([prepared[i] for i in chunk])) for chunk in chunks)
        )
        for chunk, chunk_scores in zip(chunks, scored, strict=True):
            for i, scores in zip(chunk, chunk_scores, strict=True):
                results[i] = scores
        return results


def _error_message(response: Any) -> str:
    """The server's error message: vLLM ``{"error": {"message"}}``, older ``{"message"}``,
    FastAPI ``{"detail"}``, or the raw text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])
    text = str(getattr(response, "text", "") or "").strip()
    return text[:500] or "(empty body)"


__all__ = [
    "DEFAULT_TOP_LOGPROBS",
    "VLLM_MIN_VERSION",
    "Activation",
    "VLLMOfflinePRM",
    "VLLMServerPRM",
    "check_vllm_version",
    "scores_from_prompt_logprobs",
    "scores_from_rows",
]
