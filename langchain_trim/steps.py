"""Step text utilities: splitting, emptiness, final answers.

TRIM treats a solution as a sequence of steps separated by a blank line.  These helpers
are pure functions so that the graph, the evaluation code and the PRMs agree on what a
step is.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

DEFAULT_DELIMITER = "\n\n"
"""Steps are separated by a blank line, as in the paper and its release."""

_PUNCT_OR_SPACE = set(string.punctuation) | set(string.whitespace)


def is_blank_step(text: str) -> bool:
    """True when ``text`` holds no content: empty, whitespace or punctuation only.

    Such a chunk is not accepted as a step; the same model continues instead.

    >>> is_blank_step(" . ")
    True
    >>> is_blank_step("x = 2")
    False
    """
    return all(ch in _PUNCT_OR_SPACE for ch in text)


def split_steps(text: str, delimiter: str = DEFAULT_DELIMITER) -> list[str]:
    """Split a full solution into non-blank steps.

    >>> split_steps("a = 1\\n\\nb = 2\\n\\n\\n\\nso \\\\boxed{3}")
    ['a = 1', 'b = 2', 'so \\\\boxed{3}']
    """
    return [part.strip() for part in text.split(delimiter) if not is_blank_step(part)]


def logical_steps(texts: Sequence[str], capped: Sequence[bool]) -> tuple[list[str], bool]:
    """Glue each chunk cut by the token cap to the chunk that continued it.

    Returns the steps as the model sees them in its prompt and whether the last one is
    still open (cut by the cap, to be continued rather than followed).  The one rule for
    where a delimiter goes: after every chunk except a capped one.

    >>> logical_steps(["a = 1", "b = 2 +", " 3 = 5", "c"], [False, True, False, False])
    (['a = 1', 'b = 2 + 3 = 5', 'c'], False)
    >>> logical_steps(["a", "b is"], [False, True])
    (['a', 'b is'], True)
    """
    out: list[str] = []
    open_step = False
    for text, cut in zip(texts, capped, strict=True):
        if open_step and out:
            out[-1] += text
        else:
            out.append(text)
        open_step = cut
    return out, open_step


def render_solution(
    texts: Sequence[str], capped: Sequence[bool], delimiter: str = DEFAULT_DELIMITER
) -> str:
    """The solution text of accepted chunks: delimiters between steps, none after a cut.

    >>> render_solution(["a", "b +", " 1"], [False, True, False], "|")
    'a|b + 1'
    """
    return delimiter.join(logical_steps(texts, capped)[0])


def has_final_answer(text: str) -> bool:
    r"""True when the step states a final answer (contains ``\boxed{``)."""
    return "\\boxed{" in text or "\\boxed {" in text


def extract_boxed(text: str) -> str | None:
    r"""Return the content of the last ``\boxed{...}`` in ``text``, braces balanced.

    >>> extract_boxed(r"so the answer is \boxed{\frac{1}{2}}.")
    '\\frac{1}{2}'
    >>> extract_boxed("no answer") is None
    True
    """
    key = "\\boxed"
    start = text.rfind(key)
    while start != -1:
        i = start + len(key)
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j].strip()
            return None  # unbalanced
        start = text.rfind(key, 0, start)
    return None


def approx_token_count(text: str) -> int:
    """A tokenizer-free estimate: about four characters per token, at least one per word.

    Used only when a model reports no usage and no tokenizer is available; counts made
    this way are always marked as estimated.
    """
    if not text:
        return 0
    return max(len(text.split()), (len(text) + 3) // 4)


__all__ = [
    "DEFAULT_DELIMITER",
    "approx_token_count",
    "extract_boxed",
    "has_final_answer",
    "is_blank_step",
    "logical_steps",
    "render_solution",
    "split_steps",
]
