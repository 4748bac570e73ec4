"""Process reward models: the protocol and its backends.

Heavy backends (transformers, vLLM, llama.cpp) are imported lazily from their own
modules so that ``import langchain_trim`` stays light.
"""

from langchain_trim.prm.base import (
    BaseProcessRewardModel,
    FunctionPRM,
    PRMItem,
    ProcessRewardModel,
    StepObserver,
    validate_scores,
)
from langchain_trim.prm.confidence import SelfConfidencePRM
from langchain_trim.prm.judge import ChatJudgePRM

__all__ = [
    "BaseProcessRewardModel",
    "ChatJudgePRM",
    "FunctionPRM",
    "PRMItem",
    "ProcessRewardModel",
    "SelfConfidencePRM",
    "StepObserver",
    "validate_scores",
]
