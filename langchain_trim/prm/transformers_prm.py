"""Process reward models run in-process with Hugging Face ``transformers`` (GPU when present).

Two PRM families are supported, picked with ``style``:

* ``"qwen"`` — Qwen2.5-Math-PRM-7B/72B and other token-classification PRMs.  The input is a
  chat: system :data:`QWEN_SYSTEM_PROMPT`, user = the question, assistant = the steps, each
  followed by the step tag ``<extra_0>``, rendered with the tokenizer's chat template (or,
  when the tokenizer has none, with the ChatML layout that Qwen's template produces, see
  :func:`chatml_prm_prompt`).  The model returns two logits per token; the score of step
  ``i`` is ``softmax(logits at the i-th step tag)[1]``.
* ``"math_shepherd"`` — causal-LM PRMs such as ``peiyi9979/math-shepherd-mistral-7b-prm``.
  The input is ``question + " " + "Step 1: <step> ки\\nStep 2: <step> ки..."`` (see
  :func:`math_shepherd_prm_prompt`); at each step tag the next-token logits of the good and
  bad tokens (``"+"``/``"-"``) are softmaxed together and the score is P(good).

**Long inputs.**  Inputs longer than ``max_length`` tokens are truncated *from the left*:
the newest tokens (the latest steps, which the router is asking about) are kept and the
system prompt/question are dropped first.  Steps whose step tag fell off the kept window
cannot be scored; they get the score of the earliest step whose tag survived (so the
returned list always has one score per step, and the newest step's score is always real).
If not even the last step's tag survives, :class:`~langchain_trim.errors.PRMScoreError` is
raised.

``torch`` and ``transformers`` are imported only inside functions, so importing this module
is cheap; install them with ``pip install 'langchain-trim[gpu]'``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from langchain_trim.errors import InvalidInputError, PRMScoreError
from langchain_trim.prm.base import BaseProcessRewardModel, PRMItem, validate_scores

logger = logging.getLogger(__name__)

PRMStyle = Literal["qwen", "math_shepherd"]

QWEN_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
"""System turn that Qwen2.5-Math-PRM was trained with."""
QWEN_STEP_TAG = "<extra_0>"
QWEN_STEP_TAG_ID = 151651
"""Token id of ``<extra_0>`` in the Qwen2.5 tokenizer."""
MATH_SHEPHERD_STEP_TAG = "ки"
MATH_SHEPHERD_STEP_TAG_ID = 12902
"""Token id of the step tag in the Math-Shepherd (Mistral) tokenizer."""
MATH_SHEPHERD_GOOD_BAD_IDS = (648, 387)
"""Token ids of ``"+"`` and ``"-"`` in the Math-Shepherd (Mistral) tokenizer."""
DEFAULT_MAX_LENGTH = 4096

_STYLES = ("qwen", "math_shepherd")


# -- prompt formats (pure functions, shared with the vLLM backends) -------------------------
def qwen_prm_messages(
    question: str,
    steps: Sequence[str],
    *,
    system: str = QWEN_SYSTEM_PROMPT,
    step_tag: str = QWEN_STEP_TAG,
) -> list[dict[str, str]]:
    """The chat that Qwen2.5-Math-PRM scores: every step is followed by the step tag.

    >>> qwen_prm_messages("1+1?", ["1+1=2", "so 2"], system="S")[-1]
    {'role': 'assistant', 'content': '1+1=2<extra_0>so 2<extra_0>'}
    """
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": question},
        {"role": "assistant", "content": "".join(step + step_tag for step in steps)},
    ]


def chatml_prm_prompt(
    question: str,
    steps: Sequence[str],
    *,
    system: str = QWEN_SYSTEM_PROMPT,
    step_tag: str = QWEN_STEP_TAG,
) -> str:
    """Fallback rendering of :func:`qwen_prm_messages` for tokenizers without a chat template.

    It is the ChatML text that Qwen2.5's own template produces (no generation prompt).

    >>> chatml_prm_prompt("1+1?", ["1+1=2"], system="S").splitlines()
    ... # doctest: +NORMALIZE_WHITESPACE
    ['<|im_start|>system', 'S<|im_end|>', '<|im_start|>user', '1+1?<|im_end|>',
     '<|im_start|>assistant', '1+1=2<extra_0><|im_end|>']
    """
    messages = qwen_prm_messages(question, steps, system=system, step_tag=step_tag)
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def math_shepherd_prm_prompt(
    question: str, steps: Sequence[str], *, step_tag: str = MATH_SHEPHERD_STEP_TAG
) -> str:
    """The Math-Shepherd input: the question, then numbered steps each ending in the tag.

    >>> math_shepherd_prm_prompt("1+1?", ["1+1=2", "The answer is: 2"])
    '1+1? Step 1: 1+1=2 ки\\nStep 2: The answer is: 2 ки'
    """
    body = "\n".join(f"Step {i}: {step} {step_tag}" for i, step in enumerate(steps, 1))
    return f"{question} {body}"


def encode_prm_input(
    tokenizer: Any,
    question: str,
    steps: Sequence[str],
    *,
    style: PRMStyle,
    step_tag: str,
    system: str = QWEN_SYSTEM_PROMPT,
) -> list[int]:
    """Token ids of the PRM input for ``style`` (untruncated).

    ``"qwen"``: the chat template (or :func:`chatml_prm_prompt`) rendered to text, then
    encoded without extra special tokens (the template carries them).  ``"math_shepherd"``:
    :func:`math_shepherd_prm_prompt` encoded with the tokenizer's special tokens (BOS), as
    in the model card.
    """
    if style == "qwen":
        messages = qwen_prm_messages(question, steps, system=system, step_tag=step_tag)
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=False
            )
        else:
            text = chatml_prm_prompt(question, steps, system=system, step_tag=step_tag)
        return [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]
    text = math_shepherd_prm_prompt(question, steps, step_tag=step_tag)
    return [int(t) for t in tokenizer.encode(text)]


class PRMInputFormat(Protocol):
    """What :func:`encode_for` reads of a PRM: its tokenizer and input format."""

    tokenizer: Any
    style: PRMStyle
    step_tag: str
    system_prompt: str


def encode_for(prm: PRMInputFormat, question: str, steps: Sequence[str]) -> list[int]:
    """:func:`encode_prm_input` with ``prm``'s tokenizer and input format."""
    return encode_prm_input(
        prm.tokenizer,
        question,
        steps,
        style=prm.style,
        step_tag=prm.step_tag,
        system=prm.system_prompt,
    )


def resolve_step_tag_id(tokenizer: Any, style: PRMStyle, step_tag: str) -> int:
    """The id the tokenizer gives the step tag *where it occurs in the PRM input*.

    ``"qwen"``: the tag is a special token, looked up directly.  ``"math_shepherd"``: the
    tag follows a space, so the last id of ``"x <tag>"`` is used (``12902`` for Mistral).
    """
    if style == "qwen":
        tag_id = tokenizer.convert_tokens_to_ids(step_tag)
        unk = getattr(tokenizer, "unk_token_id", None)
        if isinstance(tag_id, int) and tag_id >= 0 and tag_id != unk:
            return tag_id
    text = f"x {step_tag}" if style == "math_shepherd" else step_tag
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"the tokenizer encodes the step tag {step_tag!r} to no tokens")
    return int(ids[-1])


@dataclass(frozen=True)
class PreparedInput:
    """One PRM input after the step-tag check and left truncation."""

    ids: list[int]
    """Token ids actually sent to the model (at most ``max_length``)."""
    positions: list[int]
    """Positions of the surviving step tags in ``ids``, in order."""
    n_steps: int
    dropped: int
    """Steps whose tag fell off the left edge (they borrow the earliest surviving score)."""


def prepare_prm_input(
    ids: Sequence[int],
    step_tag_id: int,
    n_steps: int,
    max_length: int,
    *,
    source: str = "PRM",
) -> PreparedInput:
    """Find the step tags, check there is one per step, and truncate from the left.

    >>> p = prepare_prm_input([5, 9, 1, 6, 9, 7, 9, 2], 9, 3, max_length=5)
    >>> p.ids, p.positions, p.dropped
    ([6, 9, 7, 9, 2], [1, 3], 1)
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    positions = [i for i, tok in enumerate(ids) if tok == step_tag_id]
    if len(positions) != n_steps:
        raise PRMScoreError(
            f"{source}: found {len(positions)} step tags (token id {step_tag_id}) in the "
            f"input for {n_steps} steps; the question or a step probably contains the step "
            "tag text, or the tokenizer does not map the tag to that id (set step_tag_id)"
        )
    start = max(0, len(ids) - max_length)
    kept = [p - start for p in positions if p >= start]
    if not kept:
        raise PRMScoreError(
            f"{source}: the newest step alone is longer than max_length={max_length} tokens; "
            "no step tag survived left truncation"
        )
    dropped = n_steps - len(kept)
    if dropped:
        logger.info(
            "%s: input of %d tokens truncated to %d from the left; %d of %d steps borrow "
            "the earliest surviving score",
            source,
            len(ids),
            max_length,
            dropped,
            n_steps,
        )
    return PreparedInput(ids=list(ids[start:]), positions=kept, n_steps=n_steps, dropped=dropped)


def expand_truncated_scores(scores: Sequence[float], n_steps: int) -> list[float]:
    """Give the steps cut off by left truncation the earliest surviving score.

    >>> expand_truncated_scores([0.2, 0.7], 4)
    [0.2, 0.2, 0.2, 0.7]
    """
    scores = list(scores)
    if not scores:
        return scores
    return [scores[0]] * (n_steps - len(scores)) + scores


def _check_style(style: str) -> None:
    if style not in _STYLES:
        raise ValueError(f"style must be 'qwen' or 'math_shepherd', got {style!r}")


# -- the transformers backend ----------------------------------------------------------------
def _refuse_remote_code(name_or_path: str, model_kwargs: dict[str, Any]) -> None:
    """Raise if the checkpoint's config asks for its own code and it was not allowed.

    Loading such a checkpoint without that code would silently build a stock class with
    a random head; better to say what to pass.
    """
    import transformers

    extra = {k: model_kwargs[k] for k in ("revision", "token", "cache_dir") if k in model_kwargs}
    try:
        config = transformers.AutoConfig.from_pretrained(
            name_or_path, trust_remote_code=False, **extra
        )
    except ValueError as exc:  # an unknown model_type that only remote code defines
        if "trust_remote_code" in str(exc):
            raise InvalidInputError(_REMOTE_CODE_HINT.format(name=name_or_path, what=exc)) from exc
        raise
    native = [a for a in getattr(config, "architectures", None) or [] if hasattr(transformers, a)]
    custom = [a for a in getattr(config, "architectures", None) or [] if a not in native]
    if custom and getattr(config, "auto_map", None):
        what = f"its architecture {custom[0]} is defined by code in the repository"
        raise InvalidInputError(_REMOTE_CODE_HINT.format(name=name_or_path, what=what))


_REMOTE_CODE_HINT = (
    "{name} needs code from its repository ({what}); pass trust_remote_code=True to run it "
    "(review that code first, and pin it with model_kwargs={{'revision': ...}})"
)


class TransformersPRM(BaseProcessRewardModel):
    """A PRM run with a ``transformers`` model in this process.

    Args:
        model: a loaded model.  ``style="qwen"``: a token classifier with 2 labels
            (``*ForTokenClassification`` returning ``.logits``, or Qwen's remote-code PRM
            returning the logits as ``outputs[0]``).  ``style="math_shepherd"``: a causal LM.
        tokenizer: the matching tokenizer.
        style: ``"qwen"`` or ``"math_shepherd"`` (see the module docs for the formats).
        step_tag / step_tag_id: the step separator and its token id (default: from the
            tokenizer; ``<extra_0>`` for qwen, ``ки`` for math_shepherd).
        good_token / bad_token / candidate_token_ids: math_shepherd's label tokens, or their
            ids as ``(good_id, bad_id)``.
        positive_index: qwen's class index meaning "correct" (1).
        system_prompt: qwen's system turn.
        batch_size: trajectories per forward pass.  Inputs are sorted by length and padded
            on the right, which leaves every real token's logits unchanged.
        max_length: inputs are truncated from the left to this many tokens; see the module
            docs for what steps cut off this way score.
        device: where inputs go (default: the model's device).

    Use :meth:`from_pretrained` to load by name.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        style: PRMStyle = "qwen",
        step_tag: str | None = None,
        step_tag_id: int | None = None,
        good_token: str = "+",
        bad_token: str = "-",
        candidate_token_ids: tuple[int, int] | None = None,
        positive_index: int = 1,
        system_prompt: str = QWEN_SYSTEM_PROMPT,
        batch_size: int = 8,
        max_length: int = DEFAULT_MAX_LENGTH,
        device: Any = None,
        name: str | None = None,
    ) -> None:
        _check_style(style)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.style: PRMStyle = style
        self.step_tag = step_tag or (QWEN_STEP_TAG if style == "qwen" else MATH_SHEPHERD_STEP_TAG)
        self.step_tag_id = (
            step_tag_id
            if step_tag_id is not None
            else resolve_step_tag_id(tokenizer, style, self.step_tag)
        )
        self.candidate_token_ids: tuple[int, int] | None = None
        if style == "math_shepherd":
            if candidate_token_ids is None:
                ids = tokenizer.encode(f"{good_token} {bad_token}", add_special_tokens=False)
                if len(ids) != 2:
                    raise ValueError(
                        f"{good_token!r} {bad_token!r} encode to {len(ids)} tokens, not 2; "
                        "pass candidate_token_ids=(good_id, bad_id)"
                    )
                candidate_token_ids = (int(ids[0]), int(ids[1]))
            self.candidate_token_ids = candidate_token_ids
        self.positive_index = positive_index
        self.system_prompt = system_prompt
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device if device is not None else _model_device(model)
        config = getattr(model, "config", None)
        model_name = getattr(config, "_name_or_path", None) or type(model).__name__
        self.name = name or f"transformers:{model_name}"
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        style: PRMStyle = "qwen",
        device_map: str | dict[str, Any] | None = None,
        torch_dtype: Any = None,
        trust_remote_code: bool = False,
        auto_class: str | None = None,
        tokenizer_name_or_path: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TransformersPRM:
        """Load a PRM and its tokenizer by hub name or local path.

        Args:
            style: ``"qwen"`` or ``"math_shepherd"``.
            device_map: ``None`` puts the whole model on the GPU when CUDA is available,
                else on the CPU; ``"auto"`` (needs ``accelerate``) shards it over devices.
            torch_dtype: default bfloat16 on GPU, float32 on CPU; ``"auto"`` keeps the
                checkpoint's dtype.
            trust_remote_code: run Python code that ships with the checkpoint.  Off by
                default, because it executes whatever the repository holds.
                Qwen2.5-Math-PRM ships its model class that way, so it needs
                ``trust_remote_code=True`` (review the code first; pin it with
                ``model_kwargs={"revision": ...}``).  Without it, a checkpoint whose
                config asks for its own code, or whose weights do not fill the chosen
                class (a randomly initialised head), raises
                :class:`~langchain_trim.errors.InvalidInputError` instead of scoring
                with random weights.
            auto_class: the ``transformers`` auto class; default ``AutoModel`` for qwen
                with remote code, ``AutoModelForTokenClassification`` for qwen without,
                ``AutoModelForCausalLM`` for math_shepherd.
            model_kwargs: more keyword arguments for the model's ``from_pretrained``.
            **kwargs: passed to the constructor (``batch_size``, ``max_length``, ...).
        """
        _check_style(style)
        import torch
        import transformers

        cuda = torch.cuda.is_available()
        if not isinstance(trust_remote_code, bool):
            raise InvalidInputError(
                f"trust_remote_code must be True or False, not {trust_remote_code!r}"
            )
        if not trust_remote_code:
            _refuse_remote_code(name_or_path, model_kwargs or {})
        if auto_class is None:
            if style == "math_shepherd":
                auto_class = "AutoModelForCausalLM"
            else:
                auto_class = "AutoModel" if trust_remote_code else "AutoModelForTokenClassification"
        if torch_dtype is None:
            torch_dtype = torch.bfloat16 if cuda else torch.float32
        major = int(transformers.__version__.split(".")[0])
        load_kwargs: dict[str, Any] = {
            "trust_remote_code": trust_remote_code,
            ("dtype" if major >= 5 else "torch_dtype"): torch_dtype,
            **(model_kwargs or {}),
        }
        if device_map is not None:
            load_kwargs["device_map"] = device_map
        loader = getattr(transformers, auto_class)
        model, info = loader.from_pretrained(name_or_path, output_loading_info=True, **load_kwargs)
        missing = sorted(info.get("missing_keys") or ()) if isinstance(info, dict) else []
        if missing:
            raise InvalidInputError(
                f"{name_or_path}: {auto_class} left {len(missing)} weights randomly initialised "
                f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); the checkpoint "
                "does not fit that class (pass auto_class=, or trust_remote_code=True for a "
                "model that ships its own code)"
            )
        if device_map is None:
            model.to("cuda" if cuda else "cpu")
        model.eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            tokenizer_name_or_path or name_or_path, trust_remote_code=trust_remote_code
        )
        kwargs.setdefault("name", f"transformers:{name_or_path}")
        return cls(model, tokenizer, style=style, **kwargs)

    # -- scoring -----------------------------------------------------------------------------
    def prepare(self, question: str, steps: Sequence[str]) -> PreparedInput:
        """Encode and truncate one trajectory (exposed for inspection and tests)."""
        ids = encode_for(self, question, steps)
        return prepare_prm_input(
            ids, self.step_tag_id, len(steps), self.max_length, source=self.name
        )

    def score_batch(self, items: Sequence[PRMItem]) -> list[list[float]]:
        results: list[list[float]] = [[] for _ in items]
        prepared = {i: self.prepare(q, steps) for i, (q, steps) in enumerate(items) if len(steps)}
        # Longest first: similar lengths share a batch and an OOM shows up at once.
        order = sorted(prepared, key=lambda i: len(prepared[i].ids), reverse=True)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            with self._lock:
                raw = self._forward([prepared[i] for i in chunk])
            for i, scores in zip(chunk, raw, strict=True):
                full = expand_truncated_scores(scores, prepared[i].n_steps)
                results[i] = validate_scores(full, prepared[i].n_steps, source=self.name)
        return results

    def _forward(self, batch: Sequence[PreparedInput]) -> list[list[float]]:
        """One padded forward pass; returns the raw score of every surviving tag."""
        import torch

        width = max(len(p.ids) for p in batch)
        pad_id = getattr(self.tokenizer, "pad_token_id", None)
        pad_id = 0 if pad_id is None else int(pad_id)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, p in enumerate(batch):  # right padding keeps real positions 0..n-1
            input_ids[row, : len(p.ids)] = torch.tensor(p.ids, dtype=torch.long)
            mask[row, : len(p.ids)] = 1
        input_ids = input_ids.to(self.device)
        mask = mask.to(self.device)
        with torch.inference_mode():
            if self.style == "qwen":
                return self._qwen_scores(input_ids, mask, batch)
            return self._shepherd_scores(input_ids, mask, batch)

    def _qwen_scores(
        self, input_ids: Any, mask: Any, batch: Sequence[PreparedInput]
    ) -> list[list[float]]:
        import torch

        out = self.model(input_ids=input_ids, attention_mask=mask)
        logits = getattr(out, "logits", None)
        if logits is None:
            logits = out[0]
        if logits.dim() != 3 or logits.shape[-1] <= self.positive_index:
            raise PRMScoreError(
                f"{self.name}: expected per-token logits [batch, tokens, 2], got shape "
                f"{tuple(logits.shape)}"
            )
        scores = []
        for row, p in enumerate(batch):
            at_tags = logits[row, torch.tensor(p.positions, device=logits.device)].float()
            scores.append(at_tags.softmax(dim=-1)[:, self.positive_index].tolist())
        return scores

    def _shepherd_scores(
        self, input_ids: Any, mask: Any, batch: Sequence[PreparedInput]
    ) -> list[list[float]]:
        import inspect

        import torch

        assert self.candidate_token_ids is not None
        # Ask only for the logits at tag positions when the model can (saves [B, T, V]).
        keep = sorted({pos for p in batch for pos in p.positions})
        column = {pos: j for j, pos in enumerate(keep)}
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask}
        params = inspect.signature(self.model.forward).parameters
        if "use_cache" in params:
            kwargs["use_cache"] = False
        sliced = "logits_to_keep" in params
        if sliced:
            kwargs["logits_to_keep"] = torch.tensor(keep, dtype=torch.long, device=self.device)
        logits = self.model(**kwargs).logits
        cand = torch.tensor(self.candidate_token_ids, device=logits.device)
        scores = []
        for row, p in enumerate(batch):
            cols = [column[pos] for pos in p.positions] if sliced else p.positions
            at_tags = logits[row, torch.tensor(cols, device=logits.device)][:, cand].float()
            scores.append(at_tags.softmax(dim=-1)[:, 0].tolist())
        return scores


def _model_device(model: Any) -> Any:
    device = getattr(model, "device", None)
    if device is not None:
        return device
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return "cpu"


__all__ = [
    "DEFAULT_MAX_LENGTH",
    "MATH_SHEPHERD_GOOD_BAD_IDS",
    "MATH_SHEPHERD_STEP_TAG",
    "MATH_SHEPHERD_STEP_TAG_ID",
    "QWEN_STEP_TAG",
    "QWEN_STEP_TAG_ID",
    "QWEN_SYSTEM_PROMPT",
    "PRMInputFormat",
    "PRMStyle",
    "PreparedInput",
    "TransformersPRM",
    "chatml_prm_prompt",
    "encode_for",
    "encode_prm_input",
    "expand_truncated_scores",
    "math_shepherd_prm_prompt",
    "prepare_prm_input",
    "qwen_prm_messages",
    "resolve_step_tag_id",
]
