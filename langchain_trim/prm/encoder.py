"""Per-step features from one llama.cpp forward pass over a whole solution.

The cheap CPU cousin of how Qwen2.5-Math-PRM reads a head at step separators: the
solution is laid out as ``Question: ...\\n\\nSolution: step\\n\\nstep\\n\\n...`` (every
step ends with the delimiter, so no step looks different from the others), evaluated
once, and each step is summarised by

* the mean and the last-token final-layer hidden state over its tokens,
* its tokens' teacher-forced log-probabilities (mean, min, std, share below 10%), and
  those of the digits of its numbers alone (all numbers, each number's first digit,
  results after ``=``, numbers that are new to the solution),
* its position and length, and what the exact arithmetic verifier finds in it.

The model is causal, so a step's features depend only on the text up to its end: they
are cached by prefix, and llama.cpp's KV cache is reused between calls, so scoring a
growing trajectory only evaluates the new step.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from langchain_trim.prm.arithmetic import check_step

_CHUNK = 128
"""Tokens evaluated per llama.cpp batch: every position needs its logits, and llama.cpp
keeps a (batch × vocabulary) logits buffer, so small batches keep memory down.  Only the
log-probability of the token that follows is kept, never a (context × vocabulary) array."""

FEATURE_VERSION = 3
MODEL_FEATURE_VERSION = 2
"""Version of the llama.cpp part alone (feature caches of the benchmark key on it)."""
TEXT_FEATURES = (
    "n_numbers",
    "n_new_numbers",
    "new_number_share",
    "has_boxed",
    "is_first",
    "log_len_vs_previous",
    "has_equation",
    "n_equations",
)
SCALAR_FEATURES = (
    "logprob_mean",
    "logprob_min",
    "logprob_std",
    "low_prob_share",
    "position",
    "log_tokens",
    "arith_checked",
    "arith_false",
    "has_digits",
    "digit_logprob_min",
    "digit_logprob_mean",
    "number_first_logprob_min",
    "result_logprob_min",
    "new_number_logprob_min",
)
"""Per-step scalars read from the model.  The ``*digit*``/``*number*`` ones look only at
the tokens of numbers in the step (``0`` when there are none): a wrong step is usually a
wrong number, and how surprised the model is by the digits it separates right from wrong
steps far better than its surprise over all tokens, which wording dominates.  ``result``:
numbers right after ``=``; ``new_number``: numbers not in the question or earlier steps."""

_NUMBER_BYTES = re.compile(rb"\d+(?:\.\d+)?")
_AFTER_EQUALS = re.compile(rb"=\s*(?:\\?\$|\\boxed\{)?\s*$")


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def text_features(question: str, steps: Sequence[str]) -> np.ndarray:
    """Cheap surface features per step: numbers it introduces, length vs earlier steps, ...

    >>> f = text_features("Ann has 3 apples.", ["3 + 4 = 7", r"So \\boxed{7}"])
    >>> [[round(float(v), 2) for v in row] for row in f[:, :4]]
    [[3.0, 2.0, 0.67, 0.0], [1.0, 0.0, 0.0, 1.0]]
    """
    seen = set(_NUMBER.findall(question))
    lengths: list[int] = []
    rows = []
    for t, step in enumerate(steps):
        numbers = _NUMBER.findall(step)
        new = [n for n in numbers if n not in seen]
        words = len(step.split())
        mean_prev = float(np.mean(lengths)) if lengths else float(words)
        rows.append(
            [
                len(numbers),
                len(new),
                len(new) / max(len(numbers), 1),
                float("boxed" in step),
                float(t == 0),
                math.log1p(words) - math.log1p(mean_prev),
                float("=" in step),
                step.count("="),
            ]
        )
        seen.update(numbers)
        lengths.append(words)
    return np.asarray(rows, dtype=np.float32).reshape(len(steps), len(TEXT_FEATURES))


class LlamaStepEncoder:
    """Turns ``(question, steps)`` into one feature row per step.

    Args:
        model: embedded model name or GGUF path (the probe shipped with the package was
            trained on ``weak``, Qwen2.5-Coder-0.5B-Instruct).
        max_tokens: longer inputs are truncated from the left (the newest steps are kept);
            a step cut off entirely gets the features of the earliest surviving step.
        n_threads: llama.cpp threads (``None``: its default).
    """

    def __init__(
        self,
        model: str = "weak",
        *,
        max_tokens: int = 1024,
        n_threads: int | None = None,
        cache_size: int = 4096,
    ) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.n_threads = n_threads
        self._llm: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._pieces: dict[int, bytes] = {}
        self._lock = threading.Lock()
        self._tokens: list[int] = []
        self._emb = np.zeros((0, 0), dtype=np.float32)
        self._logprob = np.zeros(0, dtype=np.float32)
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    # -- model ---------------------------------------------------------------------
    def load(self) -> Any:
        """The llama.cpp model, shared with any chat model of the same file.

        The weights come from :func:`~langchain_trim.local.llama.shared_llama` (one copy per
        process, so the probe PRM and the weak drafter do not map the same GGUF twice);
        the encoder only adds its own small context that outputs embeddings and logits
        for every token.
        """
        if self._llm is None:
            import llama_cpp
            from llama_cpp import _internals
            from llama_cpp._utils import suppress_stdout_stderr

            from langchain_trim.local.llama import shared_llama
            from langchain_trim.local.registry import resolve_model_path

            llm = shared_llama(resolve_model_path(self.model), n_threads=self.n_threads)
            params = type(llm.context_params).from_buffer_copy(llm.context_params)
            params.n_ctx = self.max_tokens + 8
            params.n_batch = _CHUNK
            params.n_ubatch = _CHUNK
            params.n_seq_max = 1
            params.embeddings = True
            params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE
            with suppress_stdout_stderr(disable=False):  # llama.cpp's pooling notice
                self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
            self._batch = _internals.LlamaBatch(n_tokens=_CHUNK, embd=0, n_seq_max=1)
            self._emb = np.zeros((0, llm.n_embd()), dtype=np.float32)
            self._tokens = []
            self._llm = llm
            atexit.register(self.close)
        return self._llm

    def close(self) -> None:
        """Free the encoder's context (the shared weights stay with their cache)."""
        if self._llm is not None:
            with contextlib.suppress(Exception):
                self._batch.close()
                self._ctx.close()
            self._llm = None
            self._tokens = []

    def clear_cache(self) -> None:
        """Forget every cached feature row and the evaluated prefix: the next call starts
        cold (what timing a single question needs; scores do not change)."""
        with self._lock:
            self._cache.clear()
            self._tokens = []

    @property
    def dim(self) -> int:
        return 2 * int(self.load().n_embd()) + len(SCALAR_FEATURES) + len(TEXT_FEATURES)

    # -- layout --------------------------------------------------------------------
    def layout(
        self, question: str, steps: Sequence[str]
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of the whole text and the ``[start, end)`` span of each step."""
        llm = self.load()
        tokens = list(
            llm.tokenize(f"Question: {question.strip()}\n\nSolution: ".encode(), add_bos=True)
        )
        spans = []
        for step in steps:
            piece = llm.tokenize((step.strip() + "\n\n").encode(), add_bos=False)
            spans.append((len(tokens), len(tokens) + len(piece)))
            tokens.extend(piece)
        return tokens, spans

    # -- evaluation ------------------------------------------------------------------
    def _evaluate(self, tokens: list[int]) -> None:
        """Make ``self._emb``/``self._logprob`` cover ``tokens``, reusing the KV cache."""
        import llama_cpp

        llm = self.load()
        lcp = 0
        for a, b in zip(self._tokens, tokens, strict=False):
            if a != b:
                break
            lcp += 1
        if lcp == len(tokens) == len(self._tokens):
            return
        # Re-decode the last shared token: its logits score the first new one.
        start = max(lcp - 1, 0)
        if start == 0 or not self._ctx.kv_cache_seq_rm(-1, start, -1):
            self._ctx.kv_cache_clear()
            start = 0
        emb_rows = [self._emb[:start]]
        logprobs = [self._logprob[: start + 1] if start else np.zeros(1, np.float32)]
        n_embd, n_vocab = llm.n_embd(), llm.n_vocab()
        for pos in range(start, len(tokens), _CHUNK):
            chunk = tokens[pos : pos + _CHUNK]
            self._batch.set_batch(chunk, n_past=pos, logits_all=True)
            self._ctx.decode(self._batch)
            n = len(chunk)
            emb = llama_cpp.llama_get_embeddings(self._ctx.ctx)
            emb_rows.append(np.ctypeslib.as_array(emb, shape=(n, n_embd)).copy())
            ptr = llama_cpp.llama_get_logits(self._ctx.ctx)
            logits = np.ctypeslib.as_array(ptr, shape=(n, n_vocab))
            following = np.asarray(tokens[pos + 1 : pos + n + 1], dtype=np.int64)
            rows = logits[: len(following)]
            peak = rows.max(axis=1)
            lse = peak + np.log(np.exp(rows - peak[:, None]).sum(axis=1))
            logprobs.append((rows[np.arange(len(following)), following] - lse).astype(np.float32))
        self._tokens = list(tokens)
        self._emb = np.concatenate(emb_rows, axis=0)
        self._logprob = np.concatenate(logprobs)
        assert len(self._emb) == len(self._logprob) == len(tokens)

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = bytes(self.load().detokenize([token]))
        return piece

    def _number_logprobs(
        self, tokens: Sequence[int], lp: np.ndarray, seen: set[str]
    ) -> list[float]:
        """``has_digits`` and the digit log-probability aggregates of one step's tokens."""
        pieces = [self._piece(t) for t in tokens]
        text = b"".join(pieces)
        lengths = np.asarray([len(p) for p in pieces])
        ends = np.cumsum(lengths)
        starts = ends - lengths
        digit_tok = np.asarray([any(48 <= c <= 57 for c in p) for p in pieces], dtype=bool)
        digits: list[float] = []
        firsts: list[float] = []
        results: list[float] = []
        new: list[float] = []
        for match in _NUMBER_BYTES.finditer(text):
            inside = np.flatnonzero(
                digit_tok & (starts < match.end()) & (ends > match.start())
            ).tolist()
            if not inside:
                continue
            values = [float(lp[i]) for i in inside]
            digits += values
            firsts.append(values[0])
            if _AFTER_EQUALS.search(text[: match.start()]):
                results += values
            if match.group().decode() not in seen:
                new += values

        def low(xs: list[float]) -> float:
            return min(xs) if xs else 0.0

        return [
            float(bool(digits)),
            low(digits),
            float(np.mean(digits)) if digits else 0.0,
            low(firsts),
            low(results),
            low(new),
        ]

    def _features(self, span: tuple[int, int], index: int, text: str, seen: set[str]) -> np.ndarray:
        start, end = span
        emb = self._emb[start:end]
        lp = self._logprob[start:end]
        numbers = self._number_logprobs(self._tokens[start:end], lp, seen)
        arith = check_step(text)
        scalars = np.array(
            [
                float(lp.mean()),
                float(lp.min()),
                float(lp.std()),
                float((lp < math.log(0.1)).mean()),
                float(index),
                math.log1p(end - start),
                float(arith.checked),
                float(arith.false > 0),
                *numbers,
            ],
            dtype=np.float32,
        )
        return np.concatenate([emb.mean(axis=0), emb[-1], scalars]).astype(np.float32)

    def encode(self, question: str, steps: Sequence[str]) -> np.ndarray:
        """Feature rows ``[len(steps), dim]``: model features, then :func:`text_features`."""
        if not steps:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(
            [self.encode_model(question, steps), text_features(question, steps)], axis=1
        )

    def encode_model(self, question: str, steps: Sequence[str]) -> np.ndarray:
        """The llama.cpp part of the features (one forward pass, cached by prefix)."""
        keys = [(question, tuple(steps[: i + 1])) for i in range(len(steps))]
        if all(k in self._cache for k in keys):
            return np.stack([self._cache[k] for k in keys])
        with self._lock:
            tokens, spans = self.layout(question, steps)
            offset = max(0, len(tokens) - self.max_tokens)
            if offset:
                tokens = tokens[:1] + tokens[offset + 1 :]  # keep BOS, cut from the left
                spans = [(max(s - offset, 1), e - offset) for s, e in spans]
            self._evaluate(tokens)
            rows: list[np.ndarray | None] = []
            seen = set(_NUMBER.findall(question))
            for i, (span, step) in enumerate(zip(spans, steps, strict=True)):
                rows.append(self._features(span, i, step, seen) if span[1] > span[0] else None)
                seen.update(_NUMBER.findall(step))
        first = next(r for r in rows if r is not None)
        out = np.stack([first if r is None else r for r in rows])
        for key, row, raw in zip(keys, out, rows, strict=True):
            if raw is not None:
                self._cache[key] = row
                self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out


__all__ = [
    "FEATURE_VERSION",
    "MODEL_FEATURE_VERSION",
    "SCALAR_FEATURES",
    "TEXT_FEATURES",
    "LlamaStepEncoder",
    "text_features",
]
