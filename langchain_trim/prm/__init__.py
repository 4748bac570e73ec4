"""Process reward models: the protocol and its backends.

Heavy backends (transformers, vLLM, llama.cpp) are imported lazily from their own
modules so that ``import langchain_trim`` stays light.
"""

from langchain_trim._lazy import lazy_getattr
from langchain_trim.prm.base import (
    BaseProcessRewardModel,
    FunctionPRM,
    PRMItem,
    ProcessRewardModel,
    StepObserver,
    validate_scores,
)
from langchain_trim.prm.batching import MicroBatchingPRM
from langchain_trim.prm.confidence import SelfConfidencePRM
from langchain_trim.prm.judge import ChatJudgePRM

# Heavy backends load on first use: ``from langchain_trim.prm import TransformersPRM``.
__getattr__ = lazy_getattr(
    __name__,
    {
        "langchain_trim.prm.arithmetic": ("ArithmeticPRM",),
        "langchain_trim.prm.probe": ("ProbePRM",),
        "langchain_trim.prm.transformers_prm": ("TransformersPRM",),
        "langchain_trim.prm.vllm_prm": ("VLLMOfflinePRM", "VLLMPromptOptions", "VLLMServerPRM"),
    },
)


__all__ = [
    "ArithmeticPRM",
    "BaseProcessRewardModel",
    "ChatJudgePRM",
    "FunctionPRM",
    "MicroBatchingPRM",
    "PRMItem",
    "ProbePRM",
    "ProcessRewardModel",
    "SelfConfidencePRM",
    "StepObserver",
    "TransformersPRM",
    "VLLMOfflinePRM",
    "VLLMPromptOptions",
    "VLLMServerPRM",
    "validate_scores",
]
