"""Process reward models: the protocol and its backends.

Heavy backends (transformers, vLLM, llama.cpp) are imported lazily from their own
modules so that ``import langchain_trim`` stays light.
"""

from langchain_trim.prm.base import (
    BaseProcessRewardModel,
    FunctionPRM,
    PRMItem,
    ProcessRewardModel,
    validate_scores,
)

__all__ = [
    "BaseProcessRewardModel",
    "FunctionPRM",
    "PRMItem",
    "ProcessRewardModel",
    "validate_scores",
]
