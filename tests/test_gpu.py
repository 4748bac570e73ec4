"""TransformersPRM on a CUDA GPU: dtype, device placement, batching, truncation, speed.

CI has no GPU, so the CUDA cases skip there; the CPU cases (bf16 on CPU, placement on
CPU, the ``logits_to_keep`` slice) run everywhere so the checks themselves are tested.
Models are tiny and randomly initialised from configs (no downloads).  Every score is
compared with a reference computed here, either the CPU float32 scores of the *same
weights* or a hand softmax at the step tags on the same device.

Measurements (score differences, solutions/s, peak memory) are written as JSON to
``$TRIM_GPU_RESULTS`` when it is set; the speed numbers are recorded, never asserted.
``TRIM_GPU_BIG=1`` adds random models of the 7B PRMs' shapes to the speed test.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from langchain_trim.prm.transformers_prm import PRMStyle, TransformersPRM  # noqa: E402
from tests.test_prm_transformers import (  # noqa: E402
    ITEMS,
    QUESTION,
    SPECIALS,
    STEPS,
    WORDS,
    make_tokenizer,
    tiny_config,
)

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
pytestmark = pytest.mark.gpu

FP32_TOL = 1e-4
"""Max |score difference| between devices in float32 (the same arithmetic, other kernels)."""
BF16_TOL = 2e-2
"""Max |score difference| of a bfloat16 run from float32 on the tiny models (bf16 keeps
8 bits of mantissa, ~4e-3 relative, through 2 layers; scores are softmaxes in [0, 1])."""
SAME_RUN_BF16_TOL = 2e-2
"""Max |score difference| within one bf16 device when only the padding/batch shape changes
(other kernel shapes, other rounding: 5e-3 seen on the CPU; a misread position or row
moves scores by 0.1 or more)."""

STYLES: list[PRMStyle] = ["qwen", "math_shepherd"]
CUDA_PARAM = pytest.param("cuda", marks=needs_cuda)
# (device, dtype name): the CPU bf16 case runs everywhere, the CUDA ones only on a GPU
DEVICE_DTYPES = [
    pytest.param("cpu", "bfloat16", id="cpu-bf16"),
    pytest.param("cuda", "float32", id="cuda-fp32", marks=needs_cuda),
    pytest.param("cuda", "bfloat16", id="cuda-bf16", marks=needs_cuda),
]
DEVICES = ["cpu", CUDA_PARAM]
CONTENT_WORDS = [w for w in WORDS if w not in SPECIALS and w not in ("ки", "Step")]


# -- measurements ------------------------------------------------------------------------------
_RESULTS: dict[str, Any] = {}


def record(key: str, value: Any) -> None:
    """Keep a measurement; written at once to $TRIM_GPU_RESULTS so a timeout loses nothing."""
    _RESULTS[key] = value
    target = os.environ.get("TRIM_GPU_RESULTS")
    if not target:
        return
    env = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if CUDA else None,
    }
    Path(target).write_text(json.dumps({"env": env, **_RESULTS}, indent=1, sort_keys=True))


# -- models and references ---------------------------------------------------------------------
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@pytest.fixture(scope="module")
def tok() -> Any:
    return make_tokenizer()


@pytest.fixture(scope="module")
def cpu_models() -> dict[str, Any]:
    """The tiny PRMs of test_prm_transformers (same seeds), float32 on the CPU."""
    torch.manual_seed(0)
    qwen = transformers.Qwen2ForTokenClassification(
        tiny_config(transformers.Qwen2Config, num_labels=2, pad_token_id=0)
    ).eval()
    torch.manual_seed(1)
    llama = transformers.LlamaForCausalLM(tiny_config(transformers.LlamaConfig, pad_token_id=0))
    return {"qwen": qwen, "math_shepherd": llama.eval()}


def placed(model: Any, device: str, dtype: str) -> Any:
    """A copy of ``model`` (same weights) on ``device`` in ``dtype``."""
    return copy.deepcopy(model).to(device=device, dtype=DTYPES[dtype]).eval()


def param_device(model: Any) -> Any:
    return next(model.parameters()).device


def hand_scores(prm: TransformersPRM, ids: Sequence[int]) -> list[float]:
    """Softmax at the step tags of one unpadded forward pass on the model's own device."""
    device = param_device(prm.model)
    with torch.inference_mode():
        logits = prm.model(input_ids=torch.tensor([list(ids)], device=device)).logits[0]
    positions = [i for i, t in enumerate(ids) if t == prm.step_tag_id]
    if prm.style == "qwen":
        return logits[positions].float().softmax(-1)[:, prm.positive_index].tolist()
    assert prm.candidate_token_ids is not None
    cand = list(prm.candidate_token_ids)
    return logits[positions][:, cand].float().softmax(-1)[:, 0].tolist()


def max_diff(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """Largest |a - b| over all scores; the shapes must match."""
    pairs = [(x, y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]
    return max((abs(x - y) for x, y in pairs), default=0.0)


def solution(rng: random.Random, n_steps: int, words_per_step: int) -> tuple[str, list[str]]:
    """A random question and steps from the tiny vocabulary (no step tag inside)."""

    def text(n: int) -> str:
        return " ".join(rng.choice(CONTENT_WORDS) for _ in range(n))

    return text(20) + " ?", [text(words_per_step) for _ in range(n_steps)]


@pytest.fixture
def forward_spy() -> Iterator[Any]:
    """Attach to a model: records the device of every tensor argument of its forward."""
    handles: list[Any] = []
    calls: list[dict[str, Any]] = []

    def attach(model: Any) -> list[dict[str, Any]]:
        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            seen = {k: v for k, v in kwargs.items() if torch.is_tensor(v)}
            seen.update({f"arg{i}": v for i, v in enumerate(args) if torch.is_tensor(v)})
            calls.append({k: (v.device, tuple(v.shape)) for k, v in seen.items()})

        handles.append(model.register_forward_pre_hook(hook, with_kwargs=True))
        return calls

    yield attach
    for handle in handles:
        handle.remove()


# -- agreement across devices and dtypes -------------------------------------------------------
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("device", "dtype"), DEVICE_DTYPES)
def test_scores_agree_with_cpu_float32(
    device: str, dtype: str, style: PRMStyle, tok: Any, cpu_models: dict[str, Any]
) -> None:
    reference = TransformersPRM(cpu_models[style], tok, style=style, batch_size=4)
    want = reference.score_batch(ITEMS)
    flat = [s for row in want for s in row]
    # the comparison means something only if the scores are spread out
    assert max(flat) - min(flat) > 0.05, flat
    prm = TransformersPRM(placed(cpu_models[style], device, dtype), tok, style=style, batch_size=4)
    assert str(prm.device).startswith(device)
    got = prm.score_batch(ITEMS)
    diff = max_diff(got, want)
    record(f"agree_cpu_fp32/{style}/{device}-{dtype}", {"max_abs_diff": diff})
    assert diff <= (FP32_TOL if dtype == "float32" else BF16_TOL), (got, want)
    assert all(type(s) is float and 0.0 <= s <= 1.0 for row in got for s in row)


# -- batching ----------------------------------------------------------------------------------
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("device", "dtype"), [("cpu", "float32"), *DEVICE_DTYPES])
def test_batch_equals_one_by_one_on_device(
    device: str, dtype: str, style: PRMStyle, tok: Any, cpu_models: dict[str, Any]
) -> None:
    model = placed(cpu_models[style], device, dtype)
    items = [*ITEMS, *[solution(random.Random(i), 1 + i % 7, 3 + 2 * i) for i in range(14)]]
    one = TransformersPRM(model, tok, style=style, batch_size=1)
    many = TransformersPRM(model, tok, style=style, batch_size=16)
    lengths = {len(one.prepare(q, s).ids) for q, s in items if s}
    assert len(lengths) >= 10  # rows of really different lengths share a padded batch
    single = [one.score(q, s) for q, s in items]
    batched = many.score_batch(items)
    diff = max_diff(batched, single)
    record(f"batch_vs_single/{style}/{device}-{dtype}", {"max_abs_diff": diff})
    assert diff <= (1e-5 if dtype == "float32" else SAME_RUN_BF16_TOL)
    # and each row against the hand softmax, so a bug shared by both paths cannot hide
    hand = [hand_scores(one, one.prepare(q, s).ids) if s else [] for q, s in items]
    assert max_diff(batched, hand) <= (1e-5 if dtype == "float32" else SAME_RUN_BF16_TOL)


# -- placement ---------------------------------------------------------------------------------
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("device", DEVICES)
def test_inputs_land_on_the_model_device(
    device: str, style: PRMStyle, tok: Any, cpu_models: dict[str, Any], forward_spy: Any
) -> None:
    model = placed(cpu_models[style], device, "float32")
    prm = TransformersPRM(model, tok, style=style, batch_size=3)
    assert prm.device == param_device(model)
    calls = forward_spy(model)
    prm.score_batch(ITEMS)
    assert len(calls) == 2  # 5 non-empty items in batches of 3
    for call in calls:
        assert {"input_ids", "attention_mask"} <= set(call)
        if style == "math_shepherd":
            assert "logits_to_keep" in call
        for name, (where, _shape) in call.items():
            assert where == param_device(model), (name, where)


# -- logits_to_keep ----------------------------------------------------------------------------
class FullLogits(torch.nn.Module):  # type: ignore[name-defined]
    """The same causal LM with a forward that cannot slice: every position's logits."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)


@pytest.mark.parametrize(("device", "dtype"), [("cpu", "float32"), *DEVICE_DTYPES])
def test_logits_to_keep_slice_equals_full_logits(
    device: str, dtype: str, tok: Any, cpu_models: dict[str, Any], forward_spy: Any
) -> None:
    model = placed(cpu_models["math_shepherd"], device, dtype)
    sliced = TransformersPRM(model, tok, style="math_shepherd", batch_size=8)
    full = TransformersPRM(FullLogits(model), tok, style="math_shepherd", batch_size=8)
    calls = forward_spy(model)
    got = sliced.score_batch(ITEMS)
    want = full.score_batch(ITEMS)
    sliced_call, full_call = calls
    n_tags = len({p for q, s in ITEMS if s for p in sliced.prepare(q, s).positions})
    assert sliced_call["logits_to_keep"][1] == (n_tags,)
    assert "logits_to_keep" not in full_call
    diff = max_diff(got, want)
    record(f"logits_to_keep_vs_full/{device}-{dtype}", {"max_abs_diff": diff})
    assert diff <= (1e-5 if dtype == "float32" else SAME_RUN_BF16_TOL)


# -- long inputs -------------------------------------------------------------------------------
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(("device", "dtype"), [("cpu", "float32"), *DEVICE_DTYPES])
def test_long_inputs_truncate_from_the_left_on_device(
    device: str, dtype: str, style: PRMStyle, tok: Any, cpu_models: dict[str, Any]
) -> None:
    model = placed(cpu_models[style], device, dtype)
    question, steps = solution(random.Random(7), n_steps=40, words_per_step=70)
    untruncated = TransformersPRM(model, tok, style=style)  # max_length 4096
    whole = untruncated.prepare(question, steps)
    assert 2500 < len(whole.ids) <= 4096 and whole.dropped == 0
    tol = 1e-5 if dtype == "float32" else SAME_RUN_BF16_TOL
    assert (
        max_diff([untruncated.score(question, steps)], [hand_scores(untruncated, whole.ids)]) <= tol
    )
    prm = TransformersPRM(model, tok, style=style, max_length=1024, batch_size=4)
    cut = prm.prepare(question, steps)
    assert len(cut.ids) == 1024 and cut.ids == whole.ids[-1024:]
    assert 0 < cut.dropped < len(steps) - 1
    kept = hand_scores(prm, cut.ids)
    want = [kept[0]] * cut.dropped + kept
    # alone, and padded in one batch with short items
    got = prm.score_batch([(question, steps), *ITEMS[:2]])[0]
    alone = prm.score(question, steps)
    record(
        f"long_input/{style}/{device}-{dtype}",
        {"tokens": len(whole.ids), "kept": len(cut.ids), "dropped_steps": cut.dropped},
    )
    assert max_diff([alone], [want]) <= tol
    assert max_diff([got], [want]) <= tol


# -- from_pretrained's defaults ----------------------------------------------------------------
@pytest.mark.parametrize("style", STYLES)
def test_from_pretrained_default_dtype_and_device(
    style: PRMStyle, tmp_path: Path, tok: Any, cpu_models: dict[str, Any]
) -> None:
    """bfloat16 on the GPU when CUDA is there, else float32 on the CPU."""
    cpu_models[style].save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path / "tokenizer")
    loaded = TransformersPRM.from_pretrained(
        str(tmp_path), style=style, tokenizer_name_or_path=str(tmp_path / "tokenizer")
    )
    params = list(loaded.model.parameters())
    want_type, want_dtype = ("cuda", torch.bfloat16) if CUDA else ("cpu", torch.float32)
    assert {p.device.type for p in params} == {want_type}
    assert {p.dtype for p in params} == {want_dtype}
    assert torch.device(loaded.device).type == want_type
    reference = TransformersPRM(cpu_models[style], tok, style=style)
    diff = max_diff(loaded.score_batch(ITEMS), reference.score_batch(ITEMS))
    record(f"from_pretrained_default/{style}", {"device": want_type, "max_abs_diff": diff})
    assert diff <= (BF16_TOL if CUDA else 1e-5)


def test_from_pretrained_dtype_auto_and_device_map_auto(
    tmp_path: Path, tok: Any, cpu_models: dict[str, Any]
) -> None:
    """``torch_dtype="auto"`` keeps a bf16 checkpoint's dtype; ``device_map="auto"`` places
    the model with accelerate (on the GPU when there is one) and the inputs follow it."""
    pytest.importorskip("accelerate")
    placed(cpu_models["qwen"], "cpu", "bfloat16").save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path / "tokenizer")
    loaded = TransformersPRM.from_pretrained(
        str(tmp_path),
        torch_dtype="auto",
        device_map="auto",
        tokenizer_name_or_path=str(tmp_path / "tokenizer"),
    )
    params = list(loaded.model.parameters())
    assert {p.dtype for p in params} == {torch.bfloat16}
    want_type = "cuda" if CUDA else "cpu"
    assert {p.device.type for p in params} == {want_type}
    assert torch.device(loaded.device).type == want_type
    reference = TransformersPRM(cpu_models["qwen"], tok, style="qwen")
    assert max_diff(loaded.score_batch(ITEMS), reference.score_batch(ITEMS)) <= BF16_TOL


# -- speed (recorded, not asserted) ------------------------------------------------------------
SHAPES: dict[str, dict[str, Any]] = {
    # hidden, layers, heads, kv heads, intermediate, vocab
    "tiny": {"style": "qwen", "dims": (32, 2, 2, 1, 64, len(WORDS))},
    "small-qwen": {"style": "qwen", "dims": (512, 8, 8, 2, 1408, len(WORDS))},
    "small-shepherd": {"style": "math_shepherd", "dims": (512, 8, 8, 2, 1408, 32000)},
    # the shapes of Qwen2.5-Math-PRM-7B and math-shepherd-mistral-7b-prm (random weights)
    "qwen2.5-math-prm-7b-shape": {"style": "qwen", "dims": (3584, 28, 28, 4, 18944, 152064)},
    "math-shepherd-7b-shape": {"style": "math_shepherd", "dims": (4096, 32, 32, 8, 14336, 32000)},
}
BIG = ("qwen2.5-math-prm-7b-shape", "math-shepherd-7b-shape")


def random_model(style: PRMStyle, dims: tuple[int, ...], device: str) -> Any:
    """A random bf16 model of the given shape built straight on ``device``."""
    hidden, layers, heads, kv, inter, vocab = dims
    common = {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "pad_token_id": 0,
    }
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            if style == "qwen":
                config = transformers.Qwen2Config(num_labels=2, **common)
                return transformers.Qwen2ForTokenClassification(config).eval()
            return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common)).eval()
    finally:
        torch.set_default_dtype(default)


@needs_cuda
@pytest.mark.parametrize("shape", list(SHAPES))
def test_throughput_recorded(shape: str, tok: Any) -> None:
    if shape in BIG and os.environ.get("TRIM_GPU_BIG") != "1":
        pytest.skip("set TRIM_GPU_BIG=1 for the 7B-shaped models (~15 GB each)")
    style: PRMStyle = SHAPES[shape]["style"]
    torch.cuda.empty_cache()
    started = time.perf_counter()
    model = random_model(style, SHAPES[shape]["dims"], "cuda")
    torch.cuda.synchronize()  # the random init runs asynchronously
    built_s = time.perf_counter() - started
    rng = random.Random(0)
    # GSM8K-like: 8 steps of ~40 words (about 450 tokens per solution)
    items = [solution(rng, 8, 40) for _ in range(64)]
    out: dict[str, Any] = {
        "style": style,
        "dims": SHAPES[shape]["dims"],
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "build_s": round(built_s, 2),
        "solutions": len(items),
        "tokens_per_solution": None,
        "by_batch_size": {},
    }
    for batch_size in (1, 8, 32):
        prm = TransformersPRM(model, tok, style=style, batch_size=batch_size)
        out["tokens_per_solution"] = sum(len(prm.prepare(q, s).ids) for q, s in items) / len(items)
        prm.score_batch(items[:batch_size])  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        scores = prm.score_batch(items)
        elapsed = time.perf_counter() - started
        assert all(len(row) == 8 and all(math.isfinite(x) for x in row) for row in scores)
        out["by_batch_size"][str(batch_size)] = {
            "solutions_per_s": round(len(items) / elapsed, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        }
        record(f"throughput/{shape}", out)
    if style == "math_shepherd":  # what logits_to_keep saves: the same batch, full logits
        full = TransformersPRM(FullLogits(model), tok, style=style, batch_size=32)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        full.score_batch(items)
        out["full_logits_batch32"] = {
            "solutions_per_s": round(len(items) / (time.perf_counter() - started), 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        }
        record(f"throughput/{shape}", out)
    del model
    torch.cuda.empty_cache()


def test_random_model_builder_on_cpu() -> None:
    """The speed test's model builder, checked where CI can run it (tiny dims)."""
    model = random_model("math_shepherd", (32, 2, 2, 1, 64, len(WORDS)), "cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32
    prm = TransformersPRM(model, make_tokenizer(), style="math_shepherd")
    assert len(prm.score(QUESTION, STEPS)) == len(STEPS)
