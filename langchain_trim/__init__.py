"""langchain-trim: TRIM targeted stepwise routing as a LangGraph subgraph.

A cheap model drafts each reasoning step, a process reward model scores it, a routing
policy keeps it or has an expensive model rewrite just that step, and a budget of strong
tokens rides in graph state.  See :func:`create_trim_graph`.
"""

from langchain_trim.context import TrimContext
from langchain_trim.errors import (
    InvalidInputError,
    PRMError,
    PRMScoreError,
    StepGenerationError,
    StepTimeoutError,
    TrimError,
    TrimWarning,
)
from langchain_trim.functional import TrimResult, asolve, solve
from langchain_trim.generation import ChatStepGenerator, StepGenerator, StepOptions, StepOutput
from langchain_trim.graph import (
    CompiledTrimGraph,
    TrimStateGraph,
    create_trim_graph,
    recursion_limit,
)
from langchain_trim.models import vllm_prefill
from langchain_trim.policies import RouteDecision, RouteObservation, RoutingPolicy, ThresholdPolicy
from langchain_trim.prm import ProcessRewardModel
from langchain_trim.runnables import trim_answer, trim_input
from langchain_trim.state import StepRecord, TrimInput, TrimOutput, TrimSpend, TrimState
from langchain_trim.tools import create_trim_tool

__version__ = "0.1.0"

__all__ = [
    "ChatStepGenerator",
    "CompiledTrimGraph",
    "InvalidInputError",
    "PRMError",
    "PRMScoreError",
    "ProcessRewardModel",
    "RouteDecision",
    "RouteObservation",
    "RoutingPolicy",
    "StepGenerationError",
    "StepGenerator",
    "StepOptions",
    "StepOutput",
    "StepRecord",
    "StepTimeoutError",
    "ThresholdPolicy",
    "TrimContext",
    "TrimError",
    "TrimInput",
    "TrimOutput",
    "TrimResult",
    "TrimSpend",
    "TrimState",
    "TrimStateGraph",
    "TrimWarning",
    "__version__",
    "asolve",
    "create_trim_graph",
    "create_trim_tool",
    "recursion_limit",
    "solve",
    "trim_answer",
    "trim_input",
    "vllm_prefill",
]
