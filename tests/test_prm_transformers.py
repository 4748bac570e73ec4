"""TransformersPRM on tiny random-weight models built in the test (CPU, no downloads).

Every expected score is computed here by running the model on the same ids and taking the
softmax at the step-tag positions by hand, so the tests fail if the PRM reads the wrong
position, class, token or truncation window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from langchain_trim.errors import InvalidInputError, PRMScoreError  # noqa: E402
from langchain_trim.prm import ProcessRewardModel  # noqa: E402
from langchain_trim.prm.transformers_prm import (  # noqa: E402
    QWEN_SYSTEM_PROMPT,
    PRMStyle,
    TransformersPRM,
    chatml_prm_prompt,
    math_shepherd_prm_prompt,
    qwen_prm_messages,
)

SPECIALS = ["<pad>", "<unk>", "<s>", "<extra_0>", "<|im_start|>", "<|im_end|>"]
# fmt: off
WORDS = [
    *SPECIALS, "ки", "+", "-", "=", "?", ":", "system", "user", "assistant", "role",
    "what", "is", "1", "2", "3", "4", "5", "6", "x", "y", "z", "so", "the", "answer",
    "add", "one", "two", "three", "gives", "then", "Step", "1:", "2:", "3:", "4:", "5:", "6:",
]
# fmt: on
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} <|im_end|> {% endfor %}"
)

QUESTION = "what is 1 + 2 ?"
STEPS = ["1 + 2 = 3", "so the answer is 3", "then x = y + z", "the answer is 3"]
ITEMS: list[tuple[str, list[str]]] = [
    (QUESTION, STEPS[:2]),
    ("what is x ?", ["x = 1 + 1", "x = 2", "so the answer is 2", "then y = 3", "z = 4"]),
    (QUESTION, []),
    ("what is 6 ?", ["6"]),
    (QUESTION, STEPS),
    ("add one and two ?", ["one add two gives three", "the answer is 3"]),
]


def make_tokenizer(chat_template: str | None = None) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        additional_special_tokens=SPECIALS[3:],
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def tiny_config(cls: Any, **kw: Any) -> Any:
    return cls(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        vocab_size=len(WORDS),
        initializer_range=0.2,
        **kw,
    )


@pytest.fixture(scope="module")
def qwen_model() -> Any:
    torch.manual_seed(0)
    config = tiny_config(transformers.Qwen2Config, num_labels=2, pad_token_id=0)
    return transformers.Qwen2ForTokenClassification(config).eval()


@pytest.fixture(scope="module")
def llama_model() -> Any:
    torch.manual_seed(1)
    config = tiny_config(transformers.LlamaConfig, pad_token_id=0)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tok() -> Any:
    return make_tokenizer()


def softmax_at(logits: Any, positions: Sequence[int], cls: int) -> list[float]:
    """Hand softmax: exp(l_cls) / sum(exp(l)) at each position."""
    out = []
    for pos in positions:
        row = [float(x) for x in logits[pos]]
        out.append(math.exp(row[cls]) / sum(math.exp(x) for x in row))
    return out


def qwen_expected(model: Any, ids: list[int], tag_id: int) -> list[float]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return softmax_at(logits, [i for i, t in enumerate(ids) if t == tag_id], 1)


def shepherd_expected(
    model: Any, ids: list[int], tag_id: int, plus: int, minus: int
) -> list[float]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0][:, [plus, minus]]
    return softmax_at(logits, [i for i, t in enumerate(ids) if t == tag_id], 0)


def make_prm(
    style: PRMStyle, qwen_model: Any, llama_model: Any, tok: Any, **kw: Any
) -> TransformersPRM:
    model = qwen_model if style == "qwen" else llama_model
    return TransformersPRM(model, tok, style=style, **kw)


# -- formats and arithmetic --------------------------------------------------------------------
def test_qwen_input_format_without_chat_template(tok: Any, qwen_model: Any) -> None:
    prm = TransformersPRM(qwen_model, tok, style="qwen")
    ids = prm.prepare(QUESTION, STEPS[:2]).ids
    assert ids == tok.encode(chatml_prm_prompt(QUESTION, STEPS[:2]), add_special_tokens=False)
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[:2] == ["<|im_start|>", "system"]
    user = tokens.index("user")
    assert tokens[user : user + 9] == [
        "user", "what", "is", "1", "+", "2", "?", "<|im_end|>", "<|im_start|>",
    ]  # fmt: skip
    tail = tokens[tokens.index("assistant") :]
    assert tail == [
        "assistant", "1", "+", "2", "=", "3", "<extra_0>",
        "so", "the", "answer", "is", "3", "<extra_0>", "<|im_end|>",
    ]  # fmt: skip
    assert prm.step_tag_id == tok.convert_tokens_to_ids("<extra_0>")


def test_qwen_uses_the_tokenizer_chat_template(qwen_model: Any) -> None:
    tok = make_tokenizer(CHAT_TEMPLATE)
    prm = TransformersPRM(qwen_model, tok, style="qwen")
    rendered = tok.apply_chat_template(
        qwen_prm_messages(QUESTION, STEPS[:2]), tokenize=False, add_generation_prompt=False
    )
    assert rendered.startswith(f"system : {QWEN_SYSTEM_PROMPT} <|im_end|> user : {QUESTION}")
    ids = prm.prepare(QUESTION, STEPS[:2]).ids
    assert ids == tok.encode(rendered, add_special_tokens=False)
    assert ids != tok.encode(chatml_prm_prompt(QUESTION, STEPS[:2]), add_special_tokens=False)
    expected = qwen_expected(qwen_model, ids, prm.step_tag_id)
    assert prm.score(QUESTION, STEPS[:2]) == pytest.approx(expected, abs=1e-6)


def test_qwen_score_is_softmax_class_1_at_each_step_tag(tok: Any, qwen_model: Any) -> None:
    prm = TransformersPRM(qwen_model, tok, style="qwen")
    ids = tok.encode(chatml_prm_prompt(QUESTION, STEPS), add_special_tokens=False)
    tag = tok.convert_tokens_to_ids("<extra_0>")
    positions = [i for i, t in enumerate(ids) if t == tag]
    assert len(positions) == 4
    assert [tok.convert_ids_to_tokens(ids[p - 1]) for p in positions] == ["3", "3", "z", "3"]
    expected = qwen_expected(qwen_model, ids, tag)
    scores = prm.score(QUESTION, STEPS)
    assert scores == pytest.approx(expected, abs=1e-6)
    # the test is only meaningful if the model gives distinct, non-trivial scores
    assert len({round(s, 4) for s in scores}) == 4
    assert all(abs(s - 0.5) > 1e-3 for s in scores)
    # class 0 would be the complement: make sure we did not read it
    assert scores != pytest.approx([1 - e for e in expected], abs=1e-3)


def test_math_shepherd_input_format_and_good_token_softmax(tok: Any, llama_model: Any) -> None:
    prm = TransformersPRM(llama_model, tok, style="math_shepherd")
    steps = STEPS[:2]
    ids = prm.prepare(QUESTION, steps).ids
    assert tok.convert_ids_to_tokens(ids) == [
        "<s>", "what", "is", "1", "+", "2", "?",
        "Step", "1:", "1", "+", "2", "=", "3", "ки",
        "Step", "2:", "so", "the", "answer", "is", "3", "ки",
    ]  # fmt: skip
    assert math_shepherd_prm_prompt(QUESTION, steps).endswith("Step 2: so the answer is 3 ки")
    plus, minus = tok.convert_tokens_to_ids(["+", "-"])
    assert prm.candidate_token_ids == (plus, minus)
    assert prm.step_tag_id == tok.convert_tokens_to_ids("ки")
    expected = shepherd_expected(llama_model, ids, prm.step_tag_id, plus, minus)
    scores = prm.score(QUESTION, steps)
    assert scores == pytest.approx(expected, abs=1e-6)
    assert len({round(s, 4) for s in scores}) == 2


def test_math_shepherd_custom_candidate_ids(tok: Any, llama_model: Any) -> None:
    ids_yz = tuple(tok.convert_tokens_to_ids(["y", "z"]))
    prm = TransformersPRM(llama_model, tok, style="math_shepherd", candidate_token_ids=ids_yz)
    ids = prm.prepare(QUESTION, STEPS).ids
    expected = shepherd_expected(llama_model, ids, prm.step_tag_id, *ids_yz)
    assert prm.score(QUESTION, STEPS) == pytest.approx(expected, abs=1e-6)


def test_remote_code_style_tuple_output(tok: Any, qwen_model: Any) -> None:
    """Qwen's remote-code PRM returns the logits as outputs[0], not .logits."""

    class TupleModel(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.inner = qwen_model

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple[Any]:
            return (self.inner(input_ids=input_ids, attention_mask=attention_mask).logits,)

    plain = TransformersPRM(qwen_model, tok, style="qwen")
    wrapped = TransformersPRM(TupleModel(), tok, style="qwen")
    assert wrapped.score(QUESTION, STEPS) == pytest.approx(plain.score(QUESTION, STEPS), abs=1e-6)


# -- batching ----------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["qwen", "math_shepherd"])
def test_batched_equals_one_by_one_in_input_order(
    style: PRMStyle, tok: Any, qwen_model: Any, llama_model: Any
) -> None:
    single = make_prm(style, qwen_model, llama_model, tok, batch_size=1)
    batched = make_prm(style, qwen_model, llama_model, tok, batch_size=4)
    lengths = {len(single.prepare(q, s).ids) for q, s in ITEMS if s}
    assert len(lengths) == 5  # really padded
    one_by_one = [single.score(q, s) for q, s in ITEMS]
    together = batched.score_batch(ITEMS)
    assert [len(r) for r in together] == [len(s) for _, s in ITEMS]
    for got, want in zip(together, one_by_one, strict=True):
        assert got == pytest.approx(want, abs=1e-5)
    # each against the hand computation, so a shared bug cannot hide
    for (q, steps), got in zip(ITEMS, together, strict=True):
        if not steps:
            assert got == []
            continue
        ids = single.prepare(q, steps).ids
        if style == "qwen":
            want = qwen_expected(qwen_model, ids, single.step_tag_id)
        else:
            assert single.candidate_token_ids is not None
            want = shepherd_expected(
                llama_model, ids, single.step_tag_id, *single.candidate_token_ids
            )
        assert got == pytest.approx(want, abs=1e-5)


async def test_async_path_matches_sync(tok: Any, qwen_model: Any) -> None:
    prm = TransformersPRM(qwen_model, tok, style="qwen", batch_size=2)
    assert isinstance(prm, ProcessRewardModel)
    sync = prm.score_batch(ITEMS)
    got = await prm.ascore_batch(ITEMS)
    for a, b in zip(got, sync, strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    assert await prm.ascore(QUESTION, STEPS) == pytest.approx(sync[4], abs=1e-6)


# -- truncation --------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["qwen", "math_shepherd"])
def test_left_truncation_keeps_newest_steps_and_backfills(
    style: PRMStyle, tok: Any, qwen_model: Any, llama_model: Any
) -> None:
    full = make_prm(style, qwen_model, llama_model, tok).prepare(QUESTION, STEPS)
    tag = full.positions
    # cut just past the first two tags: steps 0 and 1 lose their tag
    max_length = len(full.ids) - (tag[1] + 1)
    prm = make_prm(style, qwen_model, llama_model, tok, max_length=max_length)
    cut = prm.prepare(QUESTION, STEPS)
    assert cut.ids == full.ids[tag[1] + 1 :]
    assert cut.dropped == 2
    assert len(cut.ids) == max_length
    if style == "qwen":
        kept = qwen_expected(qwen_model, cut.ids, prm.step_tag_id)
    else:
        assert prm.candidate_token_ids is not None
        kept = shepherd_expected(llama_model, cut.ids, prm.step_tag_id, *prm.candidate_token_ids)
    assert len(kept) == 2
    scores = prm.score(QUESTION, STEPS)
    assert scores == pytest.approx([kept[0], kept[0], kept[0], kept[1]], abs=1e-6)
    # the model really saw the truncated window: scores differ from the untruncated run
    untruncated = make_prm(style, qwen_model, llama_model, tok).score(QUESTION, STEPS)
    assert scores[3] != pytest.approx(untruncated[3], abs=1e-4)
    # batched with untruncated-length items, same answer
    batched = prm.score_batch([(QUESTION, STEPS[:1]), (QUESTION, STEPS)])
    assert batched[1] == pytest.approx(scores, abs=1e-5)


def test_truncation_that_drops_every_tag_raises(tok: Any, qwen_model: Any) -> None:
    prm = TransformersPRM(qwen_model, tok, style="qwen", max_length=1)  # only <|im_end|> left
    with pytest.raises(PRMScoreError, match="no step tag survived"):
        prm.score(QUESTION, STEPS)


# -- errors ------------------------------------------------------------------------------------
def test_step_containing_the_tag_raises(tok: Any, qwen_model: Any, llama_model: Any) -> None:
    prm = TransformersPRM(qwen_model, tok, style="qwen")
    with pytest.raises(PRMScoreError, match=r"found 3 step tags .* for 2 steps"):
        prm.score(QUESTION, ["1 + 2 = 3 <extra_0>", "so 3"])
    shepherd = TransformersPRM(llama_model, tok, style="math_shepherd")
    with pytest.raises(PRMScoreError, match=r"found 3 step tags .* for 2 steps"):
        shepherd.score_batch([(QUESTION, ["1"]), (QUESTION, ["ки 2", "x"])])


def test_wrong_step_tag_id_raises(tok: Any, qwen_model: Any) -> None:
    prm = TransformersPRM(qwen_model, tok, style="qwen", step_tag_id=tok.convert_tokens_to_ids("?"))
    with pytest.raises(PRMScoreError, match="found 1 step tags"):
        prm.score(QUESTION, STEPS)


def test_non_finite_model_output_raises(tok: Any) -> None:
    class NaNModel(torch.nn.Module):  # type: ignore[name-defined]
        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return transformers.modeling_outputs.TokenClassifierOutput(
                logits=torch.full((*input_ids.shape, 2), float("nan"))
            )

    prm = TransformersPRM(NaNModel(), tok, style="qwen")
    with pytest.raises(PRMScoreError, match="non-finite"):
        prm.score(QUESTION, STEPS)


def test_bad_arguments(tok: Any, qwen_model: Any, llama_model: Any) -> None:
    with pytest.raises(ValueError, match="style"):
        TransformersPRM(qwen_model, tok, style="prm800k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        TransformersPRM(qwen_model, tok, batch_size=0)
    with pytest.raises(ValueError, match="max_length"):
        TransformersPRM(qwen_model, tok, max_length=0)
    with pytest.raises(ValueError, match="candidate_token_ids"):
        TransformersPRM(llama_model, tok, style="math_shepherd", good_token="+ +")


def test_empty_batch_and_empty_steps(tok: Any, qwen_model: Any) -> None:
    prm = TransformersPRM(qwen_model, tok)
    assert prm.score_batch([]) == []
    assert prm.score(QUESTION, []) == []


# -- loading -----------------------------------------------------------------------------------
@pytest.mark.parametrize("style", ["qwen", "math_shepherd"])
def test_from_pretrained_local_directory(
    style: PRMStyle, tmp_path: Path, tok: Any, qwen_model: Any, llama_model: Any
) -> None:
    model = qwen_model if style == "qwen" else llama_model
    model.save_pretrained(tmp_path)
    # A separate folder: next to a qwen2 config.json, transformers 5's AutoTokenizer
    # rebuilds this word-level test tokenizer as a Qwen2 BPE tokenizer.
    tok.save_pretrained(tmp_path / "tokenizer")
    loaded = TransformersPRM.from_pretrained(
        str(tmp_path),
        style=style,
        trust_remote_code=False,
        tokenizer_name_or_path=str(tmp_path / "tokenizer"),
        batch_size=2,
    )
    assert loaded.name == f"transformers:{tmp_path}"
    assert loaded.batch_size == 2
    # the default: float32 on the CPU, bfloat16 on a GPU (tests/test_gpu.py checks that one)
    dtype, tol = (torch.bfloat16, 2e-2) if torch.cuda.is_available() else (torch.float32, 1e-5)
    assert next(loaded.model.parameters()).dtype == dtype
    assert not loaded.model.training
    expected = make_prm(style, qwen_model, llama_model, tok).score(QUESTION, STEPS)
    assert loaded.score(QUESTION, STEPS) == pytest.approx(expected, abs=tol)


# -- issue 13, point 8: no repository code unless asked -----------------------------------------
def _spy_loaders(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record ``trust_remote_code`` of every transformers loader call."""
    seen: list[Any] = []
    for name in ("AutoModel", "AutoModelForTokenClassification", "AutoTokenizer", "AutoConfig"):
        cls = getattr(transformers, name)
        real = cls.from_pretrained

        def spy(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            seen.append(kwargs.get("trust_remote_code", "unset"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    return seen


def test_from_pretrained_runs_no_repository_code_by_default(
    tmp_path: Path, tok: Any, qwen_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    qwen_model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path / "tokenizer")
    seen = _spy_loaders(monkeypatch)
    loaded = TransformersPRM.from_pretrained(
        str(tmp_path), tokenizer_name_or_path=str(tmp_path / "tokenizer")
    )
    assert len(seen) >= 2 and all(value is False for value in seen), seen
    assert type(loaded.model).__name__ == "Qwen2ForTokenClassification"
    assert len(loaded.score(QUESTION, STEPS)) == len(STEPS)


def test_a_checkpoint_that_ships_code_needs_an_explicit_opt_in(
    tmp_path: Path, qwen_model: Any
) -> None:
    import json

    qwen_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architectures"] = ["Qwen2ForProcessRewardModel"]
    config["auto_map"] = {"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "modeling_qwen2_rm.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(InvalidInputError, match="trust_remote_code=True"):
        TransformersPRM.from_pretrained(str(tmp_path))
    with pytest.raises(InvalidInputError, match="True or False"):
        TransformersPRM.from_pretrained(str(tmp_path), trust_remote_code="yes")  # type: ignore[arg-type]


def test_a_head_left_random_is_an_error_not_random_scores(tmp_path: Path) -> None:
    torch.manual_seed(0)
    body = transformers.Qwen2Model(tiny_config(transformers.Qwen2Config, pad_token_id=0))
    body.save_pretrained(tmp_path)
    message = r"randomly initialised \(score\.bias, score\.weight"
    with pytest.raises(InvalidInputError, match=message):
        TransformersPRM.from_pretrained(str(tmp_path))
