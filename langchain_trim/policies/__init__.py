"""Routing policies: the seam between PRM scores and the escalate decision."""

# register the named policies (baselines, agg, seq, pomdp); heavy imports stay lazy
from langchain_trim.policies import baselines as _baselines  # noqa: F401
from langchain_trim.policies import named as _named  # noqa: F401
from langchain_trim.policies.base import RouteDecision, RouteObservation, RoutingPolicy
from langchain_trim.policies.threshold import ThresholdPolicy

__all__ = ["RouteDecision", "RouteObservation", "RoutingPolicy", "ThresholdPolicy"]
